import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join } from 'node:path';
import type { Prompt, Resource } from '@modelcontextprotocol/client';
import type {
  CatalogEntry,
  CreateCatalogEntry,
  CreateMcpServer,
  InstallCatalogEntry,
  McpServer,
  McpServerLog,
  McpServerStatus,
  ToolResult,
  UpdateMcpServer,
} from '@orchestra/protocol';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Bus } from '../bus/bus.ts';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import { describeErrors, UserSchemaCompiler } from '../platform/user-schema.ts';
import type { SecretsInterface } from '../secrets/index.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import {
  ToolFailure,
  type ToolFailureKind,
  type ToolProgress,
  type ToolsInterface,
} from '../tools/index.ts';
import { UpstreamError } from './errors.ts';
import type { McpServerRecord, McpServerRecords } from './server-records.ts';
import { type McpTransportConfig, McpUpstream, type UpstreamStatus } from './upstream.ts';

/** A call forwarded to the node that runs the server (cluster mode), and its answer. */
type ForwardedOp = 'call' | 'logs' | 'resources' | 'prompts' | 'restart';
interface ForwardedCall {
  id: string;
  replyTo: string;
  op: ForwardedOp;
  tenantId: string;
  server: string;
  tool: string;
  args: Record<string, unknown>;
  timeoutMs: number;
}
interface ForwardedReply {
  id: string;
  value?: unknown;
  failure?: { kind: ToolFailureKind; message: string };
}
/** How long a node waits for another's answer about a server it runs (not a call). */
const ASK_TIMEOUT_MS = 15_000;
const callSubject = (node: string) => `mcp.call.${node}`;
const replySubject = (node: string) => `mcp.reply.${node}`;
/** How long a forwarded call may take at most, whatever the tool says (the caller's signal ends it sooner). */
const FORWARD_MAX_MS = 10 * 60_000;

const CATALOG_FILE = new URL('../../catalog/mcp-servers.json', import.meta.url);
const requireHere = createRequire(import.meta.url);
const LOG_LINES = 200;

export interface McpHubSettings {
  dataDir: string;
  instanceId: string;
  /** How often each node looks for servers to run or let go. */
  reconcileMs: number;
  sandbox: 'auto' | 'off';
  healthIntervalMs: number;
}

/** A server this node runs (stdio) or connects to (HTTP). */
interface Running {
  record: McpServerRecord;
  upstream: McpUpstream;
  /** What the server's settings were when it was started; a change restarts it. */
  updatedAt: string;
  events: { time: string; text: string }[];
  /** Restarts and reconnects counted in the metrics so far. */
  restartsSeen: number;
}

function builtinCatalog(): CatalogEntry[] {
  const file = JSON.parse(readFileSync(CATALOG_FILE, 'utf8')) as {
    entries: Omit<CatalogEntry, 'origin'>[];
  };
  return file.entries.map((e) => ({
    id: e.id,
    title: e.title,
    description: e.description ?? '',
    homepage: e.homepage ?? null,
    server: e.server,
    config_schema: e.config_schema ?? null,
    origin: 'builtin',
  }));
}

/** Replaces `{{config.x}}` and `{{server.cwd}}` in a catalog string. */
function fill(text: string, config: Record<string, unknown>, cwd: string): string {
  return text.replace(/\{\{\s*(config\.[A-Za-z0-9_]+|server\.cwd)\s*\}\}/g, (_, ref: string) => {
    if (ref === 'server.cwd') return cwd;
    const value = config[ref.slice('config.'.length)];
    return value === undefined || value === null
      ? ''
      : typeof value === 'string'
        ? value
        : JSON.stringify(value);
  });
}

function fillRecord(
  record: Record<string, string> | undefined,
  config: Record<string, unknown>,
  cwd: string,
) {
  return record === undefined
    ? undefined
    : Object.fromEntries(Object.entries(record).map(([k, v]) => [k, fill(v, config, cwd)]));
}

/** The bin of an npm package installed next to Orchestra, or undefined. */
function installedBin(pkg: string, bin: string | undefined): string | undefined {
  try {
    const manifestPath = requireHere.resolve(`${pkg}/package.json`);
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
      bin?: string | Record<string, string>;
    };
    const path =
      typeof manifest.bin === 'string'
        ? manifest.bin
        : manifest.bin?.[bin ?? Object.keys(manifest.bin ?? {})[0] ?? ''];
    return path === undefined ? undefined : join(dirname(manifestPath), path);
  } catch {
    return undefined;
  }
}

