/** Where a task is in its life. */
export type TaskState =
  | 'queued'
  | 'assigned'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'timed_out'
  | 'dead';

export const TASK_STATES: readonly TaskState[] = [
  'queued',
  'assigned',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'dead',
];

/** True when nothing more will happen to the task unless someone retries it. */
export function isTerminal(state: TaskState): boolean {
  switch (state) {
    case 'queued':
    case 'assigned':
    case 'running':
      return false;
    case 'succeeded':
    case 'failed':
    case 'cancelled':
    case 'timed_out':
    case 'dead':
      return true;
  }
}

/** States a retry may start from: the ones that did not end in success. */
export function isRetryable(state: TaskState): boolean {
  return isTerminal(state) && state !== 'succeeded';
}

/** The event type that reports reaching `state`. */
export function stateEventType(state: TaskState): string {
  return `task.${state}`;
}
