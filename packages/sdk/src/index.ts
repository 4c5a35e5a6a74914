export { Orchestra, type OrchestraOptions } from './client.ts';
export { type ErrorPayload, OrchestraError } from './errors.ts';
export type {
  ApiKey,
  ApiKeyWithSecret,
  CreateApiKeyInput,
  CreatedTenant,
  CreateTenantInput,
  ListApiKeysOptions,
  Page,
  PageOptions,
  Readiness,
  Role,
  Tenant,
  WhoAmI,
} from './types.ts';
