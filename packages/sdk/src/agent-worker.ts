import type {
  AgentTool,
  ToolAnnotations,
  ToolCall,
  ToolResult,
  AssignedTask as WireAssignedTask,
} from '@orchestra/protocol';
import { ERROR_CATALOGUE } from '@orchestra/protocol/constants';
import { Backoff, type ReconnectOptions } from './backoff.ts';
import { OrchestraError } from './errors.ts';
import {
  type ConnectionOptions,
  type ConnectionStatus,
  type Credential,
  type ReconnectingSocket,
  Transport,
  type TransportStatus,
} from './transport.ts';

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
  /** The tenant's tools, called through Orchestra for this task. */
  tools: TaskTools;
  /**
   * For a task that works in an instance (`task.instance_id`): saves its workspace as a
   * checkpoint of the task, through the built-in tool `workspace.checkpoint` (so tool
   * policies apply and the call is recorded). Resolves to the checkpoint's id; rejects with
   * an `OrchestraError` when the call is refused, or an `Error` with the tool's message when
   * it failed (no instance, the instance is gone).
   */
  checkpoint(message?: string): Promise<string>;
}

/** What `ctx.tools.list` filters on; every filter given must match. */
export interface ToolListOptions {
  /** Words that must all appear in the name or the definition. */
  q?: string;
  namePrefix?: string;
  labels?: Record<string, string>;
}

export interface ToolCallOptions {
  /**
   * For a call a policy makes wait for an operator's approval: how long the server waits
   * for the decision before answering with the call `awaiting_approval` (and `result`
   * null). Default 0; at most 300000.
   */
  waitMs?: number;
  /** Stops waiting for the answer (the call may still run at the server). */
  signal?: AbortSignal;
}

/** A tool call that Orchestra made: its record and, once it ran, its result. */
export interface ToolCallOutcome {
  /** The record, as `GET /v1/tool-calls/{id}` shows it; `caller` names this agent and task. */
  call: ToolCall;
  /**
   * MCP's content format; `is_error` when the tool ran and failed (or timed out: see
   * `call.error`). Null while the call awaits an approval (`call.status`).
   */
  result: ToolResult | null;
}

/**
 * Tools through Orchestra (docs/protocol.md, "Tools"): policies, the record of every call,
 * secrets and resilience stay at the server. Calls are made for the task, so policies that
 * match its template or its session's labels apply.
 */
export interface TaskTools {
  /**
   * The active tools (every page) that the tenant's policies let this task's calls reach, as
   * an agent sees them. A listed tool may still be refused for its arguments or a limit.
   */
  list(options?: ToolListOptions): Promise<AgentTool[]>;
  /**
   * Calls tool `name` with `args`. Resolves to the call and its result, also when the tool
   * failed (`result.is_error`). Rejects with an `OrchestraError` whose `code` says why the
   * call was refused (`TOOL_CALL_DENIED`, `TOOL_INVALID_ARGUMENTS`, `TOOL_NOT_FOUND`,
   * `TASK_NOT_ASSIGNED`, `AGENT_TOOL_CALLS_LIMITED`…; `details.call` is the record when
   * there is one), with `AGENT_DISCONNECTED` when the connection went away before the
   * answer (the call may or may not have run), and with the signal's reason when the
   * task's signal or `options.signal` aborts first.
   */
  call(
    name: string,
    args?: Record<string, unknown>,
    options?: ToolCallOptions,
  ): Promise<ToolCallOutcome>;
}

/** A task as the server hands it over (`task.assign`). */
/** A task as the server hands it to an agent (`task.assign`): the wire contract's. */
export type AssignedTask = WireAssignedTask;

export type TaskHandler = (input: unknown, context: TaskContext) => Promise<unknown> | unknown;

/** The names a declared tool may have (the server's rule). */
const TOOL_NAME = /^[a-z0-9][a-z0-9_.-]{0,94}$/;

/** A tool an agent serves (see `AgentWorkerOptions.tools`). */
export interface ServedTool {
  /** Lowercase letters, digits, "_", "." and "-"; unique in the tenant. */
  name: string;
  description?: string;
  /** JSON Schema of the arguments; the server checks calls against it. */
  inputSchema?: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  /** MCP's hints: readOnlyHint, destructiveHint, idempotentHint, openWorldHint, title. */
  annotations?: ToolAnnotations;
  /** How long a call may take, 1000 to 600000 ms; default 30000. */
  timeoutMs?: number;
  /** Runs one call: the arguments, and the task's context. Returns the result. */
  handler: (args: Record<string, unknown>, context: TaskContext) => Promise<unknown> | unknown;
}

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

