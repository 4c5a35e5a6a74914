import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the sessions module. Names are global; never rename one. */
export const sessionsMigrations: Record<string, Migration> = {
  '0007_sessions': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text')
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('metadata', 'text', (c) => c.notNull())
        .addColumn('multitask_strategy', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('sessions_tenant_idx')
        .on('sessions')
        .columns(['tenant_id', 'id'])
        .execute();
      await db.schema
        .createTable('session_labels')
        .addColumn('session_id', 'text', (c) =>
          c.notNull().references('sessions.id').onDelete('cascade'),
        )
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('session_labels_pk', ['session_id', 'key'])
        .execute();
      await db.schema
        .createIndex('session_labels_key_value_idx')
        .on('session_labels')
        .columns(['key', 'value'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('session_labels').execute();
      await db.schema.dropTable('sessions').execute();
    },
  },
};
