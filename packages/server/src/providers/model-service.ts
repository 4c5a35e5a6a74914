import type {
  ModelPrice,
  ModelProviderTest,
  ModelRef,
  TestModelProvider,
} from '@orchestra/protocol';
import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from 'cockatiel';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { AnthropicAdapter } from './anthropic-adapter.ts';
import {
  type ModelAdapter,
  ModelCallError,
  type ModelCallOptions,
  type ModelRequest,
  type ModelResponse,
  type ProviderEndpoint,
} from './model-call.ts';
import { OpenAiAdapter } from './openai-adapter.ts';
import { ProviderGate } from './provider-gate.ts';
import type { ModelProviderRecord, ModelProviderRecords } from './provider-records.ts';

/** Consecutive failed calls that open a provider's circuit, and how long it stays open. */
const BREAKER_FAILURES = 5;
const BREAKER_HALF_OPEN_AFTER_MS = 30_000;
/** Providers whose gate and breaker this node keeps. */
const MAX_KEPT_PROVIDERS = 10_000;
/** The test route's prompt, and its answer's limit. */
const TEST_PROMPT = 'Reply with the single word: ready';
const TEST_MAX_TOKENS = 16;
const TEST_TIMEOUT_MS = 30_000;

/** Resolves `${secret:NAME}` references and secret names for a tenant. */
export interface SecretSource {
  resolve(tenantId: string, name: string): Promise<string>;
  expand(tenantId: string, text: string): Promise<{ text: string; values: string[] }>;
}

/** What one try of the chain did, for the record of a call that fell back. */
export interface ModelAttempt {
  provider: string;
  model: string;
  error: { kind: string; message: string; status: number | null } | null;
}

export interface ModelCallResult extends ModelResponse {
  /** Cost in US dollars from the provider's price table; null when the model has no price. */
  cost_usd: number | null;
  /** Every provider and model tried, in order; the last one answered. */
  attempts: ModelAttempt[];
  duration_ms: number;
}

/** The cost of `usage` at `price` (dollars per million tokens). */
export function costOf(
  price: ModelPrice | undefined,
  usage: { input_tokens: number; output_tokens: number; cached_input_tokens: number },
): number | null {
  if (price === undefined) return null;
  const cached = Math.min(usage.cached_input_tokens, usage.input_tokens);
  const fresh = usage.input_tokens - cached;
  return (
    (fresh * price.input +
      cached * (price.cached_input ?? price.input) +
      usage.output_tokens * price.output) /
    1_000_000
  );
}

interface Kept {
  gate: ProviderGate;
  breaker: CircuitBreakerPolicy;
}

/**
 * Model calls for hosted agents: a chain of provider and model pairs tried in order, each
 * provider behind its limits (`ProviderGate`) and a circuit breaker on this node, with the
 * official client of its wire protocol doing the request and its retries.
 */
