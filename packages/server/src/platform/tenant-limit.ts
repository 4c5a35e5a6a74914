import { ApiError } from './errors.ts';

/** A recount is needed once a cached count, plus creates since, reaches this share. */
const EXACT_FROM = 0.9;
/** A count is reused for this long while the tenant is well below the limit. */
const COUNT_TTL_MS = 1000;

/**
 * A per-tenant limit on how many of one kind of stored thing a tenant may hold (topics,
 * config keys, templates, sessions, queued tasks). The owning module counts through its
 * own store; this only decides when to count and what to answer. Far from the limit a
 * count up to a second old is trusted (so a busy tenant does not count on every create);
 * within 10% of it every create counts. Concurrent creates on several nodes may pass the
 * limit by a few: it bounds storage, it is not an exact quota.
 */
export class TenantLimit {
  /** The setting's environment variable, named in the error. */
  readonly setting: string;
  /** The most a tenant may hold; 0 for no limit. */
  readonly max: number;
  readonly #what: string;
  readonly #count: (tenantId: string) => Promise<number>;
  readonly #counted = new Map<string, { count: number; atMs: number }>();

  constructor(options: {
    setting: string;
    max: number;
    /** What is counted, in the plural, for messages: "topics". */
    what: string;
    count: (tenantId: string) => Promise<number>;
  }) {
    this.setting = options.setting;
    this.max = options.max;
    this.#what = options.what;
    this.#count = options.count;
  }

  /** Resolves when the tenant may create one more; throws TENANT_LIMIT_REACHED otherwise. */
  async check(tenantId: string): Promise<void> {
    if (this.max <= 0) return;
    const now = Date.now();
    const cached = this.#counted.get(tenantId);
    if (
      cached !== undefined &&
      now - cached.atMs < COUNT_TTL_MS &&
      cached.count + 1 < this.max * EXACT_FROM
    ) {
      cached.count += 1; // counts this create until the next recount
      return;
    }
    const count = await this.#count(tenantId);
    // Bounded: one entry per tenant that created something in the last second or so.
    if (this.#counted.size >= 10_000) this.#counted.clear();
    this.#counted.set(tenantId, { count: count + 1, atMs: now });
    if (count >= this.max) {
      this.#counted.delete(tenantId);
      throw new ApiError(
        'TENANT_LIMIT_REACHED',
        `The tenant holds ${count} ${this.#what}; ${this.setting} allows ${this.max}`,
        { details: { limit: this.setting, value: this.max, count } },
      );
    }
  }
}