function toolResult(result: {
  content?: unknown;
  structuredContent?: unknown;
  isError?: boolean | undefined;
}): ToolResult {
  const out: ToolResult = {
    content: (Array.isArray(result.content) ? result.content : []) as ToolResult['content'],
    is_error: result.isError === true,
  };
  if (result.structuredContent !== undefined) out.structured_content = result.structuredContent;
  return out;
}

/**
 * The MCP hub: the MCP servers each tenant registered, run (stdio) or connected to (HTTP)
 * by one node each, which holds the server's claim; their tools kept in step with the tool
 * registry; and the catalog of installable servers. A node that dies lets go of its claims
 * with its lease, and another node takes its servers over at its next reconcile.
 */
export class McpHub {
  readonly records: McpServerRecords;
  readonly #store: RelationalStore;
  readonly #tools: ToolsInterface;
  readonly #secrets: SecretsInterface;
  readonly #claim: () => (key: string) => Promise<boolean>;
  readonly #log: Logger;
  readonly #settings: McpHubSettings;
  readonly #schemas = new UserSchemaCompiler();
  readonly #running = new Map<string, Running>();
  readonly #builtin = builtinCatalog();
  readonly #job: Job;
  readonly #bus: Bus;
  readonly #metrics: { ready: Gauge<'server'>; restarts: Counter<'server'> };
  /** Forwarded calls waiting for the answer of the node that runs their server. */
  readonly #forwarded = new Map<string, { resolve: (r: ForwardedReply) => void }>();
  readonly #unsubscribe: (() => void)[] = [];
  #closed = false;

