/** Capped exponential backoff for restarts and reconnects. */
export interface BackoffPolicy {
  /** The delay ceiling of the first retry. */
  initialDelayMs: number;
  /** The delay ceiling never grows past this. */
  maxDelayMs: number;
}

/**
 * The delay before retry number `attempt` (0-based): a ceiling that doubles per attempt up to
 * `maxDelayMs`, with "equal jitter" (uniform in the upper half of the ceiling), so a crash
 * loop still slows down while many upstreams restarted together spread out.
 */
export function backoffDelayMs(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