export interface AgentWorkerOptions extends ConnectionOptions<WorkerStatus> {
  /**
   * Base URL of the server (`http://…` or `ws://…`); the worker connects to
   * `/v1/agents/connect`. Several URLs (the nodes of a cluster): the worker starts with the
   * first and moves to the next whenever a connection fails or drops, and resumes its tasks
   * there.
   */
  url: string | string[];
  /** An `agent` (or `admin`) API key or JWT, or a function that returns one. */
  apiKey: Credential;
  /** Stable id of this agent: keep it across restarts so that its tasks can resume. */
  agentId: string;
  name?: string;
  /** What tasks it can run; default none (an agent that only serves `tools`). */
  capabilities?: string[];
  /** Tasks run at once; default 1. */
  concurrency?: number;
  /** Relative capacity for the `weighted` strategy; default 1. */
  weight?: number;
  labels?: Record<string, string>;
  /**
   * Runs every task assigned to this agent, but those of the tools it serves (`tools`).
   * Required unless `tools` is given.
   */
  handler?: TaskHandler;
  /**
   * Tools this agent serves. Each is registered when the agent registers, as the agent tool
   * `name` (pinned like any tool: a changed definition is held until an admin approves it),
   * and each call of it becomes a task for the agents serving it: its arguments are the
   * task's input, its handler's return value the result (an object with MCP's `content`
   * passes through as the result).
   */
  tools?: ServedTool[];
  /** Drain on SIGTERM and SIGINT (finish running tasks, then disconnect); default true in Node. */
  handleSignals?: boolean;
  /** How long a drain waits for running tasks; default 30 s. */
  drainTimeoutMs?: number;
  /**
   * Reconnect backoff: from `initialDelayMs` (default 250) doubling up to `maxDelayMs`
   * (default 10,000), with full jitter. Other nodes are tried once each at once first.
   */
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
  /**
   * Told about connection changes and errors that do not stop the worker. Every status
   * carries the connection `state` and `url` that all clients report; `type` says what
   * happened.
   */
  onStatus?: (status: WorkerStatus) => void;
}

/**
 * What `onStatus` of an `AgentWorker` is called with:
 * - `registered` (state `connected`): registered, and how many held tasks were resumed or
 *   lost;
 * - `disconnected` (state `connecting` before the first registration, then
 *   `reconnecting`): a connection failed or dropped; the next try is in `retryInMs`;
 * - `error` (the state does not change): something failed that the worker carries on
 *   after;
 * - `stopped` (state `closed`): after `stop`, or a disconnection reconnecting cannot help
 *   (then with its `error`).
 */
