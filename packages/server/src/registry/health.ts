import { connect } from 'node:net';
import type { Logger } from 'pino';
import { updateEwma } from '../balancing/strategies.ts';
import type { KvEntry, KvStore } from '../kv/index.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { NodeRegistry } from './nodes.ts';
import type { HealthCheck, HealthStatus, Instance } from './registry-service.ts';

const LEADER_KEY = 'cluster/health-checker';
/** How often the leader looks for instances (and a follower for a vacant leadership). */
const SCAN_MS = 1_000;
/** Checks running at once, over every tenant. */
const MAX_PARALLEL_CHECKS = 64;
/** A passing instance's latency average is written back at most this often. */
const LATENCY_WRITE_MS = 60_000;
const PAGE = 500;

interface Tracked {
  tenantId: string;
  key: string;
  dueAt: number;
  passes: number;
  failures: number;
  latencyMs: number | undefined;
  latencyWrittenAt: number;
  running: boolean;
  /** The check spec it was scheduled with; a re-registration with another restarts it. */
  spec: string;
}

/** Runs one check: resolves with its duration, rejects with why it failed. */
export async function runCheck(address: string, port: number, check: HealthCheck): Promise<number> {
  const started = performance.now();
  if (check.type === 'tcp') {
    await new Promise<void>((resolve, reject) => {
      const socket = connect({ host: address, port, timeout: check.timeout_ms });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('timeout', () => {
        socket.destroy();
        reject(new Error(`no TCP connection within ${check.timeout_ms} ms`));
      });
      socket.once('error', (err) => reject(new Error(`TCP connect failed: ${err.message}`)));
    });
  } else {
    const host = address.includes(':') ? `[${address}]` : address;
    const response = await fetch(`http://${host}:${port}${check.path ?? '/'}`, {
      redirect: 'manual',
      signal: AbortSignal.timeout(check.timeout_ms),
    }).catch((err: unknown) => {
      const e = err as Error;
      throw new Error(
        e.name === 'TimeoutError'
          ? `no HTTP answer within ${check.timeout_ms} ms`
          : `HTTP request failed: ${(e.cause as Error | undefined)?.message ?? e.message}`,
      );
    });
    await response.body?.cancel();
    if (response.status >= 400) throw new Error(`HTTP ${response.status}`);
  }
  return performance.now() - started;
}

/**
 * The registry's health checks. One node of the cluster runs them: the one holding the
 * `cluster/health-checker` key, bound to its node lease, so that when that node dies the
 * key goes with its lease and another node takes over within a TTL. Statuses are written
 * back to the instance records with a compare on their revision, so that a check never
 * overwrites a newer registration.
 */
export class HealthChecker {
  readonly #kv: KvStore;
  readonly #nodes: NodeRegistry;
  readonly #tenants: () => Promise<string[]>;
  readonly #log: Logger;
  readonly #tracked = new Map<string, Tracked>();
  readonly #job: Job;
  #active = 0;

