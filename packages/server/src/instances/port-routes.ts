import {
  Agent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import type { Socket } from 'node:net';
import type {
  FastifyPluginAsyncTypebox,
  TypeBoxTypeProvider,
} from '@fastify/type-provider-typebox';
import {
  CreatePortShare,
  errorResponses,
  InstanceRef,
  Page,
  PageQuery,
  PortRef,
  PortShare,
} from '@orchestra/protocol';
import type { FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import WebSocket from 'ws';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { responseBudget } from '../platform/pagination.ts';
import type { InstanceService } from './instance-service.ts';
import type { PortShares } from './port-shares.ts';

const NODE_NOTE =
  'Any node takes it: in a cluster it goes on to the node that runs the instance (502 NODE_UNREACHABLE when that node does not answer; 409 WORKSPACE_INSTANCE_STATE, with `details.node_id`, when that node is gone).';

/** Headers of one hop only, and Orchestra's own credentials: never passed on. */
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'authorization',
  'x-api-key',
  'host',
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
]);

/** Where a proxied request goes: a connection to the port, and the path prefix it came under. */
interface Target {
  connect: () => Promise<Socket>;
  port: number;
  /** `/v1/instances/ins_…/ports/8080` or `/share/ors_…`: the app sees it as X-Forwarded-Prefix. */
  prefix: string;
}

function forwardedHeaders(request: FastifyRequest, target: Target): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (!NOT_FORWARDED.has(name)) headers[name] = value;
  }
  headers.host = `127.0.0.1:${target.port}`;
  headers['x-forwarded-for'] = request.ip;
  headers['x-forwarded-host'] = request.headers.host ?? '';
  headers['x-forwarded-proto'] = request.protocol;
  headers['x-forwarded-prefix'] = target.prefix;
  return headers;
}

/** The path and query the app gets: what follows the prefix. */
function upstreamPath(request: FastifyRequest, target: Target): string {
  const url = request.raw.url ?? '/';
  const query = url.includes('?') ? url.slice(url.indexOf('?')) : '';
  const path = url.split('?')[0] ?? '';
  const rest = path.startsWith(target.prefix) ? path.slice(target.prefix.length) : '';
  return `${rest.startsWith('/') ? rest : `/${rest}`}${query}`;
}

/** An agent whose one connection is `socket` (the relay's, or a TCP one). */
function oneConnection(socket: Socket): Agent {
  const agent = new Agent({ keepAlive: false, maxSockets: 1 });
  agent.createConnection = () => socket;
  return agent;
}

/**
 * Sends the request to the app and its answer back. Failures before the app answers are
 * errors in the unified format; after, the connection is cut.
 */
async function proxyHttp(request: FastifyRequest, reply: FastifyReply, target: Target) {
  const socket = await target.connect();
  const answer = await new Promise<IncomingMessage>((resolve, reject) => {
    const upstream = httpRequest(
      {
        method: request.method,
        path: upstreamPath(request, target),
        headers: forwardedHeaders(request, target),
        agent: oneConnection(socket),
      },
      resolve,
    );
    upstream.once('error', (err) =>
      reject(
        new ApiError(
          'PORT_NOT_LISTENING',
          `The app on port ${target.port} broke off: ${err.message}`,
          {
            details: { port: target.port },
          },
        ),
      ),
    );
    // A request without a body (or whose body the server read already) ends at once.
    const raw = request.raw;
    const hasBody =
      raw.headers['content-length'] !== undefined || raw.headers['transfer-encoding'] !== undefined;
    if (!hasBody || raw.readableEnded) upstream.end();
    else raw.pipe(upstream);
  });
  reply.hijack();
  const headers: Record<string, string | string[]> = {};
  const requestId = reply.getHeader('x-request-id');
  if (typeof requestId === 'string') headers['x-request-id'] = requestId;
  for (const [name, value] of Object.entries(answer.headers)) {
    if (value !== undefined && !NOT_FORWARDED.has(name)) headers[name] = value;
  }
  // The app is served from Orchestra's own origin: in a sandbox of an origin of its own, its
  // scripts cannot read what the console keeps there (the API key) nor call the API as it.
  const own = headers['content-security-policy'];
  headers['content-security-policy'] = [
    ...(own === undefined ? [] : Array.isArray(own) ? own : [own]),
    APP_SANDBOX,
  ];
  reply.raw.writeHead(answer.statusCode ?? 502, headers);
  answer.pipe(reply.raw);
  reply.raw.once('close', () => socket.destroy());
}

