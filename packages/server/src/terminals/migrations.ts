import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the terminals module, in order. Names are global; never rename one. */
export const terminalsMigrations: Record<string, Migration> = {
  '0028_terminals': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('terminals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('instance_id', 'text', (c) =>
          c.notNull().references('instances.id').onDelete('cascade'),
        )
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('command', 'text', (c) => c.notNull())
        .addColumn('cwd', 'text', (c) => c.notNull())
        .addColumn('cols', 'integer', (c) => c.notNull())
        .addColumn('rows', 'integer', (c) => c.notNull())
        .addColumn('title', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('exit_code', 'integer')
        .addColumn('signal', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('exited_at', 'text')
        .execute();
      await db.schema
        .createIndex('terminals_instance_idx')
        .on('terminals')
        .columns(['instance_id', 'id'])
        .execute();
      await db.schema
        .createIndex('terminals_tenant_state_idx')
        .on('terminals')
        .columns(['tenant_id', 'state'])
        .execute();
      await db.schema
        .createIndex('terminals_node_state_idx')
        .on('terminals')
        .columns(['node_id', 'state'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('terminals').execute();
    },
  },
};
