import type { Task, TaskStreamItem } from '@orchestra/sdk';

/** Longest event summary on a line; the rest is cut with an ellipsis. */
const SUMMARY_CHARS = 100;
const BAR_CELLS = 20;

function labelsText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

/** `name@version` of a task's template, or `-` for a task routed by capabilities alone. */
export function templateText(task: Task): string {
  return task.template === null ? '-' : `${task.template.name}@${task.template.version}`;
}

/** A row of `task ls`: ID, STATE, TEMPLATE, PRIORITY, ATTEMPT, AGENT, CREATED. */
export function taskRow(task: Task): string[] {
  return [
    task.id,
    task.state,
    templateText(task),
    String(task.priority),
    `${task.attempt}/${task.max_attempts}`,
    task.agent_id ?? '-',
    task.created_at,
  ];
}

/** What `task get` prints: one field a line, then the input, result and error. */
export function describeTask(task: Task): string {
  const json = (value: unknown) =>
    value === null || value === undefined ? ' (none)' : `\n${JSON.stringify(value, null, 2)}`;
  const rows: [string, string][] = [
    ['ID', task.id],
    [
      'State',
      task.cancel_requested_at !== null && task.state !== 'cancelled'
        ? `${task.state} (cancellation requested ${task.cancel_requested_at})`
        : task.state,
    ],
    ...(task.waiting === null ? [] : [['Waiting', task.waiting.message] as [string, string]]),
    [
      'Template',
      task.template === null
        ? '- (routed by capabilities)'
        : `${task.template.name} v${task.template.version} (${task.template.id})`,
    ],
    ['Capabilities', task.capabilities.length > 0 ? task.capabilities.join(', ') : '-'],
    ['Priority', String(task.priority)],
    ['Attempt', `${task.attempt} of ${task.max_attempts}`],
    ['Timeout', `${task.timeout_ms} ms`],
    ['Strategy', task.strategy],
    ['Agent', task.agent_id ?? '-'],
    ['Instance', task.instance_id ?? '-'],
    ['Labels', labelsText(task.labels)],
    ['Idempotency key', task.idempotency_key ?? '-'],
    ['Concurrency key', task.concurrency_key ?? '-'],
    ['Created', `${task.created_at} by ${task.created_by}`],
    ['Updated', task.updated_at],
    ['Finished', task.finished_at ?? '-'],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  const error =
    task.error === null
      ? ' (none)'
      : ` ${task.error.code}: ${task.error.message}${task.error.retryable ? ' (retryable)' : ''}${
          task.error.details === undefined ? '' : `\nDetails:${json(task.error.details)}`
        }`;
  // A task that succeeded after a failed attempt keeps that attempt's error: it is history,
  // not the outcome.
  const errorLabel =
    task.state === 'succeeded' && task.error !== null ? 'Error of an earlier attempt:' : 'Error:';
  return [
    ...rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`),
    '',
    `Input:${json(task.input)}`,
    `Result:${json(task.result)}`,
    `${errorLabel}${error}`,
  ].join('\n');
}

/** What a task waits for, as a line; undefined when nothing stands in its way. */
export function waitingText(task: Task): string | undefined {
  if (task.waiting === null) return undefined;
  if (task.waiting.reason === 'approval') {
    const ids = task.waiting.approvals.map((a) => a.id);
    return `Waiting: the task ${task.waiting.message}; it goes on once decided (orchestra approvals approve ${ids[0] ?? 'ID'}, or reject).`;
  }
  return `Waiting: ${task.waiting.message}; the task stays queued until one connects.`;
}

/** One line saying how a task ended, or where it is. */
export function outcomeText(task: Task): string {
  switch (task.state) {
    case 'succeeded':
      return `Task ${task.id} succeeded.${task.result === null ? '' : ` Result: ${JSON.stringify(task.result)}`}`;
    case 'failed':
    case 'dead':
    case 'timed_out':
      return `Task ${task.id} ${task.state === 'timed_out' ? 'timed out' : task.state}${task.error ? `: ${task.error.code}: ${task.error.message}` : '.'}`;
    case 'cancelled':
      return `Task ${task.id} was cancelled.`;
    case 'queued':
    case 'assigned':
    case 'running':
      return `Task ${task.id} is ${task.state}.`;
    case 'awaiting_approval':
      return `Task ${task.id} is awaiting approval${task.waiting?.reason === 'approval' ? ` (${task.waiting.message})` : ''}.`;
  }
}

/** `[#####---------------]  25% 1/4` for a progress event that has both numbers. */
export function progressBar(progress: number, total: number): string {
  const ratio = Math.min(1, Math.max(0, progress / total));
  const filled = Math.round(ratio * BAR_CELLS);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_CELLS - filled)}] ${String(Math.floor(ratio * 100)).padStart(3)}% ${progress}/${total}`;
}

/** The progress and total of a `task.progress` event, when it carries both as numbers. */
export function progressOf(item: TaskStreamItem): { progress: number; total: number } | undefined {
  if (item.type !== 'task.progress' || !('offset' in item)) return undefined;
  const data = item.data as { progress?: unknown; total?: unknown } | null;
  const { progress, total } = data ?? {};
  if (typeof progress !== 'number' || typeof total !== 'number' || !(total > 0)) return undefined;
  return { progress, total };
}

function short(text: string): string {
  return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS - 1)}…` : text;
}

/** The data of an event in a few words: `key=value` pairs, nulls left out. */
export function eventSummary(item: TaskStreamItem): string {
  if (!('offset' in item)) {
    return `events ${item.after + 1} to ${item.first_offset - 1} are no longer retained`;
  }
  const progress = progressOf(item);
  const data = item.data;
  if (progress !== undefined) {
    const message = (data as { message?: unknown }).message;
    return short(
      `${progressBar(progress.progress, progress.total)}${typeof message === 'string' ? ` ${message}` : ''}`,
    );
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return data === null || data === undefined ? '' : short(JSON.stringify(data));
  }
  const pairs = Object.entries(data)
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  return short(pairs.join(' '));
}

/** One readable line for an event: offset, time, type and a short summary. */
export function eventLine(item: TaskStreamItem): string {
  const offset = 'offset' in item ? String(item.offset) : '-';
  const time = 'offset' in item ? item.time : '-'.padEnd(24);
  return `${offset.padStart(4)}  ${time}  ${item.type.padEnd(22)}  ${eventSummary(item)}`.trimEnd();
}
