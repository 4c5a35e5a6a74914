import { once } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import { ApiError } from '../platform/errors.ts';
import type { StreamItem } from './event-log.ts';

/** The query of a stream that is followed live unless `follow=false`, from after `after`. */
export const FollowStreamQuery = Type.Object(
  {
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'Resume after this offset.' })),
    follow: Type.Optional(Type.Boolean({ default: true })),
  },
  { additionalProperties: false },
);

/** The header a reconnecting EventSource resumes with (it wins over `after`). */
export const ResumeHeaders = Type.Object({
  'last-event-id': Type.Optional(Type.String({ maxLength: 20 })),
});

export type StreamFormat = 'sse' | 'ndjson';

/** Idle streams get a keep-alive this often unless the server says otherwise. */
const DEFAULT_KEEPALIVE_MS = 15_000;
/** Open streams check their credential again this often unless the server says otherwise. */
const DEFAULT_CREDENTIAL_CHECK_MS = 5_000;

declare module 'fastify' {
  interface FastifyInstance {
    /** ORCHESTRA_STREAM_KEEPALIVE_MS, decorated on the root instance by the app. */
    streamKeepAliveMs?: number;
    /** ORCHESTRA_STREAM_CREDENTIAL_CHECK_MS, likewise. */
    streamCredentialCheckMs?: number;
  }
}

/** Server-Sent Events when the client asks for them; NDJSON (one JSON object a line) otherwise. */
export function streamFormat(accept: string | undefined): StreamFormat {
  return accept?.includes('text/event-stream') ? 'sse' : 'ndjson';
}

/**
 * Where a reader resumes: the `Last-Event-ID` header (what EventSource sends after a
 * reconnect) wins over `?after=`; without either, from the start.
 */
export function resumeAfter(
  lastEventId: string | string[] | undefined,
  after: number | undefined,
): number {
  return lastEventIdOf(lastEventId) ?? after ?? 0;
}

/** The offset or revision in a `Last-Event-ID` header; undefined when there is none. */
export function lastEventIdOf(lastEventId: string | string[] | undefined): number | undefined {
  if (typeof lastEventId !== 'string' || lastEventId === '') return undefined;
  if (!/^\d{1,15}$/.test(lastEventId)) {
    throw new ApiError('VALIDATION_FAILED', 'headers.last-event-id: must be an event offset', {
      details: {
        fields: [{ field: 'headers.last-event-id', message: 'must be an event offset' }],
      },
    });
  }
  return Number(lastEventId);
}

function encode(item: StreamItem, format: StreamFormat): string {
  const json = JSON.stringify(item);
  if (format === 'ndjson') return `${json}\n`;
  // A gap has no id, so a reconnecting EventSource resumes from the last real event.
  return 'offset' in item
    ? `id: ${item.offset}\nevent: ${item.type}\ndata: ${json}\n\n`
    : `event: ${item.type}\ndata: ${json}\n\n`;
}

/** The last item of a stream whose credential was revoked or expired. */
function encodeRefusal(error: ApiError, format: StreamFormat): string {
  const json = JSON.stringify({ type: 'stream.error', code: error.code, message: error.message });
  return format === 'ndjson' ? `${json}\n` : `event: stream.error\ndata: ${json}\n\n`;
}

/**
 * Sends `items` as a streaming response and ends it when they end, when the client goes
 * away, or when `stop` aborts (shutdown). Takes over the reply: call it only after every
 * check that could still answer with an error status.
 */
