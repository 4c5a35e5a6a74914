import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the templates module, in order. Names are global; never rename one. */
export const templatesMigrations: Record<string, Migration> = {
  '0002_templates': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('templates')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('latest_version', 'integer', (c) => c.notNull())
        .addColumn('highest_version', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('templates_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createTable('template_versions')
        .addColumn('template_id', 'text', (c) =>
          c.notNull().references('templates.id').onDelete('cascade'),
        )
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('template_versions_pk', ['template_id', 'version'])
        .execute();
      await db.schema
        .createTable('template_labels')
        .addColumn('template_id', 'text', (c) =>
          c.notNull().references('templates.id').onDelete('cascade'),
        )
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('template_labels_pk', ['template_id', 'key'])
        .execute();
      await db.schema
        .createIndex('template_labels_key_value_idx')
        .on('template_labels')
        .columns(['key', 'value'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('template_labels').execute();
      await db.schema.dropTable('template_versions').execute();
      await db.schema.dropTable('templates').execute();
    },
  },
};
