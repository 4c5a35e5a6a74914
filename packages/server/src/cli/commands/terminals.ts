import type { CreateTerminal, Orchestra, Terminal } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, ENV, envFlags, print, UsageError } from '../common.ts';
import { command, group as defineGroup, type OptionSpecs } from '../spec.ts';
import { formatTable } from '../table.ts';

// `orchestra terminals …` and `orchestra term`: terminals in an instance's sandbox.

/** Ctrl-]: detaches a terminal attached from a TTY (as telnet and docker attach do). */
const DETACH = 0x1d;

/** INSTANCE, or INSTANCE TERMINAL. */
function args(
  { positionals, path }: { positionals: string[]; path: string },
  withTerminal: boolean,
): [string, string] {
  const wanted = withTerminal ? 2 : 1;
  if (positionals.length !== wanted) {
    throw new UsageError(
      `${path} takes ${withTerminal ? 'an instance id and a terminal id' : 'an instance id'}, got "${positionals.join(' ')}"`,
    );
  }
  return [positionals[0] as string, positionals[1] ?? ''];
}

const OPEN_OPTIONS = {
  cwd: { type: 'string', value: 'DIR', description: 'Working directory, inside the workspace' },
  env: ENV,
} as const satisfies OptionSpecs;

/** The body of an open: the command after `--`, and the flags. */
function openRequest(
  values: { cwd?: string | undefined; env?: string[] | undefined },
  command: string[],
  size?: { cols: number; rows: number },
): CreateTerminal {
  const env = envFlags(values.env);
  return {
    ...(command.length > 0 ? { command } : {}),
    ...(values.cwd !== undefined ? { cwd: values.cwd } : {}),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(size ?? {}),
  };
}

const describe = (t: Terminal) =>
  [
    `ID:       ${t.id}`,
    `State:    ${t.state}${t.state_reason ? ` (${t.state_reason})` : ''}`,
    `Command:  ${t.command.join(' ')}`,
    `Cwd:      ${t.cwd === '' ? '.' : t.cwd}`,
    `Size:     ${t.cols}x${t.rows}`,
    `Title:    ${t.title ?? '-'}`,
    `Viewers:  ${t.viewers}`,
    `Node:     ${t.node_id}`,
    `Created:  ${t.created_at} by ${t.created_by}`,
    ...(t.state === 'exited'
      ? [`Exited:   ${t.exited_at ?? '-'} (${t.signal ?? `code ${t.exit_code}`})`]
      : []),
  ].join('\n');

const list = command({
  name: 'ls',
  aliases: ['list'],
  args: 'INSTANCE',
  description: 'Lists an instance’s terminals: the running ones, and how the exited ones ended.',
  options: {
    state: { type: 'string', value: 'STATE', description: 'Only running or exited ones' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id] = args(invocation, false);
    if (values.state !== undefined && values.state !== 'running' && values.state !== 'exited') {
      throw new UsageError(`--state must be running or exited, got "${values.state}"`);
    }
    const items: Terminal[] = [];
    for await (const t of client(values).instances.terminals.listAll(id, {
      limit: 200,
      ...(values.state !== undefined ? { state: values.state } : {}),
    })) {
      items.push(t);
    }
    print(values.json, items, () =>
      formatTable(
        ['ID', 'STATE', 'COMMAND', 'SIZE', 'VIEWERS', 'CREATED'],
        items.map((t) => [
          t.id,
          t.state === 'exited' ? `exited (${t.signal ?? t.exit_code})` : t.state,
          t.command.join(' '),
          `${t.cols}x${t.rows}`,
          String(t.viewers),
          t.created_at,
        ]),
      ),
    );
    return 0;
  },
});

const open = command({
  name: 'open',
  args: 'INSTANCE [-- COMMAND [ARG…]]',
  description:
    'Opens a terminal in a running instance (bash unless a command follows --) and prints it; `orchestra term INSTANCE TERMINAL` attaches to it.',
  options: {
    ...OPEN_OPTIONS,
    cols: { type: 'string', value: 'N', description: 'Columns (80)' },
    rows: { type: 'string', value: 'N', description: 'Rows (24)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, ...command] = positionals;
    if (id === undefined) throw new UsageError(`${path} needs an instance id`);
    const size = (flag: string, value: string | undefined, max: number) => {
      if (value === undefined) return undefined;
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1 || n > max) {
        throw new UsageError(`${flag} must be an integer from 1 to ${max}, got "${value}"`);
      }
      return n;
    };
    const cols = size('--cols', values.cols, 1000);
    const rows = size('--rows', values.rows, 500);
    const t = await client(values).instances.terminals.open(id, {
      ...openRequest(values, command),
      ...(cols !== undefined ? { cols } : {}),
      ...(rows !== undefined ? { rows } : {}),
    });
    print(values.json, t, () => describe(t));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'INSTANCE TERMINAL',
  description: 'Shows a terminal.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, terminal] = args(invocation, true);
    const t = await client(values).instances.terminals.get(id, terminal);
    print(values.json, t, () => describe(t));
    return 0;
  },
});

const close = command({
  name: 'close',
  aliases: ['rm'],
  args: 'INSTANCE TERMINAL',
  description: 'Hangs up a terminal’s program and forgets the terminal.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, terminal] = args(invocation, true);
    await client(values).instances.terminals.close(id, terminal);
    print(values.json, { closed: terminal }, () => `Closed ${terminal}`);
    return 0;
  },
});

