import { backoffDelayMs, type ReconnectOptions } from './backoff.ts';
import { OrchestraError } from './errors.ts';

/** What a task handler is given besides the input. */
export interface TaskContext {
  task: AssignedTask;
  /**
   * Aborted when the task is cancelled, times out, or is no longer this agent's. A handler
   * that ignores a cancellation runs on, but once the server's grace period
   * (ORCHESTRA_TASK_CANCEL_GRACE_MS) is over, the task no longer counts against
   * `concurrency` and what the handler returns is discarded.
   */
  signal: AbortSignal;
  /**
   * Reports progress: `current` of `total` (both in units the agent chooses). Like every
   * event method, throws a RangeError when the event would not fit in one frame
   * (`maxFrameBytes`), instead of sending what the server would refuse.
   */
  progress(current: number, total?: number, message?: string): void;
  /** Streams a piece of output (text, a JSON value) to whoever follows the task. */
  output(data: unknown): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
  /** Any other event; `name` is lowercase letters, digits and `._-`. */
  emit(name: string, data?: unknown): void;
}

/** A task as the server hands it over (`task.assign`). */
export interface AssignedTask {
  id: string;
  attempt: number;
  input: unknown;
  template: { id: string; name: string; version: number; config: Record<string, unknown> } | null;
  capabilities: string[];
  priority: number;
  timeout_ms: number;
  deadline_at: string;
  labels: Record<string, string>;
  concurrency_key: string | null;
  /** The session the task belongs to: its tasks run one at a time, in order. */
  session_id: string | null;
  created_at: string;
}

export type TaskHandler = (input: unknown, context: TaskContext) => Promise<unknown> | unknown;

/**
 * Throw from a handler to choose how the failure is reported. Any other error counts as
 * retryable with code `AGENT_ERROR`.
 */
export class TaskFailedError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    message: string,
    options: { code?: string; retryable?: boolean; details?: Record<string, unknown> } = {},
  ) {
    super(message);
    this.name = 'TaskFailedError';
    this.code = options.code ?? 'AGENT_ERROR';
    this.retryable = options.retryable ?? true;
    this.details = options.details;
  }
}

export interface AgentWorkerOptions {
  /**
   * Base URL of the server (`http://…` or `ws://…`); the worker connects to
   * `/v1/agents/connect`. Several URLs (the nodes of a cluster): the worker starts with the
   * first and moves to the next whenever a connection fails or drops, and resumes its tasks
   * there.
   */
  url: string | string[];
  /** An `agent` (or `admin`) API key or JWT. */
  apiKey: string;
  /** Stable id of this agent: keep it across restarts so that its tasks can resume. */
  agentId: string;
  name?: string;
  capabilities: string[];
  /** Tasks run at once; default 1. */
  concurrency?: number;
  /** Relative capacity for the `weighted` strategy; default 1. */
  weight?: number;
  labels?: Record<string, string>;
  handler: TaskHandler;
  /** Drain on SIGTERM and SIGINT (finish running tasks, then disconnect); default true in Node. */
  handleSignals?: boolean;
  /** How long a drain waits for running tasks; default 30 s. */
  drainTimeoutMs?: number;
  /** Reconnect backoff: first delay and ceiling; full jitter in between. */
  reconnect?: ReconnectOptions;
  /** Events kept per task for resending after a reconnect; default 10,000. */
  maxBufferedEvents?: number;
  /**
   * Largest frame the server accepts; default: what the server says at registration
   * (`max_frame_bytes`, its ORCHESTRA_AGENT_MAX_FRAME_BYTES), else 1 MiB. A result that does not fit fails the task with
   * `OUTPUT_TOO_LARGE` (not retryable); an event that does not fit throws a RangeError
   * where the handler emits it. A larger frame would make the server close the connection.
   */
  maxFrameBytes?: number;
  /** Told about connection changes and errors that do not stop the worker. */
  onStatus?: (status: WorkerStatus) => void;
}

export type WorkerStatus =
  | { type: 'registered'; resumed: number; lost: number }
  | { type: 'disconnected'; code: number; reason: string; retryInMs: number }
  | { type: 'error'; error: Error };

