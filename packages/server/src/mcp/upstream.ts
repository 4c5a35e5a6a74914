import { EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CallToolResult,
  Client,
  type GetPromptResult,
  type Prompt,
  ProtocolError,
  type ReadResourceResult,
  type Resource,
  SdkError,
  SdkErrorCode,
  SdkHttpError,
  SSEClientTransport,
  StreamableHTTPClientTransport,
  type Tool,
  type Transport,
} from '@modelcontextprotocol/client';
import type { Logger } from 'pino';
import { detectSandbox, sandboxCommand } from '../platform/sandbox.ts';
import { VERSION } from '../version.ts';
import { type BackoffPolicy, backoffDelayMs } from './backoff.ts';
import { UpstreamError } from './errors.ts';
import { type UpstreamFetch, upstreamFetch } from './http-fetch.ts';
import { RingLog } from './ring-log.ts';
import { type ProcessExit, StdioProcessTransport } from './stdio-supervisor.ts';

/** How Orchestra reaches one upstream MCP server. Env values arrive resolved (secrets included). */
export type McpTransportConfig =
  | {
      transport: 'stdio';
      command: string;
      args: string[];
      /** Working directory, the only writable one when sandboxed; defaults to `options.workDir`. */
      cwd?: string;
      env: Record<string, string>;
      /** Allow network access inside the sandbox. */
      network: boolean;
    }
  | { transport: 'streamable_http' | 'sse'; url: string; headers: Record<string, string> };

export type UpstreamState = 'connecting' | 'ready' | 'degraded' | 'failed';

export interface UpstreamStatus {
  /**
   * - `connecting`: a connection attempt (spawn, negotiation, initial lists) is running;
   * - `ready`: connected, lists fetched, last health check passed;
   * - `degraded`: was ready, then the process died, a health check or a list refresh failed;
   *   a reconnect is scheduled or running;
   * - `failed`: the last attempt failed (`nextAttemptAt` says when the next one runs, `null`
   *   when none will: retries exhausted or `close()` called).
   */
  state: UpstreamState;
  /** Why the upstream is not ready; `null` when ready. Never holds env values or headers. */
  reason: string | null;
  /** When `state` last changed (ISO 8601). */
  since: string;
  /** Processes spawned after the first one (stdio only). */
  restarts: number;
  /** Connections established or attempted after the first one (every transport). */
  reconnects: number;
  /** The MCP revision agreed with the server (`2025-11-25`, `2026-07-28`…); `null` until connected. */
  protocolVersion: string | null;
  /** `modern` for the 2026-07-28 generation (stateless), `legacy` for the 2025 generation. */
  era: 'legacy' | 'modern' | null;
  serverInfo: { name: string; version: string } | null;
  /** stdio only: whether the process runs inside bubblewrap. */
  sandboxed: boolean;
  /** Why it does not run sandboxed (stdio), `null` otherwise. */
  sandboxReason: string | null;
  nextAttemptAt: string | null;
}

export type UpstreamListKind = 'tools' | 'resources' | 'prompts';

export interface McpUpstreamEvents {
  /** Every state change, with the full status. */
  status: [UpstreamStatus];
  /** A list was re-fetched after the server said it changed, or after a reconnect changed it. */
  listChanged: [UpstreamListKind];
}

export interface McpUpstreamOptions {
  logger: Logger;
  /** Writable directory for a stdio server without `cwd`; a private temp dir when absent. */
  workDir?: string;
  /** Paths a sandboxed server may read besides the system ones (its code, node_modules). */
  readOnlyPaths?: string[];
  sandbox?: 'auto' | 'off';
  /** 0 disables the periodic `ping`. Default 30 s. */
  healthIntervalMs?: number;
  healthTimeoutMs?: number;
  /** Budget for spawn + negotiation + initialize. Default 30 s. */
  connectTimeoutMs?: number;
  /** Default per-call budget of callTool/readResource/getPrompt. Default 60 s. */
  callTimeoutMs?: number;
  restart?: Partial<BackoffPolicy> & {
    /**
     * Consecutive failures before giving up (`failed` for good): failed attempts, and
     * connections lost before they were stable for `stableAfterMs`. Default: never give up.
     */
    maxAttempts?: number;
    /** A connection that lived this long resets the backoff when it is lost. Default 60 s. */
    stableAfterMs?: number;
  };
  stderr?: { maxLines?: number; maxBytes?: number };
  /** Longest stdout line (JSON-RPC message) accepted from a stdio server. Default 4 MiB. */
  maxMessageBytes?: number;
}

