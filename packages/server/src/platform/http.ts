import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  type Caller,
  callerId,
  credentialId,
  type Principal,
  type Role,
  type TokenKind,
  type VerifiedToken,
} from './auth.ts';
import { closeAfterFlush, endWithError, markAuthenticated } from './connection-guard.ts';
import { invalidField } from './envelope.ts';
import { ApiError, type ErrorDetails, errorBody } from './errors.ts';
import type { Metrics } from './metrics.ts';
import {
  ByteCharge,
  clientNetwork,
  type RateLimitDecision,
  type RateLimiter,
} from './rate-limit.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Who may call the route: the roles that may, or `'public'`. Every `/v1` route must
     * name roles (registration fails otherwise); routes outside `/v1` are public by default.
     */
    auth?: 'public' | readonly Role[];
    /**
     * A token the route accepts besides API keys and JWTs (a realtime token), checked by the
     * same pipeline: rate limits, revocation checks and OpenAPI security alike. The roles of
     * `auth` bind keys and JWTs only; what a token allows, the route decides from
     * `request.token`.
     */
    token?: TokenKind;
    /** The token may also come in the URL (`token.query`), for EventSource, which cannot set headers. */
    tokenInQuery?: true;
    /**
     * The request may come without a credential: a WebSocket whose client sends it in its
     * first frame (browsers cannot set headers on one). The handler then finds neither
     * `principal` nor `token`, and checks the later credential with
     * `request.authenticateLater`, through this same pipeline.
     */
    credentialLater?: true;
    /**
     * The body is read as a stream by the handler (a file, a tar archive), not parsed: the
     * OpenAPI document shows it as binary in these content types.
     */
    rawBody?: { contentTypes: readonly string[]; description: string };
    /**
     * A probe or scrape (`/healthz`, `/readyz`, `/metrics`): never rate limited, and its
     * access line is logged at debug so that polling does not flood the log.
     */
    probe?: true;
  }
  interface FastifyRequest {
    /**
     * The authenticated caller; set on every `/v1` route that is not public, unless the
     * route also takes a token (`config.token`) and the caller used one.
     */
    principal?: Principal;
    /** The token the caller used, on a route that takes one (`config.token`). */
    token?: VerifiedToken;
    /**
     * On a `config.credentialLater` route reached without a credential: authenticates one
     * sent later (in a WebSocket frame) as if it had come in the request's Authorization
     * header, counting in the same rate limits. Resolves to the caller and to the function
     * that checks the credential again (it may be revoked or expire); rejects with the
     * `ApiError` the request would have got.
     */
    authenticateLater?: (credential: string) => Promise<Authenticated>;
    /**
     * Checks the request's credential again (it may have been revoked or expired since);
     * rejects with the `ApiError` authentication would give now. Set wherever a request is
     * authenticated; long-lived responses (event streams) call it periodically.
     */
    recheckCredential?: () => Promise<void>;
    /**
     * Charges the credential's rate-limit bucket for the bytes served to it
     * (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN); set on authenticated routes while rate limits
     * and byte charging are on. Answers sent through Fastify are charged by the platform;
     * a response that writes past it (an event stream) adds what it writes.
     */
    byteCharge?: ByteCharge;
  }
}

/** The principal of an authenticated route; the platform hook guarantees it is set. */
export function principalOf(request: { principal?: Principal }): Principal {
  if (request.principal === undefined) throw new Error('route reached without a principal');
  return request.principal;
}

/** Resolves the credential in a request's headers, or throws an `ApiError` (401/503). */
export type Authenticate = (request: { headers: FastifyRequest['headers'] }) => Promise<Principal>;

/** A caller that the pipeline admitted, and how to check its credential again later. */
export interface Authenticated {
  caller: Caller;
  /** Rejects with the `ApiError` authentication would give now (revoked, expired). */
  recheck: () => Promise<void>;
}

/** The OpenAPI schemes of the platform's own credentials (declared where the document is built). */
const CREDENTIAL_SCHEMES = ['bearerAuth', 'apiKeyHeader'];

