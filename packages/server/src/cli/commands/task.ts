import {
  type CreateTaskInput,
  isTerminalState,
  type Orchestra,
  TASK_STATES,
  type Task,
  type TaskState,
} from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  client,
  countFlag,
  durationFlag,
  LABEL,
  labelFlags,
  oneArgument,
  print,
  readJson,
  readText,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';
import {
  describeTask,
  eventLine,
  outcomeText,
  progressOf,
  taskRow,
  templateText,
  waitingText,
} from '../task-format.ts';

/** --wait: `500ms`, `30s`, `2m` or `1h`. */
const WAIT: DurationFormat = { units: ['ms', 's', 'm', 'h'], maxDigits: 9 };
const parseWait = (text: string) => durationFlag('--wait', text, WAIT, '30s');

/** How long `task events` without --follow waits for another event before it stops. */
const EVENTS_QUIET_MS = 1000;
const DEFAULT_TASK_LIST_LIMIT = 50;
const MAX_TASK_LIST_LIMIT = 10_000;

/**
 * The task bodies in a JSON-lines file (`-`: standard input), with their line numbers;
 * blank lines are skipped. Usage errors name the file and line.
 */
function readTaskLines(file: string): { lines: number[]; inputs: CreateTaskInput[] } {
  const { source, text } = readText(file);
  const lines: number[] = [];
  const inputs: CreateTaskInput[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new UsageError(`${source} line ${i + 1} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new UsageError(
        `${source} line ${i + 1} must be a JSON object, such as {"template": "code-stats"}`,
      );
    }
    lines.push(i + 1);
    inputs.push(parsed as CreateTaskInput);
  });
  if (inputs.length === 0) throw new UsageError(`${source} holds no task`);
  return { lines, inputs };
}

/**
 * Prints a task's events until the stream ends (the task ended) or, with `quietMs`, until
 * none came for that long; one JSON item a line with `json`. On a terminal, progress events
 * share one line that they update in place.
 */
async function printEvents(
  api: Orchestra,
  id: string,
  options: { after: number; json: boolean; quietMs?: number },
): Promise<void> {
  const tty = process.stdout.isTTY === true && !options.json;
  let progressLineOpen = false;
  const quiet = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const armQuietTimer = () => {
    if (options.quietMs === undefined) return;
    clearTimeout(timer);
    timer = setTimeout(() => quiet.abort(), options.quietMs);
  };
  armQuietTimer();
  try {
    for await (const item of api.tasks.events(id, { after: options.after, signal: quiet.signal })) {
      armQuietTimer();
      if (options.json) {
        process.stdout.write(`${JSON.stringify(item)}\n`);
        continue;
      }
      const line = eventLine(item);
      if (tty && progressOf(item) !== undefined) {
        process.stdout.write(`\r\x1b[K${line}`);
        progressLineOpen = true;
        continue;
      }
      process.stdout.write(`${progressLineOpen ? '\n' : ''}${line}\n`);
      progressLineOpen = false;
    }
  } catch (err) {
    if (!quiet.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    if (progressLineOpen) process.stdout.write('\n');
  }
}

/** The task's exit code once it ended: 0 for success, 1 for any other end. */
const taskExitCode = (task: Task) => (task.state === 'succeeded' ? 0 : 1);

const DURATIONS = 'DURATION is a number with ms, s, m or h: 500ms, 30s, 2m, 1h.';

const submit = command({
  name: 'submit',
  args: '[TEMPLATE]',
  description: [
    'Submits a task of TEMPLATE (name or id), routed by --capability, or both. Submitting again with the same --idempotency-key prints the task submitted first and creates none.',
    'With --wait or --follow, the exit code is 1 if the task ended without success.',
  ].join('\n'),
  options: {
    input: { type: 'string', value: 'JSON', description: 'The input, inline' },
    'input-file': {
      type: 'string',
      value: 'FILE',
      description: 'Reads the input from FILE (- for standard input); not with --input',
    },
    capability: {
      type: 'string',
      value: 'C',
      multiple: true,
      description: 'A capability the agent must offer',
    },
    priority: { type: 'string', value: 'N', description: 'A whole number from -1000 to 1000' },
    'idempotency-key': {
      type: 'string',
      value: 'KEY',
      description: 'Submits at most once with this key',
    },
    label: LABEL,
    session: {
      type: 'string',
      value: 'ID',
      description: 'Submits it in session ID (see "orchestra sessions --help")',
    },
    instance: {
      type: 'string',
      value: 'ID',
      description:
        'Works in instance ID: the agent gets the workspace.* tools for it, and a checkpoint is taken before each attempt (see "orchestra checkpoints --help")',
    },
    wait: {
      type: 'string',
      value: 'DURATION',
      description: `Waits for the task to end, at most DURATION if given, and prints it then (or that it is still running). ${DURATIONS}`,
      // The next argument is the duration when it looks like one (30s, 5, 2m).
      optionalValue: (next: string) => /^\d/.test(next) && /^\w+$/.test(next),
    },
    follow: {
      type: 'boolean',
      description: 'Prints its events as they happen until it ends; not with --wait',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const [template, ...extra] = positionals;
    if (extra.length > 0) {
      throw new UsageError(`task submit takes one template, got "${positionals.join(' ')}"`);
    }
    const capabilities = values.capability ?? [];
    if (template === undefined && capabilities.length === 0) {
      throw new UsageError('task submit needs a template, --capability C, or both');
    }
    if (values.input !== undefined && values['input-file'] !== undefined) {
      throw new UsageError('use either --input or --input-file, not both');
    }
    // A bare --wait has no duration: it waits until the task ends.
    const wait =
      values.wait === undefined
        ? undefined
        : values.wait === ''
          ? Number.POSITIVE_INFINITY
          : parseWait(values.wait);
    if (wait !== undefined && values.follow) {
      throw new UsageError('use either --wait or --follow, not both');
    }
    let input: unknown;
    if (values.input !== undefined) {
      try {
        input = JSON.parse(values.input);
      } catch (err) {
        throw new UsageError(`--input is not valid JSON: ${(err as Error).message}`);
      }
    } else if (values['input-file'] !== undefined) {
      input = readJson(values['input-file']);
    }
    if (values.priority !== undefined && !/^-?\d{1,4}$/.test(values.priority)) {
      throw new UsageError(
        `--priority must be a whole number from -1000 to 1000, got "${values.priority}"`,
      );
    }
    const labels = labelFlags(values.label);
    const api = client(values);
    const { task, replayed } = await api.tasks.createDetailed({
      ...(template !== undefined ? { template } : {}),
      ...(capabilities.length > 0 ? { capabilities } : {}),
      ...(input !== undefined ? { input } : {}),
      ...(values.priority !== undefined ? { priority: Number(values.priority) } : {}),
      ...(values['idempotency-key'] !== undefined
        ? { idempotency_key: values['idempotency-key'] }
        : {}),
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...(values.session !== undefined ? { session_id: values.session } : {}),
      ...(values.instance !== undefined ? { instance: values.instance } : {}),
    });
    const submitted = [
      replayed
        ? `Task ${task.id} was submitted before with idempotency key "${task.idempotency_key}" (${task.state}); nothing new was submitted.`
        : `Submitted task ${task.id} (${task.template === null ? `capabilities ${task.capabilities.join(', ')}` : templateText(task)}): ${task.state}.`,
      // Said at once: otherwise --wait and --follow would wait without a word.
      ...[waitingText(task) ?? []].flat(),
    ].join('\n');
    if (values.follow) {
      if (!values.json) process.stdout.write(`${submitted}\n`);
      await printEvents(api, task.id, { after: 0, json: values.json });
      const ended = await api.tasks.get(task.id);
      if (!values.json) process.stdout.write(`${outcomeText(ended)}\n`);
      return taskExitCode(ended);
    }
    if (wait === undefined) {
      print(values.json, task, () => submitted);
      return 0;
    }
    if (!values.json) process.stdout.write(`${submitted}\n`);
    const current = await api.tasks.wait(task.id, Number.isFinite(wait) ? { timeoutMs: wait } : {});
    if (!isTerminalState(current.state)) {
      print(
        values.json,
        current,
        () =>
          `Task ${current.id} is still ${current.state}; wait for it with "orchestra task get ${current.id} --wait 5m".`,
      );
      return 0;
    }
    print(values.json, current, () => `${outcomeText(current)}\n\n${describeTask(current)}`);
    return taskExitCode(current);
  },
});

const submitBatch = command({
  name: 'submit-batch',
  args: 'FILE',
  description:
    'Submits every task in FILE (- for standard input): one JSON object a line, with the fields of POST /v1/tasks, such as {"template": "code-stats", "input": {...}}. They are stored as if submitted one after another in that order, 500 to a request. Prints one line a task (its id, or why it was refused) and a summary; the exit code is 1 if any was refused. --json prints one JSON object a line: {"line", "status", "task"} or {"line", "status", "error"}.',
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const [file, ...extra] = positionals;
    if (file === undefined) {
      throw new UsageError('task submit-batch needs a FILE (- for standard input)');
    }
    if (extra.length > 0) {
      throw new UsageError(`task submit-batch takes one FILE, got "${positionals.join(' ')}"`);
    }
    const { lines, inputs } = readTaskLines(file);
    const outcomes = await client(values).tasks.createMany(inputs);
    let refused = 0;
    let replayed = 0;
    outcomes.forEach((outcome, i) => {
      const line = lines[i];
      if (!outcome.ok) refused += 1;
      else if (outcome.replayed) replayed += 1;
      if (values.json) {
        const status = outcome.ok ? (outcome.replayed ? 200 : 201) : outcome.error.status;
        const body = outcome.ok
          ? { line, status, task: outcome.task }
          : {
              line,
              status,
              error: {
                code: outcome.error.code,
                message: outcome.error.message,
                ...(outcome.error.details ? { details: outcome.error.details } : {}),
              },
            };
        process.stdout.write(`${JSON.stringify(body)}\n`);
      } else if (outcome.ok) {
        const again = outcome.replayed ? ' (submitted before with this idempotency key)' : '';
        process.stdout.write(`line ${line}: ${outcome.task.id} ${outcome.task.state}${again}\n`);
      } else {
        process.stdout.write(
          `line ${line}: refused: ${outcome.error.code}: ${outcome.error.message}\n`,
        );
      }
    });
    if (!values.json) {
      const created = outcomes.length - refused - replayed;
      process.stdout.write(
        `Submitted ${created} of ${outcomes.length} tasks; ${replayed} submitted before, ${refused} refused.\n`,
      );
    }
    return refused > 0 ? 1 : 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description: 'Shows a task, with its input, result and error.',
  options: {
    wait: {
      type: 'string',
      value: 'DURATION',
      description: `Waits at most DURATION for the task to end first. ${DURATIONS}`,
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'task id');
    const api = client(values);
    const task =
      values.wait === undefined
        ? await api.tasks.get(id)
        : await api.tasks.wait(id, { timeoutMs: parseWait(values.wait) });
    print(values.json, task, () => describeTask(task));
    return 0;
  },
});

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the N newest tasks that match.',
  options: {
    state: {
      type: 'string',
      value: 'STATE',
      multiple: true,
      description: `Only tasks in STATE: ${TASK_STATES.join(', ')}`,
    },
    template: { type: 'string', value: 'NAME|ID', description: 'Only tasks of this template' },
    session: { type: 'string', value: 'ID', description: 'Only the tasks of session ID' },
    instance: {
      type: 'string',
      value: 'ID',
      description: 'Only the tasks that work in instance ID',
    },
    label: { ...LABEL, description: 'Only tasks with this label; with several, all must match' },
    limit: {
      type: 'string',
      value: 'N',
      description: `At most N tasks (default ${DEFAULT_TASK_LIST_LIMIT}, at most ${MAX_TASK_LIST_LIMIT})`,
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values }) {
    const states = values.state ?? [];
    for (const state of states) {
      if (!(TASK_STATES as readonly string[]).includes(state)) {
        throw new UsageError(`--state must be one of ${TASK_STATES.join(', ')}; got "${state}"`);
      }
    }
    const limit =
      values.limit === undefined
        ? DEFAULT_TASK_LIST_LIMIT
        : countFlag('--limit', values.limit, MAX_TASK_LIST_LIMIT);
    const labels = labelFlags(values.label);
    const tasks: Task[] = [];
    for await (const task of client(values).tasks.listAll({
      limit: Math.min(limit, 200),
      state: states as TaskState[],
      labels,
      ...(values.template !== undefined ? { template: values.template } : {}),
      ...(values.session !== undefined ? { session_id: values.session } : {}),
      ...(values.instance !== undefined ? { instance_id: values.instance } : {}),
    })) {
      tasks.push(task);
      if (tasks.length === limit) break;
    }
    print(values.json, tasks, () =>
      formatTable(
        ['ID', 'STATE', 'TEMPLATE', 'PRIORITY', 'ATTEMPT', 'AGENT', 'CREATED'],
        tasks.map(taskRow),
      ),
    );
    return 0;
  },
});

const cancel = command({
  name: 'cancel',
  args: 'ID',
  description: 'Cancels a queued task at once; asks the agent holding a running task to stop it.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const task = await client(values).tasks.cancel(oneArgument(invocation, 'task id'));
    print(values.json, task, () =>
      task.state === 'cancelled'
        ? `Cancelled task ${task.id}.`
        : `Asked the agent holding task ${task.id} (${task.state}) to stop it; it ends cancelled once the agent stops.`,
    );
    return 0;
  },
});

const retry = command({
  name: 'retry',
  args: 'ID',
  description: 'Queues a task that failed, died, timed out or was cancelled again.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const task = await client(values).tasks.retry(oneArgument(invocation, 'task id'));
    print(values.json, task, () => `Queued task ${task.id} again (${task.state}, attempts reset).`);
    return 0;
  },
});

const events = command({
  name: 'events',
  args: 'ID',
  description:
    "Prints the task's events, one a line (offset, time, type, summary). Without --follow, prints the events there are and exits: for a task that has ended, its whole history; for one still running, the events until none came for a second. A dropped connection is resumed where it stopped.",
  options: {
    after: {
      type: 'string',
      value: 'N',
      description: 'Events after offset N (default: from the first one still retained)',
    },
    follow: {
      type: 'boolean',
      description: 'Goes on until the task ends, and exits 1 if it ended without success',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'task id');
    const after = values.after === undefined ? 0 : Number(values.after);
    if (values.after !== undefined && !/^\d{1,15}$/.test(values.after)) {
      throw new UsageError(`--after must be an event offset (0 or more), got "${values.after}"`);
    }
    const api = client(values);
    if (values.follow) {
      const waiting = values.json ? undefined : waitingText(await api.tasks.get(id));
      if (waiting !== undefined) process.stdout.write(`${waiting}\n`);
      await printEvents(api, id, { after, json: values.json });
      return taskExitCode(await api.tasks.get(id));
    }
    // Without --follow: the stream of an ended task ends by itself; that of a running
    // task never says it caught up, so stop at the first pause.
    const task = await api.tasks.get(id);
    await printEvents(api, id, {
      after,
      json: values.json,
      ...(isTerminalState(task.state) ? {} : { quietMs: EVENTS_QUIET_MS }),
    });
    return 0;
  },
});

export const group = defineGroup({
  name: 'task',
  summary: 'Submit tasks, follow their events, cancel and retry them',
  notes:
    'Submitting, cancelling and retrying need an admin or operator credential. --json prints the task (a JSON array for ls; one JSON event a line for events and --follow).',
  subcommands: [submit, submitBatch, get, list, cancel, retry, events],
});
