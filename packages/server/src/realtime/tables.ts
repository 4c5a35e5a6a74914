/** Tables of the realtime module. */
export interface TopicsTable {
  tenant_id: string;
  /** The topic name, such as `chat.room-1`. Only user topics have a row. */
  name: string;
  /** Changes when the topic is deleted and created again: offsets start over then. */
  epoch: string;
  created_at: string;
}

/** Who is present on a topic: one row per member subscription, owned by a node. */
export interface TopicPresenceTable {
  tenant_id: string;
  topic: string;
  connection_id: string;
  client_id: string;
  /** JSON object. */
  info: string;
  node_id: string;
  joined_at: string;
  /** The owning node renews this; a row past it belongs to a dead node and is removed. */
  expires_at: string;
}

/** Keys that sign realtime tokens; every node reads the same ones. */
export interface RealtimeKeysTable {
  id: string;
  secret: string;
  created_at: string;
}

export interface RealtimeTables {
  topics: TopicsTable;
  topic_presence: TopicPresenceTable;
  realtime_keys: RealtimeKeysTable;
}

declare module '../store/database.ts' {
  interface Database extends RealtimeTables {}
}
