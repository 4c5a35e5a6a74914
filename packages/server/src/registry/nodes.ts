import type { Logger } from 'pino';
import type { KvStore } from '../kv/index.ts';
import type { Job, Jobs } from '../platform/jobs.ts';

/** What a node says about itself in the registry. */
export interface NodeInfo {
  id: string;
  url: string;
  version: string;
  started_at: string;
  store: string;
  kv: string;
  load: {
    rss_bytes: number;
    event_loop_delay_ms: number;
    agents: number;
    realtime_connections: number;
    cpu?: number;
    memory?: number;
    instances?: number;
  };
  instance_drivers?: string[];
}

export interface ClusterNode extends NodeInfo {
  /** When the node last rewrote its entry (every 30 s; it renews its lease more often). */
  seen_at: string;
  /** The lease that keeps the entry: it goes when the node stops renewing it. */
  lease: string;
}

const nodeKey = (id: string) => `nodes/${id}`;
const NODES = 'nodes/';
/** A node that stops renewing disappears after this; it renews three times per TTL. */
const NODE_TTL_MS = 10_000;
/** Its entry (with its load) is rewritten this often; each rewrite is a revision of the tenant. */
const ENTRY_REFRESH_MS = 30_000;

/**
 * This node's entry in the registry of the system tenant, bound to a lease it keeps alive:
 * `GET /v1/cluster/nodes` lists every node whose lease holds, and leader claims (such as
 * the health checker's) are bound to the same lease, so they end with the node.
 */
export class NodeRegistry {
  readonly #kv: KvStore;
  readonly #tenantId: string;
  readonly #info: () => Omit<NodeInfo, 'id'>;
  readonly #id: string;
  readonly #log: Logger;
  #lease: string | undefined;
  #writtenAt = 0;
  readonly #job: Job;
  #stopped = false;

  constructor(deps: {
    kv: KvStore;
    systemTenantId: string;
    nodeId: string;
    info: () => Omit<NodeInfo, 'id'>;
    log: Logger;
    jobs: Jobs;
  }) {
    this.#kv = deps.kv;
    this.#tenantId = deps.systemTenantId;
    this.#id = deps.nodeId;
    this.#info = deps.info;
    this.#log = deps.log;
    this.#job = deps.jobs.job({
      name: 'node-lease',
      intervalMs: NODE_TTL_MS / 3,
      run: () => this.#refresh(),
      logFailure: (err) => this.#log.warn({ err }, 'could not renew this node’s entry'),
    });
  }

  get id(): string {
    return this.#id;
  }

  /** The node's lease while it holds one. */
  get lease(): string | undefined {
    return this.#lease;
  }

  get systemTenantId(): string {
    return this.#tenantId;
  }

  /** Registers the node, then renews every third of the TTL; a failure is retried then. */
  async start(): Promise<void> {
    await this.#refresh().catch((err: unknown) =>
      this.#log.warn({ err }, 'could not register this node; retrying'),
    );
    this.#job.start();
  }

  async #refresh(): Promise<void> {
    if (this.#stopped) return;
    if (
      this.#lease === undefined ||
      (await this.#kv.keepAlive(this.#tenantId, this.#lease)) === undefined
    ) {
      // First start, or the lease ran out (the node was paused or cut off): a new one.
      this.#lease = (await this.#kv.grantLease(this.#tenantId, NODE_TTL_MS)).id;
      this.#writtenAt = 0;
    }
    if (Date.now() - this.#writtenAt < ENTRY_REFRESH_MS) return;
    const entry: Omit<ClusterNode, 'lease'> = {
      id: this.#id,
      ...this.#info(),
      seen_at: new Date().toISOString(),
    };
    await this.#kv.txn(this.#tenantId, {
      compare: [],
      ops: [
        { type: 'put', key: nodeKey(this.#id), value: JSON.stringify(entry), lease: this.#lease },
      ],
    });
    this.#writtenAt = Date.now();
  }

  /**
   * True while this node holds the leader key `key` of the system tenant, taking it when it
   * is free. The key is bound to the node's lease, so a dead leader's claim ends with it.
   */
  async claim(key: string): Promise<boolean> {
    const lease = this.#lease;
    if (lease === undefined) return false;
    const current = await this.#kv.get(this.#tenantId, key);
    if (current !== undefined) return current.value === this.#id && current.lease === lease;
    const result = await this.#kv.txn(this.#tenantId, {
      compare: [{ key, version: 0 }],
      ops: [{ type: 'put', key, value: this.#id, lease }],
    });
    return result.succeeded;
  }

  async nodes(): Promise<ClusterNode[]> {
    const page = await this.#kv.range(this.#tenantId, { prefix: NODES, limit: 1000 });
    return page.entries.map((e) => ({
      ...(JSON.parse(e.value) as Omit<ClusterNode, 'lease'>),
      lease: e.lease ?? '',
    }));
  }

  /** Leaves the registry at once (revokes the lease, which also ends this node's claims). */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#job.stop();
    if (this.#lease !== undefined) {
      await this.#kv.revokeLease(this.#tenantId, this.#lease).catch(() => {});
      this.#lease = undefined;
    }
  }
}
