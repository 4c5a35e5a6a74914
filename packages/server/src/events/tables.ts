/** Tables of the event log, shared by every module that keeps a stream. */
export interface EventStreamsTable {
  /** `<kind>:<resource id>`, such as `task:tsk_…`. */
  id: string;
  tenant_id: string;
  /** The offset of the newest event; 0 before the first. Offsets start at 1. */
  last_offset: number;
  created_at: string;
}

export interface EventsTable {
  stream_id: string;
  offset: number;
  type: string;
  /** JSON. */
  data: string;
  created_at: string;
}

/** A stream with events the JetStream export has not published yet. */
export interface EventExportPendingTable {
  stream_id: string;
  /** The stream's newest offset when it was last appended to. */
  marked_offset: number;
}

/** How far the JetStream export has published a stream. */
export interface EventExportOffsetsTable {
  stream_id: string;
  exported_offset: number;
}

export interface EventLogTables {
  event_streams: EventStreamsTable;
  events: EventsTable;
  event_export_pending: EventExportPendingTable;
  event_export_offsets: EventExportOffsetsTable;
}

declare module '../store/database.ts' {
  interface Database extends EventLogTables {}
}