/** A close code one side may send on: the reserved ones (1005, 1006, 1015) are not. */
const sendable = (code: number) =>
  code === 1000 || (code >= 1001 && code <= 1014 && code !== 1005 && code !== 1006) || code >= 3000
    ? code
    : 1000;

/** Joins a client's WebSocket to the app's, message for message. */
async function proxyWebSocket(client: WebSocket, request: FastifyRequest, found: Promise<Target>) {
  // Listening at once: what the client sends while the app's socket opens waits for it.
  const pending: { data: WebSocket.RawData; binary: boolean }[] = [];
  let upstream: WebSocket | undefined;
  client.on('message', (data, binary) => {
    if (upstream?.readyState === WebSocket.OPEN) upstream.send(data, { binary });
    else pending.push({ data, binary });
  });
  client.on('close', (code, reason) => {
    if (upstream?.readyState === WebSocket.OPEN) upstream.close(sendable(code), reason);
    else upstream?.terminate();
  });
  client.on('error', () => upstream?.terminate());
  let socket: Socket;
  let target: Target;
  try {
    target = await found;
    socket = await target.connect();
  } catch (err) {
    const notFound = err instanceof ApiError && err.code === 'PORT_SHARE_NOT_FOUND';
    client.close(
      notFound ? 4404 : 1011,
      err instanceof Error ? err.message.slice(0, 120) : 'unreachable',
    );
    return;
  }
  if (client.readyState !== WebSocket.OPEN) {
    socket.destroy();
    return;
  }
  const protocols = request.headers['sec-websocket-protocol']
    ?.split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const app = new WebSocket(
    `ws://127.0.0.1:${target.port}${upstreamPath(request, target)}`,
    protocols ?? [],
    {
      headers: forwardedHeaders(request, target) as Record<string, string>,
      createConnection: () => socket,
    },
  );
  upstream = app;
  app.on('open', () => {
    for (const { data, binary } of pending.splice(0)) app.send(data, { binary });
  });
  app.on('message', (data, binary) => {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary });
  });
  app.on('close', (code, reason) => {
    if (client.readyState === WebSocket.OPEN) client.close(sendable(code), reason);
  });
  app.on('error', () => {
    if (client.readyState === WebSocket.OPEN) client.close(1011, 'the app closed');
  });
}

/** What a proxied page may do: run and submit, not act as Orchestra's origin. */
const APP_SANDBOX =
  'sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads';

/** A proxied answer is the app's, whatever it is. */
const APP_ANSWER = {
  200: Type.Unknown({
    description: 'What the app answered: its status, headers and body, as they were.',
  }),
  ...errorResponses,
};

// HEAD comes with GET (Fastify adds it, and the proxy passes the method on).
const PROXY_METHODS = ['DELETE', 'GET', 'PATCH', 'POST', 'PUT', 'OPTIONS'] as const;

/**
 * The ports of instances through Orchestra: `/v1/instances/{id}/ports/{port}/…` for
 * credentials, `/share/{token}/…` for share links, HTTP and WebSocket alike; and the share
 * links themselves.
 */
