// The states of tasks and agents as the API reports them. No TypeBox here: the SDK and the
// CLI load this at run time through `@orchestra/protocol/constants`; the schemas in
// tasks.ts and agents.ts are built from these lists.

/** Every task state, in the order a task passes through them (terminal ones last). */
export const TASK_STATES = [
  'queued',
  'assigned',
  'running',
  'awaiting_approval',
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'dead',
] as const;

/**
 * Where a task is in its life: queued → assigned → running → succeeded | failed |
 * cancelled | timed_out; dead after the last failed attempt. A hosted agent's run that
 * waits for an operator's approval leaves its agent for `awaiting_approval`, and goes back
 * to `queued` once the approval is decided. The last five are terminal: nothing more
 * happens to the task unless someone retries it (see `isTerminalState`).
 */
export type TaskState = (typeof TASK_STATES)[number];

/**
 * True when nothing more happens to a task in `state` unless someone retries it:
 * succeeded, failed, cancelled, timed_out or dead.
 */
export function isTerminalState(state: TaskState): boolean {
  switch (state) {
    case 'queued':
    case 'assigned':
    case 'running':
    case 'awaiting_approval':
      return false;
    case 'succeeded':
    case 'failed':
    case 'cancelled':
    case 'timed_out':
    case 'dead':
      return true;
  }
}

/** States a retry may start from: the terminal ones that did not end in success. */
export function isRetryableState(state: TaskState): boolean {
  return isTerminalState(state) && state !== 'succeeded';
}

/** The event type that reports reaching `state`: `task.<state>`. */
export function stateEventType<S extends TaskState>(state: S): `task.${S}` {
  return `task.${state}`;
}

/** The event types that report a terminal state. */
export const TERMINAL_EVENT_TYPES: ReadonlySet<string> = new Set(
  TASK_STATES.filter(isTerminalState).map(stateEventType),
);

/** What `GET /v1/agents` says an agent is doing (docs/protocol.md, "Agent status"). */
export const AGENT_STATUSES = ['online', 'busy', 'draining', 'offline', 'error'] as const;

/**
 * Where an agent is: `online` (connected, with room for work), `busy` (connected, at its
 * max concurrency), `draining` (finishing what it holds, taking nothing new), `offline`
 * (not connected) or `error` (its connection was closed for breaking the protocol).
 */
export type AgentStatus = (typeof AGENT_STATUSES)[number];

/** The states of a tool: served, held for an admin's approval, gone from its server, disabled. */
export const TOOL_STATES = ['active', 'held', 'unavailable', 'disabled'] as const;

/** The statuses of a tool call, from awaiting an approval to how it ended. */
export const TOOL_CALL_STATUSES = [
  'awaiting_approval',
  'running',
  'succeeded',
  'failed',
  'denied',
  'rejected',
  'expired',
] as const;

/** The statuses of an approval a tool call waits for. */
export const TOOL_APPROVAL_STATUSES = ['pending', 'approved', 'rejected', 'expired'] as const;

/** Every workspace instance state, in the order an instance passes through them. */
export const INSTANCE_STATES = [
  'creating',
  'starting',
  'running',
  'stopping',
  'stopped',
  'failed',
  'lost',
] as const;
