import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AGENT_ID_PATTERN, Agent, AgentStatusSchema, errorResponses } from '@orchestra/protocol';
import Type from 'typebox';
import type { Bus } from '../bus/bus.ts';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import { wsSocket } from '../platform/ws-socket.ts';
import { type AgentNotice, agentSubject } from '../tasks/index.ts';
import type { AgentService } from './agent-service.ts';
import type { AgentPool } from './pool.ts';

const AgentParams = Type.Object({ id: Type.String({ pattern: AGENT_ID_PATTERN }) });

/** `/v1/agents`: the agent pool's WebSocket and the REST view of agents. */
export const agentRoutes: FastifyPluginAsyncTypebox<{
  agents: AgentService;
  pool: AgentPool;
  bus: Bus;
}> = async (app, { agents, pool, bus }) => {
  app.addSchema(Agent);

  app.route({
    method: 'GET',
    url: '/v1/agents/connect',
    schema: {
      tags: ['agents'],
      operationId: 'connectAgent',
      summary: 'Connect an agent (WebSocket)',
      description:
        'Upgrade to a WebSocket speaking the agent protocol of docs/protocol.md. Authenticate with an `agent` (or `admin`) key or JWT in the Authorization header. A plain HTTP request gets 426.',
      response: {
        101: Type.Null({ description: 'Switching Protocols: the WebSocket is open.' }),
        ...errorResponses,
      },
    },
    config: { auth: ['agent', 'admin'] },
    handler: async () => {
      throw new ApiError(
        'UPGRADE_REQUIRED',
        'Connect with a WebSocket client (Upgrade: websocket)',
        {
          headers: { upgrade: 'websocket' },
        },
      );
    },
    // Authenticated by the request pipeline before the upgrade, like any API call.
    wsHandler: (socket, request) => {
      const principal = principalOf(request);
      const recheck = request.recheckCredential;
      if (recheck === undefined) throw new Error('an agent connection without its credential');
      pool.accept(wsSocket(socket), principal, { caller: { principal }, recheck });
    },
  });

  app.get(
    '/v1/agents',
    {
      schema: {
        tags: ['agents'],
        operationId: 'listAgents',
        summary: 'List agents',
        description: 'Agents of the tenant by id, with status, load and the tasks they hold.',
        querystring: Type.Object(
          {
            ...PageQuery,
            status: Type.Optional(Type.Array(AgentStatusSchema, { maxItems: 5 })),
            capability: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Agent')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      agents.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/agents/:id',
    {
      schema: {
        tags: ['agents'],
        operationId: 'getAgent',
        summary: 'Get an agent',
        params: AgentParams,
        response: { 200: Type.Ref('Agent'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => agents.get(principalOf(request), request.params.id),
  );

  app.post(
    '/v1/agents/:id/drain',
    {
      schema: {
        tags: ['agents'],
        operationId: 'drainAgent',
        summary: 'Drain an agent',
        description:
          'The agent finishes the tasks it holds and is given no new ones; it stays connected until it disconnects itself.',
        params: AgentParams,
        response: { 200: Type.Ref('Agent'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => {
      const principal = principalOf(request);
      const { agent } = await agents.drain(principal, request.params.id);
      bus.publish(agentSubject(principal.tenant.id, agent.id), {
        op: 'drain',
      } satisfies AgentNotice);
      return agent;
    },
  );

  app.delete(
    '/v1/agents/:id',
    {
      schema: {
        tags: ['agents'],
        operationId: 'deleteAgent',
        summary: 'Forget an agent',
        description: 'Only an agent that is not connected and holds no tasks; 409 otherwise.',
        params: AgentParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await agents.delete(principalOf(request), request.params.id);
      reply.status(204);
      return null;
    },
  );
};
