/**
 * The MCP benchmark's floor (bench/mcp.ts --middle sdk-relay): the least a relay built
 * the way Orchestra's gateway is built can cost, with none of Orchestra. It serves MCP at
 * http://127.0.0.1:<port>/mcp with the 2.x server SDK (stateful sessions,
 * `WebStandardStreamableHTTPServerTransport`, node:http requests turned into web ones as
 * the gateway does) and forwards `tools/list` and `tools/call` to the upstream through one
 * 2.x SDK client over the hub's own fetch (packages/server/src/mcp/http-fetch.ts). No
 * authentication, registry, policy, record or metrics: what Orchestra adds on top of this
 * is its own cost; what this costs is the SDKs'.
 *
 *   node bench/mcp/sdk-relay.ts <port> <upstream url>
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import {
  isInitializeRequest,
  Server,
  WebStandardStreamableHTTPServerTransport,
} from '@modelcontextprotocol/server';
import { upstreamFetch } from '../../packages/server/src/mcp/http-fetch.ts';
import { readBody, replyError, serveMcp } from './serve.ts';
import type { UpstreamStats } from './shared.ts';

const port = Number(process.argv[2]);
const upstreamUrl = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || upstreamUrl === undefined) {
  process.stderr.write('usage: node bench/mcp/sdk-relay.ts <port> <upstream url>\n');
  process.exit(2);
}

const client = new Client({ name: 'orchestra-bench-relay', version: '1.0.0' });
await client.connect(
  new StreamableHTTPClientTransport(new URL(upstreamUrl), { fetch: upstreamFetch().fetch }),
);

const sessions = new Map<string, WebStandardStreamableHTTPServerTransport>();
const stats: UpstreamStats = { calls: 0, sessionsOpened: 0, sessionsOpen: 0 };

function newServer(): Server {
  const server = new Server(
    { name: 'orchestra-bench-relay', version: '1.0.0' },
    { capabilities: { tools: {} } },
  );
  server.setRequestHandler('tools/list', async () => client.listTools());
  server.setRequestHandler('tools/call', async (request, ctx) => {
    stats.calls += 1;
    return client.callTool(
      { name: request.params.name, arguments: request.params.arguments ?? {} },
      { signal: ctx.mcpReq.signal },
    );
  });
  return server;
}

/** The node:http request as a web one, as the gateway makes it. */
function webRequest(req: IncomingMessage, body: string | undefined): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  return new Request(new URL(req.url ?? '/', 'http://localhost'), {
    method: req.method ?? 'GET',
    headers,
    ...(body !== undefined && req.method === 'POST' ? { body } : {}),
  });
}

async function send(res: ServerResponse, response: Response): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  await pipeline(Readable.fromWeb(response.body as never), res).catch(() => {});
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!req.url?.startsWith('/mcp')) {
    res.writeHead(404).end();
    return;
  }
  const header = req.headers['mcp-session-id'];
  const sessionId = typeof header === 'string' ? header : undefined;
  const known = sessionId === undefined ? undefined : sessions.get(sessionId);
  const raw = req.method === 'POST' ? await readBody(req) : undefined;
  const parsed: unknown = raw === undefined ? undefined : JSON.parse(raw);
  if (known !== undefined) {
    await send(res, await known.handleRequest(webRequest(req, raw), { parsedBody: parsed }));
    return;
  }
  if (sessionId !== undefined) return replyError(res, 404, 'unknown session');
  if (!isInitializeRequest(parsed)) return replyError(res, 400, 'no session: initialize first');
  const transport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    onsessioninitialized: (id) => {
      sessions.set(id, transport);
      stats.sessionsOpened += 1;
    },
    onsessionclosed: (id) => {
      sessions.delete(id);
    },
  });
  await newServer().connect(transport);
  await send(res, await transport.handleRequest(webRequest(req, raw), { parsedBody: parsed }));
}

serveMcp('sdk-relay', port, handle, () => ({ ...stats, sessionsOpen: sessions.size }));
