import type { Session, SessionStreamItem } from '@orchestra/sdk';
import { eventSummary } from './task-format.ts';

/** Width of the task id column of `sessions events`: `tsk_` and a 26-character id. */
const TASK_ID_CHARS = 30;

function labelsText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

/** A row of `sessions ls`: ID, NAME, STRATEGY, TASKS, UNFINISHED, CREATED. */
export function sessionRow(session: Session): string[] {
  return [
    session.id,
    session.name ?? '-',
    session.multitask_strategy,
    String(session.tasks.total),
    String(session.tasks.unfinished.length),
    session.created_at,
  ];
}

/** What `sessions get` prints: one field a line, then its unfinished tasks and metadata. */
export function describeSession(session: Session): string {
  const { total, unfinished } = session.tasks;
  const rows: [string, string][] = [
    ['ID', session.id],
    ['Name', session.name ?? '-'],
    ['Strategy', session.multitask_strategy],
    ['Labels', labelsText(session.labels)],
    ['Tasks', `${total} (${unfinished.length} unfinished)`],
    ['Created', `${session.created_at} by ${session.created_by}`],
    ['Updated', session.updated_at],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  const metadata = session.metadata ?? {};
  return [
    ...rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`),
    '',
    `Unfinished tasks:${unfinished.length > 0 ? unfinished.map((id) => `\n  ${id}`).join('') : ' (none)'}`,
    `Metadata:${Object.keys(metadata).length > 0 ? `\n${JSON.stringify(metadata, null, 2)}` : ' (none)'}`,
  ].join('\n');
}

/**
 * One readable line for a session event: offset, time, type, the task it is about (`-` for
 * `session.created` and gaps) and a short summary of the rest of its data.
 */
export function sessionEventLine(item: SessionStreamItem): string {
  if (!('offset' in item)) {
    return `${'-'.padStart(4)}  ${'-'.padEnd(24)}  ${item.type.padEnd(22)}  ${'-'.padEnd(TASK_ID_CHARS)}  ${eventSummary(item)}`.trimEnd();
  }
  let taskId = '-';
  let data = item.data;
  if (typeof data === 'object' && data !== null && !Array.isArray(data) && 'task_id' in data) {
    const { task_id, ...rest } = data as Record<string, unknown>;
    if (typeof task_id === 'string') taskId = task_id;
    data = rest;
  }
  const summary = eventSummary({ ...item, data });
  return `${String(item.offset).padStart(4)}  ${item.time}  ${item.type.padEnd(22)}  ${taskId.padEnd(TASK_ID_CHARS)}  ${summary}`.trimEnd();
}
