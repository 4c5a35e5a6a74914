import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the instances module, in order. Names are global; never rename one. */
export const instancesMigrations: Record<string, Migration> = {
  '0025_instances': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('workspace_templates')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('workspace_templates_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createTable('instances')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('template_id', 'text', (c) => c.notNull())
        .addColumn('template_name', 'text', (c) => c.notNull())
        .addColumn('template_version', 'integer', (c) => c.notNull())
        .addColumn('driver', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text', (c) => c.notNull())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('exit_code', 'integer')
        .addColumn('pid', 'integer')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('started_at', 'text')
        .addColumn('stopped_at', 'text')
        .execute();
      await db.schema
        .createIndex('instances_tenant_state_idx')
        .on('instances')
        .columns(['tenant_id', 'state', 'id'])
        .execute();
      await db.schema
        .createIndex('instances_tenant_template_idx')
        .on('instances')
        .columns(['tenant_id', 'template_id', 'id'])
        .execute();
      await db.schema
        .createIndex('instances_node_idx')
        .on('instances')
        .columns(['node_id', 'state'])
        .execute();
      await db.schema
        .createTable('instance_labels')
        .addColumn('instance_id', 'text', (c) =>
          c.notNull().references('instances.id').onDelete('cascade'),
        )
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('instance_labels_pk', ['instance_id', 'key'])
        .execute();
      await db.schema
        .createIndex('instance_labels_key_value_idx')
        .on('instance_labels')
        .columns(['tenant_id', 'key', 'value', 'instance_id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('instance_labels').execute();
      await db.schema.dropTable('instances').execute();
      await db.schema.dropTable('workspace_templates').execute();
    },
  },
  '0026_instance_lifetimes': {
    async up(db: Kysely<unknown>) {
      for (const [column, type] of [
        ['idle_timeout_ms', 'bigint'],
        ['last_active_at', 'text'],
        ['expires_at', 'text'],
      ] as const) {
        await db.schema.alterTable('instances').addColumn(column, type).execute();
      }
      // The sweep looks for what has expired, and what may be idle, on its node.
      await db.schema
        .createIndex('instances_expiry_idx')
        .on('instances')
        .columns(['node_id', 'expires_at'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('instances_expiry_idx').execute();
      for (const column of ['expires_at', 'last_active_at', 'idle_timeout_ms']) {
        await db.schema.alterTable('instances').dropColumn(column).execute();
      }
    },
  },
  '0029_instance_ports': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('instances').addColumn('ports', 'text').execute();
      await db.schema
        .createTable('instance_ports')
        .addColumn('port', 'integer', (c) => c.primaryKey())
        .addColumn('instance_id', 'text', (c) =>
          c.notNull().references('instances.id').onDelete('cascade'),
        )
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('instance_ports_instance_idx')
        .on('instance_ports')
        .column('instance_id')
        .execute();
      await db.schema
        .createTable('port_shares')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('instance_id', 'text', (c) =>
          c.notNull().references('instances.id').onDelete('cascade'),
        )
        .addColumn('port', 'integer', (c) => c.notNull())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('port_shares_instance_idx')
        .on('port_shares')
        .columns(['instance_id', 'id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('port_shares').execute();
      await db.schema.dropTable('instance_ports').execute();
      await db.schema.alterTable('instances').dropColumn('ports').execute();
    },
  },
  '0032_workspace_uploads': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('workspace_uploads')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('format', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('sha256', 'text', (c) => c.notNull())
        .addColumn('complete', 'integer', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('workspace_uploads_tenant_idx')
        .on('workspace_uploads')
        .columns(['tenant_id', 'id'])
        .execute();
      await db.schema
        .createTable('workspace_upload_chunks')
        .addColumn('upload_id', 'text', (c) =>
          c.notNull().references('workspace_uploads.id').onDelete('cascade'),
        )
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('workspace_upload_chunks_pk', ['upload_id', 'seq'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('workspace_upload_chunks').execute();
      await db.schema.dropTable('workspace_uploads').execute();
    },
  },
  '0030_instance_relocation': {
    async up(db: Kysely<unknown>) {
      // The node a lost instance was on, while another node is to start it from its base.
      await db.schema.alterTable('instances').addColumn('moved_from', 'text').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('instances').dropColumn('moved_from').execute();
    },
  },
};
