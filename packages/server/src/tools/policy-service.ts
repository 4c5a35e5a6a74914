import type {
  CreateToolPolicy,
  PolicyMatch,
  ToolPolicy,
  UpdateToolPolicy,
} from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { describeErrors, UserSchemaCompiler } from '../platform/user-schema.ts';
import { Statement } from '../store/statement.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import { TenantMemo, type ToolChanges } from './changes.ts';
import { isDestructive } from './definition.ts';
import type { ToolPoliciesTable } from './tables.ts';

const POLICY_ID_PREFIX = 'tpol_';

/** Every policy of a tenant: read on every call. */
const TENANT_POLICIES = new Statement(
  'select * from tool_policies where tenant_id = ? order by id',
);
export const DEFAULT_APPROVAL_TIMEOUT_MS = 3_600_000;

/** The policy's fields as stored. */
type PolicySpec = Omit<ToolPolicy, 'id' | 'tenant_id' | 'name' | 'created_at' | 'updated_at'>;

/** Who makes a call, as far as policies can tell. */
export interface ToolCallerContext {
  principal: Principal;
  agentId?: string | undefined;
  taskId?: string | undefined;
  sessionId?: string | undefined;
  /** The name of the template of the task the agent calls for. */
  template?: string | undefined;
  /** The instance that task works in: the workspace tools act on it. */
  instanceId?: string | undefined;
  sessionLabels?: Record<string, string> | undefined;
}

/** What the policy says about one call. */
export type PolicyDecision =
  | {
      allowed: true;
      /** The allow policies that matched: their limits apply to the call. */
      allows: ToolPolicy[];
      /** Set when one of them requires an approval: the first such, and the shortest wait. */
      approval: { policy: string; timeoutMs: number } | null;
    }
  | { allowed: false; reason: string; policy: string | null };

function policyNotFound(ref: string): ApiError {
  return new ApiError('TOOL_POLICY_NOT_FOUND', `Tool policy "${ref}" does not exist`);
}

/** A tool pattern as a regular expression: `*` is any run of characters. */
function patternRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}

function matchesCaller(match: PolicyMatch, caller: ToolCallerContext): boolean {
  const { principal } = caller;
  if (match.roles !== undefined && !match.roles.includes(principal.role)) return false;
  if (
    match.api_keys !== undefined &&
    (principal.type !== 'api_key' || !match.api_keys.includes(principal.keyId))
  ) {
    return false;
  }
  if (
    match.agents !== undefined &&
    (caller.agentId === undefined || !match.agents.includes(caller.agentId))
  ) {
    return false;
  }
  if (
    match.templates !== undefined &&
    (caller.template === undefined || !match.templates.includes(caller.template))
  ) {
    return false;
  }
  for (const [key, value] of Object.entries(match.session_labels ?? {})) {
    if (caller.sessionLabels?.[key] !== value) return false;
  }
  return true;
}

/**
 * A tenant's tool policies: who may call which tool, with which arguments, how often.
 * Deny wins over allow; a tool no policy names is allowed unless it is destructive, which
 * takes an explicit allow. Policies are read from the store at each decision, so a change
 * applies at once on every node.
 */
export class PolicyService {
  readonly #store: RelationalStore;
  readonly #changes: ToolChanges;
  /** The tenant's policies as calls read them, kept until they change. */
  readonly #serving: TenantMemo<ToolPolicy[]>;
  readonly #schemas = new UserSchemaCompiler();
  readonly #patterns = new Map<string, RegExp>();
  /** Compiled argument schemas by policy id and update time (a policy's schema is fixed then). */
  readonly #argumentChecks = new Map<string, ReturnType<UserSchemaCompiler['check']>>();

  constructor(deps: { store: RelationalStore; changes: ToolChanges }) {
    this.#store = deps.store;
    this.#changes = deps.changes;
    this.#serving = new TenantMemo(deps.changes);
  }

