import type { Migration } from 'kysely/migration';
import { agentsMigrations } from './agents/index.ts';
import { eventLogMigrations } from './events/index.ts';
import { gatewayMigrations } from './gateway/index.ts';
import { kvMigrations } from './kv/index.ts';
import { realtimeMigrations } from './realtime/index.ts';
import { sessionsMigrations } from './sessions/index.ts';
import { tasksMigrations } from './tasks/index.ts';
import { templatesMigrations } from './templates/index.ts';

/** Every module's migrations. Names sort in the order they must run. */
export const migrations: Record<string, Migration> = {
  ...gatewayMigrations,
  ...templatesMigrations,
  ...eventLogMigrations,
  ...tasksMigrations,
  ...agentsMigrations,
  ...sessionsMigrations,
  ...realtimeMigrations,
  ...kvMigrations,
};
