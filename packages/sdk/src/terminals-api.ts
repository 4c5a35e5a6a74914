import type {
  CreateTerminal,
  Terminal,
  TerminalScreen,
  TerminalServerFrameKind,
  TerminalServerFramePayload,
  TerminalState,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { OrchestraError } from './errors.ts';
import { paginate } from './listing.ts';
import type { Page, PageOptions } from './types.ts';

// Terminals of an instance (`/v1/instances/{id}/terminals`) and the attach protocol of
// docs/protocol.md ("Terminal attach").

export type { CreateTerminal, Terminal, TerminalScreen, TerminalState } from '@orchestra/protocol';

const terminalsPath = (id: string) => `/v1/instances/${encodeURIComponent(id)}/terminals`;

/** How a terminal's program ended (the `exit` frame). */
export interface TerminalExit {
  exit_code: number | null;
  signal: string | null;
  reason: string;
}

export interface AttachOptions {
  /** What the program prints, as the PTY gave it (feed it to a terminal emulator). */
  onOutput(data: Uint8Array): void;
  /**
   * On every (re)attach: escape sequences that draw the screen and scrollback on an empty
   * terminal of `terminal.cols` × `terminal.rows`. Clear the emulator, then write them.
   */
  onScreen?(screen: string, terminal: Terminal): void;
  onResize?(cols: number, rows: number): void;
  onTitle?(title: string): void;
  onViewers?(count: number): void;
  /** Attach again when the connection drops (not after an exit or a refusal); true by default. */
  reconnect?: boolean;
}

interface Settle<T> {
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** Close codes after which attaching again cannot help. */
const FINAL_CLOSES = new Set([1000, 4401, 4404, 4429]);
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 5000];

/**
 * One viewer of a terminal (`instances.terminals.attach`): what is typed goes to the
 * program, what it prints comes to `onOutput`. A dropped connection attaches again by
 * itself, and `onScreen` then redraws the screen the server kept.
 */
export class TerminalConnection {
  readonly #client: Orchestra;
  readonly #url: string;
  readonly #options: AttachOptions;
  #socket: WebSocket | undefined;
  #closed = false;
  readonly #attachedOnce: Settle<Terminal>;
  readonly #ended: Settle<TerminalExit>;
  /** Resolves with the terminal once attached the first time. */
  readonly attached: Promise<Terminal>;
  /**
   * Resolves with how the program ended; rejects when attaching fails for good (the
   * terminal does not exist, a refused credential) or `close` is called.
   */
  readonly exited: Promise<TerminalExit>;
  #exit: TerminalExit | undefined;

  constructor(client: Orchestra, instanceId: string, terminalId: string, options: AttachOptions) {
    this.#client = client;
    const base = client.url.replace(/^http/, 'ws').replace(/\/$/, '');
    this.#url = `${base}${terminalsPath(instanceId)}/${encodeURIComponent(terminalId)}/attach`;
    this.#options = options;
    let attachedOnce!: Settle<Terminal>;
    this.attached = new Promise((resolve, reject) => {
      attachedOnce = { resolve, reject };
    });
    this.#attachedOnce = attachedOnce;
    let ended!: Settle<TerminalExit>;
    this.exited = new Promise((resolve, reject) => {
      ended = { resolve, reject };
    });
    this.#ended = ended;
    // Whoever waits on one of them sees the failure; nobody waiting must not crash.
    this.attached.catch(() => {});
    this.exited.catch(() => {});
    void this.#run();
  }

  /** Types `data` (text is sent as UTF-8). Dropped while reconnecting. */
  write(data: string | Uint8Array): void {
    const socket = this.#socket;
    if (socket?.readyState !== WebSocket.OPEN) return;
    // A copy in a plain ArrayBuffer: a view of a shared one cannot be sent.
    socket.send(typeof data === 'string' ? new TextEncoder().encode(data) : new Uint8Array(data));
  }

  /** Resizes the terminal, for every viewer. */
  resize(cols: number, rows: number): void {
    this.#frame('resize', { cols, rows });
  }

  /** Detaches: the terminal goes on running. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const error = new OrchestraError('CONNECTION_FAILED', 'Detached', { status: 0 });
    this.#attachedOnce.reject(error);
    this.#ended.reject(error);
    const socket = this.#socket;
    if (socket === undefined || socket.readyState === WebSocket.CLOSED) return;
    const gone = new Promise<void>((resolve) => {
      socket.addEventListener('close', () => resolve(), { once: true });
      setTimeout(resolve, 2000);
    });
    socket.close(1000);
    await gone;
  }

  #frame(kind: string, fields: Record<string, unknown>): void {
    const socket = this.#socket;
    if (socket?.readyState !== WebSocket.OPEN) return;
    socket.send(
      JSON.stringify({
        header: {
          id: crypto.randomUUID(),
          type: 'REQUEST',
          timestamp: new Date().toISOString(),
          source: 'sdk',
          version: 1,
        },
        payload: { kind, ...fields },
      }),
    );
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      const outcome = await this.#connect();
      if (this.#closed) return;
      if (outcome.attached) failures = 0;
      if (this.#exit !== undefined) {
        this.#ended.resolve(this.#exit);
        this.#closed = true;
        return;
      }
      const final =
        outcome.error !== undefined ||
        FINAL_CLOSES.has(outcome.code) ||
        this.#options.reconnect === false;
      if (final) {
        const error =
          outcome.error ??
          new OrchestraError(
            'CONNECTION_FAILED',
            `The terminal connection closed (${outcome.code} ${outcome.reason})`,
            { status: 0 },
          );
        this.#attachedOnce.reject(error);
        this.#ended.reject(error);
        this.#closed = true;
        return;
      }
      const delay = RECONNECT_DELAYS_MS[Math.min(failures, RECONNECT_DELAYS_MS.length - 1)] ?? 5000;
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random() / 2)));
    }
  }

  /** One connection: auth frame, `attached`, output until it closes. */
  #connect(): Promise<{ attached: boolean; code: number; reason: string; error?: OrchestraError }> {
    return new Promise((resolve) => {
      let attached = false;
      let error: OrchestraError | undefined;
      const socket = new WebSocket(this.#url);
      socket.binaryType = 'arraybuffer';
      this.#socket = socket;
      socket.addEventListener('open', () => {
        // The credential in a frame: browsers cannot set headers on a WebSocket.
        void this.#client.currentCredential().then((token) => {
          if (token === undefined) {
            error = new OrchestraError('UNAUTHENTICATED', 'The client has no credential', {
              status: 401,
            });
            socket.close(1000);
            return;
          }
          this.#frame('auth', { token });
        });
      });
      socket.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') {
          this.#options.onOutput(new Uint8Array(event.data as ArrayBuffer));
          return;
        }
        const { payload } = JSON.parse(event.data) as {
          payload: { kind: TerminalServerFrameKind } & Record<string, unknown>;
        };
        const frame = <K extends TerminalServerFrameKind>(_k: K) =>
          payload as unknown as TerminalServerFramePayload<K>;
        switch (payload.kind) {
          case 'attached': {
            const { terminal, screen } = frame('attached');
            attached = true;
            this.#options.onScreen?.(screen, terminal as Terminal);
            this.#attachedOnce.resolve(terminal as Terminal);
            return;
          }
          case 'resized': {
            const { cols, rows } = frame('resized');
            this.#options.onResize?.(cols, rows);
            return;
          }
          case 'title':
            this.#options.onTitle?.(frame('title').title);
            return;
          case 'viewers':
            this.#options.onViewers?.(frame('viewers').count);
            return;
          case 'exit': {
            const { exit_code, signal, reason } = frame('exit');
            this.#exit = { exit_code, signal, reason };
            return;
          }
          case 'error': {
            const { code, message, details } = frame('error');
            // A refusal to attach is final; a bad frame of ours is not the caller's problem.
            if (!attached) {
              error = new OrchestraError(code, message, {
                status: 0,
                ...(details !== undefined ? { details } : {}),
              });
            }
            return;
          }
          default:
            return;
        }
      });
      socket.addEventListener('error', () => {});
      socket.addEventListener(
        'close',
        (event) => {
          if (this.#socket === socket) this.#socket = undefined;
          resolve({
            attached,
            code: event.code,
            reason: event.reason,
            ...(error ? { error } : {}),
          });
        },
        { once: true },
      );
    });
  }
}

