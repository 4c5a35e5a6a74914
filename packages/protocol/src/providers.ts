import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';
import { SecretName } from './secrets.ts';

// Model providers (`/v1/model-providers`): the model APIs hosted agents call. Two wire
// protocols cover them: OpenAI Chat Completions (OpenAI, Azure OpenAI's v1 API, vLLM,
// Ollama, llama.cpp server, LM Studio, OpenRouter…) and Anthropic Messages.

export const ModelProviderName = Type.String({
  pattern: '^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$',
  description:
    'Lowercase letters, digits, "-" and single "_"; 1 to 63 characters; unique in the tenant.',
});

export const ModelProviderRef = Type.Object({
  provider: Type.String({ maxLength: 64, description: 'The provider’s name or id (`mpr_…`).' }),
});

export const MODEL_PROVIDER_KINDS = ['openai', 'anthropic'] as const;
export const ModelProviderKind = Type.Enum([...MODEL_PROVIDER_KINDS], {
  description:
    '`openai`: the OpenAI Chat Completions API and every server compatible with it (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter, Azure OpenAI’s v1 API). `anthropic`: the Anthropic Messages API.',
});
export type ModelProviderKind = Static<typeof ModelProviderKind>;

export const ModelName = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: '^[^\\s\\u0000]+$',
  description: 'The model’s name as the provider knows it, such as `gpt-4.1-mini`.',
});

const Price = Type.Number({ minimum: 0, maximum: 1_000_000 });

/** What a model costs, in US dollars per million tokens. */
export const ModelPrice = Type.Object(
  {
    input: Price,
    output: Price,
    cached_input: Type.Optional(Price),
  },
  {
    additionalProperties: false,
    description:
      'US dollars per million tokens: `input` (prompt), `output` (completion) and `cached_input` (prompt tokens the provider served from its cache; default: the input price).',
  },
);
export type ModelPrice = Static<typeof ModelPrice>;

export const ProviderModel = Type.Object(
  {
    name: ModelName,
    price: Type.Optional(ModelPrice),
    context_window: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100_000_000,
        description: 'Most tokens of input and output together; memory policies fit within it.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ProviderModel = Static<typeof ProviderModel>;

/** A provider and one of its models. */
export const ModelRef = Type.Object(
  { provider: ModelProviderName, model: ModelName },
  { additionalProperties: false },
);
export type ModelRef = Static<typeof ModelRef>;

const HeaderValue = Type.String({
  maxLength: 8192,
  pattern: '^[^\\u0000\\r\\n]*$',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
  description: 'May refer to secrets as `${secret:NAME}`; resolved at each request.',
});

export const ModelProviderSpecFields = {
  kind: ModelProviderKind,
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  base_url: Type.String({
    maxLength: 2048,
    pattern: '^https?://[^\\s]+$',
    description:
      'The API’s base URL, as its official client takes it: `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1` (Ollama), `https://api.anthropic.com` (Anthropic).',
  }),
  api_key_secret: Type.Optional(
    Type.Union([SecretName, Type.Null()], {
      description:
        'The name of the secret that holds the API key, read at each request. None for servers that take no key (a local Ollama).',
    }),
  ),
  headers: Type.Optional(
    Type.Record(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$" }), HeaderValue, {
      maxProperties: 50,
      additionalProperties: false,
      description: 'More headers sent with every request.',
    }),
  ),
  models: Type.Array(ProviderModel, {
    minItems: 1,
    maxItems: 500,
    description: 'The models templates may use, with their prices. Names are unique.',
  }),
  max_concurrency: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 10_000,
      description:
        'Most requests in flight to this provider from one node; more wait their turn. Default 32.',
    }),
  ),
  requests_per_minute: Type.Optional(
    Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()], {
      description: 'Most requests a minute from one node; more wait their turn. Default: no limit.',
    }),
  ),
  timeout_ms: Type.Optional(
    Type.Integer({
      minimum: 1000,
      maximum: 3_600_000,
      description: 'Longest a request may take, whole answer included. Default 120000.',
    }),
  ),
  idle_timeout_ms: Type.Optional(
    Type.Integer({
      minimum: 500,
      maximum: 600_000,
      description:
        'Longest wait for the next piece of a streamed answer before the request is given up as stalled. Default 30000.',
    }),
  ),
  max_retries: Type.Optional(
    Type.Integer({
      minimum: 0,
      maximum: 10,
      description:
        'Retries of a request refused with 408, 409, 429 or 5xx, or whose connection failed before an answer began, honouring `Retry-After`. Default 2.',
    }),
  ),
  fallbacks: Type.Optional(
    Type.Array(ModelRef, {
      maxItems: 5,
      description:
        'Where a call goes, in order, when this provider fails it after its retries (or its circuit is open). A template’s own fallbacks come first.',
    }),
  ),
  enabled: Type.Optional(Type.Boolean({ description: 'Default true.' })),
};

export const CreateModelProvider = Type.Object(
  { name: ModelProviderName, ...ModelProviderSpecFields },
  { additionalProperties: false },
);
export type CreateModelProvider = Static<typeof CreateModelProvider>;

export const UpdateModelProvider = Type.Object(ModelProviderSpecFields, {
  additionalProperties: false,
});
export type UpdateModelProvider = Static<typeof UpdateModelProvider>;

export const ModelProvider = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    kind: ModelProviderKind,
    description: Type.String(),
    base_url: Type.String(),
    api_key_secret: Type.Union([Type.String(), Type.Null()]),
    header_names: Type.Array(Type.String(), {
      description: 'The names of its extra headers; values are never shown.',
    }),
    models: Type.Array(ProviderModel),
    max_concurrency: Type.Integer(),
    requests_per_minute: Type.Union([Type.Integer(), Type.Null()]),
    timeout_ms: Type.Integer(),
    idle_timeout_ms: Type.Integer(),
    max_retries: Type.Integer(),
    fallbacks: Type.Array(ModelRef),
    enabled: Type.Boolean(),
    /** 1 on create; each update adds one. */
    version: Type.Integer(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'ModelProvider' },
);
export type ModelProvider = Static<typeof ModelProvider>;

export const ListModelProvidersQuery = {
  kind: Type.Optional(ModelProviderKind),
};

export const TestModelProvider = Type.Object(
  {
    model: Type.Optional(
      Type.String({
        maxLength: 200,
        description:
          'Also send this model a one-line prompt and report its answer. Default: only list the provider’s models.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type TestModelProvider = Static<typeof TestModelProvider>;

export const ModelProviderTest = Type.Object(
  {
    ok: Type.Boolean({ description: 'Whether everything asked for worked.' }),
    latency_ms: Type.Number({ description: 'How long the test took.' }),
    /** What the provider lists; null when it failed or does not list models. */
    listed_models: Type.Union([Type.Array(Type.String()), Type.Null()]),
    /** Models of the provider’s record that it does not list. */
    unlisted_models: Type.Array(Type.String()),
    /** The tested model’s answer, when a model was given. */
    answer: Type.Union([Type.String(), Type.Null()]),
    error: Type.Union([
      Type.Object({
        code: Type.String(),
        message: Type.String(),
        status: Type.Union([Type.Integer(), Type.Null()]),
      }),
      Type.Null(),
    ]),
  },
  { $id: 'ModelProviderTest' },
);
export type ModelProviderTest = Static<typeof ModelProviderTest>;
