import { Backoff, sleep } from './backoff.ts';
import { Orchestra, type OrchestraOptions } from './client.ts';
import { OrchestraError } from './errors.ts';
import type {
  RegisterInstanceInput,
  ResolveStrategy,
  ServiceEvent,
  ServiceInstance,
} from './registry-api.ts';

export interface ServiceClientOptions
  extends Pick<
    OrchestraOptions,
    'url' | 'apiKey' | 'reconnect' | 'onStatus' | 'fetch' | 'headers' | 'timeoutMs'
  > {
  /**
   * Called for errors the client keeps going after: a failed keep-alive or re-registration,
   * a lost watch, an error thrown by a live list's listener or by `onRegisteredAgain`.
   */
  onError?: (error: unknown) => void;
}

export interface RegisterOptions extends Omit<RegisterInstanceInput, 'lease' | 'ttl_seconds'> {
  service: string;
  id: string;
  /** The lease's TTL; default 15. The client renews it every third of that. */
  ttlSeconds?: number;
  /**
   * Called when the client registered the instance again because its lease was gone
   * (revoked, or run out while keep-alives failed, across a server outage say), with the
   * new registration and the lease that was lost. Not called after `stop`.
   */
  onRegisteredAgain?: (instance: ServiceInstance, lostLease: string) => void;
}

/**
 * A registration kept alive by the client until `stop`. When a keep-alive finds the lease
 * gone, the client registers the instance again on a new lease (see `onRegisteredAgain`);
 * an instance deregistered through the API while its lease lives is left deregistered.
 */
export class Registration {
  readonly service: string;
  readonly id: string;
  #lease: string;
  readonly #client: ServiceClient;
  readonly #options: RegisterOptions;
  readonly #stop = new AbortController();
  readonly #loop: Promise<void>;

  constructor(client: ServiceClient, options: RegisterOptions, lease: string) {
    this.#client = client;
    this.#options = options;
    this.service = options.service;
    this.id = options.id;
    this.#lease = lease;
    this.#loop = this.#keepAlive();
  }

  /** The lease the instance is bound to (a new one after the old one ran out). */
  get lease(): string {
    return this.#lease;
  }

  async #keepAlive(): Promise<void> {
    const ttlMs = (this.#options.ttlSeconds ?? 15) * 1000;
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        await sleep(ttlMs / 3, signal);
      } catch {
        return;
      }
      try {
        await this.#client.api.leases.keepAlive(this.#lease);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof OrchestraError && err.code === 'LEASE_NOT_FOUND') {
          // Gone (revoked, a long pause, an outage longer than the TTL): register again.
          await this.#registerAgain(signal);
        } else {
          this.#client.reportError(err);
        }
      }
    }
  }

  async #registerAgain(signal: AbortSignal): Promise<void> {
    const lost = this.#lease;
    let instance: ServiceInstance;
    try {
      instance = await this.#client.registerOnce(this.#options);
    } catch (err) {
      // The next keep-alive finds the old lease gone again and retries.
      this.#client.reportError(err);
      return;
    }
    this.#lease = instance.lease;
    if (signal.aborted) return;
    try {
      this.#options.onRegisteredAgain?.(instance, lost);
    } catch (err) {
      this.#client.reportError(err);
    }
  }

  /** Stops keeping the lease alive and ends it: the instance leaves the registry now. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    await this.#client.api.leases.revoke(this.#lease).catch((err: unknown) => {
      if (!(err instanceof OrchestraError && err.code === 'LEASE_NOT_FOUND')) throw err;
    });
  }
}

/**
 * A live list of one service's passing instances, kept up to date by a watch, for
 * client-side load balancing.
 */
export class LiveInstances {
  readonly service: string;
  readonly #all = new Map<string, ServiceInstance>();
  readonly #stop = new AbortController();
  readonly #listeners = new Set<(instances: ServiceInstance[]) => void>();
  #next = 0;
  #loop: Promise<void> | undefined;
  #reportError: (error: unknown) => void = () => {};

  constructor(service: string) {
    this.service = service;
  }

