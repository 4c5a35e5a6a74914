import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the checkpoints module, in order. Names are global; never rename one. */
export const checkpointsMigrations: Record<string, Migration> = {
  '0027_checkpoints': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('checkpoints')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('instance_id', 'text', (c) =>
          c.notNull().references('instances.id').onDelete('cascade'),
        )
        .addColumn('task_id', 'text')
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('commit_sha', 'text', (c) => c.notNull())
        .addColumn('tree_sha', 'text', (c) => c.notNull())
        .addColumn('files', 'integer', (c) => c.notNull())
        .addColumn('skipped', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('restored_at', 'text')
        .execute();
      await db.schema
        .createIndex('checkpoints_instance_idx')
        .on('checkpoints')
        .columns(['instance_id', 'id'])
        .execute();
      await db.schema
        .createIndex('checkpoints_task_idx')
        .on('checkpoints')
        .columns(['tenant_id', 'task_id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('checkpoints').execute();
    },
  },
};