export class ModelService {
  readonly #records: ModelProviderRecords;
  readonly #secrets: SecretSource;
  readonly #log: Logger;
  readonly #adapters: Record<'openai' | 'anthropic', ModelAdapter> = {
    openai: new OpenAiAdapter(),
    anthropic: new AnthropicAdapter(),
  };
  readonly #kept = new Map<string, Kept>();
  readonly #metrics: {
    calls: Counter<'kind' | 'outcome'>;
    seconds: Histogram<'kind'>;
    tokens: Counter<'kind' | 'type'>;
    cost: Counter<'kind'>;
    open: Gauge<'provider_id'>;
  };

  constructor(deps: {
    records: ModelProviderRecords;
    secrets: SecretSource;
    log: Logger;
    registry: Registry;
  }) {
    this.#records = deps.records;
    this.#secrets = deps.secrets;
    this.#log = deps.log;
    this.#metrics = {
      calls: new Counter({
        name: 'orchestra_model_calls_total',
        help: 'Model requests that ended, by provider kind (openai, anthropic) and outcome (ok, or the failure: rate_limited, unavailable, timeout, stalled, cut, circuit_open, refused, cancelled, not_configured).',
        labelNames: ['kind', 'outcome'],
        registers: [deps.registry],
      }),
      seconds: new Histogram({
        name: 'orchestra_model_call_duration_seconds',
        help: 'Time from sending a model request to the end of its answer, retries included, by provider kind.',
        labelNames: ['kind'],
        buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
        registers: [deps.registry],
      }),
      tokens: new Counter({
        name: 'orchestra_model_tokens_total',
        help: 'Tokens providers reported, by provider kind and type (input, output, cached_input).',
        labelNames: ['kind', 'type'],
        registers: [deps.registry],
      }),
      cost: new Counter({
        name: 'orchestra_model_cost_dollars_total',
        help: 'Cost of model calls in US dollars, from the providers’ price tables (unpriced models count 0), by provider kind.',
        labelNames: ['kind'],
        registers: [deps.registry],
      }),
      open: new Gauge({
        name: 'orchestra_model_provider_circuit_open',
        help: '1 while the circuit breaker of a provider is open on this node (calls fail fast).',
        labelNames: ['provider_id'],
        registers: [deps.registry],
      }),
    };
  }

  /**
   * Calls the first pair of `chain` that answers. A pair whose provider fails the call after
   * its retries (or whose circuit is open) passes it to the next pair; a cancelled call
   * stops at once. When every pair failed, throws the last ModelCallError; its message
   * names each failure.
   */
  async call(
    tenantId: string,
    chain: readonly ModelRef[],
    request: Omit<ModelRequest, 'model'>,
    options: ModelCallOptions = {},
  ): Promise<ModelCallResult> {
    const started = performance.now();
    const attempts: ModelAttempt[] = [];
    let last: ModelCallError | undefined;
    for (const ref of chain) {
      try {
        const { response, price } = await this.#callOne(tenantId, ref, request, options);
        attempts.push({ provider: ref.provider, model: ref.model, error: null });
        return {
          ...response,
          cost_usd: costOf(price, response.usage),
          attempts,
          // Fractions of a millisecond: the benchmark compares it with the client alone.
          duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
        };
      } catch (err) {
        if (!(err instanceof ModelCallError)) throw err;
        attempts.push({
          provider: ref.provider,
          model: ref.model,
          error: { kind: err.kind, message: err.message, status: err.status },
        });
        last = err;
        if (!err.fallbackMayHelp) break;
        if (chain.length > 1) {
          this.#log.warn(
            { tenant_id: tenantId, provider: ref.provider, model: ref.model, kind: err.kind },
            'model call failed; trying the next provider of the chain',
          );
        }
      }
    }
    if (last === undefined) {
      throw new ModelCallError('not_configured', 'No provider and model to call', {
        provider: '',
        model: '',
      });
    }
    if (attempts.length > 1) {
      const summary = attempts
        .map((a) => `${a.provider}/${a.model}: ${a.error?.message ?? 'ok'}`)
        .join('; ');
      throw new ModelCallError(
        last.kind,
        `Every provider of the chain failed: ${summary}`,
        { provider: last.provider, model: last.model, status: last.status },
        { cause: last },
      );
    }
    throw last;
  }

  /**
   * The chain for a template's model and fallbacks: its own fallbacks when it has any, else
   * those of the primary model's provider.
   */
  async chainFor(tenantId: string, primary: ModelRef, fallbacks: readonly ModelRef[]) {
    if (fallbacks.length > 0) return [primary, ...fallbacks];
    try {
      const record = await this.#records.find(tenantId, primary.provider);
      return [primary, ...record.settings.fallbacks];
    } catch (err) {
      if (err instanceof ApiError && err.code === 'MODEL_PROVIDER_NOT_FOUND') return [primary];
      throw err;
    }
  }

  /** Lists the provider's models and, when asked, has one of them answer a short prompt. */
  async test(
    principal: Principal,
    ref: string,
    body: TestModelProvider,
  ): Promise<ModelProviderTest> {
    const record = await this.#records.find(principal.tenant.id, ref);
    const started = performance.now();
    const result: ModelProviderTest = {
      ok: true,
      latency_ms: 0,
      listed_models: null,
      unlisted_models: [],
      answer: null,
      error: null,
    };
    const fail = (err: unknown) => {
      result.ok = false;
      if (err instanceof ModelCallError) {
        result.error = { code: err.kind, message: err.message, status: err.status };
      } else if (err instanceof ApiError) {
        result.error = { code: err.code, message: err.message, status: null };
      } else throw err;
    };
    try {
      const endpoint = await this.#endpoint(record, { timeoutMs: TEST_TIMEOUT_MS, maxRetries: 0 });
      const adapter = this.#adapters[record.settings.kind];
      try {
        const listed = await adapter.listModels(endpoint);
        result.listed_models = listed;
        result.unlisted_models = record.settings.models
          .map((m) => m.name)
          .filter((name) => !listed.includes(name));
      } catch (err) {
        // Listing is optional for compatible servers; the prompt below, if any, still tells.
        if (body.model === undefined) fail(err);
      }
      if (body.model !== undefined) {
        const answer = await adapter.call(
          endpoint,
          {
            model: body.model,
            messages: [{ role: 'user', content: TEST_PROMPT }],
            max_tokens: TEST_MAX_TOKENS,
          },
          { stream: false },
        );
        result.answer = answer.text;
      }
    } catch (err) {
      fail(err);
    }
    result.latency_ms = Math.round((performance.now() - started) * 10) / 10;
    return result;
  }

  async #callOne(
    tenantId: string,
    ref: ModelRef,
    request: Omit<ModelRequest, 'model'>,
    options: ModelCallOptions,
  ): Promise<{ response: ModelResponse; price: ModelPrice | undefined }> {
    const where = { provider: ref.provider, model: ref.model };
    let record: ModelProviderRecord;
    try {
      record = await this.#records.find(tenantId, ref.provider);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'MODEL_PROVIDER_NOT_FOUND') {
        throw new ModelCallError(
          'not_configured',
          `No model provider is named "${ref.provider}"`,
          where,
        );
      }
      throw err;
    }
    const kind = record.settings.kind;
    const fail = (err: ModelCallError): never => {
      this.#metrics.calls.inc({ kind, outcome: err.kind });
      throw err;
    };
    if (record.row.enabled !== 1) {
      fail(
        new ModelCallError('not_configured', `The provider "${ref.provider}" is disabled`, where),
      );
    }
    const model = record.settings.models.find((m) => m.name === ref.model);
    if (model === undefined) {
      fail(
        new ModelCallError(
          'not_configured',
          `The provider "${ref.provider}" lists no model "${ref.model}"`,
          where,
        ),
      );
    }
    let endpoint: ProviderEndpoint;
    try {
      endpoint = await this.#endpoint(record);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      return fail(new ModelCallError('not_configured', err.message, where, { cause: err }));
    }
    const kept = this.#keep(record);
    const end = this.#metrics.seconds.startTimer({ kind });
    let release: (() => void) | undefined;
    try {
      release = await kept.gate.enter(options.signal);
      const answer = await kept.breaker.execute(() =>
        this.#adapters[kind].call(endpoint, { ...request, model: ref.model }, options),
      );
      this.#metrics.calls.inc({ kind, outcome: 'ok' });
      this.#metrics.tokens.inc({ kind, type: 'input' }, answer.usage.input_tokens);
      this.#metrics.tokens.inc({ kind, type: 'output' }, answer.usage.output_tokens);
      this.#metrics.tokens.inc({ kind, type: 'cached_input' }, answer.usage.cached_input_tokens);
      const cost = costOf(model?.price, answer.usage);
      if (cost !== null && cost > 0) this.#metrics.cost.inc({ kind }, cost);
      return { response: { ...answer, provider: ref.provider }, price: model?.price };
    } catch (err) {
      if (err instanceof ModelCallError) return fail(err);
      if (err instanceof BrokenCircuitError) {
        return fail(
          new ModelCallError(
            'circuit_open',
            `The circuit breaker of "${ref.provider}" is open after repeated failures; calls fail fast until it recovers`,
            where,
            { cause: err },
          ),
        );
      }
      if (options.signal?.aborted) {
        return fail(
          new ModelCallError('cancelled', 'The model call was cancelled', where, { cause: err }),
        );
      }
      throw err;
    } finally {
      release?.();
      end();
    }
  }

  /** The endpoint of a provider with its key and headers resolved now (they may rotate). */
  async #endpoint(
    record: ModelProviderRecord,
    overrides: { timeoutMs?: number; maxRetries?: number } = {},
  ): Promise<ProviderEndpoint> {
    const tenantId = record.row.tenant_id;
    const settings = record.settings;
    const apiKey =
      settings.api_key_secret === null
        ? null
        : await this.#secrets.resolve(tenantId, settings.api_key_secret);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(record.headers)) {
      headers[name] = (await this.#secrets.expand(tenantId, value)).text;
    }
    return {
      name: record.row.name,
      baseUrl: settings.base_url,
      apiKey,
      headers,
      timeoutMs: overrides.timeoutMs ?? settings.timeout_ms,
      idleTimeoutMs: settings.idle_timeout_ms,
      maxRetries: overrides.maxRetries ?? settings.max_retries,
    };
  }

  #keep(record: ModelProviderRecord): Kept {
    const id = record.row.id;
    const limits = {
      maxConcurrency: record.settings.max_concurrency,
      requestsPerMinute: record.settings.requests_per_minute,
    };
    let kept = this.#kept.get(id);
    if (kept === undefined) {
      const breaker = circuitBreaker(
        // The provider failing counts; a refused request or a cancelled one does not.
        handleWhen(
          (err) =>
            err instanceof ModelCallError &&
            (err.kind === 'unavailable' ||
              err.kind === 'timeout' ||
              err.kind === 'stalled' ||
              err.kind === 'cut' ||
              err.kind === 'rate_limited'),
        ),
        {
          halfOpenAfter: BREAKER_HALF_OPEN_AFTER_MS,
          breaker: new ConsecutiveBreaker(BREAKER_FAILURES),
        },
      );
      breaker.onStateChange((state) => {
        this.#metrics.open.set({ provider_id: id }, state === CircuitState.Open ? 1 : 0);
        if (state === CircuitState.Open) {
          this.#log.warn(
            { provider_id: id, provider: record.row.name },
            'model provider circuit opened',
          );
        }
      });
      kept = { gate: new ProviderGate(limits), breaker };
      if (this.#kept.size >= MAX_KEPT_PROVIDERS) {
        const oldest = this.#kept.keys().next().value;
        if (oldest !== undefined) this.#kept.delete(oldest);
      }
      this.#kept.set(id, kept);
    } else {
      kept.gate.configure(limits);
    }
    return kept;
  }
}
