import { randomUUID } from 'node:crypto';
import type { ServerAgentFrameKind, ServerAgentFramePayload } from '@orchestra/protocol';
import type { Logger } from 'pino';
import { updateEwma } from '../balancing/strategies.ts';
import type { Bus } from '../bus/bus.ts';
import type { Principal } from '../platform/auth.ts';
import { ApiError, CLOSE_CODES } from '../platform/errors.ts';
import type { Authenticated } from '../platform/http.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { LimitValue, TenantLimitName, TenantLimitSource } from '../platform/tenant-limits.ts';
import { jsonWithinLimit } from '../platform/value-limits.ts';
import {
  type CloseCode,
  type ConnectionHandler,
  type WsConnection,
  WsConnections,
} from '../platform/ws-connection.ts';
import type { WireSocket } from '../platform/ws-socket.ts';
import type { AssignedTask, Dispatcher, DispatchTarget } from '../tasks/index.ts';
import {
  type AgentNotice,
  type AgentRef,
  type AgentTaskEvent,
  agentSubject,
  type TaskRuntime,
} from '../tasks/index.ts';
import { agentToolCapability } from '../tools/index.ts';
import type { AgentService } from './agent-service.ts';
import { type AgentFrame, type FrameOf, type MessageType, parseAgentFrame } from './protocol.ts';
import { type AgentToolAccess, AgentToolCalls } from './tool-calls.ts';

/** Inbound frames queued before the socket stops reading (backpressure to the agent)… */
const MAX_QUEUED_FRAMES = 1_000;
/** …and below which it reads again. */
const RESUME_BELOW = MAX_QUEUED_FRAMES / 2;
/** Frames of one connection being handled at once (for different tasks). */
const MAX_CONCURRENT_FRAMES = 256;
/** Consecutive task.event frames stored in one transaction, at most. */
const EVENT_BATCH = 500;

export interface PoolSettings {
  heartbeatIntervalMs: number;
  /** Largest frame accepted from an agent; told to agents at registration. */
  maxFrameBytes: number;
  /** Tool calls one connection may have in flight; one more is refused at once. */
  maxToolCalls: number;
  heartbeatTimeoutMs: number;
  /** How long an offline agent stays listed; 0 forever. */
  retentionMs: number;
  instanceId: string;
  version: string;
}

/**
 * An agent the pool holds on this node: a WebSocket connection, or an in-process agent such
 * as a hosted runner (which registers, heartbeats and reports through the same services).
 */
export interface LocalAgent extends DispatchTarget {
  ref(): AgentRef;
  /** Stops it; a WebSocket connection is closed with `code`. */
  close(code: CloseCode): void;
}

/**
 * The agents connected to this node: their WebSocket connections, what each holds, and
 * the protocol state machine. In-memory state here is a connection registry; the store
 * says who holds which task.
 */
export class AgentPool {
  readonly #connections = new Map<string, Map<string, LocalAgent>>();
  /** Every socket, registered or not; agents' liveness is their heartbeats, not pings. */
  readonly #sockets = new WsConnections<AgentFrame>({});
  readonly deps: {
    agents: AgentService;
    runtime: TaskRuntime;
    bus: Bus;
    log: Logger;
    metrics: Metrics;
    jobs: Jobs;
    /** Each tenant's largest task result, error and event. */
    limits: TenantLimitSource;
    /** Tools, for the `tool.list` and `tool.call` frames. */
    tools: AgentToolAccess;
    settings: PoolSettings;
  };
  /** Set once the dispatcher, which needs the pool, exists. */
  dispatcher: Dispatcher | undefined;
  #sweep: Job | undefined;
  /** How often leases are judged; set by `start`. */
  #sweepIntervalMs = 1_000;
  #closing = false;

  constructor(deps: AgentPool['deps']) {
    this.deps = deps;
  }

