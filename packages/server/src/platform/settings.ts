import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import Type, { type Static, type TSchema } from 'typebox';
import { Value } from 'typebox/value';

const LogLevel = Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export interface SettingSpec {
  /** Environment variable that sets it. */
  env: string;
  schema: TSchema;
  /** How a string from the environment becomes a value. */
  kind: 'int' | 'number' | 'bool' | 'string';
  /** What is allowed, in words, for error messages and the docs. */
  allowed: string;
  description: string;
  default?: unknown;
  /** Holds a secret: error messages never repeat the value. */
  secret?: true;
}

/**
 * Every setting Orchestra reads. The keys are the names used in the config file; `env` is
 * the environment variable, which wins over the file. README.md documents each one and a
 * test keeps the two in step.
 */
export const PLATFORM_SETTINGS = {
  port: {
    env: 'ORCHESTRA_PORT',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 65535 }),
    allowed: 'an integer from 0 to 65535 (0 picks a free port)',
    description: 'TCP port of the HTTP server.',
    default: 8080,
  },
  host: {
    env: 'ORCHESTRA_HOST',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a host name or IP address',
    description:
      'Address to listen on. `localhost` listens on loopback only; use `0.0.0.0` in containers.',
    default: 'localhost',
  },
  nodeUrl: {
    env: 'ORCHESTRA_NODE_URL',
    kind: 'string',
    schema: Type.String({ pattern: '^(https?://[^/\\s]+)?$' }),
    allowed: 'an http:// or https:// URL without a path, or empty',
    description:
      'Where the other nodes of a cluster reach this one (requests for an instance that lives here are forwarded to it). Empty: the address it listens on, which is right only when that is reachable from the other nodes (not `0.0.0.0`).',
    default: '',
  },
  dataDir: {
    env: 'ORCHESTRA_DATA_DIR',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a directory path',
    description: 'Directory for the SQLite database and the first-start admin key.',
    default: '.orchestra',
  },
  databaseUrl: {
    env: 'ORCHESTRA_DATABASE_URL',
    kind: 'string',
    schema: Type.String({ pattern: '^postgres(ql)?://' }),
    allowed: 'a postgres:// or postgresql:// URL',
    description: 'PostgreSQL connection URL. Unset: SQLite in the data directory.',
  },
  secretsKey: {
    env: 'ORCHESTRA_SECRETS_KEY',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: '32 bytes as base64 or 64 hex digits (openssl rand -base64 32)',
    description:
      'Key that encrypts what Orchestra stores sealed (named secrets, the realtime signing key). Unset: a key file `node-key` in the data directory, created with mode 0600 on first start. Every node of a cluster needs the same key. To rotate, set the new key here and the old one in ORCHESTRA_SECRETS_PREVIOUS_KEYS (decision 0016).',
    secret: true,
  },
  secretKey: {
    env: 'ORCHESTRA_SECRET_KEY',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: '32 bytes as base64 or 64 hex digits',
    description:
      'Deprecated name of ORCHESTRA_SECRETS_KEY, still read. Both set to different keys: the node refuses to start.',
    secret: true,
  },
  secretsPreviousKeys: {
    env: 'ORCHESTRA_SECRETS_PREVIOUS_KEYS',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'comma-separated keys, each 32 bytes as base64 or 64 hex digits',
    description:
      'Keys that sealed values before a rotation: they still open, and a background job seals them again with ORCHESTRA_SECRETS_KEY. Remove a key once the log says nothing is left under it.',
    secret: true,
  },
  databasePoolSize: {
    env: 'ORCHESTRA_DATABASE_POOL_SIZE',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1000 }),
    allowed: 'an integer from 1 to 1000',
    description: 'Maximum PostgreSQL connections per node.',
    default: 10,
  },
  databasePreparedStatements: {
    env: 'ORCHESTRA_DATABASE_PREPARED_STATEMENTS',
    kind: 'bool',
    schema: Type.Boolean(),
    allowed: 'true or false',
    description:
      'PostgreSQL: run the statements used again and again as named (prepared) statements, parsed and planned once per connection. Turn off behind a pooler that does not keep them across transactions (PgBouncer before 1.21 in transaction mode).',
    default: true,
  },
  logLevel: {
    env: 'ORCHESTRA_LOG_LEVEL',
    kind: 'string',
    schema: LogLevel,
    allowed: 'one of fatal, error, warn, info, debug, trace, silent',
    description: 'Minimum level of the JSON log lines written to stdout.',
    default: 'info',
  },
  jwtSecret: {
    env: 'ORCHESTRA_JWT_SECRET',
    kind: 'string',
    schema: Type.String({ minLength: 32 }),
    allowed: 'a string of at least 32 characters',
    description: 'Shared secret for HS256 bearer tokens. Unset: HS256 tokens are refused.',
    secret: true,
  },
  jwtJwksUrl: {
    env: 'ORCHESTRA_JWT_JWKS_URL',
    kind: 'string',
    schema: Type.String({ pattern: '^https?://' }),
    allowed: 'an http:// or https:// URL',
    description: 'JWKS endpoint for asymmetric bearer tokens (RS256, ES256, EdDSA…).',
  },
  jwtIssuer: {
    env: 'ORCHESTRA_JWT_ISSUER',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a non-empty string',
    description: 'Required `iss` claim of bearer tokens. Unset: not checked.',
  },
  jwtAudience: {
    env: 'ORCHESTRA_JWT_AUDIENCE',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a non-empty string',
    description: 'Required `aud` claim of bearer tokens. Unset: not checked.',
  },
  jwtTenantClaim: {
    env: 'ORCHESTRA_JWT_TENANT_CLAIM',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a claim name',
    description: 'Claim that names the tenant of a bearer token.',
    default: 'tenant_id',
  },
  jwtRoleClaim: {
    env: 'ORCHESTRA_JWT_ROLE_CLAIM',
    kind: 'string',
    schema: Type.String({ minLength: 1 }),
    allowed: 'a claim name',
    description: 'Claim that holds the role (admin, operator, agent, viewer) of a bearer token.',
    default: 'role',
  },
  rateLimitPerSecond: {
    env: 'ORCHESTRA_RATE_LIMIT_PER_SECOND',
    kind: 'number',
    schema: Type.Number({ minimum: 0 }),
    allowed: 'a number >= 0 (0 turns rate limiting off)',
    description: 'Sustained requests per second per credential (per IP without one).',
    default: 100,
  },
  rateLimitBurst: {
    env: 'ORCHESTRA_RATE_LIMIT_BURST',
    kind: 'int',
    schema: Type.Integer({ minimum: 1 }),
    allowed: 'an integer >= 1',
    description: 'Token bucket size: requests allowed at once before the sustained rate applies.',
    default: 200,
  },
  rateLimitBytesPerToken: {
    env: 'ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 268_435_456 }),
    allowed: 'an integer from 0 to 268435456 (0 turns byte charging off)',
    description:
      "Response bytes that cost one more rate-limit token: an answer of N bytes to a credential (a stream, or realtime history, as it is written) takes floor(N / this) tokens from its bucket beyond its request's one, so that a credential reading large pages gets proportionally fewer of them. The bucket may go into debt, one burst deep at most: its next requests get 429 until it has refilled; a stream is never cut.",
    default: 65_536,
  },
  authCacheTtlMs: {
    env: 'ORCHESTRA_AUTH_CACHE_TTL_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 300000 }),
    allowed: 'an integer from 0 to 300000 (0 turns the cache off)',
    description:
      'How long a node reuses an API key it has verified before asking the store again. A revoked key stops at once on the node that revoked it, and on other nodes within this time.',
    default: 5000,
  },
  bodyLimitBytes: {
    env: 'ORCHESTRA_BODY_LIMIT_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104857600 }),
    allowed: 'an integer from 1024 to 104857600',
    description: 'Largest accepted request body; larger ones get 413.',
    default: 1048576,
  },
  responseMaxBytes: {
    env: 'ORCHESTRA_RESPONSE_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 268_435_456 }),
    allowed: 'an integer from 1024 to 268435456',
    description:
      'About the most JSON one page of a list or history carries, and one read of an event stream; the rest follows through `next_cursor` (or `next_after`). A page always has at least one item, however large.',
    default: 4_194_304,
  },
  taskInputMaxBytes: {
    env: 'ORCHESTRA_TASK_INPUT_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104_857_600 }),
    allowed: 'an integer from 1024 to 104857600',
    description: 'Largest task `input`, as JSON text; a larger one gets 413 VALUE_TOO_LARGE.',
    default: 1_048_576,
  },
  taskOutputMaxBytes: {
    env: 'ORCHESTRA_TASK_OUTPUT_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104_857_600 }),
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest task `result` (or `error`) an agent may report, as JSON text; a larger one is refused with VALUE_TOO_LARGE and nothing is stored.',
    default: 1_048_576,
  },
  taskEventMaxBytes: {
    env: 'ORCHESTRA_TASK_EVENT_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104_857_600 }),
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest task event an agent may report (its `event` object, as JSON text); a larger one is refused with VALUE_TOO_LARGE and not stored.',
    default: 262_144,
  },
  topicMessageMaxBytes: {
    env: 'ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104_857_600 }),
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest `data` of one topic message, as JSON text (REST or WebSocket); a larger one is refused with VALUE_TOO_LARGE and nothing is stored.',
    default: 1_048_576,
  },
  headersTimeoutMs: {
    env: 'ORCHESTRA_HEADERS_TIMEOUT_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1000, maximum: 300_000 }),
    allowed: 'an integer from 1000 to 300000',
    description:
      'How long a client has to send a request line and headers, counted from the connection (or the end of its last request); then 408 and the connection closes. Also closes connections that send nothing.',
    default: 20000,
  },
  maxHeaderBytes: {
    env: 'ORCHESTRA_MAX_HEADER_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 4096, maximum: 1048576 }),
    allowed: 'an integer from 4096 to 1048576',
    description: 'Largest accepted request line and headers together; larger ones get 431.',
    default: 16384,
  },
  unauthenticatedConnectionsPerAddress: {
    env: 'ORCHESTRA_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Open connections one client address may hold before one of them authenticates (a request with a valid credential, an agent or realtime connection); more are answered 429 TOO_MANY_CONNECTIONS and closed. Not applied with ORCHESTRA_TRUST_PROXY, where every connection comes from the proxy.',
    default: 256,
  },
  shutdownTimeoutMs: {
    env: 'ORCHESTRA_SHUTDOWN_TIMEOUT_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 600000 }),
    allowed: 'an integer from 0 to 600000',
    description: 'How long shutdown waits for in-flight requests before closing connections.',
    default: 10000,
  },
  streamKeepAliveMs: {
    env: 'ORCHESTRA_STREAM_KEEPALIVE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1000, maximum: 600_000 }),
    allowed: 'an integer from 1000 to 600000',
    description:
      'How often an idle event stream (SSE or NDJSON) gets a keep-alive (an SSE comment, an empty NDJSON line), so that proxies do not close it; keep it below their idle timeout.',
    default: 15000,
  },
  streamCredentialCheckMs: {
    env: 'ORCHESTRA_STREAM_CREDENTIAL_CHECK_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 600_000 }),
    allowed: 'an integer from 100 to 600000',
    description:
      'How often an open event stream (SSE or NDJSON) checks its credential again; a revoked or expired one ends the stream with a stream.error item that carries the error code.',
    default: 5000,
  },
  maxEventLoopDelayMs: {
    env: 'ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0 }),
    allowed: 'an integer >= 0 (0 turns load shedding off)',
    description: 'Event-loop delay above which requests are shed with 503 and Retry-After.',
    default: 1000,
  },
  trustProxy: {
    env: 'ORCHESTRA_TRUST_PROXY',
    kind: 'bool',
    schema: Type.Boolean(),
    allowed: 'true or false',
    description: 'Trust X-Forwarded-For for the client IP (set behind a reverse proxy).',
    default: false,
  },
  tenantMaxConcurrency: {
    env: 'ORCHESTRA_TENANT_MAX_CONCURRENCY',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 10_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description: 'Most tasks of one tenant assigned or running at once, across all its agents.',
    default: 0,
  },
  tenantMaxTopics: {
    env: 'ORCHESTRA_TENANT_MAX_TOPICS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most realtime topics one tenant may hold; the publish that would create one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 10000,
  },
  tenantMaxConfigKeys: {
    env: 'ORCHESTRA_TENANT_MAX_CONFIG_KEYS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most config keys one tenant may hold, all environments together; the put that would create one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 10000,
  },
  tenantMaxTemplates: {
    env: 'ORCHESTRA_TENANT_MAX_TEMPLATES',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most templates one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 1000,
  },
  tenantMaxSecrets: {
    env: 'ORCHESTRA_TENANT_MAX_SECRETS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most named secrets one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 1000,
  },
  tenantMaxSessions: {
    env: 'ORCHESTRA_TENANT_MAX_SESSIONS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most sessions one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 10000,
  },
  tenantMonthlyTokens: {
    env: 'ORCHESTRA_TENANT_MONTHLY_TOKENS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 1_000_000_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most model tokens (input and output) one tenant’s hosted agents may use in a UTC calendar month; a run that would pass it ends with `BUDGET_EXCEEDED`.',
    default: 0,
  },
  tenantMonthlyCostCents: {
    env: 'ORCHESTRA_TENANT_MONTHLY_COST_CENTS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most cost, in US cents from the providers’ price tables, of one tenant’s hosted agents’ model calls in a UTC calendar month; a run that would pass it ends with `BUDGET_EXCEEDED`.',
    default: 0,
  },
  tenantMaxInstances: {
    env: 'ORCHESTRA_TENANT_MAX_INSTANCES',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most workspace instances one tenant may hold, in any state; creating one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 1_000,
  },
  tenantMaxRunningInstances: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most workspace instances of one tenant running (or being created or started) at once; creating or starting one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 100,
  },
  tenantMaxRunningCpus: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_CPUS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most CPUs (the sum of their templates’ `resources.cpus`) of one tenant’s running workspace instances; a create or start that would pass it is refused with `TENANT_LIMIT_REACHED`.',
    default: 0,
  },
  tenantMaxRunningMemoryBytes: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_MEMORY_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 1_099_511_627_776_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most memory (the sum of their `resources.memory_bytes`) of one tenant’s running workspace instances; a create or start that would pass it is refused with `TENANT_LIMIT_REACHED`.',
    default: 0,
  },
  tenantMaxStorageBytes: {
    env: 'ORCHESTRA_TENANT_MAX_STORAGE_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 1_099_511_627_776_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most storage (the sum of their `resources.storage_bytes`) of all one tenant’s workspace instances; a create that would pass it is refused with `TENANT_LIMIT_REACHED`.',
    default: 0,
  },
  tenantMaxTerminals: {
    env: 'ORCHESTRA_TENANT_MAX_TERMINALS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most terminals of one tenant running at once, all instances together; opening one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 100,
  },
  tenantMaxQueuedTasks: {
    env: 'ORCHESTRA_TENANT_MAX_QUEUED_TASKS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most tasks of one tenant waiting in `queued`; submitting one more is refused with `TENANT_LIMIT_REACHED`.',
    default: 100000,
  },
  natsUrl: {
    env: 'ORCHESTRA_NATS_URL',
    kind: 'string',
    schema: Type.String({
      pattern: '^\\s*(nats|tls)://[^,\\s]+\\s*(,\\s*(nats|tls)://[^,\\s]+\\s*)*$',
    }),
    allowed: 'comma-separated nats:// or tls:// URLs, such as nats://10.0.0.6:4222',
    description:
      'NATS servers that carry wake-ups and fan-out between the nodes of a cluster. Unset: they stay in the process, and other nodes learn of changes by polling the store.',
  },
  natsPrefix: {
    env: 'ORCHESTRA_NATS_PREFIX',
    kind: 'string',
    schema: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
    allowed: 'letters, digits, _ and -, up to 64',
    description:
      'First token of every NATS subject Orchestra uses; several installations can share one NATS.',
    default: 'orchestra',
  },
  redisUrl: {
    env: 'ORCHESTRA_REDIS_URL',
    kind: 'string',
    schema: Type.String({ pattern: '^rediss?://\\S+$' }),
    allowed: 'a redis:// or rediss:// URL, such as redis://10.0.0.7:6379/0',
    description:
      'Redis for rate limits shared by every node of a cluster. Unset: each node limits on its own.',
  },
  redisPrefix: {
    env: 'ORCHESTRA_REDIS_PREFIX',
    kind: 'string',
    schema: Type.String({ pattern: '^[A-Za-z0-9_:.-]{1,64}$' }),
    allowed: 'letters, digits and _ : . -, up to 64',
    description:
      'Prefix of every Redis key Orchestra writes; several installations can share one Redis.',
    default: 'orchestra:',
  },
  configMaxValueBytes: {
    env: 'ORCHESTRA_CONFIG_MAX_VALUE_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 1_048_576 }),
    allowed: 'an integer from 1024 to 1048576',
    description: 'Largest config value, as JSON text.',
    default: 131_072,
  },
  instanceId: {
    env: 'ORCHESTRA_INSTANCE_ID',
    kind: 'string',
    schema: Type.String({ minLength: 1, maxLength: 128 }),
    allowed: 'a string of 1 to 128 characters',
    description:
      'Name of this node in logs and error responses, and of its hosted runner (`hosted-runner.<id>`): a node restarted with the same id hands its hosted runs back at once instead of after the heartbeat timeout. Default: host name and pid.',
  },
} as const satisfies Record<string, SettingSpec>;