  /** Passing instances, in id order. */
  get instances(): ServiceInstance[] {
    return [...this.#all.values()]
      .filter((i) => i.status === 'passing')
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The next passing instance in turn (round robin), or undefined when there is none. */
  next(): ServiceInstance | undefined {
    const list = this.instances;
    if (list.length === 0) return undefined;
    const picked = list[this.#next % list.length];
    this.#next = (this.#next + 1) % Math.max(1, list.length);
    return picked;
  }

  /**
   * Called with the passing instances after each change; returns the unsubscribe. An error
   * the listener throws goes to the client's `onError`, and the list carries on.
   */
  onChange(listener: (instances: ServiceInstance[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** @internal */
  async start(client: ServiceClient): Promise<void> {
    this.#reportError = (error) => client.reportError(error);
    const first = await client.api.services.instances(this.service, { all: true });
    for (const instance of first.instances) this.#all.set(instance.id, instance);
    this.#loop = this.#follow(client, first.revision);
  }

  async #follow(client: ServiceClient, revision: number): Promise<void> {
    const signal = this.#stop.signal;
    let after = revision;
    // Transient failures are resumed inside the watch; this paces the others (a 403, say).
    const backoff = client.retryBackoff();
    while (!signal.aborted) {
      try {
        for await (const event of client.api.services.watch(this.service, {
          afterRevision: after,
          signal,
          maxReconnects: Number.POSITIVE_INFINITY,
        })) {
          backoff.reset();
          this.#apply(event);
          after = Math.max(after, event.revision - 1);
        }
      } catch (err) {
        if (signal.aborted) return;
        client.reportError(err);
        await sleep(backoff.fail(), signal).catch(() => {});
      }
    }
  }

  #apply(event: ServiceEvent): void {
    if (event.type === 'resync') {
      this.#all.clear();
      for (const instance of event.instances) this.#all.set(instance.id, instance);
    } else if (event.type === 'put') {
      this.#all.set(event.instance.id, event.instance);
    } else {
      this.#all.delete(event.id);
    }
    const now = this.instances;
    for (const listener of this.#listeners) {
      // A throw here would end the watch, and the event would come again, for ever.
      try {
        listener(now);
      } catch (err) {
        this.#reportError(err);
      }
    }
  }

  /** Stops following the service. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
  }
}

/**
 * Registers instances with automatic keep-alive, and discovers others: one pick by the
 * server (`resolve`), the passing list (`discover`), or a live list (`live`).
 */
export class ServiceClient {
  /** The REST client this one is built on (its transport, status and backoff included). */
  readonly api: Orchestra;
  readonly #options: ServiceClientOptions;

  constructor(options: ServiceClientOptions) {
    this.api = new Orchestra({ ...options, batchSubmits: false });
    this.#options = options;
  }

  /** Registers the instance on a lease of its own and keeps that lease alive until `stop`. */
  async register(options: RegisterOptions): Promise<Registration> {
    const instance = await this.registerOnce(options);
    return new Registration(this, options, instance.lease);
  }

  /** @internal */
  registerOnce(options: RegisterOptions): Promise<ServiceInstance> {
    const { service, id, ttlSeconds, onRegisteredAgain: _, ...input } = options;
    return this.api.services.register(service, id, { ...input, ttl_seconds: ttlSeconds ?? 15 });
  }

  /** The passing instances of a service. */
  async discover(service: string): Promise<ServiceInstance[]> {
    return (await this.api.services.instances(service)).instances;
  }

  /** One passing instance, picked by the server with `strategy` (default round robin). */
  resolve(
    service: string,
    options: { strategy?: ResolveStrategy; key?: string } = {},
  ): Promise<ServiceInstance> {
    return this.api.services.resolve(service, options);
  }

  /** A list of the service's passing instances that follows every change. */
  async live(service: string): Promise<LiveInstances> {
    const live = new LiveInstances(service);
    await live.start(this);
    return live;
  }

  /** @internal */
  reportError(error: unknown): void {
    this.#options.onError?.(error);
  }

  /** @internal A backoff for a loop that retries what the watch does not: 1 s to 30 s. */
  retryBackoff(): Backoff {
    return new Backoff(this.#options.reconnect, {
      initialDelayMs: 1_000,
      maxDelayMs: 30_000,
      jitter: 'equal',
    });
  }
}