/** The bearer token of an Authorization header, whatever it is. */
function bearerOf(headers: FastifyRequest['headers']): string | undefined {
  const header = headers.authorization;
  return typeof header === 'string' && /^bearer /i.test(header)
    ? header.slice(7).trim()
    : undefined;
}

/** What the route's auth settings need to identify a caller. */
type RouteAuth = Pick<
  FastifyRequest['routeOptions']['config'],
  'token' | 'tokenInQuery' | 'credentialLater'
>;

export interface HttpPlatformOptions {
  service: string;
  instanceId: string;
  metrics: Metrics;
  rateLimiter: RateLimiter | undefined;
  /** Response bytes that cost one more token (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN); 0: off. */
  bytesPerToken: number;
  authenticate: Authenticate;
  /** True once shutdown has begun: new requests get 503 SHUTTING_DOWN. */
  isClosing: () => boolean;
  /** Maps failures of a dependency (the store…) to a catalogued error, or `undefined`. */
  mapDependencyError?: (error: unknown) => ApiError | undefined;
  /**
   * Answers a request no route matched, when it can (the console's page for a browser);
   * returns false to leave it to the 404 in the unified format.
   */
  notFound?: (request: FastifyRequest, reply: FastifyReply) => boolean;
}

const REQUEST_ID = /^[\w.:@-]{1,128}$/;

/** Uses the caller's `X-Request-Id` when it is safe to log, or makes a new one. */
export function requestIdFor(raw: { headers: Record<string, string | string[] | undefined> }) {
  const given = raw.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/** Query parameters whose values are credentials; their values never reach a log. */
const SECRET_QUERY_PARAMETERS = /^(token|access_token|api_key|apikey|key|secret|password|jwt)$/i;

/** The URL as it may be logged: the values of credential parameters replaced. */
export function redactUrl(url: string): string {
  const query = url.indexOf('?');
  if (query === -1) return url;
  const parameters = url
    .slice(query + 1)
    .split('&')
    .map((pair) => {
      const equals = pair.indexOf('=');
      const name = equals === -1 ? pair : pair.slice(0, equals);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // a malformed name is logged as it is; it cannot be one of ours
      }
      return equals !== -1 && SECRET_QUERY_PARAMETERS.test(decoded) ? `${name}=[redacted]` : pair;
    });
  return `${url.slice(0, query)}?${parameters.join('&')}`;
}

/** The trace id of a W3C `traceparent` header, when there is a valid one. */
function traceIdOf(request: FastifyRequest): string | undefined {
  const header = request.headers.traceparent;
  if (typeof header !== 'string') return undefined;
  const match = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/.exec(header);
  return match?.[1] !== undefined && !/^0+$/.test(match[1]) ? match[1] : undefined;
}

function isV1(routeUrl: string): boolean {
  return routeUrl === '/v1' || routeUrl.startsWith('/v1/');
}

/** Bytes of a response body as `onSend` sees it; 0 when its size is not known in advance. */
function payloadBytes(payload: unknown, reply: FastifyReply): number {
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (payload instanceof Uint8Array) return payload.byteLength;
  const length = Number(reply.getHeader('content-length'));
  return Number.isSafeInteger(length) && length > 0 ? length : 0;
}

/** The `RateLimit-*` headers of a decision (or of a bucket after a charge). */
export function setRateLimitHeaders(reply: FastifyReply, decision: RateLimitDecision): void {
  reply.header('ratelimit-limit', decision.limit);
  reply.header('ratelimit-remaining', decision.remaining);
  reply.header('ratelimit-reset', decision.resetSeconds);
}

/**
 * Installs the request pipeline shared by every module, on the root instance: request ids,
 * authentication, rate limits, role checks, metrics, access logs and the unified error
 * format. Routes only declare `config.auth`; everything else happens here.
 */
