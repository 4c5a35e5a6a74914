/**
 * The MCP benchmark's upstream server (bench/mcp.ts starts it): a Streamable HTTP MCP server
 * built on the 1.x SDK, stateful (a session per `initialize`, as the SDK's own example), at
 * http://127.0.0.1:<port>/mcp, with one trivial tool:
 *
 *   echo { text: string } → text "echo: <text>", readOnlyHint true
 *
 * Both of the benchmark's paths end here: its clients directly, and Orchestra's MCP hub.
 * Started as a load process (common.ts `LoadProcess`): it says it is ready over IPC once it
 * listens, answers `stats` and exits on `stop` or when the benchmark goes away.
 *
 *   node bench/mcp/upstream.ts <port>
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { readBody, replyError, serveMcp } from './serve.ts';
import { ECHO_PREFIX, TOOL_NAME, type UpstreamStats } from './shared.ts';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: node bench/mcp/upstream.ts <port>\n');
  process.exit(2);
}

const sessions = new Map<string, StreamableHTTPServerTransport>();
const stats: UpstreamStats = { calls: 0, sessionsOpened: 0, sessionsOpen: 0 };

function newServer(): McpServer {
  const server = new McpServer({ name: 'orchestra-bench-upstream', version: '1.0.0' });
  server.registerTool(
    TOOL_NAME,
    {
      description: 'Returns its text, prefixed with "echo: ".',
      inputSchema: { text: z.string().max(1000) },
      annotations: { readOnlyHint: true },
    },
    async ({ text }) => {
      stats.calls += 1;
      return { content: [{ type: 'text', text: `${ECHO_PREFIX}${text}` }] };
    },
  );
  return server;
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  return JSON.parse(await readBody(req));
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!req.url?.startsWith('/mcp')) {
    res.writeHead(404).end();
    return;
  }
  const header = req.headers['mcp-session-id'];
  const sessionId = typeof header === 'string' ? header : undefined;
  const known = sessionId === undefined ? undefined : sessions.get(sessionId);
  if (req.method !== 'POST') {
    // GET (the event stream) and DELETE (end of the session) need a session.
    if (known === undefined) return replyError(res, sessionId ? 404 : 400, 'unknown session');
    return known.handleRequest(req, res);
  }
  let body: unknown;
  try {
    body = await readJson(req);
  } catch (err) {
    return replyError(res, 400, `bad request: ${(err as Error).message}`);
  }
  if (known !== undefined) return known.handleRequest(req, res, body);
  if (sessionId !== undefined) return replyError(res, 404, 'unknown session');
  if (!isInitializeRequest(body)) return replyError(res, 400, 'no session: initialize first');
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    onsessioninitialized: (id) => {
      sessions.set(id, transport);
      stats.sessionsOpened += 1;
      stats.sessionsOpen = sessions.size;
    },
    onsessionclosed: (id) => {
      sessions.delete(id);
      stats.sessionsOpen = sessions.size;
    },
  });
  transport.onclose = () => {
    if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
    stats.sessionsOpen = sessions.size;
  };
  await newServer().connect(transport);
  await transport.handleRequest(req, res, body);
}

serveMcp('upstream', port, handle, () => ({ ...stats, sessionsOpen: sessions.size }));
