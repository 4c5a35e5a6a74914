import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the usage module, in order. Names are global; never rename one. */
export const usageMigrations: Record<string, Migration> = {
  '0023_model_usage': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('model_usage')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('task_id', 'text', (c) => c.notNull())
        .addColumn('session_id', 'text')
        .addColumn('template', 'text')
        .addColumn('api_key', 'text', (c) => c.notNull())
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('model', 'text', (c) => c.notNull())
        .addColumn('input_tokens', 'bigint', (c) => c.notNull())
        .addColumn('output_tokens', 'bigint', (c) => c.notNull())
        .addColumn('cached_input_tokens', 'bigint', (c) => c.notNull())
        .addColumn('cost_nano_usd', 'bigint', (c) => c.notNull())
        .addColumn('tool_calls', 'integer', (c) => c.notNull())
        .addColumn('duration_ms', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('model_usage_tenant_time_idx')
        .on('model_usage')
        .columns(['tenant_id', 'created_at'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('model_usage').execute();
    },
  },
};