/** The values of a slice of settings: those with a default are always set. */
export type SettingsOf<S extends Record<string, SettingSpec>> = {
  -readonly [K in keyof S as S[K] extends { default: unknown } ? K : never]: Static<S[K]['schema']>;
} & {
  -readonly [K in keyof S as S[K] extends { default: unknown } ? never : K]?: Static<
    S[K]['schema']
  >;
};

/**
 * The settings of the modules, one slice each: a module's `settings.ts` adds its slice's
 * values here (TypeScript declaration merging), so that `Settings` knows every setting
 * without this file knowing the modules.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging
export interface ModuleSettings {}

/** Every setting of a node: the platform's, and each module's slice. */
export type Settings = Omit<SettingsOf<typeof PLATFORM_SETTINGS>, 'instanceId'> & {
  instanceId: string;
} & ModuleSettings;

/** A slice's own cross-setting rule: the problems of `values`, or none. */
export type SettingsCheck = (values: Settings) => string[];

/** One schema for a set of settings: what `loadSettings` returns is checked against it. */
function schemaOf(specs: Record<string, SettingSpec>) {
  return Type.Object(
    Object.fromEntries(
      Object.entries(specs).map(([k, s]) => [
        k,
        'default' in s || k === 'instanceId' ? s.schema : Type.Optional(s.schema),
      ]),
    ),
  );
}

