import type { Agent, AgentStatus } from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import type { EventLog } from '../events/index.ts';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { Database } from '../store/database.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TaskRuntime } from '../tasks/index.ts';
import type { AgentsTable, StoredAgentStatus } from './tables.ts';

/** The stream of a tenant's agent status changes in the event log. */
export function agentsStream(tenantId: string): string {
  return `agents:${tenantId}`;
}

export interface Registration {
  agent_id: string;
  name?: string | undefined;
  capabilities: string[];
  max_concurrency: number;
  weight?: number | undefined;
  labels?: Record<string, string> | undefined;
  sdk?: { name: string; version: string } | undefined;
}

export interface AgentLoad {
  in_flight: number;
  cpu?: number | undefined;
  memory?: number | undefined;
}

export interface ListAgentsOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  status?: AgentStatus[] | undefined;
  capability?: string | undefined;
  /** About the most bytes of JSON the page may carry (ORCHESTRA_RESPONSE_MAX_BYTES). */
  maxBytes: number;
}

function agentNotFound(id: string): ApiError {
  return new ApiError('AGENT_NOT_FOUND', `Agent "${id}" does not exist`);
}

function shownStatus(row: AgentsTable, inFlight: number): AgentStatus {
  if (row.status === 'online' && inFlight >= row.max_concurrency) return 'busy';
  return row.status;
}

