import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ConfigDeleted,
  ConfigDiff,
  ConfigHistoryPage,
  ConfigItem,
  ConfigPage,
  ConfigSchema,
  ConfigSchemaList,
  ConfigWatchEvent,
  errorResponses,
  eventStreamResponse,
  PutConfig,
  PutConfigSchema,
  RevertConfig,
} from '@orchestra/protocol';
import type { FastifyReply, FastifyRequest, FastifySchema } from 'fastify';
import Type from 'typebox';
import { lastEventIdOf, type StreamFormat, sendStream, streamFormat } from '../events/index.ts';
import { READ_ROLES, type Role, WRITE_ROLES } from '../platform/auth.ts';
import { invalidField } from '../platform/envelope.ts';
import { ApiError } from '../platform/errors.ts';
import { ifMatchVersion, principalOf } from '../platform/http.ts';
import { PageQuery, responseBudget, withinBudget } from '../platform/pagination.ts';
import type { ConfigService, WatchEvent } from './config-service.ts';
import { ENV_PATTERN, parseEnv, parseKey, parsePrefix } from './keys.ts';

/** Agents read the configuration they run with; only operators and admins change it. */
export const CONFIG_READ_ROLES: readonly Role[] = [...READ_ROLES, 'agent'];

const EnvQuery = Type.Optional(
  Type.String({
    pattern: ENV_PATTERN,
    description:
      'The environment (dev, staging, prod…); ORCHESTRA_CONFIG_DEFAULT_ENV when omitted.',
  }),
);

const Reason = Type.String({ minLength: 1, maxLength: 500 });

const KeyParams = Type.Object({
  key: Type.String({
    description:
      'The key, such as `client/flushInterval`. Its slashes may be percent-encoded (`client%2FflushInterval`, as generated clients send them) or written as they are (`/v1/config/client/flushInterval`).',
  }),
});

const PrefixParams = Type.Object({
  prefix: Type.String({
    description:
      'The key prefix, such as `client/`. Its slashes may be percent-encoded (`client%2F`) or written as they are.',
  }),
});

const HistoryQuery = {
  env: EnvQuery,
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
  before: Type.Optional(Type.Integer({ minimum: 2 })),
};

const DiffQuery = {
  from: Type.Integer({ minimum: 1, description: 'The older version.' }),
  to: Type.Integer({ minimum: 1, description: 'The newer version; the newest by default.' }),
};

const EnvOnlyQuery = Type.Object({ env: EnvQuery }, { additionalProperties: false });
const IfMatchHeader = Type.Optional(Type.String({ maxLength: 64 }));

/** The schemas of the writes of one key, documented and on the catch-all routes alike. */
const putKeySchema = {
  tags: ['config'],
  summary: 'Create or update a key',
  description:
    '201 when the key is created, 200 when updated. `If-Match: "<version>"` (or a bare number) writes only over that version, `If-None-Match: *` only when the key does not exist: 412 PRECONDITION_FAILED otherwise. A value that violates the JSON Schema of a prefix of the key is refused with 400 naming the path. `lease` binds the key to a lease: it goes when the lease ends.',
  querystring: EnvOnlyQuery,
  headers: Type.Object({ 'if-match': IfMatchHeader, 'if-none-match': IfMatchHeader }),
  body: PutConfig,
  response: { 200: Type.Ref('ConfigItem'), 201: Type.Ref('ConfigItem'), ...errorResponses },
};

const deleteKeySchema = {
  tags: ['config'],
  summary: 'Delete a key',
  description:
    'The delete is a change with a version and a revision of its own, kept in history and sent to watchers. `If-Match` as for PUT.',
  querystring: Type.Object(
    { env: EnvQuery, reason: Type.Optional(Reason) },
    { additionalProperties: false },
  ),
  headers: Type.Object({ 'if-match': IfMatchHeader }),
  response: { 200: ConfigDeleted, ...errorResponses },
};

const revertKeySchema = {
  tags: ['config'],
  summary: 'Revert a key to an earlier version',
  description:
    'Writes what `version` held as a new change (a delete if that version was one), with its own version and revision; the reason defaults to "revert to version N". The value must satisfy today’s schemas.',
  querystring: EnvOnlyQuery,
  headers: Type.Object({ 'if-match': IfMatchHeader }),
  body: RevertConfig,
  response: { 200: Type.Union([Type.Ref('ConfigItem'), ConfigDeleted]), ...errorResponses },
};