/** Thrown when a setting is invalid; the message names the setting and what it allows. */
export class SettingsError extends Error {
  override name = 'SettingsError';
}

const CONFIG_FILE_ENV = 'ORCHESTRA_CONFIG_FILE';

function fromEnvString(spec: SettingSpec, raw: string): unknown {
  const text = raw.trim();
  switch (spec.kind) {
    case 'int':
      return /^-?\d+$/.test(text) ? Number(text) : raw;
    case 'number':
      return text !== '' && Number.isFinite(Number(text)) ? Number(text) : raw;
    case 'bool':
      if (/^(true|1|yes|on)$/i.test(text)) return true;
      if (/^(false|0|no|off)$/i.test(text)) return false;
      return raw;
    case 'string':
      return raw;
  }
}

/** A value for an error message: secrets reduced to their length, URL passwords masked. */
function describe(spec: SettingSpec, value: unknown): string {
  if (spec.secret) {
    return typeof value === 'string'
      ? `a hidden value of ${value.length} characters`
      : 'a hidden value';
  }
  return maskPasswords(JSON.stringify(value) ?? String(value));
}

/** `scheme://user:secret@host` → `scheme://user:***@host`, for logs and messages. */
export function maskPasswords(text: string): string {
  return text.replace(/(\/\/[^/:@\s]*:)[^@/\s]*@/g, '$1***@');
}

