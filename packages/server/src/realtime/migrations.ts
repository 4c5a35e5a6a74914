import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the realtime module. Names are global; never rename one. */
export const realtimeMigrations: Record<string, Migration> = {
  '0009_realtime': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('topics')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('epoch', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('topics_pk', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createTable('topic_presence')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('connection_id', 'text', (c) => c.notNull())
        .addColumn('client_id', 'text', (c) => c.notNull())
        .addColumn('info', 'text', (c) => c.notNull())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('joined_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('topic_presence_pk', ['tenant_id', 'topic', 'connection_id'])
        .execute();
      await db.schema
        .createIndex('topic_presence_node_idx')
        .on('topic_presence')
        .column('node_id')
        .execute();
      await db.schema
        .createIndex('topic_presence_expires_idx')
        .on('topic_presence')
        .column('expires_at')
        .execute();
      await db.schema
        .createTable('realtime_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('realtime_keys').execute();
      await db.schema.dropTable('topic_presence').execute();
      await db.schema.dropTable('topics').execute();
    },
  },
};