const MAX_LIST_PAGES = 100;
// Names passed through to a stdio server's environment; everything else of Orchestra's own
// environment (its secrets) stays out.
const INHERITED_ENV = ['PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM', 'USER', 'LOGNAME', 'SHELL'];

/**
 * One upstream MCP server, kept connected: spawns (sandboxed where bubblewrap works) and
 * restarts a stdio server, or connects to a Streamable HTTP / legacy SSE endpoint; keeps its
 * tools, resources and prompts lists current; health-checks it with `ping`; and reports its
 * state. Calls fail fast with an {@link UpstreamError} when it is not connected.
 *
 * Protocol generations: one `@modelcontextprotocol/client` 2.x client with
 * `versionNegotiation: 'auto'` serves both. It probes with `server/discover` and falls back to
 * the plain 2025 `initialize` handshake on any legacy answer (on stdio also on silence); the
 * 1.x SDK's servers (server-everything, server-filesystem) negotiate `2025-11-25` through it
 * and 2.x servers `2026-07-28`, so a second (1.x) client would add nothing but a second
 * error and transport vocabulary.
 */
export class McpUpstream {
  readonly config: McpTransportConfig;
  private readonly options: McpUpstreamOptions;
  private readonly log: Logger;
  private readonly events = new EventEmitter<McpUpstreamEvents>();
  private readonly stderr: RingLog;
  private readonly backoff: BackoffPolicy;
  private readonly maxAttempts: number;
  private current: UpstreamStatus;
  private client: Client | undefined;
  /** The transport of the running or in-flight connection, so close() can always reach it. */
  private transport: Transport | undefined;
  private lists: { tools: Tool[]; resources: Resource[]; prompts: Prompt[] } = {
    tools: [],
    resources: [],
    prompts: [],
  };
  private refreshing = new Map<UpstreamListKind, Promise<void>>();
  private refreshAgain = new Set<UpstreamListKind>();
  private started = false;
  private closed = false;
  /** The connections of a Streamable HTTP upstream, kept alive across its requests. */
  private httpFetch: UpstreamFetch | undefined;
  private closing: Promise<void> | undefined;
  private attempts = 0;
  private consecutiveFailures = 0;
  private connectedAt = 0;
  /** How the last stdio process ended, for the errors of the calls it took down. */
  private lastExit: ProcessExit | undefined;
  /**
   * Set when a stdio server died on the `server/discover` probe: some 2025-era servers exit on
   * any first request but `initialize`. Later attempts skip the probe (plain 2025 handshake).
   */
  private skipProbe = false;
  /** Bumped per attempt; an attempt overtaken by restart() or close() discards itself. */
  private generation = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private workDir: string | undefined;
  private ownsWorkDir = false;

  constructor(config: McpTransportConfig, options: McpUpstreamOptions) {
    this.config = config;
    this.options = options;
    this.log = options.logger;
    this.stderr = new RingLog({
      maxLines: options.stderr?.maxLines ?? 500,
      maxBytes: options.stderr?.maxBytes ?? 64 * 1024,
    });
    this.backoff = {
      initialDelayMs: options.restart?.initialDelayMs ?? 500,
      maxDelayMs: options.restart?.maxDelayMs ?? 30_000,
    };
    this.maxAttempts = options.restart?.maxAttempts ?? Number.POSITIVE_INFINITY;
    this.current = {
      state: 'connecting',
      reason: 'not started',
      since: new Date().toISOString(),
      restarts: 0,
      reconnects: 0,
      protocolVersion: null,
      era: null,
      serverInfo: null,
      sandboxed: false,
      sandboxReason: config.transport === 'stdio' ? 'not started' : null,
      nextAttemptAt: null,
    };
  }