export function installHttpPlatform(app: FastifyInstance, options: HttpPlatformOptions): void {
  const { metrics, rateLimiter } = options;

  /** The refusal of a request (or frame) whose bucket is empty; counted. */
  function rateLimited(decision: RateLimitDecision, scope: string, inFrame: boolean): ApiError {
    metrics.rateLimited.inc({ scope });
    const seconds = decision.retryAfterSeconds;
    return new ApiError('RATE_LIMITED', `Too many requests; retry in ${seconds} s`, {
      headers: { 'retry-after': String(seconds) },
      // A frame has no headers to carry Retry-After in.
      ...(inFrame ? { details: { retry_after_seconds: seconds } } : {}),
    });
  }

  async function limit(request: FastifyRequest, reply: FastifyReply, key: string, scope: string) {
    if (!rateLimiter || request.routeOptions.config.probe) return;
    const decision = await rateLimiter.consume(key);
    setRateLimitHeaders(reply, decision);
    if (!decision.allowed) throw rateLimited(decision, scope, false);
  }

  /**
   * Resolves the credential of a request: a token of the route's kind (in the Authorization
   * header, or in the URL where the route allows), else an API key or JWT. `undefined` when
   * the route takes its credential later and the request carries none.
   */
  async function identify(
    headers: FastifyRequest['headers'],
    query: unknown,
    route: RouteAuth,
  ): Promise<Caller | undefined> {
    const kind = route.token;
    if (kind !== undefined) {
      const parameter = route.tokenInQuery ? kind.query?.parameter : undefined;
      const inQuery =
        parameter === undefined
          ? undefined
          : (query as Record<string, unknown> | undefined)?.[parameter];
      // Only a token of the kind may travel in a URL, which ends up in logs and histories.
      if (typeof inQuery === 'string' && !kind.recognizes(inQuery)) {
        throw invalidField(`querystring.${parameter}`, `must be ${kind.name}`);
      }
      const token = bearerOf(headers) ?? (typeof inQuery === 'string' ? inQuery : undefined);
      if (token !== undefined && kind.recognizes(token)) return { token: await kind.verify(token) };
    }
    if (
      route.credentialLater &&
      bearerOf(headers) === undefined &&
      headers['x-api-key'] === undefined
    ) {
      return undefined;
    }
    return { principal: await options.authenticate({ headers }) };
  }

  function assertRole(caller: Caller, auth: 'public' | readonly Role[] | undefined): void {
    const role = caller.principal?.role;
    if (role !== undefined && Array.isArray(auth) && !auth.includes(role)) {
      throw new ApiError(
        'PERMISSION_DENIED',
        `This operation requires the role ${auth.join(' or ')}; the credential has ${role}`,
      );
    }
  }

  /** `request.authenticateLater` of a request that came without its credential. */
  function laterAuthentication(request: FastifyRequest) {
    const { config } = request.routeOptions;
    const route: RouteAuth = { token: config.token };
    const { ip } = request;
    const { socket } = request.raw;
    return async (credential: string): Promise<Authenticated> => {
      // As if it had come in the request: the same kinds, never from the URL.
      const headers = { authorization: `Bearer ${credential}` };
      let caller: Caller | undefined;
      try {
        caller = await identify(headers, undefined, route);
      } catch (err) {
        // Failed guesses cost the address, as failed requests do; the refusal stays the answer.
        await rateLimiter?.consume(`ip:${clientNetwork(ip)}`);
        throw err;
      }
      if (caller === undefined) throw new Error('a credential sent later was not checked');
      markAuthenticated(socket);
      const decision = await rateLimiter?.consume(`cred:${callerId(caller)}`);
      if (decision?.allowed === false) throw rateLimited(decision, 'credential', true);
      assertRole(caller, config.auth);
      return {
        caller,
        recheck: async () => {
          await identify(headers, undefined, route);
        },
      };
    };
  }

  const operationIds = new Map<string, string>();
  app.addHook('onRoute', (route) => {
    const name = `${route.method} ${route.url}`;
    // A /v1 route that authenticated by itself would escape rate limits, revocation checks
    // and the OpenAPI security: one that takes another credential declares config.token.
    if (isV1(route.url) && !Array.isArray(route.config?.auth)) {
      throw new Error(`${name} must declare config.auth roles (and config.token for a token)`);
    }
    const config = route.config;
    if ((config?.token !== undefined || config?.credentialLater) && !Array.isArray(config.auth)) {
      throw new Error(`${name}: config.token and config.credentialLater need config.auth roles`);
    }
    if (config?.tokenInQuery && config.token?.query === undefined) {
      throw new Error(`${name}: config.tokenInQuery needs a token kind that may come in the query`);
    }
    // What the route accepts is what the document says, derived from the same declaration.
    if (config?.token !== undefined || config?.credentialLater) {
      const { token } = config;
      const schemes = [
        ...CREDENTIAL_SCHEMES,
        ...(token !== undefined ? [token.scheme] : []),
        ...(token?.query !== undefined && config.tokenInQuery ? [token.query.scheme] : []),
      ];
      route.schema = {
        ...route.schema,
        security: [
          ...schemes.map((scheme) => ({ [scheme]: [] })),
          // The empty requirement: the credential may come in the first frame instead.
          ...(config.credentialLater ? [{}] : []),
        ],
      };
    }
    // Generated clients name their methods after it: every operation of the OpenAPI
    // document has one, stable and unique. Fastify's automatic HEAD twins are not listed.
    if (route.schema?.hide === true || route.method === 'HEAD') return;
    const id = route.schema?.operationId;
    if (id === undefined || !/^[a-z][A-Za-z0-9]*$/.test(id)) {
      throw new Error(`${name} must declare schema.operationId in camelCase (or schema.hide)`);
    }
    const taken = operationIds.get(id);
    if (taken !== undefined) throw new Error(`${name} reuses the operationId ${id} of ${taken}`);
    operationIds.set(id, name);
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    closeIfRefusedUpgrade(request, reply);
    if (options.isClosing()) {
      reply.header('connection', 'close');
      throw new ApiError('SHUTTING_DOWN', undefined, { headers: { 'retry-after': '1' } });
    }
    // Decided by the matched route, never by the raw URL: `/%761/…` and absolute-form
    // targets route to /v1 handlers too.
    const { auth } = request.routeOptions.config;
    if (auth === undefined || auth === 'public') {
      await limit(request, reply, `ip:${clientNetwork(request.ip)}`, 'ip');
      return;
    }
    let caller: Caller | undefined;
    try {
      caller = await identify(request.headers, request.query, request.routeOptions.config);
    } catch (err) {
      // A connection that failed to authenticate is not kept alive for another guess.
      reply.header('connection', 'close');
      // Failed credentials count against the caller's IP, which slows down guessing.
      await limit(request, reply, `ip:${clientNetwork(request.ip)}`, 'ip');
      throw err;
    }
    if (caller === undefined) {
      // No credential yet (config.credentialLater): counted by address until it comes.
      await limit(request, reply, `ip:${clientNetwork(request.ip)}`, 'ip');
      request.authenticateLater = laterAuthentication(request);
      return;
    }
    if (caller.principal !== undefined) request.principal = caller.principal;
    else request.token = caller.token;
    // What it needs of the request, not the request: a WebSocket keeps this for its life.
    const { headers, query } = request;
    const { config } = request.routeOptions;
    request.recheckCredential = async () => {
      await identify(headers, query, config);
    };
    markAuthenticated(request.raw.socket);
    const key = `cred:${callerId(caller)}`;
    await limit(request, reply, key, 'credential');
    if (rateLimiter && options.bytesPerToken > 0 && !request.routeOptions.config.probe) {
      request.byteCharge = new ByteCharge(rateLimiter, key, options.bytesPerToken);
    }
    assertRole(caller, auth);
  });

  app.addHook('onSend', async (request, reply, payload) => {
    // A response finished during shutdown closes its connection: keep-alive would hold the drain.
    if (options.isClosing()) reply.header('connection', 'close');
    // Charged before it is sent, never refused: the answer is ready, and the debt makes the
    // credential's next requests wait instead. The headers then show the bucket as the next
    // request will find it.
    const charged = request.byteCharge?.add(payloadBytes(payload, reply));
    if (charged !== undefined) setRateLimitHeaders(reply, await charged);
  });

  app.setNotFoundHandler(async (request, reply) => {
    if (options.notFound?.(request, reply)) return reply;
    throw new ApiError(
      'ROUTE_NOT_FOUND',
      `No route for ${request.method} ${request.url.split('?')[0]}`,
    );
  });

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    let apiError = toApiError(error) ?? options.mapDependencyError?.(error);
    if (apiError === undefined) {
      request.log.error({ err: error }, 'unhandled error');
      apiError = new ApiError('INTERNAL_ERROR');
    } else if (apiError.status >= 500) {
      request.log.warn({ err: error, code: apiError.code }, apiError.message);
    }
    reply.header('x-request-id', request.id); // also for errors raised before our onRequest hook
    for (const [name, value] of Object.entries(apiError.headers ?? {})) reply.header(name, value);
    reply.status(apiError.status).type('application/json; charset=utf-8');
    return errorBody(apiError, {
      requestId: request.id,
      service: options.service,
      instanceId: options.instanceId,
      traceId: traceIdOf(request),
    });
  });
}