  #spec(input: UpdateToolPolicy): PolicySpec {
    if (input.arguments_schema !== undefined) {
      if (input.effect === 'deny') {
        throw fieldError('body.arguments_schema', 'only allow policies constrain arguments');
      }
      const check = this.#schemas.check(input.arguments_schema);
      if (!check.ok) {
        const at = check.field === undefined ? '' : `.${check.field}`;
        throw fieldError(`body.arguments_schema${at}`, check.message);
      }
    }
    if (
      input.effect === 'deny' &&
      (input.rate_limit !== undefined || input.max_concurrency !== undefined)
    ) {
      throw fieldError('body', 'only allow policies set rate_limit or max_concurrency');
    }
    return {
      description: input.description ?? '',
      effect: input.effect,
      tools: input.tools,
      match: input.match ?? {},
      arguments_schema: input.arguments_schema ?? null,
      rate_limit: input.rate_limit ?? null,
      max_concurrency: input.max_concurrency ?? null,
      approval: input.approval ?? 'none',
      approval_timeout_ms: input.approval_timeout_ms ?? DEFAULT_APPROVAL_TIMEOUT_MS,
      enabled: input.enabled ?? true,
    };
  }

  async create(principal: Principal, input: CreateToolPolicy): Promise<ToolPolicy> {
    const { name, ...fields } = input;
    const spec = this.#spec(fields);
    const now = new Date().toISOString();
    const row: ToolPoliciesTable = {
      id: newId('tpol'),
      tenant_id: principal.tenant.id,
      name,
      spec: JSON.stringify(spec),
      created_at: now,
      updated_at: now,
    };
    try {
      await this.#store.db.insertInto('tool_policies').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'TOOL_POLICY_ALREADY_EXISTS',
          `A tool policy named "${name}" already exists`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    this.#changes.changed(principal.tenant.id);
    return view(row);
  }

  async update(principal: Principal, ref: string, input: UpdateToolPolicy): Promise<ToolPolicy> {
    const spec = this.#spec(input);
    const current = await this.#find(principal.tenant.id, ref);
    const row = await this.#store.db
      .updateTable('tool_policies')
      .set({ spec: JSON.stringify(spec), updated_at: new Date().toISOString() })
      .where('id', '=', current.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw policyNotFound(ref);
    this.#changes.changed(principal.tenant.id);
    return view(row);
  }

  async get(principal: Principal, ref: string): Promise<ToolPolicy> {
    return view(await this.#find(principal.tenant.id, ref));
  }

  async list(
    principal: Principal,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: ToolPolicy[]; next_cursor: string | null }> {
    const after = decodeCursor(page.cursor, (id) => id.startsWith(POLICY_ID_PREFIX));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tool_policies')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    return toPage(await query.execute(), limit, view, page.maxBytes);
  }

  async delete(principal: Principal, ref: string): Promise<void> {
    const row = await this.#find(principal.tenant.id, ref);
    await this.#store.db.deleteFrom('tool_policies').where('id', '=', row.id).execute();
    this.#changes.changed(principal.tenant.id);
  }

  /** What the tenant's policies say about `caller` calling `tool` with `args`. */
  async decide(
    caller: ToolCallerContext,
    tool: { name: string; annotations: Parameters<typeof isDestructive>[0] },
    args: Record<string, unknown>,
  ): Promise<PolicyDecision> {
    return (await this.forCaller(caller))(tool, args);
  }

  /**
   * The policies of the caller's tenant, read once, as a decision function: for deciding
   * about many tools at once (what a caller may see). Without `args`, the decision leaves
   * out the argument constraints: whether the caller may call the tool at all.
   */
  async forCaller(
    caller: ToolCallerContext,
  ): Promise<
    (
      tool: { name: string; annotations: Parameters<typeof isDestructive>[0] },
      args?: Record<string, unknown>,
    ) => PolicyDecision
  > {
    const tenantId = caller.principal.tenant.id;
    const policies = await this.#serving.get(tenantId, 'policies', async () => {
      const rows = await TENANT_POLICIES.rows<ToolPoliciesTable>(this.#store.db, this.#store.kind, [
        tenantId,
      ]);
      return rows.map(view);
    });
    const applying = policies.filter((p) => p.enabled && matchesCaller(p.match, caller));
    return (tool, args) => this.#decide(applying, tool, args);
  }

  #decide(
    applying: ToolPolicy[],
    tool: { name: string; annotations: Parameters<typeof isDestructive>[0] },
    args: Record<string, unknown> | undefined,
  ): PolicyDecision {
    const matching = applying.filter((p) =>
      p.tools.some((pattern) => this.#regExp(pattern).test(tool.name)),
    );
    const deny = matching.find((p) => p.effect === 'deny');
    if (deny !== undefined) {
      return { allowed: false, reason: `denied by policy "${deny.name}"`, policy: deny.name };
    }
    const allows = matching.filter((p) => p.effect === 'allow');
    if (allows.length === 0 && isDestructive(tool.annotations)) {
      return {
        allowed: false,
        reason: `"${tool.name}" is destructive: it needs a policy that allows it explicitly`,
        policy: null,
      };
    }
    for (const policy of allows) {
      if (policy.arguments_schema === null || args === undefined) continue;
      const key = `${policy.id}@${policy.updated_at}`;
      let check = this.#argumentChecks.get(key);
      if (check === undefined) {
        check = this.#schemas.check(policy.arguments_schema);
        if (this.#argumentChecks.size > 1000) this.#argumentChecks.clear();
        this.#argumentChecks.set(key, check);
      }
      if (check.ok && !check.validate(args)) {
        return {
          allowed: false,
          reason: `the arguments are outside what policy "${policy.name}" allows: ${describeErrors(check.validate.errors)}`,
          policy: policy.name,
        };
      }
    }
    const requiring = allows.filter((p) => p.approval === 'required');
    const first = requiring[0];
    return {
      allowed: true,
      allows,
      approval:
        first === undefined
          ? null
          : {
              policy: first.name,
              timeoutMs: Math.min(...requiring.map((p) => p.approval_timeout_ms)),
            },
    };
  }

  #regExp(pattern: string): RegExp {
    let re = this.#patterns.get(pattern);
    if (re === undefined) {
      re = patternRegExp(pattern);
      if (this.#patterns.size > 10_000) this.#patterns.clear();
      this.#patterns.set(pattern, re);
    }
    return re;
  }

  async #find(tenantId: string, ref: string): Promise<ToolPoliciesTable> {
    const row = await this.#store.db
      .selectFrom('tool_policies')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where(ref.startsWith(POLICY_ID_PREFIX) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw policyNotFound(ref);
    return row;
  }
}

function view(row: ToolPoliciesTable): ToolPolicy {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    ...(JSON.parse(row.spec) as PolicySpec),
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}
