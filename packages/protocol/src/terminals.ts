import Type, { type Static, type TSchema } from 'typebox';
import { ErrorFramePayload } from './agents.ts';
import { NullableTimestamp, Timestamp } from './common.ts';
import { commandEnv, WorkingDirectory } from './instances.ts';

// Terminals of an instance (issue 22, the design's TerminalRegistry): a PTY running in the
// instance's sandbox, whose screen the server keeps in a headless terminal, so that a viewer
// that attaches (again) over `GET /v1/instances/{id}/terminals/{terminal}/attach` sees it.

export const TERMINAL_STATES = ['running', 'exited'] as const;
export type TerminalState = (typeof TERMINAL_STATES)[number];

/** The most columns and rows a terminal may have. */
export const MAX_TERMINAL_COLS = 1000;
export const MAX_TERMINAL_ROWS = 500;
/** The most bytes one `input` request (or one binary frame of an attach) may carry. */
export const MAX_TERMINAL_INPUT_BYTES = 65_536;
/** The most scrollback lines `GET …/screen` returns. */
export const MAX_SCREEN_SCROLLBACK = 10_000;

const cols = (description: string) =>
  Type.Integer({ minimum: 1, maximum: MAX_TERMINAL_COLS, description });
const rows = (description: string) =>
  Type.Integer({ minimum: 1, maximum: MAX_TERMINAL_ROWS, description });

export const Terminal = Type.Object(
  {
    /** `trm_…` */
    id: Type.String(),
    instance_id: Type.String(),
    /** The node whose process runs it: attach there. */
    node_id: Type.String(),
    state: Type.Enum(TERMINAL_STATES),
    /** Why it exited, when it did. */
    state_reason: Type.Union([Type.String(), Type.Null()]),
    command: Type.Array(Type.String()),
    /** Relative to the workspace; `""` is the workspace itself. */
    cwd: Type.String(),
    cols: Type.Integer(),
    rows: Type.Integer(),
    /** What the program in it last set as the window title (OSC 0/2), if anything. */
    title: Type.Union([Type.String(), Type.Null()]),
    /** Viewers attached now (on its node). */
    viewers: Type.Integer(),
    exit_code: Type.Union([Type.Integer(), Type.Null()]),
    signal: Type.Union([Type.String(), Type.Null()]),
    created_by: Type.String(),
    created_at: Timestamp,
    exited_at: NullableTimestamp,
  },
  { $id: 'Terminal' },
);
export type Terminal = Static<typeof Terminal>;

export const CreateTerminal = Type.Object(
  {
    command: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), {
        minItems: 1,
        maxItems: 100,
        description:
          'Program and arguments; `["bash"]` by default (`["sh"]` where bash is not installed).',
      }),
    ),
    cwd: Type.Optional(WorkingDirectory),
    env: Type.Optional(
      commandEnv('Added to the template’s environment (`TERM` is `xterm-256color`).'),
    ),
    cols: Type.Optional(cols('Columns (80 by default).')),
    rows: Type.Optional(rows('Rows (24 by default).')),
  },
  { additionalProperties: false },
);
export type CreateTerminal = Static<typeof CreateTerminal>;

export const ResizeTerminal = Type.Object(
  { cols: cols('Columns.'), rows: rows('Rows.') },
  { additionalProperties: false },
);
export type ResizeTerminal = Static<typeof ResizeTerminal>;

export const TerminalInput = Type.Object(
  {
    data: Type.String({
      minLength: 1,
      maxLength: MAX_TERMINAL_INPUT_BYTES,
      description:
        'Typed into the terminal as is (UTF-8): `"ls\\r"` runs `ls`, `"\\u0003"` is Ctrl-C. At most 64 KiB.',
    }),
  },
  { additionalProperties: false },
);
export type TerminalInput = Static<typeof TerminalInput>;

export const ScreenQuery = Type.Object(
  {
    scrollback: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_SCREEN_SCROLLBACK,
        description: 'Lines above the screen to include, newest last (0 by default).',
      }),
    ),
  },
  { additionalProperties: false },
);

/** The screen as text, for a program that reads it (an agent's terminal tool). */
export const TerminalScreen = Type.Object(
  {
    cols: Type.Integer(),
    rows: Type.Integer(),
    /** Where the cursor is, 0-based, on the screen. */
    cursor: Type.Object({ x: Type.Integer(), y: Type.Integer() }),
    /** The screen's lines, top first, without trailing blanks. */
    lines: Type.Array(Type.String()),
    /** The scrollback lines asked for, oldest first. */
    scrollback: Type.Array(Type.String()),
    title: Type.Union([Type.String(), Type.Null()]),
    state: Type.Enum(TERMINAL_STATES),
  },
  { $id: 'TerminalScreen' },
);
export type TerminalScreen = Static<typeof TerminalScreen>;

export const TerminalRef = Type.Object({
  instance: Type.String({ maxLength: 64 }),
  terminal: Type.String({ maxLength: 64, description: 'The terminal’s id (`trm_…`).' }),
});

// The attach protocol (docs/protocol.md, "Terminal attach"): envelope frames for control,
// binary frames for the bytes typed (client to server) and printed (server to client).

/** What a viewer sends, by `payload.kind` (all `REQUEST`): the fields besides `kind`. */
export const TERMINAL_FRAMES = {
  auth: { token: Type.String({ minLength: 1, maxLength: 8192 }) },
  /** Typed input as text (a binary frame carries raw bytes instead). */
  input: { data: Type.String({ minLength: 1, maxLength: MAX_TERMINAL_INPUT_BYTES }) },
  resize: { cols: cols('Columns.'), rows: rows('Rows.') },
  ping: {},
} as const satisfies Record<string, Record<string, TSchema>>;

export type TerminalFrameKind = keyof typeof TERMINAL_FRAMES;
export type TerminalFramePayload<K extends TerminalFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof TERMINAL_FRAMES)[K]>>
>;

/** What the server sends a viewer, by `payload.kind`: the fields besides `kind`. */
export const TERMINAL_SERVER_FRAMES = {
  /** The viewer is attached: the terminal, and escape sequences that redraw its screen. */
  attached: {
    terminal: Terminal,
    /** Draws the screen and its scrollback on an empty terminal of the same size. */
    screen: Type.String(),
    connection_id: Type.String(),
  },
  /** Someone resized the terminal (the last resize wins for every viewer). */
  resized: { cols: Type.Integer(), rows: Type.Integer() },
  /** The program set the window title. */
  title: { title: Type.String() },
  /** Viewers attached now. */
  viewers: { count: Type.Integer() },
  /** The program ended (or the terminal was closed); the connection closes with 1000 next. */
  exit: {
    exit_code: Type.Union([Type.Integer(), Type.Null()]),
    signal: Type.Union([Type.String(), Type.Null()]),
    reason: Type.String(),
  },
  pong: {},
  error: ErrorFramePayload,
} as const satisfies Record<string, Record<string, TSchema>>;

export type TerminalServerFrameKind = keyof typeof TERMINAL_SERVER_FRAMES;
export type TerminalServerFramePayload<K extends TerminalServerFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof TERMINAL_SERVER_FRAMES)[K]>>
>;
