import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateTask,
  CreateTaskBatch,
  errorResponses,
  eventStreamResponse,
  isTerminalState,
  LabelSelectors,
  MAX_BATCH_TASKS,
  parseLabelSelectors,
  Task,
  TaskEvent,
  TaskState,
} from '@orchestra/protocol';
import Type from 'typebox';
import { resumeAfter, sendStream, streamFormat } from '../events/index.ts';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { type DurationFormat, durationPattern, parseDuration } from '../platform/duration.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { TaskService } from './task-service.ts';

/** Longest `?wait=`: long enough for sync calls, short enough for proxies and clients. */
const MAX_WAIT_MS = 300_000;

/** `?wait=`: `500ms`, `30s`, `2m`, or a bare number of milliseconds. */
const WAIT: DurationFormat = {
  units: ['ms', 's', 'm'],
  maxDigits: 6,
  bareUnit: 'ms',
  maxMs: MAX_WAIT_MS,
};

const Wait = Type.String({
  pattern: durationPattern(WAIT),
  description:
    'Wait up to this long for the task to end: `500ms`, `30s`, `2m` (a bare number is ms; at most 5 minutes).',
});

/** Milliseconds of a `?wait=` value (already matched by `Wait`). */
function waitMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = parseDuration(value, WAIT);
  if (!parsed.ok) {
    const message =
      parsed.reason === 'too_long' ? 'must be at most 5 minutes' : 'must be a duration like 30s';
    throw new ApiError('VALIDATION_FAILED', `querystring.wait: ${message}`, {
      details: { fields: [{ field: 'querystring.wait', message }] },
    });
  }
  return parsed.ms;
}

/** A batch item's error, its fields named within the batch (`body.tasks.<i>.…`). */
function itemError(
  error: ApiError,
  index: number,
): { code: string; message: string; details?: Record<string, unknown> } {
  const rename = (text: string) => text.replace(/^body\./, `body.tasks.${index}.`);
  const fields = error.details?.fields;
  const details = Array.isArray(fields)
    ? {
        ...error.details,
        fields: (fields as { field: string; message: string }[]).map((f) => ({
          ...f,
          field: rename(f.field),
        })),
      }
    : error.details;
  return { code: error.code, message: rename(error.message), ...(details ? { details } : {}) };
}

const TaskParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