interface Envelope {
  header: { id: string; correlation_id?: string; type: string };
  payload: { kind: string } & Record<string, unknown>;
}

type Final =
  | { kind: 'task.result'; output: unknown }
  | {
      kind: 'task.fail';
      error: {
        code: string;
        message: string;
        retryable: boolean;
        details?: Record<string, unknown>;
      };
    }
  | { kind: 'task.cancelled' };

interface RunningTask {
  task: AssignedTask;
  controller: AbortController;
  cancelReason: 'requested' | 'timeout' | 'lease_lost' | undefined;
  seq: number;
  /** Events not yet known to be stored, oldest first. */
  buffer: { seq: number; event: Record<string, unknown> }[];
  /** Set once the handler settled; resent until acknowledged. */
  final: Final | undefined;
  /** Sends of `final` that got no usable answer in a row; paces the next one. */
  finalRetries: number;
  /** `final` replaces an outcome the server refused. */
  finalReplaced: boolean;
  finalTimer: ReturnType<typeof setTimeout> | undefined;
  /** Drops the task once a requested cancellation's deadline passed. */
  cancelTimer: ReturnType<typeof setTimeout> | undefined;
}

const SDK = { name: '@orchestra/sdk', version: '0.1.0' };
/** The server's default ORCHESTRA_AGENT_MAX_FRAME_BYTES. */
const DEFAULT_MAX_FRAME_BYTES = 1_048_576;
/** Room for the envelope and the payload fields around an output or an event, in bytes. */
const FRAME_OVERHEAD_BYTES = 1024;
/** Error codes with which the server refuses a frame itself: sending it again cannot help. */
const REFUSED_FRAME_CODES = new Set(['VALIDATION_FAILED', 'INVALID_JSON', 'VALUE_TOO_LARGE']);
/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = new Map([
  [4401, 'the credential is no longer valid'],
  [4409, 'another connection registered with the same agent id'],
]);

/**
 * Runs tasks for Orchestra: connects over the agent protocol (docs/protocol.md),
 * registers, heartbeats, runs the handler for each assigned task with a cancellation
 * signal, streams its events and reports the result. Reconnects with backoff and jitter
 * and resumes its tasks (resending events the server did not store); drains on SIGTERM.
 */
export class AgentWorker {
  readonly #options: AgentWorkerOptions;
  readonly #concurrency: number;
  readonly #tasks = new Map<string, RunningTask>();
  readonly #waiting = new Map<string, (frame: Envelope) => void>();
  #socket: WebSocket | undefined;
  #registered = false;
  #stopping = false;
  #draining = false;
  #failures = 0;
  readonly #urls: string[];
  #urlIndex = 0;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  /** The frame limit the server announced at registration. */
  #serverMaxFrameBytes: number | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #firstRegistration: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #stopped: Promise<void> | undefined;
  #signalHandler: (() => void) | undefined;
  #cpu: { usage: NodeJS.CpuUsage; at: number } | undefined;
  #idle: (() => void) | undefined;

  constructor(options: AgentWorkerOptions) {
    if (!options.agentId) throw new TypeError('agentId is required');
    if (typeof options.handler !== 'function') throw new TypeError('handler must be a function');
    this.#urls = typeof options.url === 'string' ? [options.url] : [...options.url];
    if (this.#urls.length === 0 || this.#urls.some((u) => typeof u !== 'string' || u === ''))
      throw new TypeError('url must be a URL or a non-empty list of URLs');
    this.#options = options;
    this.#concurrency = options.concurrency ?? 1;
  }

  /** The URL of the node this worker connects to now. */
  get #url(): string {
    return this.#urls[this.#urlIndex] ?? '';
  }

  /** Tasks running now. */
  get running(): number {
    return this.#tasks.size;
  }

