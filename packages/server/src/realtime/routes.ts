import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateRealtimeToken,
  errorResponses,
  eventStreamResponse,
  PresenceMember,
  Published,
  PublishMessage,
  RealtimeToken,
  Topic,
  TopicHistory,
  TopicMessage,
  TopicStreamEvent,
} from '@orchestra/protocol';
import type { FastifyRequest } from 'fastify';
import Type from 'typebox';
import { resumeAfter, sendStream, streamFormat } from '../events/index.ts';
import { ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import { wsSocket } from '../platform/ws-socket.ts';
import {
  assertCanPublish,
  assertCanRead,
  identityOfCaller,
  type RealtimeIdentity,
} from './access.ts';
import type { RealtimeHub } from './hub.ts';
import { MAX_INFO_BYTES } from './protocol.ts';
import { type RealtimeTokens, realtimeTokenKind } from './tokens.ts';
import type { TopicService } from './topic-service.ts';
import { parsePattern, TOPIC_MAX_LENGTH, TOPIC_PATTERN } from './topics.ts';

const TopicParams = Type.Object({
  topic: Type.String({ maxLength: TOPIC_MAX_LENGTH, pattern: TOPIC_PATTERN }),
});
const Offset = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

const REALTIME_AUTH_NOTE =
  'Credential: an API key or JWT (`Authorization: Bearer …` or `X-API-Key`), or a realtime token (`Authorization: Bearer ort_…`) that grants the topic.';

/** Who calls a topic route, as the request pipeline admitted them: a credential or a realtime token. */
function callerOf(request: FastifyRequest): RealtimeIdentity {
  if (request.principal !== undefined) return identityOfCaller({ principal: request.principal });
  if (request.token !== undefined) return identityOfCaller({ token: request.token });
  throw new Error('topic route reached without a caller');
}

/** `/v1/realtime` (WebSocket, tokens) and `/v1/topics` (REST and SSE). */
export const realtimeRoutes: FastifyPluginAsyncTypebox<{
  hub: RealtimeHub;
  topics: TopicService;
  tokens: RealtimeTokens;
  shutdown: AbortSignal;
}> = async (app, { hub, topics, tokens, shutdown }) => {
  app.addSchema(TopicMessage);
  app.addSchema(PresenceMember);
  app.addSchema(Topic);

  /**
   * The topic routes take a realtime token besides keys and JWTs, through the platform's
   * pipeline; any role may call them, and `access.ts` decides what each may do there.
   */
  const token = realtimeTokenKind(tokens);
  const topicAuth = { auth: ROLES, token } as const;

  app.route({
    method: 'GET',
    url: '/v1/realtime',
    schema: {
      tags: ['realtime'],
      operationId: 'connectRealtime',
      summary: 'Connect to the realtime gateway (WebSocket)',
      description: `Upgrade to a WebSocket speaking the realtime protocol of docs/protocol.md. ${REALTIME_AUTH_NOTE} Or no credential in the request and an \`auth\` frame first (browsers). A plain HTTP request gets 426.`,
      response: {
        101: Type.Null({ description: 'Switching Protocols: the WebSocket is open.' }),
        ...errorResponses,
      },
    },
    // A credential in the request is checked before the upgrade (a bad one is refused with
    // 401); without one, the client sends it in an `auth` frame, checked the same way.
    config: { ...topicAuth, credentialLater: true },
    handler: async () => {
      throw new ApiError(
        'UPGRADE_REQUIRED',
        'Connect with a WebSocket client (Upgrade: websocket)',
        {
          headers: { upgrade: 'websocket' },
        },
      );
    },
    wsHandler: (socket, request) => {
      const { principal, token: verified, recheckCredential, authenticateLater } = request;
      const caller = principal !== undefined ? { principal } : verified && { token: verified };
      if (caller !== undefined && recheckCredential !== undefined) {
        hub.accept(wsSocket(socket), { caller, recheck: recheckCredential });
      } else if (authenticateLater !== undefined) {
        hub.accept(wsSocket(socket), authenticateLater);
      } else throw new Error('a realtime connection without a way to authenticate');
    },
  });

  app.post(
    '/v1/realtime/tokens',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'createRealtimeToken',
        summary: 'Issue a realtime token',
        description:
          'A short-lived token for a browser or another client: it may subscribe to (and, with `publish`, publish to) the listed topics and patterns of the tenant, and nothing else. It cannot be revoked.',
        body: CreateRealtimeToken,
        response: {
          201: RealtimeToken,
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const body = request.body;
      for (const [i, t] of body.topics.entries()) parsePattern(t, `body.topics.${i}`);
      if (
        body.info !== undefined &&
        Buffer.byteLength(JSON.stringify(body.info)) > MAX_INFO_BYTES
      ) {
        const message = `must be at most ${MAX_INFO_BYTES} bytes of JSON`;
        throw new ApiError('VALIDATION_FAILED', `body.info: ${message}`, {
          details: { fields: [{ field: 'body.info', message }] },
        });
      }
      // Rounded up to the second: a token lives at least its ttl (rounded down, one issued
      // late in a second with a 1 s ttl expired before its client could use it).
      const expiresAt = Math.ceil(Date.now() / 1000) + (body.ttl_seconds ?? 3600);
      const { token, id } = tokens.issue({
        tenantId: principal.tenant.id,
        topics: body.topics,
        publish: body.publish ?? false,
        clientId: body.client_id,
        info: body.info,
        expiresAt,
      });
      reply.status(201);
      return {
        token,
        expires_at: new Date(expiresAt * 1000).toISOString(),
        topics: body.topics,
        publish: body.publish ?? false,
        client_id: body.client_id ?? `token:${id}`,
      };
    },
  );

  app.get(
    '/v1/topics',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'listTopics',
        summary: 'List topics',
        description: 'User topics of the tenant, by name.',
        querystring: Type.Object(
          {
            ...PageQuery,
            prefix: Type.Optional(Type.String({ minLength: 1, maxLength: TOPIC_MAX_LENGTH })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Topic')), ...errorResponses },
      },
      config: { auth: ['admin', 'operator', 'viewer', 'agent'] },
    },
    async (request) =>
      topics.list(principalOf(request).tenant.id, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.post(
    '/v1/topics/:topic/messages',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'publishTopicMessage',
        summary: 'Publish a message',
        description: `Stores the message durably (201 means it is) and delivers it to every subscriber. ${REALTIME_AUTH_NOTE}`,
        params: TopicParams,
        body: PublishMessage,
        response: {
          201: Published,
          ...errorResponses,
        },
      },
      config: topicAuth,
    },
    async (request, reply) => {
      const who = callerOf(request);
      const topic = topics.parse(request.params.topic, 'params.topic');
      assertCanPublish(who, topic);
      const { message, epoch } = await topics.publish(
        who.tenantId,
        topic,
        request.body.event ?? 'message',
        request.body.data,
      );
      reply.status(201);
      return { topic: topic.name, epoch, offset: message.offset };
    },
  );

  app.get(
    '/v1/topics/:topic/messages',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'listTopicMessages',
        summary: 'Read a topic’s history',
        description: `Messages after \`after\`, or the \`last\` N, oldest first, at most \`limit\` and about ORCHESTRA_RESPONSE_MAX_BYTES of message data (4 MiB by default; always at least one message, however large). \`first_offset\` is the oldest still retained. When messages up to \`last_offset\` were left out (by \`limit\`, \`last\` beyond \`limit\`, or the byte budget), \`next_after\` is the offset to pass as \`after\` for the rest; it is null when \`messages\` reach \`last_offset\`. ${REALTIME_AUTH_NOTE}`,
        params: TopicParams,
        querystring: Type.Object(
          {
            after: Type.Optional(Offset),
            last: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: TopicHistory,
          ...errorResponses,
        },
      },
      config: topicAuth,
    },
    async (request, reply) => {
      const who = callerOf(request);
      const topic = topics.parse(request.params.topic, 'params.topic');
      assertCanRead(who, topic);
      if (request.query.after !== undefined && request.query.last !== undefined) {
        throw new ApiError('VALIDATION_FAILED', 'querystring.last: cannot be given with after', {
          details: {
            fields: [{ field: 'querystring.last', message: 'cannot be given with after' }],
          },
        });
      }
      // Sent as text: the messages' stored JSON goes out as it is (see historyJson).
      reply.type('application/json; charset=utf-8');
      return topics.historyJson(who.tenantId, topic, {
        ...request.query,
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/topics/:topic/events',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'streamTopicEvents',
        summary: 'Follow a topic (SSE or NDJSON)',
        description: `Server-Sent Events with \`Accept: text/event-stream\` (each message's \`id\` is its offset, its \`event\` the message's event name), NDJSON otherwise. Replays the retained messages after \`Last-Event-ID\` or \`after\` (default: none, live from now), then follows live until the client leaves. Following a topic nobody has published to yet does not create it: the stream waits for its first message. A \`stream.gap\` item says that messages after the resume point are no longer retained. ${REALTIME_AUTH_NOTE} EventSource, which cannot set headers, may pass a realtime token as \`?token=\`.`,
        params: TopicParams,
        querystring: Type.Object(
          { after: Type.Optional(Offset), token: Type.Optional(Type.String({ maxLength: 8192 })) },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 20 })) }),
        response: {
          200: eventStreamResponse(
            Type.Union([TopicStreamEvent, Type.Ref('StreamGap')]),
            'The topic’s messages after the resume point, then live ones.',
          ),
          ...errorResponses,
        },
      },
      config: { ...topicAuth, tokenInQuery: true },
    },
    async (request, reply) => {
      const who = callerOf(request);
      const topic = topics.parse(request.params.topic, 'params.topic');
      assertCanRead(who, topic);
      // Reading stores nothing: a topic nobody published to yet is followed until it is.
      const { lastOffset } = await topics.describe(who.tenantId, topic, { missing: 'empty' });
      const given =
        request.headers['last-event-id'] !== undefined || request.query.after !== undefined;
      const after = given
        ? resumeAfter(request.headers['last-event-id'], request.query.after)
        : lastOffset;
      if (after > lastOffset) {
        throw new ApiError('VALIDATION_FAILED', `after: the newest offset is ${lastOffset}`, {
          details: {
            fields: [{ field: 'querystring.after', message: `must be at most ${lastOffset}` }],
          },
        });
      }
      const stream = topics.streamOf(who.tenantId, topic);
      await sendStream(
        request,
        reply,
        (signal) =>
          topics.follow(who.tenantId, stream, after, {
            signal,
            floor: () => topics.floorOf(topic),
            awaitCreation: true,
          }),
        { format: streamFormat(request.headers.accept), stop: shutdown },
      );
    },
  );

  app.get(
    '/v1/topics/:topic/presence',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'getTopicPresence',
        summary: 'Who is present on a topic',
        description: `The members of the topic on every node (at most 1000), oldest first. ${REALTIME_AUTH_NOTE}`,
        params: TopicParams,
        response: {
          200: Type.Object({
            topic: Type.String(),
            members: Type.Array(Type.Ref('PresenceMember')),
          }),
          ...errorResponses,
        },
      },
      config: topicAuth,
    },
    async (request) => {
      const who = callerOf(request);
      const topic = topics.parse(request.params.topic, 'params.topic');
      assertCanRead(who, topic);
      if (topic.kind !== 'user')
        await topics.describe(who.tenantId, topic, { missing: 'not_found' });
      return { topic: topic.name, members: await topics.members(who.tenantId, topic.name) };
    },
  );

  app.delete(
    '/v1/topics/:topic',
    {
      schema: {
        tags: ['realtime'],
        operationId: 'deleteTopic',
        summary: 'Delete a topic',
        description:
          'Deletes a user topic with its history and members; its subscribers get `unsubscribed` with reason `topic_deleted`. A topic of the same name created later has a new epoch.',
        params: TopicParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      await topics.delete(principal.tenant.id, topics.parse(request.params.topic, 'params.topic'));
      reply.status(204);
      return null;
    },
  );
};
