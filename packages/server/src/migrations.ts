import type { Migration } from 'kysely/migration';
import { agentsMigrations } from './agents/migrations.ts';
import { eventLogMigrations } from './events/migrations.ts';
import { gatewayMigrations } from './gateway/migrations.ts';
import { kvMigrations } from './kv/migrations.ts';
import { realtimeMigrations } from './realtime/migrations.ts';
import { sessionsMigrations } from './sessions/migrations.ts';
import { tasksMigrations } from './tasks/migrations.ts';
import { templatesMigrations } from './templates/migrations.ts';

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
