import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type Caller, callerExpiresAtMs } from './auth.ts';
import { type MessageType, serverFrame } from './envelope.ts';
import { ApiError, CLOSE_CODES } from './errors.ts';
import type { Authenticated } from './http.ts';
import type { SharedFrame, WireSocket } from './ws-socket.ts';

export type CloseCode = (typeof CLOSE_CODES)[keyof typeof CLOSE_CODES];

/** Invalid frames tolerated per window; one more closes the connection with 4400. */
const MAX_INVALID_FRAMES = 20;
const INVALID_WINDOW_MS = 60_000;
/** A connection the server closed gets this long to take its close frame (see `close`). */
const CLOSE_GRACE_MS = 5_000;
/** `closeAndSettle` drops a connection whose peer has not answered the close by then. */
const SETTLE_MS = 1_000;

/**
 * What a protocol implements on the connection core: it turns messages into frames and
 * handles them. The core calls it; it never sees the socket.
 */
export interface ConnectionHandler<F> {
  /**
   * Decodes one message. Throws an `ApiError` (a `FrameError` to answer a request) for an
   * invalid one: the core answers it and counts it against the invalid-frame budget.
   * Binary messages come here only with `binaryFrames: 'accept'`.
   */
  parse(data: Buffer, binary: boolean): F;
  /** Handles a valid frame; what it queues, it reports with `inboundQueued`/`inboundHandled`. */
  receive(frame: F): void;
  /**
   * The connection is gone; `code` is the one the server closed it with, if it did. The
   * connection counts as settled once this resolves (see `closeAndSettle`).
   */
  closed(code: CloseCode | undefined): Promise<void>;
  /** The core stopped reading because too many frames wait (`inbound.pauseAt`), and resumed. */
  readingPaused?(): void;
  readingResumed?(): void;
}

/** How the connection's caller authenticated. */
export type ConnectionAuth =
  /** In the upgrade request. */
  | ({ kind: 'request' } & Authenticated)
  /** Not yet: the client sends its credential in a frame within `timeoutMs` (see `authenticate`). */
  | {
      kind: 'later';
      authenticate: (credential: string) => Promise<Authenticated>;
      timeoutMs: number;
    };

/** How a connection authenticates: in its request, or with a frame that brings a credential. */
export function connectionAuth(
  auth: Authenticated | ((credential: string) => Promise<Authenticated>),
  timeoutMs: number,
): ConnectionAuth {
  return typeof auth === 'function'
    ? { kind: 'later', authenticate: auth, timeoutMs }
    : { kind: 'request', ...auth };
}

export interface ConnectionOptions {
  auth: ConnectionAuth;
  /** A larger inbound message closes the connection with 1009. */
  maxFrameBytes: number;
  /** Bytes queued for sending past which the client is cut as a slow consumer (4507); undefined: no bound. */
  maxQueueBytes: number | undefined;
  /** Inbound frames waiting to be handled at which reading stops, and at or below which it resumes. */
  inbound: { pauseAt: number; resumeAt: number };
  /** `'invalid'` (the default): a binary message is an invalid frame. */
  binaryFrames?: 'invalid' | 'accept';
  /** The `source` of the error frames the core sends (`orchestra:<instance id>`). */
  source: string;
  log: Logger;
  /** Every error frame sent (for a metric). */
  onErrorFrame?(error: ApiError): void;
  /** The server closed the connection with `code` (for a metric). */
  onServerClose?(code: CloseCode): void;
}

/**
 * One WebSocket connection, whatever protocol it speaks: what every protocol on the
 * platform needs and must not implement again. It owns
 * - authentication: a caller from the request pipeline, or one that comes in a frame
 *   through the same pipeline within a deadline; closing with 4401 when the credential
 *   expires or a recheck refuses it;
 * - inbound frames: the size limit (1009), the invalid-frame budget (4400), and pausing
 *   reading while too many frames wait to be handled;
 * - outbound frames: a bounded send queue (4507 for a consumer too slow), error frames in
 *   the envelope;
 * - keep-alives: WebSocket pings answered in time (ticked by `WsConnections`), and a
 *   deadline for the next expected frame (4408);
 * - closing: once, with a catalogued code, and a grace for the close frame.
 *
 * The protocol on top (a `ConnectionHandler`) sees this minimal surface; the socket below
 * is a `WireSocket`, so neither knows about `ws` or HTTP.
 */