/**
 * `Orchestra.instances.terminals`: PTYs in an instance's sandbox. A terminal that does not
 * exist rejects with `TERMINAL_NOT_FOUND` (404); one whose program ended, for input,
 * resize and screen, with `TERMINAL_EXITED` (409).
 */
export class TerminalsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** Opens one in a running instance (`bash` unless `command` says otherwise). */
  open(id: string, options: CreateTerminal = {}): Promise<Terminal> {
    return this.#client.request('POST', terminalsPath(id), { body: options });
  }

  /** One page, oldest first: running ones and how the exited ones ended. */
  list(id: string, options: PageOptions & { state?: TerminalState } = {}): Promise<Page<Terminal>> {
    return this.#client.request('GET', terminalsPath(id), { query: { ...options } });
  }

  listAll(
    id: string,
    options: Omit<PageOptions, 'cursor'> & { state?: TerminalState } = {},
  ): AsyncIterable<Terminal> {
    return paginate((cursor) => this.list(id, { ...options, ...cursor }));
  }

  get(id: string, terminal: string): Promise<Terminal> {
    return this.#client.request('GET', `${terminalsPath(id)}/${encodeURIComponent(terminal)}`);
  }

  /** Hangs it up and forgets it; resolves once its program ended. */
  async close(id: string, terminal: string): Promise<void> {
    await this.#client.request('DELETE', `${terminalsPath(id)}/${encodeURIComponent(terminal)}`);
  }

  /** Types `data` as is: `"ls\r"` runs `ls`, `"\u0003"` is Ctrl-C. */
  async write(id: string, terminal: string, data: string): Promise<void> {
    await this.#client.request(
      'POST',
      `${terminalsPath(id)}/${encodeURIComponent(terminal)}/input`,
      { body: { data } },
    );
  }

  resize(id: string, terminal: string, cols: number, rows: number): Promise<Terminal> {
    return this.#client.request(
      'POST',
      `${terminalsPath(id)}/${encodeURIComponent(terminal)}/resize`,
      { body: { cols, rows } },
    );
  }

  /** The screen as lines of text, with `scrollback` lines above it if asked. */
  screen(
    id: string,
    terminal: string,
    options: { scrollback?: number } = {},
  ): Promise<TerminalScreen> {
    return this.#client.request(
      'GET',
      `${terminalsPath(id)}/${encodeURIComponent(terminal)}/screen`,
      { query: { ...options } },
    );
  }

  /** Attaches a viewer (a WebSocket); see `TerminalConnection`. */
  attach(id: string, terminal: string, options: AttachOptions): TerminalConnection {
    return new TerminalConnection(this.#client, id, terminal, options);
  }
}
