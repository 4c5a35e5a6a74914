import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the tools module, in order. Names are global; never rename one. */
export const toolsMigrations: Record<string, Migration> = {
  '0019_tools': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('tools')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('source_type', 'text', (c) => c.notNull())
        .addColumn('upstream', 'text', (c) => c.notNull())
        .addColumn('latest_version', 'integer', (c) => c.notNull())
        .addColumn('highest_version', 'integer', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('pinned_hash', 'text')
        .addColumn('pending', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('tools_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createIndex('tools_tenant_upstream_idx')
        .on('tools')
        .columns(['tenant_id', 'source_type', 'upstream'])
        .execute();
      await db.schema
        .createTable('tool_versions')
        .addColumn('tool_id', 'text', (c) => c.notNull().references('tools.id').onDelete('cascade'))
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('tool_versions_pk', ['tool_id', 'version'])
        .execute();
      await db.schema
        .createTable('tool_labels')
        .addColumn('tool_id', 'text', (c) => c.notNull().references('tools.id').onDelete('cascade'))
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('tool_labels_pk', ['tool_id', 'key'])
        .execute();
      await db.schema
        .createIndex('tool_labels_key_value_idx')
        .on('tool_labels')
        .columns(['key', 'value'])
        .execute();
      // No foreign key to tools: the record of a call outlives the tool.
      await db.schema
        .createTable('tool_calls')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('tool', 'text', (c) => c.notNull())
        .addColumn('tool_id', 'text', (c) => c.notNull())
        .addColumn('tool_version', 'integer', (c) => c.notNull())
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('upstream', 'text', (c) => c.notNull())
        .addColumn('credential', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('agent_id', 'text')
        .addColumn('task_id', 'text')
        .addColumn('session_id', 'text')
        .addColumn('arguments', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('is_error', 'integer', (c) => c.notNull())
        .addColumn('error', 'text')
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('duration_ms', 'integer')
        .addColumn('result_bytes', 'integer')
        .addColumn('approval_id', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('finished_at', 'text')
        .execute();
      await db.schema
        .createIndex('tool_calls_tenant_id_idx')
        .on('tool_calls')
        .columns(['tenant_id', 'id'])
        .execute();
      await db.schema
        .createIndex('tool_calls_tenant_tool_idx')
        .on('tool_calls')
        .columns(['tenant_id', 'tool', 'id'])
        .execute();
      await db.schema
        .createTable('tool_policies')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('tool_policies_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createTable('tool_approvals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('call_id', 'text', (c) => c.notNull())
        .addColumn('tool', 'text', (c) => c.notNull())
        .addColumn('tool_version', 'integer', (c) => c.notNull())
        .addColumn('policy', 'text', (c) => c.notNull())
        .addColumn('caller', 'text', (c) => c.notNull())
        .addColumn('arguments', 'text', (c) => c.notNull())
        .addColumn('arguments_hash', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('deadline', 'text', (c) => c.notNull())
        .addColumn('decided_by', 'text')
        .addColumn('decided_at', 'text')
        .addColumn('reason', 'text')
        .addColumn('result', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('tool_approvals_tenant_status_idx')
        .on('tool_approvals')
        .columns(['tenant_id', 'status', 'id'])
        .execute();
      await db.schema
        .createIndex('tool_approvals_pending_deadline_idx')
        .on('tool_approvals')
        .columns(['status', 'deadline'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('tool_approvals').execute();
      await db.schema.dropTable('tool_policies').execute();
      await db.schema.dropTable('tool_calls').execute();
      await db.schema.dropTable('tool_labels').execute();
      await db.schema.dropTable('tool_versions').execute();
      await db.schema.dropTable('tools').execute();
    },
  },
};
