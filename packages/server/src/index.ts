/** Public API of @orchestra/server: run the platform in-process, or build on its contracts. */
export { main as runCli } from './cli/main.ts';
export type { ApiKeyView, TenantView } from './gateway/index.ts';
export {
  type AnyModule,
  defineModule,
  type ModuleContext,
  type ModuleDeclaration,
  type ModuleInterfaces,
  type Platform,
} from './module.ts';
export { loadSettings, MODULES, SETTINGS } from './modules.ts';
export type { Principal, Role } from './platform/auth.ts';
export { ApiError, ERROR_CATALOGUE, type ErrorBody, type ErrorCode } from './platform/errors.ts';
export { type Settings, SettingsError } from './platform/settings.ts';
export {
  ADMIN_KEY_FILE,
  createLogger,
  type RunningServer,
  type StartOptions,
  startServer,
  VERSION,
} from './server.ts';
export {
  openStore,
  type RelationalStore,
  type StoreKind,
  type StoreOptions,
} from './store/store.ts';
