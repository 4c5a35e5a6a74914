import { randomUUID } from 'node:crypto';
import {
  createMcpHandler,
  isLegacyRequest,
  WebStandardStreamableHTTPServerTransport,
} from '@modelcontextprotocol/server';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { credentialId, type Principal, READ_ROLES } from '../platform/auth.ts';
import { invalidField } from '../platform/envelope.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import type { GatewayView, McpGatewayBackend, ToolExposure } from './backend.ts';
import { createGatewayServer } from './mcp-server.ts';
import { type McpSession, McpSessions } from './sessions.ts';

export interface McpGatewayOptions {
  backend: McpGatewayBackend;
  /** The server's version, reported as the MCP server's. */
  version: string;
  log: Logger;
  /** Stateful sessions this node keeps at most, all tenants together. */
  maxSessions?: number;
  maxSessionsPerTenant?: number;
  /** A stateful session without a request for this long is closed. */
  sessionIdleMs?: number;
  /** The largest request body; a larger one gets 413 PAYLOAD_TOO_LARGE. */
  maxBodyBytes?: number;
}

export const MCP_GATEWAY_DEFAULTS = {
  maxSessions: 10_000,
  maxSessionsPerTenant: 1000,
  sessionIdleMs: 30 * 60_000,
  maxBodyBytes: 4 * 1024 * 1024,
} as const;

const SESSION_HEADER = 'mcp-session-id';

/** One HTTP exchange with the gateway, once the caller, the view and the body are known. */
interface Exchange {
  request: FastifyRequest;
  reply: FastifyReply;
  view: string | undefined;
  exposure: ToolExposure;
  instructions: string | undefined;
  principal: Principal;
  described: GatewayView;
  body: { raw: string | undefined; parsed: unknown };
}
const VIEW_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A JSON-RPC error as its own HTTP response (before any MCP server is involved). */
function sendJsonRpcError(reply: FastifyReply, status: number, code: number, message: string) {
  return reply
    .status(status)
    .type('application/json; charset=utf-8')
    .send({ jsonrpc: '2.0', id: null, error: { code, message } });
}

/** Why a parsed body is not one JSON-RPC message, or `undefined` when it is one. */
function jsonRpcProblem(body: unknown): string | undefined {
  if (Array.isArray(body)) return 'JSON-RPC batches are not supported';
  if (typeof body !== 'object' || body === null) return 'The body must be a JSON-RPC object';
  const message = body as Record<string, unknown>;
  if (message.jsonrpc !== '2.0') return 'jsonrpc must be "2.0"';
  const isResponse = 'result' in message || 'error' in message;
  if (!isResponse && typeof message.method !== 'string') return 'method must be a string';
  // Only an error response may have a null id (it answers a request it could not read).
  const nullable = 'error' in message && message.id === null;
  if ('id' in message && !nullable && !['string', 'number'].includes(typeof message.id)) {
    return 'id must be a string or a number';
  }
  return undefined;
}

/** The request as a web `Request`, whose signal aborts when the client goes away. */
function webRequestOf(request: FastifyRequest, body: string | undefined, signal: AbortSignal) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined) continue;
    headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  // The URL's host is not the Host header, which the client chooses: it is kept in headers.
  return new Request(new URL(request.url, 'http://localhost'), {
    method: request.method,
    headers,
    signal,
    ...(body !== undefined && request.method === 'POST' ? { body } : {}),
  });
}

const DEFAULT_CREDENTIAL_CHECK_MS = 5_000;

/**
 * Writes a web `Response` (JSON or an event stream) to the client, charging its bytes to
 * the credential's rate-limit bucket as the platform does for its own answers. An event
 * stream stays open only while its credential is valid: it is checked again every
 * `streamCredentialCheckMs`, and a revoked or expired one ends the stream (the client's
 * next request gets the 401).
 */
async function sendWebResponse(request: FastifyRequest, reply: FastifyReply, response: Response) {
  reply.hijack();
  const raw = reply.raw;
  const headers: Record<string, string | number | string[]> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = value;
  }
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  raw.writeHead(response.status, headers);
  if (response.body === null) {
    raw.end();
    return;
  }
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const charge = request.byteCharge;
  let credentialCheck: NodeJS.Timeout | undefined;
  const recheck = request.recheckCredential;
  if (
    recheck !== undefined &&
    response.headers.get('content-type')?.startsWith('text/event-stream')
  ) {
    let checking = false;
    credentialCheck = setInterval(() => {
      if (checking) return;
      checking = true;
      recheck()
        // Only a refusal ends the stream; a check that fails otherwise (the store is down)
        // leaves it open for the next check to decide.
        .catch((err: unknown) => {
          if (err instanceof ApiError && err.status === 401) raw.destroy();
        })
        .finally(() => {
          checking = false;
        });
    }, request.server.streamCredentialCheckMs ?? DEFAULT_CREDENTIAL_CHECK_MS);
    credentialCheck.unref();
  }
  // The client going away ends the exchange: the body is cancelled, nothing to report.
  // (A read loop rather than pipeline(): that allocates an abort controller per response.)
  const cancel = () => {
    reader.cancel().catch(() => {});
  };
  raw.once('close', cancel);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || raw.destroyed) break;
      if (charge !== undefined) void charge.add(value.byteLength);
      if (!raw.write(value)) {
        await new Promise<void>((resolve) => {
          const go = () => {
            raw.off('drain', go);
            raw.off('close', go);
            resolve();
          };
          raw.once('drain', go);
          raw.once('close', go);
        });
      }
    }
    if (!raw.destroyed) raw.end();
  } catch {
    // The body failed mid-stream (its server side closed): the client sees the stream end.
    raw.destroy();
  } finally {
    raw.off('close', cancel);
    clearInterval(credentialCheck);
  }
}

