import { createHash } from 'node:crypto';
import type {
  ToolApproval,
  ToolApprovalStatus,
  ToolCall,
  ToolCaller,
  ToolResult,
} from '@orchestra/protocol';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { SecretBox } from '../platform/secret-box.ts';
import type { RelationalStore } from '../store/store.ts';
import type { ToolCallLog } from './call-log.ts';
import { canonicalJson } from './definition.ts';
import type { ToolApprovalsTable } from './tables.ts';

const argumentsContext = (id: string) => `tool_approvals:${id}:arguments`;
const POLL_MS = 250;

/** SHA-256 (hex) of arguments as canonical JSON: what an approval is bound to. */
export function argumentsHash(args: unknown): string {
  return createHash('sha256').update(canonicalJson(args)).digest('hex');
}

function approvalNotFound(id: string): ApiError {
  return new ApiError('TOOL_APPROVAL_NOT_FOUND', `Tool approval "${id}" does not exist`);
}

/**
 * Where a call awaiting approval is: `pending` (nobody decided yet), `running` (approved,
 * running; or decided a moment ago and not yet recorded), or ended, with its record and, if
 * it ran, its result.
 */
export type ApprovalOutcome = 'pending' | 'running' | { call: ToolCall; result: ToolResult | null };

/** An approved call, ready to run with the exact arguments that were approved. */
export interface ApprovedCall {
  approval: ToolApproval;
  args: Record<string, unknown>;
}

/**
 * Calls that a policy makes wait for an operator: stored (the arguments sealed) so that they
 * survive a restart, decided through the API, or expired by the sweep when their deadline
 * passes. An approval names the hash of the arguments the operator saw, so it approves
 * exactly those.
 */
export class ApprovalService {
  readonly #store: RelationalStore;
  readonly #box: SecretBox;
  readonly #calls: ToolCallLog;
  readonly #settledListeners = new Set<(tenantId: string, approvalId: string) => void>();

  constructor(deps: { store: RelationalStore; box: SecretBox; calls: ToolCallLog }) {
    this.#store = deps.store;
    this.#box = deps.box;
    this.#calls = deps.calls;
  }

  /**
   * Calls `listener` when, on this node, a call that awaited approval ended: it ran after
   * an approval, was rejected, or expired. Resolves to a function that stops it.
   */
  onSettled(listener: (tenantId: string, approvalId: string) => void): () => void {
    this.#settledListeners.add(listener);
    return () => this.#settledListeners.delete(listener);
  }