export class WsConnection<F = unknown> {
  readonly id = randomUUID();
  readonly #socket: WireSocket;
  readonly #options: ConnectionOptions;
  #handler: ConnectionHandler<F> | undefined;
  #caller: Caller | undefined;
  #recheck: (() => Promise<void>) | undefined;
  readonly #invalidAt: number[] = [];
  #pending = 0;
  #paused = false;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #closeCode: CloseCode | undefined;
  #alive = true;
  #deadline: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  readonly #settled: Promise<void>;
  #settle: () => void = () => {};

  constructor(socket: WireSocket, options: ConnectionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.#settled = new Promise((resolve) => {
      this.#settle = resolve;
    });
    // Known before the protocol handler is built, which may need it.
    if (options.auth.kind === 'request') this.#admit(options.auth);
  }

  /** Starts delivering frames to `handler`. */
  listen(handler: ConnectionHandler<F>): void {
    this.#handler = handler;
    const socket = this.#socket;
    socket.onMessage((data, binary) => this.#onMessage(data, binary));
    socket.onPong(() => {
      this.#alive = true;
    });
    socket.onError((err) => this.#options.log.debug({ err }, 'WebSocket error'));
    socket.onClose(() => {
      this.#state = 'closed';
      clearTimeout(this.#deadline);
      clearTimeout(this.#expiry);
      handler
        .closed(this.#closeCode)
        .catch((err: unknown) => this.#options.log.warn({ err }, 'connection cleanup failed'))
        .finally(this.#settle);
    });
    const { auth } = this.#options;
    if (auth.kind === 'later') this.setDeadline(auth.timeoutMs);
  }

  /** `open` until the server or the client starts closing; `closed` once gone. */
  get state(): 'open' | 'closing' | 'closed' {
    return this.#state === 'open' && this.#socket.state !== 'open' ? 'closing' : this.#state;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Who is on the connection; `undefined` until a credential sent later is accepted. */
  get caller(): Caller | undefined {
    return this.#caller;
  }

  // Authentication.

  #admit(authenticated: Authenticated): void {
    this.#caller = authenticated.caller;
    this.#recheck = authenticated.recheck;
    clearTimeout(this.#expiry);
    const expiresAt = callerExpiresAtMs(authenticated.caller);
    if (expiresAt === undefined) return;
    // setTimeout holds at most ~24.8 days; a longer credential is caught by a recheck.
    const delay = Math.min(Math.max(0, expiresAt - Date.now()), 2 ** 31 - 1);
    this.#expiry = setTimeout(() => this.close(CLOSE_CODES.UNAUTHENTICATED), delay);
    this.#expiry.unref();
  }

  /**
   * Authenticates with a credential the client sent in a frame (on a connection accepted
   * with `auth.kind: 'later'`), through the request pipeline. A refused credential (401) is
   * answered with its error and closes the connection with 4401: resolves to undefined.
   * Any other failure (a rate limit, the store) rejects, and the client may try again
   * within a new deadline.
   */
  async authenticate(credential: string, correlationId?: string): Promise<Caller | undefined> {
    const { auth } = this.#options;
    if (this.#caller !== undefined || auth.kind !== 'later') {
      throw new ApiError('BAD_REQUEST', 'The connection is already authenticated');
    }
    this.clearDeadline();
    let authenticated: Authenticated;
    try {
      authenticated = await auth.authenticate(credential);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.sendError(err, correlationId);
        this.close(CLOSE_CODES.UNAUTHENTICATED);
        return undefined;
      }
      this.setDeadline(auth.timeoutMs);
      throw err;
    }
    if (!this.isOpen) return undefined;
    this.#admit(authenticated);
    return authenticated.caller;
  }

  /**
   * Checks the credential again (it may have been revoked). Resolves false, with the
   * connection closed with 4401, when it is refused; rejects when it could not be checked.
   */
  async recheckCredential(): Promise<boolean> {
    const recheck = this.#recheck;
    if (recheck === undefined) return this.#caller !== undefined;
    try {
      await recheck();
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.close(CLOSE_CODES.UNAUTHENTICATED);
        return false;
      }
      throw err;
    }
  }

  // Keep-alives.

  /**
   * Closes the connection with 4408 unless `clearDeadline` or another `setDeadline` comes
   * within `ms`: the expected frame (a heartbeat, the first `auth`) did not arrive.
   */
  setDeadline(ms: number): void {
    clearTimeout(this.#deadline);
    if (this.#state === 'closed') return;
    this.#deadline = setTimeout(() => this.close(CLOSE_CODES.TIMEOUT), ms);
    this.#deadline.unref();
  }

  clearDeadline(): void {
    clearTimeout(this.#deadline);
  }

  /**
   * One keep-alive round (`WsConnections` calls it once per ping interval): a connection
   * that did not answer the previous ping is dropped, and the credential is checked again.
   */
  tick(): void {
    if (!this.isOpen) return;
    if (!this.#alive) {
      this.#socket.terminate();
      return;
    }
    this.#alive = false;
    this.#socket.ping();
    this.recheckCredential().catch((err: unknown) =>
      this.#options.log.debug({ err }, 'credential recheck failed; tried again at the next tick'),
    );
  }

  // Sending.

  /** Sends one message (text unless `binary`); nothing once the connection is closing. */
  send(data: Buffer | string, binary = false): void {
    if (!this.#writable()) return;
    this.#socket.send(data, binary);
    this.#checkQueue();
  }

  /** Sends a frame in the envelope; returns its size in bytes (0 when not sent). */
  sendFrame(
    type: MessageType,
    payload: { kind: string } & Record<string, unknown>,
    correlationId?: string,
  ): number {
    if (!this.#writable()) return 0;
    const frame = Buffer.from(serverFrame(this.#options.source, type, payload, correlationId));
    this.send(frame);
    return frame.length;
  }

  /** Sends a message encoded once for many connections (a broadcast). */
  sendShared(frame: SharedFrame): void {
    if (!this.#writable()) return;
    this.#socket.sendShared(frame);
    this.#checkQueue();
  }

  /**
   * Answers with an `error` frame: a RESPONSE to the frame `correlationId` names, or an
   * EVENT when the frame could not be read that far.
   */
  sendError(error: ApiError, correlationId: string | undefined): void {
    this.#options.onErrorFrame?.(error);
    this.sendFrame(
      correlationId === undefined ? 'EVENT' : 'RESPONSE',
      {
        kind: 'error',
        code: error.code,
        message: error.message,
        ...(error.details ? { details: error.details } : {}),
      },
      correlationId,
    );
  }

  /**
   * Answers an invalid frame with its error and counts it: more than 20 within a minute
   * close the connection with 4400.
   */
  invalid(error: ApiError, correlationId: string | undefined): void {
    this.sendError(error, correlationId);
    const now = Date.now();
    this.#invalidAt.push(now);
    while ((this.#invalidAt[0] ?? now) < now - INVALID_WINDOW_MS) this.#invalidAt.shift();
    if (this.#invalidAt.length > MAX_INVALID_FRAMES) this.close(CLOSE_CODES.PROTOCOL_VIOLATION);
  }

  #writable(): boolean {
    return this.#state === 'open' && this.#socket.state === 'open';
  }

  #checkQueue(): void {
    const max = this.#options.maxQueueBytes;
    if (max !== undefined && this.#socket.bufferedAmount > max) {
      this.close(CLOSE_CODES.SLOW_CONSUMER);
    }
  }

  // Receiving.

  #onMessage(data: Buffer, binary: boolean): void {
    const handler = this.#handler;
    if (!this.isOpen || handler === undefined) return;
    if (data.length > this.#options.maxFrameBytes) {
      this.close(CLOSE_CODES.MESSAGE_TOO_BIG);
      return;
    }
    if (binary && this.#options.binaryFrames !== 'accept') {
      const message = 'must be a text frame holding JSON';
      this.invalid(
        new ApiError('VALIDATION_FAILED', `frame: ${message}`, {
          details: { fields: [{ field: 'frame', message }] },
        }),
        undefined,
      );
      return;
    }
    let frame: F;
    try {
      frame = handler.parse(data, binary);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const correlationId = (err as { correlationId?: string }).correlationId;
      this.invalid(err, correlationId);
      return;
    }
    handler.receive(frame);
  }

  /** A frame waits to be handled: reading stops once `inbound.pauseAt` of them wait. */
  inboundQueued(): void {
    this.#pending += 1;
    if (!this.#paused && this.#pending >= this.#options.inbound.pauseAt && this.isOpen) {
      this.#paused = true;
      this.#socket.pauseReading();
      this.#handler?.readingPaused?.();
    }
  }

  /** `count` waiting frames were taken up: reading resumes at `inbound.resumeAt`. */
  inboundHandled(count = 1): void {
    this.#pending -= count;
    if (this.#paused && this.#pending <= this.#options.inbound.resumeAt) {
      this.#paused = false;
      this.#socket.resumeReading();
      this.#handler?.readingResumed?.();
    }
  }

  // Closing.

  /**
   * Closes the connection with `code`, once. The close frame waits behind what is queued:
   * a client that does not read is dropped after a grace period, one still draining its
   * queue (however slowly) gets another, so that a slow but live client learns why.
   */
  close(code: CloseCode): void {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    this.#closeCode = code;
    this.#options.onServerClose?.(code);
    this.#socket.close(code.code, code.reason.slice(0, 120));
    this.#awaitCloseFrame(this.#socket.bufferedAmount);
  }

  #awaitCloseFrame(queued: number): void {
    setTimeout(() => {
      if (this.#socket.state === 'closed') return;
      const now = this.#socket.bufferedAmount;
      if (now > 0 && now < queued) this.#awaitCloseFrame(now);
      else this.#socket.terminate();
    }, CLOSE_GRACE_MS).unref();
  }

  /** Closes and resolves once the protocol has cleaned up (a peer that does not answer is dropped). */
  async closeAndSettle(code: CloseCode): Promise<void> {
    this.close(code);
    const timer = setTimeout(() => this.#socket.terminate(), SETTLE_MS);
    await this.#settled;
    clearTimeout(timer);
  }
}

/** Keep-alive rounds are spread over the interval in this many slices. */
const PING_SLICES = 30;

export interface WsConnectionsOptions {
  /** Each connection is pinged and its credential rechecked once per this interval; undefined: never. */
  pingIntervalMs?: number | undefined;
  /** The number of open connections changed (for a gauge). */
  onCount?(count: number): void;
}

/**
 * The connections of one protocol on this node (the listener side of the core): takes new
 * sockets, runs keep-alive rounds spread over the ping interval, so that 10,000
 * connections do not all need the event loop in the same turn, and closes them all with
 * 1001 at shutdown. Its memory is a connection registry, nothing more.
 */
export class WsConnections<F = unknown> {
  readonly #options: WsConnectionsOptions;
  readonly #slices: Set<WsConnection<F>>[] = Array.from({ length: PING_SLICES }, () => new Set());
  #nextSlice = 0;
  #size = 0;
  #timer: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(options: WsConnectionsOptions) {
    this.#options = options;
    this.#options.onCount?.(0);
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Takes a socket: builds its connection and protocol handler. A node that is shutting down
   * closes it at once with 1001 instead, and returns undefined.
   */
  open(
    socket: WireSocket,
    options: ConnectionOptions,
    handlerFor: (connection: WsConnection<F>) => ConnectionHandler<F>,
  ): WsConnection<F> | undefined {
    if (this.#closing) {
      socket.close(CLOSE_CODES.GOING_AWAY.code, 'server shutting down');
      return undefined;
    }
    const connection = new WsConnection<F>(socket, options);
    const slice = this.#slices[this.#nextSlice] as Set<WsConnection<F>>;
    this.#nextSlice = (this.#nextSlice + 1) % PING_SLICES;
    slice.add(connection);
    this.#size += 1;
    this.#options.onCount?.(this.#size);
    socket.onClose(() => {
      slice.delete(connection);
      this.#size -= 1;
      this.#options.onCount?.(this.#size);
    });
    connection.listen(handlerFor(connection));
    return connection;
  }

  /** Starts the keep-alive rounds, if there is a ping interval. */
  start(): void {
    const interval = this.#options.pingIntervalMs;
    if (interval === undefined || this.#timer !== undefined) return;
    let slice = 0;
    this.#timer = setInterval(() => {
      slice = (slice + 1) % PING_SLICES;
      for (const connection of this.#slices[slice] ?? []) connection.tick();
    }, interval / PING_SLICES);
    this.#timer.unref();
  }

  /** Refuses new sockets, closes every connection with 1001 and resolves once all settled. */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    const all = this.#slices.flatMap((slice) => [...slice]);
    await Promise.all(all.map((c) => c.closeAndSettle(CLOSE_CODES.GOING_AWAY)));
  }
}
