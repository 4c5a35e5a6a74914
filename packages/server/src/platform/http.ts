import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { credentialId, type Principal, type Role } from './auth.ts';
import { closeAfterFlush, endWithError, markAuthenticated } from './connection-guard.ts';
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
     * say (registration fails otherwise); routes outside `/v1` are public by default.
     */
    auth?: 'public' | readonly Role[];
    /**
     * A probe or scrape (`/healthz`, `/readyz`, `/metrics`): never rate limited, and its
     * access line is logged at debug so that polling does not flood the log.
     */
    probe?: true;
  }
  interface FastifyRequest {
    /** The authenticated caller; set on every `/v1` route that is not public. */
    principal?: Principal;
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

/** Resolves the credential in a request, or throws an `ApiError` (401/503). */
export type Authenticate = (request: FastifyRequest) => Promise<Principal>;

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

  async function limit(request: FastifyRequest, reply: FastifyReply, key: string, scope: string) {
    if (!rateLimiter || request.routeOptions.config.probe) return;
    const decision = await rateLimiter.consume(key);
    setRateLimitHeaders(reply, decision);
    if (!decision.allowed) {
      metrics.rateLimited.inc({ scope });
      throw new ApiError(
        'RATE_LIMITED',
        `Too many requests; retry in ${decision.retryAfterSeconds} s`,
        {
          headers: { 'retry-after': String(decision.retryAfterSeconds) },
        },
      );
    }
  }

  const operationIds = new Map<string, string>();
  app.addHook('onRoute', (route) => {
    const name = `${route.method} ${route.url}`;
    if (isV1(route.url) && route.config?.auth === undefined) {
      throw new Error(`${name} must declare config.auth (roles or 'public')`);
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
    let principal: Principal;
    try {
      principal = await options.authenticate(request);
    } catch (err) {
      // A connection that failed to authenticate is not kept alive for another guess.
      reply.header('connection', 'close');
      // Failed credentials count against the caller's IP, which slows down guessing.
      await limit(request, reply, `ip:${clientNetwork(request.ip)}`, 'ip');
      throw err;
    }
    request.principal = principal;
    request.recheckCredential = async () => {
      await options.authenticate(request);
    };
    markAuthenticated(request.raw.socket);
    const key = `cred:${credentialId(principal)}`;
    await limit(request, reply, key, 'credential');
    if (rateLimiter && options.bytesPerToken > 0 && !request.routeOptions.config.probe) {
      request.byteCharge = new ByteCharge(rateLimiter, key, options.bytesPerToken);
    }
    if (Array.isArray(auth) && !auth.includes(principal.role)) {
      throw new ApiError(
        'PERMISSION_DENIED',
        `This operation requires the role ${auth.join(' or ')}; the credential has ${principal.role}`,
      );
    }
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