interface ValidationIssue {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/**
 * Installs the access log and the HTTP metrics. Call it before any plugin with an `onRequest`
 * hook that may answer (load shedding, authentication): hooks run in order, and the line is
 * arranged for in this one.
 */
export function installAccessLog(app: FastifyInstance, metrics: Metrics): void {
  /**
   * One access-log line and one metric sample per request, written when its response closes:
   * also for event streams (hijacked, so Fastify's onResponse never runs) and for requests
   * the client abandoned. Credentials in the URL are redacted.
   */
  const accessLog = (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? '(unmatched)';
    const upgraded = (request.raw as { upgrade?: boolean }).upgrade && !reply.raw.headersSent;
    const status = upgraded ? 101 : reply.statusCode;
    const labels = { method: request.method, route, status_code: status };
    const seconds = reply.elapsedTime / 1000;
    metrics.httpRequests.inc(labels);
    metrics.httpDuration.observe(labels, seconds);
    const level = request.routeOptions.config.probe ? 'debug' : 'info';
    request.log[level](
      {
        method: request.method,
        url: redactUrl(request.url),
        route,
        status,
        duration_ms: Math.round(reply.elapsedTime * 100) / 100,
        ip: request.ip,
        // The client went away before the response was complete (a stream it closed).
        ...(reply.raw.writableFinished || upgraded ? {} : { aborted: true }),
        ...(request.principal
          ? { tenant_id: request.principal.tenant.id, credential: credentialId(request.principal) }
          : request.token
            ? { tenant_id: request.token.tenantId, credential: request.token.id }
            : {}),
      },
      'request completed',
    );
  };
  app.addHook('onRequest', async (request, reply) => {
    reply.raw.once('close', () => accessLog(request, reply));
  });
}

/**
 * Fastify options for failures that happen before a request reaches the pipeline: an
 * undecodable URL or an over-long path parameter (`frameworkErrors`), and malformed HTTP
 * that Node rejects while parsing (`clientErrorHandler`). Both answer in the unified format.
 */
export function earlyErrorHandlers(context: { service: string; instanceId: string }) {
  return {
    frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
      const apiError =
        error.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new ApiError('URI_TOO_LONG')
          : new ApiError('BAD_REQUEST', 'The URL is not valid');
      closeIfRefusedUpgrade(request, reply);
      // Before any hook ran: the access log's own hook has not arranged for a line.
      request.log.info(
        {
          method: request.method,
          url: redactUrl(request.url),
          route: '(unmatched)',
          status: apiError.status,
          ip: request.ip,
        },
        'request completed',
      );
      reply
        .status(apiError.status)
        .header('x-request-id', request.id)
        .type('application/json; charset=utf-8')
        .send(errorBody(apiError, { ...context, requestId: request.id }));
    },
    clientErrorHandler(error: Error & { code?: string }, socket: Socket) {
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      const apiError =
        error.code === 'HPE_HEADER_OVERFLOW'
          ? new ApiError('HEADERS_TOO_LARGE')
          : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? new ApiError('REQUEST_TIMEOUT')
            : new ApiError('BAD_REQUEST', 'The request is not valid HTTP');
      endWithError(socket, apiError, context);
    },
  };
}

