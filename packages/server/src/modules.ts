import type { Migration } from 'kysely/migration';
import { agentsModule } from './agents/index.ts';
import { chatModule } from './chat/index.ts';
import { checkpointsModule } from './checkpoints/index.ts';
import { configModule } from './config/index.ts';
import { eventsModule } from './events/index.ts';
import { gatewayModule } from './gateway/index.ts';
import { instancesModule } from './instances/index.ts';
import { kvModule } from './kv/index.ts';
import { mcpModule } from './mcp/index.ts';
import { mcpGatewayModule } from './mcp-gateway/index.ts';
import type { AnyModule } from './module.ts';
import { opsModule } from './ops/index.ts';
import type { ErrorCode } from './platform/errors.ts';
import {
  loadSettingsFrom,
  PLATFORM_SETTINGS,
  type SettingSpec,
  type Settings,
} from './platform/settings.ts';
import { providersModule } from './providers/index.ts';
import { realtimeModule } from './realtime/index.ts';
import { registryModule } from './registry/index.ts';
import { runnersModule } from './runners/index.ts';
import { secretsModule } from './secrets/index.ts';
import { sessionsModule } from './sessions/index.ts';
import { statsModule } from './stats/index.ts';
import { tasksModule } from './tasks/index.ts';
import { templatesModule } from './templates/index.ts';
import { terminalsModule } from './terminals/index.ts';
import { toolsModule } from './tools/index.ts';
import { usageModule } from './usage/index.ts';
import { workspaceToolsModule } from './workspace-tools/index.ts';

/**
 * Every service module of the server. Adding a module is a folder with its declaration
 * (see module.ts) and one line here. The server builds them in dependency order, whatever
 * the order here; this order decides only where each one's routes and settings are listed.
 * Stops run in reverse: the registry (the node's registration) is listed before the agents
 * so that agents are closed before this node leaves the registry.
 */
export const MODULES: readonly AnyModule[] = [
  gatewayModule,
  eventsModule,
  templatesModule,
  kvModule,
  registryModule,
  configModule,
  secretsModule,
  tasksModule,
  agentsModule,
  sessionsModule,
  toolsModule,
  mcpModule,
  mcpGatewayModule,
  providersModule,
  usageModule,
  runnersModule,
  chatModule,
  instancesModule,
  checkpointsModule,
  terminalsModule,
  workspaceToolsModule,
  realtimeModule,
  statsModule,
  opsModule,
];

/** Modules a runner process (`orchestra runner`) leaves to the API nodes: they face clients. */
const API_ONLY_MODULES: ReadonlySet<string> = new Set(['chat', 'mcp-gateway', 'stats', 'config']);

/**
 * What `orchestra runner` runs: the hosted runners and what they need, in a node of a
 * cluster that serves no client-facing API beyond its own health, readiness and metrics.
 */
export const RUNNER_MODULES: readonly AnyModule[] = MODULES.filter(
  (m) => !API_ONLY_MODULES.has(m.name),
);

/** The migrations of the modules in `list`. Names sort in the order they must run. */
export function migrationsOf(list: readonly AnyModule[]): Record<string, Migration> {
  return Object.assign({}, ...list.map((m) => m.migrations ?? {}));
}

/** Every module's migrations. */
export const migrations = migrationsOf(MODULES);

/**
 * Every setting Orchestra reads: the platform's, then each module's slice. The keys are the
 * names used in the config file; README.md documents each one and a test keeps the two in
 * step.
 */
export const SETTINGS: Readonly<Record<keyof Settings & string, SettingSpec>> = Object.assign(
  {},
  PLATFORM_SETTINGS,
  ...MODULES.map((m) => m.settings ?? {}),
);

/**
 * Reads the node's settings (every module's slice) from a JSON config file, then from
 * `ORCHESTRA_*` environment variables, then from `overrides`; see `loadSettingsFrom`.
 */
export function loadSettings(
  env: NodeJS.ProcessEnv = process.env,
  options: { configFile?: string; overrides?: Partial<Record<keyof Settings, unknown>> } = {},
): Settings {
  return loadSettingsFrom(
    { settings: SETTINGS, checks: MODULES.flatMap((m) => m.checkSettings ?? []) },
    env,
    options,
  );
}

/** Error codes of the platform itself (requests, authentication, limits, availability). */
export const PLATFORM_ERRORS: readonly ErrorCode[] = [
  'BAD_REQUEST',
  'VALIDATION_FAILED',
  'INVALID_JSON',
  'INVALID_CURSOR',
  'UNAUTHENTICATED',
  'INVALID_TOKEN',
  'TOKEN_EXPIRED',
  'PERMISSION_DENIED',
  'ROUTE_NOT_FOUND',
  'TENANT_LIMIT_REACHED',
  'WRITE_CONFLICT',
  'REQUEST_TIMEOUT',
  'PRECONDITION_FAILED',
  'UPGRADE_REQUIRED',
  'PAYLOAD_TOO_LARGE',
  'VALUE_TOO_LARGE',
  'URI_TOO_LONG',
  'UNSUPPORTED_MEDIA_TYPE',
  'RATE_LIMITED',
  'TOO_MANY_CONNECTIONS',
  'HEADERS_TOO_LARGE',
  'INTERNAL_ERROR',
  'STORAGE_UNAVAILABLE',
  'SERVICE_OVERLOADED',
  'SHUTTING_DOWN',
  'AUTH_PROVIDER_UNAVAILABLE',
];
