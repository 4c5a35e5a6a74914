import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the agents module. Names are global; never rename one. */
export const agentsMigrations: Record<string, Migration> = {
  '0005_agents': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('agents')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('capabilities', 'text', (c) => c.notNull())
        .addColumn('max_concurrency', 'integer', (c) => c.notNull())
        .addColumn('weight', 'integer', (c) => c.notNull())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('sdk', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('status_reason', 'text')
        .addColumn('node_id', 'text')
        .addColumn('connection_id', 'text')
        .addColumn('connected_at', 'text')
        .addColumn('last_heartbeat_at', 'text')
        .addColumn('lease_expires_at', 'text')
        .addColumn('load', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('agents_pk', ['tenant_id', 'id'])
        .execute();
      // The lease sweep looks for connected agents whose lease ran out.
      await db.schema
        .createIndex('agents_lease_idx')
        .on('agents')
        .columns(['status', 'lease_expires_at'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('agents').execute();
    },
  },
  '0016_agent_lease_clock': {
    async up(db: Kysely<unknown>) {
      // One row: when some node last ticked the lease clock (see AgentService.tickLeaseClock).
      await db.schema
        .createTable('agent_lease_clock')
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('alive_at', 'text', (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('agent_lease_clock').execute();
    },
  },
};
