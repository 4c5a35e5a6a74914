// @orchestra/protocol: the wire contract of Orchestra (decision 0014). TypeBox schemas of
// every request, response, event and frame, which the server validates with and generates
// OpenAPI from, and whose static types the SDK uses; plus everything of
// `@orchestra/protocol/constants` (error codes, states, names, bounds).

export {
  AGENT_FRAMES,
  Agent,
  type AgentFrameKind,
  type AgentFramePayload,
  AgentStatusSchema,
  AssignedTask,
  ErrorFramePayload,
  SERVER_AGENT_FRAMES,
  type ServerAgentFrameKind,
  type ServerAgentFramePayload,
} from './agents.ts';
export {
  Capability,
  DEFAULT_PAGE_LIMIT,
  ErrorResponse,
  errorResponses,
  eventStreamResponse,
  Header,
  LabelSelectors,
  Labels,
  NullableTimestamp,
  Page,
  PageQuery,
  parseLabelSelectors,
  StreamError,
  StreamGap,
  Timestamp,
} from './common.ts';
export {
  ConfigActor,
  ConfigDeleted,
  ConfigDiff,
  ConfigEnvironment,
  ConfigHistoryEntry,
  ConfigHistoryPage,
  ConfigItem,
  ConfigPage,
  ConfigSchema,
  ConfigSchemaList,
  ConfigWatchEvent,
  PutConfig,
  PutConfigSchema,
  RevertConfig,
} from './config.ts';
export * from './constants.ts';
export { frameChecker } from './frames.ts';
export {
  ApiKey,
  ApiKeyWithSecret,
  CreateApiKey,
  CreatedTenant,
  CreateTenant,
  Role,
  TENANT_LIMIT_NAMES,
  TENANT_LIMITS,
  Tenant,
  TenantId,
  type TenantLimitName,
  TenantLimitOverridesSchema,
  type TenantLimits,
  TenantLimitsPatch,
  TenantLimitValues,
  UpdateTenant,
  WhoAmI,
} from './identity.ts';
export { ClusterNode, type DependencyCheck, Readiness } from './ops.ts';
export {
  CreateRealtimeToken,
  PresenceInfo,
  PresenceMember,
  Published,
  PublishMessage,
  REALTIME_FRAMES,
  REALTIME_SERVER_FRAMES,
  type RealtimeFrameKind,
  type RealtimeFramePayload,
  type RealtimeServerFrameKind,
  type RealtimeServerFramePayload,
  RealtimeToken,
  Topic,
  TopicHistory,
  TopicMessage,
  TopicStreamEvent,
} from './realtime.ts';
export {
  GrantLease,
  HealthCheck,
  InstanceLoad,
  InstanceMetadata,
  Lease,
  RegisterInstance,
  ReportLoad,
  ServiceInstance,
  ServiceInstancePage,
  ServiceList,
  ServiceSummary,
  ServiceWatchEvent,
} from './registry.ts';
export {
  ListSecretsQuery,
  PutSecret,
  SECRET_VALUE_MAX_BYTES,
  Secret,
  SecretName,
  SecretRef,
} from './secrets.ts';
export {
  CreateSession,
  MultitaskStrategySchema,
  Session,
  SessionEvent,
} from './sessions.ts';
export {
  FinishedCounts,
  Percentiles,
  Stats,
  StatsMinute,
} from './stats.ts';
export {
  CreateTask,
  CreateTaskBatch,
  Task,
  TaskError,
  TaskEvent,
  TaskState,
  TaskWaiting,
} from './tasks.ts';
export {
  CreateTemplate,
  Rollback,
  Strategy,
  Template,
  TemplateName,
  TemplateRef,
  type TemplateSpec,
  TemplateSpecFields,
  TemplateVersionSummary,
  UpdateTemplate,
} from './templates.ts';