  /**
   * Makes the first connection attempt and resolves when it has settled: `status.state` is
   * then `ready`, or `failed` with a retry scheduled. Never rejects for an upstream fault
   * (that is status); rejects only when called twice or after close().
   */
  async start(): Promise<void> {
    if (this.started || this.closed) throw new Error('McpUpstream.start() called twice');
    this.started = true;
    if (this.config.transport === 'stdio') await this.prepareStdio(this.config);
    await this.connect();
    const interval = this.options.healthIntervalMs ?? 30_000;
    if (interval > 0 && !this.closed) {
      this.healthTimer = setInterval(() => void this.healthCheck(), interval);
      this.healthTimer.unref();
    }
  }

  /** A copy of the current status. */
  get status(): UpstreamStatus {
    return { ...this.current };
  }

  /** The server's tools as last listed (empty before the first connection). */
  tools(): Tool[] {
    return [...this.lists.tools];
  }

  resources(): Resource[] {
    return [...this.lists.resources];
  }

  prompts(): Prompt[] {
    return [...this.lists.prompts];
  }

  /** The last lines the stdio server wrote to stderr, oldest first (bounded). */
  stderrLines(): string[] {
    return this.stderr.snapshot();
  }

  on<K extends keyof McpUpstreamEvents>(
    event: K,
    listener: (...args: McpUpstreamEvents[K]) => void,
  ): this {
    this.events.on(event, listener as never);
    return this;
  }

  off<K extends keyof McpUpstreamEvents>(
    event: K,
    listener: (...args: McpUpstreamEvents[K]) => void,
  ): this {
    this.events.off(event, listener as never);
    return this;
  }

  /**
   * Calls a tool and returns the server's CallToolResult unchanged (a tool-level failure is
   * `isError: true`, not a rejection). Rejects with an UpstreamError: `timeout` after
   * `timeoutMs` (the request is cancelled upstream), `unavailable` when not connected or when
   * the connection dies meanwhile, `protocol` for a JSON-RPC error, `closed` after close().
   * An aborted `signal` rejects with the signal's reason.
   */
  async callTool(
    name: string,
    args: Record<string, unknown>,
    options?: {
      signal?: AbortSignal;
      timeoutMs?: number;
      /** Asks the server for progress notifications on this call, and receives them. */
      onProgress?: (progress: { progress: number; total?: number; message?: string }) => void;
    },
  ): Promise<CallToolResult> {
    const onProgress = options?.onProgress;
    return this.request(`tools/call ${JSON.stringify(name)}`, options, (client, requestOptions) =>
      client.callTool(
        { name, arguments: args },
        {
          ...requestOptions,
          ...(onProgress !== undefined
            ? {
                onprogress: (p: { progress: number; total?: number; message?: string }) =>
                  onProgress({
                    progress: p.progress,
                    ...(p.total !== undefined ? { total: p.total } : {}),
                    ...(p.message !== undefined ? { message: p.message } : {}),
                  }),
              }
            : {}),
        },
      ),
    ) as Promise<CallToolResult>;
  }