/**
 * Reads settings from a JSON config file (`configFile`, or `ORCHESTRA_CONFIG_FILE`), then
 * from `ORCHESTRA_*` environment variables, which win, then from `overrides` (CLI flags),
 * which win over both. Throws a `SettingsError` listing every invalid setting.
 */
export function loadSettingsFrom(
  specs: { settings: Record<string, SettingSpec>; checks: readonly SettingsCheck[] },
  env: NodeJS.ProcessEnv = process.env,
  options: { configFile?: string; overrides?: Record<string, unknown> } = {},
): Settings {
  const SETTINGS = specs.settings;
  const problems: string[] = [];
  const values: Record<string, unknown> = {};

  const configFile = options.configFile ?? env[CONFIG_FILE_ENV];
  if (configFile !== undefined && configFile !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(configFile, 'utf8'));
    } catch (err) {
      throw new SettingsError(
        `config file ${configFile}: cannot be read as JSON (${(err as Error).message})`,
        { cause: err },
      );
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new SettingsError(`config file ${configFile}: must hold a JSON object`);
    }
    for (const [key, value] of Object.entries(parsed)) {
      if (!(key in SETTINGS)) {
        problems.push(
          `config file ${configFile}: unknown setting "${key}"; known settings are ${Object.keys(SETTINGS).join(', ')}`,
        );
        continue;
      }
      const spec = SETTINGS[key] as SettingSpec;
      if (!Value.Check(spec.schema, value)) {
        problems.push(
          `config file ${configFile}: "${key}" is ${describe(spec, value)}; allowed: ${spec.allowed}`,
        );
        continue;
      }
      values[key] = value;
    }
  }

  for (const [key, spec] of Object.entries(SETTINGS)) {
    const raw = env[spec.env];
    if (raw === undefined || raw === '') continue;
    const value = fromEnvString(spec, raw);
    if (!Value.Check(spec.schema, value)) {
      problems.push(`${spec.env} is ${describe(spec, raw)}; allowed: ${spec.allowed}`);
      continue;
    }
    values[key] = value;
  }

  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value === undefined) continue;
    const spec = SETTINGS[key];
    if (spec === undefined) {
      problems.push(`unknown setting "${key}"`);
      continue;
    }
    const converted = typeof value === 'string' ? fromEnvString(spec, value) : value;
    if (!Value.Check(spec.schema, converted)) {
      problems.push(`${key} is ${describe(spec, value)}; allowed: ${spec.allowed}`);
      continue;
    }
    values[key] = converted;
  }

  if (problems.length > 0) {
    throw new SettingsError(`invalid settings:\n  - ${problems.join('\n  - ')}`);
  }

  for (const [key, spec] of Object.entries(SETTINGS)) {
    if (values[key] === undefined && 'default' in spec) values[key] = spec.default;
  }
  const checked = specs.checks.flatMap((check) => check(values as unknown as Settings));
  if (checked.length > 0) {
    throw new SettingsError(`invalid settings:\n  - ${checked.join('\n  - ')}`);
  }
  values.instanceId ??= `${hostname()}-${process.pid}`;
  values.dataDir = resolve(values.dataDir as string);

  const schema = schemaOf(SETTINGS);
  if (!Value.Check(schema, values)) {
    const first = Value.Errors(schema, values)[0];
    throw new SettingsError(`invalid settings: ${first?.instancePath} ${first?.message}`);
  }
  return values as unknown as Settings;
}
