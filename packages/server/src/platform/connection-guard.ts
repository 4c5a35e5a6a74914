import { randomUUID } from 'node:crypto';
import { type Server, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { ApiError, errorBody } from './errors.ts';

/** Who answers, for error bodies written outside Fastify. */
export interface ErrorContext {
  service: string;
  instanceId: string;
}

/**
 * Sockets that have not authenticated yet, each with the function that stops counting it.
 * Module-level so that the request pipeline and the realtime `auth` frame can mark a socket
 * without being handed the guard; keyed weakly, so a closed socket leaves nothing behind.
 */
const unauthenticated = new WeakMap<Socket, () => void>();

/**
 * Marks a connection as authenticated: it no longer counts against its address's limit of
 * unauthenticated connections. Harmless on a socket the guard does not know.
 */
export function markAuthenticated(socket: Socket | undefined): void {
  if (socket === undefined) return;
  const release = unauthenticated.get(socket);
  if (release === undefined) return;
  unauthenticated.delete(socket);
  release();
}

/**
 * Bounds what clients without a credential can hold: at most `maxPerAddress` connections per
 * remote address that have not yet made an authenticated request (an HTTP request with a
 * valid credential, an agent or realtime upgrade, a realtime `auth` frame). A connection
 * over the limit gets a 429 and is closed before its request is read. Header size and time,
 * and idle connections that send nothing, are bounded by the HTTP server's own options
 * (`headersTimeout`, `maxHeaderSize`), set where the server is built.
 *
 * Behind a reverse proxy every connection comes from the proxy, so the limit would count the
 * proxy's connections together; callers leave the guard off then (the proxy bounds clients).
 */
export function guardUnauthenticatedConnections(
  server: Server,
  options: {
    maxPerAddress: number;
    context: ErrorContext;
    onRefused?: (address: string) => void;
  },
): void {
  if (options.maxPerAddress <= 0) return;
  const counts = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? 'unknown';
    const count = counts.get(address) ?? 0;
    if (count >= options.maxPerAddress) {
      options.onRefused?.(address);
      endWithError(
        socket,
        new ApiError('TOO_MANY_CONNECTIONS', undefined, {
          details: { limit: options.maxPerAddress },
          headers: { 'retry-after': '1' },
        }),
        options.context,
      );
      return;
    }
    counts.set(address, count + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const left = (counts.get(address) ?? 1) - 1;
      if (left > 0) counts.set(address, left);
      else counts.delete(address);
    };
    unauthenticated.set(socket, release);
    socket.once('close', () => {
      unauthenticated.delete(socket);
      release();
    });
  });
}

/**
 * Answers with a whole HTTP response in the unified error format, without Fastify (the
 * request was never parsed, or could not be), and closes the connection.
 */
export function endWithError(socket: Socket, error: ApiError, context: ErrorContext): void {
  const requestId = randomUUID();
  const body = JSON.stringify(errorBody(error, { ...context, requestId }));
  const headers = Object.entries(error.headers ?? {})
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.on('error', () => socket.destroy());
  socket.write(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${headers}` +
      `X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
  closeAfterFlush(socket);
}

/**
 * Ends a socket and destroys it once what was written to it has been handed to the kernel,
 * or after `graceMs` at the latest: a client that never reads must not keep it open.
 */
export function closeAfterFlush(socket: Socket, graceMs = 5_000): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.end(() => socket.destroy());
}
