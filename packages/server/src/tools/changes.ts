import type { Bus } from '../bus/bus.ts';

const SUBJECT = 'tools.changed';
/** Changes of one tenant within this long reach listeners once. */
const COALESCE_MS = 200;

/**
 * "What a tenant's callers may list has changed": a tool was added, changed, held,
 * approved or removed, or a policy or a view changed. Said on the bus, so every node hears
 * it (the MCP gateway tells its open sessions `notifications/tools/list_changed`).
 * A wake-up only: a listener reads the store again; a message lost with a bus outage
 * leaves a session's list stale until the next change or its next `tools/list`.
 */
export class ToolChanges {
  readonly #bus: Bus;
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #pending = new Map<string, NodeJS.Timeout>();
  readonly #each = new Set<(tenantId: string) => void>();
  #unsubscribe: (() => void) | undefined;

  constructor(bus: Bus) {
    this.#bus = bus;
  }

  /** Says that tenant `tenantId`'s list changed, on every node. */
  changed(tenantId: string): void {
    this.#bus.publish(SUBJECT, { tenantId });
  }

  /** Calls `listener` after changes of the tenant's list, until the returned function is called. */
  listen(tenantId: string, listener: () => void): () => void {
    this.#subscribe();
    let listeners = this.#listeners.get(tenantId);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(tenantId, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.#listeners.delete(tenantId);
    };
  }

  /**
   * Calls `listener` with the tenant of every change notice, as soon as it arrives and
   * without coalescing (for caches), until the returned function is called.
   */
  onEach(listener: (tenantId: string) => void): () => void {
    this.#subscribe();
    this.#each.add(listener);
    return () => {
      this.#each.delete(listener);
    };
  }

  #subscribe(): void {
    this.#unsubscribe ??= this.#bus.subscribe(SUBJECT, (message) => {
      const tenant = (message as { tenantId?: unknown }).tenantId;
      if (typeof tenant !== 'string') return;
      for (const listener of [...this.#each]) listener(tenant);
      this.#schedule(tenant);
    });
  }

  /** Stops listening to the bus and drops pending notices. */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#each.clear();
    for (const timer of this.#pending.values()) clearTimeout(timer);
    this.#pending.clear();
    this.#listeners.clear();
  }

  #schedule(tenantId: string): void {
    if (!this.#listeners.has(tenantId) || this.#pending.has(tenantId)) return;
    const timer = setTimeout(() => {
      this.#pending.delete(tenantId);
      for (const listener of [...(this.#listeners.get(tenantId) ?? [])]) {
        try {
          listener();
        } catch {
          // One listener's failure must not keep the notice from the others.
        }
      }
    }, COALESCE_MS);
    timer.unref();
    this.#pending.set(tenantId, timer);
  }
}

/** How long a cached reading may serve when no change notice reaches this node. */
const MEMO_TTL_MS = 5_000;
/** Tenants a memo keeps at most; the least recently loaded go first. */
const MEMO_MAX_TENANTS = 10_000;
/**
 * Values a memo keeps per tenant (the oldest go first): a caller naming tool after unknown
 * tool must not grow it without end.
 */
const MEMO_MAX_KEYS = 1_000;

interface TenantEntries<V> {
  /** Bumped by each change notice: a load that started before one does not stay. */
  generation: number;
  values: Map<string, { value: V; loadedAt: number }>;
}

/**
 * What a call reads about its tenant's tools (a tool, the policies, a view), kept between
 * calls and dropped for a tenant as soon as a `tools.changed` notice for it arrives: at
 * once on the node that wrote (the in-process bus calls subscribers during the write),
 * within the bus's delivery time on the others, and after `MEMO_TTL_MS` at the latest if
 * a notice is lost. Values are shared: treat them as read-only.
 */
export class TenantMemo<V> {
  readonly #tenants = new Map<string, TenantEntries<V>>();
  readonly #now: () => number;
  readonly #stop: () => void;

  constructor(changes: ToolChanges, now: () => number = Date.now) {
    this.#now = now;
    this.#stop = changes.onEach((tenantId) => this.forget(tenantId));
  }

  async get(tenantId: string, key: string, load: () => Promise<V>): Promise<V> {
    let entries = this.#tenants.get(tenantId);
    const cached = entries?.values.get(key);
    if (cached !== undefined && this.#now() - cached.loadedAt < MEMO_TTL_MS) return cached.value;
    if (entries === undefined) {
      if (this.#tenants.size >= MEMO_MAX_TENANTS) {
        const oldest = this.#tenants.keys().next().value;
        if (oldest !== undefined) this.#tenants.delete(oldest);
      }
      entries = { generation: 0, values: new Map() };
      this.#tenants.set(tenantId, entries);
    }
    const generation = entries.generation;
    const loadedAt = this.#now();
    const value = await load();
    // A change notice during the load may mean the value is already old: not kept.
    if (this.#tenants.get(tenantId) === entries && entries.generation === generation) {
      entries.values.delete(key);
      if (entries.values.size >= MEMO_MAX_KEYS) {
        const oldest = entries.values.keys().next().value;
        if (oldest !== undefined) entries.values.delete(oldest);
      }
      entries.values.set(key, { value, loadedAt });
    }
    return value;
  }

  /** Values kept for the tenant now. */
  size(tenantId: string): number {
    return this.#tenants.get(tenantId)?.values.size ?? 0;
  }

  /** Drops what is kept for the tenant. */
  forget(tenantId: string): void {
    const entries = this.#tenants.get(tenantId);
    if (entries === undefined) return;
    entries.generation += 1;
    entries.values.clear();
  }

  close(): void {
    this.#stop();
    this.#tenants.clear();
  }
}