  /** Reads one resource; rejects like {@link callTool}. */
  async readResource(
    uri: string,
    options?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<ReadResourceResult> {
    return this.request('resources/read', options, (client, requestOptions) =>
      client.readResource({ uri }, { ...requestOptions, cacheMode: 'bypass' }),
    );
  }

  /** Renders one prompt; rejects like {@link callTool}. */
  async getPrompt(
    name: string,
    args: Record<string, string> = {},
    options?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<GetPromptResult> {
    return this.request(`prompts/get ${JSON.stringify(name)}`, options, (client, requestOptions) =>
      client.getPrompt({ name, arguments: args }, requestOptions),
    );
  }

  /**
   * Drops the current connection (killing a stdio process) and connects again at once, with a
   * fresh backoff: the operator's "restart" after a fix, or after `failed` for good. Resolves
   * when the attempt has settled, like start().
   */
  async restart(): Promise<void> {
    if (this.closed) throw new UpstreamError('closed', 'restart: the upstream was closed');
    if (!this.started) return this.start();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const client = this.client;
    const transport = this.transport;
    this.client = undefined;
    this.transport = undefined;
    this.consecutiveFailures = 0;
    this.skipProbe = false;
    await closeQuietly(client, transport);
    await this.connect();
  }

  /**
   * Disconnects for good: cancels retries, rejects pending calls with `closed`, ends the stdio
   * process group (TERM, then KILL) and resolves once the process has exited. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.healthTimer);
    const client = this.client;
    const transport = this.transport;
    this.client = undefined;
    this.transport = undefined;
    await closeQuietly(client, transport);
    this.httpFetch?.close();
    this.setStatus('failed', 'closed', { nextAttemptAt: null });
    if (this.ownsWorkDir && this.workDir !== undefined) {
      await rm(this.workDir, { recursive: true, force: true });
    }
  }

  private async request<T>(
    what: string,
    options: { signal?: AbortSignal; timeoutMs?: number } | undefined,
    run: (client: Client, requestOptions: { signal?: AbortSignal; timeout: number }) => Promise<T>,
  ): Promise<T> {
    if (this.closed) throw new UpstreamError('closed', `${what}: the upstream was closed`);
    const client = this.client;
    if (client === undefined || this.current.state === 'connecting') {
      throw new UpstreamError(
        'unavailable',
        `${what}: the upstream is not connected (${this.current.state}${this.current.reason ? `: ${this.current.reason}` : ''})`,
      );
    }
    const timeout = options?.timeoutMs ?? this.options.callTimeoutMs ?? 60_000;
    try {
      return await run(client, {
        timeout,
        ...(options?.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      if (options?.signal?.aborted) throw options.signal.reason;
      throw this.toUpstreamError(error, what, timeout);
    }
  }

  private toUpstreamError(error: unknown, what: string, timeoutMs: number): UpstreamError {
    // Once close() has begun, whatever the dying transport reports (a failed write, a closed
    // connection) is a consequence of the close: callers get `closed`, never a retryable kind.
    if (this.closed) {
      if (error instanceof UpstreamError && error.kind === 'closed') return error;
      return new UpstreamError('closed', `${what}: the upstream was closed`, { cause: error });
    }
    if (error instanceof UpstreamError) return error;
    if (error instanceof ProtocolError) {
      return new UpstreamError(
        'protocol',
        `${what}: the upstream answered error ${error.code}: ${error.message}`,
        {
          cause: error,
          rpcCode: error.code,
        },
      );
    }
    if (error instanceof SdkHttpError) {
      // Overload and server faults pass; anything else (401, 404…) is the endpoint saying no.
      const transient = error.status >= 500 || error.status === 429;
      return new UpstreamError(
        transient ? 'unavailable' : 'protocol',
        `${what}: the upstream answered HTTP ${error.status}`,
        { cause: error },
      );
    }
    if (error instanceof SdkError) {
      switch (error.code) {
        case SdkErrorCode.RequestTimeout:
          return new UpstreamError('timeout', `${what}: no answer within ${timeoutMs} ms`, {
            cause: error,
          });
        case SdkErrorCode.ConnectionClosed:
        case SdkErrorCode.NotConnected:
        case SdkErrorCode.SendFailed:
          return new UpstreamError(
            'unavailable',
            `${what}: the upstream connection closed before it answered${this.lastExitText()}`,
            { cause: error },
          );
        default:
          return new UpstreamError('protocol', `${what}: ${error.message}`, { cause: error });
      }
    }
    const message = error instanceof Error ? error.message : String(error);
    return new UpstreamError('unavailable', `${what}: ${message}`, { cause: error });
  }

  private lastExitText(): string {
    const exit =
      (this.transport instanceof StdioProcessTransport ? this.transport.exit : undefined) ??
      this.lastExit;
    return exit ? ` (${describeExit(exit)})` : '';
  }

  private async prepareStdio(config: Extract<McpTransportConfig, { transport: 'stdio' }>) {
    if (config.cwd !== undefined) this.workDir = config.cwd;
    else if (this.options.workDir !== undefined) this.workDir = this.options.workDir;
    else {
      this.workDir = await mkdtemp(join(tmpdir(), 'orchestra-mcp-'));
      this.ownsWorkDir = true;
    }
    if (this.options.sandbox === 'off') {
      this.current.sandboxReason = 'sandbox turned off by configuration';
      return;
    }
    const verdict = await detectSandbox();
    this.current.sandboxed = verdict.available;
    this.current.sandboxReason = verdict.available ? null : verdict.reason;
    if (!verdict.available) {
      this.log.warn({ reason: verdict.reason }, 'stdio MCP server runs without a sandbox');
    }
  }

  private createTransport(): Transport {
    const config = this.config;
    switch (config.transport) {
      case 'stdio': {
        const workDir = this.workDir ?? process.cwd();
        const env: Record<string, string> = {};
        for (const name of INHERITED_ENV) {
          const value = process.env[name];
          if (value !== undefined) env[name] = value;
        }
        env.HOME = this.current.sandboxed ? workDir : (process.env.HOME ?? workDir);
        Object.assign(env, config.env);
        const launch = this.current.sandboxed
          ? sandboxCommand({
              command: config.command,
              args: config.args,
              workDir,
              network: config.network,
              readOnlyPaths: this.options.readOnlyPaths ?? [],
              path: env.PATH,
            })
          : { command: config.command, args: config.args };
        return new StdioProcessTransport(
          { command: launch.command, args: launch.args, cwd: workDir, env },
          {
            stderr: this.stderr,
            ...(this.options.maxMessageBytes
              ? { maxMessageBytes: this.options.maxMessageBytes }
              : {}),
          },
        );
      }
      case 'streamable_http':
        this.httpFetch ??= upstreamFetch();
        return new StreamableHTTPClientTransport(new URL(config.url), {
          requestInit: { headers: config.headers },
          fetch: this.httpFetch.fetch,
        });
      case 'sse':
        return new SSEClientTransport(new URL(config.url), {
          requestInit: { headers: config.headers },
        });
    }
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.generation += 1;
    const generation = this.generation;
    const overtaken = () => this.closed || generation !== this.generation;
    if (this.attempts > 0) {
      this.current.reconnects += 1;
      if (this.config.transport === 'stdio') this.current.restarts += 1;
    }
    // A retry keeps the reason it retries for; the first attempt has none.
    this.setStatus('connecting', this.attempts === 0 ? null : this.current.reason, {
      nextAttemptAt: null,
    });
    this.attempts += 1;
    const connectTimeoutMs = this.options.connectTimeoutMs ?? 30_000;
    let client: Client | undefined;
    let transport: Transport | undefined;
    try {
      transport = this.createTransport();
      this.transport = transport;
      const connecting = new Client(
        { name: 'orchestra', version: VERSION },
        {
          capabilities: {},
          versionNegotiation: { mode: 'auto', probe: { timeoutMs: connectTimeoutMs } },
          listChanged: {
            tools: this.onListChanged('tools'),
            resources: this.onListChanged('resources'),
            prompts: this.onListChanged('prompts'),
          },
        },
      );
      client = connecting;
      connecting.onclose = () => this.connectionLost(connecting);
      connecting.onerror = (error) =>
        this.log.debug({ err: error }, 'MCP upstream reported an error');
      await connecting.connect(transport, {
        timeout: connectTimeoutMs,
        ...(this.skipProbe ? { prior: { kind: 'legacy' as const } } : {}),
      });
      if (overtaken()) throw new UpstreamError('closed', 'overtaken while connecting');
      const [tools, resources, prompts] = await Promise.all([
        this.fetchList(connecting, 'tools'),
        this.fetchList(connecting, 'resources'),
        this.fetchList(connecting, 'prompts'),
      ]);
      if (overtaken()) throw new UpstreamError('closed', 'overtaken while connecting');
      const changed = {
        tools: this.attempts > 1 && !sameNames(this.lists.tools, tools),
        resources: this.attempts > 1 && !sameNames(this.lists.resources, resources),
        prompts: this.attempts > 1 && !sameNames(this.lists.prompts, prompts),
      };
      this.lists = { tools, resources, prompts };
      this.client = connecting;
      const server = connecting.getServerVersion();
      this.current.protocolVersion = connecting.getNegotiatedProtocolVersion() ?? null;
      this.current.era = connecting.getProtocolEra() ?? null;
      this.current.serverInfo = server ? { name: server.name, version: server.version } : null;
      this.connectedAt = Date.now();
      this.setStatus('ready', null);
      for (const kind of ['tools', 'resources', 'prompts'] as const) {
        if (changed[kind]) this.events.emit('listChanged', kind);
        // A change announced while the first lists were in flight may not be in them.
        if (this.refreshAgain.has(kind)) void this.refreshList(kind);
      }
    } catch (error) {
      if (overtaken()) {
        await closeQuietly(client, transport);
        return;
      }
      this.client = undefined;
      if (this.transport === transport) this.transport = undefined;
      await closeQuietly(client, transport);
      const exit = transport instanceof StdioProcessTransport ? transport.exit : undefined;
      if (
        exit !== undefined &&
        !this.skipProbe &&
        error instanceof SdkError &&
        error.code === SdkErrorCode.EraNegotiationFailed
      ) {
        // Not a failure but the answer to the probe: retry at once without it.
        this.log.info('stdio MCP server exited on the version probe; using the 2025 handshake');
        this.skipProbe = true;
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          void this.connect();
        }, 0);
        return;
      }
      const cause = this.toUpstreamError(error, 'connect', connectTimeoutMs).message;
      this.scheduleRetry('failed', exit ? `${cause}; ${describeExit(exit)}` : cause);
    }
  }

  private connectionLost(client: Client): void {
    if (this.closed || this.client !== client) return;
    const transport = this.transport;
    this.client = undefined;
    this.transport = undefined;
    const exit = transport instanceof StdioProcessTransport ? transport.exit : undefined;
    this.lastExit = exit;
    const reason = exit ? describeExit(exit) : 'the connection closed';
    this.log.warn({ reason }, 'MCP upstream connection lost');
    this.lost('degraded', reason);
  }

  /** An established connection ended: a crash loop keeps backing off, a stable run starts over. */
  private lost(state: 'degraded', reason: string): void {
    const stableAfterMs = this.options.restart?.stableAfterMs ?? 60_000;
    if (Date.now() - this.connectedAt >= stableAfterMs) this.consecutiveFailures = 0;
    this.scheduleRetry(state, reason);
  }

  private scheduleRetry(state: 'degraded' | 'failed', reason: string): void {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    const attempt = this.consecutiveFailures;
    this.consecutiveFailures += 1;
    if (this.consecutiveFailures >= this.maxAttempts) {
      this.setStatus('failed', `${reason}; gave up after ${this.consecutiveFailures} attempts`, {
        nextAttemptAt: null,
      });
      return;
    }
    const delayMs = backoffDelayMs(attempt, this.backoff);
    this.setStatus(state, reason, { nextAttemptAt: new Date(Date.now() + delayMs).toISOString() });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect();
    }, delayMs);
  }