const send = command({
  name: 'send',
  args: 'INSTANCE TERMINAL TEXT',
  description:
    'Types TEXT into a terminal, as is; --enter presses Enter after it. For a script: `orchestra terminals send ins_… trm_… "make test" --enter`.',
  options: {
    enter: { type: 'boolean', description: 'Press Enter after the text' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, terminal, text, ...rest] = positionals;
    if (id === undefined || terminal === undefined || text === undefined || rest.length > 0) {
      throw new UsageError(`${path} takes an instance id, a terminal id and the text`);
    }
    const data = values.enter ? `${text}\r` : text;
    if (data === '') throw new UsageError(`${path}: the text is empty`);
    await client(values).instances.terminals.write(id, terminal, data);
    print(values.json, { sent: data.length }, () => '');
    return 0;
  },
});

const screen = command({
  name: 'screen',
  args: 'INSTANCE TERMINAL',
  description:
    'Prints what a terminal’s screen shows, as text (with --scrollback N, that many lines above it first).',
  options: {
    scrollback: { type: 'string', value: 'N', description: 'Lines above the screen (0)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, terminal] = args(invocation, true);
    let scrollback = 0;
    if (values.scrollback !== undefined) {
      scrollback = Number(values.scrollback);
      if (!Number.isInteger(scrollback) || scrollback < 0 || scrollback > 10_000) {
        throw new UsageError(
          `--scrollback must be an integer from 0 to 10000, got "${values.scrollback}"`,
        );
      }
    }
    const s = await client(values).instances.terminals.screen(id, terminal, { scrollback });
    print(values.json, s, () => [...s.scrollback, ...s.lines].join('\n').replace(/\n+$/, ''));
    return 0;
  },
});

/**
 * Attaches this process's terminal (or its standard input and output) to a terminal of the
 * instance until its program exits (the exit code is its) or, from a TTY, Ctrl-] detaches.
 */
async function attach(orchestra: Orchestra, instance: string, terminal: string): Promise<number> {
  const stdin = process.stdin;
  const tty = stdin.isTTY === true && process.stdout.isTTY === true;
  const size = () => ({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 });
  let detached = false;
  const connection = orchestra.instances.terminals.attach(instance, terminal, {
    onOutput: (data) => process.stdout.write(data),
    // On every (re)attach: the screen the server kept, on a cleared screen.
    onScreen: (drawn) => process.stdout.write(tty ? `\x1b[H\x1b[2J${drawn}` : drawn),
  });
  const onInput = (chunk: Buffer) => {
    if (tty && chunk.includes(DETACH)) {
      const before = chunk.subarray(0, chunk.indexOf(DETACH));
      if (before.length > 0) connection.write(before);
      detached = true;
      void connection.close();
      return;
    }
    connection.write(chunk);
  };
  const onResize = () => {
    const { cols, rows } = size();
    connection.resize(cols, rows);
  };
  try {
    await connection.attached;
    if (tty) {
      stdin.setRawMode(true);
      onResize();
      process.stdout.on('resize', onResize);
    }
    stdin.on('data', onInput);
    stdin.resume();
    const exit = await connection.exited.catch((err: unknown) => {
      if (detached) return undefined;
      throw err;
    });
    if (exit === undefined) {
      process.stderr.write(
        `\r\norchestra: detached; the terminal goes on (orchestra term ${instance} ${terminal})\r\n`,
      );
      return 0;
    }
    if (tty) process.stderr.write(`\r\norchestra: ${exit.reason}\r\n`);
    return exit.exit_code ?? 128 + 9;
  } finally {
    stdin.off('data', onInput);
    process.stdout.off('resize', onResize);
    if (tty) stdin.setRawMode(false);
    stdin.pause();
    await connection.close();
  }
}

export const term = command({
  name: 'term',
  args: 'INSTANCE [TERMINAL] [-- COMMAND [ARG…]]',
  description:
    'Attaches to a terminal of a running instance: a new one (bash unless a command follows --), or TERMINAL. From a TTY it takes over the screen; Ctrl-] detaches and leaves the terminal running. Piped, standard input is typed into it and its output printed. Exits with the program’s exit code once it ends.',
  options: OPEN_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, rest, path } = invocation;
    // INSTANCE [TERMINAL] before `--`, the command after it.
    const before = positionals.slice(0, positionals.length - (rest?.length ?? 0));
    const [id, existing, ...extra] = before;
    if (id === undefined || extra.length > 0) {
      throw new UsageError(`${path} takes an instance id and maybe a terminal id, then -- COMMAND`);
    }
    const command = rest ?? [];
    if (existing !== undefined && command.length > 0) {
      throw new UsageError(`${path}: a command (after --) opens a new terminal; give no TERMINAL`);
    }
    const orchestra = client(values);
    let terminal = existing;
    if (terminal === undefined) {
      const size =
        process.stdout.isTTY === true
          ? { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 }
          : undefined;
      terminal = (await orchestra.instances.terminals.open(id, openRequest(values, command, size)))
        .id;
    }
    return attach(orchestra, id, terminal);
  },
});

export const group = defineGroup({
  name: 'terminals',
  summary: 'Terminals in an instance: ls, open, get, close, send, screen',
  notes:
    'Attach to one with `orchestra term INSTANCE [TERMINAL]`. A terminal runs in the instance’s sandbox and ends when the instance stops; the server keeps its screen, so attaching again shows it. Opening, typing and reading the screen need an admin or operator credential.',
  subcommands: [list, open, get, close, send, screen],
});
