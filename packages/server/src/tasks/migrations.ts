import { type Kysely, sql } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the tasks module. Names are global; never rename one. */
export const tasksMigrations: Record<string, Migration> = {
  '0004_tasks': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('template_id', 'text')
        .addColumn('template_name', 'text')
        .addColumn('template_version', 'integer')
        .addColumn('capabilities', 'text', (c) => c.notNull())
        .addColumn('input', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('priority', 'integer', (c) => c.notNull())
        .addColumn('timeout_ms', 'integer', (c) => c.notNull())
        .addColumn('max_attempts', 'integer', (c) => c.notNull())
        .addColumn('attempt', 'integer', (c) => c.notNull())
        .addColumn('strategy', 'text', (c) => c.notNull())
        .addColumn('concurrency_key', 'text')
        .addColumn('idempotency_key', 'text')
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('agent_id', 'text')
        .addColumn('result', 'text')
        .addColumn('error', 'text')
        .addColumn('cancel_requested_at', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('finished_at', 'text')
        .execute();
      // Same key, same task: the store decides, also between nodes.
      await db.schema
        .createIndex('tasks_idempotency_idx')
        .on('tasks')
        .columns(['tenant_id', 'idempotency_key'])
        .unique()
        .where(sql.ref('idempotency_key'), 'is not', null)
        .execute();
      // Dispatch picks queued tasks by priority, oldest first.
      await db.schema
        .createIndex('tasks_queue_idx')
        .on('tasks')
        .columns(['tenant_id', 'state', 'priority', 'id'])
        .execute();
      await db.schema
        .createTable('task_labels')
        .addColumn('task_id', 'text', (c) => c.notNull().references('tasks.id').onDelete('cascade'))
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('task_labels_pk', ['task_id', 'key'])
        .execute();
      await db.schema
        .createIndex('task_labels_key_value_idx')
        .on('task_labels')
        .columns(['key', 'value'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('task_labels').execute();
      await db.schema.dropTable('tasks').execute();
    },
  },
};
