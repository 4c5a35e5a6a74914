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
 * within 10% of it every create counts (for large counts, at most every `nearLimitRecountMs`). Concurrent creates on several nodes may pass the
 * limit by a few: it bounds storage, it is not an exact quota.
 */
export class TenantLimit {
  /** The setting's environment variable, named in the error. */
  readonly setting: string;
  /** The most a tenant may hold; 0 for no limit. */
  readonly max: number;
  readonly #what: string;
  readonly #count: (tenantId: string) => Promise<number>;
  readonly #counted = new Map<string, { count: number; atMs: number; refused: boolean }>();
  readonly #refusalTtlMs: number;
  readonly #nearLimitRecountMs: number;

  constructor(options: {
    setting: string;
    max: number;
    /** What is counted, in the plural, for messages: "topics". */
    what: string;
    count: (tenantId: string) => Promise<number>;
    /**
     * For large counts (queued tasks): how long a refusal stands without a recount, and
     * how often to recount within 10% of the limit; 0 (the default) recounts every time.
     */
    refusalTtlMs?: number;
    nearLimitRecountMs?: number;
  }) {
    this.#refusalTtlMs = options.refusalTtlMs ?? 0;
    this.#nearLimitRecountMs = options.nearLimitRecountMs ?? 0;
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
    if (cached !== undefined) {
      const age = now - cached.atMs;
      // A tenant refused a moment ago is refused again without a recount: a producer
      // retrying against a full queue must not turn each cheap 409 into a count of it.
      if (cached.refused && age < this.#refusalTtlMs) throw this.#refusal(cached.count);
      const fresh =
        cached.count + 1 < this.max * EXACT_FROM
          ? age < COUNT_TTL_MS
          : age < this.#nearLimitRecountMs;
      if (!cached.refused && fresh && cached.count < this.max) {
        cached.count += 1; // counts this create until the next recount
        return;
      }
    }
    const count = await this.#count(tenantId);
    // Bounded: one entry per tenant that created something in the last second or so.
    if (this.#counted.size >= 10_000) this.#counted.clear();
    const refused = count >= this.max;
    this.#counted.set(tenantId, { count: refused ? count : count + 1, atMs: now, refused });
    if (refused) throw this.#refusal(count);
  }

  /** Forgets what was counted for the tenant: the next create counts again. */
  forget(tenantId: string): void {
    this.#counted.delete(tenantId);
  }

  #refusal(count: number): ApiError {
    return new ApiError(
      'TENANT_LIMIT_REACHED',
      `The tenant holds ${count} ${this.#what}; ${this.setting} allows ${this.max}`,
      { details: { limit: this.setting, value: this.max, count } },
    );
  }
}