export const portRoutes: FastifyPluginAsyncTypebox<{
  instances: InstanceService;
  shares: PortShares;
}> = async (app, { instances, shares }) => {
  app.addSchema(PortShare);

  app.post(
    '/v1/instances/:instance/shares',
    {
      schema: {
        tags: ['instances'],
        operationId: 'createPortShare',
        summary: 'Share a port of an instance',
        description:
          'A link, `/share/<token>/`, that reaches the port (HTTP and WebSocket) without a credential until it expires (1 hour by default, at most 7 days) or is revoked. The token is in `url` this once only; the server keeps its hash.',
        params: InstanceRef,
        body: Type.Object(
          {
            port: Type.Integer({
              minimum: 1,
              maximum: 65_535,
              description: 'The port, inside the instance.',
            }),
            ...CreatePortShare.properties,
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Ref('PortShare'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const { port, ...input } = request.body;
      reply.status(201);
      return shares.create(principalOf(request), request.params.instance, port, input);
    },
  );

  app.get(
    '/v1/instances/:instance/shares',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listPortShares',
        summary: 'List an instance’s share links that still work',
        params: InstanceRef,
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('PortShare')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      shares.list(principalOf(request), request.params.instance, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.delete(
    '/v1/instances/:instance/shares/:share',
    {
      schema: {
        tags: ['instances'],
        operationId: 'revokePortShare',
        summary: 'Revoke a share link',
        params: Type.Object({
          instance: Type.String({ maxLength: 64 }),
          share: Type.String({ maxLength: 64, description: 'The link’s id (`shr_…`).' }),
        }),
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await shares.revoke(principalOf(request), request.params.instance, request.params.share);
      reply.status(204);
    },
  );

  // The proxies: bodies pass through as bytes, whatever their type.
  await app.register(async (plain) => {
    const raw = plain.withTypeProvider<TypeBoxTypeProvider>();
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

    const byCredential = (request: FastifyRequest): Target => {
      const { instance, port } = request.params as { instance: string; port: number };
      const tenantId = principalOf(request).tenant.id;
      return {
        port,
        prefix: `/v1/instances/${instance}/ports/${port}`,
        connect: () => instances.connectPort(tenantId, instance, port),
      };
    };
    const byShare = async (request: FastifyRequest): Promise<Target> => {
      const { token } = request.params as { token: string };
      const shared = await shares.resolve(token);
      return {
        port: shared.port,
        prefix: `/share/${token}`,
        connect: () => instances.connectPort(shared.tenantId, shared.instanceId, shared.port),
      };
    };

    const method = (m: string) => m.charAt(0) + m.slice(1).toLowerCase();
    const bodyOf = (m: string) =>
      m === 'GET' || m === 'HEAD' || m === 'DELETE' || m === 'OPTIONS'
        ? {}
        : { rawBody: { contentTypes: ['*/*'], description: 'Passed on to the app as it is.' } };
    // One operation per method in the document; the bare prefix (the app's root) is the
    // same route without a path, left out of it.
    for (const m of PROXY_METHODS) {
      for (const url of [
        '/v1/instances/:instance/ports/:port/*',
        '/v1/instances/:instance/ports/:port',
      ]) {
        const bare = !url.endsWith('*');
        raw.route({
          method: m,
          url,
          schema: {
            ...(bare ? { hide: true } : {}),
            tags: ['instances'],
            operationId: `instancePort${method(m)}`,
            summary: `${m} on a port of a running instance (HTTP and WebSocket)`,
            description: `The request goes on to 127.0.0.1:{port} in the instance (its own network: any port; on the node's network: its own ports only) at the path after the port, without Orchestra's credential headers, with \`X-Forwarded-Prefix\`; the answer comes back as the app gave it. A WebSocket upgrade (GET) is joined to the app's. Counts as activity for the idle timeout. 502 PORT_NOT_LISTENING when nothing answers. For browsers, share a link instead (\`POST /v1/instances/{id}/shares\`). ${NODE_NOTE}`,
            params: bare
              ? PortRef
              : Type.Object({
                  ...PortRef.properties,
                  '*': Type.String({ description: 'The path the app gets, after the port.' }),
                }),
            response: APP_ANSWER,
          },
          config: { auth: WRITE_ROLES, ...bodyOf(m) },
          handler: (request, reply) => proxyHttp(request, reply, byCredential(request)),
          ...(m === 'GET'
            ? {
                wsHandler: (socket: unknown, request: FastifyRequest) => {
                  void proxyWebSocket(
                    socket as WebSocket,
                    request,
                    Promise.resolve(byCredential(request)),
                  );
                },
              }
            : {}),
        });
      }
      for (const url of ['/share/:token/*', '/share/:token']) {
        const bare = !url.endsWith('*');
        raw.route({
          method: m,
          url,
          schema: {
            ...(bare ? { hide: true } : {}),
            tags: ['instances'],
            operationId: `sharedPort${method(m)}`,
            summary: `${m} on a shared port (HTTP and WebSocket)`,
            description:
              'As `/v1/instances/{id}/ports/{port}/…`, with the share link’s token in the path instead of a credential. 404 PORT_SHARE_NOT_FOUND for a token that is unknown, revoked or expired.',
            params: bare
              ? Type.Object({ token: Type.String({ maxLength: 100 }) })
              : Type.Object({
                  token: Type.String({ maxLength: 100 }),
                  '*': Type.String({ description: 'The path the app gets, after the token.' }),
                }),
            response: APP_ANSWER,
          },
          config: { auth: 'public', ...bodyOf(m) },
          handler: async (request, reply) => proxyHttp(request, reply, await byShare(request)),
          ...(m === 'GET'
            ? {
                wsHandler: (socket: unknown, request: FastifyRequest) => {
                  void proxyWebSocket(socket as WebSocket, request, byShare(request));
                },
              }
            : {}),
        });
      }
    }
  });
};
