import { type ErrorPayload, OrchestraError } from './errors.ts';
import type {
  ApiKey,
  ApiKeyWithSecret,
  CreateApiKeyInput,
  CreatedTenant,
  CreateTenantInput,
  ListApiKeysOptions,
  Page,
  PageOptions,
  Readiness,
  Tenant,
  WhoAmI,
} from './types.ts';

export interface OrchestraOptions {
  /** Base URL of the server, such as `http://localhost:8080`. */
  url: string;
  /** An `ork_…` API key or a JWT, sent as `Authorization: Bearer …`. */
  apiKey?: string;
  /** Per-request timeout; default 30 s. */
  timeoutMs?: number;
  /** Replaces the global `fetch` (for proxies or instrumentation). */
  fetch?: typeof fetch;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

type Query = Record<string, string | number | boolean | undefined>;

/**
 * Client for the Orchestra REST API. Methods resolve to the response body and reject
 * with an `OrchestraError` carrying the server's error code.
 */
export class Orchestra {
  readonly url: string;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;
  readonly #headers: Record<string, string>;

  /** API keys of the caller's tenant (admin role). */
  readonly apiKeys: {
    create(input: CreateApiKeyInput): Promise<ApiKeyWithSecret>;
    list(options?: ListApiKeysOptions): Promise<Page<ApiKey>>;
    /** Every key, page after page. */
    listAll(options?: Omit<ListApiKeysOptions, 'cursor'>): AsyncIterable<ApiKey>;
    get(id: string): Promise<ApiKey>;
    /** Revokes the key; resolves to it with status `revoked`. */
    revoke(id: string): Promise<ApiKey>;
  };

  /** Tenants (admin role; creating needs an admin of the system tenant). */
  readonly tenants: {
    create(input: CreateTenantInput): Promise<CreatedTenant>;
    list(options?: PageOptions): Promise<Page<Tenant>>;
    listAll(options?: Omit<PageOptions, 'cursor'>): AsyncIterable<Tenant>;
    get(id: string): Promise<Tenant>;
  };

  constructor(options: OrchestraOptions) {
    if (!/^https?:\/\//.test(options.url)) {
      throw new TypeError(`url must start with http:// or https://, got "${options.url}"`);
    }
    this.url = options.url.replace(/\/+$/, '');
    this.#apiKey = options.apiKey;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#headers = options.headers ?? {};

    this.apiKeys = {
      create: (input) =>
        this.request('POST', '/v1/api-keys', {
          body: {
            ...input,
            ...(input.expires_at instanceof Date
              ? { expires_at: input.expires_at.toISOString() }
              : {}),
          },
        }),
      list: (options = {}) => this.request('GET', '/v1/api-keys', { query: { ...options } }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.apiKeys.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', `/v1/api-keys/${encodeURIComponent(id)}`),
      revoke: (id) => this.request('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`),
    };
    this.tenants = {
      create: (input) => this.request('POST', '/v1/tenants', { body: input }),
      list: (options = {}) => this.request('GET', '/v1/tenants', { query: { ...options } }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.tenants.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', `/v1/tenants/${encodeURIComponent(id)}`),
    };
  }

  /** The tenant, role and credential the client authenticates as. */
  whoami(): Promise<WhoAmI> {
    return this.request('GET', '/v1/whoami');
  }

  /** Liveness probe; resolves when the server process answers. */
  health(): Promise<{ status: 'ok' }> {
    return this.request('GET', '/healthz');
  }

  /** Readiness probe; rejects with `STORAGE_UNAVAILABLE` when the store does not answer. */
  ready(): Promise<Readiness> {
    return this.request('GET', '/readyz');
  }

  /**
   * Sends one request and parses the JSON answer. Public so that routes without a typed
   * method yet can still be called with the client's credentials and error handling.
   */
  async request<T>(
    method: string,
    path: string,
    options: { query?: Query; body?: unknown } = {},
  ): Promise<T> {
    const url = new URL(this.url + path);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    const headers: Record<string, string> = { accept: 'application/json', ...this.#headers };
    if (this.#apiKey !== undefined) headers.authorization = `Bearer ${this.#apiKey}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';

    let response: Response;
    try {
      response = await this.#fetch(url, {
        method,
        headers,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
      throw new OrchestraError(
        timedOut ? 'TIMEOUT' : 'CONNECTION_FAILED',
        timedOut
          ? `${method} ${url.pathname} got no answer within ${this.#timeoutMs} ms`
          : `Cannot reach Orchestra at ${this.url}: ${(err as Error).message}`,
        { status: 0, cause: err },
      );
    }

    const text = await response.text();
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch (err) {
      if (response.ok) {
        throw new OrchestraError(
          'INVALID_RESPONSE',
          `${method} ${url.pathname} answered with non-JSON`,
          {
            status: response.status,
            cause: err,
          },
        );
      }
    }
    if (response.ok) return body as T;

    const retryAfter = Number(response.headers.get('retry-after'));
    const payload = (body as { error?: ErrorPayload; trace_id?: string } | undefined)?.error;
    if (payload?.code === undefined) {
      throw new OrchestraError(
        'HTTP_ERROR',
        `${method} ${url.pathname} failed with HTTP ${response.status}`,
        {
          status: response.status,
        },
      );
    }
    throw new OrchestraError(payload.code, payload.message, {
      status: response.status,
      requestId: payload.request_id,
      details: payload.details,
      traceId: (body as { trace_id?: string }).trace_id,
      retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    });
  }

  async *#paginate<T>(
    fetchPage: (cursor: { cursor?: string }) => Promise<Page<T>>,
  ): AsyncIterable<T> {
    let cursor: string | null = null;
    do {
      const page: Page<T> = await fetchPage(cursor === null ? {} : { cursor });
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }
}