function view(row: AgentsTable, inFlight: string[]): Agent {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    status: shownStatus(row, inFlight.length),
    status_reason: row.status_reason,
    capabilities: JSON.parse(row.capabilities) as string[],
    max_concurrency: row.max_concurrency,
    weight: row.weight,
    labels: JSON.parse(row.labels) as Record<string, string>,
    sdk: row.sdk === null ? null : (JSON.parse(row.sdk) as Agent['sdk']),
    in_flight: inFlight,
    load: row.load === null ? null : (JSON.parse(row.load) as Agent['load']),
    node_id: row.node_id,
    connected_at: row.connected_at,
    last_heartbeat_at: row.last_heartbeat_at,
    lease_expires_at: row.lease_expires_at,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

/**
 * Agent records: who registered, on which node and connection, with which lease. The
 * connection id guards every write from a connection, so a stale connection (replaced
 * by a reconnect, possibly on another node) cannot overwrite the current one's record.
 */
/** How long what a tenant's online agents offer is reused (see `offeredCapabilities`). */
const OFFERED_TTL_MS = 250;
/** Agent ids per lease query; well below SQLite's and PostgreSQL's bound on parameters. */
const EXPIRED_CHUNK = 5_000;

export class AgentService {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #runtime: TaskRuntime;
  /**
   * What each tenant's online agents offer, read at most every OFFERED_TTL_MS: every task
   * submit asks (for its `waiting`), and agents change far less often than tasks come.
   * Dropped here at once when an agent of the tenant changes status on this node.
   */
  readonly #offered = new Map<string, { sets: string[][]; until: number }>();

  constructor(deps: { store: RelationalStore; events: EventLog; runtime: TaskRuntime }) {
    this.#store = deps.store;
    this.#events = deps.events;
    this.#runtime = deps.runtime;
  }

  /**
   * Records a (re)registration on this connection, with a fresh lease. Resolves to the
   * connection it replaced, if another one held the agent id and was still live.
   */
  /**
   * The capabilities of each of the tenant's agents that take new tasks now (connected and
   * not draining), on any node.
   */
  async offeredCapabilities(tenantId: string): Promise<string[][]> {
    const cached = this.#offered.get(tenantId);
    if (cached !== undefined && cached.until > performance.now()) return cached.sets;
    const rows = await this.#store.db
      .selectFrom('agents')
      .select('capabilities')
      .where('tenant_id', '=', tenantId)
      .where('status', '=', 'online')
      .execute();
    const sets = rows.map((r) => JSON.parse(r.capabilities) as string[]);
    if (this.#offered.size >= 10_000) this.#offered.clear();
    this.#offered.set(tenantId, { sets, until: performance.now() + OFFERED_TTL_MS });
    return sets;
  }

  async register(
    tenantId: string,
    registration: Registration,
    connection: { id: string; nodeId: string; leaseMs: number },
  ): Promise<{ replaced: string | undefined }> {
    const now = new Date();
    const at = now.toISOString();
    const fields = {
      name: registration.name ?? registration.agent_id,
      capabilities: JSON.stringify(registration.capabilities),
      max_concurrency: registration.max_concurrency,
      weight: registration.weight ?? 1,
      labels: JSON.stringify(registration.labels ?? {}),
      sdk: registration.sdk ? JSON.stringify(registration.sdk) : null,
      status: 'online' as const,
      status_reason: null,
      node_id: connection.nodeId,
      connection_id: connection.id,
      connected_at: at,
      last_heartbeat_at: at,
      lease_expires_at: new Date(now.getTime() + connection.leaseMs).toISOString(),
      load: null,
      updated_at: at,
    };
    const result = await this.#events.transaction(async (trx, emit) => {
      const previous = await this.#find(trx, tenantId, registration.agent_id, true);
      if (previous === undefined) {
        await trx
          .insertInto('agents')
          .values({ tenant_id: tenantId, id: registration.agent_id, created_at: at, ...fields })
          .execute();
      } else {
        await trx
          .updateTable('agents')
          .set(fields)
          .where('tenant_id', '=', tenantId)
          .where('id', '=', registration.agent_id)
          .execute();
      }
      await emit(agentsStream(tenantId), tenantId, [
        {
          type: 'agent.online',
          data: { agent_id: registration.agent_id, status: 'online', node_id: connection.nodeId },
        },
      ]);
      const replaced =
        previous?.connection_id != null && previous.connection_id !== connection.id
          ? previous.connection_id
          : undefined;
      return { replaced };
    });
    this.#offered.delete(tenantId); // its agents' status may have changed
    return result;
  }

  /** Renews the lease. False when this connection no longer holds the agent. */
  async heartbeat(
    tenantId: string,
    agentId: string,
    connectionId: string,
    load: AgentLoad,
    leaseMs: number,
  ): Promise<boolean> {
    const now = new Date();
    const result = await this.#store.db
      .updateTable('agents')
      .set({
        last_heartbeat_at: now.toISOString(),
        lease_expires_at: new Date(now.getTime() + leaseMs).toISOString(),
        load: JSON.stringify(load),
        updated_at: now.toISOString(),
      })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', agentId)
      .where('connection_id', '=', connectionId)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Sets the status of the agent as this connection holds it; false if it does not any more. */
  async setStatus(
    tenantId: string,
    agentId: string,
    connectionId: string,
    status: StoredAgentStatus,
    reason: string | null,
  ): Promise<boolean> {
    const changed = await this.#events.transaction(async (trx, emit) => {
      const disconnecting = status === 'offline' || status === 'error';
      const result = await trx
        .updateTable('agents')
        .set({
          status,
          status_reason: reason,
          updated_at: new Date().toISOString(),
          // The lease stays: a reconnect before it ends resumes the agent's tasks.
          ...(disconnecting ? { connection_id: null, node_id: null } : {}),
        })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', agentId)
        .where('connection_id', '=', connectionId)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) === 0) return false;
      await emit(agentsStream(tenantId), tenantId, [
        { type: `agent.${status}`, data: { agent_id: agentId, status, reason } },
      ]);
      return true;
    });
    this.#offered.delete(tenantId);
    return changed;
  }

  /**
   * Ticks the lease clock, so that leases are judged only by time in which the cluster could
   * hear heartbeats. Every node ticks before it judges leases. A tick that finds the last one
   * (by any node) older than `stallMs` knows that no node ran meanwhile (all were down, or
   * stalled): it extends every lease that was still running then by that gap, so that a
   * restart shorter than the heartbeat timeout re-runs nothing. The clock is compare-and-set,
   * so the gap is added once however many nodes see it. Resolves to the gap it bridged, if any.
   */
  async tickLeaseClock(
    now: Date,
    stallMs: number,
  ): Promise<{ gapMs: number; extended: number } | undefined> {
    const at = now.toISOString();
    const clock = await this.#store.db
      .selectFrom('agent_lease_clock')
      .select('alive_at')
      .where('id', '=', 1)
      .executeTakeFirst();
    if (clock === undefined) {
      await this.#store.db
        .insertInto('agent_lease_clock')
        .values({ id: 1, alive_at: at })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      return undefined;
    }
    const gapMs = now.getTime() - Date.parse(clock.alive_at);
    // Another node ticked a moment ago (or its clock is ahead): nothing to write. A quarter
    // of the stall time, so that ticks a sweep apart always write, even a little early.
    if (gapMs < stallMs / 4) return undefined;
    const moved = await this.#store.db
      .updateTable('agent_lease_clock')
      .set({ alive_at: at })
      .where('id', '=', 1)
      .where('alive_at', '=', clock.alive_at)
      .executeTakeFirst();
    if (gapMs <= stallMs || Number(moved.numUpdatedRows) === 0) return undefined;
    const running = await this.#store.db
      .selectFrom('agents')
      .select(['tenant_id', 'id', 'lease_expires_at'])
      .where('lease_expires_at', '>', clock.alive_at)
      .execute();
    for (const row of running) {
      if (row.lease_expires_at === null) continue;
      await this.#store.db
        .updateTable('agents')
        .set({ lease_expires_at: new Date(Date.parse(row.lease_expires_at) + gapMs).toISOString() })
        .where('tenant_id', '=', row.tenant_id)
        .where('id', '=', row.id)
        .where('lease_expires_at', '=', row.lease_expires_at)
        .execute();
    }
    return { gapMs, extended: running.length };
  }

  /**
   * Marks agents whose lease ran out while they were still recorded as connected (their
   * node died, or stopped hearing from them) offline. Safe on every node at once.
   */
  /** Which of these agents' leases ended before `at` (for the tasks module's lease sweep). */
  async expiredAmong(
    holders: { tenantId: string; agentId: string }[],
    at: string,
  ): Promise<{ tenantId: string; agentId: string }[]> {
    const byTenant = new Map<string, string[]>();
    for (const h of holders)
      byTenant.set(h.tenantId, [...(byTenant.get(h.tenantId) ?? []), h.agentId]);
    const expired: { tenantId: string; agentId: string }[] = [];
    for (const [tenantId, ids] of byTenant) {
      // Large chunks: the sweep asks every second, about every agent that holds a task.
      for (let i = 0; i < ids.length; i += EXPIRED_CHUNK) {
        const rows = await this.#store.db
          .selectFrom('agents')
          .select('id')
          .where('tenant_id', '=', tenantId)
          .where('id', 'in', ids.slice(i, i + EXPIRED_CHUNK))
          .where('lease_expires_at', '<', at)
          .execute();
        for (const r of rows) expired.push({ tenantId, agentId: r.id });
      }
    }
    return expired;
  }

  async expireLeases(now: Date = new Date()): Promise<{ tenantId: string; agentId: string }[]> {
    const at = now.toISOString();
    const expired = await this.#store.db
      .selectFrom('agents')
      .select(['tenant_id', 'id', 'connection_id'])
      .where('status', 'in', ['online', 'draining'])
      .where('lease_expires_at', '<', at)
      .limit(500)
      .execute();
    const gone: { tenantId: string; agentId: string }[] = [];
    for (const row of expired) {
      const changed = await this.#events.transaction(async (trx, emit) => {
        let update = trx
          .updateTable('agents')
          .set({
            status: 'offline',
            status_reason: 'no heartbeat before its lease ended',
            connection_id: null,
            node_id: null,
            updated_at: at,
          })
          .where('tenant_id', '=', row.tenant_id)
          .where('id', '=', row.id)
          .where('lease_expires_at', '<', at);
        update =
          row.connection_id === null
            ? update.where('connection_id', 'is', null)
            : update.where('connection_id', '=', row.connection_id);
        const result = await update.executeTakeFirst();
        if (Number(result.numUpdatedRows) === 0) return false;
        await emit(agentsStream(row.tenant_id), row.tenant_id, [
          {
            type: 'agent.offline',
            data: { agent_id: row.id, status: 'offline', reason: 'lease expired' },
          },
        ]);
        return true;
      });
      if (changed) {
        gone.push({ tenantId: row.tenant_id, agentId: row.id });
        this.#offered.delete(row.tenant_id);
      }
    }
    return gone;
  }

  /**
   * Forgets agents that have been offline or in error since before `before` and hold no
   * task, as `delete` would; each one leaves an `agent.deleted` event. Returns how many.
   * Safe on every node at once: the delete re-checks everything.
   */
  async forgetOffline(before: Date): Promise<number> {
    const cutoff = before.toISOString();
    const candidates = await this.#store.db
      .selectFrom('agents')
      .select(['tenant_id', 'id'])
      .where('status', 'in', ['offline', 'error'])
      .where('connection_id', 'is', null)
      .where('updated_at', '<', cutoff)
      .limit(500)
      .execute();
    let forgotten = 0;
    for (const row of candidates) {
      const deleted = await this.#events.transaction(async (trx, emit) => {
        // An offline agent is never given a task, so what it holds cannot change between
        // this check and the delete (the tasks module answers; its table is its own).
        if (await this.#runtime.agentHoldsTasks(trx, row.tenant_id, row.id)) return false;
        const result = await trx
          .deleteFrom('agents')
          .where('tenant_id', '=', row.tenant_id)
          .where('id', '=', row.id)
          .where('status', 'in', ['offline', 'error'])
          .where('connection_id', 'is', null)
          .where('updated_at', '<', cutoff)
          .executeTakeFirst();
        if (Number(result.numDeletedRows) === 0) return false;
        await emit(agentsStream(row.tenant_id), row.tenant_id, [
          {
            type: 'agent.deleted',
            data: { agent_id: row.id, reason: 'offline longer than the retention' },
          },
        ]);
        return true;
      });
      if (deleted) forgotten += 1;
    }
    return forgotten;
  }

  async list(
    principal: Principal,
    options: ListAgentsOptions,
  ): Promise<{ items: Agent[]; next_cursor: string | null }> {
    const tenantId = principal.tenant.id;
    const after = decodeCursor(options.cursor, (id) => id.length > 0 && id.length <= 128);
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    const wanted = new Set(options.status ?? []);
    const rows: AgentsTable[] = [];
    let cursor = after;
    let more = true;
    // `busy` is derived from in-flight counts, so status filters are applied after reading.
    while (more && rows.length <= limit) {
      let query = this.#store.db
        .selectFrom('agents')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .orderBy('id')
        .limit(limit + 1);
      if (cursor !== undefined) query = query.where('id', '>', cursor);
      if (wanted.size > 0) {
        const stored = [...wanted].map((s) => (s === 'busy' ? 'online' : s));
        query = query.where('status', 'in', stored as StoredAgentStatus[]);
      }
      const page = await query.execute();
      more = page.length === limit + 1;
      const active = await this.#runtime.activeByAgent(
        tenantId,
        page.map((r) => r.id),
      );
      for (const row of page) {
        cursor = row.id;
        const inFlight = active.get(row.id) ?? [];
        if (wanted.size > 0 && !wanted.has(shownStatus(row, inFlight.length))) continue;
        if (
          options.capability !== undefined &&
          !(JSON.parse(row.capabilities) as string[]).includes(options.capability)
        ) {
          continue;
        }
        rows.push(row);
        if (rows.length > limit) break;
      }
    }
    const active = await this.#runtime.activeByAgent(
      tenantId,
      rows.map((r) => r.id),
    );
    return toPage(rows, limit, (row) => view(row, active.get(row.id) ?? []), options.maxBytes);
  }

  async get(principal: Principal, id: string): Promise<Agent> {
    const row = await this.#find(this.#store.db, principal.tenant.id, id);
    if (row === undefined) throw agentNotFound(id);
    const active = await this.#runtime.activeByAgent(principal.tenant.id, [id]);
    return view(row, active.get(id) ?? []);
  }

  /**
   * Asks a connected agent to drain: it finishes what it holds and gets nothing new.
   * Resolves to the agent and the connection to tell.
   */
  async drain(principal: Principal, id: string): Promise<{ agent: Agent; connectionId: string }> {
    const tenantId = principal.tenant.id;
    const row = await this.#find(this.#store.db, tenantId, id);
    if (row === undefined) throw agentNotFound(id);
    if (row.connection_id === null) {
      throw new ApiError('AGENT_NOT_CONNECTED', `Agent "${id}" is not connected`, {
        details: { status: row.status },
      });
    }
    await this.setStatus(tenantId, id, row.connection_id, 'draining', 'drain requested');
    return { agent: await this.get(principal, id), connectionId: row.connection_id };
  }

  /** Forgets an agent that is not connected and holds no tasks. */
  async delete(principal: Principal, id: string): Promise<void> {
    const tenantId = principal.tenant.id;
    const row = await this.#find(this.#store.db, tenantId, id);
    if (row === undefined) throw agentNotFound(id);
    const active = (await this.#runtime.activeByAgent(tenantId, [id])).get(id) ?? [];
    if (row.connection_id !== null || active.length > 0) {
      throw new ApiError(
        'AGENT_CONNECTED',
        `Agent "${id}" is connected or still holds tasks; drain it and wait for it to disconnect`,
        { details: { status: shownStatus(row, active.length), in_flight: active } },
      );
    }
    const deleted = await this.#events.transaction(async (trx, emit) => {
      const result = await trx
        .deleteFrom('agents')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('connection_id', 'is', null)
        .executeTakeFirst();
      if (Number(result.numDeletedRows) === 0) return false;
      await emit(agentsStream(tenantId), tenantId, [
        { type: 'agent.deleted', data: { agent_id: id, reason: 'deleted by request' } },
      ]);
      return true;
    });
    if (!deleted) throw new ApiError('AGENT_CONNECTED', `Agent "${id}" connected meanwhile`);
  }

  async #find(
    db: Transaction<Database> | RelationalStore['db'],
    tenantId: string,
    id: string,
    lock = false,
  ): Promise<AgentsTable | undefined> {
    let query = db
      .selectFrom('agents')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id);
    if (lock && this.#store.kind === 'postgres') query = query.forUpdate();
    return query.executeTakeFirst();
  }
}
