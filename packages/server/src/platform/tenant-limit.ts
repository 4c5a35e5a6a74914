import { ApiError } from './errors.ts';
import {
  type LimitValue,
  limitDetails,
  limitOrigin,
  type TenantLimitName,
  type TenantLimitSource,
} from './tenant-limits.ts';

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
  readonly #name: TenantLimitName;
  readonly #limits: TenantLimitSource;
  readonly #what: string;
  readonly #count: (tenantId: string) => Promise<number>;
  /** What was counted per tenant, and against which value of the limit. */
  readonly #counted = new Map<
    string,
    { count: number; atMs: number; refused: boolean; max: number }
  >();
  readonly #refusalTtlMs: number;
  readonly #nearLimitRecountMs: number;

  constructor(options: {
    /** The limit (its value for a tenant is the tenant's own or the node's setting). */
    name: TenantLimitName;
    limits: TenantLimitSource;
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
    this.#name = options.name;
    this.#limits = options.limits;
    this.#what = options.what;
    this.#count = options.count;
  }

  /** Resolves when the tenant may create one more; throws TENANT_LIMIT_REACHED otherwise. */
  async check(tenantId: string): Promise<void> {
    const limit = await this.#limits.get(tenantId, this.#name);
    const max = limit.value;
    if (max <= 0) return;
    const now = Date.now();
    const cached = this.#counted.get(tenantId);
    // A changed limit (the tenant's own was set or removed) makes what was counted stale.
    if (cached !== undefined && cached.max === max) {
      const age = now - cached.atMs;
      // A tenant refused a moment ago is refused again without a recount: a producer
      // retrying against a full queue must not turn each cheap 409 into a count of it.
      if (cached.refused && age < this.#refusalTtlMs) throw this.#refusal(limit, cached.count);
      const fresh =
        cached.count + 1 < max * EXACT_FROM ? age < COUNT_TTL_MS : age < this.#nearLimitRecountMs;
      if (!cached.refused && fresh && cached.count < max) {
        cached.count += 1; // counts this create until the next recount
        return;
      }
    }
    const count = await this.#count(tenantId);
    // Bounded: one entry per tenant that created something in the last second or so.
    if (this.#counted.size >= 10_000) this.#counted.clear();
    const refused = count >= max;
    this.#counted.set(tenantId, { count: refused ? count : count + 1, atMs: now, refused, max });
    if (refused) throw this.#refusal(limit, count);
  }

  /** Forgets what was counted for the tenant: the next create counts again. */
  forget(tenantId: string): void {
    this.#counted.delete(tenantId);
  }

  #refusal(limit: LimitValue, count: number): ApiError {
    return new ApiError(
      'TENANT_LIMIT_REACHED',
      `The tenant holds ${count} ${this.#what}; ${limitOrigin(limit)} allows ${limit.value}`,
      { details: { ...limitDetails(limit), value: limit.value, count } },
    );
  }
}
