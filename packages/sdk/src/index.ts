export { Orchestra, type OrchestraOptions } from './client.ts';
export { type ErrorPayload, OrchestraError } from './errors.ts';
export type {
  ApiKey,
  ApiKeyWithSecret,
  CreateApiKeyInput,
  CreatedTenant,
  CreateTemplateInput,
  CreateTenantInput,
  ListApiKeysOptions,
  ListTemplatesOptions,
  Page,
  PageOptions,
  Readiness,
  Role,
  Template,
  TemplateDefinition,
  TemplateStrategy,
  TemplateVersionSummary,
  Tenant,
  WhoAmI,
} from './types.ts';
