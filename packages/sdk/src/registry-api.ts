import type { Orchestra } from './client.ts';
import { resumingWatch } from './config-api.ts';
import type { TemplateStrategy } from './types.ts';

export interface Lease {
  id: string;
  ttl_seconds: number;
  remaining_ms: number;
}

export interface HealthCheckSpec {
  type: 'http' | 'tcp';
  /** HTTP only; default `/`. 2xx and 3xx pass. */
  path?: string;
  /** Default 10,000. */
  interval_ms?: number;
  /** Default 2,000; less than the interval. */
  timeout_ms?: number;
  /** Consecutive passes to become passing; default 1. */
  healthy_threshold?: number;
  /** Consecutive failures to become failing; default 2. */
  unhealthy_threshold?: number;
}

export interface InstanceMetadata {
  version?: string;
  zone?: string;
  weight?: number;
  labels?: Record<string, string>;
}

export interface InstanceLoad {
  connections?: number;
  cpu?: number;
  memory?: number;
  latency_ms?: number;
}

export interface ServiceInstance {
  id: string;
  service: string;
  address: string;
  port: number;
  metadata: InstanceMetadata;
  health_check: (Required<Omit<HealthCheckSpec, 'path'>> & { path?: string }) | null;
  lease: string;
  registered_at: string;
  status: 'passing' | 'failing' | 'unknown';
  checked_at: string | null;
  last_error: string | null;
  check_latency_ms: number | null;
  load: InstanceLoad | null;
  revision: number;
}

export interface RegisterInstanceInput {
  address: string;
  port: number;
  metadata?: InstanceMetadata;
  health_check?: HealthCheckSpec;
  /** Bind to this lease; without it the server grants one of `ttl_seconds` (default 30). */
  lease?: string;
  ttl_seconds?: number;
}

/** The strategies of docs/load-balancing.md, shared with task dispatch. */
export type ResolveStrategy = TemplateStrategy;

export type ServiceEvent =
  | { type: 'put'; instance: ServiceInstance; revision: number }
  | { type: 'delete'; service: string; id: string; revision: number }
  | { type: 'resync'; revision: number; instances: ServiceInstance[] };

const svc = (name: string) => `/v1/services/${encodeURIComponent(name)}`;
const inst = (name: string, id: string) => `${svc(name)}/instances/${encodeURIComponent(id)}`;

/** `Orchestra.leases`. */
export class LeasesApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  grant(ttlSeconds: number): Promise<Lease> {
    return this.#client.request('POST', '/v1/leases', { body: { ttl_seconds: ttlSeconds } });
  }
  /** Starts the TTL over; rejects with `LEASE_NOT_FOUND` once the lease has ended. */
  keepAlive(id: string): Promise<Lease> {
    return this.#client.request('POST', `/v1/leases/${encodeURIComponent(id)}/keepalive`);
  }
  get(id: string): Promise<Lease> {
    return this.#client.request('GET', `/v1/leases/${encodeURIComponent(id)}`);
  }
  async revoke(id: string): Promise<void> {
    await this.#client.request('DELETE', `/v1/leases/${encodeURIComponent(id)}`);
  }
}

/** `Orchestra.services`: the service registry's REST API. */
export class ServicesApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  /** Registers or replaces an instance; keep its `lease` alive or it goes. */
  register(service: string, id: string, input: RegisterInstanceInput): Promise<ServiceInstance> {
    return this.#client.request('PUT', inst(service, id), { body: input });
  }
  get(service: string, id: string): Promise<ServiceInstance> {
    return this.#client.request('GET', inst(service, id));
  }
  async deregister(service: string, id: string): Promise<void> {
    await this.#client.request('DELETE', inst(service, id));
  }
  reportLoad(service: string, id: string, load: InstanceLoad): Promise<ServiceInstance> {
    return this.#client.request('PATCH', inst(service, id), { body: { load } });
  }
  async list(): Promise<{ name: string; instances: number; passing: number }[]> {
    return (
      await this.#client.request<{ items: { name: string; instances: number; passing: number }[] }>(
        'GET',
        '/v1/services',
      )
    ).items;
  }
  /**
   * Passing instances, or every one with `all`. The server pages a large answer (by its
   * response byte budget); this follows the pages, and `revision` is the first page's.
   */
  async instances(
    service: string,
    options: { all?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ name: string; revision: number; instances: ServiceInstance[] }> {
    type Page = {
      name: string;
      revision: number;
      instances: ServiceInstance[];
      next_cursor?: string | null;
    };
    const first = await this.#client.request<Page>('GET', svc(service), {
      query: { all: options.all },
      signal: options.signal,
    });
    const instances = [...first.instances];
    for (let cursor = first.next_cursor; typeof cursor === 'string'; ) {
      const page: Page = await this.#client.request<Page>('GET', svc(service), {
        query: { all: options.all, cursor },
        signal: options.signal,
      });
      instances.push(...page.instances);
      cursor = page.next_cursor;
    }
    return { name: first.name, revision: first.revision, instances };
  }
  /** One passing instance, picked by the server; `key` is required for `consistent_hash`. */
  resolve(
    service: string,
    options: { strategy?: ResolveStrategy; key?: string } = {},
  ): Promise<ServiceInstance> {
    return this.#client.request('GET', `${svc(service)}/resolve`, { query: { ...options } });
  }
  /**
   * Membership changes as they happen, resumed after a dropped connection; `resync` with
   * every instance when the server no longer has the revision to resume from.
   */
  watch(
    service: string,
    options: {
      afterRevision?: number;
      signal?: AbortSignal;
      maxReconnects?: number;
      onConnect?: () => void;
    } = {},
  ): AsyncIterable<ServiceEvent> {
    return resumingWatch<ServiceEvent>(
      this.#client,
      `${svc(service)}/watch`,
      options,
      {},
      async () =>
        (
          await this.instances(service, {
            all: true,
            ...(options.signal ? { signal: options.signal } : {}),
          })
        ).revision,
    );
  }
}
