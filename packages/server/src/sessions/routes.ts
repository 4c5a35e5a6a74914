import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateSession,
  errorResponses,
  eventStreamResponse,
  LabelSelectors,
  parseLabelSelectors,
  Session,
  SessionEvent,
} from '@orchestra/protocol';
import Type from 'typebox';
import { FollowStreamQuery, ResumeHeaders, serveFollowedStream } from '../events/index.ts';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { SessionService } from './session-service.ts';

const SessionParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

/** `/v1/sessions`: threads of tasks with one ordered history. */
export const sessionRoutes: FastifyPluginAsyncTypebox<{
  sessions: SessionService;
  shutdown: AbortSignal;
}> = async (app, { sessions, shutdown }) => {
  app.addSchema(Session);
  app.addSchema(SessionEvent);

  app.post(
    '/v1/sessions',
    {
      schema: {
        tags: ['sessions'],
        operationId: 'createSession',
        summary: 'Create a session',
        description:
          'Submit tasks with its `session_id`: they run one at a time, in order, and their events form the session’s history.',
        body: CreateSession,
        response: { 201: Type.Ref('Session'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return sessions.create(principalOf(request), request.body ?? {});
    },
  );

  app.get(
    '/v1/sessions',
    {
      schema: {
        tags: ['sessions'],
        operationId: 'listSessions',
        summary: 'List sessions, newest first',
        querystring: Type.Object(
          { ...PageQuery, label: Type.Optional(LabelSelectors) },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Session')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const { label, ...page } = request.query;
      return sessions.list(principalOf(request), {
        ...page,
        labels: parseLabelSelectors(label),
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/sessions/:id',
    {
      schema: {
        tags: ['sessions'],
        operationId: 'getSession',
        summary: 'Get a session',
        params: SessionParams,
        response: { 200: Type.Ref('Session'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => sessions.get(principalOf(request), request.params.id),
  );

  app.delete(
    '/v1/sessions/:id',
    {
      schema: {
        tags: ['sessions'],
        operationId: 'deleteSession',
        summary: 'Delete a session with its tasks and history',
        description:
          'Deletes the session, **every task submitted in it, and all their events**, in one transaction; there is no undo (read the tasks first with `GET /v1/tasks?session_id=` to keep their results). 409 SESSION_BUSY while one of its tasks is unfinished: cancel them first.',
        params: SessionParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await sessions.delete(principalOf(request), request.params.id);
      reply.status(204);
      return null;
    },
  );

  app.get(
    '/v1/sessions/:id/events',
    {
      schema: {
        tags: ['sessions'],
        operationId: 'streamSessionEvents',
        summary: 'Stream the session’s activity',
        description:
          'Every event of every task of the session (each with its `task_id`), in order, as Server-Sent Events with `Accept: text/event-stream` or NDJSON otherwise, with the resume rules of task events (`Last-Event-ID` or `after`; `stream.gap` when retention trimmed events). Follows live until the client disconnects; with `follow=false`, ends after the events there are.',
        params: SessionParams,
        querystring: FollowStreamQuery,
        headers: ResumeHeaders,
        response: {
          200: eventStreamResponse(
            Type.Union([Type.Ref('SessionEvent'), Type.Ref('StreamGap')]),
            'The session’s events; with `follow=false`, those there are.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const id = request.params.id;
      return serveFollowedStream(request, reply, {
        check: (after) => sessions.openEvents(principal, id, after),
        read: (after, signal, follow) => sessions.events(principal, id, after, { signal, follow }),
        stop: shutdown,
      });
    },
  );
};