/** `/v1/tasks`: submission, queries, cancellation, retries and event streams. */
export const taskRoutes: FastifyPluginAsyncTypebox<{
  tasks: TaskService;
  shutdown: AbortSignal;
}> = async (app, { tasks, shutdown }) => {
  app.addSchema(Task);
  app.addSchema(TaskEvent);

  /** Aborts when the client disconnects or the server shuts down. */
  const requestSignal = (raw: { on(event: 'close', listener: () => void): unknown }) => {
    const controller = new AbortController();
    raw.on('close', () => controller.abort());
    return AbortSignal.any([controller.signal, shutdown]);
  };

  app.post(
    '/v1/tasks',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'createTask',
        summary: 'Submit a task',
        description:
          'The task is stored durably before the response. 201: created (and, with `wait`, ended in time). 202: still running when `wait` ran out. 200: a task with this idempotency key existed (`Idempotent-Replayed: true`) and, with `wait`, has ended.',
        querystring: Type.Object({ wait: Type.Optional(Wait) }, { additionalProperties: false }),
        body: CreateTask,
        response: {
          200: Type.Ref('Task'),
          201: Type.Ref('Task'),
          202: Type.Ref('Task'),
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const wait = waitMs(request.query.wait);
      const principal = principalOf(request);
      const { task, created } = await tasks.create(principal, request.body);
      if (!created) reply.header('idempotent-replayed', 'true');
      if (wait === undefined) {
        reply.status(created ? 201 : 200);
        return task;
      }
      // A replayed submit waits too: retrying a ?wait call after a network error must behave
      // like the first one.
      const current = await tasks.waitForEnd(principal, task.id, wait, requestSignal(request.raw));
      reply.status(!isTerminalState(current.state) ? 202 : created ? 201 : 200);
      return current;
    },
  );

  app.post(
    '/v1/tasks/batch',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'createTaskBatch',
        summary: 'Submit several tasks',
        description: `Up to ${MAX_BATCH_TASKS} tasks, each stored durably before the response, as if submitted one after another in the given order (their ids, and so first-in-first-out dispatch, follow it), but sharing commits: much cheaper than one request per task. 200 with one item per task, in order: \`status\` is what \`POST /v1/tasks\` would have answered for it (201 created, 200 an idempotent replay, 4xx with \`error\` in the unified format's \`error\` object, its fields named \`body.tasks.<i>.…\`). One task failing does not stop the others. A body that does not match the schema is rejected whole (400). A 5xx (the store failed) may leave some tasks stored: give idempotency keys to resubmit safely. A batch counts as one request for rate limiting, plus its answer's bytes like any answer (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN).`,
        body: CreateTaskBatch,
        response: {
          200: Type.Object({
            items: Type.Array(
              Type.Object({
                status: Type.Integer(),
                task: Type.Optional(Type.Ref('Task')),
                error: Type.Optional(
                  Type.Object({
                    code: Type.String(),
                    message: Type.String(),
                    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
                  }),
                ),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => {
      const outcomes = await tasks.createMany(principalOf(request), request.body.tasks);
      return {
        items: outcomes.map((outcome, i) =>
          outcome.ok
            ? { status: outcome.created ? 201 : 200, task: outcome.task }
            : { status: outcome.error.status, error: itemError(outcome.error, i) },
        ),
      };
    },
  );

  app.get(
    '/v1/tasks',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'listTasks',
        summary: 'List tasks, newest first',
        querystring: Type.Object(
          {
            ...PageQuery,
            state: Type.Optional(
              Type.Array(TaskState, { maxItems: 8, description: 'Repeat for several states.' }),
            ),
            template: Type.Optional(
              Type.String({ maxLength: 120, description: 'Template id or name.' }),
            ),
            agent_id: Type.Optional(Type.String({ maxLength: 200 })),
            session_id: Type.Optional(Type.String({ maxLength: 100 })),
            instance_id: Type.Optional(
              Type.String({ maxLength: 64, description: 'Only the tasks that work in it.' }),
            ),
            label: Type.Optional(LabelSelectors),
            created_after: Type.Optional(Type.String({ format: 'date-time' })),
            created_before: Type.Optional(Type.String({ format: 'date-time' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Task')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const { state, label, ...rest } = request.query;
      return tasks.list(principalOf(request), {
        ...rest,
        states: state,
        labels: parseLabelSelectors(label),
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/tasks/:id',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'getTask',
        summary: 'Get a task',
        description: 'With `wait`, answers when the task ends or the wait runs out (long polling).',
        params: TaskParams,
        querystring: Type.Object({ wait: Type.Optional(Wait) }, { additionalProperties: false }),
        response: { 200: Type.Ref('Task'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const wait = waitMs(request.query.wait);
      const principal = principalOf(request);
      if (wait === undefined) return tasks.get(principal, request.params.id);
      return tasks.waitForEnd(principal, request.params.id, wait, requestSignal(request.raw));
    },
  );

  app.post(
    '/v1/tasks/:id/cancel',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'cancelTask',
        summary: 'Cancel a task',
        description:
          'A queued task ends `cancelled` at once. A task an agent holds gets a cancellation request (`cancel_requested_at`), delivered to the agent. A finished task cannot be cancelled (409); cancelling a cancelled task returns it.',
        params: TaskParams,
        response: { 200: Type.Ref('Task'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => tasks.cancel(principalOf(request), request.params.id),
  );

  app.post(
    '/v1/tasks/:id/retry',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'retryTask',
        summary: 'Queue a task that ended without success again',
        description:
          'Only failed, dead, cancelled or timed-out tasks (409 otherwise). Attempts start again from 0.',
        params: TaskParams,
        response: { 200: Type.Ref('Task'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => tasks.retry(principalOf(request), request.params.id),
  );

  app.get(
    '/v1/tasks/:id/events',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'streamTaskEvents',
        summary: 'Stream the task’s events',
        description:
          'Server-Sent Events with `Accept: text/event-stream` (each event’s `id` is its offset), NDJSON otherwise. Replays the retained events after `Last-Event-ID` or `after` (default: from the start), then follows live, and ends after the terminal event (SSE then sends `stream.end`). A `stream.gap` item says that events were trimmed by retention. 204 when the task is over and nothing is left after `after`; 400 when `after` is beyond the newest event.',
        params: TaskParams,
        querystring: Type.Object(
          {
            after: Type.Optional(
              Type.Integer({ minimum: 0, description: 'Resume after this offset.' }),
            ),
          },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 20 })) }),
        response: {
          200: eventStreamResponse(
            Type.Union([Type.Ref('TaskEvent'), Type.Ref('StreamGap')]),
            'The task’s events, up to its terminal event.',
          ),
          204: Type.Null({ description: 'The task is over and no event follows `after`.' }),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const after = resumeAfter(request.headers['last-event-id'], request.query.after);
      // Errors (404, 400) before the stream starts; 204 tells EventSource not to reconnect.
      if ((await tasks.openEvents(principal, request.params.id, after)) === 'ended') {
        reply.status(204);
        return null;
      }
      await sendStream(
        request,
        reply,
        (signal) => tasks.events(principal, request.params.id, after, signal),
        {
          format: streamFormat(request.headers.accept),
          stop: shutdown,
        },
      );
      return reply;
    },
  );
};