  /** Tells the listeners that the call awaiting approval `approvalId` ended. */
  settled(tenantId: string, approvalId: string): void {
    for (const listener of this.#settledListeners) listener(tenantId, approvalId);
  }

  /** Records `call` as awaiting approval under `policy`, with its deadline. */
  async request(
    call: ToolCall,
    args: Record<string, unknown>,
    policy: string,
    timeoutMs: number,
  ): Promise<ToolApproval> {
    const id = newId('apr');
    const now = new Date();
    const row: ToolApprovalsTable = {
      id,
      tenant_id: call.tenant_id,
      call_id: call.id,
      tool: call.tool,
      tool_version: call.tool_version,
      policy,
      caller: JSON.stringify(call.caller),
      arguments: this.#box.seal(JSON.stringify(args), argumentsContext(id)),
      arguments_hash: argumentsHash(args),
      status: 'pending',
      deadline: new Date(now.getTime() + timeoutMs).toISOString(),
      decided_by: null,
      decided_at: null,
      reason: null,
      result: null,
      created_at: now.toISOString(),
    };
    call.status = 'awaiting_approval';
    call.approval_id = id;
    await this.#store.db.insertInto('tool_approvals').values(row).execute();
    await this.#calls.record(call);
    return this.#view(row);
  }

  async get(tenantId: string, id: string): Promise<ToolApproval> {
    return this.#view(await this.#row(tenantId, id));
  }

  async list(
    tenantId: string,
    options: {
      status?: ToolApprovalStatus | undefined;
      tool?: string | undefined;
      limit?: number | undefined;
      cursor?: string | undefined;
      maxBytes: number;
    },
  ): Promise<{ items: ToolApproval[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('apr_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tool_approvals')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    if (options.status !== undefined) query = query.where('status', '=', options.status);
    if (options.tool !== undefined) query = query.where('tool', '=', options.tool);
    return toPage(await query.execute(), limit, (r) => this.#view(r), options.maxBytes);
  }

  /**
   * Approves a pending call whose arguments hash to `hash`. Resolves to the approved call
   * for the executor to run; throws TOOL_APPROVAL_NOT_PENDING when it was decided or expired
   * meanwhile, TOOL_APPROVAL_ARGUMENTS_MISMATCH for another hash.
   */
  async approve(
    principal: Principal,
    id: string,
    hash: string,
    reason: string | undefined,
  ): Promise<ApprovedCall> {
    const row = await this.#row(principal.tenant.id, id);
    if (row.arguments_hash !== hash) {
      throw new ApiError(
        'TOOL_APPROVAL_ARGUMENTS_MISMATCH',
        'The arguments you reviewed are not the ones this call would run with',
        { details: { arguments_hash: row.arguments_hash } },
      );
    }
    const decided = await this.#decide(principal, row, 'approved', reason);
    return {
      approval: this.#view(decided),
      args: JSON.parse(this.#box.open(decided.arguments, argumentsContext(decided.id))) as Record<
        string,
        unknown
      >,
    };
  }

  /**
   * Withdraws a pending call whose task ended before anyone decided: it becomes `rejected`
   * (by `orchestra`), so that approving it later runs nothing. Resolves to whether it was
   * still pending.
   */
  async withdraw(tenantId: string, id: string, why: string): Promise<boolean> {
    const now = new Date().toISOString();
    const withdrawn = await this.#store.db
      .updateTable('tool_approvals')
      .set({ status: 'rejected', decided_by: 'orchestra', decided_at: now, reason: why })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .returningAll()
      .executeTakeFirst();
    if (withdrawn === undefined) return false;
    const call = await this.#calls.get(tenantId, withdrawn.call_id);
    Object.assign(call, {
      status: 'rejected',
      is_error: true,
      error: { code: 'TOOL_CALL_REJECTED', message: `Withdrawn: ${why}` },
      finished_at: now,
    } satisfies Partial<ToolCall>);
    await this.#calls.update(call, ['awaiting_approval']);
    this.settled(tenantId, id);
    return true;
  }

  /** Rejects a pending call; its record becomes `rejected`. */
  async reject(
    principal: Principal,
    id: string,
    reason: string | undefined,
  ): Promise<{ approval: ToolApproval; call: ToolCall }> {
    const row = await this.#row(principal.tenant.id, id);
    const decided = await this.#decide(principal, row, 'rejected', reason);
    const call = await this.#calls.get(row.tenant_id, row.call_id);
    const message = `Rejected by ${decided.decided_by}${reason ? `: ${reason}` : ''}`;
    Object.assign(call, {
      status: 'rejected',
      is_error: true,
      error: { code: 'TOOL_CALL_REJECTED', message },
      finished_at: decided.decided_at,
    } satisfies Partial<ToolCall>);
    await this.#calls.update(call, ['awaiting_approval']);
    this.settled(row.tenant_id, row.id);
    return { approval: this.#view(decided), call };
  }

  async #decide(
    principal: Principal,
    row: ToolApprovalsTable,
    status: 'approved' | 'rejected',
    reason: string | undefined,
  ): Promise<ToolApprovalsTable> {
    const now = new Date().toISOString();
    const decided = await this.#store.db
      .updateTable('tool_approvals')
      .set({ status, decided_by: credentialId(principal), decided_at: now, reason: reason ?? null })
      .where('id', '=', row.id)
      .where('status', '=', 'pending')
      .where('deadline', '>', now)
      .returningAll()
      .executeTakeFirst();
    if (decided === undefined) {
      const current = await this.#row(row.tenant_id, row.id);
      throw new ApiError(
        'TOOL_APPROVAL_NOT_PENDING',
        `Tool approval "${row.id}" is ${current.status === 'pending' ? 'past its deadline' : current.status}`,
        { details: { status: current.status } },
      );
    }
    return decided;
  }

  /** Keeps the result of an approved call, for whoever waits for it. */
  async storeResult(approvalId: string, result: ToolResult): Promise<void> {
    await this.#store.db
      .updateTable('tool_approvals')
      .set({ result: JSON.stringify(result) })
      .where('id', '=', approvalId)
      .execute();
  }

  /** Where the call awaiting approval `approvalId` is now (see `ApprovalOutcome`). */
  async outcome(tenantId: string, approvalId: string): Promise<ApprovalOutcome> {
    const row = await this.#row(tenantId, approvalId);
    if (row.status === 'pending') return 'pending';
    const call = await this.#calls.get(tenantId, row.call_id);
    if (call.status === 'awaiting_approval' || call.status === 'running') return 'running';
    return { call, result: row.result === null ? null : (JSON.parse(row.result) as ToolResult) };
  }

  /**
   * Waits up to `waitMs` for the call awaiting approval `approvalId` to end (run, rejected,
   * expired). Resolves to its record and, if it ran, its result; undefined on time out or
   * when `signal` aborts.
   */
  async waitForOutcome(
    tenantId: string,
    approvalId: string,
    waitMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ call: ToolCall; result: ToolResult | null } | undefined> {
    const until = Date.now() + waitMs;
    while (Date.now() < until && !signal?.aborted) {
      const outcome = await this.outcome(tenantId, approvalId);
      if (typeof outcome === 'object') return outcome;
      await new Promise((resolve) =>
        setTimeout(resolve, Math.min(POLL_MS, Math.max(1, until - Date.now()))),
      );
    }
    return undefined;
  }

  /** Expires pending approvals past their deadline, and their calls. Resolves to how many. */
  async expire(): Promise<number> {
    const now = new Date().toISOString();
    const expired = await this.#store.db
      .updateTable('tool_approvals')
      .set({ status: 'expired', decided_at: now })
      .where('status', '=', 'pending')
      .where('deadline', '<=', now)
      .returning(['id', 'tenant_id', 'call_id'])
      .execute();
    for (const row of expired) {
      const call = await this.#calls.get(row.tenant_id, row.call_id);
      Object.assign(call, {
        status: 'expired',
        is_error: true,
        error: {
          code: 'TOOL_APPROVAL_EXPIRED',
          message: 'Nobody approved the call before its deadline',
        },
        finished_at: now,
      } satisfies Partial<ToolCall>);
      await this.#calls.update(call, ['awaiting_approval']);
      this.settled(row.tenant_id, row.id);
    }
    return expired.length;
  }

  async #row(tenantId: string, id: string): Promise<ToolApprovalsTable> {
    const row = await this.#store.db
      .selectFrom('tool_approvals')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw approvalNotFound(id);
    return row;
  }

  #view(row: ToolApprovalsTable): ToolApproval {
    return {
      id: row.id,
      tenant_id: row.tenant_id,
      call_id: row.call_id,
      tool: row.tool,
      tool_version: row.tool_version,
      policy: row.policy,
      caller: JSON.parse(row.caller) as ToolCaller,
      arguments: JSON.parse(this.#box.open(row.arguments, argumentsContext(row.id))) as unknown,
      arguments_hash: row.arguments_hash,
      status: row.status as ToolApprovalStatus,
      deadline: row.deadline,
      decided_by: row.decided_by,
      decided_at: row.decided_at,
      reason: row.reason,
      created_at: row.created_at,
    };
  }
}