  private async healthCheck(): Promise<void> {
    const client = this.client;
    if (client === undefined || this.closed) return;
    const timeoutMs = this.options.healthTimeoutMs ?? 10_000;
    try {
      await client.ping({ timeout: timeoutMs });
      if (this.client === client && this.current.state === 'degraded')
        this.setStatus('ready', null);
    } catch (error) {
      if (this.client !== client || this.closed) return;
      const reason = `health check failed: ${this.toUpstreamError(error, 'ping', timeoutMs).message}`;
      this.log.warn({ reason }, 'MCP upstream health check failed');
      const transport = this.transport;
      this.client = undefined;
      this.transport = undefined;
      this.setStatus('degraded', reason);
      await closeQuietly(client, transport);
      this.lost('degraded', reason);
    }
  }

  private onListChanged(kind: UpstreamListKind) {
    return {
      autoRefresh: false,
      onChanged: () => {
        void this.refreshList(kind);
      },
    };
  }

  /** Re-fetches one list; a notification during a refresh causes one more refresh after it. */
  private refreshList(kind: UpstreamListKind): Promise<void> {
    const running = this.refreshing.get(kind);
    if (running !== undefined || this.client === undefined) {
      this.refreshAgain.add(kind);
      return running ?? Promise.resolve();
    }
    const run = (async () => {
      do {
        this.refreshAgain.delete(kind);
        const client = this.client;
        if (client === undefined || this.closed) return;
        try {
          const items = await this.fetchList(client, kind);
          if (this.client !== client) return;
          (this.lists[kind] as unknown[]) = items;
          this.events.emit('listChanged', kind);
        } catch (error) {
          if (this.client !== client || this.closed) return;
          const message = this.toUpstreamError(error, `${kind}/list`, 0).message;
          this.setStatus('degraded', `refreshing the ${kind} list failed: ${message}`);
          return;
        }
      } while (this.refreshAgain.has(kind));
    })().finally(() => this.refreshing.delete(kind));
    this.refreshing.set(kind, run);
    return run;
  }

