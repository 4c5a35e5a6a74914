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

export interface EventLogTables {
  event_streams: EventStreamsTable;
  events: EventsTable;
}
