import { createHash } from 'node:crypto';
import { ModelCallError, type ModelFailureKind, type ProviderEndpoint } from './model-call.ts';

/** Clients kept at most: one per provider settings and key in use. */
const MAX_CLIENTS = 1000;

/**
 * The official clients, one per endpoint: building one per call would throw away its
 * connection pool. Keyed by everything the client was built with (a hash of the key), so a
 * changed setting or a rotated key gets a new one.
 */
export class ClientCache<C> {
  readonly #clients = new Map<string, C>();
  readonly #build: (endpoint: ProviderEndpoint) => C;

  constructor(build: (endpoint: ProviderEndpoint) => C) {
    this.#build = build;
  }

  get(endpoint: ProviderEndpoint): C {
    const key = createHash('sha256')
      .update(
        JSON.stringify([
          endpoint.name,
          endpoint.baseUrl,
          endpoint.apiKey,
          endpoint.headers,
          endpoint.maxRetries,
          endpoint.timeoutMs,
        ]),
      )
      .digest('base64');
    let client = this.#clients.get(key);
    if (client === undefined) {
      client = this.#build(endpoint);
      if (this.#clients.size >= MAX_CLIENTS) {
        const oldest = this.#clients.keys().next().value;
        if (oldest !== undefined) this.#clients.delete(oldest);
      }
    } else {
      this.#clients.delete(key);
    }
    this.#clients.set(key, client);
    return client;
  }
}

/** What a call reports while it runs, so that timeouts and stalls are told apart. */
export interface CallWatch {
  /** Pass to the client: aborted on the overall timeout, a stall, or the caller's abort. */
  signal: AbortSignal;
  /** The answer began (a streamed response's headers came): stall detection starts. */
  started(): void;
  /** A piece of the answer came. */
  progress(): void;
  /**
   * The stream ended; `complete`: it said it was done (else it was cut short). Throws when
   * it ended because the call was aborted, or cut short.
   */
  ended(complete: boolean): void;
}

type AbortWhy = 'timeout' | 'stalled' | 'cancelled';

/** The HTTP status of a client's API error, if `err` is one. */
function statusOf(err: unknown): number | undefined {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? status : undefined;
}

/** The provider's own message, without the client's prefix of status and body. */
function messageOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}

/**
 * Runs one call to a provider with its overall timeout, its stall timeout (once the answer
 * has begun), and the caller's abort, and turns whatever goes wrong into a ModelCallError.
 * The clients retry 408, 409, 429 and 5xx themselves, honouring `Retry-After`.
 */
export async function watchedCall<T>(
  endpoint: ProviderEndpoint,
  model: string,
  outer: AbortSignal | undefined,
  run: (watch: CallWatch) => Promise<T>,
): Promise<T> {
  const where = { provider: endpoint.name, model };
  const controller = new AbortController();
  let why: AbortWhy | undefined;
  let streaming = false;
  const abort = (reason: AbortWhy) => {
    if (why !== undefined) return;
    why = reason;
    controller.abort(new Error(reason));
  };
  const overall = setTimeout(() => abort('timeout'), endpoint.timeoutMs);
  let idle: NodeJS.Timeout | undefined;
  const armIdle = () => {
    if (idle !== undefined) idle.refresh();
    else idle = setTimeout(() => abort('stalled'), endpoint.idleTimeoutMs);
  };
  const onOuter = () => abort('cancelled');
  if (outer?.aborted) onOuter();
  else outer?.addEventListener('abort', onOuter, { once: true });
  const watch: CallWatch = {
    signal: controller.signal,
    started() {
      streaming = true;
      armIdle();
    },
    progress: armIdle,
    ended(complete) {
      // The clients end a stream quietly when it is aborted: say why it ended.
      if (why !== undefined) throw classify(controller.signal.reason, why, true, endpoint, where);
      if (!complete) {
        throw new ModelCallError(
          'cut',
          `The answer from ${endpoint.name} ended before it was complete`,
          where,
        );
      }
    },
  };
  try {
    return await run(watch);
  } catch (err) {
    if (err instanceof ModelCallError) throw err;
    throw classify(err, why, streaming, endpoint, where);
  } finally {
    clearTimeout(overall);
    if (idle !== undefined) clearTimeout(idle);
    outer?.removeEventListener('abort', onOuter);
  }
}

function classify(
  err: unknown,
  why: AbortWhy | undefined,
  streaming: boolean,
  endpoint: ProviderEndpoint,
  where: { provider: string; model: string },
): ModelCallError {
  const fail = (kind: ModelFailureKind, message: string, status?: number) =>
    new ModelCallError(kind, message, { ...where, status: status ?? null }, { cause: err });
  switch (why) {
    case 'cancelled':
      return fail('cancelled', 'The model call was cancelled');
    case 'timeout':
      return fail('timeout', `${endpoint.name} did not answer within ${endpoint.timeoutMs} ms`);
    case 'stalled':
      return fail(
        'stalled',
        `The answer from ${endpoint.name} stalled: nothing came for ${endpoint.idleTimeoutMs} ms`,
      );
    case undefined:
      break;
  }
  const status = statusOf(err);
  if (status !== undefined) {
    const text = `${endpoint.name} answered ${status}: ${messageOf(err)}`;
    if (status === 429) return fail('rate_limited', text, status);
    if (status >= 500 || status === 408 || status === 409) return fail('unavailable', text, status);
    return fail('refused', text, status);
  }
  if (streaming) {
    return fail('cut', `The connection to ${endpoint.name} broke in the middle of the answer`);
  }
  return fail('unavailable', `${endpoint.name} could not be reached: ${messageOf(err)}`);
}

/** Most model names kept from a provider's list. */
const MAX_LISTED_MODELS = 10_000;

/** The ids of a provider's model list, page after page, as the client iterates them. */
export function listedModels(
  endpoint: ProviderEndpoint,
  outer: AbortSignal | undefined,
  list: (signal: AbortSignal) => AsyncIterable<{ id: string }>,
): Promise<string[]> {
  return watchedCall(endpoint, '', outer, async (watch) => {
    const names: string[] = [];
    for await (const model of list(watch.signal)) {
      names.push(model.id);
      if (names.length >= MAX_LISTED_MODELS) break;
    }
    return names;
  });
}