  /**
   * Ticks the cluster's lease clock (AgentService.tickLeaseClock) before leases are judged:
   * a gap longer than two sweeps, in which no node ticked, is added to the running leases.
   * Called at start, by each lease sweep and by the task sweep.
   */
  async tickLeaseClock(
    now: Date = new Date(),
    stallMs: number = 2 * this.#sweepIntervalMs,
  ): Promise<void> {
    const bridged = await this.deps.agents.tickLeaseClock(now, stallMs);
    if (bridged !== undefined) {
      this.deps.log.warn(
        { gap_ms: bridged.gapMs, leases: bridged.extended },
        'no node heard heartbeats for a while (restart or stall): running leases extended by the gap',
      );
    }
  }

  /**
   * Marks agents whose lease ran out offline, and forgets those offline for longer than the
   * retention, on a timer; safe on every node.
   */
  start(sweepIntervalMs: number): void {
    this.#sweepIntervalMs = sweepIntervalMs;
    const { retentionMs } = this.deps.settings;
    // Forgetting is not urgent: at most every 10 s, and often enough for short retentions.
    const forgetEvery = Math.max(
      1,
      Math.round(Math.min(10_000, retentionMs / 4) / sweepIntervalMs),
    );
    let sweeps = 0;
    this.#sweep = this.deps.jobs.job({
      name: 'agent-lease-sweep',
      intervalMs: sweepIntervalMs,
      logFailure: (err) => this.deps.log.warn({ err }, 'agent lease sweep failed'),
      run: async () => {
        await this.tickLeaseClock();
        const gone = await this.deps.agents.expireLeases();
        for (const { tenantId, agentId } of gone) {
          this.#connections.get(tenantId)?.get(agentId)?.close(CLOSE_CODES.TIMEOUT);
        }
        sweeps += 1;
        if (retentionMs > 0 && sweeps % forgetEvery === 0) {
          const forgotten = await this.deps.agents.forgetOffline(
            new Date(Date.now() - retentionMs),
          );
          if (forgotten > 0) {
            this.deps.log.info({ forgotten, retention_ms: retentionMs }, 'forgot offline agents');
          }
        }
      },
    });
    this.#sweep.start();
  }

  /** Takes a new WebSocket from a request that the pipeline authenticated as `principal`. */
  accept(socket: WireSocket, principal: Principal, authenticated: Authenticated): void {
    const { settings, log, metrics } = this.deps;
    this.#sockets.open(
      socket,
      {
        auth: { kind: 'request', ...authenticated },
        // The WebSocket server's own limit is the larger of the agent and realtime limits.
        maxFrameBytes: settings.maxFrameBytes,
        // What the server sends an agent answers what it sent, or is bounded by its
        // max_concurrency: the agent's reading paces it.
        maxQueueBytes: undefined,
        inbound: { pauseAt: MAX_QUEUED_FRAMES, resumeAt: RESUME_BELOW - 1 },
        source: `orchestra:${settings.instanceId}`,
        log,
        onErrorFrame: (error) => metrics.agentProtocolErrors.inc({ code: error.code }),
      },
      (connection) => new AgentConnection(this, connection, principal),
    );
  }

  tenants(): Iterable<string> {
    return this.#connections.keys();
  }

  /** Agents connected to this node. */
  get connectionCount(): number {
    let count = 0;
    for (const byId of this.#connections.values()) count += byId.size;
    return count;
  }

  targets(tenantId: string): readonly DispatchTarget[] {
    // Closing: no new task goes to a connection that is about to be closed.
    if (this.#closing) return [];
    const byId = this.#connections.get(tenantId);
    return byId === undefined ? [] : [...byId.values()];
  }

  /** Makes `connection` the local holder of its agent id; closes an older local one. */
  bind(connection: LocalAgent): void {
    const { tenantId, agentId } = connection.ref();
    let byId = this.#connections.get(tenantId);
    if (byId === undefined) {
      byId = new Map();
      this.#connections.set(tenantId, byId);
    }
    const older = byId.get(agentId);
    byId.set(agentId, connection);
    this.deps.metrics.agentsConnected.set(this.#countBound());
    if (older !== undefined && older !== connection) older.close(CLOSE_CODES.REPLACED);
  }

  unbind(connection: LocalAgent): void {
    const { tenantId, agentId } = connection.ref();
    const byId = this.#connections.get(tenantId);
    if (byId?.get(agentId) !== connection) return;
    byId.delete(agentId);
    if (byId.size === 0) this.#connections.delete(tenantId);
    this.deps.metrics.agentsConnected.set(this.#countBound());
  }

  kick(tenantId: string): void {
    this.dispatcher?.kick(tenantId);
  }

  #countBound(): number {
    let n = 0;
    for (const byId of this.#connections.values()) n += byId.size;
    return n;
  }

  /** Closes every connection with 1001: agents keep their leases and reconnect elsewhere. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#sweep?.stop();
    await this.#sockets.close();
  }
}

/**
 * One agent's connection: registration, heartbeats and the frames about its tasks. The
 * connection core below it owns authentication, frame limits and closing.
 */
class AgentConnection implements DispatchTarget, ConnectionHandler<AgentFrame> {
  readonly #pool: AgentPool;
  readonly #connection: WsConnection<AgentFrame>;
  readonly #principal: Principal;
  readonly #id = randomUUID();
  readonly #queue: AgentFrame[] = [];
  /** When each task was sent, and its template: for the latency average and the output check. */
  readonly #assigned = new Map<
    string,
    { at: number; template: { id: string; version: number } | null }
  >();
  #processing = false;
  /** The last piece of work queued per task id ('' for frames about the agent itself). */
  readonly #chains = new Map<string, Promise<void>>();
  #running = 0;
  #slotFreed: (() => void) | undefined;
  #registration: FrameOf<'register'>['payload'] | undefined;
  #capabilities: ReadonlySet<string> = new Set();
  /** Registered and told so: only then may tasks be assigned. */
  #ready = false;
  #draining = false;
  #unsubscribe: (() => void) | undefined;
  /** Its tool calls, which run beside the frame loop. */
  readonly #tools: AgentToolCalls;

  /** Task id → attempt, of the tasks this agent holds. */
  readonly inFlight = new Map<string, number>();
  latencyEwmaMs: number | undefined;
  load: { cpu: number; memory: number } | undefined;

  constructor(pool: AgentPool, connection: WsConnection<AgentFrame>, principal: Principal) {
    this.#pool = pool;
    this.#connection = connection;
    this.#principal = principal;
    this.#tools = new AgentToolCalls({
      access: pool.deps.tools,
      principal,
      maxInFlight: pool.deps.settings.maxToolCalls,
      log: pool.deps.log,
      send: (type, payload, correlationId) => this.#send(type, payload, correlationId),
    });
    this.#armWatchdog();
  }

  get #closed(): boolean {
    return !this.#connection.isOpen;
  }

  get agentId(): string {
    return this.#registration?.agent_id ?? '';
  }
  get capabilities(): ReadonlySet<string> {
    return this.#capabilities;
  }
  get maxConcurrency(): number {
    return this.#registration?.max_concurrency ?? 0;
  }
  get weight(): number {
    return this.#registration?.weight ?? 1;
  }

  ref(): AgentRef {
    return { tenantId: this.#principal.tenant.id, agentId: this.agentId };
  }

  /** One of the agent's tenant's limits. */
  #limit(name: TenantLimitName): Promise<LimitValue> {
    return this.#pool.deps.limits.get(this.#principal.tenant.id, name);
  }

  accepting(): boolean {
    return this.#ready && !this.#draining && !this.#closed;
  }

  assign(task: AssignedTask): void {
    const template = task.template && { id: task.template.id, version: task.template.version };
    this.#assigned.set(task.id, { at: performance.now(), template });
    this.#pool.deps.metrics.tasksAssigned.inc();
    this.#send('REQUEST', { kind: 'task.assign', task });
  }

  close(code: CloseCode): void {
    this.#connection.close(code);
  }

  /** Sends a frame of the agent protocol; its payload is the wire contract's for its kind. */
  #send<K extends ServerAgentFrameKind>(
    type: MessageType,
    payload: ServerAgentFramePayload<K>,
    correlationId?: string,
  ): void {
    this.#connection.sendFrame(type, payload, correlationId);
  }

  #sendError(error: ApiError, correlationId: string | undefined): void {
    this.#connection.sendError(error, correlationId);
  }

  /** Counts an invalid frame; too many in a window close the connection. */
  #invalid(error: ApiError, correlationId: string | undefined): void {
    this.#connection.invalid(error, correlationId);
  }

  /** `register`, then each heartbeat, must come within the heartbeat timeout (4408). */
  #armWatchdog(): void {
    this.#connection.setDeadline(this.#pool.deps.settings.heartbeatTimeoutMs);
  }

  parse(data: Buffer): AgentFrame {
    return parseAgentFrame(data.toString('utf8'));
  }

  // Its heartbeats wait in the socket while reading is stopped: not hearing them is our doing.
  readingPaused(): void {
    this.#connection.clearDeadline();
  }

  readingResumed(): void {
    this.#armWatchdog();
  }

  receive(frame: AgentFrame): void {
    this.#pool.deps.metrics.agentFrames.inc({ kind: frame.payload.kind });
    if (frame.payload.kind === 'heartbeat' && this.#ready) {
      // Counted when it arrives, ahead of queued frames: a busy agent is not a dead one.
      this.#armWatchdog();
      const heartbeat = frame as FrameOf<'heartbeat'>;
      this.#chain([''], () =>
        this.#guard(frame.header.id, () => this.#heartbeat(heartbeat.payload)),
      );
      return;
    }
    this.#queue.push(frame);
    this.#connection.inboundQueued();
    if (!this.#processing) void this.#drainQueue();
  }

  /**
   * Handles queued frames in order per task, and different tasks' frames concurrently, so
   * that their transactions can share a commit. `register` is handled alone, before
   * anything after it.
   */
  async #drainQueue(): Promise<void> {
    this.#processing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const frame = this.#queue[0];
        if (frame === undefined) break;
        if (this.#running >= MAX_CONCURRENT_FRAMES) {
          await new Promise<void>((resolve) => {
            this.#slotFreed = resolve;
          });
          continue;
        }
        if (this.#registration === undefined || frame.payload.kind === 'register') {
          this.#queue.shift();
          this.#connection.inboundHandled();
          await Promise.all(this.#chains.values());
          await this.#guard(frame.header.id, () => this.#handle(frame));
        } else if (frame.payload.kind === 'task.event') {
          const batch: FrameOf<'task.event'>[] = [];
          while (batch.length < EVENT_BATCH && this.#queue[0]?.payload.kind === 'task.event') {
            batch.push(this.#queue.shift() as FrameOf<'task.event'>);
          }
          this.#connection.inboundHandled(batch.length);
          this.#chain([...new Set(batch.map((f) => f.payload.task_id))], () =>
            this.#guard(undefined, () => this.#onEvents(batch)),
          );
        } else if (frame.payload.kind === 'tool.call') {
          // Not chained: a tool call can take minutes, and must hold up no frame of its task.
          this.#queue.shift();
          this.#connection.inboundHandled();
          this.#tools.call(frame as FrameOf<'tool.call'>, this.agentId);
        } else {
          this.#queue.shift();
          this.#connection.inboundHandled();
          // A tool list is about no task and orders nothing: it waits for nothing before it.
          const key =
            frame.payload.kind === 'tool.list'
              ? `tool.list:${frame.header.id}`
              : 'task_id' in frame.payload
                ? frame.payload.task_id
                : '';
          this.#chain([key], () => this.#guard(frame.header.id, () => this.#handle(frame)));
        }
      }
    } finally {
      this.#processing = false;
    }
  }

  /** Runs `work` after the previous work on each of `keys` (task ids; '' for the agent). */
  #chain(keys: string[], work: () => Promise<void>): void {
    const previous = keys.map((k) => this.#chains.get(k)).filter((p) => p !== undefined);
    this.#running += 1;
    const done: Promise<void> = Promise.all(previous)
      .then(work)
      .finally(() => {
        this.#running -= 1;
        for (const key of keys) if (this.#chains.get(key) === done) this.#chains.delete(key);
        const freed = this.#slotFreed;
        this.#slotFreed = undefined;
        freed?.();
      });
    for (const key of keys) this.#chains.set(key, done);
  }

  /** Runs a frame's handler; its failure becomes an error frame, never a crash. */
  async #guard(correlationId: string | undefined, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      if (err instanceof ApiError) {
        this.#sendError(err, correlationId);
        return;
      }
      this.#pool.deps.log.error({ err }, 'agent frame failed');
      this.#sendError(
        new ApiError('INTERNAL_ERROR', 'The frame could not be processed; send it again'),
        correlationId,
      );
    }
  }

  async #handle(frame: AgentFrame): Promise<void> {
    const id = frame.header.id;
    if (frame.payload.kind === 'register') {
      if (this.#registration !== undefined) {
        this.#invalid(new ApiError('AGENT_ALREADY_REGISTERED'), id);
        return;
      }
      await this.#register(frame as FrameOf<'register'>);
      return;
    }
    if (this.#registration === undefined) {
      this.#invalid(new ApiError('AGENT_NOT_REGISTERED'), id);
      return;
    }
    const { runtime } = this.#pool.deps;
    const ref = this.ref();
    switch (frame.payload.kind) {
      case 'heartbeat':
        await this.#heartbeat(frame.payload);
        return;
      case 'task.accept': {
        const { task_id, attempt } = frame.payload;
        if (!(await runtime.accept(ref, task_id, attempt))) this.#notAssigned(id, task_id, attempt);
        return;
      }
      case 'task.reject': {
        const { task_id, attempt, reason } = frame.payload;
        const outcome = await runtime.reject(ref, task_id, attempt, reason);
        if (outcome === 'running') {
          this.#sendError(
            new ApiError(
              'TASK_ALREADY_ACCEPTED',
              `Task "${task_id}" was accepted; end it with task.fail or task.result`,
              { details: { task_id, attempt } },
            ),
            id,
          );
          return;
        }
        if (outcome === 'not_owned') {
          this.#notAssigned(id, task_id, attempt);
          return;
        }
        this.#release(task_id, attempt);
        if (outcome === 'requeued') this.#pool.dispatcher?.noteRejection(task_id, ref.agentId);
        this.#pool.kick(ref.tenantId);
        return;
      }
      case 'task.result': {
        const { task_id, attempt, output } = frame.payload;
        // Refused before anything changes: the task stays the agent's, to end another way.
        jsonWithinLimit(output, 'payload.output', await this.#limit('task_output_max_bytes'));
        const sent =
          this.inFlight.get(task_id) === attempt ? this.#assigned.get(task_id) : undefined;
        const ack = await runtime.complete(ref, task_id, attempt, output, sent?.template);
        this.#finished(task_id, attempt, ack.accepted);
        this.#send('RESPONSE', { kind: 'ack', task_id, attempt, ...ack }, id);
        return;
      }
      case 'task.fail': {
        const { task_id, attempt, error } = frame.payload;
        jsonWithinLimit(error, 'payload.error', await this.#limit('task_output_max_bytes'));
        const ack = await runtime.fail(ref, task_id, attempt, error);
        this.#finished(task_id, attempt, false);
        this.#send('RESPONSE', { kind: 'ack', task_id, attempt, ...ack }, id);
        return;
      }
      case 'task.cancelled': {
        const { task_id, attempt } = frame.payload;
        const ack = await runtime.confirmCancelled(ref, task_id, attempt);
        this.#finished(task_id, attempt, false);
        this.#send('RESPONSE', { kind: 'ack', task_id, attempt, ...ack }, id);
        return;
      }
      case 'drain': {
        if (!this.#draining) {
          await this.#pool.deps.agents.setStatus(
            ref.tenantId,
            ref.agentId,
            this.#id,
            'draining',
            'the agent asked to drain',
          );
          this.#draining = true;
        }
        this.#send(
          'RESPONSE',
          { kind: 'ack', accepted: true, in_flight: [...this.inFlight.keys()] },
          id,
        );
        return;
      }
      case 'task.event':
        await this.#onEvents([frame as FrameOf<'task.event'>]);
        return;
      case 'tool.list':
        await this.#tools.list(frame as FrameOf<'tool.list'>, ref.agentId);
        return;
      case 'tool.call':
        this.#tools.call(frame as FrameOf<'tool.call'>, ref.agentId);
        return;
    }
  }

  async #register(frame: FrameOf<'register'>): Promise<void> {
    const { agents, runtime, bus, settings, tools } = this.#pool.deps;
    const declared = frame.payload.tools ?? [];
    // A declared tool's calls are tasks with `tool:<name>`: the agent gets that capability.
    const payload = {
      ...frame.payload,
      capabilities: [
        ...new Set([
          ...frame.payload.capabilities,
          ...declared.map((t) => agentToolCapability(t.name)),
        ]),
      ],
    };
    const tenantId = this.#principal.tenant.id;
    if (declared.length > 0) {
      const { held, skipped } = await tools.declare(tenantId, payload.agent_id, declared);
      if (held.length > 0 || skipped.length > 0) {
        this.#pool.deps.log.warn(
          { agent_id: payload.agent_id, held, skipped },
          'tools an agent declared are held for approval or taken by another source',
        );
      }
    }
    const { replaced } = await agents.register(tenantId, payload, {
      id: this.#id,
      nodeId: settings.instanceId,
      leaseMs: settings.heartbeatTimeoutMs,
    });
    if (this.#closed) return;
    this.#registration = payload;
    this.#capabilities = new Set(payload.capabilities);
    const ref = this.ref();
    this.#unsubscribe = bus.subscribe(agentSubject(tenantId, payload.agent_id), (message) =>
      this.#onNotice(message as AgentNotice),
    );
    if (replaced !== undefined) {
      bus.publish(agentSubject(tenantId, payload.agent_id), {
        op: 'replaced',
        connection_id: replaced,
      } satisfies AgentNotice);
    }
    const { resumed, lost } = await runtime.reconcile(ref, payload.in_flight ?? []);
    if (this.#closed) return;
    for (const task of resumed) this.inFlight.set(task.task_id, task.attempt);
    this.#armWatchdog();
    this.#send(
      'RESPONSE',
      {
        kind: 'registered',
        agent_id: payload.agent_id,
        heartbeat_interval_ms: settings.heartbeatIntervalMs,
        heartbeat_timeout_ms: settings.heartbeatTimeoutMs,
        max_frame_bytes: settings.maxFrameBytes,
        resumed: resumed.map(({ task_id, attempt, last_seq }) => ({ task_id, attempt, last_seq })),
        lost,
        server: { version: settings.version, instance_id: settings.instanceId },
      },
      frame.header.id,
    );
    // Only now may dispatch give it tasks: an assignment before `registered` would reach
    // an agent that cannot yet tell new tasks from the ones it resumes.
    this.#ready = true;
    this.#pool.bind(this);
    for (const task of resumed) {
      if (task.cancel_requested) {
        this.#send('REQUEST', {
          kind: 'task.cancel',
          task_id: task.task_id,
          attempt: task.attempt,
          reason: 'requested',
          deadline_ms: 0,
        });
      }
    }
    this.#pool.deps.log.info(
      {
        tenant_id: tenantId,
        agent_id: payload.agent_id,
        resumed: resumed.length,
        lost: lost.length,
      },
      'agent registered',
    );
    this.#pool.kick(tenantId);
  }

  async #heartbeat(payload: FrameOf<'heartbeat'>['payload']): Promise<void> {
    const { agents, settings } = this.#pool.deps;
    this.#armWatchdog();
    // A revoked or expired credential closes the connection with 4401.
    if (!(await this.#connection.recheckCredential())) return;
    const { tenantId, agentId } = this.ref();
    if (payload.cpu !== undefined || payload.memory !== undefined) {
      this.load = { cpu: payload.cpu ?? 0, memory: payload.memory ?? 0 };
    }
    const held = await agents.heartbeat(
      tenantId,
      agentId,
      this.#id,
      { in_flight: payload.in_flight, cpu: payload.cpu, memory: payload.memory },
      settings.heartbeatTimeoutMs,
    );
    if (!held) this.close(CLOSE_CODES.REPLACED);
  }

  async #onEvents(all: FrameOf<'task.event'>[]): Promise<void> {
    const eventLimit = await this.#limit('task_event_max_bytes');
    const frames = all.filter((f) => {
      try {
        jsonWithinLimit(f.payload.event, 'payload.event', eventLimit);
        return true;
      } catch (err) {
        // Only this event is refused (and not stored); the others of the batch go on.
        if (!(err instanceof ApiError)) throw err;
        this.#sendError(err, f.header.id);
        return false;
      }
    });
    if (frames.length === 0) return;
    const items: AgentTaskEvent[] = frames.map((f) => ({
      task_id: f.payload.task_id,
      attempt: f.payload.attempt,
      seq: f.payload.seq,
      event: f.payload.event,
    }));
    const notOwned = await this.#pool.deps.runtime.appendEvents(this.ref(), items);
    for (const taskId of notOwned) {
      const frame = frames.find((f) => f.payload.task_id === taskId);
      if (frame) this.#notAssigned(frame.header.id, taskId, frame.payload.attempt);
    }
  }

  #onNotice(notice: AgentNotice): void {
    switch (notice.op) {
      case 'cancel':
        if (this.inFlight.get(notice.task_id) !== notice.attempt) return;
        this.#send('REQUEST', {
          kind: 'task.cancel',
          task_id: notice.task_id,
          attempt: notice.attempt,
          reason: notice.reason,
          deadline_ms: notice.deadline_ms,
        });
        // A timed-out or lost task is no longer the agent's: its slot is free now.
        if (notice.reason !== 'requested') {
          this.#release(notice.task_id, notice.attempt);
          this.#pool.kick(this.ref().tenantId);
        }
        return;
      case 'release':
        // Ended without the agent (a cancellation it did not confirm in time).
        if (this.inFlight.get(notice.task_id) !== notice.attempt) return;
        this.#release(notice.task_id, notice.attempt);
        this.#pool.kick(this.ref().tenantId);
        return;
      case 'drain':
        this.#draining = true;
        this.#send('EVENT', { kind: 'drain', reason: 'requested through the API' });
        return;
      case 'replaced':
        if (notice.connection_id === this.#id) this.close(CLOSE_CODES.REPLACED);
        return;
    }
  }

  #notAssigned(correlationId: string, taskId: string, attempt: number): void {
    this.#release(taskId, attempt);
    this.#sendError(
      new ApiError('TASK_NOT_ASSIGNED', `Task "${taskId}" attempt ${attempt} is not this agent's`, {
        details: { task_id: taskId, attempt },
      }),
      correlationId,
    );
  }

  /** Frees the task's slot if the agent holds that attempt (not a newer one). */
  #release(taskId: string, attempt: number): void {
    if (this.inFlight.get(taskId) !== attempt) return;
    this.inFlight.delete(taskId);
    this.#assigned.delete(taskId);
    this.#tools.abortTask(taskId);
  }

  #finished(taskId: string, attempt: number, succeeded: boolean): void {
    const sent = this.#assigned.get(taskId);
    if (succeeded && sent !== undefined && this.inFlight.get(taskId) === attempt) {
      this.latencyEwmaMs = updateEwma(this.latencyEwmaMs, performance.now() - sent.at);
    }
    this.#release(taskId, attempt);
    this.#pool.kick(this.ref().tenantId);
  }

  /** Records the disconnect; the core counts the connection settled once it is stored. */
  async closed(code: CloseCode | undefined): Promise<void> {
    this.#unsubscribe?.();
    this.#tools.close();
    if (this.#registration === undefined) return;
    this.#pool.unbind(this);
    const { tenantId, agentId } = this.ref();
    const broke = code === CLOSE_CODES.PROTOCOL_VIOLATION;
    const reason = broke ? 'closed for breaking the protocol' : 'disconnected';
    try {
      await this.#pool.deps.agents.setStatus(
        tenantId,
        agentId,
        this.#id,
        broke ? 'error' : 'offline',
        reason,
      );
    } catch (err) {
      this.#pool.deps.log.warn({ err }, 'agent disconnect not recorded');
    }
  }
}
