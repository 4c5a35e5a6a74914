import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateInstance,
  CreateInstanceBatch,
  CreateWorkspaceTemplate,
  ExecCommand,
  ExecRef,
  ExecResult,
  errorResponses,
  eventStreamResponse,
  Instance,
  InstanceRef,
  ListInstancesQuery,
  MAX_BATCH_INSTANCES,
  parseLabelSelectors,
  Recommendations,
  ResourceUsage,
  UpdateInstance,
  WorkspaceTemplate,
  WorkspaceTemplateRef,
  WorkspaceTemplateSpec,
} from '@orchestra/protocol';
import type { FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import {
  FollowStreamQuery,
  ResumeHeaders,
  sendStream,
  serveFollowedStream,
  streamFormat,
} from '../events/index.ts';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import { FORWARDED_HEADER } from './forwarding.ts';
import type { InstanceService } from './instance-service.ts';

const InstanceEvent = Type.Object(
  {
    offset: Type.Integer(),
    type: Type.String({ description: '`instance.<state>`, such as `instance.running`.' }),
    time: Type.String({ format: 'date-time' }),
    data: Type.Object({
      instance_id: Type.String(),
      state: Type.String(),
      reason: Type.String(),
      node_id: Type.String(),
    }),
  },
  { $id: 'InstanceEvent' },
);

const ExecEvent = Type.Object(
  {
    offset: Type.Integer(),
    type: Type.String({
      description:
        '`exec.started` (`exec_id`, `instance_id`, `command`), `exec.output` (`stream`: stdout or stderr, `data`), `exec.exited` (`exit_code`, `signal`, `timed_out`, `cancelled`, `duration_ms`, `output_bytes`, `dropped_bytes`).',
    }),
    time: Type.String({ format: 'date-time' }),
    data: Type.Record(Type.String(), Type.Unknown()),
  },
  { $id: 'ExecEvent' },
);

const SYNC_NOTE =
  'The answer comes once the instance got where it was asked to go (or `failed`, with `state_reason`); every state it passed is an event on its stream and on the `instances` topic.';

/** `/v1/workspace-templates` and `/v1/instances`: sandboxed workspaces. */
export const instanceRoutes: FastifyPluginAsyncTypebox<{
  instances: InstanceService;
  shutdown: AbortSignal;
}> = async (app, { instances, shutdown }) => {
  app.addSchema(WorkspaceTemplate);
  app.addSchema(Instance);
  app.addSchema(InstanceEvent);
  app.addSchema(ExecResult);
  app.addSchema(ExecEvent);
  app.addSchema(ResourceUsage);
  app.addSchema(Recommendations);
  const template = { params: WorkspaceTemplateRef };
  const instance = { params: InstanceRef };
  /** In a cluster, a create goes to the node placement picks (unless it came from a node). */
  const placed =
    (templates: (body: unknown) => string[]) =>
    async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      const forwarding = instances.forwarding;
      if (forwarding === undefined || request.headers[FORWARDED_HEADER] !== undefined) return;
      const node = await instances.place(principalOf(request).tenant.id, templates(request.body));
      if (node !== undefined) await forwarding.forwardTo(request, reply, node, request.body);
    };

  app.get(
    '/v1/quotas',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getQuotas',
        summary: 'The tenant’s workspace quotas and what it uses of them',
        description:
          'Instances (any state), running instances, their CPUs and memory (running, or being created or started), and storage (all instances), each from the templates’ `resources`; and running terminals. `limit` 0 is no limit; `source` says whether the tenant has its own (`PATCH /v1/tenants/{id}` `limits`) or the node’s setting applies. A create or start (or a terminal opened) that would pass one is refused with 409 TENANT_LIMIT_REACHED naming it (`details.quota`).',
        response: {
          200: Type.Object({
            tenant_id: Type.String(),
            quotas: Type.Array(
              Type.Object({
                name: Type.String(),
                limit: Type.Number(),
                used: Type.Number(),
                source: Type.Enum(['tenant', 'setting']),
                setting: Type.String(),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const tenantId = principalOf(request).tenant.id;
      return { tenant_id: tenantId, quotas: await instances.quotas.list(tenantId) };
    },
  );

  const UsageQuery = Type.Object(
    {
      instance: Type.Optional(
        Type.String({ maxLength: 64, description: 'Only this instance (`ins_…`).' }),
      ),
    },
    { additionalProperties: false },
  );
  app.get(
    '/v1/resources/usage',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getResourceUsage',
        summary: 'What the tenant’s instances use, and what this node has',
        description:
          'Per instance (newest first, 500 at most: `truncated` says there were more): CPU time and utilization since it started, memory, processes (from its cgroups, or its process groups under prlimit), and disk (its directory, measured at most every 30 s), against its `resources`. Instances of another node have `usage` null: ask that node. `node`: its CPUs, memory, load and running instances, and how it limits them.',
        querystring: UsageQuery,
        response: {
          200: Type.Ref('ResourceUsage'),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => instances.resourceUsage(principalOf(request), request.query),
  );

  app.post(
    '/v1/resources/optimize',
    {
      schema: {
        tags: ['instances'],
        operationId: 'optimizeResources',
        summary: 'Recommendations for over-used, under-used and idle instances',
        description:
          'For the tenant’s instances on this node: over-used when they use 90% or more of their CPU (since they started), memory or storage; under-used when, running for at least `min_running_ms` (10 minutes by default), they use under 10% of their memory or 5% of their CPU; idle when running without activity for an hour and without an idle timeout. Changes nothing.',
        body: Type.Optional(
          Type.Object(
            {
              instance: Type.Optional(Type.String({ maxLength: 64 })),
              min_running_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 31_536_000_000 })),
            },
            { additionalProperties: false },
          ),
        ),
        response: {
          200: Type.Ref('Recommendations'),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => instances.optimize(principalOf(request), request.body ?? {}),
  );

  app.post(
    '/v1/workspace-templates',
    {
      schema: {
        tags: ['instances'],
        operationId: 'createWorkspaceTemplate',
        summary: 'Create a workspace template',
        description:
          'What instances start from (`base`), their environment, their service (`startup`) and their network.',
        body: CreateWorkspaceTemplate,
        response: { 201: Type.Ref('WorkspaceTemplate'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return instances.createTemplate(principalOf(request), request.body);
    },
  );

  app.get(
    '/v1/workspace-templates',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listWorkspaceTemplates',
        summary: 'List workspace templates, newest first',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('WorkspaceTemplate')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      instances.listTemplates(principalOf(request), {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/workspace-templates/:template',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getWorkspaceTemplate',
        summary: 'Read a workspace template',
        ...template,
        response: { 200: Type.Ref('WorkspaceTemplate'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => instances.getTemplate(principalOf(request), request.params.template),
  );

  app.put(
    '/v1/workspace-templates/:template',
    {
      schema: {
        tags: ['instances'],
        operationId: 'replaceWorkspaceTemplate',
        summary: 'Replace a workspace template’s spec',
        description:
          'Its `version` goes up; instances created before keep the spec they were created from.',
        ...template,
        body: WorkspaceTemplateSpec,
        response: { 200: Type.Ref('WorkspaceTemplate'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) =>
      instances.replaceTemplate(principalOf(request), request.params.template, request.body),
  );

  app.delete(
    '/v1/workspace-templates/:template',
    {
      schema: {
        tags: ['instances'],
        operationId: 'deleteWorkspaceTemplate',
        summary: 'Delete a workspace template',
        description: '409 WORKSPACE_TEMPLATE_IN_USE while instances created from it exist.',
        ...template,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await instances.deleteTemplate(principalOf(request), request.params.template);
      reply.status(204);
      return null;
    },
  );

  app.post(
    '/v1/instances',
    {
      schema: {
        tags: ['instances'],
        operationId: 'createInstance',
        summary: 'Create an instance from a workspace template',
        description: `creating → starting → running (or stopped with \`start: false\`). ${SYNC_NOTE}`,
        body: CreateInstance,
        response: { 201: Type.Ref('Instance'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
      preHandler: placed((body) => [(body as { template: string }).template]),
    },
    async (request, reply) => {
      reply.status(201);
      return instances.create(principalOf(request), request.body);
    },
  );

  app.post(
    '/v1/instances/batch',
    {
      schema: {
        tags: ['instances'],
        operationId: 'createInstances',
        summary: 'Create several instances at once',
        description: `Up to ${MAX_BATCH_INSTANCES}, created in parallel. 200 with one item per instance, in order: \`status\` is what \`POST /v1/instances\` would have answered (201 with \`instance\`, or 4xx with \`error\`, its fields named \`body.instances.<i>.…\`). One failing does not stop the others; an instance that could not start is there, \`failed\`.`,
        body: CreateInstanceBatch,
        response: {
          200: Type.Object({
            items: Type.Array(
              Type.Object({
                status: Type.Integer(),
                instance: Type.Optional(Type.Ref('Instance')),
                error: Type.Optional(
                  Type.Object({
                    code: Type.String(),
                    message: Type.String(),
                    details: Type.Optional(Type.Unknown()),
                  }),
                ),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
      preHandler: placed((body) =>
        (body as { instances: { template: string }[] }).instances.map((i) => i.template),
      ),
    },
    async (request) => ({
      items: await instances.createMany(principalOf(request), request.body.instances),
    }),
  );

  app.get(
    '/v1/instances',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listInstances',
        summary: 'List instances, newest first',
        querystring: Type.Object(
          { ...PageQuery, ...ListInstancesQuery },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Instance')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const { state, label, template: byTemplate, ...page } = request.query;
      return instances.list(principalOf(request), {
        ...page,
        states: state,
        template: byTemplate,
        labels: parseLabelSelectors(label),
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/instances/:instance',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getInstance',
        summary: 'Read an instance and its state',
        ...instance,
        response: { 200: Type.Ref('Instance'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => instances.get(principalOf(request), request.params.instance),
  );

  app.patch(
    '/v1/instances/:instance',
    {
      schema: {
        tags: ['instances'],
        operationId: 'updateInstance',
        summary: 'Rename an instance or replace its labels',
        ...instance,
        body: UpdateInstance,
        response: { 200: Type.Ref('Instance'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) =>
      instances.update(principalOf(request), request.params.instance, request.body),
  );

  for (const [action, summary, description] of [
    [
      'start',
      'Start an instance',
      `A stopped, failed or lost instance: starting → running. Starting a running one changes nothing. ${SYNC_NOTE}`,
    ],
    [
      'stop',
      'Stop an instance',
      `stopping → stopped: its service gets SIGTERM, then SIGKILL after ORCHESTRA_INSTANCE_STOP_GRACE_MS. Its files stay. Stopping a stopped one changes nothing. ${SYNC_NOTE}`,
    ],
    ['restart', 'Restart an instance', `Stops it if it runs, then starts it. ${SYNC_NOTE}`],
  ] as const) {
    app.post(
      `/v1/instances/:instance/${action}`,
      {
        schema: {
          tags: ['instances'],
          operationId: `${action}Instance`,
          summary,
          description: `${description} 409 WORKSPACE_INSTANCE_STATE from a state that does not allow it.`,
          ...instance,
          response: { 200: Type.Ref('Instance'), ...errorResponses },
        },
        config: { auth: WRITE_ROLES },
      },
      async (request) => instances[action](principalOf(request), request.params.instance),
    );
  }

  app.delete(
    '/v1/instances/:instance',
    {
      schema: {
        tags: ['instances'],
        operationId: 'deleteInstance',
        summary: 'Delete an instance, its files and its events',
        description:
          'Stops it if it runs. There is no undo. An `instance.deleted` event goes to the `instances` topic.',
        ...instance,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await instances.delete(principalOf(request), request.params.instance);
      reply.status(204);
      return null;
    },
  );

  app.post(
    '/v1/instances/:instance/exec',
    {
      schema: {
        tags: ['instances'],
        operationId: 'execInInstance',
        summary: 'Run a command in a running instance',
        description:
          'In the instance’s sandbox, in its workspace (or `cwd` inside it), with the template’s environment plus `env`, killed after `timeout_ms`. Answers once it ended with its exit code and output (1 MiB of each stream at most; `truncated` says when there was more), or with `stream: true` streams its events as they come (SSE with `Accept: text/event-stream`, else NDJSON), `exec.exited` last. Either way its events stay readable, and resumable, at `/v1/instances/{id}/execs/{exec}/events` (16 MiB of output at most); a client that goes away does not stop it: cancel it with `…/cancel`. 409 WORKSPACE_INSTANCE_STATE unless the instance is running; 429 RATE_LIMITED with 64 commands running in it.',
        ...instance,
        body: ExecCommand,
        response: {
          200: {
            description:
              'How the command ended, or with `stream: true` its events (`exec.started`, `exec.output`, `exec.exited`).',
            content: {
              'application/json': { schema: Type.Ref('ExecResult') },
              'application/x-ndjson': { schema: Type.Ref('ExecEvent') },
              'text/event-stream': { schema: Type.Ref('ExecEvent') },
            },
          },
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { execId, done } = await instances.exec(
        principal,
        request.params.instance,
        request.body,
      );
      if (request.body.stream !== true) return done;
      await sendStream(
        request,
        reply,
        (signal) => instances.execEvents(principal, execId, 0, { signal, follow: true }),
        { format: streamFormat(request.headers.accept), stop: shutdown },
      );
      return reply;
    },
  );

  app.get(
    '/v1/instances/:instance/execs/:exec/events',
    {
      schema: {
        tags: ['instances'],
        operationId: 'streamExecEvents',
        summary: 'Stream, or read again, a command’s output and end',
        description:
          'Its events (`exec.started`, `exec.output`, `exec.exited`), live until it exited, as SSE or NDJSON; resume with `Last-Event-ID` or `after`; with `follow=false`, those there are.',
        params: ExecRef,
        querystring: FollowStreamQuery,
        headers: ResumeHeaders,
        response: {
          200: eventStreamResponse(
            Type.Union([Type.Ref('ExecEvent'), Type.Ref('StreamGap')]),
            'The command’s events.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { instance: id, exec } = request.params;
      return serveFollowedStream(request, reply, {
        check: (after) => instances.openExecEvents(principal, id, exec, after),
        read: (after, signal, follow) =>
          instances.execEvents(principal, exec, after, { signal, follow }),
        stop: shutdown,
      });
    },
  );

  app.post(
    '/v1/instances/:instance/execs/:exec/cancel',
    {
      schema: {
        tags: ['instances'],
        operationId: 'cancelExec',
        summary: 'Cancel a running command',
        description:
          'Kills it (SIGKILL); its `exec.exited` says `cancelled: true`. A command that ended already is left as it ended.',
        params: ExecRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await instances.cancelExec(
        principalOf(request),
        request.params.instance,
        request.params.exec,
      );
      reply.status(204);
      return null;
    },
  );

  app.get(
    '/v1/instances/:instance/events',
    {
      schema: {
        tags: ['instances'],
        operationId: 'streamInstanceEvents',
        summary: 'Stream the instance’s state changes',
        description:
          'Every state change (`instance.<state>` with its `reason`), as Server-Sent Events with `Accept: text/event-stream` or NDJSON otherwise; resume with `Last-Event-ID` or `after`. Follows live until the client disconnects; with `follow=false`, ends after the events there are.',
        ...instance,
        querystring: FollowStreamQuery,
        headers: ResumeHeaders,
        response: {
          200: eventStreamResponse(
            Type.Union([Type.Ref('InstanceEvent'), Type.Ref('StreamGap')]),
            'The instance’s events; with `follow=false`, those there are.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const id = request.params.instance;
      return serveFollowedStream(request, reply, {
        check: (after) => instances.openEvents(principal, id, after),
        read: (after, signal, follow) => instances.events(principal, id, after, { signal, follow }),
        stop: shutdown,
      });
    },
  );
};