  constructor(deps: {
    store: RelationalStore;
    records: McpServerRecords;
    tools: ToolsInterface;
    secrets: SecretsInterface;
    claim: () => (key: string) => Promise<boolean>;
    jobs: Jobs;
    bus: Bus;
    registry: Registry;
    log: Logger;
    settings: McpHubSettings;
  }) {
    this.#bus = deps.bus;
    this.#metrics = {
      ready: new Gauge({
        name: 'orchestra_mcp_server_ready',
        help: '1 while an MCP server this node runs or connects to is ready, 0 while it connects, is degraded or failed.',
        labelNames: ['server'],
        registers: [deps.registry],
      }),
      restarts: new Counter({
        name: 'orchestra_mcp_server_restarts_total',
        help: 'Restarts (stdio) and reconnects of the MCP servers this node runs, after the first start.',
        labelNames: ['server'],
        registers: [deps.registry],
      }),
    };
    this.#store = deps.store;
    this.records = deps.records;
    this.#tools = deps.tools;
    this.#secrets = deps.secrets;
    this.#claim = deps.claim;
    this.#log = deps.log;
    this.#settings = deps.settings;
    this.#job = deps.jobs.job({
      name: 'mcp-servers',
      intervalMs: deps.settings.reconcileMs,
      runAtStart: true,
      run: () => this.reconcile(),
    });
    this.#tools.connectMcp((call) => this.callTool(call));
  }

  start(): void {
    const node = this.#settings.instanceId;
    this.#unsubscribe.push(
      this.#bus.subscribe(
        callSubject(node),
        (message) => void this.#serveForwarded(message as ForwardedCall),
      ),
      this.#bus.subscribe(replySubject(node), (message) => {
        const reply = message as ForwardedReply;
        this.#forwarded.get(reply.id)?.resolve(reply);
      }),
    );
    this.#job.start();
  }

  async stop(): Promise<void> {
    this.#closed = true;
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    for (const [id, waiting] of this.#forwarded) {
      waiting.resolve({
        id,
        failure: { kind: 'unavailable', message: 'this node is shutting down' },
      });
    }
    await this.#job.stop();
    await Promise.all([...this.#running.keys()].map((id) => this.#letGo(id)));
  }

  // Records, through the API.

  async create(
    principal: Principal,
    input: CreateMcpServer,
    catalogEntry: string | null = null,
  ): Promise<McpServer> {
    const record = await this.records.create(principal, input, catalogEntry);
    void this.#kick();
    return this.records.view(record.row, 0);
  }

  async update(principal: Principal, ref: string, input: UpdateMcpServer): Promise<McpServer> {
    const record = await this.records.update(principal, ref, input);
    await this.#tools.tools.setServerEnabled(
      record.row.tenant_id,
      record.row.name,
      record.row.enabled === 1,
    );
    void this.#kick();
    return this.view(record);
  }

  async setEnabled(principal: Principal, ref: string, enabled: boolean): Promise<McpServer> {
    const record = await this.records.setEnabled(principal, ref, enabled);
    await this.#tools.tools.setServerEnabled(record.row.tenant_id, record.row.name, enabled);
    void this.#kick();
    return this.view(record);
  }

  async delete(principal: Principal, ref: string): Promise<void> {
    const row = await this.records.delete(principal, ref);
    await this.#tools.tools.removeServer(row.tenant_id, row.name);
    void this.#kick();
  }

  async get(principal: Principal, ref: string): Promise<McpServer> {
    return this.view(await this.records.find(principal.tenant.id, ref));
  }

  list(
    principal: Principal,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ) {
    return this.records.list(principal, page, (tenantId, names) =>
      this.#toolCounts(tenantId, names),
    );
  }

  async view(record: McpServerRecord): Promise<McpServer> {
    const counts = await this.#toolCounts(record.row.tenant_id, [record.row.name]);
    return this.records.view(record.row, counts.get(record.row.name) ?? 0);
  }

  #toolCounts(tenantId: string, names: string[]): Promise<Map<string, number>> {
    return this.#tools.tools.countByServer(tenantId, names);
  }

  /**
   * What `op` answers for a server: from its process when it runs on this node, else from
   * the node that runs it (over the bus). MCP_SERVER_NOT_RUNNING when none does.
   */
  async #ask<T>(principal: Principal, ref: string, op: Exclude<ForwardedOp, 'call'>): Promise<T> {
    const record = await this.records.find(principal.tenant.id, ref);
    const running = this.#running.get(record.row.id);
    if (running !== undefined) return this.#answer(running, op) as T;
    const status = JSON.parse(record.row.status) as McpServerStatus;
    const notRunning = (why: string) =>
      new ApiError('MCP_SERVER_NOT_RUNNING', `MCP server "${ref}" ${why}`, {
        details: { state: status.state, node: status.node },
      });
    if (record.row.enabled === 0) throw notRunning('is disabled');
    if (status.node === null || status.node === this.#settings.instanceId) {
      throw notRunning('is not running on any node yet');
    }
    try {
      return (await this.#forward(
        {
          tenantId: record.row.tenant_id,
          server: record.row.name,
          tool: '',
          args: {},
          signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
        },
        op,
        status.node,
      )) as T;
    } catch (err) {
      throw notRunning(`did not answer from ${status.node}: ${(err as Error).message}`);
    }
  }

  /** What a server running on this node answers to `op`. */
  #answer(running: Running, op: Exclude<ForwardedOp, 'call'>): unknown {
    switch (op) {
      case 'logs': {
        // The process's stderr comes without times: its lines are listed after the events.
        const lines = [
          ...running.events.map((e) => ({ time: e.time, stream: 'event' as const, text: e.text })),
          ...running.upstream
            .stderrLines()
            .map((text) => ({ time: null, stream: 'stderr' as const, text })),
        ];
        return { lines: lines.slice(-LOG_LINES), dropped: Math.max(0, lines.length - LOG_LINES) };
      }
      case 'resources':
        return running.upstream.resources();
      case 'prompts':
        return running.upstream.prompts();
      case 'restart':
        running.events.push({ time: new Date().toISOString(), text: 'restart requested' });
        void running.upstream.restart().catch(() => {});
        return true;
    }
  }

  logs(principal: Principal, ref: string): Promise<McpServerLog> {
    return this.#ask(principal, ref, 'logs');
  }

  resources(principal: Principal, ref: string): Promise<Resource[]> {
    return this.#ask(principal, ref, 'resources');
  }

  prompts(principal: Principal, ref: string): Promise<Prompt[]> {
    return this.#ask(principal, ref, 'prompts');
  }

  async restart(principal: Principal, ref: string): Promise<McpServer> {
    await this.#ask<boolean>(principal, ref, 'restart');
    return this.get(principal, ref);
  }

  /**
   * The servers of a tenant connected on this node, by name: for the gateway to pass their
   * resources and prompts through.
   */
  connected(tenantId: string): Map<string, McpUpstream> {
    const out = new Map<string, McpUpstream>();
    for (const running of this.#running.values()) {
      if (running.record.row.tenant_id === tenantId && running.upstream.status.state === 'ready') {
        out.set(running.record.row.name, running.upstream);
      }
    }
    return out;
  }

  // Calls, from the tool executor.

  /** Calls a tool of a server this node runs; a failure is a `ToolFailure`. */
  async callTool(call: {
    tenantId: string;
    server: string;
    tool: string;
    args: Record<string, unknown>;
    signal: AbortSignal;
    /** The upstream's progress on this call; only a server this node runs reports it. */
    onProgress?: ((progress: ToolProgress) => void) | undefined;
  }): Promise<ToolResult> {
    const running = [...this.#running.values()].find(
      (r) => r.record.row.tenant_id === call.tenantId && r.record.row.name === call.server,
    );
    if (running === undefined) return this.#forwardCall(call);
    try {
      // The executor's signal carries the tool's timeout; no second one here.
      const result = await running.upstream.callTool(call.tool, call.args, {
        signal: call.signal,
        timeoutMs: 3_600_000,
        ...(call.onProgress !== undefined ? { onProgress: call.onProgress } : {}),
      });
      return toolResult(result);
    } catch (err) {
      if (call.signal.aborted) throw err;
      if (err instanceof UpstreamError) {
        const kind =
          err.kind === 'timeout' ? 'timeout' : err.kind === 'protocol' ? 'protocol' : 'unavailable';
        throw new ToolFailure(kind, `MCP server "${call.server}": ${err.message}`, {
          cause: err,
          retryable: err.kind !== 'protocol',
        });
      }
      throw err;
    }
  }

  /** Sends a tool call to the node that runs the server, and waits for its answer. */
  async #forwardCall(call: {
    tenantId: string;
    server: string;
    tool: string;
    args: Record<string, unknown>;
    signal: AbortSignal;
  }): Promise<ToolResult> {
    const record = await this.records.find(call.tenantId, call.server).catch(() => undefined);
    const node =
      record === undefined ? null : (JSON.parse(record.row.status) as McpServerStatus).node;
    if (node === null || node === this.#settings.instanceId || record?.row.enabled !== 1) {
      throw new ToolFailure(
        'unavailable',
        `MCP server "${call.server}" is not connected to any node yet`,
      );
    }
    return (await this.#forward(call, 'call', node)) as ToolResult;
  }

  /** Sends `op` to `node`, which runs the server, and waits for its answer. */
  async #forward(
    call: {
      tenantId: string;
      server: string;
      tool: string;
      args: Record<string, unknown>;
      signal: AbortSignal;
    },
    op: ForwardedOp,
    node: string,
  ): Promise<unknown> {
    const id = newId('fwd');
    const reply = new Promise<ForwardedReply>((resolve) => {
      this.#forwarded.set(id, { resolve });
      const onAbort = () => resolve({ id, failure: { kind: 'unavailable', message: 'cancelled' } });
      call.signal.addEventListener('abort', onAbort, { once: true });
    });
    this.#bus.publish(callSubject(node), {
      id,
      replyTo: replySubject(this.#settings.instanceId),
      op,
      tenantId: call.tenantId,
      server: call.server,
      tool: call.tool,
      args: call.args,
      timeoutMs: FORWARD_MAX_MS,
    } satisfies ForwardedCall);
    try {
      const answer = await reply;
      if (call.signal.aborted) throw call.signal.reason;
      if (answer.failure === undefined) return answer.value;
      throw new ToolFailure(answer.failure.kind, answer.failure.message, {
        retryable: answer.failure.kind === 'unavailable',
      });
    } finally {
      this.#forwarded.delete(id);
    }
  }

  /** Runs a call another node forwarded here, and sends the answer back. */
  async #serveForwarded(message: ForwardedCall): Promise<void> {
    let reply: ForwardedReply;
    try {
      const signal = AbortSignal.timeout(Math.min(message.timeoutMs, FORWARD_MAX_MS));
      const running = [...this.#running.values()].find(
        (r) => r.record.row.tenant_id === message.tenantId && r.record.row.name === message.server,
      );
      if (running === undefined) {
        throw new ToolFailure(
          'unavailable',
          `MCP server "${message.server}" moved away from ${this.#settings.instanceId}`,
        );
      }
      reply = {
        id: message.id,
        value:
          message.op === 'call'
            ? await this.callTool({ ...message, signal })
            : this.#answer(running, message.op),
      };
    } catch (err) {
      reply = {
        id: message.id,
        failure:
          err instanceof ToolFailure
            ? { kind: err.kind, message: err.message }
            : { kind: 'protocol', message: (err as Error).message },
      };
    }
    this.#bus.publish(message.replyTo, reply);
  }

  // Supervision.

  async #kick(): Promise<void> {
    try {
      await this.reconcile();
    } catch (err) {
      this.#log.warn({ err }, 'reconciling MCP servers failed');
    }
  }

  #reconciling: Promise<void> | undefined;

  /** Starts the servers this node can claim, restarts changed ones, lets go of the rest. */
  reconcile(): Promise<void> {
    this.#reconciling ??= this.#reconcile().finally(() => {
      this.#reconciling = undefined;
    });
    return this.#reconciling;
  }

  async #reconcile(): Promise<void> {
    if (this.#closed) return;
    const wanted = await this.records.enabled();
    const ids = new Set(wanted.map((r) => r.row.id));
    for (const id of [...this.#running.keys()]) if (!ids.has(id)) await this.#letGo(id);
    const claim = this.#claim();
    for (const record of wanted) {
      if (this.#closed) return;
      const holds = await claim(`mcp-servers/${record.row.id}`);
      const running = this.#running.get(record.row.id);
      if (!holds) {
        if (running !== undefined) await this.#letGo(record.row.id);
        continue;
      }
      if (running !== undefined && running.updatedAt === record.row.updated_at) continue;
      if (running !== undefined) await this.#letGo(record.row.id);
      await this.#run(record);
    }
  }

  async #letGo(id: string): Promise<void> {
    const running = this.#running.get(id);
    if (running === undefined) return;
    this.#running.delete(id);
    this.#metrics.ready.remove({ server: running.record.row.name });
    await running.upstream
      .close()
      .catch((err: unknown) =>
        this.#log.warn({ err, server: running.record.row.name }, 'closing an MCP server failed'),
      );
  }

  async #transportConfig(record: McpServerRecord, cwd: string): Promise<McpTransportConfig> {
    const tenantId = record.row.tenant_id;
    const expandAll = async (values: Record<string, string>) => {
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(values))
        out[k] = (await this.#secrets.expand(tenantId, v)).text;
      return out;
    };
    const { settings, credentials } = record;
    if (settings.transport === 'stdio') {
      return {
        transport: 'stdio',
        command: settings.command ?? '',
        args: settings.args,
        cwd,
        env: await expandAll(credentials.env),
        network: settings.network,
      };
    }
    return {
      transport: settings.transport,
      url: (await this.#secrets.expand(tenantId, settings.url ?? '')).text,
      headers: await expandAll(credentials.headers),
    };
  }

  async #run(record: McpServerRecord): Promise<void> {
    const { row } = record;
    const cwd = record.settings.cwd ?? join(this.#settings.dataDir, 'mcp', row.id);
    mkdirSync(cwd, { recursive: true, mode: 0o700 });
    const events: Running['events'] = [];
    const note = (text: string) => {
      events.push({ time: new Date().toISOString(), text });
      if (events.length > LOG_LINES) events.shift();
    };
    let config: McpTransportConfig;
    try {
      config = await this.#transportConfig(record, cwd);
    } catch (err) {
      // A missing secret: say so in the status; the next reconcile tries again.
      await this.records.setStatus(row.id, {
        ...(JSON.parse(row.status) as McpServerStatus),
        state: 'failed',
        reason: (err as Error).message,
        since: new Date().toISOString(),
        node: this.#settings.instanceId,
      });
      return;
    }
    const upstream = new McpUpstream(config, {
      logger: this.#log.child({ mcp_server: row.name, tenant: row.tenant_id }),
      workDir: cwd,
      readOnlyPaths: readOnlyPathsFor(config),
      sandbox: this.#settings.sandbox,
      healthIntervalMs: this.#settings.healthIntervalMs,
    });
    const running: Running = {
      record,
      upstream,
      updatedAt: row.updated_at,
      events,
      restartsSeen: 0,
    };
    this.#running.set(row.id, running);
    upstream.on('status', (status) => {
      note(`${status.state}${status.reason ? `: ${status.reason}` : ''}`);
      void this.#onStatus(running, status);
    });
    upstream.on('listChanged', (kind) => {
      note(`${kind} list changed`);
      if (kind === 'tools') void this.#sync(running);
    });
    note('starting');
    await upstream.start().catch(() => {});
  }

  async #onStatus(running: Running, status: UpstreamStatus): Promise<void> {
    if (this.#running.get(running.record.row.id) !== running) return;
    const server = running.record.row.name;
    this.#metrics.ready.set({ server }, status.state === 'ready' ? 1 : 0);
    const restarts = status.restarts + status.reconnects;
    if (restarts > running.restartsSeen) {
      this.#metrics.restarts.inc({ server }, restarts - running.restartsSeen);
      running.restartsSeen = restarts;
    }
    try {
      // Tools first: whoever sees the server ready (`mcp-servers add --wait`) sees its tools.
      if (status.state === 'ready') {
        await this.#sync(running).catch((err: unknown) =>
          this.#log.warn({ err, server }, 'taking an MCP server’s tools failed'),
        );
      }
      await this.records.setStatus(running.record.row.id, {
        state: status.state,
        reason: status.reason,
        since: status.since,
        protocol_version: status.protocolVersion,
        server_info: status.serverInfo,
        node: this.#settings.instanceId,
        restarts: status.restarts,
        sandboxed: running.record.settings.transport === 'stdio' ? status.sandboxed : null,
        last_health_check: status.state === 'ready' ? new Date().toISOString() : null,
      });
    } catch (err) {
      this.#log.warn(
        { err, server: running.record.row.name },
        'recording an MCP server status failed',
      );
    }
  }

  async #sync(running: Running): Promise<void> {
    const { row, settings } = running.record;
    const current = await this.#store.db
      .selectFrom('mcp_servers')
      .select('synced')
      .where('id', '=', row.id)
      .executeTakeFirst();
    if (current === undefined) return;
    const outcome = await this.#tools.tools.syncServer(
      row.tenant_id,
      row.name,
      running.upstream.tools().map((t) => ({
        name: t.name,
        description: t.description,
        inputSchema: t.inputSchema as Record<string, unknown>,
        outputSchema: t.outputSchema as Record<string, unknown> | undefined,
        annotations: t.annotations,
      })),
      {
        trustNew: current.synced === 0 && settings.trust_initial_tools,
        timeoutMs: settings.tool_timeout_ms,
        createdBy: `mcp:${row.name}`,
      },
    );
    if (current.synced === 0) await this.records.markSynced(row.id);
    if (outcome.held.length > 0) {
      running.events.push({
        time: new Date().toISOString(),
        text: `held for approval: ${outcome.held.join(', ')}`,
      });
    }
  }

  // The catalog.

  async catalog(principal: Principal): Promise<CatalogEntry[]> {
    const rows = await this.#store.db
      .selectFrom('mcp_catalog_entries')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .execute();
    return [
      ...this.#builtin,
      ...rows.map((r) => ({ id: r.id, ...(JSON.parse(r.spec) as Omit<CatalogEntry, 'id'>) })),
    ];
  }

  async addCatalogEntry(principal: Principal, input: CreateCatalogEntry): Promise<CatalogEntry> {
    if (this.#builtin.some((e) => e.id === input.id)) {
      throw new ApiError(
        'MCP_CATALOG_ENTRY_ALREADY_EXISTS',
        `"${input.id}" is a built-in catalog entry`,
      );
    }
    if (input.config_schema !== undefined) {
      const check = this.#schemas.check(input.config_schema);
      if (!check.ok) {
        throw new ApiError('VALIDATION_FAILED', `body.config_schema: ${check.message}`, {
          details: { fields: [{ field: 'body.config_schema', message: check.message }] },
        });
      }
    }
    const entry: CatalogEntry = {
      id: input.id,
      title: input.title,
      description: input.description ?? '',
      homepage: input.homepage ?? null,
      server: input.server,
      config_schema: input.config_schema ?? null,
      origin: 'tenant',
    };
    const { id, ...spec } = entry;
    try {
      await this.#store.db
        .insertInto('mcp_catalog_entries')
        .values({
          tenant_id: principal.tenant.id,
          id,
          spec: JSON.stringify(spec),
          created_at: new Date().toISOString(),
        })
        .execute();
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'MCP_CATALOG_ENTRY_ALREADY_EXISTS',
          `Catalog entry "${id}" already exists`,
          { cause: err },
        );
      }
      throw err;
    }
    return entry;
  }

  async deleteCatalogEntry(principal: Principal, id: string): Promise<void> {
    const result = await this.#store.db
      .deleteFrom('mcp_catalog_entries')
      .where('tenant_id', '=', principal.tenant.id)
      .where('id', '=', id)
      .executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) {
      throw new ApiError(
        'MCP_CATALOG_ENTRY_NOT_FOUND',
        this.#builtin.some((e) => e.id === id)
          ? `"${id}" is a built-in catalog entry and cannot be deleted`
          : `Catalog entry "${id}" does not exist`,
      );
    }
  }

  /** Registers a server from a catalog entry, its config checked against the entry's schema. */
  async install(principal: Principal, id: string, input: InstallCatalogEntry): Promise<McpServer> {
    const entry = (await this.catalog(principal)).find((e) => e.id === id);
    if (entry === undefined)
      throw new ApiError('MCP_CATALOG_ENTRY_NOT_FOUND', `Catalog entry "${id}" does not exist`);
    const config: Record<string, unknown> = { ...(input.config ?? {}) };
    if (entry.config_schema !== null) {
      const properties = (entry.config_schema.properties ?? {}) as Record<
        string,
        { default?: unknown }
      >;
      for (const [key, property] of Object.entries(properties)) {
        if (config[key] === undefined && property.default !== undefined)
          config[key] = property.default;
      }
      const check = this.#schemas.check(entry.config_schema);
      if (check.ok && !check.validate(config)) {
        const message = describeErrors(check.validate.errors);
        throw new ApiError('VALIDATION_FAILED', `body.config: ${message}`, {
          details: { fields: [{ field: 'body.config', message }] },
        });
      }
    } else if (Object.keys(config).length > 0) {
      throw new ApiError('VALIDATION_FAILED', `body.config: entry "${id}" takes no config`, {
        details: { fields: [{ field: 'body.config', message: 'this entry takes no config' }] },
      });
    }
    const name = input.name ?? id.replace(/[^a-z0-9-]/g, '-').slice(0, 63);
    const server = entry.server;
    const usesCwd = JSON.stringify(server).includes('{{server.cwd}}');
    const cwd = usesCwd ? join(this.#settings.dataDir, 'mcp', principal.tenant.id, name) : '';
    const args = (server.args ?? []).map((a) => fill(a, config, cwd));
    let command = server.command === undefined ? undefined : fill(server.command, config, cwd);
    let network = server.network;
    if (server.transport === 'stdio' && server.package !== undefined && command === undefined) {
      const bin = installedBin(server.package, server.bin);
      if (bin !== undefined) {
        command = process.execPath;
        args.unshift(bin);
      } else {
        // Not installed here: npx fetches it, which takes the network.
        command = 'npx';
        args.unshift('--yes', server.package);
        network = true;
      }
    }
    const create: CreateMcpServer = {
      name,
      description: entry.description,
      transport: server.transport,
      ...(command !== undefined ? { command, args } : {}),
      ...(usesCwd ? { cwd } : {}),
      ...(server.env !== undefined ? { env: fillRecord(server.env, config, cwd) } : {}),
      ...(network !== undefined && server.transport === 'stdio' ? { network } : {}),
      ...(server.url !== undefined ? { url: fill(server.url, config, cwd) } : {}),
      ...(server.headers !== undefined ? { headers: fillRecord(server.headers, config, cwd) } : {}),
      ...(input.tool_timeout_ms !== undefined ? { tool_timeout_ms: input.tool_timeout_ms } : {}),
      ...(input.trust_initial_tools !== undefined
        ? { trust_initial_tools: input.trust_initial_tools }
        : {}),
    };
    return this.create(principal, create, entry.id);
  }
}

/**
 * What a sandboxed stdio server may read besides the system: the Node binary, and for a
 * script given by absolute path, the project it belongs to (its nearest folder with a
 * node_modules, whose packages, workspace links included, it imports). An npm-installed
 * server's own folder is inside such a project too.
 */
function readOnlyPathsFor(config: McpTransportConfig): string[] {
  if (config.transport !== 'stdio') return [];
  const paths = new Set<string>([dirname(process.execPath)]);
  for (const arg of [config.command, ...config.args]) {
    if (!isAbsolute(arg) || !existsSync(arg)) continue;
    const at = arg.indexOf('/node_modules/');
    if (at > 0) {
      paths.add(arg.slice(0, at));
      continue;
    }
    for (let dir = dirname(arg); dir !== dirname(dir); dir = dirname(dir)) {
      if (existsSync(join(dir, 'node_modules'))) {
        paths.add(dir);
        break;
      }
    }
  }
  return [...paths];
}