  /**
   * Connects and registers. Resolves once registered; rejects when the server refuses the
   * credential or the registration (reconnecting would not help then).
   */
  async start(): Promise<void> {
    await this.#checkCredential();
    const registered = new Promise<void>((resolve, reject) => {
      this.#firstRegistration = { resolve, reject };
    });
    if (this.#options.handleSignals ?? typeof process !== 'undefined') this.#installSignals();
    this.#connect();
    await registered;
  }

  /**
   * Stops. With `drain` (the default) the server gives no new tasks and running ones may
   * finish within `drainTimeoutMs`; then the connection closes. Tasks still running are
   * aborted: they stay this agent's until its lease ends, then run elsewhere.
   */
  stop(options: { drain?: boolean } = {}): Promise<void> {
    this.#stopped ??= this.#stop(options.drain ?? true);
    return this.#stopped;
  }

  async #stop(drain: boolean): Promise<void> {
    this.#draining = true;
    if (drain && this.#registered && this.#socket?.readyState === WebSocket.OPEN) {
      await this.#request({ kind: 'drain' }, 5_000).catch(() => undefined);
      const timeout = this.#options.drainTimeoutMs ?? 30_000;
      if (this.#tasks.size > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, timeout);
          this.#idle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
    this.#stopping = true;
    for (const running of this.#tasks.values()) {
      clearTimeout(running.finalTimer);
      clearTimeout(running.cancelTimer);
      running.controller.abort(new Error('worker stopped'));
    }
    this.#removeSignals();
    clearInterval(this.#heartbeat);
    clearTimeout(this.#reconnectTimer);
    const socket = this.#socket;
    if (socket && socket.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        // Cleared on close, or it would keep the process alive after stop() resolved.
        const timer = setTimeout(resolve, 2_000);
        socket.addEventListener(
          'close',
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
        socket.close(1000, 'agent stopped');
      });
    }
    this.#firstRegistration?.reject(new Error('the worker was stopped before it registered'));
  }

  async #checkCredential(): Promise<void> {
    const base = this.#url.replace(/^ws/, 'http').replace(/\/+$/, '');
    let response: Response;
    try {
      response = await fetch(`${base}/v1/whoami`, {
        headers: { authorization: `Bearer ${this.#options.apiKey}` },
        signal: AbortSignal.timeout(10_000),
      });
    } catch {
      return; // not reachable yet: the connection loop retries
    }
    if (response.status === 401 || response.status === 403) {
      const body = (await response.json().catch(() => ({}))) as {
        error?: { code?: string; message?: string };
      };
      throw new OrchestraError(
        body.error?.code ?? 'UNAUTHENTICATED',
        body.error?.message ?? 'The credential was refused',
        { status: response.status },
      );
    }
    const who = (await response.json().catch(() => ({}))) as { role?: string };
    if (response.ok && who.role !== undefined && who.role !== 'agent' && who.role !== 'admin') {
      throw new OrchestraError(
        'PERMISSION_DENIED',
        `An agent needs an agent or admin credential; this one has the ${who.role} role`,
        { status: 403 },
      );
    }
  }

  #connect(): void {
    if (this.#stopping) return;
    const base = this.#url.replace(/^http/, 'ws').replace(/\/+$/, '');
    // Node's WebSocket (undici) takes headers; browsers cannot authenticate agents this way.
    const socket = new WebSocket(`${base}/v1/agents/connect`, {
      headers: { authorization: `Bearer ${this.#options.apiKey}` },
    } as unknown as string[]);
    this.#socket = socket;
    this.#registered = false;
    socket.addEventListener('open', () => {
      this.#register().catch((err: Error) => {
        this.#report({ type: 'error', error: err });
        socket.close(1000, 'registration failed');
      });
    });
    socket.addEventListener('message', (event) => this.#onMessage(String(event.data)));
    socket.addEventListener('close', (event) => this.#onClose(socket, event.code, event.reason));
  }

  #onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.#socket) return;
    clearInterval(this.#heartbeat);
    this.#registered = false;
    for (const [id, resolve] of this.#waiting) {
      this.#waiting.delete(id);
      resolve({ header: { id: '', type: 'RESPONSE' }, payload: { kind: 'disconnected' } });
    }
    if (this.#stopping) return;
    const fatal = FATAL_CLOSE.get(code);
    if (fatal !== undefined) {
      const error = new OrchestraError('AGENT_DISCONNECTED', `Disconnected: ${fatal}`, {
        status: 0,
      });
      this.#report({ type: 'error', error });
      this.#firstRegistration?.reject(error);
      void this.stop({ drain: false });
      return;
    }
    this.#failures += 1;
    const { initialDelayMs = 250, maxDelayMs = 10_000 } = this.#options.reconnect ?? {};
    // Another node may be up while this one is not: each is tried once at once, then with
    // backoff. A server going away (1001) usually restarts or has peers: try again at once.
    const others = this.#urls.length > 1 && this.#failures < this.#urls.length;
    this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
    const delay =
      others || (code === 1001 && this.#failures === 1)
        ? 0
        : backoffDelayMs(this.#failures, { initialDelayMs, maxDelayMs, jitter: 'full' });
    this.#report({ type: 'disconnected', code, reason, retryInMs: delay });
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  async #register(): Promise<void> {
    const o = this.#options;
    const held = [...this.#tasks.values()];
    const response = await this.#request(
      {
        kind: 'register',
        agent_id: o.agentId,
        ...(o.name ? { name: o.name } : {}),
        capabilities: o.capabilities,
        max_concurrency: this.#concurrency,
        ...(o.weight ? { weight: o.weight } : {}),
        ...(o.labels ? { labels: o.labels } : {}),
        sdk: SDK,
        in_flight: held.map((r) => ({ task_id: r.task.id, attempt: r.task.attempt })),
      },
      30_000,
    );
    const p = response.payload;
    if (p.kind === 'disconnected') return; // the close handler reconnects
    if (p.kind === 'error') {
      const err = new OrchestraError(String(p.code), String(p.message), { status: 0 });
      // A refused registration will be refused again: stop rather than loop.
      this.#firstRegistration?.reject(err);
      void this.stop({ drain: false });
      throw err;
    }
    this.#registered = true;
    this.#failures = 0;
    const resumed = (p.resumed as { task_id: string; last_seq: number }[]) ?? [];
    const lost = (p.lost as string[]) ?? [];
    const lastSeq = new Map(resumed.map((r) => [r.task_id, r.last_seq]));
    // Each task held when registering is resumed or lost. Tasks assigned since are new and
    // stay: assignments can be handled before this answer (they may come in the same read).
    for (const running of held) {
      if (this.#tasks.get(running.task.id) !== running) continue; // replaced meanwhile
      if (!lastSeq.has(running.task.id)) this.#drop(running.task.id, 'lease_lost');
    }
    // Events and outcomes were kept while unregistered: send what the server lacks.
    for (const running of this.#tasks.values()) {
      const after = lastSeq.get(running.task.id) ?? 0;
      running.buffer = running.buffer.filter((b) => b.seq > after);
      for (const b of running.buffer) this.#sendEvent(running, b.seq, b.event);
      if (running.final) void this.#sendFinal(running);
    }
    if (this.#draining) void this.#request({ kind: 'drain' }, 5_000).catch(() => undefined);
    if (typeof p.max_frame_bytes === 'number') this.#serverMaxFrameBytes = p.max_frame_bytes;
    const interval = Number(p.heartbeat_interval_ms);
    this.#heartbeat = setInterval(() => this.#sendHeartbeat(), interval);
    this.#report({ type: 'registered', resumed: resumed.length, lost: lost.length });
    this.#firstRegistration?.resolve();
    this.#firstRegistration = undefined;
  }

  #sendHeartbeat(): void {
    const load: Record<string, number> = { in_flight: this.#tasks.size };
    if (typeof process !== 'undefined' && typeof process.cpuUsage === 'function') {
      const now = performance.now();
      const usage = process.cpuUsage();
      if (this.#cpu !== undefined) {
        const used =
          (usage.user + usage.system - this.#cpu.usage.user - this.#cpu.usage.system) / 1000;
        const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
        load.cpu = Math.min(1, Math.max(0, used / ((now - this.#cpu.at) * cores)));
      }
      this.#cpu = { usage, at: now };
      const available = process.availableMemory?.();
      const rss = process.memoryUsage.rss();
      if (available !== undefined && available > 0)
        load.memory = Math.min(1, rss / (rss + available));
    }
    this.#send('EVENT', { kind: 'heartbeat', ...load });
  }

  #onMessage(text: string): void {
    let frame: Envelope;
    try {
      frame = JSON.parse(text) as Envelope;
    } catch {
      return;
    }
    const correlation = frame.header.correlation_id;
    if (correlation !== undefined) {
      const waiter = this.#waiting.get(correlation);
      if (waiter) {
        this.#waiting.delete(correlation);
        waiter(frame);
        return;
      }
    }
    const p = frame.payload;
    switch (p.kind) {
      case 'task.assign':
        this.#onAssign(p.task as AssignedTask);
        return;
      case 'task.cancel': {
        const running = this.#tasks.get(String(p.task_id));
        if (running === undefined || running.task.attempt !== p.attempt) return;
        const reason = p.reason as RunningTask['cancelReason'];
        running.cancelReason ??= reason;
        running.controller.abort(
          new Error(`task ${reason === 'requested' ? 'cancelled' : reason}`),
        );
        if (reason !== 'requested') {
          this.#drop(running.task.id, reason);
          return;
        }
        // Past the deadline the server cancels the task without the agent, and would refuse
        // its outcome: a handler that ignores its signal no longer holds a slot then.
        const deadlineMs = Number(p.deadline_ms);
        if (deadlineMs > 0 && running.cancelTimer === undefined) {
          running.cancelTimer = setTimeout(() => {
            if (this.#tasks.get(running.task.id) === running && running.final === undefined) {
              this.#drop(running.task.id, undefined);
            }
          }, deadlineMs);
        }
        return;
      }
      case 'drain':
        this.#draining = true;
        return;
      case 'error': {
        const details = p.details as { task_id?: string } | undefined;
        if (p.code === 'TASK_NOT_ASSIGNED' && details?.task_id) {
          this.#drop(details.task_id, 'lease_lost');
          return;
        }
        this.#report({
          type: 'error',
          error: new OrchestraError(String(p.code), String(p.message), { status: 0 }),
        });
        return;
      }
    }
  }

  #onAssign(task: AssignedTask): void {
    const existing = this.#tasks.get(task.id);
    if (existing?.task.attempt === task.attempt) {
      this.#send('RESPONSE', { kind: 'task.accept', task_id: task.id, attempt: task.attempt });
      return;
    }
    if (this.#draining || this.#stopping || this.#handlersRunning() >= this.#concurrency) {
      this.#send('RESPONSE', {
        kind: 'task.reject',
        task_id: task.id,
        attempt: task.attempt,
        reason: this.#draining ? 'draining' : 'at its concurrency limit',
      });
      return;
    }
    if (existing) this.#drop(task.id, 'lease_lost');
    const running: RunningTask = {
      task,
      controller: new AbortController(),
      cancelReason: undefined,
      seq: 0,
      buffer: [],
      final: undefined,
      finalRetries: 0,
      finalReplaced: false,
      finalTimer: undefined,
      cancelTimer: undefined,
    };
    this.#tasks.set(task.id, running);
    this.#send('RESPONSE', { kind: 'task.accept', task_id: task.id, attempt: task.attempt });
    void this.#run(running);
  }

  /**
   * Tasks whose handler still runs. One that has its outcome is only waiting for the ack
   * and takes no slot: the server frees the slot when it stores the outcome, and may send
   * the next assignment right behind the ack, in the same read, before the ack's waiter
   * has run.
   */
  #handlersRunning(): number {
    let n = 0;
    for (const running of this.#tasks.values()) if (running.final === undefined) n += 1;
    return n;
  }

  async #run(running: RunningTask): Promise<void> {
    const emit = (event: Record<string, unknown>) => {
      if (this.#tasks.get(running.task.id) !== running || running.final) return;
      const bytes = this.#oversize(event);
      if (bytes !== undefined) {
        throw new RangeError(`the ${String(event.type)} event ${this.#tooLarge(bytes)}`);
      }
      running.seq += 1;
      running.buffer.push({ seq: running.seq, event });
      const max = this.#options.maxBufferedEvents ?? 10_000;
      if (running.buffer.length > max) running.buffer.splice(0, running.buffer.length - max);
      this.#sendEvent(running, running.seq, event);
    };
    const context: TaskContext = {
      task: running.task,
      signal: running.controller.signal,
      progress: (current, total, message) =>
        emit({
          type: 'progress',
          current,
          ...(total !== undefined ? { total } : {}),
          ...(message !== undefined ? { message } : {}),
        }),
      output: (data) => emit({ type: 'output', data: data ?? null }),
      log: (level, message) => emit({ type: 'log', level, message }),
      emit: (name, data) => emit({ type: 'custom', name, ...(data !== undefined ? { data } : {}) }),
    };
    let final: Final;
    try {
      const output = await this.#options.handler(running.task.input, context);
      if (running.cancelReason === 'requested') {
        final = { kind: 'task.cancelled' };
      } else {
        const bytes = this.#oversize(output ?? null);
        final =
          bytes === undefined
            ? { kind: 'task.result', output: output ?? null }
            : {
                kind: 'task.fail',
                error: {
                  code: 'OUTPUT_TOO_LARGE',
                  message: `the result ${this.#tooLarge(bytes)}`,
                  retryable: false,
                },
              };
      }
    } catch (err) {
      if (running.cancelReason === 'requested') {
        final = { kind: 'task.cancelled' };
      } else {
        const failure =
          err instanceof TaskFailedError
            ? err
            : new TaskFailedError(err instanceof Error ? err.message : String(err));
        final = {
          kind: 'task.fail',
          error: {
            code: failure.code,
            message: failure.message.slice(0, 10_000),
            retryable: failure.retryable,
            ...(failure.details ? { details: failure.details } : {}),
          },
        };
      }
    }
    if (this.#tasks.get(running.task.id) !== running) return; // dropped meanwhile
    running.final = final;
    await this.#sendFinal(running);
  }

  /**
   * Sends the task's outcome until the server acknowledges it (across reconnects, and
   * again after a pause when the server could not process it). An outcome the server
   * refuses as invalid becomes a failure it can store, so that the task does not wait for
   * its timeout.
   */
  async #sendFinal(running: RunningTask): Promise<void> {
    const final = running.final;
    if (final === undefined || !this.#registered) return; // resent after registering
    clearTimeout(running.finalTimer);
    const { kind, ...rest } = final;
    const response = await this.#request(
      { kind, task_id: running.task.id, attempt: running.task.attempt, ...rest },
      30_000,
      kind === 'task.cancelled' ? 'RESPONSE' : 'REQUEST',
    ).catch(() => undefined);
    if (this.#tasks.get(running.task.id) !== running) return; // dropped meanwhile
    const answer = response?.payload;
    if (answer?.kind === 'disconnected') return; // resent after registering
    if (answer?.kind === 'error') {
      const code = String(answer.code);
      const message = String(answer.message);
      this.#report({
        type: 'error',
        error: new OrchestraError(code, `task ${running.task.id}: ${kind} refused: ${message}`, {
          status: 0,
          details: { task_id: running.task.id, attempt: running.task.attempt },
        }),
      });
      if (REFUSED_FRAME_CODES.has(code)) {
        // Only once: a replacement refused in turn (it holds nothing to refuse) is dropped.
        if (final.kind !== 'task.cancelled' && !running.finalReplaced) {
          const what = final.kind === 'task.result' ? 'result' : 'failure report';
          running.finalReplaced = true;
          running.final = {
            kind: 'task.fail',
            error: {
              code: final.kind === 'task.result' ? 'OUTPUT_INVALID' : 'AGENT_ERROR',
              message: `the server refused the ${what}: ${message}`.slice(0, 10_000),
              retryable: final.kind === 'task.fail' && final.error.retryable,
            },
          };
          await this.#sendFinal(running);
          return;
        }
      } else if (code !== 'TASK_NOT_ASSIGNED') {
        this.#retryFinal(running);
        return;
      }
    } else if (answer === undefined) {
      this.#retryFinal(running); // no answer in time
      return;
    }
    this.#drop(running.task.id, undefined);
  }

  #retryFinal(running: RunningTask): void {
    running.finalRetries += 1;
    const delay = backoffDelayMs(running.finalRetries, {
      initialDelayMs: 500,
      maxDelayMs: 30_000,
      jitter: 'equal',
    });
    running.finalTimer = setTimeout(() => void this.#sendFinal(running), delay);
  }

  /**
   * The size of `value` as JSON in bytes when its frame would exceed `maxFrameBytes`, else
   * undefined. Throws what JSON.stringify throws (a BigInt, a cycle).
   */
  #oversize(value: unknown): number | undefined {
    const limit = this.#maxFrameBytes() - FRAME_OVERHEAD_BYTES;
    const text = JSON.stringify(value) ?? 'null';
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most values need no encoding to know.
    if (text.length * 3 <= limit) return undefined;
    const bytes = new TextEncoder().encode(text).length;
    return bytes > limit ? bytes : undefined;
  }

  #maxFrameBytes(): number {
    return this.#options.maxFrameBytes ?? this.#serverMaxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  #tooLarge(bytes: number): string {
    const max = this.#maxFrameBytes();
    return `takes ${bytes} bytes as JSON, more than fits in a frame of at most ${max} bytes (maxFrameBytes)`;
  }

  #sendEvent(running: RunningTask, seq: number, event: Record<string, unknown>): void {
    if (!this.#registered) return; // resent after registering
    this.#send('STREAM', {
      kind: 'task.event',
      task_id: running.task.id,
      attempt: running.task.attempt,
      seq,
      event,
    });
  }

  #drop(taskId: string, reason: RunningTask['cancelReason']): void {
    const running = this.#tasks.get(taskId);
    if (running === undefined) return;
    if (reason !== undefined && !running.controller.signal.aborted) {
      running.cancelReason ??= reason;
      running.controller.abort(new Error(`task ${reason}`));
    }
    clearTimeout(running.finalTimer);
    clearTimeout(running.cancelTimer);
    this.#tasks.delete(taskId);
    if (this.#tasks.size === 0) this.#idle?.();
  }

  #send(type: string, payload: Record<string, unknown>, id: string = crypto.randomUUID()): void {
    const socket = this.#socket;
    if (socket?.readyState !== WebSocket.OPEN) return;
    socket.send(
      JSON.stringify({
        header: {
          id,
          type,
          timestamp: new Date().toISOString(),
          source: `agent:${this.#options.agentId}`,
          version: 1,
        },
        payload,
      }),
    );
  }

  /** Sends a frame and resolves to the frame that answers it (or `disconnected`). */
  #request(
    payload: Record<string, unknown>,
    timeoutMs: number,
    type: 'REQUEST' | 'RESPONSE' = 'REQUEST',
  ): Promise<Envelope> {
    const id = crypto.randomUUID();
    return new Promise<Envelope>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`no answer to ${String(payload.kind)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, (frame) => {
        clearTimeout(timer);
        resolve(frame);
      });
      this.#send(type, payload, id);
    });
  }

  #report(status: WorkerStatus): void {
    try {
      this.#options.onStatus?.(status);
    } catch {
      // A failing status callback must not break the worker.
    }
  }

  #installSignals(): void {
    if (typeof process === 'undefined' || typeof process.once !== 'function') return;
    this.#signalHandler = () => {
      void this.stop({ drain: true });
    };
    process.once('SIGTERM', this.#signalHandler);
    process.once('SIGINT', this.#signalHandler);
  }

  #removeSignals(): void {
    if (this.#signalHandler === undefined) return;
    process.off('SIGTERM', this.#signalHandler);
    process.off('SIGINT', this.#signalHandler);
    this.#signalHandler = undefined;
  }
}