  private async fetchList(client: Client, kind: 'tools'): Promise<Tool[]>;
  private async fetchList(client: Client, kind: 'resources'): Promise<Resource[]>;
  private async fetchList(client: Client, kind: 'prompts'): Promise<Prompt[]>;
  private async fetchList(client: Client, kind: UpstreamListKind): Promise<unknown[]>;
  private async fetchList(client: Client, kind: UpstreamListKind): Promise<unknown[]> {
    const capabilities = client.getServerCapabilities();
    if (capabilities?.[kind] === undefined) return [];
    // 'bypass' keeps the client's tools/list cache empty, so callTool does not validate
    // structuredContent against outputSchema itself: results reach the hub as the server sent them.
    const options = {
      timeout: this.options.connectTimeoutMs ?? 30_000,
      cacheMode: 'bypass' as const,
    };
    const items: unknown[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_LIST_PAGES; page += 1) {
      const params = cursor === undefined ? {} : { cursor };
      const result =
        kind === 'tools'
          ? await client
              .listTools(params, options)
              .then((r) => ({ items: r.tools, next: r.nextCursor }))
          : kind === 'resources'
            ? await client
                .listResources(params, options)
                .then((r) => ({ items: r.resources, next: r.nextCursor }))
            : await client
                .listPrompts(params, options)
                .then((r) => ({ items: r.prompts, next: r.nextCursor }));
      items.push(...result.items);
      cursor = result.next;
      if (cursor === undefined || cursor === '') return items;
    }
    throw new UpstreamError('protocol', `${kind}/list did not end after ${MAX_LIST_PAGES} pages`);
  }

