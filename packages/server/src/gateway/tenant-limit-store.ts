import {
  type LimitValue,
  TENANT_LIMIT_NAMES,
  type TenantLimitName,
  type TenantLimitOverrides,
  type TenantLimitSource,
} from '../platform/tenant-limits.ts';
import type { RelationalStore } from '../store/store.ts';

/** Tenants whose overrides are kept at most; the least recently read are dropped first. */
const CACHE_MAX_ENTRIES = 10_000;

/** The overrides in a `tenants.limits` text; anything unreadable counts as no override. */
export function parseLimits(text: string): TenantLimitOverrides {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  if (typeof parsed !== 'object' || parsed === null) return {};
  const out: TenantLimitOverrides = {};
  for (const name of TENANT_LIMIT_NAMES) {
    const value = (parsed as Record<string, unknown>)[name];
    if (typeof value === 'number' && Number.isSafeInteger(value)) out[name] = value;
  }
  return out;
}

/**
 * The limits of each tenant: its overrides from the `tenants` row over the node's settings.
 * Overrides are read once per tenant per `ttlMs` (the auth cache's TTL): a change made on
 * this node applies here at once (`forget`), on other nodes within the TTL.
 */
export class TenantLimitStore implements TenantLimitSource {
  readonly #store: RelationalStore;
  readonly #defaults: Record<TenantLimitName, number>;
  readonly #ttlMs: number;
  readonly #cache = new Map<string, { overrides: TenantLimitOverrides; freshUntil: number }>();
  /** One read per tenant at a time, however many requests ask together. */
  readonly #reading = new Map<string, Promise<TenantLimitOverrides>>();
  /** Counts `forget` calls: a read that started before one must not be cached. */
  #forgotten = 0;

  constructor(deps: {
    store: RelationalStore;
    defaults: Record<TenantLimitName, number>;
    ttlMs: number;
  }) {
    this.#store = deps.store;
    this.#defaults = deps.defaults;
    this.#ttlMs = deps.ttlMs;
  }

  get defaults(): Record<TenantLimitName, number> {
    return this.#defaults;
  }

  async get(tenantId: string, name: TenantLimitName): Promise<LimitValue> {
    const overrides = await this.overrides(tenantId);
    const own = overrides[name];
    return own === undefined
      ? { name, value: this.#defaults[name], overridden: false }
      : { name, value: own, overridden: true };
  }

  async overrides(tenantId: string): Promise<TenantLimitOverrides> {
    const cached = this.#cache.get(tenantId);
    if (cached !== undefined && cached.freshUntil > performance.now()) return cached.overrides;
    let reading = this.#reading.get(tenantId);
    if (reading === undefined) {
      const read = this.#read(tenantId).finally(() => {
        if (this.#reading.get(tenantId) === read) this.#reading.delete(tenantId);
      });
      reading = read;
      this.#reading.set(tenantId, reading);
    }
    return reading;
  }

  /** Drops what this node knows of the tenant's limits: the next read asks the store. */
  forget(tenantId: string): void {
    this.#cache.delete(tenantId);
    this.#reading.delete(tenantId);
    this.#forgotten += 1;
  }

  async #read(tenantId: string): Promise<TenantLimitOverrides> {
    const forgotten = this.#forgotten;
    const row = await this.#store.db
      .selectFrom('tenants')
      .select('limits')
      .where('id', '=', tenantId)
      .executeTakeFirst();
    // A tenant deleted or unknown has no overrides; callers have authenticated it already.
    const overrides = row === undefined ? {} : parseLimits(row.limits);
    if (this.#ttlMs > 0 && forgotten === this.#forgotten) {
      if (this.#cache.size >= CACHE_MAX_ENTRIES) {
        const oldest = this.#cache.keys().next().value;
        if (oldest !== undefined) this.#cache.delete(oldest);
      }
      this.#cache.delete(tenantId);
      this.#cache.set(tenantId, { overrides, freshUntil: performance.now() + this.#ttlMs });
    }
    return overrides;
  }
}
