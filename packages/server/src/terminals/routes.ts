import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateTerminal,
  errorResponses,
  InstanceRef,
  Page,
  PageQuery,
  ResizeTerminal,
  ScreenQuery,
  TERMINAL_STATES,
  Terminal,
  TerminalInput,
  TerminalRef,
  TerminalScreen,
} from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { responseBudget } from '../platform/pagination.ts';
import { wsSocket } from '../platform/ws-socket.ts';
import type { TerminalAttachments } from './attach.ts';
import type { TerminalService } from './terminal-service.ts';

const NODE_NOTE =
  'Any node takes it: in a cluster it goes on to the node that runs the instance (502 NODE_UNREACHABLE when that node does not answer; 409 WORKSPACE_INSTANCE_STATE, with `details.node_id`, when that node is gone).';

/** `/v1/instances/{id}/terminals`: PTYs in the instance's sandbox, and attaching to them. */
export const terminalRoutes: FastifyPluginAsyncTypebox<{
  terminals: TerminalService;
  attachments: TerminalAttachments;
}> = async (app, { terminals, attachments }) => {
  app.addSchema(Terminal);
  app.addSchema(TerminalScreen);

  app.post(
    '/v1/instances/:instance/terminals',
    {
      schema: {
        tags: ['instances'],
        operationId: 'openTerminal',
        summary: 'Open a terminal in a running instance',
        description: `Starts \`command\` (\`bash\` by default) on a PTY of its own in the instance's sandbox, as the instance's commands run. The server keeps its screen and ${'`ORCHESTRA_TERMINAL_SCROLLBACK`'} lines of scrollback, so that a viewer that attaches later (\`…/attach\`, a WebSocket) sees it. At most ORCHESTRA_TERMINAL_MAX_PER_INSTANCE run per instance, and the tenant's \`max_terminals\` in all (409 TENANT_LIMIT_REACHED). Attached viewers and typed input count as activity for the idle timeout; terminals end when the instance stops. ${NODE_NOTE}`,
        params: InstanceRef,
        body: CreateTerminal,
        response: { 201: Type.Ref('Terminal'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return terminals.open(principalOf(request), request.params.instance, request.body ?? {});
    },
  );

  app.get(
    '/v1/instances/:instance/terminals',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listTerminals',
        summary: 'List an instance’s terminals, oldest first',
        description:
          'Running terminals, and the newest exited ones (how they ended), until they are closed.',
        params: InstanceRef,
        querystring: Type.Object(
          {
            ...PageQuery,
            state: Type.Optional(Type.Enum(TERMINAL_STATES, { description: 'Only these.' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Terminal')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      terminals.list(principalOf(request), request.params.instance, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/instances/:instance/terminals/:terminal',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getTerminal',
        summary: 'Read a terminal',
        params: TerminalRef,
        response: { 200: Type.Ref('Terminal'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      terminals.get(principalOf(request), request.params.instance, request.params.terminal),
  );

  app.delete(
    '/v1/instances/:instance/terminals/:terminal',
    {
      schema: {
        tags: ['instances'],
        operationId: 'closeTerminal',
        summary: 'Close a terminal',
        description: `Hangs up its program (SIGHUP, SIGKILL 2 s later) and forgets the terminal; answers once the program ended. Its viewers get an \`exit\` frame. An exited terminal is just forgotten. ${NODE_NOTE}`,
        params: TerminalRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await terminals.close(principalOf(request), request.params.instance, request.params.terminal);
      reply.status(204);
    },
  );

  app.post(
    '/v1/instances/:instance/terminals/:terminal/input',
    {
      schema: {
        tags: ['instances'],
        operationId: 'writeTerminal',
        summary: 'Type into a terminal',
        description: `For a program without a WebSocket (an agent's tool): \`data\` is typed as is. 409 TERMINAL_EXITED once it ended. ${NODE_NOTE}`,
        params: TerminalRef,
        body: TerminalInput,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const { instance, terminal } = request.params;
      await terminals.input(principalOf(request), instance, terminal, request.body.data);
      reply.status(204);
    },
  );

  app.post(
    '/v1/instances/:instance/terminals/:terminal/resize',
    {
      schema: {
        tags: ['instances'],
        operationId: 'resizeTerminal',
        summary: 'Resize a terminal',
        description: `Every viewer gets a \`resized\` frame: the last resize wins. ${NODE_NOTE}`,
        params: TerminalRef,
        body: ResizeTerminal,
        response: { 200: Type.Ref('Terminal'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => {
      const { instance, terminal } = request.params;
      return terminals.resize(principalOf(request), instance, terminal, request.body);
    },
  );

  app.get(
    '/v1/instances/:instance/terminals/:terminal/screen',
    {
      schema: {
        tags: ['instances'],
        operationId: 'readTerminalScreen',
        summary: 'Read a terminal’s screen as text',
        description: `What the screen shows now, as lines of text, with the cursor and, if asked, scrollback lines: for a program that reads the terminal rather than draws it. ${NODE_NOTE}`,
        params: TerminalRef,
        querystring: ScreenQuery,
        response: { 200: Type.Ref('TerminalScreen'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => {
      const { instance, terminal } = request.params;
      return terminals.screen(
        principalOf(request),
        instance,
        terminal,
        request.query.scrollback ?? 0,
      );
    },
  );

  app.route({
    method: 'GET',
    url: '/v1/instances/:instance/terminals/:terminal/attach',
    schema: {
      tags: ['instances'],
      operationId: 'attachTerminal',
      summary: 'Attach to a terminal (WebSocket)',
      description: `Upgrade to a WebSocket speaking the terminal attach protocol of docs/protocol.md: an \`attached\` frame with the screen to draw first, then what the program prints as binary frames; binary frames (or \`input\` frames) are typed, \`resize\` frames resize. Several viewers may attach at once. Credential: an API key or JWT in the request, or (browsers) an \`auth\` frame first. A plain HTTP request gets 426. ${NODE_NOTE}`,
      params: TerminalRef,
      response: {
        101: Type.Null({ description: 'Switching Protocols: the WebSocket is open.' }),
        ...errorResponses,
      },
    },
    config: { auth: WRITE_ROLES, credentialLater: true },
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
      const { principal, recheckCredential, authenticateLater } = request;
      const { instance, terminal } = request.params as { instance: string; terminal: string };
      const target = { instanceId: instance, terminalId: terminal };
      if (principal !== undefined && recheckCredential !== undefined) {
        attachments.accept(
          wsSocket(socket),
          { caller: { principal }, recheck: recheckCredential },
          target,
        );
      } else if (authenticateLater !== undefined) {
        attachments.accept(wsSocket(socket), authenticateLater, target);
      } else throw new Error('a terminal viewer without a way to authenticate');
    },
  });
};
