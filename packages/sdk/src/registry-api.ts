import type {
  HealthCheck,
  InstanceLoad,
  Lease,
  RegisterInstance,
  ServiceInstance,
  ServiceInstancePage,
  ServiceList,
  ServiceSummary,
  ServiceWatchEvent,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { resumingWatch } from './config-api.ts';
import type { TemplateStrategy } from './types.ts';

// The registry's wire types are @orchestra/protocol's (decision 0014).

export type {
  InstanceLoad,
  InstanceMetadata,
  Lease,
  ServiceInstance,
  ServiceSummary,
} from '@orchestra/protocol';

/** The fields of a health check the server defaults when a registration leaves them out. */
type DefaultedCheckFields =
  | 'interval_ms'
  | 'timeout_ms'
  | 'healthy_threshold'
  | 'unhealthy_threshold';

/**
 * How the registry is to check an instance: what `health_check` of a registration takes.
 * The instance then carries it with the defaults filled in (`ServiceInstance.health_check`).
 */
export type HealthCheckSpec = Omit<HealthCheck, DefaultedCheckFields> &
  Partial<Pick<HealthCheck, DefaultedCheckFields>>;

/** What `services.register` takes. */
export type RegisterInstanceInput = Omit<RegisterInstance, 'health_check'> & {
  health_check?: HealthCheckSpec;
};

/** The strategies of docs/load-balancing.md, shared with task dispatch. */
export type ResolveStrategy = TemplateStrategy;

/** A change of a service's membership, as `services.watch` yields it. */
export type ServiceEvent = ServiceWatchEvent;

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
  async list(): Promise<ServiceSummary[]> {
    return (await this.#client.request<ServiceList>('GET', '/v1/services')).items;
  }
  /**
   * Passing instances, or every one with `all`. The server pages a large answer (by its
   * response byte budget); this follows the pages, and `revision` is the first page's.
   */
  async instances(
    service: string,
    options: { all?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ name: string; revision: number; instances: ServiceInstance[] }> {
    const first = await this.#client.request<ServiceInstancePage>('GET', svc(service), {
      query: { all: options.all },
      signal: options.signal,
    });
    const instances = [...first.instances];
    for (let cursor = first.next_cursor; typeof cursor === 'string'; ) {
      const page: ServiceInstancePage = await this.#client.request<ServiceInstancePage>(
        'GET',
        svc(service),
        {
          query: { all: options.all, cursor },
          signal: options.signal,
        },
      );
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