  constructor(deps: {
    kv: KvStore;
    nodes: NodeRegistry;
    tenants: () => Promise<string[]>;
    log: Logger;
    jobs: Jobs;
  }) {
    this.#kv = deps.kv;
    this.#nodes = deps.nodes;
    this.#tenants = deps.tenants;
    this.#log = deps.log;
    this.#job = deps.jobs.job({
      name: 'health-checks',
      intervalMs: SCAN_MS,
      run: () => this.#tick(),
      leader: {
        key: LEADER_KEY,
        claim: (key) => this.#nodes.claim(key),
        role: 'runs the registry’s health checks',
        onLost: () => this.#tracked.clear(),
      },
    });
  }

  get leader(): boolean {
    return this.#job.leader;
  }

  start(): void {
    this.#job.start();
  }

  async stop(): Promise<void> {
    await this.#job.stop();
  }

  /** One scan, as the leader: schedules the checks of every instance that has one. */
  async #tick(): Promise<void> {
    const seen = new Set<string>();
    for (const tenantId of await this.#tenants()) {
      let after: string | undefined;
      for (;;) {
        const page = await this.#kv.range(tenantId, {
          prefix: 'r/',
          limit: PAGE,
          ...(after !== undefined ? { after } : {}),
        });
        for (const entry of page.entries) this.#schedule(tenantId, entry, seen);
        if (!page.more) break;
        after = page.entries[page.entries.length - 1]?.key;
      }
    }
    for (const id of this.#tracked.keys()) if (!seen.has(id)) this.#tracked.delete(id);
  }

  #schedule(tenantId: string, entry: KvEntry, seen: Set<string>): void {
    const instance = JSON.parse(entry.value) as Omit<Instance, 'revision'>;
    const check = instance.health_check;
    if (check === null) return;
    const id = `${tenantId}\u0000${entry.key}`;
    seen.add(id);
    const spec = JSON.stringify([check, instance.address, instance.port, instance.registered_at]);
    let tracked = this.#tracked.get(id);
    if (tracked === undefined || tracked.spec !== spec) {
      tracked = {
        tenantId,
        key: entry.key,
        dueAt: 0,
        passes: 0,
        failures: 0,
        latencyMs: instance.check_latency_ms ?? undefined,
        latencyWrittenAt: Date.now(),
        running: false,
        spec,
      };
      this.#tracked.set(id, tracked);
    }
    const now = Date.now();
    if (tracked.running || tracked.dueAt > now || this.#active >= MAX_PARALLEL_CHECKS) return;
    tracked.running = true;
    tracked.dueAt = now + check.interval_ms;
    this.#active++;
    void this.#check(tracked, instance, check).finally(() => {
      tracked.running = false;
      this.#active--;
    });
  }

  async #check(
    tracked: Tracked,
    instance: Omit<Instance, 'revision'>,
    check: HealthCheck,
  ): Promise<void> {
    let error: string | null = null;
    try {
      const ms = await runCheck(instance.address, instance.port, check);
      tracked.latencyMs = updateEwma(tracked.latencyMs, ms);
      tracked.passes++;
      tracked.failures = 0;
    } catch (err) {
      error = (err as Error).message;
      tracked.failures++;
      tracked.passes = 0;
    }
    let status: HealthStatus = instance.status;
    if (status !== 'passing' && tracked.passes >= check.healthy_threshold) status = 'passing';
    if (status !== 'failing' && tracked.failures >= check.unhealthy_threshold) status = 'failing';
    const latencyDue =
      status === 'passing' && Date.now() - tracked.latencyWrittenAt >= LATENCY_WRITE_MS;
    if (status === instance.status && !latencyDue) return;
    try {
      await this.#write(tracked, status, error);
    } catch (err) {
      this.#log.warn({ err, key: tracked.key }, 'health checks: could not record a status');
    }
  }

  /** Writes the status onto the current record, unless it changed meanwhile (then the next check decides). */
  async #write(tracked: Tracked, status: HealthStatus, error: string | null): Promise<void> {
    const entry = await this.#kv.get(tracked.tenantId, tracked.key);
    if (entry === undefined) return;
    const record = JSON.parse(entry.value) as Omit<Instance, 'revision'>;
    if (
      JSON.stringify([record.health_check, record.address, record.port, record.registered_at]) !==
      tracked.spec
    )
      return;
    const changed = record.status !== status;
    const next: Omit<Instance, 'revision'> = {
      ...record,
      status,
      checked_at: changed ? new Date().toISOString() : record.checked_at,
      last_error: status === 'passing' ? null : (error ?? record.last_error),
      check_latency_ms:
        tracked.latencyMs !== undefined ? Math.round(tracked.latencyMs * 100) / 100 : null,
    };
    const result = await this.#kv.txn(tracked.tenantId, {
      compare: [{ key: entry.key, modRevision: entry.modRevision }],
      ops: [
        {
          type: 'put',
          key: entry.key,
          value: JSON.stringify(next),
          ...(entry.lease !== undefined ? { lease: entry.lease } : {}),
        },
      ],
    });
    if (result.succeeded) {
      tracked.latencyWrittenAt = Date.now();
      if (changed)
        this.#log.info(
          { service: record.service, instance: record.id, status, error },
          'service instance health changed',
        );
    }
  }
}
