import type { TaskState } from './types.ts';

/** Every task state, in the order a task passes through them (terminal ones last). */
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

/**
 * True when nothing more happens to a task in `state` unless someone retries it:
 * succeeded, failed, cancelled, timed_out or dead.
 */
export function isTerminalState(state: TaskState): boolean {
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

/** The event types that report a terminal state: `task.<state>`. */
export const TERMINAL_EVENT_TYPES: ReadonlySet<string> = new Set([
  'task.succeeded',
  'task.failed',
  'task.cancelled',
  'task.timed_out',
  'task.dead',
]);