export type WorkerStatus = ConnectionStatus &
  (
    | { type: 'registered'; resumed: number; lost: number }
    | { type: 'disconnected'; code: number; reason: string; retryInMs: number }
    | { type: 'error'; error: Error }
    | { type: 'stopped' }
  );

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
  /** Counts sends of `final` that got no usable answer in a row; paces the next one. */
  finalBackoff: Backoff;
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
  readonly #transport: Transport;
  /** The agent connection; it reconnects, moving between nodes, until `stop`. */
  readonly #link: ReconnectingSocket;
  #registered = false;
  /** What the last registration resumed and lost, for its status. */
  #registration = { resumed: 0, lost: 0 };
  #stopping = false;
  #draining = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  /** The frame limit the server announced at registration. */
  #serverMaxFrameBytes: number | undefined;
  #stopped: Promise<void> | undefined;
  #signalHandler: (() => void) | undefined;
  #cpu: { usage: NodeJS.CpuUsage; at: number } | undefined;
  #idle: (() => void) | undefined;

  constructor(options: AgentWorkerOptions) {
    if (!options.agentId) throw new TypeError('agentId is required');
    if (options.handler !== undefined && typeof options.handler !== 'function') {
      throw new TypeError('handler must be a function');
    }
    if (options.handler === undefined && (options.tools ?? []).length === 0) {
      throw new TypeError('give a handler, tools, or both');
    }
    for (const tool of options.tools ?? []) {
      if (!TOOL_NAME.test(tool.name)) {
        throw new TypeError(`tool name ${JSON.stringify(tool.name)} must match ${TOOL_NAME}`);
      }
      if (typeof tool.handler !== 'function')
        throw new TypeError(`tool ${tool.name}: handler must be a function`);
    }
    this.#options = options;
    this.#concurrency = options.concurrency ?? 1;
    this.#transport = new Transport({
      url: options.url,
      apiKey: options.apiKey,
      reconnect: options.reconnect ?? {},
      statusFromRequests: false,
      onStatus: (status) => this.#onConnectionStatus(status),
    });
    this.#link = this.#transport.socket({
      path: '/v1/agents/connect',
      // Node's WebSocket (undici) takes headers; browsers cannot authenticate agents.
      authorizationHeader: true,
      firstConnect: 'retry',
      handshake: () => this.#register(),
      message: (text) => this.#onMessage(text),
      closed: (code) => this.#onClose(code),
      failed: (error) => this.#onRegisterFailed(error),
    });
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
    if (this.#options.handleSignals ?? typeof process !== 'undefined') this.#installSignals();
    try {
      await this.#link.connect();
    } catch (err) {
      if (this.#stopping && !(err instanceof OrchestraError && err.code !== 'CONNECTION_FAILED'))
        throw new Error('the worker was stopped before it registered', { cause: err });
      throw err;
    }
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
    if (drain && this.#registered && this.#link.connected) {
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
    await this.#link.close(1000, 'agent stopped');
  }

  async #checkCredential(): Promise<void> {
    let who: { role?: string } | undefined;
    try {
      who = await this.#transport.request('GET', '/v1/whoami', { timeoutMs: 10_000 });
    } catch (err) {
      if (err instanceof OrchestraError && (err.status === 401 || err.status === 403)) throw err;
      return; // not reachable yet (or not answering properly): the connection loop retries
    }
    const role = who?.role;
    if (role !== undefined && role !== 'agent' && role !== 'admin') {
      throw new OrchestraError(
        'PERMISSION_DENIED',
        `An agent needs an agent or admin credential; this one has the ${role} role`,
        { status: 403 },
      );
    }
  }

  /** The connection's state as this worker's statuses. */
  #onConnectionStatus(status: TransportStatus): void {
    const { state, url, error } = status;
    if (state === 'connected') {
      this.#report({ type: 'registered', state, url, ...this.#registration });
    } else if (state === 'closed') {
      this.#report({ type: 'stopped', state, url, ...(error ? { error } : {}) });
    } else if (status.retryInMs !== undefined) {
      this.#report({
        type: 'disconnected',
        state,
        url,
        code: status.code ?? 1006,
        reason: status.reason ?? '',
        retryInMs: status.retryInMs,
        ...(error ? { error } : {}),
      });
    }
  }

  /** A connection closed: fails what waits on it; returns an error when it was for good. */
  #onClose(code: number): Error | undefined {
    clearInterval(this.#heartbeat);
    this.#registered = false;
    for (const [id, resolve] of this.#waiting) {
      this.#waiting.delete(id);
      resolve({ header: { id: '', type: 'RESPONSE' }, payload: { kind: 'disconnected' } });
    }
    if (this.#stopping) return undefined;
    const fatal = FATAL_CLOSE.get(code);
    if (fatal === undefined) return undefined;
    const error = new OrchestraError('AGENT_DISCONNECTED', `Disconnected: ${fatal}`, {
      status: 0,
    });
    this.#error(error);
    void this.stop({ drain: false });
    return error;
  }

  /** A registration failed: refused by the server for good, or not answered (retried). */
  #onRegisterFailed(error: unknown): Error | undefined {
    if (this.#stopping) return undefined;
    if (error instanceof OrchestraError) {
      if (error.code === 'CONNECTION_FAILED') return undefined; // the link reports the close
      void this.stop({ drain: false });
      return error;
    }
    this.#error(error instanceof Error ? error : new Error(String(error)));
    return undefined;
  }

  /** The handler of a task: its tool's, when it calls a tool this agent serves. */
  #handlerFor(task: AssignedTask): TaskHandler {
    for (const tool of this.#options.tools ?? []) {
      if (task.capabilities.includes(`tool:${tool.name}`)) {
        return (input, context) => tool.handler((input ?? {}) as Record<string, unknown>, context);
      }
    }
    return (
      this.#options.handler ??
      (() => {
        throw new TaskFailedError('This agent serves tools only, and the task calls none of them', {
          retryable: false,
        });
      })
    );
  }

  async #register(): Promise<void> {
    const o = this.#options;
    const held = [...this.#tasks.values()];
    const response = await this.#request(
      {
        kind: 'register',
        agent_id: o.agentId,
        ...(o.name ? { name: o.name } : {}),
        capabilities: o.capabilities ?? [],
        max_concurrency: this.#concurrency,
        ...(o.tools && o.tools.length > 0
          ? {
              tools: o.tools.map((t) => ({
                name: t.name,
                ...(t.description !== undefined ? { description: t.description } : {}),
                ...(t.inputSchema !== undefined ? { input_schema: t.inputSchema } : {}),
                ...(t.outputSchema !== undefined ? { output_schema: t.outputSchema } : {}),
                ...(t.annotations !== undefined ? { annotations: t.annotations } : {}),
                ...(t.timeoutMs !== undefined ? { timeout_ms: t.timeoutMs } : {}),
              })),
            }
          : {}),
        ...(o.weight ? { weight: o.weight } : {}),
        ...(o.labels ? { labels: o.labels } : {}),
        sdk: SDK,
        in_flight: held.map((r) => ({ task_id: r.task.id, attempt: r.task.attempt })),
      },
      30_000,
    );
    const p = response.payload;
    if (p.kind === 'disconnected') {
      // The link sees the close too and reconnects.
      throw new OrchestraError('CONNECTION_FAILED', 'Disconnected while registering', {
        status: 0,
      });
    }
    if (p.kind === 'error') {
      // Refused: reconnecting would not help (the link stops, and start() rejects).
      throw new OrchestraError(String(p.code), String(p.message), { status: 0 });
    }
    this.#registered = true;
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
    // Reported by the link once this resolves, as `registered`.
    this.#registration = { resumed: resumed.length, lost: lost.length };
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
        this.#error(new OrchestraError(String(p.code), String(p.message), { status: 0 }));
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
      finalBackoff: new Backoff(undefined, {
        initialDelayMs: 500,
        maxDelayMs: 30_000,
        jitter: 'equal',
      }),
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
      tools: {
        list: (options) => this.#listTools(running, options ?? {}),
        call: (name, args, options) => this.#callTool(running, name, args ?? {}, options ?? {}),
      },
      checkpoint: async (message) => {
        const { result } = await this.#callTool(
          running,
          'workspace.checkpoint',
          message !== undefined ? { message } : {},
          {},
        );
        const checkpoint = (result?.structured_content as { checkpoint?: { id?: unknown } })
          ?.checkpoint;
        if (result === null || result.is_error || typeof checkpoint?.id !== 'string') {
          const said = result?.content.find((c) => c.type === 'text');
          throw new Error(
            `No checkpoint: ${said?.type === 'text' ? said.text : 'the call awaits an approval'}`,
          );
        }
        return checkpoint.id;
      },
    };
    let final: Final;
    try {
      const output = await this.#handlerFor(running.task)(running.task.input, context);
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
      this.#error(
        new OrchestraError(code, `task ${running.task.id}: ${kind} refused: ${message}`, {
          status: 0,
          details: { task_id: running.task.id, attempt: running.task.attempt },
        }),
      );
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
    const delay = running.finalBackoff.fail();
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
    this.#link.send(
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

  /**
   * Sends a frame and resolves to the frame that answers it (or `disconnected`). Without
   * `timeoutMs` it waits as long as the connection lasts; `signal` stops the wait.
   */
  #request(
    payload: Record<string, unknown>,
    timeoutMs: number | undefined,
    type: 'REQUEST' | 'RESPONSE' = 'REQUEST',
    signal?: AbortSignal,
  ): Promise<Envelope> {
    const id = crypto.randomUUID();
    return new Promise<Envelope>((resolve, reject) => {
      const stop = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#waiting.delete(id);
      };
      const onAbort = () => {
        stop();
        reject(signal?.reason);
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              stop();
              reject(new Error(`no answer to ${String(payload.kind)} within ${timeoutMs} ms`));
            }, timeoutMs);
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.set(id, (frame) => {
        stop();
        resolve(frame);
      });
      this.#send(type, payload, id);
    });
  }

  /** Every page of `tool.list`, bounded (10,000 pages of 500). */
  async #listTools(running: RunningTask, options: ToolListOptions): Promise<AgentTool[]> {
    const tools: AgentTool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10_000; page++) {
      const answer = await this.#answerOf(
        {
          kind: 'tool.list',
          task_id: running.task.id,
          limit: 500,
          ...(options.q !== undefined ? { q: options.q } : {}),
          ...(options.namePrefix !== undefined ? { name_prefix: options.namePrefix } : {}),
          ...(options.labels !== undefined ? { labels: options.labels } : {}),
          ...(cursor !== undefined ? { cursor } : {}),
        },
        running.controller.signal,
        'tool.list.result',
      );
      tools.push(...(answer.tools as AgentTool[]));
      const next = answer.next_cursor;
      if (typeof next !== 'string') break;
      cursor = next;
    }
    return tools;
  }

  async #callTool(
    running: RunningTask,
    name: string,
    args: Record<string, unknown>,
    options: ToolCallOptions,
  ): Promise<ToolCallOutcome> {
    const signal =
      options.signal === undefined
        ? running.controller.signal
        : AbortSignal.any([running.controller.signal, options.signal]);
    const requestId = crypto.randomUUID();
    const bytes = this.#oversize(args);
    if (bytes !== undefined) {
      // The server would close the connection on such a frame, taking every task with it.
      throw new RangeError(`the arguments of ${name} ${this.#tooLarge(bytes)}`);
    }
    const answer = await this.#answerOf(
      {
        kind: 'tool.call',
        request_id: requestId,
        task_id: running.task.id,
        name,
        arguments: args,
        ...(options.waitMs !== undefined ? { wait_ms: options.waitMs } : {}),
      },
      signal,
      'tool.result',
    );
    const call = answer.call as ToolCall | undefined;
    const error = answer.error as
      | { code: string; message: string; details?: Record<string, unknown> }
      | undefined;
    if (error !== undefined || call === undefined) {
      throw this.#frameError(
        error ?? { code: 'INVALID_RESPONSE', message: 'tool.result without a call' },
        call === undefined ? {} : { call },
      );
    }
    return { call, result: (answer.result as ToolResult | null | undefined) ?? null };
  }

  /**
   * Sends a request and resolves to its answer of kind `kind`. Rejects with an
   * OrchestraError for an `error` frame, and with `AGENT_DISCONNECTED` when the connection
   * is not registered or goes away first.
   */
  async #answerOf(
    payload: Record<string, unknown>,
    signal: AbortSignal | undefined,
    kind: string,
  ): Promise<Record<string, unknown>> {
    const disconnected = () =>
      new OrchestraError(
        'AGENT_DISCONNECTED',
        `The agent is not connected; ${String(payload.kind)} got no answer`,
        { status: 0 },
      );
    if (!this.#registered || !this.#link.connected) throw disconnected();
    const frame = await this.#request(payload, undefined, 'REQUEST', signal);
    const p = frame.payload;
    if (p.kind === 'disconnected') throw disconnected();
    if (p.kind === 'error') {
      throw this.#frameError(
        p as unknown as { code: string; message: string; details?: Record<string, unknown> },
        {},
      );
    }
    if (p.kind !== kind) {
      throw new OrchestraError('INVALID_RESPONSE', `expected ${kind}, got ${String(p.kind)}`, {
        status: 0,
      });
    }
    return p;
  }

  /** An error the server answered a frame with, as an OrchestraError with its HTTP status. */
  #frameError(
    error: { code: string; message: string; details?: Record<string, unknown> },
    extra: Record<string, unknown>,
  ): OrchestraError {
    const known = (ERROR_CATALOGUE as Record<string, { status: number } | undefined>)[error.code];
    const details = { ...(error.details ?? {}), ...extra };
    return new OrchestraError(error.code, error.message, {
      status: known?.status ?? 0,
      ...(Object.keys(details).length > 0 ? { details } : {}),
    });
  }

  /** Reports an error the worker carries on after. */
  #error(error: Error): void {
    this.#report({ type: 'error', state: this.#transport.state, url: this.#transport.url, error });
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
