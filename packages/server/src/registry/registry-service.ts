import type {
  HealthCheck,
  InstanceLoad,
  ServiceInstance,
  ServiceWatchEvent,
} from '@orchestra/protocol';
import {
  type Balancer,
  type Candidate,
  createBalancer,
  type StrategyName,
} from '../balancing/strategies.ts';
import type { RelayRoute } from '../kv/index.ts';
import {
  type KvChangeBatch,
  KvCompactedError,
  type KvEntry,
  KvLeaseNotFoundError,
  type KvStore,
} from '../kv/index.ts';
import { ApiError } from '../platform/errors.ts';
import { serviceStream } from '../realtime/index.ts';

// What the registry answers is the wire contract's (@orchestra/protocol), under the names
// this module has always used.
export type { HealthCheck, InstanceLoad };
/** `passing` without a health check; otherwise what the checks say, `unknown` before the first verdict. */
export type HealthStatus = ServiceInstance['status'];
export type Instance = ServiceInstance;

export interface Registration {
  id: string;
  address: string;
  port: number;
  metadata?: Instance['metadata'] | undefined;
  health_check?: HealthCheck | null | undefined;
  lease?: string | undefined;
  ttl_seconds?: number | undefined;
}

/** A change of a service's membership, as a watch sends it. */
export type ServiceEvent = ServiceWatchEvent;

export const instancePrefix = (service: string) => `r/${service}/`;
export const instanceKey = (service: string, id: string) => `r/${service}/${id}`;
const ALL_INSTANCES = 'r/';
const PAGE = 500;
/** Balancers per tenant, service and strategy kept in memory (round-robin positions). */
const MAX_BALANCERS = 10_000;

export function isHealthy(instance: Instance): boolean {
  return instance.status === 'passing';
}

function instanceOf(entry: KvEntry): Instance {
  return {
    ...(JSON.parse(entry.value) as Omit<Instance, 'revision'>),
    revision: entry.modRevision,
  };
}

function recordOf(instance: Instance): string {
  const { revision: _revision, ...record } = instance;
  return JSON.stringify(record);
}

const serviceNotFound = (service: string) =>
  new ApiError('SERVICE_NOT_FOUND', `No instance of ${service} is registered`, {
    details: { service },
  });

/**
 * The service registry: instances of named services, each bound to a lease so that it
 * goes away when its owner stops keeping the lease alive, health-checked by the registry
 * (see health.ts), resolved to one instance through the shared strategy module, and
 * watched like config keys.
 */
export class RegistryService {
  readonly kv: KvStore;
  readonly #balancers = new Map<string, Balancer>();
  readonly #defaultTtlSeconds: number;

  constructor(deps: { kv: KvStore; defaultTtlSeconds: number }) {
    this.kv = deps.kv;
    this.#defaultTtlSeconds = deps.defaultTtlSeconds;
  }

