import type { ValidatorFactory } from '@fastify/ajv-compiler';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import underPressure from '@fastify/under-pressure';
import fastifyWebsocket from '@fastify/websocket';
import { ErrorResponse, StreamError, StreamGap } from '@orchestra/protocol';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { webConsole } from './gateway/index.ts';
import { KvUnavailableError } from './kv/index.ts';
import type { BuiltModules, ModuleDeclaration, ModuleName, Platform } from './module.ts';
import { guardUnauthenticatedConnections } from './platform/connection-guard.ts';
import { ApiError } from './platform/errors.ts';
import {
  earlyErrorHandlers,
  installAccessLog,
  installHttpPlatform,
  requestIdFor,
} from './platform/http.ts';
import { buildRequestValidator, jsonValueProblem } from './platform/validation.ts';
import { isStoreUnavailable } from './store/store.ts';

const SERVICE = 'orchestra';

/** The OpenAPI security of a route that `config.auth` protects: an API key or a JWT. */
const CREDENTIALS: Record<string, string[]>[] = [{ bearerAuth: [] }, { apiKeyHeader: [] }];

/** Builds the HTTP application (not listening yet): the platform's, then every module's routes. */
export async function buildApp(
  platform: Platform,
  modules: BuiltModules,
  options: { serve?: readonly string[] | undefined } = {},
): Promise<FastifyInstance> {
  const { settings, metrics, version } = platform;
  const { identity } = modules.get('gateway');
  const app = Fastify({
    loggerInstance: platform.log as FastifyBaseLogger,
    // One access-log line per request is written by the platform's access log.
    logController: new LogController({
      disableRequestLogging: true,
      requestIdLogLabel: 'request_id',
    }),
    genReqId: requestIdFor,
    bodyLimit: settings.bodyLimitBytes,
    // Bounds what a client can hold before it authenticates: headers arrive in time (a
    // connection that sends nothing counts too) and stay small. Checked every second.
    http: {
      headersTimeout: settings.headersTimeoutMs,
      maxHeaderSize: settings.maxHeaderBytes,
      connectionsCheckingInterval: 1000,
    },
    trustProxy: settings.trustProxy,
    // Answered by our own hook instead, in the unified error format.
    return503OnClosing: false,
    ...earlyErrorHandlers({ service: SERVICE, instanceId: settings.instanceId }),
    // Long enough for any id we issue; longer ones reach the schema and get a 400.
    routerOptions: { maxParamLength: 500 },
    // Set here, not with setValidatorCompiler: a plugin that adds shared schemas rebuilds
    // its validator from this factory. The cast: Fastify's declared factory type says the
    // compiler takes a bare schema, but Fastify (and its own ajv-compiler) call it with
    // { schema, httpPart, method, url }, which is what ours takes.
    schemaController: {
      compilersFactory: { buildValidator: buildRequestValidator as unknown as ValidatorFactory },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.decorate('streamKeepAliveMs', settings.streamKeepAliveMs);
  app.decorate('responseMaxBytes', settings.responseMaxBytes);
  app.decorate('streamCredentialCheckMs', settings.streamCredentialCheckMs);
  if (!settings.trustProxy) {
    guardUnauthenticatedConnections(app.server, {
      maxPerAddress: settings.unauthenticatedConnectionsPerAddress,
      context: { service: SERVICE, instanceId: settings.instanceId },
      onRefused: () => metrics.rateLimited.inc({ scope: 'connection' }),
    });
  }

  // The API speaks JSON only; any other body is a 415, not a string handed to validation.
  app.removeContentTypeParser('text/plain');
  // Many clients send a JSON content type on body-less POSTs (cancel, retry): an empty body
  // is no body. Routes that need one still answer VALIDATION_FAILED naming it.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text === '') {
      done(null, undefined);
      return;
    }
    parseJson(request, text, (err, value) => {
      if (err) {
        done(err);
        return;
      }
      const problem = jsonValueProblem(value, text, 'body');
      if (problem !== undefined) {
        done(
          new ApiError('VALIDATION_FAILED', `${problem.field}: ${problem.message}`, {
            details: { fields: [problem] },
          }),
        );
        return;
      }
      done(null, value);
    });
  });

  installAccessLog(app, metrics);
  // First, so that a request shed under load costs no authentication or store lookup.
  if (settings.maxEventLoopDelayMs > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: settings.maxEventLoopDelayMs,
      pressureHandler: async () => {
        throw new ApiError('SERVICE_OVERLOADED', undefined, { headers: { 'retry-after': '5' } });
      },
    });
  }

  const site = webConsole();
  installHttpPlatform(app, {
    notFound: site.page,
    service: SERVICE,
    instanceId: settings.instanceId,
    metrics,
    rateLimiter: platform.rateLimiter,
    bytesPerToken: settings.rateLimitBytesPerToken,
    authenticate: (request) => identity.authenticate(request.headers),
    isClosing: platform.isClosing,
    mapDependencyError: (error) =>
      isStoreUnavailable(error)
        ? new ApiError('STORAGE_UNAVAILABLE', undefined, {
            cause: error,
            headers: { 'retry-after': '5' },
          })
        : error instanceof KvUnavailableError
          ? new ApiError('STORAGE_UNAVAILABLE', 'The etcd cluster does not answer', {
              cause: error,
              details: { backend: 'etcd' },
              headers: { 'retry-after': '5' },
            })
          : undefined,
  });

  app.addSchema(ErrorResponse);
  app.addSchema(StreamGap);
  app.addSchema(StreamError);
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Orchestra API',
        version,
        description:
          'Control plane for AI agents. Every `/v1` route needs a credential: `Authorization: Bearer <API key or JWT>` or `X-API-Key: <API key>`; each operation lists the schemes it takes (the topic routes also take a realtime token). Errors use the `ErrorResponse` shape; codes are listed in docs/errors.md.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      // Relative: the document describes the server that serves it, whatever its address.
      servers: [{ url: '/', description: 'The server that serves this document' }],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            description: 'An `ork_…` API key or a JWT.',
          },
          apiKeyHeader: {
            type: 'apiKey',
            in: 'header',
            name: 'X-API-Key',
            description: 'An `ork_…` API key, for clients that cannot set Authorization.',
          },
          realtimeToken: {
            type: 'http',
            scheme: 'bearer',
            description:
              'A realtime token (`ort_…`) from `POST /v1/realtime/tokens`: it grants the topics it lists, and nothing else.',
          },
          realtimeTokenQuery: {
            type: 'apiKey',
            in: 'query',
            name: 'token',
            description:
              'A realtime token (`ort_…`) in the URL, for EventSource, which cannot set headers.',
          },
        },
      },
    },
    // Components are named by their $id (ErrorResponse, ApiKey…), not def-0, def-1.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    // Every operation states its security: what `config.auth` requires, none for public
    // routes, or what a route that authenticates by itself declares in `schema.security`.
    transform: ({ schema: declared, url: routeUrl, route }) => {
      // A wildcard (`…/*`, the ports proxy) is documented as a `{path}` parameter.
      const wildcard = wildcardAsPath(routeUrl, declared);
      const url = wildcard.url;
      const raw = route.config?.rawBody;
      const schema = raw
        ? {
            ...wildcard.schema,
            consumes: [...raw.contentTypes],
            body: { type: 'string', format: 'binary', description: raw.description },
          }
        : wildcard.schema;
      const roles = route.config?.auth;
      if (!Array.isArray(roles))
        return { url, schema: { ...schema, security: schema?.security ?? [] } };
      const note = `Roles: ${roles.join(', ')}.`;
      return {
        url,
        schema: {
          ...schema,
          security: schema?.security ?? CREDENTIALS,
          description: [schema?.description, note].filter(Boolean).join('\n\n'),
        },
      };
    },
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(fastifyWebsocket, {
    // Each protocol checks its own frame limit; this is the larger of the two.
    options: {
      maxPayload: Math.max(settings.agentMaxFrameBytes, settings.realtimeMaxFrameBytes),
      // server_no_context_takeover: each message is compressed alone, so one compressed
      // broadcast frame suits every subscriber.
      perMessageDeflate: settings.realtimeCompression
        ? { serverNoContextTakeover: true, threshold: 1024 }
        : false,
    },
    // The pool closes agent connections itself, with 1001, before the server closes.
    preClose: (done) => done(),
  });
  const serve = options.serve === undefined ? undefined : new Set(options.serve);
  for (const { declaration, self, ctx } of modules.ordered) {
    const typed = declaration as ModuleDeclaration<ModuleName>;
    if (serve !== undefined && !serve.has(typed.name)) continue;
    if (typed.routes) await app.register(typed.routes(self as never, ctx));
  }
  // The console, on nodes that serve the API.
  if (serve === undefined) await app.register(site.routes);
  return app;
}

/** A route ending in `/*` as OpenAPI can say it: `/{path}`, with the `*` parameter renamed. */
function wildcardAsPath<S extends { params?: unknown } | undefined>(
  url: string,
  schema: S,
): { url: string; schema: S } {
  const params = schema?.params as
    | { properties?: Record<string, unknown>; required?: string[] }
    | undefined;
  if (!url.endsWith('/*') || params?.properties?.['*'] === undefined) return { url, schema };
  const { '*': star, ...others } = params.properties;
  return {
    url: `${url.slice(0, -1)}{path}`,
    schema: {
      ...schema,
      params: {
        ...params,
        properties: { ...others, path: star },
        required: (params.required ?? []).map((name) => (name === '*' ? 'path' : name)),
      },
    },
  };
}