  private setStatus(
    state: UpstreamState,
    reason: string | null,
    extra?: { nextAttemptAt: string | null },
  ): void {
    const changed = state !== this.current.state || reason !== this.current.reason;
    if (changed && state !== this.current.state) this.current.since = new Date().toISOString();
    this.current.state = state;
    this.current.reason = reason;
    if (extra !== undefined) this.current.nextAttemptAt = extra.nextAttemptAt;
    else if (state === 'ready') this.current.nextAttemptAt = null;
    if (changed) this.events.emit('status', this.status);
  }
}

async function closeQuietly(client: Client | undefined, transport: Transport | undefined) {
  try {
    if (client !== undefined) await client.close();
  } catch {
    // Already closed.
  }
  try {
    // The client closes its transport; this covers a transport the client never attached.
    if (transport !== undefined) await transport.close();
  } catch {
    // Already closed.
  }
}

function describeExit(exit: ProcessExit) {
  const how =
    exit.code !== null
      ? `exited with code ${exit.code}`
      : exit.signal !== null
        ? `was killed by ${exit.signal}`
        : 'ended';
  return exit.killedBecause
    ? `the process ${how} (stopped by Orchestra: ${exit.killedBecause})`
    : `the process ${how}`;
}

function sameNames(before: unknown[], after: unknown[]): boolean {
  const key = (items: unknown[]) =>
    JSON.stringify(
      items
        .map(
          (item) =>
            (item as { name?: string; uri?: string }).name ?? (item as { uri?: string }).uri,
        )
        .sort(),
    );
  return before.length === after.length && key(before) === key(after);
}