/**
 * An upgrade request that gets an HTTP answer instead of 101 (refused credentials, a rate
 * limit, no such route) must close its socket once answered: Node hands upgrade sockets to
 * the application, and no one else would close it.
 */
function closeIfRefusedUpgrade(request: FastifyRequest, reply: FastifyReply): void {
  if (!(request.raw as { upgrade?: boolean }).upgrade) return;
  const socket = request.raw.socket;
  reply.raw.once('finish', () => closeAfterFlush(socket));
  reply.raw.once('close', () => closeAfterFlush(socket));
}

/** Maps what Fastify and our code throw to a catalogued error; `undefined` means a bug. */
export function toApiError(error: FastifyError): ApiError | undefined {
  if (error instanceof ApiError) return error;
  if (error.validation) {
    const context = error.validationContext ?? 'request';
    const issues = (error.validation as ValidationIssue[]).map((issue) =>
      describeIssue(context, issue),
    );
    const first = issues[0];
    const details: ErrorDetails = { fields: issues };
    return new ApiError(
      'VALIDATION_FAILED',
      first ? `${first.field}: ${first.message}` : undefined,
      {
        details,
        cause: error,
      },
    );
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('PAYLOAD_TOO_LARGE', undefined, { cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(
        'UNSUPPORTED_MEDIA_TYPE',
        'The request content type is not supported; send application/json',
        { cause: error },
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError('INVALID_JSON', 'The body is empty but the content type is JSON', {
        cause: error,
      });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError('INVALID_JSON', undefined, { cause: error });
  }
  if (error instanceof SyntaxError && error.statusCode === 400) {
    return new ApiError('INVALID_JSON', `The request body is not valid JSON: ${error.message}`, {
      cause: error,
    });
  }
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    switch (error.statusCode) {
      case 403: // @fastify/static refusing a path outside its root: nothing is there
      case 404:
        return new ApiError('ROUTE_NOT_FOUND', undefined, { cause: error });
      case 413:
        return new ApiError('PAYLOAD_TOO_LARGE', undefined, { cause: error });
      case 415:
        return new ApiError('UNSUPPORTED_MEDIA_TYPE', undefined, { cause: error });
      default:
        return new ApiError('BAD_REQUEST', error.message, { cause: error });
    }
  }
  return undefined;
}

function describeIssue(
  context: string,
  issue: ValidationIssue,
): { field: string; message: string } {
  const path = issue.instancePath
    .split('/')
    .filter((p) => p !== '')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const field = (...extra: string[]) => [context, ...path, ...extra].join('.');
  switch (issue.keyword) {
    case 'required':
      return { field: field(String(issue.params.missingProperty)), message: 'is required' };
    case 'additionalProperties':
      return { field: field(String(issue.params.additionalProperty)), message: 'is not allowed' };
    case 'enum':
      return {
        field: field(),
        message: `must be one of ${(issue.params.allowedValues as unknown[]).join(', ')}`,
      };
    default:
      return { field: field(), message: issue.message ?? 'is invalid' };
  }
}

/**
 * The version in an `If-Match` header for optimistic concurrency: the quoted version of an
 * ETag (`"3"`, or weak `W/"3"`), or the bare number (`3`) as people type it.
 */
export function ifMatchVersion(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*(?:(?:W\/)?"(\d{1,9})"|(\d{1,9}))\s*$/.exec(header);
  const digits = match?.[1] ?? match?.[2];
  if (digits === undefined) {
    throw new ApiError('BAD_REQUEST', 'If-Match must be the version from an ETag, such as "3"');
  }
  return Number(digits);
}
