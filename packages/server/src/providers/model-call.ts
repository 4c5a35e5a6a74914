// What a model call is, whatever the provider's wire protocol: the conversation in one form
// (close to Chat Completions, which most servers speak), the answer, its usage, and how a
// call fails. The adapters (`openai-adapter.ts`, `anthropic-adapter.ts`) translate.

/** A tool call the model asked for. */
export interface ModelToolCall {
  id: string;
  name: string;
  /** The arguments as the model wrote them: JSON text, not always valid. */
  arguments: string;
}

export type ChatMessage =
  | { role: 'system'; content: string }
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; tool_calls?: ModelToolCall[] }
  | { role: 'tool'; tool_call_id: string; name: string; content: string; is_error?: boolean };

/** A tool offered to the model. */
export interface ModelTool {
  name: string;
  description: string;
  /** A JSON Schema of an object: the arguments. */
  parameters: Record<string, unknown>;
}

export interface ModelRequest {
  model: string;
  messages: ChatMessage[];
  tools?: ModelTool[];
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  stop?: string[];
  /** Structured output: the answer must be JSON that this schema accepts. */
  response_schema?: { name: string; schema: Record<string, unknown> };
}

export interface ModelUsage {
  /** Prompt tokens, cached ones included. */
  input_tokens: number;
  output_tokens: number;
  /** Prompt tokens the provider served from its cache (also counted in `input_tokens`). */
  cached_input_tokens: number;
}

export type FinishReason = 'stop' | 'tool_calls' | 'length' | 'content_filter' | 'other';

export interface ModelResponse {
  /** The provider and model that answered: a fallback's, when the first ones failed. */
  provider: string;
  model: string;
  text: string;
  tool_calls: ModelToolCall[];
  finish: FinishReason;
  usage: ModelUsage;
  /** The provider's own id of the answer, when it gave one. */
  response_id: string | null;
}

export interface ModelCallOptions {
  signal?: AbortSignal | undefined;
  /** Stream the answer (default true); `onText` gets its text as it comes. */
  stream?: boolean;
  onText?: ((delta: string) => void) | undefined;
}

/**
 * Why a model call failed:
 * - `rate_limited`: 429 after the retries;
 * - `unavailable`: 5xx, a refused or broken connection, or an answer that is not the protocol;
 * - `timeout`: no whole answer within the provider's `timeout_ms`;
 * - `stalled`: a streamed answer stopped for `idle_timeout_ms`;
 * - `cut`: the connection closed in the middle of a streamed answer;
 * - `circuit_open`: the provider failed too often lately; calls fail fast for a while;
 * - `refused`: another 4xx: a bad key, an unknown model, a request the provider rejects;
 * - `cancelled`: the caller aborted;
 * - `not_configured`: the provider or model is unknown, disabled, or its key's secret is missing.
 */
export type ModelFailureKind =
  | 'rate_limited'
  | 'unavailable'
  | 'timeout'
  | 'stalled'
  | 'cut'
  | 'circuit_open'
  | 'refused'
  | 'cancelled'
  | 'not_configured';

/** A failed model call. The message never holds the API key or header values. */
export class ModelCallError extends Error {
  readonly kind: ModelFailureKind;
  /** The provider's HTTP status, when it answered with one. */
  readonly status: number | null;
  readonly provider: string;
  readonly model: string;

  constructor(
    kind: ModelFailureKind,
    message: string,
    where: { provider: string; model: string; status?: number | null },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ModelCallError';
    this.kind = kind;
    this.status = where.status ?? null;
    this.provider = where.provider;
    this.model = where.model;
  }

  /** Whether another provider might do better: not for a cancelled call. */
  get fallbackMayHelp(): boolean {
    return this.kind !== 'cancelled';
  }
}

/** What one adapter needs to reach a provider for one call. */
export interface ProviderEndpoint {
  /** The provider's name, for errors and metrics. */
  name: string;
  baseUrl: string;
  apiKey: string | null;
  headers: Record<string, string>;
  timeoutMs: number;
  idleTimeoutMs: number;
  maxRetries: number;
}

/** One wire protocol's client: calls a model, or lists the models. */
export interface ModelAdapter {
  call(
    endpoint: ProviderEndpoint,
    request: ModelRequest,
    options: ModelCallOptions,
  ): Promise<Omit<ModelResponse, 'provider'>>;
  listModels(endpoint: ProviderEndpoint, signal?: AbortSignal): Promise<string[]>;
}
