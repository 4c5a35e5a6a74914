import type { AgentsTables } from '../agents/tables.ts';
import type { EventLogTables } from '../events/tables.ts';
import type { GatewayTables } from '../gateway/tables.ts';
import type { KvTables } from '../kv/tables.ts';
import type { RealtimeTables } from '../realtime/tables.ts';
import type { SessionsTables } from '../sessions/tables.ts';
import type { TasksTables } from '../tasks/tables.ts';
import type { TemplatesTables } from '../templates/tables.ts';

/** Every table in the relational store; each module contributes its own. */
export type Database = GatewayTables &
  TemplatesTables &
  EventLogTables &
  TasksTables &
  AgentsTables &
  SessionsTables &
  RealtimeTables &
  KvTables;
