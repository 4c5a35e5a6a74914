import type { Kysely } from 'kysely';
import type { Database } from '../store/database.ts';
import type { StoredAgentStatus } from './tables.ts';

// The agents module's figures for the stats module (GET /v1/stats): the agents table is
// read here only. `db` is the caller's executor, so that a summary runs on one connection.

/** The tenant's agents by stored status (`busy` is derived from what they hold). */
export async function agentsByStatus(
  db: Kysely<Database>,
  tenantId: string,
): Promise<{ status: StoredAgentStatus; n: number }[]> {
  const rows = await db
    .selectFrom('agents')
    .select(['status', (eb) => eb.fn.countAll<number | string>().as('n')])
    .where('tenant_id', '=', tenantId)
    .groupBy('status')
    .execute();
  return rows.map((r) => ({ status: r.status, n: Number(r.n) }));
}

/** The tenant's online agents and the tasks each may hold at once. */
export async function onlineAgentSlots(
  db: Kysely<Database>,
  tenantId: string,
): Promise<{ id: string; max_concurrency: number }[]> {
  return db
    .selectFrom('agents')
    .select(['id', 'max_concurrency'])
    .where('tenant_id', '=', tenantId)
    .where('status', '=', 'online')
    .execute();
}
