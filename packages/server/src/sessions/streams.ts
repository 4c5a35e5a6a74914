/** The stream of a session's activity: every event of every task in it, in order. */
export function sessionStream(sessionId: string): string {
  return `session:${sessionId}`;
}
