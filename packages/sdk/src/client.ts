import { type ErrorPayload, OrchestraError } from './errors.ts';
import type {
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
  Template,
  TemplateDefinition,
  TemplateVersionSummary,
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

type QueryValue = string | number | boolean | undefined;
/** Query parameters; an array value repeats the parameter once per item. */
type Query = Record<string, QueryValue | readonly QueryValue[]>;

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

  /**
   * Versioned agent templates of the caller's tenant (reading: admin, operator or viewer;
   * changing: admin or operator). Wherever a method takes `ref`, it is the template's id
   * (`tpl_…`) or its name. A template that does not exist, or belongs to another tenant,
   * rejects with `TEMPLATE_NOT_FOUND` (404).
   */
  readonly templates: {
    /**
     * Creates a template at version 1. Rejects with `TEMPLATE_ALREADY_EXISTS` (409) when the
     * tenant has a template of that name, and with `VALIDATION_FAILED` (400) when a field or
     * one of the JSON Schemas is invalid; `details.fields[].field` names it, such as
     * `body.input_schema`.
     */
    create(input: CreateTemplateInput): Promise<Template>;
    /**
     * The template at the version `latest` points to or, with `version`, at that version
     * (`TEMPLATE_VERSION_NOT_FOUND` when it has no such version). `latest_version` is the
     * value to pass as `ifVersion` to `update`.
     */
    get(ref: string, options?: { version?: number }): Promise<Template>;
    /** One page of templates, in id order, each at the version `latest` points to. */
    list(options?: ListTemplatesOptions): Promise<Page<Template>>;
    /** Every template that matches, page after page. */
    listAll(options?: Omit<ListTemplatesOptions, 'cursor'>): AsyncIterable<Template>;
    /**
     * Replaces the whole definition: creates version `highest_version + 1` and points
     * `latest` at it, even when nothing changed. Fields left out of `definition` go back to
     * their defaults. With `ifVersion` (the `latest_version` you read), rejects with
     * `PRECONDITION_FAILED` (412) instead when someone else has moved `latest` since.
     */
    update(
      ref: string,
      definition: TemplateDefinition,
      options?: { ifVersion?: number },
    ): Promise<Template>;
    /** Deletes the template and all its versions; resolves to undefined. */
    delete(ref: string): Promise<void>;
    /** One page of the template's versions, newest first. */
    versions(ref: string, page?: PageOptions): Promise<Page<TemplateVersionSummary>>;
    /** Every version of the template, newest first, page after page. */
    versionsAll(
      ref: string,
      options?: Omit<PageOptions, 'cursor'>,
    ): AsyncIterable<TemplateVersionSummary>;
    /**
     * Points `latest` at an existing earlier (or later) version; creates no version, so the
     * next update still gets `highest_version + 1`. Rejects with
     * `TEMPLATE_VERSION_NOT_FOUND` when the template has no such version.
     */
    rollback(ref: string, version: number): Promise<Template>;
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
    const template = (ref: string) => `/v1/templates/${encodeURIComponent(ref)}`;
    this.templates = {
      create: (input) => this.request('POST', '/v1/templates', { body: input }),
      get: (ref, options = {}) =>
        this.request(
          'GET',
          options.version === undefined
            ? template(ref)
            : `${template(ref)}/versions/${encodeURIComponent(options.version)}`,
        ),
      list: ({ labels, ...options } = {}) =>
        this.request('GET', '/v1/templates', {
          query: {
            ...options,
            label: Object.entries(labels ?? {}).map(([key, value]) => `${key}=${value}`),
          },
        }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.templates.list({ ...options, ...cursor })),
      update: (ref, definition, options = {}) =>
        this.request('PUT', template(ref), {
          body: definition,
          ...(options.ifVersion !== undefined
            ? { headers: { 'if-match': `"${options.ifVersion}"` } }
            : {}),
        }),
      delete: (ref) => this.request('DELETE', template(ref)),
      versions: (ref, page = {}) =>
        this.request('GET', `${template(ref)}/versions`, { query: { ...page } }),
      versionsAll: (ref, options = {}) =>
        this.#paginate((cursor) => this.templates.versions(ref, { ...options, ...cursor })),
      rollback: (ref, version) =>
        this.request('POST', `${template(ref)}/rollback`, { body: { version } }),
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
   * Sends one request and parses the JSON answer; resolves to undefined when the answer has
   * no body (204). Public so that routes without a typed method yet can still be called
   * with the client's credentials and error handling. `query` skips undefined values and
   * repeats a parameter for each item of an array; `headers` add to (and override) the
   * client's `headers` for this request only.
   */
  async request<T>(
    method: string,
    path: string,
    options: { query?: Query; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<T> {
    const url = new URL(this.url + path);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item !== undefined) url.searchParams.append(name, String(item));
      }
    }
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...this.#headers,
      ...options.headers,
    };
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
