import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the event log. Names are global; never rename one. */
export const eventLogMigrations: Record<string, Migration> = {
  '0003_event_log': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('event_streams')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('last_offset', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('events')
        .addColumn('stream_id', 'text', (c) =>
          c.notNull().references('event_streams.id').onDelete('cascade'),
        )
        .addColumn('offset', 'integer', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('events_pk', ['stream_id', 'offset'])
        .execute();
      // Retention deletes by age.
      await db.schema
        .createIndex('events_created_at_idx')
        .on('events')
        .column('created_at')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('events').execute();
      await db.schema.dropTable('event_streams').execute();
    },
  },
  '0012_event_export': {
    async up(db: Kysely<unknown>) {
      // Streams with events not yet exported to JetStream (cluster mode): marked by the
      // append, cleared by the exporter once it has published up to the stream's head.
      await db.schema
        .createTable('event_export_pending')
        .addColumn('stream_id', 'text', (c) =>
          c.primaryKey().references('event_streams.id').onDelete('cascade'),
        )
        // The stream's newest offset at the last append; the mark goes once exported to it.
        .addColumn('marked_offset', 'integer', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('event_export_offsets')
        .addColumn('stream_id', 'text', (c) =>
          c.primaryKey().references('event_streams.id').onDelete('cascade'),
        )
        .addColumn('exported_offset', 'integer', (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('event_export_offsets').execute();
      await db.schema.dropTable('event_export_pending').execute();
    },
  },
};