export async function sendStream<T = StreamItem>(
  request: FastifyRequest,
  reply: FastifyReply,
  open: (signal: AbortSignal) => AsyncIterable<T>,
  options: {
    format: StreamFormat;
    stop: AbortSignal;
    /** How an item is written; event-log items by default. */
    encode?: (item: T, format: StreamFormat) => string;
    /** Written when the items end by themselves (SSE only): tells EventSource not to reconnect. */
    endEvent?: boolean;
  },
): Promise<void> {
  const encodeItem =
    options.encode ?? (encode as unknown as (item: T, format: StreamFormat) => string);
  const controller = new AbortController();
  const signal = AbortSignal.any([controller.signal, options.stop]);
  const res = reply.raw;
  reply.hijack();
  res.writeHead(200, {
    'content-type':
      options.format === 'sse'
        ? 'text/event-stream; charset=utf-8'
        : 'application/x-ndjson; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    'x-accel-buffering': 'no', // nginx: do not buffer the stream
    'x-request-id': request.id,
  });
  res.flushHeaders(); // the status line now, not with the first event
  const onClose = () => controller.abort();
  res.on('close', onClose);
  // Proxies close connections that stay silent: an SSE comment, or an empty NDJSON line
  // (NDJSON readers skip blank lines), whenever nothing else was written for a while.
  const keepAliveMs = request.server.streamKeepAliveMs ?? DEFAULT_KEEPALIVE_MS;
  const keepAlive = options.format === 'sse' ? ': keep-alive\n\n' : '\n';
  let wroteSince = false;
  const heartbeat = setInterval(() => {
    if (!wroteSince && !res.destroyed) res.write(keepAlive);
    wroteSince = false;
  }, keepAliveMs);
  heartbeat.unref();
  // A credential revoked (on any node) or expired while the stream is open ends it, as
  // WebSockets are closed with 4401; a check that fails for another reason (the store is
  // down) leaves the stream open: the next check decides.
  let refused: ApiError | undefined;
  let checking = false;
  const recheck = request.recheckCredential;
  const credentialCheck =
    recheck &&
    setInterval(() => {
      if (checking) return;
      checking = true;
      recheck()
        .catch((err: unknown) => {
          if (err instanceof ApiError && err.status === 401) {
            refused = err;
            controller.abort();
          }
        })
        .finally(() => {
          checking = false;
        });
    }, request.server.streamCredentialCheckMs ?? DEFAULT_CREDENTIAL_CHECK_MS);
  credentialCheck?.unref();
  if (options.format === 'sse') res.write('retry: 2000\n\n');
  // Charged as it is written and never refused: a stream is not cut by a 429 midway; its
  // debt makes the credential's next requests wait instead.
  const charge = request.byteCharge;
  let failed = false;
  try {
    for await (const item of open(signal)) {
      if (signal.aborted) break;
      wroteSince = true;
      const text = encodeItem(item, options.format);
      void charge?.add(Buffer.byteLength(text));
      if (!res.write(text)) {
        // Slow client: wait for the socket to drain instead of buffering without bound.
        await once(res, 'drain', { signal }).catch(() => undefined);
      }
    }
    if (refused !== undefined && !res.destroyed) res.write(encodeRefusal(refused, options.format));
    // Ended by itself (the task is over): say so, so that EventSource does not reconnect.
    else if (!signal.aborted && options.format === 'sse' && options.endEvent !== false)
      res.write('event: stream.end\ndata: {"type":"stream.end"}\n\n');
  } catch (err) {
    failed = true;
    request.log.warn({ err }, 'event stream ended by an error');
    if (!res.destroyed && options.format === 'sse') {
      res.write(
        `event: stream.error\ndata: ${JSON.stringify({ type: 'stream.error', message: 'The stream was interrupted; resume with Last-Event-ID' })}\n\n`,
      );
    }
  } finally {
    clearInterval(heartbeat);
    clearInterval(credentialCheck);
    res.off('close', onClose);
    if (failed && options.format === 'ndjson') {
      // NDJSON has no error item: a broken connection tells the client to resume.
      res.destroy();
    } else if (!res.destroyed) {
      res.end();
      // At shutdown, do not leave the keep-alive connection to hold the drain.
      if (options.stop.aborted) res.once('finish', () => res.socket?.destroy());
    }
  }
}

/**
 * Serves a stream with `FollowStreamQuery` and `ResumeHeaders`: `check` refuses a bad
 * request (404, `after` beyond the head) before anything is sent, then `read` gives the
 * items after the resume point, live unless `follow=false`.
 */
export async function serveFollowedStream(
  request: FastifyRequest<{
    Querystring: { after?: number | undefined; follow?: boolean | undefined };
    Headers: { 'last-event-id'?: string | undefined };
  }>,
  reply: FastifyReply,
  options: {
    check: (after: number) => Promise<unknown>;
    read: (after: number, signal: AbortSignal, follow: boolean) => AsyncIterable<StreamItem>;
    stop: AbortSignal;
  },
): Promise<FastifyReply> {
  const after = resumeAfter(request.headers['last-event-id'], request.query.after);
  await options.check(after);
  const follow = request.query.follow ?? true;
  await sendStream(request, reply, (signal) => options.read(after, signal, follow), {
    format: streamFormat(request.headers.accept),
    stop: options.stop,
  });
  return reply;
}
