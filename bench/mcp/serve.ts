/**
 * What the benchmark's own MCP servers share (bench/mcp/upstream.ts, the upstream, and
 * bench/mcp/sdk-relay.ts, the floor): reading a request body, a JSON-RPC error as its own
 * answer, and serving on 127.0.0.1 as a load process that answers `stats` and `stop`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { HOST, serveLoadRequests } from '../common.ts';
import type { UpstreamRequest, UpstreamStats } from './shared.ts';

/** Requests larger than this are refused: the benchmark's are tiny. */
const MAX_BODY_BYTES = 1024 * 1024;

/** The request's body as text; rejects past 1 MiB. */
export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new Error('request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A JSON-RPC error (`-32000`) as the whole answer. */
export function replyError(res: ServerResponse, status: number, message: string): void {
  res
    .writeHead(status, { 'content-type': 'application/json' })
    .end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

/**
 * Serves `handle` on 127.0.0.1:`port`; says it is ready over IPC once it listens, answers
 * `stats` with `stats()` and exits on `stop`. `name` prefixes what a failed request logs.
 */
export function serveMcp(
  name: string,
  port: number,
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  stats: () => UpstreamStats,
): void {
  const http = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      process.stderr.write(`${name}: ${(err as Error).stack ?? String(err)}\n`);
      if (!res.headersSent) replyError(res, 500, 'internal error');
      else res.end();
    });
  });
  // Keep-alive sockets of the clients stay open between calls, as they would in production.
  http.keepAliveTimeout = 60_000;
  http.listen(port, HOST, () => {
    serveLoadRequests<UpstreamRequest>(async (request) => {
      switch (request.type) {
        case 'stats':
          return stats();
        case 'stop':
          setImmediate(() => {
            http.closeAllConnections();
            http.close(() => process.exit(0));
          });
          return 'stopping';
      }
    });
  });
}
