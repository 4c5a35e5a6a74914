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
  '0006_task_dispatch': {
    async up(db: Kysely<unknown>) {
      for (const column of [
        'not_before',
        'assigned_at',
        'started_at',
        'deadline_at',
        'cancel_deadline_at',
      ]) {
        await db.schema.alterTable('tasks').addColumn(column, 'text').execute();
      }
      await db.schema
        .alterTable('tasks')
        .addColumn('event_seq', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable('tasks').addColumn('concurrency_limit', 'integer').execute();
      // Dispatch reads the queue highest priority first, then oldest: an index in that order
      // saves sorting the whole queue on every pass.
      await db.schema.dropIndex('tasks_queue_idx').execute();
      await db.schema
        .createIndex('tasks_queue_idx')
        .on('tasks')
        .columns(['tenant_id', 'state', 'priority desc', 'id'])
        .execute();
      await db.schema
        .createIndex('tasks_agent_idx')
        .on('tasks')
        .columns(['tenant_id', 'agent_id', 'state'])
        .execute();
      await db.schema
        .createIndex('tasks_deadline_idx')
        .on('tasks')
        .columns(['state', 'deadline_at'])
        .execute();
      await db.schema
        .createIndex('tasks_concurrency_key_idx')
        .on('tasks')
        .columns(['tenant_id', 'concurrency_key', 'state'])
        .where(sql.ref('concurrency_key'), 'is not', null)
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('tasks_concurrency_key_idx').execute();
      await db.schema.dropIndex('tasks_deadline_idx').execute();
      await db.schema.dropIndex('tasks_agent_idx').execute();
      await db.schema.dropIndex('tasks_queue_idx').execute();
      await db.schema
        .createIndex('tasks_queue_idx')
        .on('tasks')
        .columns(['tenant_id', 'state', 'priority', 'id'])
        .execute();
      for (const column of [
        'concurrency_limit',
        'event_seq',
        'cancel_deadline_at',
        'deadline_at',
        'started_at',
        'assigned_at',
        'not_before',
      ]) {
        await db.schema.alterTable('tasks').dropColumn(column).execute();
      }
    },
  },
  '0008_task_sessions': {
    async up(db: Kysely<unknown>) {
      // Deleting a session deletes its tasks (the service refuses while one is unfinished).
      await db.schema
        .alterTable('tasks')
        .addColumn('session_id', 'text', (c) => c.references('sessions.id').onDelete('cascade'))
        .execute();
      await db.schema
        .createIndex('tasks_session_idx')
        .on('tasks')
        .columns(['session_id', 'state', 'id'])
        .where(sql.ref('session_id'), 'is not', null)
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('tasks_session_idx').execute();
      await db.schema.alterTable('tasks').dropColumn('session_id').execute();
    },
  },
  '0013_task_stats': {
    async up(db: Kysely<unknown>) {
      // GET /v1/stats counts the tasks submitted and finished in the last minutes. "If not
      // exists": on a large PostgreSQL table an operator may build them beforehand with
      // CREATE INDEX CONCURRENTLY (README, "Cluster mode"), which does not block writes.
      await db.schema
        .createIndex('tasks_created_idx')
        .ifNotExists()
        .on('tasks')
        .columns(['tenant_id', 'created_at'])
        .execute();
      await db.schema
        .createIndex('tasks_finished_idx')
        .ifNotExists()
        .on('tasks')
        .columns(['tenant_id', 'finished_at'])
        .where(sql.ref('finished_at'), 'is not', null)
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('tasks_finished_idx').execute();
      await db.schema.dropIndex('tasks_created_idx').execute();
    },
  },
  '0014_task_queued_at': {
    async up(db: Kysely<unknown>) {
      // Null for the tasks already there: readers fall back to created_at, so that no
      // upgrade rewrites every task.
      await db.schema.alterTable('tasks').addColumn('queued_at', 'text').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').dropColumn('queued_at').execute();
    },
  },
  '0015_task_dispatch_lanes': {
    async up(db: Kysely<unknown>) {
      // Dispatch reads the queue per capability set (lane), highest priority first, then
      // oldest, and finds the lanes by a loose scan: tasks that no free agent can take are
      // skipped by the index, not read. Only queued tasks are in it, so finished ones cost
      // it nothing. "If not exists": see 0013.
      await db.schema
        .createIndex('tasks_lane_idx')
        .ifNotExists()
        .on('tasks')
        .columns(['tenant_id', 'capabilities', 'priority desc', 'id'])
        .where(sql.ref('state'), '=', sql.lit('queued'))
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('tasks_lane_idx').execute();
    },
  },
  '0031_task_instance': {
    async up(db: Kysely<unknown>) {
      // The instance a task works in (its agent's workspace tools act on it); null for the
      // tasks already there.
      await db.schema.alterTable('tasks').addColumn('instance_id', 'text').execute();
      // The tasks of an instance, newest first; only the tasks that name one are in it.
      await db.schema
        .createIndex('tasks_instance_idx')
        .ifNotExists()
        .on('tasks')
        .columns(['tenant_id', 'instance_id', 'id'])
        .where(sql.ref('instance_id'), 'is not', null)
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('tasks_instance_idx').ifExists().execute();
      await db.schema.alterTable('tasks').dropColumn('instance_id').execute();
    },
  },
  '0024_task_waiting': {
    async up(db: Kysely<unknown>) {
      // What a task in awaiting_approval waits for (JSON, Task.waiting); null otherwise.
      await db.schema.alterTable('tasks').addColumn('waiting', 'text').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').dropColumn('waiting').execute();
    },
  },
};
