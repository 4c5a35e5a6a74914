import { ApiError } from '../platform/errors.ts';
import { KeyedQueue } from '../platform/keyed-queue.ts';
import {
  type LimitValue,
  limitDetails,
  limitOrigin,
  limitSetting,
  type TenantLimitName,
  type TenantLimitSource,
} from '../platform/tenant-limits.ts';
import type { RelationalStore } from '../store/store.ts';
import type { FilledSpec } from './process-driver.ts';

/** The workspace quotas of a tenant (tenant limits: the node's settings or its own). */
export const QUOTA_NAMES = [
  'max_instances',
  'max_running_instances',
  'max_running_cpus',
  'max_running_memory_bytes',
  'max_storage_bytes',
] as const satisfies readonly TenantLimitName[];
export type QuotaName = (typeof QUOTA_NAMES)[number];

/** States that hold a share of the running quotas: running, or on the way there. */
const ACTIVE_STATES = ['creating', 'starting', 'running'];

export interface QuotaUsage {
  instances: number;
  running: number;
  cpus: number;
  memory_bytes: number;
  storage_bytes: number;
}

/**
 * A quota another module counts (the terminals module: `max_terminals`): `list` shows it
 * with the others, and its module checks it with `admitOther`.
 */
export interface OtherQuota {
  name: TenantLimitName;
  /** `3` → "3 running terminals", for the refusal's message. */
  unit: (n: number) => string;
  used: (tenantId: string) => Promise<number>;
}

export interface QuotaView {
  name: TenantLimitName;
  /** 0: no limit. */
  limit: number;
  used: number;
  /** `tenant`: the tenant's own limit; `setting`: the node's setting. */
  source: 'tenant' | 'setting';
  setting: string;
}

const WHAT: Record<QuotaName, { unit: (n: number) => string; usage: keyof QuotaUsage }> = {
  max_instances: { unit: (n) => `${n} instances`, usage: 'instances' },
  max_running_instances: { unit: (n) => `${n} running instances`, usage: 'running' },
  max_running_cpus: { unit: (n) => `${round(n)} CPUs in running instances`, usage: 'cpus' },
  max_running_memory_bytes: {
    unit: (n) => `${n} bytes of memory in running instances`,
    usage: 'memory_bytes',
  },
  max_storage_bytes: { unit: (n) => `${n} bytes of storage`, usage: 'storage_bytes' },
};

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/**
 * The design's quota service: what a tenant's instances hold against its quotas, counted
 * from the store (a tenant has hundreds of instances, not millions), checked at create and
 * at start. Checks and the state changes they admit run one at a time per tenant on a node;
 * creates on several nodes at the same instant may pass a quota by a few.
 */
export class InstanceQuotas {
  readonly #store: RelationalStore;
  readonly #limits: TenantLimitSource;
  readonly #locks = new KeyedQueue();
  readonly #others = new Map<TenantLimitName, OtherQuota>();

  constructor(deps: { store: RelationalStore; limits: TenantLimitSource }) {
    this.#store = deps.store;
    this.#limits = deps.limits;
  }

  async usage(tenantId: string): Promise<QuotaUsage> {
    const rows = await this.#store.db
      .selectFrom('instances')
      .select(['state', 'spec'])
      .where('tenant_id', '=', tenantId)
      .execute();
    const usage: QuotaUsage = {
      instances: 0,
      running: 0,
      cpus: 0,
      memory_bytes: 0,
      storage_bytes: 0,
    };
    for (const row of rows) {
      const { resources } = JSON.parse(row.spec) as Partial<FilledSpec>;
      usage.instances += 1;
      usage.storage_bytes += resources?.storage_bytes ?? 0;
      if (ACTIVE_STATES.includes(row.state)) {
        usage.running += 1;
        usage.cpus += resources?.cpus ?? 0;
        usage.memory_bytes += resources?.memory_bytes ?? 0;
      }
    }
    return usage;
  }

  /** Adds a quota another module counts (once, while modules are built). */
  addOther(quota: OtherQuota): void {
    this.#others.set(quota.name, quota);
  }

  async list(tenantId: string): Promise<QuotaView[]> {
    const usage = await this.usage(tenantId);
    const view = async (name: TenantLimitName, used: number): Promise<QuotaView> => {
      const limit = await this.#limits.get(tenantId, name);
      return {
        name,
        limit: limit.value,
        used: round(used),
        source: limit.overridden ? 'tenant' : 'setting',
        setting: limitSetting(name),
      };
    };
    return Promise.all([
      ...QUOTA_NAMES.map((name) => view(name, usage[WHAT[name].usage])),
      ...[...this.#others.values()].map(async (q) => view(q.name, await q.used(tenantId))),
    ]);
  }

  /**
   * Runs `admit` if the tenant's quota `name` (one added with `addOther`) leaves room for
   * one more, one check at a time per tenant; throws TENANT_LIMIT_REACHED otherwise.
   */
  async admitOther<T>(
    tenantId: string,
    name: TenantLimitName,
    admit: () => Promise<T>,
  ): Promise<T> {
    const quota = this.#others.get(name);
    if (quota === undefined) throw new Error(`no quota ${name} was added`);
    return this.#locks.run(`${name}:${tenantId}`, async () => {
      const limit = await this.#limits.get(tenantId, name);
      if (limit.value > 0) {
        const used = await quota.used(tenantId);
        if (used + 1 > limit.value) throw refusal(name, quota.unit, limit, used, 1);
      }
      return admit();
    });
  }

  /**
   * Runs `admit` (the state change that takes the share: the new row, or `starting`) if
   * the tenant's quotas leave room for an instance with `resources`, one check at a time
   * per tenant; throws TENANT_LIMIT_REACHED naming the quota otherwise.
   */
  async admit<T>(
    tenantId: string,
    what: { creating: boolean; starting: boolean; resources: FilledSpec['resources'] },
    admit: () => Promise<T>,
  ): Promise<T> {
    return this.#locks.run(tenantId, async () => {
      await this.#check(tenantId, what);
      return admit();
    });
  }

  async #check(
    tenantId: string,
    what: { creating: boolean; starting: boolean; resources: FilledSpec['resources'] },
  ): Promise<void> {
    const usage = await this.usage(tenantId);
    const wanted: Partial<Record<QuotaName, number>> = {};
    if (what.creating) {
      wanted.max_instances = 1;
      wanted.max_storage_bytes = what.resources.storage_bytes;
    }
    if (what.starting) {
      wanted.max_running_instances = 1;
      wanted.max_running_cpus = what.resources.cpus;
      wanted.max_running_memory_bytes = what.resources.memory_bytes;
    }
    for (const [name, amount] of Object.entries(wanted) as [QuotaName, number][]) {
      const limit = await this.#limits.get(tenantId, name);
      if (limit.value <= 0) continue;
      const used = usage[WHAT[name].usage];
      if (used + amount > limit.value) throw refusal(name, WHAT[name].unit, limit, used, amount);
    }
  }
}

function refusal(
  name: TenantLimitName,
  unit: (n: number) => string,
  limit: LimitValue,
  used: number,
  amount: number,
): ApiError {
  return new ApiError(
    'TENANT_LIMIT_REACHED',
    `The tenant's quota ${name} is ${unit(limit.value)} (${limitOrigin(limit)}); it holds ${unit(used)}, and this needs ${round(amount)} more`,
    {
      details: {
        ...limitDetails(limit),
        quota: name,
        limit_value: limit.value,
        used: round(used),
        requested: round(amount),
      },
    },
  );
}
