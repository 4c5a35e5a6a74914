import { stateEventType } from '@orchestra/protocol';
import type { Emit, NewEvent } from '../events/index.ts';
import { sessionStream } from '../sessions/index.ts';
import type { TasksTable } from './tables.ts';

/** The stream of a task's events in the event log. */
export function taskStream(taskId: string): string {
  return `task:${taskId}`;
}

/** The event data of a state change: enough to follow a task without reading it again. */
export function stateEvent(
  row: Pick<TasksTable, 'state' | 'attempt' | 'agent_id'>,
  extra: Record<string, unknown> = {},
): NewEvent {
  return {
    type: stateEventType(row.state),
    data: { state: row.state, attempt: row.attempt, agent_id: row.agent_id, ...extra },
  };
}

/**
 * Appends events to the task's stream and, for a task in a session, to the session's
 * stream too (with the task id), in the same transaction: the session's history is
 * exactly the union of its tasks' histories, in commit order. `newTask`: the task is
 * being created, so its stream is new.
 */
export async function emitTaskEvents(
  emit: Emit,
  row: Pick<TasksTable, 'id' | 'tenant_id' | 'session_id'>,
  events: NewEvent[],
  newTask = false,
): Promise<void> {
  await emit(taskStream(row.id), row.tenant_id, events, { isNew: newTask });
  if (row.session_id !== null) {
    await emit(
      sessionStream(row.session_id),
      row.tenant_id,
      events.map((e) => ({
        type: e.type,
        data: { task_id: row.id, ...(e.data as Record<string, unknown>) },
      })),
    );
  }
}