function encodeListCursor(after: string, revision: number): string {
  return Buffer.from(JSON.stringify({ after, revision })).toString('base64url');
}

function decodeListCursor(
  cursor: string | undefined,
): { after: string; revision: number } | undefined {
  if (cursor === undefined) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (
      typeof parsed === 'object' &&
      parsed !== null &&
      typeof (parsed as { after?: unknown }).after === 'string' &&
      Number.isSafeInteger((parsed as { revision?: unknown }).revision)
    )
      return parsed as { after: string; revision: number };
  } catch {
    // refused below
  }
  throw new ApiError('INVALID_CURSOR', 'The cursor is not one this server returned');
}

/** Splits `a/b/history` into the key and the action its last segment names. */
function route(path: string): { key: string; action: 'history' | 'diff' | 'revert' | undefined } {
  const match = /^(.*)\/(history|diff|revert)$/.exec(path);
  if (match?.[1] !== undefined && match[2] !== undefined)
    return { key: match[1], action: match[2] as 'history' | 'diff' | 'revert' };
  return { key: path, action: undefined };
}

/** Encoded events by format: one change is encoded once for all the node's watchers. */
const encodedEvents = {
  sse: new WeakMap<WatchEvent, string>(),
  ndjson: new WeakMap<WatchEvent, string>(),
};

function encodeWatchEvent(event: WatchEvent, format: StreamFormat): string {
  const cache = encodedEvents[format];
  let text = cache.get(event);
  if (text === undefined) {
    const json = JSON.stringify(event);
    // The id is the revision: EventSource sends it back as Last-Event-ID on reconnect. A
    // resync page without `more` is a consistent point to resume from; earlier pages are not.
    const id = event.type !== 'resync' || !event.more ? `id: ${event.revision}\n` : '';
    text = format === 'ndjson' ? `${json}\n` : `${id}event: ${event.type}\ndata: ${json}\n\n`;
    cache.set(event, text);
  }
  return text;
}

