import { realpath, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { relative } from 'node:path';
import {
  type CreateInstance,
  type CreateWorkspaceTemplate,
  DEFAULT_INSTANCE_RESOURCES,
  type ExecCommand,
  type ExecResult,
  type Instance,
  type InstanceState,
  type UpdateInstance,
  type UsageItem,
  type WorkspaceTemplate,
} from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import { type Balancer, createBalancer } from '../balancing/strategies.ts';
import type { Emit, EventLog, StreamItem } from '../events/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import { KeyedQueue } from '../platform/keyed-queue.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import type { Database } from '../store/database.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { DockerDriver } from './docker-driver.ts';
import { FileService, type WorkspaceRef } from './files.ts';
import type { InstanceForwarding } from './forwarding.ts';
import type { AppliedLimits } from './limits.ts';
import { resolveInside } from './paths.ts';
import { PortShares } from './port-shares.ts';
import type {
  FilledSpec,
  InstanceDriverPort,
  InstancePaths,
  InstancePort,
  ProcessDriver,
  ServiceExit,
  TerminalProcess,
} from './process-driver.ts';
import { InstanceQuotas } from './quotas.ts';
import {
  DiskUsage,
  type InstanceUsage,
  type NodeUsage,
  nodeUsage,
  type Recommendation,
  recommend,
  usageOf,
} from './resource-usage.ts';
import type { InstancesTable, WorkspaceTemplatesTable } from './tables.ts';
import { WorkspaceUploads } from './uploads.ts';

/** The event-log stream of one instance. */
export function instanceStream(instanceId: string): string {
  return `instance:${instanceId}`;
}

/** The event-log stream of one command run in an instance. */
export function execStream(execId: string): string {
  return `exec:${execId}`;
}

/** The event-log stream of a tenant's instances (the `instances` topic). */
export function instancesStream(tenantId: string): string {
  return `instances:${tenantId}`;
}

function templateNotFound(ref: string): ApiError {
  return new ApiError('WORKSPACE_TEMPLATE_NOT_FOUND', `Workspace template "${ref}" does not exist`);
}

function instanceNotFound(id: string): ApiError {
  return new ApiError('WORKSPACE_INSTANCE_NOT_FOUND', `Instance "${id}" does not exist`);
}

/** A template's spec with every default filled in. */
export function fillSpec(input: Omit<CreateWorkspaceTemplate, 'name'>): FilledSpec {
  return {
    description: input.description ?? '',
    driver: input.driver ?? 'process',
    image: input.image ?? null,
    base: input.base ?? { type: 'empty' },
    env: input.env ?? {},
    startup: input.startup ?? null,
    network: input.network ?? 'none',
    idle_timeout_ms: input.idle_timeout_ms ?? null,
    ttl_ms: input.ttl_ms ?? null,
    on_node_loss: input.on_node_loss ?? 'keep',
    resources: { ...DEFAULT_INSTANCE_RESOURCES, ...input.resources },
    ports: input.ports ?? [],
  };
}

/** The numbers an instance's ports got. */
export function portsOf(row: Pick<InstancesTable, 'ports'>): InstancePort[] {
  return row.ports === null ? [] : (JSON.parse(row.ports) as InstancePort[]);
}

/** Refuses a spec whose port names repeat. */
function checkPorts(spec: FilledSpec): void {
  const names = new Set<string>();
  for (const { name } of spec.ports) {
    if (names.has(name)) throw fieldError('body.ports', `the name "${name}" is given twice`);
    names.add(name);
  }
}

/** A stored spec, with defaults for what older specs lack. */
export function parseSpec(text: string): FilledSpec {
  return fillSpec(JSON.parse(text) as Omit<CreateWorkspaceTemplate, 'name'>);
}

function templateView(row: WorkspaceTemplatesTable): WorkspaceTemplate {
  const spec = parseSpec(row.spec);
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    version: row.version,
    ...spec,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

function instanceView(
  row: InstancesTable,
  activeAt: number | undefined,
  limits: AppliedLimits | null,
): Instance {
  const recorded = row.last_active_at === null ? 0 : Date.parse(row.last_active_at);
  const last = Math.max(recorded, activeAt ?? 0);
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    template: { id: row.template_id, name: row.template_name, version: row.template_version },
    driver: row.driver as Instance['driver'],
    state: row.state as InstanceState,
    state_reason: row.state_reason,
    labels: JSON.parse(row.labels) as Record<string, string>,
    node_id: row.node_id,
    exit_code: row.exit_code,
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
    started_at: row.started_at,
    stopped_at: row.stopped_at,
    idle_timeout_ms: row.idle_timeout_ms === null ? null : Number(row.idle_timeout_ms),
    last_active_at: last === 0 ? null : new Date(last).toISOString(),
    expires_at: row.expires_at,
    resources: parseSpec(row.spec).resources,
    resource_limits: limits,
    ports: portsOf(row),
  };
}

/** A command's output is journaled in pieces at most this far apart, and this large. */
const EXEC_FLUSH_MS = 100;
const EXEC_CHUNK_BYTES = 64 * 1024;
/** Most output of one command kept in its events; the rest is counted, not kept. */
const EXEC_KEPT_BYTES = 16 * 1024 * 1024;
/** Most output of each stream in the answer of a command that is not streamed. */
const EXEC_ANSWER_BYTES = 1024 * 1024;
const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** Most commands running at once in one instance. */
const MAX_EXECS_PER_INSTANCE = 64;

/** Most instances in one answer of the resource service. */
const USAGE_MAX_INSTANCES = 500;

/** How long services get at the node's shutdown before they are killed. */
const CLOSE_GRACE_MS = 2_000;
/** Instances a failover run marks lost at most (the next run takes the rest). */
const FAILOVER_BATCH = 200;

/** States from which `start` may run, and from which `stop` may. */
const STARTABLE: InstanceState[] = ['stopped', 'failed', 'lost'];
const STOPPABLE: InstanceState[] = ['starting', 'running'];

export interface ListInstancesOptions {
  states?: InstanceState[] | undefined;
  template?: string | undefined;
  labels?: Record<string, string> | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
  maxBytes: number;
}

export type InstanceBatchItem =
  | { status: 201; instance: Instance }
  | { status: number; error: { code: string; message: string; details?: unknown } };

/** A live node of the cluster, as placement sees it (the registry's entry). */
export interface PlacementNode {
  id: string;
  url: string;
  load: { cpu?: number | undefined; memory?: number | undefined };
  instance_drivers?: string[] | undefined;
}

export type PlacementStrategy = 'least_connections' | 'resource' | 'round_robin' | 'local';

/** The drivers of a node: the process driver always, Docker where an engine is configured. */
export interface Drivers {
  process: ProcessDriver;
  docker?: DockerDriver;
}

/**
 * Workspace templates and instances: the instance service of the design. It owns the
 * states (each change a conditional update plus an event on the instance's stream and the
 * tenant's `instances` topic, in one transaction) and asks the driver to do the work.
 * Operations on one instance run one after another on its node.
 */
export class InstanceService {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  /** The drivers this node has, by name (`process` always; `docker` when configured). */
  readonly #drivers: Drivers;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #stopGraceMs: number;
  /** Operations on one instance run one after another. */
  readonly #queues = new KeyedQueue();
  /** Instances being stopped on request: their service's exit is expected. */
  readonly #stopping = new Set<string>();
  /** The node is closing: services end without their instances changing state. */
  #closing = false;
  /** Commands running on this node, by id: their instance, and how to cancel them. */
  readonly #execs = new Map<string, { instanceId: string; cancel: AbortController }>();
  /** Files and paths of the instances' workspaces, and their change feeds. */
  readonly files: FileService;
  /** Share links of instances' ports. */
  readonly shares: PortShares;
  readonly uploads: WorkspaceUploads;
  #uploadsSweptAt = 0;
  /** The tenant's workspace quotas, checked at create and start. */
  readonly quotas: InstanceQuotas;
  /** The last activity seen on this node per instance (ms), written to the store by the sweep. */
  readonly #activity = new Map<string, number>();
  /** What the sweep wrote last per instance, so that it writes only what is newer. */
  readonly #recordedActivity = new Map<string, number>();
  readonly #sweep: Job;
  /** The cluster's leader marks the instances of lost nodes `lost` (and moves those it may). */
  readonly #failover: Job;
  /** When each node was first seen missing from the registry (failover waits a grace). */
  readonly #missingSince = new Map<string, number>();
  readonly #lostAfterMs: number;
  readonly #lostListeners: ((
    instanceId: string,
    nodeId: string,
    reason: string,
  ) => Promise<void>)[] = [];
  readonly #disk = new DiskUsage();
  readonly #deletedListeners: ((instanceId: string) => Promise<void>)[] = [];
  readonly #stoppingListeners: ((instanceId: string, reason: string) => void)[] = [];
  readonly #portRange: readonly [number, number];
  readonly #activitySources: (() => Iterable<string>)[] = [];
  /** The cluster's live nodes (the registry's), for placement. */
  readonly #clusterNodes: () => Promise<PlacementNode[]>;
  readonly #placement: Balancer | undefined;
  /** This node's running instances, counted by the sweep (reported in its registry entry). */
  #runningHere = 0;
  /** Set by the module: sends requests about another node's instance to that node. */
  forwarding: InstanceForwarding | undefined;
  /** How this node limits its instances' resources, per driver (known once the node started). */
  readonly #limits = new Map<string, AppliedLimits>();

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    drivers: Drivers;
    nodeId: string;
    log: Logger;
    stopGraceMs: number;
    uploadMaxBytes: number;
    jobs: Jobs;
    sweepMs: number;
    limits: TenantLimitSource;
    /** ORCHESTRA_INSTANCE_PORT_RANGE: first and last. */
    portRange: readonly [number, number];
    /** ORCHESTRA_INSTANCE_PLACEMENT. */
    placement: PlacementStrategy;
    clusterNodes: () => Promise<PlacementNode[]>;
    /** Claims a leader key for this node (the registry's node claims). */
    claim: (key: string) => Promise<boolean>;
    /** ORCHESTRA_INSTANCE_LOST_AFTER_MS. */
    lostAfterMs: number;
  }) {
    this.#clusterNodes = deps.clusterNodes;
    this.#lostAfterMs = deps.lostAfterMs;
    this.#failover = deps.jobs.job({
      name: 'instance-failover',
      intervalMs: deps.sweepMs,
      run: () => this.failover(),
      leader: {
        key: 'cluster/instance-failover',
        claim: deps.claim,
        role: 'marks the instances of lost nodes lost',
        onLost: () => this.#missingSince.clear(),
      },
    });
    this.#placement =
      deps.placement === 'local' || deps.store.kind === 'sqlite'
        ? undefined
        : createBalancer(deps.placement);
    this.#portRange = deps.portRange;
    this.shares = new PortShares({ store: deps.store, instances: this });
    this.uploads = new WorkspaceUploads({ store: deps.store, maxBytes: deps.uploadMaxBytes });
    // Every driver lays out a workspace with the process driver's layout.
    deps.drivers.process.uploads = this.uploads;
    this.quotas = new InstanceQuotas({ store: deps.store, limits: deps.limits });
    this.files = new FileService({
      events: deps.events,
      log: deps.log,
      maxUploadBytes: deps.uploadMaxBytes,
      onActivity: (id) => this.touch(id),
    });
    this.#sweep = deps.jobs.job({
      name: 'instance-lifetimes',
      intervalMs: deps.sweepMs,
      run: () => this.sweep(),
    });
    this.#store = deps.store;
    this.#events = deps.events;
    this.#drivers = deps.drivers;
    this.#nodeId = deps.nodeId;
    this.#log = deps.log;
    this.#stopGraceMs = deps.stopGraceMs;
  }

  /** The driver of an instance (or template): 503 when this node does not have it. */
  #driver(name: string): InstanceDriverPort {
    const driver = this.#drivers[name as keyof Drivers];
    if (driver === undefined) {
      throw new ApiError(
        'SANDBOX_UNAVAILABLE',
        `This node has no ${name} driver (for docker: set ORCHESTRA_DOCKER_HOST)`,
      );
    }
    return driver;
  }

  /** The drivers this node has, by name. */
  get driverNames(): string[] {
    return Object.keys(this.#drivers);
  }

  /** Whether other nodes may run instances (a shared store): SQLite is one node's. */
  get clustered(): boolean {
    return this.#store.kind !== 'sqlite';
  }

  /** This node's running instances, as of the last sweep. */
  get runningHere(): number {
    return this.#runningHere;
  }

  /**
   * The node an instance lives on, for forwarding; undefined when it does not exist or
   * when the store is one node's (SQLite: every instance is this node's).
   */
  async nodeOf(instanceId: string): Promise<string | undefined> {
    if (!this.clustered) return undefined;
    const row = await this.#store.db
      .selectFrom('instances')
      .select('node_id')
      .where('id', '=', instanceId)
      .executeTakeFirst();
    return row?.node_id;
  }

  /**
   * Where new instances of these templates go (ORCHESTRA_INSTANCE_PLACEMENT): a live node
   * with their drivers, picked by the strategy; undefined for this node (also when a
   * template is missing: this node answers that).
   */
  async place(tenantId: string, templateRefs: string[]): Promise<string | undefined> {
    if (this.#placement === undefined) return undefined;
    const drivers = new Set<string>();
    for (const ref of new Set(templateRefs)) {
      const row = await this.#templateRow(tenantId, ref).catch(() => undefined);
      if (row === undefined) return undefined;
      drivers.add(parseSpec(row.spec).driver);
    }
    const picked = await this.#pickNode(this.#placement, drivers, await this.#clusterNodes());
    return picked === this.#nodeId ? undefined : picked;
  }

  /** A live node with these drivers, picked by `balancer` among the cluster's. */
  async #pickNode(
    balancer: Balancer,
    drivers: Set<string>,
    nodes: PlacementNode[],
  ): Promise<string | undefined> {
    const fit = nodes.filter(
      (node) =>
        node.url !== '' &&
        [...drivers].every((d) => (node.instance_drivers ?? ['process']).includes(d)),
    );
    if (fit.length === 0) return undefined;
    const counts = await this.#store.db
      .selectFrom('instances')
      .select(['node_id', (eb) => eb.fn.countAll<number>().as('n')])
      .where('state', 'in', ['creating', 'starting', 'running'])
      .groupBy('node_id')
      .execute();
    const running = new Map(counts.map((c) => [c.node_id, Number(c.n)]));
    return balancer.pick(
      fit.map((node) => ({
        id: node.id,
        inFlight: running.get(node.id) ?? 0,
        maxConcurrency: Number.POSITIVE_INFINITY,
        load: { cpu: node.load.cpu ?? 0, memory: node.load.memory ?? 0 },
      })),
    )?.id;
  }

  /** Called (on the leader) when an instance is marked lost: its terminals end, say. */
  onLost(listener: (instanceId: string, nodeId: string, reason: string) => Promise<void>): void {
    this.#lostListeners.push(listener);
  }

  /**
   * As the cluster's leader: the instances of nodes missing from the registry for
   * ORCHESTRA_INSTANCE_LOST_AFTER_MS become `lost`, with the reason; those whose template
   * says `restart_elsewhere` get a live node with their driver, whose sweep starts them
   * from their base (`#relocate`).
   */
  async failover(): Promise<void> {
    const nodes = await this.#clusterNodes();
    const live = new Set(nodes.map((n) => n.id));
    // Without its own entry, this node cannot tell a lost node from its own trouble.
    if (!live.has(this.#nodeId)) return;
    const now = Date.now();
    const rows = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('state', 'in', ['creating', 'starting', 'running', 'stopping'])
      .where('node_id', 'not in', [...live])
      .orderBy('id')
      .limit(FAILOVER_BATCH)
      .execute();
    const missing = new Set(rows.map((r) => r.node_id));
    for (const id of this.#missingSince.keys()) if (!missing.has(id)) this.#missingSince.delete(id);
    for (const id of missing) if (!this.#missingSince.has(id)) this.#missingSince.set(id, now);
    const fallback = createBalancer('least_connections');
    for (const row of rows) {
      const since = this.#missingSince.get(row.node_id) ?? now;
      if (now - since < this.#lostAfterMs) continue;
      const spec = parseSpec(row.spec);
      let reason = `its node ${row.node_id} was lost (gone from the cluster's registry for ${describeMs(now - since)})`;
      const changes: Partial<InstancesTable> = { pid: null };
      if (spec.on_node_loss === 'restart_elsewhere') {
        const target = await this.#pickNode(
          this.#placement ?? fallback,
          new Set([spec.driver]),
          nodes,
        );
        if (target === undefined) {
          reason += `; no live node has the ${spec.driver} driver to start it again`;
        } else {
          reason += `; it starts again on node ${target} from its template's base (its files stayed on the lost node)`;
          changes.node_id = target;
          changes.moved_from = row.node_id;
        }
      }
      try {
        await this.#transition(row, [row.state as InstanceState], 'lost', reason, changes);
      } catch {
        continue; // it changed meanwhile: the next run looks again
      }
      this.#log.warn({ instance_id: row.id, node_id: row.node_id }, `instance lost: ${reason}`);
      for (const listener of this.#lostListeners) {
        await listener(row.id, row.node_id, reason).catch((err: unknown) =>
          this.#log.warn({ err, instance_id: row.id }, 'lost listener failed'),
        );
      }
    }
  }

  /**
   * On the node a lost instance was moved to: a fresh workspace from its template's base,
   * then a start (quotas apply).
   */
  async #relocate(row: InstancesTable): Promise<void> {
    await this.#serially(row.id, async () => {
      const current = await this.#current(row.tenant_id, row.id);
      const from = current.moved_from;
      if (current.state !== 'lost' || current.node_id !== this.#nodeId || !from) return;
      const driver = this.#driver(current.driver);
      const spec = parseSpec(current.spec);
      // A workspace left here by an earlier stay is not this one's any more.
      await driver.destroy(current.id).catch(() => {});
      try {
        await driver.create({
          id: current.id,
          tenantId: current.tenant_id,
          spec,
          ports: portsOf(current),
        });
      } catch (err) {
        await this.#fail(current, `its workspace could not be made again here: ${messageOf(err)}`);
        return;
      }
      await this.#store.db
        .updateTable('instances')
        .set({ moved_from: null })
        .where('id', '=', current.id)
        .execute();
      await this.#admitStart(
        { ...current, moved_from: null },
        `started again on node ${this.#nodeId} from its template's base, after node ${from} was lost`,
      );
    });
  }

  /**
   * What starts from upload `id`, in words ("template web", "instance ins_…"), or undefined:
   * a template's spec, or an instance's (which a restart elsewhere lays out again).
   */
  async uploadUser(tenantId: string, id: string): Promise<string | undefined> {
    // Ids are `wup_` and hex: nothing in them is special to LIKE.
    const quoted = `%"${id}"%`;
    const template = await this.#store.db
      .selectFrom('workspace_templates')
      .select('name')
      .where('tenant_id', '=', tenantId)
      .where('spec', 'like', quoted)
      .executeTakeFirst();
    if (template !== undefined) return `template ${template.name}`;
    const instance = await this.#store.db
      .selectFrom('instances')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where('spec', 'like', quoted)
      .executeTakeFirst();
    return instance === undefined ? undefined : `instance ${instance.id}`;
  }

  /** The directory layout, the same for every driver. */
  #paths(instanceId: string): InstancePaths {
    return this.#drivers.process.paths(instanceId);
  }

  /** Refuses a spec this node cannot run: a driver it lacks, a missing image, a bad base. */
  async #checkSpec(spec: FilledSpec, tenantId: string): Promise<void> {
    checkPorts(spec);
    if (spec.base.type === 'upload') {
      await this.uploads.check(tenantId, spec.base.upload, 'body.base.upload');
    }
    if (spec.driver === 'docker') {
      const docker = this.#drivers.docker;
      if (docker === undefined) {
        throw fieldError(
          'body.driver',
          'this server has no Docker engine configured (ORCHESTRA_DOCKER_HOST)',
        );
      }
      await docker.checkImage(spec.image);
    } else if (spec.image !== null) {
      throw fieldError('body.image', `the ${spec.driver} driver takes no image`);
    }
    await this.#driver(spec.driver).checkBase(spec.base);
  }

  #view(row: InstancesTable): Instance {
    return instanceView(
      row,
      this.#activity.get(row.id),
      row.node_id === this.#nodeId ? (this.#limits.get(row.driver) ?? null) : null,
    );
  }

  /**
   * Runs `insert` with the ports taken in the cluster; another node taking one of those it
   * picked at the same moment fails it on the primary key, and it runs again (5 times).
   */
  async #allocating(insert: (taken: Set<number>) => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const rows = await this.#store.db
        .selectFrom('instance_ports')
        .select('port')
        .where('port', '>=', this.#portRange[0])
        .where('port', '<=', this.#portRange[1])
        .execute();
      try {
        await insert(new Set(rows.map((r) => r.port)));
        return;
      } catch (err) {
        if (attempt < 5 && isUniqueViolation(err)) continue;
        throw err;
      }
    }
  }

  /** A free number of the range for each declared port, chosen at random among the free. */
  #pickPorts(declared: FilledSpec['ports'], taken: Set<number>): InstancePort[] {
    const [first, last] = this.#portRange;
    const picked: InstancePort[] = [];
    for (const { name } of declared) {
      const free = last - first + 1 - taken.size;
      if (free <= 0) {
        throw new ApiError(
          'PORTS_EXHAUSTED',
          `All ${last - first + 1} ports of ORCHESTRA_INSTANCE_PORT_RANGE (${first}-${last}) are taken; delete instances, or widen the range`,
        );
      }
      // Random probes: a busy range is not walked from its start by every create at once.
      let port = first + Math.floor(Math.random() * (last - first + 1));
      while (taken.has(port)) port = port === last ? first : port + 1;
      taken.add(port);
      picked.push({ name, port });
    }
    return picked;
  }

  /**
   * Calls `listener` with the id of every instance deleted on this node, so that what other
   * modules keep of it goes too; the delete answers once they are done.
   */
  onDeleted(listener: (instanceId: string) => Promise<void>): void {
    this.#deletedListeners.push(listener);
  }

  /**
   * Calls `listener` when an instance of this node stops, fails or goes (before its service
   * is stopped), so that what another module runs in it (terminals) ends first.
   */
  onStopping(listener: (instanceId: string, reason: string) => void): void {
    this.#stoppingListeners.push(listener);
  }

  /** Instances `source` names at each idle check count as active (attached terminals). */
  addActivitySource(source: () => Iterable<string>): void {
    this.#activitySources.push(source);
  }

  /** Notes activity on an instance (exec, files, terminals, ports): its idle clock restarts. */
  touch(instanceId: string): void {
    this.#activity.set(instanceId, Date.now());
  }

  // --- Workspace templates -------------------------------------------------------------

  async createTemplate(
    principal: Principal,
    input: CreateWorkspaceTemplate,
  ): Promise<WorkspaceTemplate> {
    const { name, ...spec } = input;
    const filled = fillSpec(spec);
    await this.#checkSpec(filled, principal.tenant.id);
    const now = new Date().toISOString();
    const row: WorkspaceTemplatesTable = {
      id: newId('wst'),
      tenant_id: principal.tenant.id,
      name,
      version: 1,
      spec: JSON.stringify(filled),
      created_at: now,
      updated_at: now,
    };
    const existing = await this.#templateRow(principal.tenant.id, name).catch(() => undefined);
    if (existing !== undefined) {
      throw new ApiError(
        'WORKSPACE_TEMPLATE_ALREADY_EXISTS',
        `A workspace template named "${name}" already exists`,
      );
    }
    try {
      await this.#store.db.insertInto('workspace_templates').values(row).execute();
    } catch (err) {
      // Two creates at once: the unique constraint decides.
      if (await this.#templateRow(principal.tenant.id, name).catch(() => undefined)) {
        throw new ApiError(
          'WORKSPACE_TEMPLATE_ALREADY_EXISTS',
          `A workspace template named "${name}" already exists`,
        );
      }
      throw err;
    }
    return templateView(row);
  }

  /** Replaces a template's spec; its version goes up. Instances keep the spec they had. */
  async replaceTemplate(
    principal: Principal,
    ref: string,
    input: Omit<CreateWorkspaceTemplate, 'name'>,
  ): Promise<WorkspaceTemplate> {
    const row = await this.#templateRow(principal.tenant.id, ref);
    const filled = fillSpec(input);
    await this.#checkSpec(filled, principal.tenant.id);
    const updated = await this.#store.db
      .updateTable('workspace_templates')
      .set({
        spec: JSON.stringify(filled),
        version: row.version + 1,
        updated_at: new Date().toISOString(),
      })
      .where('id', '=', row.id)
      .where('version', '=', row.version)
      .returningAll()
      .executeTakeFirst();
    if (updated === undefined) {
      throw new ApiError('PRECONDITION_FAILED', 'The template changed meanwhile; try again');
    }
    return templateView(updated);
  }

  async getTemplate(principal: Principal, ref: string): Promise<WorkspaceTemplate> {
    return templateView(await this.#templateRow(principal.tenant.id, ref));
  }

  async listTemplates(
    principal: Principal,
    options: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: WorkspaceTemplate[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('wst_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('workspace_templates')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    return toPage(await query.execute(), limit, templateView, options.maxBytes);
  }

  /** Deletes a template no instance was created from (409 WORKSPACE_TEMPLATE_IN_USE). */
  async deleteTemplate(principal: Principal, ref: string): Promise<void> {
    const row = await this.#templateRow(principal.tenant.id, ref);
    const used = await this.#store.db
      .selectFrom('instances')
      .select(['id'])
      .where('tenant_id', '=', row.tenant_id)
      .where('template_id', '=', row.id)
      .limit(1)
      .executeTakeFirst();
    if (used !== undefined) {
      throw new ApiError(
        'WORKSPACE_TEMPLATE_IN_USE',
        `Instances were created from workspace template "${row.name}" (such as ${used.id}); delete them first`,
        { details: { instance_id: used.id } },
      );
    }
    await this.#store.db.deleteFrom('workspace_templates').where('id', '=', row.id).execute();
  }

  async #templateRow(tenantId: string, ref: string): Promise<WorkspaceTemplatesTable> {
    const row = await this.#store.db
      .selectFrom('workspace_templates')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where(ref.startsWith('wst_') ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw templateNotFound(ref);
    return row;
  }

  // --- Instances -----------------------------------------------------------------------

  /**
   * Creates an instance from a template: `creating` while its directory is laid out, then
   * (unless `start` is false) `starting` and `running`. Resolves once it got there, or to
   * `failed` with the reason.
   */
  async create(
    principal: Principal,
    input: CreateInstance,
    /** Taken in advance by `createMany`, so that a batch's ids follow its order. */
    id: string = newId('ins'),
  ): Promise<Instance> {
    const tenantId = principal.tenant.id;
    let template: WorkspaceTemplatesTable;
    try {
      template = await this.#templateRow(tenantId, input.template);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'WORKSPACE_TEMPLATE_NOT_FOUND') {
        throw fieldError('body.template', `no workspace template "${input.template}"`);
      }
      throw err;
    }
    const created = Date.now();
    const now = new Date(created).toISOString();
    const labels = input.labels ?? {};
    const spec = parseSpec(template.spec);
    const ttl = input.ttl_ms !== undefined ? input.ttl_ms : spec.ttl_ms;
    const row: InstancesTable = {
      id,
      tenant_id: tenantId,
      name: input.name ?? id,
      template_id: template.id,
      template_name: template.name,
      template_version: template.version,
      driver: spec.driver,
      spec: template.spec,
      state: 'creating',
      state_reason: `created by ${credentialId(principal)}`,
      labels: JSON.stringify(labels),
      node_id: this.#nodeId,
      exit_code: null,
      pid: null,
      created_by: credentialId(principal),
      created_at: now,
      updated_at: now,
      started_at: null,
      stopped_at: null,
      idle_timeout_ms:
        input.idle_timeout_ms !== undefined ? input.idle_timeout_ms : spec.idle_timeout_ms,
      last_active_at: now,
      // Fixed at creation: a stop and a start do not reset it (PATCH expires_at moves it).
      expires_at: ttl === null ? null : new Date(created + ttl).toISOString(),
      ports: '[]',
    };
    await this.quotas.admit(
      tenantId,
      { creating: true, starting: input.start !== false, resources: spec.resources },
      () =>
        this.#allocating(async (taken) => {
          const ports = this.#pickPorts(spec.ports, taken);
          row.ports = JSON.stringify(ports);
          await this.#events.transaction(async (trx, emit) => {
            await trx.insertInto('instances').values(row).execute();
            if (ports.length > 0) {
              await trx
                .insertInto('instance_ports')
                .values(ports.map((p) => ({ ...p, instance_id: id, tenant_id: tenantId })))
                .execute();
            }
            await this.#writeLabels(trx, row, labels);
            await this.#emit(emit, row, true);
          });
        }),
    );
    return this.#serially(id, async () => {
      try {
        await this.#driver(row.driver).create({
          id,
          tenantId: row.tenant_id,
          spec: parseSpec(row.spec),
          ports: portsOf(row),
        });
      } catch (err) {
        return this.#fail(row, `its workspace could not be made: ${messageOf(err)}`);
      }
      if (input.start === false) {
        return this.#view(
          await this.#transition(row, ['creating'], 'stopped', 'created; not started', {
            stopped_at: new Date().toISOString(),
          }),
        );
      }
      return this.#start(await this.#current(tenantId, id), ['creating'], 'started on creation');
    });
  }

  /** Creates each instance of a batch, a result per item, in order. */
  async createMany(principal: Principal, inputs: CreateInstance[]): Promise<InstanceBatchItem[]> {
    const ids = inputs.map(() => newId('ins'));
    return Promise.all(
      inputs.map(async (input, i): Promise<InstanceBatchItem> => {
        try {
          return { status: 201, instance: await this.create(principal, input, ids[i]) };
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          const rename = (text: string) => text.replace(/^body\./, `body.instances.${i}.`);
          const fields = err.details?.fields as { field: string; message: string }[] | undefined;
          const details = fields
            ? { ...err.details, fields: fields.map((f) => ({ ...f, field: rename(f.field) })) }
            : err.details;
          return {
            status: err.status,
            error: {
              code: err.code,
              message: rename(err.message),
              ...(details ? { details } : {}),
            },
          };
        }
      }),
    );
  }

  async get(principal: Principal, id: string): Promise<Instance> {
    return this.#view(await this.#current(principal.tenant.id, id));
  }

  async list(
    principal: Principal,
    options: ListInstancesOptions,
  ): Promise<{ items: Instance[]; next_cursor: string | null }> {
    const tenantId = principal.tenant.id;
    const before = decodeCursor(options.cursor, (id) => id.startsWith('ins_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    if (options.states && options.states.length > 0) {
      query = query.where('state', 'in', options.states);
    }
    if (options.template !== undefined) {
      query = query.where(
        options.template.startsWith('wst_') ? 'template_id' : 'template_name',
        '=',
        options.template,
      );
    }
    for (const [key, value] of Object.entries(options.labels ?? {})) {
      query = query.where(({ exists, selectFrom }) =>
        exists(
          selectFrom('instance_labels')
            .select('instance_labels.instance_id')
            .whereRef('instance_labels.instance_id', '=', 'instances.id')
            .where('instance_labels.tenant_id', '=', tenantId)
            .where('instance_labels.key', '=', key)
            .where('instance_labels.value', '=', value),
        ),
      );
    }
    return toPage(await query.execute(), limit, (row) => this.#view(row), options.maxBytes);
  }

  /** Renames or relabels an instance (labels are replaced whole). */
  async update(principal: Principal, id: string, input: UpdateInstance): Promise<Instance> {
    const row = await this.#current(principal.tenant.id, id);
    const changes: Partial<InstancesTable> = { updated_at: new Date().toISOString() };
    if (input.name !== undefined) changes.name = input.name;
    if (input.labels !== undefined) changes.labels = JSON.stringify(input.labels);
    if (input.idle_timeout_ms !== undefined) changes.idle_timeout_ms = input.idle_timeout_ms;
    if (input.expires_at !== undefined) {
      if (input.expires_at !== null && !(Date.parse(input.expires_at) > Date.now())) {
        throw fieldError('body.expires_at', 'must be a time in the future');
      }
      changes.expires_at =
        input.expires_at === null ? null : new Date(input.expires_at).toISOString();
    }
    const updated = await this.#store.transaction(async (trx) => {
      const done = await trx
        .updateTable('instances')
        .set(changes)
        .where('id', '=', row.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      if (input.labels !== undefined) {
        await trx.deleteFrom('instance_labels').where('instance_id', '=', row.id).execute();
        await this.#writeLabels(trx, done, input.labels);
      }
      return done;
    });
    return this.#view(updated);
  }

  /** Starts a stopped, failed or lost instance. Starting a running one changes nothing. */
  async start(principal: Principal, id: string): Promise<Instance> {
    const row = await this.#local(principal.tenant.id, id);
    return this.#serially(id, async () => {
      const current = await this.#current(row.tenant_id, id);
      if (current.state === 'running') return this.#view(current);
      if (!STARTABLE.includes(current.state as InstanceState)) {
        throw stateError(current, 'start');
      }
      return this.#admitStart(current, `started by ${credentialId(principal)}`);
    });
  }

  /** Stops a running instance: its service ends (SIGTERM, then SIGKILL after the grace). */
  async stop(principal: Principal, id: string): Promise<Instance> {
    const row = await this.#local(principal.tenant.id, id);
    return this.#serially(id, async () => {
      const current = await this.#current(row.tenant_id, id);
      if (current.state === 'stopped') return this.#view(current);
      if (!STOPPABLE.includes(current.state as InstanceState)) {
        throw stateError(current, 'stop');
      }
      return this.#stop(current, `stopped by ${credentialId(principal)}`);
    });
  }

  async restart(principal: Principal, id: string): Promise<Instance> {
    const row = await this.#local(principal.tenant.id, id);
    return this.#serially(id, async () => {
      let current = await this.#current(row.tenant_id, id);
      const by = credentialId(principal);
      if (STOPPABLE.includes(current.state as InstanceState)) {
        await this.#stop(current, `restarted by ${by}`);
        current = await this.#current(row.tenant_id, id);
      }
      if (!STARTABLE.includes(current.state as InstanceState)) {
        throw stateError(current, 'restart');
      }
      return this.#admitStart(current, `restarted by ${by}`);
    });
  }

  /** Stops the instance if it runs, deletes its files, its record and its event stream. */
  async delete(principal: Principal, id: string): Promise<void> {
    const row = await this.#local(principal.tenant.id, id);
    await this.#delete(row, `deleted by ${credentialId(principal)}`);
  }

  /** Deletes an instance of this node: what runs, its files, its record and its streams. */
  async #delete(row: InstancesTable, reason: string): Promise<void> {
    const id = row.id;
    await this.#serially(id, async () => {
      const current = await this.#current(row.tenant_id, id);
      this.#stopping.add(id);
      this.#cancelExecs(id, 'the instance was deleted');
      this.files.unwatch(id);
      try {
        await this.#driver(current.driver).destroy(id);
      } finally {
        this.#stopping.delete(id);
      }
      await this.#events.transaction(async (trx, emit) => {
        await trx.deleteFrom('instances').where('id', '=', id).execute();
        await this.#events.deleteStreams(trx, current.tenant_id, [
          instanceStream(id),
          ...this.files.streams(id),
        ]);
        await emit(instancesStream(current.tenant_id), current.tenant_id, [
          { type: 'instance.deleted', data: { instance_id: id, reason } },
        ]);
      });
      this.#activity.delete(id);
      this.#recordedActivity.delete(id);
      for (const result of await Promise.allSettled(this.#deletedListeners.map((l) => l(id)))) {
        if (result.status === 'rejected') {
          this.#log.warn(
            { err: result.reason, instance_id: id },
            'data of a deleted instance left',
          );
        }
      }
    });
  }

  /**
   * The `instance-lifetimes` job, on every node for its own instances: records the
   * activity seen since the last run, deletes instances past their `expires_at` (TTL) and
   * stops running ones idle for longer than their `idle_timeout_ms`. A command still
   * running counts as activity.
   */
  async sweep(): Promise<void> {
    const now = Date.now();
    // Uploads cut off by a node's death, once a minute (any node may; a delete is idempotent).
    if (now - this.#uploadsSweptAt >= 60_000) {
      this.#uploadsSweptAt = now;
      await this.uploads.sweep();
    }
    for (const exec of this.#execs.values()) this.#activity.set(exec.instanceId, now);
    for (const source of this.#activitySources) {
      for (const id of source()) this.#activity.set(id, now);
    }
    for (const [id, at] of this.#activity) {
      if ((this.#recordedActivity.get(id) ?? 0) >= at) continue;
      await this.#store.db
        .updateTable('instances')
        .set({ last_active_at: new Date(at).toISOString() })
        .where('id', '=', id)
        .execute();
      this.#recordedActivity.set(id, at);
    }
    const expired = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('node_id', '=', this.#nodeId)
      .where('expires_at', 'is not', null)
      .where('expires_at', '<=', new Date(now).toISOString())
      .execute();
    for (const row of expired) {
      const ttl = Date.parse(row.expires_at as string) - Date.parse(row.created_at);
      await this.#delete(row, `its time to live (${describeMs(ttl)}) ran out`).catch(
        (err: unknown) =>
          this.#log.warn({ err, instance_id: row.id }, 'expired instance not deleted'),
      );
    }
    const candidates = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('node_id', '=', this.#nodeId)
      .where('state', '=', 'running')
      .where('idle_timeout_ms', 'is not', null)
      .execute();
    for (const row of candidates) {
      const idle = Number(row.idle_timeout_ms);
      const last = Date.parse(this.#view(row).last_active_at ?? row.started_at ?? row.created_at);
      if (now - last < idle) continue;
      await this.#serially(row.id, async () => {
        const current = await this.#current(row.tenant_id, row.id);
        const seen = Date.parse(this.#view(current).last_active_at ?? current.created_at);
        if (current.state !== 'running' || Date.now() - seen < idle) return;
        await this.#stop(current, `stopped after ${describeMs(idle)} without activity`);
      }).catch((err: unknown) =>
        this.#log.warn({ err, instance_id: row.id }, 'idle instance not stopped'),
      );
    }
    if (this.#store.kind !== 'sqlite') await this.#sweepCluster();
    const here = await this.#store.db
      .selectFrom('instances')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('node_id', '=', this.#nodeId)
      .where('state', '=', 'running')
      .executeTakeFirst();
    this.#runningHere = Number(here?.n ?? 0);
  }

  /**
   * In a cluster: starts the lost instances moved to this node, and deals with this node's
   * instances that were marked lost while it was away (it came back).
   */
  async #sweepCluster(): Promise<void> {
    // What runs here for an instance another node took over (this node was lost and came
    // back) stops, and its stale files go: the instance started from its base there.
    for (const driver of Object.values(this.#drivers)) {
      const ids = driver.localIds();
      if (ids.length === 0) continue;
      const moved = await this.#store.db
        .selectFrom('instances')
        .select(['id', 'node_id'])
        .where('id', 'in', ids)
        .where('node_id', '!=', this.#nodeId)
        .execute();
      for (const row of moved) {
        this.#log.warn(
          { instance_id: row.id, node_id: row.node_id },
          'an instance that moved to another node still ran here: stopped',
        );
        await this.#serially(row.id, () =>
          this.#expectedStop(row.id, () => driver.destroy(row.id)),
        ).catch(() => {});
      }
    }
    const rows = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('node_id', '=', this.#nodeId)
      .where('state', '=', 'lost')
      .execute();
    // Back in the registry first: until then the other nodes cannot send it requests, and
    // the leader may still be deciding about its instances.
    if (rows.length > 0 && !(await this.#clusterNodes()).some((n) => n.id === this.#nodeId)) {
      return;
    }
    for (const row of rows) {
      if (row.moved_from) {
        await this.#relocate(row).catch((err: unknown) =>
          this.#log.warn({ err, instance_id: row.id }, 'lost instance not started here'),
        );
        continue;
      }
      // Marked lost while this node was cut off: it starts again from its files.
      await this.#serially(row.id, async () => {
        const current = await this.#current(row.tenant_id, row.id);
        if (current.state !== 'lost' || current.node_id !== this.#nodeId) return;
        const driver = this.#driver(current.driver);
        await this.#expectedStop(current.id, () => driver.stop(current.id, 0));
        await this.#admitStart(current, 'its node is back: started again from its files');
      }).catch((err: unknown) =>
        this.#log.warn({ err, instance_id: row.id }, 'lost instance not started again'),
      );
    }
  }

  /** Runs `work`, which ends the instance's service, without that exit changing its state. */
  async #expectedStop(instanceId: string, work: () => Promise<void>): Promise<void> {
    this.#stopping.add(instanceId);
    try {
      await work();
    } finally {
      this.#stopping.delete(instanceId);
    }
  }

  /**
   * Runs a command in a running instance. Its output and end are journaled as events of
   * its own stream (`exec.started`, `exec.output`, `exec.exited`), which a caller may
   * follow and resume; resolves once it started, with its id and a promise of its end.
   */
  async exec(
    principal: Principal,
    id: string,
    input: ExecCommand,
  ): Promise<{ execId: string; done: Promise<ExecResult> }> {
    const row = await this.#local(principal.tenant.id, id);
    if (row.state !== 'running') throw stateError(row, 'run commands');
    const running = [...this.#execs.values()].filter((e) => e.instanceId === id).length;
    if (running >= MAX_EXECS_PER_INSTANCE) {
      throw new ApiError(
        'RATE_LIMITED',
        `Instance "${id}" runs ${running} commands already, the most it may at once`,
      );
    }
    const paths = this.#paths(id);
    const cwd =
      input.cwd === undefined || input.cwd === ''
        ? paths.workspace
        : await resolveInside(paths.workspace, input.cwd, 'body.cwd');
    const execId = newId('exe');
    const tenantId = row.tenant_id;
    const stream = execStream(execId);
    await this.#events.transaction(async (_trx, emit) => {
      await emit(
        stream,
        tenantId,
        [
          {
            type: 'exec.started',
            data: { exec_id: execId, instance_id: id, command: input.command },
          },
        ],
        { isNew: true },
      );
    });
    const cancel = new AbortController();
    this.#execs.set(execId, { instanceId: id, cancel });
    this.touch(id);
    const answer = { stdout: '', stderr: '', truncated: false };
    let pending: { stream: 'stdout' | 'stderr'; data: string }[] = [];
    let pendingBytes = 0;
    let kept = 0;
    let dropped = 0;
    let writes = Promise.resolve();
    const flush = () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      pendingBytes = 0;
      writes = writes
        .then(() =>
          this.#events.transaction(async (_trx, emit) => {
            await emit(
              stream,
              tenantId,
              batch.map((o) => ({ type: 'exec.output', data: o })),
            );
          }),
        )
        .catch((err: unknown) => this.#log.warn({ err, exec_id: execId }, 'exec output lost'));
    };
    const flusher = setInterval(flush, EXEC_FLUSH_MS);
    const spec = parseSpec(row.spec);
    const done = this.#driver(row.driver)
      .exec(
        { id, tenantId: row.tenant_id, spec, ports: portsOf(row) },
        {
          command: input.command,
          cwd,
          env: input.env ?? {},
          stdin: input.stdin,
          timeoutMs: input.timeout_ms ?? DEFAULT_EXEC_TIMEOUT_MS,
          signal: cancel.signal,
          onOutput: (which, chunk) => {
            const text = chunk.toString('utf8');
            const inAnswer = answer[which].length;
            if (inAnswer < EXEC_ANSWER_BYTES) {
              answer[which] += text.slice(0, EXEC_ANSWER_BYTES - inAnswer);
            }
            if (inAnswer + text.length > EXEC_ANSWER_BYTES) answer.truncated = true;
            if (kept + chunk.length > EXEC_KEPT_BYTES) {
              dropped += chunk.length;
              return;
            }
            kept += chunk.length;
            const last = pending[pending.length - 1];
            if (last !== undefined && last.stream === which) last.data += text;
            else pending.push({ stream: which, data: text });
            pendingBytes += chunk.length;
            if (pendingBytes >= EXEC_CHUNK_BYTES) flush();
          },
        },
      )
      .then(async (exit) => {
        clearInterval(flusher);
        flush();
        await writes;
        const result: ExecResult = { exec_id: execId, ...exit, ...answer };
        await this.#events.transaction(async (_trx, emit) => {
          await emit(stream, tenantId, [
            {
              type: 'exec.exited',
              data: { ...exit, output_bytes: kept + dropped, dropped_bytes: dropped },
            },
          ]);
        });
        return result;
      })
      .finally(() => {
        clearInterval(flusher);
        this.#execs.delete(execId);
        this.touch(id);
      });
    // Whoever waits for it sees a failure; nobody waiting must not crash the node.
    done.catch((err: unknown) => this.#log.warn({ err, exec_id: execId }, 'exec failed'));
    return { execId, done };
  }

  /**
   * Starts a program on a terminal of its own in a running instance of this node (the
   * terminals module keeps it), once `admit` (given `cwd` relative to the workspace) let
   * it: it counts the terminal against its quotas and records it.
   */
  async openTerminal(
    principal: Principal,
    id: string,
    request: {
      command: string[];
      cwd: string | undefined;
      env: Record<string, string>;
      cols: number;
      rows: number;
    },
    admit: (instance: { id: string; tenantId: string; cwd: string }) => Promise<void>,
  ): Promise<TerminalProcess> {
    return this.#serially(id, async () => {
      const row = await this.#local(principal.tenant.id, id);
      if (row.state !== 'running') throw stateError(row, 'open a terminal');
      const paths = this.#paths(id);
      const cwd =
        request.cwd === undefined || request.cwd === ''
          ? paths.workspace
          : await resolveInside(paths.workspace, request.cwd, 'body.cwd');
      if (!(await stat(cwd)).isDirectory()) {
        throw fieldError('body.cwd', `"${request.cwd}" is not a directory`);
      }
      await admit({
        id,
        tenantId: row.tenant_id,
        cwd: relative(await realpath(paths.workspace), cwd),
      });
      const terminal = await this.#driver(row.driver).openTerminal(
        { id, tenantId: row.tenant_id, spec: parseSpec(row.spec), ports: portsOf(row) },
        { command: request.command, cwd, env: request.env, cols: request.cols, rows: request.rows },
      );
      this.touch(id);
      return terminal;
    });
  }

  /**
   * A connection to `port` on a running instance's loopback (the ports proxy and share
   * links). An instance on the host's network is reachable only on its own ports: any other
   * would be the node's (its database, its metrics).
   */
  async connectPort(tenantId: string, id: string, port: number): Promise<Socket> {
    const row = await this.#local(tenantId, id);
    if (row.state !== 'running') throw stateError(row, 'be reached on a port');
    const spec = parseSpec(row.spec);
    const ports = portsOf(row);
    if (spec.network === 'host' && !ports.some((p) => p.port === port)) {
      throw fieldError(
        'params.port',
        `instance "${id}" uses the node's network: only its own ports are reachable (${ports.map((p) => p.port).join(', ') || 'it has none'})`,
      );
    }
    this.touch(id);
    return this.#driver(row.driver).connectPort({ id, tenantId: row.tenant_id, spec, ports }, port);
  }

  /** Cancels a running command (SIGKILL); one that ended already is left as it ended. */
  async cancelExec(principal: Principal, id: string, execId: string): Promise<void> {
    await this.#execOf(principal, id, execId);
    this.#execs.get(execId)?.cancel.abort();
  }

  /** Checks a request for a command's events: 404 unless it is the instance's. */
  async #execOf(principal: Principal, id: string, execId: string): Promise<void> {
    await this.#current(principal.tenant.id, id);
    const first = await this.#events.read(principal.tenant.id, execStream(execId), 0, 1);
    const data = first?.events[0]?.data as { instance_id?: string } | undefined;
    if (data?.instance_id !== id) {
      throw new ApiError(
        'WORKSPACE_INSTANCE_NOT_FOUND',
        `Command "${execId}" of instance "${id}" does not exist`,
      );
    }
  }

  async openExecEvents(
    principal: Principal,
    id: string,
    execId: string,
    after: number,
  ): Promise<void> {
    await this.#execOf(principal, id, execId);
    const head = (await this.#events.head(principal.tenant.id, execStream(execId))) ?? 0;
    if (after > head) {
      throw fieldError('querystring.after', `is beyond the newest event of this command (${head})`);
    }
  }

  /** A command's events after `after`, live until it exited (unless `follow` is false). */
  execEvents(
    principal: Principal,
    execId: string,
    after: number,
    options: { signal: AbortSignal; follow: boolean },
  ): AsyncIterable<StreamItem> {
    return this.#events.follow(principal.tenant.id, execStream(execId), after, {
      signal: options.signal,
      isLast: (event) => event.type === 'exec.exited',
      ...(options.follow ? {} : { endWhenCaughtUp: async () => true }),
    });
  }

  /**
   * An instance's files, for the files API and the path service: 404 for another
   * tenant's, 409 for one on another node (its files are there).
   */
  async workspace(principal: Principal, id: string): Promise<WorkspaceRef> {
    const row = await this.#local(principal.tenant.id, id);
    return this.#ref(row);
  }

  #ref(row: InstancesTable): WorkspaceRef {
    return {
      id: row.id,
      tenantId: row.tenant_id,
      driver: row.driver,
      paths: this.#paths(row.id),
    };
  }

  /**
   * The design's resource service: this node's figures, and what the tenant's instances use
   * (measured on this node for its own; null for another node's), newest first.
   */
  async resourceUsage(
    principal: Principal,
    options: { instance?: string | undefined },
  ): Promise<{ node: NodeUsage; instances: UsageItem[]; truncated: boolean }> {
    const { rows, truncated } = await this.#usageRows(principal.tenant.id, options.instance);
    const running = await this.#store.db
      .selectFrom('instances')
      .select(({ fn }) => fn.countAll<number>().as('n'))
      .where('node_id', '=', this.#nodeId)
      .where('state', '=', 'running')
      .executeTakeFirst();
    const instances: UsageItem[] = [];
    for (const row of rows) {
      const view = this.#view(row);
      instances.push({
        instance_id: row.id,
        name: row.name,
        state: row.state,
        node_id: row.node_id,
        resources: view.resources,
        usage: row.node_id === this.#nodeId ? await this.#measure(view) : null,
      });
    }
    return {
      node: nodeUsage(this.#nodeId, Number(running?.n ?? 0), this.#limits.get('process') ?? null),
      instances,
      truncated,
    };
  }

  /** Recommendations for the tenant's instances on this node (over-used, under-used, idle). */
  async optimize(
    principal: Principal,
    options: { instance?: string | undefined; min_running_ms?: number | undefined },
  ): Promise<{
    recommendations: Recommendation[];
    instances_checked: number;
    generated_at: string;
  }> {
    const { rows } = await this.#usageRows(principal.tenant.id, options.instance);
    const recommendations: Recommendation[] = [];
    let checked = 0;
    for (const row of rows) {
      if (row.node_id !== this.#nodeId) continue;
      const view = this.#view(row);
      checked += 1;
      recommendations.push(
        ...recommend(view, await this.#measure(view), {
          minRunningMs: options.min_running_ms ?? 600_000,
        }),
      );
    }
    return {
      recommendations,
      instances_checked: checked,
      generated_at: new Date().toISOString(),
    };
  }

  async #usageRows(
    tenantId: string,
    only: string | undefined,
  ): Promise<{ rows: InstancesTable[]; truncated: boolean }> {
    if (only !== undefined)
      return { rows: [await this.#current(tenantId, only)], truncated: false };
    const rows = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('id', 'desc')
      .limit(USAGE_MAX_INSTANCES + 1)
      .execute();
    return {
      rows: rows.slice(0, USAGE_MAX_INSTANCES),
      truncated: rows.length > USAGE_MAX_INSTANCES,
    };
  }

  async #measure(instance: Instance): Promise<InstanceUsage> {
    const live = instance.state === 'running' || instance.state === 'starting';
    const processes = live
      ? await this.#driver(instance.driver).usage(instance.id)
      : { cpu_seconds: 0, memory_bytes: 0, processes: 0 };
    const disk = await this.#disk.of(this.#paths(instance.id).project_root);
    return usageOf(instance, processes, disk);
  }

  /** Checks a request for the instance's events (404, or `after` beyond the newest). */
  async openEvents(principal: Principal, id: string, after: number): Promise<void> {
    await this.#current(principal.tenant.id, id);
    const head = (await this.#events.head(principal.tenant.id, instanceStream(id))) ?? 0;
    if (after > head) {
      throw fieldError(
        'querystring.after',
        `is beyond the newest event of this instance (${head})`,
      );
    }
  }

  events(
    principal: Principal,
    id: string,
    after: number,
    options: { signal: AbortSignal; follow: boolean },
  ): AsyncIterable<StreamItem> {
    return this.#events.follow(principal.tenant.id, instanceStream(id), after, {
      signal: options.signal,
      ...(options.follow ? {} : { endWhenCaughtUp: async () => true }),
    });
  }

  /**
   * At a node's start: its instances that were starting or running (their processes ended
   * with the node's previous run, `--die-with-parent`) start again from their files; those
   * that were being created or stopped are marked failed or stopped. On SQLite every
   * instance is this node's; in a cluster, those recorded with this node's id
   * (ORCHESTRA_INSTANCE_ID).
   */
  async reconcile(): Promise<void> {
    for (const driver of Object.values(this.#drivers)) {
      const limits = await driver.limits();
      this.#limits.set(driver.name, limits);
      if (limits.note !== null) {
        this.#log.info({ driver: driver.name, limits }, 'instance resource limits');
      }
      // What a killed run of this node left (containers outlive the server).
      await driver
        .recover?.()
        .catch((err: unknown) =>
          this.#log.warn({ err, driver: driver.name }, 'could not clear what the last run left'),
        );
    }
    if (this.#store.kind === 'sqlite') {
      // Embedded storage is one node's: its instances are this node's, whatever id the
      // node had before (the default id changes with the process).
      await this.#store.db
        .updateTable('instances')
        .set({ node_id: this.#nodeId })
        .where('node_id', '!=', this.#nodeId)
        .execute();
    }
    const rows = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('node_id', '=', this.#nodeId)
      .where('state', 'in', ['creating', 'starting', 'running', 'stopping'])
      .execute();
    for (const row of rows) {
      await this.#serially(row.id, async () => {
        try {
          if (row.state === 'creating') {
            await this.#fail(row, 'the node restarted while the instance was being created');
          } else if (row.state === 'stopping') {
            await this.#transition(row, ['stopping'], 'stopped', 'the node restarted', {
              pid: null,
              stopped_at: new Date().toISOString(),
            });
          } else {
            await this.#start(
              row,
              ['starting', 'running'],
              'started again after the node restarted',
            );
          }
        } catch (err) {
          this.#log.warn({ err, instance_id: row.id }, 'instance not reconciled at start');
        }
      });
    }
    this.#sweep.start();
    if (this.#store.kind !== 'sqlite') this.#failover.start();
  }

  /**
   * At the node's shutdown: waits for the operations in progress, then ends the services
   * this node runs without recording it, so that the next start of the node (`reconcile`)
   * starts again what was running.
   */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#sweep.stop();
    await this.#failover.stop();
    this.files.close();
    for (const { cancel } of this.#execs.values()) cancel.abort();
    await this.#queues.drain();
    await Promise.all(
      Object.values(this.#drivers).map((driver) =>
        driver.stopAll(Math.min(this.#stopGraceMs, CLOSE_GRACE_MS)),
      ),
    );
  }

  /** Starts a stopped, failed or lost instance if the tenant's running quotas allow it. */
  async #admitStart(row: InstancesTable, reason: string): Promise<Instance> {
    const starting = await this.quotas.admit(
      row.tenant_id,
      { creating: false, starting: true, resources: parseSpec(row.spec).resources },
      () => this.#transition(row, STARTABLE, 'starting', reason, { exit_code: null }),
    );
    return this.#start(starting, ['starting'], reason, true);
  }

  async #start(
    row: InstancesTable,
    from: InstanceState[],
    reason: string,
    /** The row is `starting` already (`#admitStart`). */
    claimed = false,
  ): Promise<Instance> {
    const starting = claimed
      ? row
      : await this.#transition(row, from, 'starting', reason, { exit_code: null });
    const spec = parseSpec(starting.spec);
    let pid: number | null;
    try {
      ({ pid } = await this.#driver(starting.driver).start(
        { id: starting.id, tenantId: starting.tenant_id, spec, ports: portsOf(starting) },
        (exit) => this.#exited(starting, exit),
      ));
    } catch (err) {
      return this.#fail(starting, `its service could not start: ${messageOf(err)}`);
    }
    const running = await this.#transition(
      starting,
      ['starting'],
      'running',
      spec.startup === null ? reason : `${reason}; its service runs`,
      { pid, started_at: new Date().toISOString(), stopped_at: null },
    ).catch(async (err: unknown) => {
      // Deleted or changed meanwhile: what was started must not run on.
      await this.#driver(starting.driver).stop(starting.id, 0);
      throw err;
    });
    this.files.watch(this.#ref(running));
    this.touch(running.id);
    return this.#view(running);
  }

  /** Kills the commands running in an instance, and tells other modules (it stops, or goes). */
  #cancelExecs(instanceId: string, reason: string): void {
    for (const exec of this.#execs.values()) {
      if (exec.instanceId === instanceId) exec.cancel.abort();
    }
    for (const listener of this.#stoppingListeners) {
      try {
        listener(instanceId, reason);
      } catch (err) {
        this.#log.warn({ err, instance_id: instanceId }, 'stopping listener failed');
      }
    }
  }

  async #stop(row: InstancesTable, reason: string): Promise<Instance> {
    const stopping = await this.#transition(row, STOPPABLE, 'stopping', reason);
    this.#cancelExecs(row.id, `the instance stopped: ${reason}`);
    this.files.unwatch(row.id);
    this.#stopping.add(row.id);
    try {
      await this.#driver(row.driver).stop(row.id, this.#stopGraceMs);
    } finally {
      this.#stopping.delete(row.id);
    }
    return this.#view(
      await this.#transition(stopping, ['stopping'], 'stopped', reason, {
        pid: null,
        stopped_at: new Date().toISOString(),
      }),
    );
  }

  /** The service ended by itself: the instance is stopped (exit 0) or failed. */
  #exited(row: InstancesTable, exit: ServiceExit): void {
    if (this.#stopping.has(row.id) || this.#closing) return;
    const how =
      exit.code !== null ? `exited with code ${exit.code}` : `was killed by ${exit.signal}`;
    void this.#serially(row.id, async () => {
      const current = await this.#store.db
        .selectFrom('instances')
        .selectAll()
        .where('id', '=', row.id)
        .executeTakeFirst();
      if (current === undefined || !STOPPABLE.includes(current.state as InstanceState)) return;
      // Another node runs it now (this one was lost, and it moved): not this service's to end.
      if (current.node_id !== this.#nodeId) return;
      this.files.unwatch(row.id);
      this.#cancelExecs(row.id, `the instance's service ${how}`);
      await this.#transition(
        current,
        STOPPABLE,
        exit.code === 0 ? 'stopped' : 'failed',
        `its service ${how}`,
        { pid: null, exit_code: exit.code, stopped_at: new Date().toISOString() },
      );
    }).catch((err: unknown) => {
      this.#log.warn({ err, instance_id: row.id }, 'instance exit not recorded');
    });
  }

  async #fail(row: InstancesTable, reason: string): Promise<Instance> {
    this.#log.warn({ instance_id: row.id, reason }, 'instance failed');
    const current = await this.#current(row.tenant_id, row.id);
    return this.#view(
      await this.#transition(current, [current.state as InstanceState], 'failed', reason, {
        pid: null,
        stopped_at: new Date().toISOString(),
      }),
    );
  }

  /** Applies a state change if the instance is still in one of `from`, with its events. */
  async #transition(
    row: InstancesTable,
    from: InstanceState[],
    to: InstanceState,
    reason: string,
    changes: Partial<InstancesTable> = {},
  ): Promise<InstancesTable> {
    return this.#events.transaction(async (trx, emit) => {
      const updated = await trx
        .updateTable('instances')
        .set({ ...changes, state: to, state_reason: reason, updated_at: new Date().toISOString() })
        .where('id', '=', row.id)
        .where('state', 'in', from)
        .returningAll()
        .executeTakeFirst();
      if (updated === undefined) {
        throw new ApiError(
          'WORKSPACE_INSTANCE_STATE',
          `Instance "${row.id}" changed state meanwhile`,
        );
      }
      await this.#emit(emit, updated, false);
      return updated;
    });
  }

  async #emit(emit: Emit, row: InstancesTable, isNew: boolean): Promise<void> {
    const event = {
      type: `instance.${row.state}`,
      data: {
        instance_id: row.id,
        state: row.state,
        reason: row.state_reason,
        node_id: row.node_id,
      },
    };
    await emit(instanceStream(row.id), row.tenant_id, [event], { isNew });
    await emit(instancesStream(row.tenant_id), row.tenant_id, [event]);
  }

  async #writeLabels(
    trx: Transaction<Database>,
    row: Pick<InstancesTable, 'id' | 'tenant_id'>,
    labels: Record<string, string>,
  ): Promise<void> {
    const entries = Object.entries(labels);
    if (entries.length === 0) return;
    await trx
      .insertInto('instance_labels')
      .values(
        entries.map(([key, value]) => ({
          instance_id: row.id,
          tenant_id: row.tenant_id,
          key,
          value,
        })),
      )
      .execute();
  }

  async #current(tenantId: string, id: string): Promise<InstancesTable> {
    const row = await this.#store.db
      .selectFrom('instances')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw instanceNotFound(id);
    return row;
  }

  /** The instance, which must live on this node to be started, stopped or deleted here. */
  async #local(tenantId: string, id: string): Promise<InstancesTable> {
    const row = await this.#current(tenantId, id);
    if (row.node_id !== this.#nodeId) {
      throw new ApiError(
        'WORKSPACE_INSTANCE_STATE',
        `Instance "${id}" lives on node ${row.node_id}; send this request to that node`,
        { details: { node_id: row.node_id } },
      );
    }
    return row;
  }

  /** Runs `work` after the instance's operation in progress, if any. */
  #serially<T>(id: string, work: () => Promise<T>): Promise<T> {
    return this.#queues.run(id, work);
  }
}

function stateError(row: InstancesTable, what: string): ApiError {
  return new ApiError(
    'WORKSPACE_INSTANCE_STATE',
    `Instance "${row.id}" is ${row.state}; it cannot ${what} now`,
    { details: { state: row.state } },
  );
}

/** 1500 → "1.5s", 90000 → "1m30s", 3600000 → "1h". */
export function describeMs(ms: number): string {
  if (ms < 60_000 && ms % 1000 !== 0) return `${ms / 1000}s`;
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.length === 0 ? `${ms}ms` : parts.join('');
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