  /** Registers (or re-registers) an instance; without `lease`, a new one is granted. */
  async register(
    tenantId: string,
    service: string,
    registration: Registration,
  ): Promise<{ instance: Instance; created: boolean; lease_ttl_seconds: number }> {
    let leaseId = registration.lease;
    let ttlSeconds: number;
    if (leaseId === undefined) {
      const lease = await this.kv.grantLease(
        tenantId,
        (registration.ttl_seconds ?? this.#defaultTtlSeconds) * 1000,
      );
      leaseId = lease.id;
      ttlSeconds = Math.round(lease.ttlMs / 1000);
    } else {
      const lease = await this.kv.lease(tenantId, leaseId);
      if (lease === undefined) throw leaseNotFound(leaseId);
      ttlSeconds = Math.round(lease.ttlMs / 1000);
    }
    const key = instanceKey(service, registration.id);
    const existing = await this.kv.get(tenantId, key);
    const instance: Instance = {
      id: registration.id,
      service,
      address: registration.address,
      port: registration.port,
      metadata: registration.metadata ?? {},
      health_check: registration.health_check ?? null,
      lease: leaseId,
      registered_at: new Date().toISOString(),
      status: registration.health_check ? 'unknown' : 'passing',
      checked_at: null,
      last_error: null,
      check_latency_ms: null,
      load: null,
      revision: 0,
    };
    try {
      const result = await this.kv.txn(tenantId, {
        compare: [],
        ops: [{ type: 'put', key, value: recordOf(instance), lease: leaseId }],
      });
      instance.revision = result.revision;
    } catch (err) {
      if (err instanceof KvLeaseNotFoundError) throw leaseNotFound(err.leaseId);
      throw err;
    }
    return { instance, created: existing === undefined, lease_ttl_seconds: ttlSeconds };
  }

  async deregister(tenantId: string, service: string, id: string): Promise<void> {
    const key = instanceKey(service, id);
    if ((await this.kv.get(tenantId, key)) === undefined) throw instanceNotFound(service, id);
    await this.kv.txn(tenantId, { compare: [], ops: [{ type: 'delete', key }] });
  }

  async instance(tenantId: string, service: string, id: string): Promise<Instance> {
    const entry = await this.kv.get(tenantId, instanceKey(service, id));
    if (entry === undefined) throw instanceNotFound(service, id);
    return instanceOf(entry);
  }

  /** Every instance of a service (at most 10,000), in id order. */
  async instances(
    tenantId: string,
    service: string,
  ): Promise<{ instances: Instance[]; revision: number }> {
    return this.#all(tenantId, instancePrefix(service));
  }

  async #all(
    tenantId: string,
    prefix: string,
    revision?: number,
  ): Promise<{ instances: Instance[]; revision: number }> {
    const instances: Instance[] = [];
    let after: string | undefined;
    let at = revision;
    for (let pages = 0; pages < 20; pages++) {
      const page = await this.kv.range(tenantId, {
        prefix,
        limit: PAGE,
        ...(after !== undefined ? { after } : {}),
        ...(at !== undefined ? { revision: at } : {}),
      });
      at = page.revision;
      instances.push(...page.entries.map(instanceOf));
      if (!page.more) break;
      after = page.entries[page.entries.length - 1]?.key;
    }
    return { instances, revision: at ?? 0 };
  }

  /** Services with their instance counts, by name. */
  async services(
    tenantId: string,
  ): Promise<{ name: string; instances: number; passing: number }[]> {
    const { instances } = await this.#all(tenantId, ALL_INSTANCES);
    const byName = new Map<string, { name: string; instances: number; passing: number }>();
    for (const instance of instances) {
      const entry = byName.get(instance.service) ?? {
        name: instance.service,
        instances: 0,
        passing: 0,
      };
      entry.instances++;
      if (isHealthy(instance)) entry.passing++;
      byName.set(instance.service, entry);
    }
    return [...byName.values()];
  }