/** `/v1/config` and `/v1/config-schemas`: the config center. */
export const configRoutes: FastifyPluginAsyncTypebox<{
  config: ConfigService;
  shutdown: AbortSignal;
}> = async (app, { config, shutdown }) => {
  app.addSchema(ConfigItem);
  app.addSchema(ConfigSchema);
  app.addSchema(ConfigWatchEvent);
  const envOf = (raw: string | undefined) => parseEnv(raw, config.settings.defaultEnv);

  app.get(
    '/v1/config',
    {
      schema: {
        tags: ['config'],
        operationId: 'listConfigKeys',
        summary: 'List keys by prefix, at the current or a given revision',
        description:
          'Keys in byte order. Every page shows one revision: the first page’s `revision`, carried in the cursor, so a listing is consistent even while keys change. `revision` lists the keys as they were then (410 REVISION_COMPACTED when that history is gone).',
        querystring: Type.Object(
          {
            env: EnvQuery,
            prefix: Type.Optional(Type.String({ maxLength: 512 })),
            revision: Type.Optional(Type.Integer({ minimum: 1 })),
            ...PageQuery,
          },
          { additionalProperties: false },
        ),
        response: { 200: ConfigPage, ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request) => {
      const principal = principalOf(request);
      const env = envOf(request.query.env);
      const prefix = parsePrefix(request.query.prefix, 'querystring.prefix');
      const cursor = decodeListCursor(request.query.cursor);
      if (cursor && !cursor.after.startsWith(prefix))
        throw new ApiError('INVALID_CURSOR', 'The cursor belongs to another prefix');
      const limit = request.query.limit ?? 50;
      const page = await config.list(principal.tenant.id, env, {
        prefix,
        limit,
        ...(cursor ? { after: cursor.after } : {}),
        ...((cursor?.revision ?? request.query.revision) !== undefined
          ? { revision: cursor?.revision ?? request.query.revision }
          : {}),
      });
      const items = withinBudget(page.items, responseBudget(request));
      const more = page.more || items.length < page.items.length;
      const last = items[items.length - 1];
      return {
        items,
        revision: page.revision,
        next_cursor: more && last ? encodeListCursor(last.key, page.revision) : null,
      };
    },
  );

  app.get(
    '/v1/config/watch',
    {
      schema: {
        tags: ['config'],
        operationId: 'watchConfig',
        summary: 'Watch keys under a prefix',
        description:
          'Server-Sent Events (`Accept: text/event-stream`) or NDJSON: `put` and `delete` events `{type, key, value, prev_value, version, revision}` for changed keys only, with the revision as the SSE id. `from_revision` (or `Last-Event-ID`) resumes after that revision; without either, only changes from now on. When that revision is no longer retained, `resync` events carry a snapshot (`items`, in pages while `more` is true) at their `revision`, then the changes after it follow.',
        querystring: Type.Object(
          {
            env: EnvQuery,
            prefix: Type.Optional(Type.String({ maxLength: 512 })),
            from_revision: Type.Optional(
              Type.Integer({
                minimum: 0,
                description: 'Send the changes after this revision (the last one you saw).',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 20 })) }),
        response: {
          200: eventStreamResponse(
            Type.Ref('ConfigWatchEvent'),
            'Changes of the keys under the prefix.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const env = envOf(request.query.env);
      const prefix = parsePrefix(request.query.prefix, 'querystring.prefix');
      const after = lastEventIdOf(request.headers['last-event-id']) ?? request.query.from_revision;
      // Opened before the response starts, so that a dead backend is a 503, not an empty stream.
      const controller = new AbortController();
      const events = config.watch(principal.tenant.id, env, prefix, after, controller.signal);
      const iterator = events[Symbol.asyncIterator]();
      const first = iterator.next();
      // A watch with nothing to send yet stays pending: give it a moment to fail instead.
      const early = await Promise.race([
        first.then(
          (r) => ({ ok: true as const, r }),
          (err: unknown) => ({ ok: false as const, err }),
        ),
        new Promise<undefined>((resolve) => setTimeout(resolve, 50)),
      ]);
      if (early !== undefined && !early.ok) throw early.err;
      await sendStream<WatchEvent>(
        request,
        reply,
        async function* (signal) {
          signal.addEventListener('abort', () => controller.abort(), { once: true });
          const head = await first;
          if (head.done) return;
          yield head.value;
          for (;;) {
            const next = await iterator.next();
            if (next.done) return;
            yield next.value;
          }
        },
        {
          format: streamFormat(request.headers.accept),
          stop: shutdown,
          encode: encodeWatchEvent,
          endEvent: false,
        },
      );
      controller.abort();
      return reply;
    },
  );

  // One key: documented on `/v1/config/{key}` with the key as one path segment (`a%2Fb`, as
  // generated clients send it). Keys written with raw slashes (`/v1/config/a/b/history`, as
  // the SDK, CLI and console send them) reach the same operations through the hidden
  // catch-all routes further down, which split off the suffix (decision 0013).

  const getKey = async (request: FastifyRequest, reply: FastifyReply, key: string, env: string) => {
    const item = await config.get(principalOf(request).tenant.id, env, key);
    reply.header('etag', `"${item.version}"`);
    return item;
  };

  const getHistory = async (
    request: FastifyRequest,
    key: string,
    env: string,
    query: { limit?: number | undefined; before?: number | undefined },
  ) => {
    const page = await config.history(principalOf(request).tenant.id, env, key, {
      limit: query.limit ?? 50,
      ...(query.before !== undefined ? { before: query.before } : {}),
    });
    const items = withinBudget(page.items, responseBudget(request));
    const oldest = items[items.length - 1];
    return items.length < page.items.length && oldest
      ? { items, next_before: oldest.version }
      : page;
  };

  const getDiff = (request: FastifyRequest, key: string, env: string, from: number, to?: number) =>
    config.diff(principalOf(request).tenant.id, env, key, from, to);

  const putKey = async (
    request: FastifyRequest<{ Body: PutConfig }>,
    reply: FastifyReply,
    key: string,
  ) => {
    const principal = principalOf(request);
    const { env, noneMatch, ifMatch } = writeContext(request);
    if (noneMatch !== undefined && noneMatch.trim() !== '*')
      throw new ApiError('BAD_REQUEST', 'If-None-Match accepts only *');
    const { item, created } = await config.put(principal, env, key, {
      value: request.body.value,
      reason: request.body.reason,
      lease: request.body.lease,
      ifMatch,
      ifNoneMatch: noneMatch !== undefined,
    });
    reply.header('etag', `"${item.version}"`);
    reply.status(created ? 201 : 200);
    return item;
  };

  const deleteKey = async (request: FastifyRequest, key: string) => {
    const { env, ifMatch } = writeContext(request);
    return config.delete(principalOf(request), env, key, {
      reason: (request.query as { reason?: string }).reason,
      ifMatch,
    });
  };

  const revertKey = async (
    request: FastifyRequest<{ Body: RevertConfig }>,
    reply: FastifyReply,
    key: string,
  ) => {
    const { env, ifMatch } = writeContext(request);
    const result = await config.revert(principalOf(request), env, key, {
      version: request.body.version,
      reason: request.body.reason,
      ifMatch,
    });
    reply.header('etag', `"${result.version}"`);
    return result;
  };

  /** The environment and conditional headers of a write, as its route validated them. */
  const writeContext = (request: FastifyRequest) => {
    const headers = request.headers as { 'if-match'?: string; 'if-none-match'?: string };
    return {
      env: envOf((request.query as { env?: string }).env),
      ifMatch: ifMatchVersion(headers['if-match']),
      noneMatch: headers['if-none-match'],
    };
  };

  const keyParam = (request: { params: { key: string } }) =>
    parseKey(request.params.key, 'params.key');

  app.get(
    '/v1/config/:key',
    {
      schema: {
        tags: ['config'],
        operationId: 'getConfigKey',
        summary: 'Get a key',
        description: 'The value with its version (also the ETag) and revision.',
        params: KeyParams,
        querystring: EnvOnlyQuery,
        response: { 200: Type.Ref('ConfigItem'), ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request, reply) => getKey(request, reply, keyParam(request), envOf(request.query.env)),
  );

  app.get(
    '/v1/config/:key/history',
    {
      schema: {
        tags: ['config'],
        operationId: 'listConfigKeyHistory',
        summary: 'List the changes of a key, newest first',
        description:
          'Each change with its version, revision, actor, time and reason; deletes included. `before` is the `next_before` of the previous page.',
        params: KeyParams,
        querystring: Type.Object(HistoryQuery, { additionalProperties: false }),
        response: { 200: ConfigHistoryPage, ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request) =>
      getHistory(request, keyParam(request), envOf(request.query.env), request.query),
  );

  app.get(
    '/v1/config/:key/diff',
    {
      schema: {
        tags: ['config'],
        operationId: 'diffConfigKey',
        summary: 'Compare two versions of a key',
        description: 'JSON Pointer changes from version `from` to `to` (default: the newest).',
        params: KeyParams,
        querystring: Type.Object(
          { env: EnvQuery, from: DiffQuery.from, to: Type.Optional(DiffQuery.to) },
          { additionalProperties: false },
        ),
        response: { 200: ConfigDiff, ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request) =>
      getDiff(
        request,
        keyParam(request),
        envOf(request.query.env),
        request.query.from,
        request.query.to,
      ),
  );

  app.put(
    '/v1/config/:key',
    {
      schema: { ...putKeySchema, operationId: 'putConfigKey', params: KeyParams },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => putKey(request, reply, keyParam(request)),
  );

  app.delete(
    '/v1/config/:key',
    {
      schema: { ...deleteKeySchema, operationId: 'deleteConfigKey', params: KeyParams },
      config: { auth: WRITE_ROLES },
    },
    async (request) => deleteKey(request, keyParam(request)),
  );

  app.post(
    '/v1/config/:key/revert',
    {
      schema: { ...revertKeySchema, operationId: 'revertConfigKey', params: KeyParams },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => revertKey(request, reply, keyParam(request)),
  );

  // The same operations for keys written with raw slashes, hidden from the document.

  /** The key of a catch-all route and the operation its last segment names. */
  const wildcardKey = (request: { params: unknown }) => {
    const { key, action } = route((request.params as { '*': string })['*']);
    return { key: parseKey(key, 'params.key'), action };
  };

  app.get(
    '/v1/config/*',
    {
      schema: {
        hide: true,
        querystring: Type.Object(
          {
            ...HistoryQuery,
            from: Type.Optional(DiffQuery.from),
            to: Type.Optional(DiffQuery.to),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Union([Type.Ref('ConfigItem'), ConfigHistoryPage, ConfigDiff]),
          ...errorResponses,
        },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request, reply) => {
      const { key, action } = wildcardKey(request);
      const env = envOf(request.query.env);
      const { limit, before, from, to } = request.query;
      const only = (allowed: string[]) => {
        for (const [name, value] of Object.entries({ limit, before, from, to })) {
          if (value !== undefined && !allowed.includes(name))
            throw invalidField(`querystring.${name}`, `does not apply to this route`);
        }
      };
      if (action === 'history') {
        only(['limit', 'before']);
        return getHistory(request, key, env, { limit, before });
      }
      if (action === 'diff') {
        only(['from', 'to']);
        if (from === undefined) throw invalidField('querystring.from', 'is required');
        return getDiff(request, key, env, from, to);
      }
      if (action === 'revert') throw new ApiError('ROUTE_NOT_FOUND', 'Revert is POST');
      only([]);
      return getKey(request, reply, key, env);
    },
  );

  app.put(
    '/v1/config/*',
    { schema: { ...putKeySchema, hide: true }, config: { auth: WRITE_ROLES } },
    async (request, reply) => {
      const { key, action } = wildcardKey(request);
      if (action !== undefined)
        throw new ApiError('ROUTE_NOT_FOUND', `PUT does not apply to …/${action}`);
      return putKey(request, reply, key);
    },
  );

  app.delete(
    '/v1/config/*',
    { schema: { ...deleteKeySchema, hide: true }, config: { auth: WRITE_ROLES } },
    async (request) => {
      const { key, action } = wildcardKey(request);
      if (action !== undefined)
        throw new ApiError('ROUTE_NOT_FOUND', `DELETE does not apply to …/${action}`);
      return deleteKey(request, key);
    },
  );

  app.post(
    '/v1/config/*',
    { schema: { ...revertKeySchema, hide: true }, config: { auth: WRITE_ROLES } },
    async (request, reply) => {
      const { key, action } = wildcardKey(request);
      if (action !== 'revert')
        throw new ApiError('ROUTE_NOT_FOUND', 'POST applies only to /v1/config/{key}/revert');
      return revertKey(request, reply, key);
    },
  );

  // Schemas: documented on `/v1/config-schemas/{prefix}`, with raw slashes on the hidden
  // catch-all routes, as keys are.

  app.get(
    '/v1/config-schemas',
    {
      schema: {
        tags: ['config'],
        operationId: 'listConfigSchemas',
        summary: 'List the JSON Schemas attached to key prefixes',
        response: { 200: ConfigSchemaList, ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request) => ({ items: await config.listSchemas(principalOf(request).tenant.id) }),
  );

  /** The prefix of a documented route (`params.prefix`) or of a catch-all one (`*`). */
  const prefixParam = (request: { params: unknown }) => {
    const params = request.params as { prefix?: string; '*'?: string };
    return parsePrefix(params.prefix ?? params['*'], 'params.prefix');
  };

  /** Registers an operation on `/v1/config-schemas/{prefix}` and, hidden, on the catch-all. */
  const prefixRoute = (
    method: 'GET' | 'PUT' | 'DELETE',
    operationId: string,
    schema: FastifySchema,
    auth: readonly Role[],
    handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
  ) => {
    const documented = { ...schema, operationId, params: PrefixParams };
    app.route({
      method,
      url: '/v1/config-schemas/:prefix',
      schema: documented,
      config: { auth },
      handler,
    });
    const hidden = { ...schema, hide: true };
    app.route({ method, url: '/v1/config-schemas/*', schema: hidden, config: { auth }, handler });
  };

  prefixRoute(
    'GET',
    'getConfigSchema',
    {
      tags: ['config'],
      summary: 'Get the schema of a prefix',
      response: { 200: Type.Ref('ConfigSchema'), ...errorResponses },
    },
    CONFIG_READ_ROLES,
    async (request) => config.getSchema(principalOf(request).tenant.id, prefixParam(request)),
  );

  prefixRoute(
    'PUT',
    'putConfigSchema',
    {
      tags: ['config'],
      summary: 'Attach a JSON Schema to a key prefix',
      description:
        'Every later write of a key that starts with the prefix (in every environment) must satisfy it. Existing values are not checked. Draft-07, or 2020-12 with `$schema`; no remote `$ref`. Patterns run on RE2 with ECMAScript meaning; one RE2 cannot run (backreferences, lookaround) is a 400 naming its field.',
      body: PutConfigSchema,
      response: { 200: Type.Ref('ConfigSchema'), ...errorResponses },
    },
    WRITE_ROLES,
    async (request) => {
      const body = request.body as PutConfigSchema;
      return config.putSchema(principalOf(request), prefixParam(request), body.schema);
    },
  );

  prefixRoute(
    'DELETE',
    'deleteConfigSchema',
    {
      tags: ['config'],
      summary: 'Detach the schema of a prefix',
      response: { 204: Type.Null(), ...errorResponses },
    },
    WRITE_ROLES,
    async (request, reply) => {
      await config.deleteSchema(principalOf(request).tenant.id, prefixParam(request));
      reply.status(204);
      return null;
    },
  );
};