/**
 * The MCP gateway's routes: `/mcp` and `/mcp/{view}` speak MCP over Streamable HTTP, in
 * both protocol generations — 2025-11-25 (stateful, `Mcp-Session-Id`) and 2026-07-28
 * (stateless) — to callers authenticated by the platform like any route (an API key or a
 * JWT). What they serve comes from `backend`. See docs/mcp.md.
 */
export function mcpGatewayRoutes(options: McpGatewayOptions): FastifyPluginAsync {
  const { backend, log } = options;
  const maxBodyBytes = options.maxBodyBytes ?? MCP_GATEWAY_DEFAULTS.maxBodyBytes;
  const idleMs = options.sessionIdleMs ?? MCP_GATEWAY_DEFAULTS.sessionIdleMs;
  const sessions = new McpSessions({
    maxSessions: options.maxSessions ?? MCP_GATEWAY_DEFAULTS.maxSessions,
    maxSessionsPerTenant: options.maxSessionsPerTenant ?? MCP_GATEWAY_DEFAULTS.maxSessionsPerTenant,
    idleMs,
  });

  const serverFor = (
    generation: 'stateful' | 'stateless',
    view: string | undefined,
    exposure: ToolExposure,
    instructions: string | undefined,
    principal: () => Principal,
    described: () => GatewayView | undefined,
  ) =>
    createGatewayServer({
      backend,
      view,
      exposure,
      instructions,
      principal,
      described,
      version: options.version,
      log,
      generation,
    });

  /** Serves a request of an open session; 404 (per the spec) for one it does not know. */
  async function serveSession(exchange: Exchange, sessionId: string) {
    const { request, reply, view, principal, body } = exchange;
    const session = sessions.get(sessionId);
    // Another credential's session is as unknown as one that never existed.
    if (
      session === undefined ||
      session.credential !== credentialId(principal) ||
      session.view !== view
    ) {
      return sendJsonRpcError(reply, 404, -32001, 'Session not found; initialize a new one');
    }
    session.principal = principal;
    session.described = exchange.described;
    const end = sessions.touch(session);
    const aborter = new AbortController();
    reply.raw.once('close', () => {
      end();
      // Only a client that left before its answer cancels: aborting after every answer
      // would cost an error object per request for nothing.
      if (!reply.raw.writableFinished) aborter.abort();
    });
    const response = await session.transport.handleRequest(
      webRequestOf(request, body.raw, aborter.signal),
      body.parsed === undefined ? {} : { parsedBody: body.parsed },
    );
    await sendWebResponse(request, reply, response);
  }

  /** Opens a stateful session with an `initialize` request of the 2025 generation. */
  async function openSession(exchange: Exchange) {
    const { request, reply, view, exposure, instructions, principal, body, described } = exchange;
    const refusal = await sessions.makeRoom(principal.tenant.id);
    if (refusal === 'tenant') {
      throw new ApiError(
        'TENANT_LIMIT_REACHED',
        'Every MCP session the tenant may hold on this node is busy',
        {
          details: { resource: 'mcp_sessions' },
        },
      );
    }
    if (refusal === 'node') {
      throw new ApiError('SERVICE_OVERLOADED', 'Every MCP session this node may hold is busy', {
        headers: { 'retry-after': '30' },
      });
    }
    let session: McpSession | undefined;
    let current = principal;
    const server = serverFor(
      'stateful',
      view,
      exposure,
      instructions,
      () => session?.principal ?? current,
      () => session?.described ?? described,
    );
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      maxRequestBodySize: maxBodyBytes,
      onsessioninitialized: (id) => {
        session = {
          id,
          tenantId: principal.tenant.id,
          credential: credentialId(principal),
          view,
          transport,
          server,
          principal: current,
          described,
          lastActiveMs: Date.now(),
          openExchanges: 0,
        };
        sessions.add(session);
      },
      onsessionclosed: (id) => sessions.delete(id),
    });
    transport.onclose = () => {
      if (session !== undefined) sessions.delete(session.id);
    };
    await server.connect(transport);
    const aborter = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) aborter.abort();
    });
    const response = await transport.handleRequest(
      webRequestOf(request, body.raw, aborter.signal),
      {
        parsedBody: body.parsed,
      },
    );
    // A refused initialize opened nothing: nothing to keep.
    if (session === undefined) {
      await transport.close().catch(() => {});
      await server.close().catch(() => {});
    } else {
      current = session.principal;
    }
    await sendWebResponse(request, reply, response);
  }

  /** Serves one request of the stateless 2026-07-28 generation. */
  async function serveStateless(exchange: Exchange) {
    const { request, reply, view, exposure, instructions, principal, body, described } = exchange;
    const handler = createMcpHandler(
      () =>
        serverFor(
          'stateless',
          view,
          exposure,
          instructions,
          () => principal,
          () => described,
        ),
      {
        legacy: 'reject',
        maxRequestBodySize: maxBodyBytes,
        onerror: (err) => log.debug({ err }, 'MCP request refused'),
      },
    );
    const aborter = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) aborter.abort();
      handler.close().catch(() => {});
    });
    const response = await handler.fetch(
      webRequestOf(request, body.raw, aborter.signal),
      body.parsed === undefined ? {} : { parsedBody: body.parsed },
    );
    await sendWebResponse(request, reply, response);
  }

  return async (app) => {
    const sweep = setInterval(
      () => {
        sessions.expireIdle().catch((err) => log.warn({ err }, 'MCP session expiry failed'));
      },
      Math.max(1000, Math.min(idleMs / 4, 60_000)),
    );
    sweep.unref();
    // Before the server waits for its connections: open event streams end with their sessions.
    app.addHook('preClose', async () => {
      clearInterval(sweep);
      await sessions.closeAll();
    });

    // The body stays text here: invalid JSON is a JSON-RPC parse error, not INVALID_JSON.
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
      done(null, typeof body === 'string' ? body : body.toString('utf8'));
    });

    // MCP clients look for the challenge to learn that a credential is needed.
    app.addHook('onSend', async (_request, reply, payload) => {
      if (reply.statusCode === 401) reply.header('www-authenticate', 'Bearer realm="orchestra"');
      return payload;
    });

    const handler = async (request: FastifyRequest, reply: FastifyReply) => {
      const principal = principalOf(request);
      const { view } = request.params as { view?: string };
      if (view !== undefined && !VIEW_NAME.test(view)) {
        throw new ApiError('MCP_VIEW_NOT_FOUND', `No MCP view is named ${JSON.stringify(view)}`);
      }
      const query = request.query as Record<string, unknown>;
      const requested = query.tool_exposure;
      if (requested !== undefined && requested !== 'all' && requested !== 'search') {
        throw invalidField('querystring.tool_exposure', 'must be one of all, search');
      }
      const described = await backend.describeView(principal, view);
      const exposure: ToolExposure = requested ?? described.toolExposure ?? 'all';

      const raw = typeof request.body === 'string' ? request.body : undefined;
      let parsed: unknown;
      if (request.method === 'POST') {
        if (raw === undefined || raw.trim() === '') {
          return sendJsonRpcError(reply, 400, -32700, 'Parse error: the body is empty');
        }
        try {
          parsed = JSON.parse(raw);
        } catch (err) {
          return sendJsonRpcError(reply, 400, -32700, `Parse error: ${(err as Error).message}`);
        }
        const problem = jsonRpcProblem(parsed);
        if (problem !== undefined)
          return sendJsonRpcError(reply, 400, -32600, `Invalid Request: ${problem}`);
      }
      const exchange: Exchange = {
        request,
        reply,
        view,
        exposure,
        instructions: described.instructions,
        principal,
        described,
        body: { raw, parsed },
      };
      const sessionId = request.headers[SESSION_HEADER];
      if (typeof sessionId === 'string') return serveSession(exchange, sessionId);
      const web = webRequestOf(request, raw, new AbortController().signal);
      const legacy =
        request.method !== 'POST' ||
        (await isLegacyRequest(web, parsed, { maxRequestBodySize: maxBodyBytes }));
      if (legacy) {
        // GET and DELETE, and every 2025 request but initialize, belong to a session.
        if ((parsed as { method?: unknown } | undefined)?.method !== 'initialize') {
          return sendJsonRpcError(
            reply,
            400,
            -32000,
            'Bad Request: Mcp-Session-Id header is required',
          );
        }
        return openSession(exchange);
      }
      return serveStateless(exchange);
    };

    for (const url of ['/mcp', '/mcp/:view']) {
      app.route({
        method: ['GET', 'POST', 'DELETE'],
        url,
        bodyLimit: maxBodyBytes,
        config: { auth: READ_ROLES },
        // MCP, not REST: documented in docs/mcp.md rather than in the OpenAPI document.
        schema: { hide: true },
        handler,
      });
    }
  };
}
