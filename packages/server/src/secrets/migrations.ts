import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the secrets module, in order. Names are global; never rename one. */
export const secretsMigrations: Record<string, Migration> = {
  '0018_secrets': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('secrets')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('key_id', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('secrets_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createIndex('secrets_key_id_idx')
        .on('secrets')
        .columns(['key_id', 'id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('secrets').execute();
    },
  },
};