  /** Records what an instance reports about its own load (for the `least_connections`, `latency` and `resource` strategies). */
  async reportLoad(
    tenantId: string,
    service: string,
    id: string,
    load: InstanceLoad,
  ): Promise<Instance> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await this.kv.get(tenantId, instanceKey(service, id));
      if (entry === undefined) throw instanceNotFound(service, id);
      const instance = { ...instanceOf(entry), load };
      const result = await this.kv.txn(tenantId, {
        compare: [{ key: entry.key, modRevision: entry.modRevision }],
        ops: [
          {
            type: 'put',
            key: entry.key,
            value: recordOf(instance),
            ...(entry.lease ? { lease: entry.lease } : {}),
          },
        ],
      });
      if (result.succeeded) return { ...instance, revision: result.revision };
    }
    throw new ApiError('WRITE_CONFLICT', `Instance ${id} of ${service} kept changing; try again`);
  }

  /** Picks one healthy instance with `strategy`. */
  async resolve(
    tenantId: string,
    service: string,
    strategy: StrategyName,
    key: string | undefined,
  ): Promise<Instance> {
    const { instances } = await this.instances(tenantId, service);
    if (instances.length === 0) throw serviceNotFound(service);
    const healthy = instances.filter(isHealthy);
    const byId = new Map(healthy.map((i) => [i.id, i]));
    const candidates: Candidate[] = healthy.map((i) => ({
      id: i.id,
      weight: i.metadata.weight ?? 1,
      inFlight: i.load?.connections ?? 0,
      maxConcurrency: Number.POSITIVE_INFINITY,
      latencyEwmaMs: i.load?.latency_ms ?? i.check_latency_ms ?? undefined,
      load:
        i.load?.cpu !== undefined || i.load?.memory !== undefined
          ? { cpu: i.load?.cpu ?? 0, memory: i.load?.memory ?? 0 }
          : undefined,
    }));
    const picked = this.#balancer(tenantId, service, strategy).pick(candidates, { key });
    const instance = picked && byId.get(picked.id);
    if (instance === undefined)
      throw new ApiError(
        'NO_HEALTHY_INSTANCE',
        `No instance of ${service} passes its health check`,
        {
          details: { service, instances: instances.length },
          headers: { 'retry-after': '1' },
        },
      );
    return instance;
  }

  #balancer(tenantId: string, service: string, strategy: StrategyName): Balancer {
    const id = `${tenantId}\u0000${service}\u0000${strategy}`;
    let balancer = this.#balancers.get(id);
    if (balancer === undefined) {
      if (this.#balancers.size >= MAX_BALANCERS) this.#balancers.clear();
      balancer = createBalancer(strategy);
      this.#balancers.set(id, balancer);
    }
    return balancer;
  }

  /**
   * Membership changes of one service (or all with `service` undefined) after
   * `afterRevision`: a `put` carries the whole instance (registered, re-registered, health
   * or load changed), a `delete` its id. When that revision is gone: a `resync` first.
   */
  async *watch(
    tenantId: string,
    service: string | undefined,
    afterRevision: number | undefined,
    signal: AbortSignal,
  ): AsyncIterable<ServiceEvent> {
    const prefix = service === undefined ? ALL_INSTANCES : instancePrefix(service);
    let from =
      afterRevision === undefined ? (await this.kv.revision(tenantId)) + 1 : afterRevision + 1;
    for (;;) {
      try {
        for await (const batch of this.kv.watch(tenantId, prefix, from, signal)) {
          yield* serviceEventsOf(batch);
          from = batch.revision + 1;
        }
        return;
      } catch (err) {
        if (!(err instanceof KvCompactedError)) throw err;
      }
      const snapshot = await this.#all(tenantId, prefix);
      yield { type: 'resync', revision: snapshot.revision, instances: snapshot.instances };
      from = snapshot.revision + 1;
    }
  }
}

/** The membership changes in a batch of KV changes (other keys are skipped). */
export function* serviceEventsOf(
  batch: KvChangeBatch,
): Iterable<Exclude<ServiceEvent, { type: 'resync' }>> {
  for (const change of batch.changes) {
    const [, name, id] = /^r\/([^/]+)\/(.+)$/.exec(change.key) ?? [];
    if (name === undefined || id === undefined) continue;
    if (change.type === 'put') {
      const instance = JSON.parse(change.value ?? '{}') as Omit<Instance, 'revision'>;
      yield {
        type: 'put',
        instance: { ...instance, revision: batch.revision },
        revision: batch.revision,
      };
    } else {
      yield { type: 'delete', service: name, id, revision: batch.revision };
    }
  }
}

/** Relays membership changes to the realtime topics `services.<name>`. */
export const serviceRelayRoute: RelayRoute = {
  events: (tenantId, batch) =>
    [...serviceEventsOf(batch)].map((e) => ({
      stream: serviceStream(tenantId, e.type === 'put' ? e.instance.service : e.service),
      event: { type: e.type, data: e },
    })),
  streamPrefix: (tenantId) => serviceStream(tenantId, ''),
};

export function leaseNotFound(leaseId: string): ApiError {
  return new ApiError('LEASE_NOT_FOUND', `Lease ${leaseId} does not exist or has expired`, {
    details: { lease: leaseId },
  });
}

function instanceNotFound(service: string, id: string): ApiError {
  return new ApiError('INSTANCE_NOT_FOUND', `No instance ${id} of ${service}`, {
    details: { service, id },
  });
}
