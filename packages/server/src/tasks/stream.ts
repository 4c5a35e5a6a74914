import type { NewEvent } from '../events/event-log.ts';
import { stateEventType } from './states.ts';
import type { TasksTable } from './tables.ts';

/** The stream of a task's events in the event log. */
export function taskStream(taskId: string): string {
  return `task:${taskId}`;
}

/** The event data of a state change: enough to follow a task without reading it again. */
export function stateEvent(row: TasksTable, extra: Record<string, unknown> = {}): NewEvent {
  return {
    type: stateEventType(row.state),
    data: { state: row.state, attempt: row.attempt, agent_id: row.agent_id, ...extra },
  };
}
