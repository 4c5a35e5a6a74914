import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { markAuthenticated } from '../platform/connection-guard.ts';
import { FrameError, type MessageType, serverFrame } from '../platform/envelope.ts';
import { ApiError, CLOSE_CODES } from '../platform/errors.ts';
import { ByteCharge } from '../platform/rate-limit.ts';
import {
  assertCanPublish,
  assertCanRead,
  assertCanReadPattern,
  type RealtimeIdentity,
} from './access.ts';
import type { PatternSubscription, RealtimeHub, SharedFrame } from './hub.ts';
import { TopicSubscription } from './hub.ts';
import { parseRealtimeFrame, type RealtimeFrame } from './protocol.ts';
import type { Member } from './topic-service.ts';
import { isPattern, parsePattern } from './topics.ts';

const AUTH_TIMEOUT_MS = 10_000;
const MAX_INVALID_FRAMES = 20;
const INVALID_WINDOW_MS = 60_000;
/** Inbound frames waiting to be handled before the socket stops reading. */
const PAUSE_AT = 256;
const RESUME_AT = 64;
/** A connection cut for being slow gets this long to take its close frame. */
const CUT_GRACE_MS = 5_000;

type CloseCode = (typeof CLOSE_CODES)[keyof typeof CLOSE_CODES];
type FrameOf<K extends RealtimeFrame['payload']['kind']> = Extract<
  RealtimeFrame,
  { payload: { kind: K } }
>;

/** Resolves the credential sent in an `auth` frame (an API key, JWT or realtime token). */
export type AuthenticateToken = (
  token: string,
) => Promise<{ identity: RealtimeIdentity; recheck: (() => Promise<void>) | undefined }>;

/** One client's WebSocket on `/v1/realtime`: its frames, subscriptions and send queue. */
export class RealtimeConnection {
  readonly id = randomUUID();
  /** When, within the hub's ping interval, this connection is pinged and rechecked. */
  readonly pingSlice: number;
  readonly #hub: RealtimeHub;
  readonly #socket: WebSocket;
  readonly #tcp: Socket | undefined;
  readonly #deflate: boolean;
  #identity: RealtimeIdentity | undefined;
  #recheck: (() => Promise<void>) | undefined;
  #byteCharge: ByteCharge | undefined;
  readonly #topics = new Map<string, TopicSubscription>();
  readonly #patterns = new Map<string, PatternSubscription>();
  readonly #streams = new Set<string>();
  readonly #invalidAt: number[] = [];
  #chain: Promise<void> = Promise.resolve();
  #pending = 0;
  #paused = false;
  #closed = false;
  #alive = true;
  #timer: NodeJS.Timeout | undefined;
  #settled: Promise<void>;

  constructor(
    hub: RealtimeHub,
    socket: WebSocket,
    identity: RealtimeIdentity | undefined,
    recheck: (() => Promise<void>) | undefined,
  ) {
    this.#hub = hub;
    this.pingSlice = hub.nextPingSlice();
    this.#socket = socket;
    this.#tcp = (socket as unknown as { _socket?: Socket })._socket;
    this.#deflate = socket.extensions.includes('permessage-deflate');
    this.#identity = identity;
    this.#recheck = recheck;
    let settle: () => void = () => {};
    this.#settled = new Promise((resolve) => {
      settle = resolve;
    });
    socket.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    socket.on('pong', () => {
      this.#alive = true;
    });
    socket.on('error', (err) => hub.log.debug({ err }, 'realtime socket error'));
    socket.once('close', () => {
      this.#closed = true;
      clearTimeout(this.#timer);
      this.#cleanup().finally(settle);
    });
    if (identity === undefined) {
      this.#timer = setTimeout(() => this.close(CLOSE_CODES.TIMEOUT), AUTH_TIMEOUT_MS);
    } else {
      this.#armExpiry();
    }
  }

  /** Called by the hub once per ping interval, in this connection's slice: liveness ping and a check that the credential still holds. */
  tick(): void {
    if (this.#closed) return;
    if (!this.#alive) {
      this.#socket.terminate();
      return;
    }
    this.#alive = false;
    this.#socket.ping();
    this.#recheck?.().catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 401) this.close(CLOSE_CODES.UNAUTHENTICATED);
    });
  }

  subscribedToStream(stream: string): boolean {
    return this.#streams.has(stream);
  }

  // Sending.

  /** Sends one frame; returns its size in bytes. */
  send(
    type: MessageType,
    payload: { kind: string } & Record<string, unknown>,
    correlationId?: string,
  ): number {
    const frame = Buffer.from(serverFrame(this.#hub.source, type, payload, correlationId));
    this.#write(frame);
    return frame.length;
  }

  /**
   * Charges the credential for bytes read from the store for it (history answers, the
   * catch-up of a subscription), summed over the connection's life. Never refused, so that
   * a catch-up is never cut: the debt makes the credential's next requests and `publish`
   * or `history` frames wait instead.
   */
  chargeRead(bytes: number): void {
    const limiter = this.#hub.rateLimiter;
    const identity = this.#identity;
    const { bytesPerToken } = this.#hub.settings;
    if (limiter === undefined || identity === undefined || bytesPerToken === 0) return;
    this.#byteCharge ??= new ByteCharge(limiter, `cred:${identity.rateKey}`, bytesPerToken);
    void this.#byteCharge.add(bytes);
  }

  sendShared(frame: SharedFrame): void {
    if (this.#closed) return;
    const deflated = this.#deflate ? this.#hub.deflated(frame) : undefined;
    if (deflated !== undefined && this.#tcp !== undefined) {
      // Compressed once for every subscriber: written as a whole frame. ws itself never
      // compresses on this connection, so nothing of its own can be queued ahead of it.
      this.#hub.cork(this.#tcp);
      this.#tcp.write(deflated);
      this.#checkQueue();
      return;
    }
    this.#write(frame.text);
  }

  #write(data: Buffer): void {
    if (this.#closed || this.#socket.readyState !== this.#socket.OPEN) return;
    if (this.#tcp !== undefined) this.#hub.cork(this.#tcp);
    this.#socket.send(data, { binary: false, compress: false });
    this.#checkQueue();
  }

  #checkQueue(): void {
    if (this.#socket.bufferedAmount > this.#hub.settings.maxQueueBytes) {
      this.close(CLOSE_CODES.SLOW_CONSUMER);
    }
  }

  #sendError(error: ApiError, correlationId: string | undefined): void {
    this.send(
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

  close(code: CloseCode): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#hub.metrics?.realtimeCloses.inc({ code: String(code.code) });
    this.#socket.close(code.code, code.reason.slice(0, 120));
    this.#awaitCloseFrame(this.#socket.bufferedAmount);
  }

  /**
   * A client that does not read will not answer the close either, so it is terminated
   * after a grace period; one still draining its queue (however slowly) gets another,
   * so a slow but live client learns why it was cut.
   */
  #awaitCloseFrame(queued: number): void {
    setTimeout(() => {
      if (this.#socket.readyState === this.#socket.CLOSED) return;
      const now = this.#socket.bufferedAmount;
      if (now > 0 && now < queued) this.#awaitCloseFrame(now);
      else this.#socket.terminate();
    }, CUT_GRACE_MS).unref();
  }

  async closeAndSettle(code: CloseCode): Promise<void> {
    this.close(code);
    const timer = setTimeout(() => this.#socket.terminate(), 1_000);
    await this.#settled;
    clearTimeout(timer);
  }

  #armExpiry(): void {
    const identity = this.#identity;
    const expiresAt =
      identity?.grant !== undefined
        ? identity.grant.expiresAt * 1000
        : identity?.principal?.expiresAt
          ? Date.parse(identity.principal.expiresAt)
          : undefined;
    if (expiresAt === undefined) return;
    clearTimeout(this.#timer);
    // setTimeout holds at most ~24.8 days; a longer credential is rechecked by tick().
    const delay = Math.min(Math.max(0, expiresAt - Date.now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => this.close(CLOSE_CODES.UNAUTHENTICATED), delay);
    this.#timer.unref();
  }

  // Receiving.

  #onMessage(data: unknown, isBinary: boolean): void {
    if (this.#closed) return;
    const bytes = Array.isArray(data)
      ? Buffer.concat(data as Buffer[])
      : Buffer.isBuffer(data)
        ? data
        : Buffer.from(data as ArrayBuffer);
    if (bytes.length > this.#hub.settings.maxFrameBytes) {
      this.close(CLOSE_CODES.MESSAGE_TOO_BIG);
      return;
    }
    if (isBinary) {
      const message = 'must be a text frame holding JSON';
      this.#invalid(
        new ApiError('VALIDATION_FAILED', `frame: ${message}`, {
          details: { fields: [{ field: 'frame', message }] },
        }),
        undefined,
      );
      return;
    }
    let frame: RealtimeFrame;
    try {
      frame = parseRealtimeFrame(bytes.toString('utf8'));
    } catch (err) {
      if (err instanceof FrameError) this.#invalid(err, err.correlationId);
      else throw err;
      return;
    }
    this.#pending++;
    if (this.#pending >= PAUSE_AT && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
    this.#chain = this.#chain.then(async () => {
      try {
        if (!this.#closed) await this.#handle(frame);
      } catch (err) {
        let apiError: ApiError;
        if (err instanceof ApiError) apiError = err;
        else {
          this.#hub.log.error({ err }, 'realtime frame failed');
          apiError = new ApiError('INTERNAL_ERROR');
        }
        if (!this.#closed) this.#sendError(apiError, frame.header.id);
      } finally {
        this.#pending--;
        if (this.#paused && this.#pending <= RESUME_AT) {
          this.#paused = false;
          this.#socket.resume();
        }
      }
    });
  }

  #invalid(error: ApiError, correlationId: string | undefined): void {
    this.#sendError(error, correlationId);
    const now = Date.now();
    this.#invalidAt.push(now);
    while ((this.#invalidAt[0] ?? now) < now - INVALID_WINDOW_MS) this.#invalidAt.shift();
    if (this.#invalidAt.length > MAX_INVALID_FRAMES) this.close(CLOSE_CODES.PROTOCOL_VIOLATION);
  }

  async #handle(frame: RealtimeFrame): Promise<void> {
    const id = frame.header.id;
    if (frame.payload.kind === 'auth') {
      await this.#auth(frame as FrameOf<'auth'>);
      return;
    }
    const identity = this.#identity;
    if (identity === undefined) {
      this.#sendError(
        new ApiError('UNAUTHENTICATED', 'Send an auth frame with a credential first'),
        id,
      );
      this.close(CLOSE_CODES.UNAUTHENTICATED);
      return;
    }
    const { payload } = frame;
    switch (payload.kind) {
      case 'subscribe':
        await this.#subscribe(identity, frame as FrameOf<'subscribe'>);
        return;
      case 'unsubscribe': {
        const ended = await this.#unsubscribe(payload.topic);
        if (!ended) throw new ApiError('NOT_SUBSCRIBED', `Not subscribed to ${payload.topic}`);
        this.send('RESPONSE', { kind: 'unsubscribed', topic: payload.topic }, id);
        return;
      }
      case 'publish': {
        const topic = this.#hub.topics.parse(payload.topic, 'payload.topic');
        assertCanPublish(identity, topic);
        await this.#limit(identity);
        const { message, epoch } = await this.#hub.topics.publish(
          identity.tenantId,
          topic,
          payload.event ?? 'message',
          payload.data,
        );
        if (payload.ack === true) {
          this.send(
            'RESPONSE',
            { kind: 'published', topic: topic.name, epoch, offset: message.offset },
            id,
          );
        }
        return;
      }
      case 'history': {
        const topic = this.#hub.topics.parse(payload.topic, 'payload.topic');
        assertCanRead(identity, topic);
        // A read from the store, like GET /v1/topics/{topic}/messages: it takes a token and
        // is charged for its bytes, from the same bucket.
        await this.#limit(identity);
        const history = await this.#hub.topics.history(identity.tenantId, topic, {
          ...payload,
          maxBytes: this.#hub.settings.historyMaxBytes,
        });
        this.chargeRead(this.send('RESPONSE', { kind: 'history', ...history }, id));
        return;
      }
      case 'presence': {
        const topic = this.#hub.topics.parse(payload.topic, 'payload.topic');
        assertCanRead(identity, topic);
        if (topic.kind !== 'user')
          await this.#hub.topics.describe(identity.tenantId, topic, { missing: 'not_found' });
        const members = await this.#hub.topics.members(identity.tenantId, topic.name);
        this.send('RESPONSE', { kind: 'presence', topic: topic.name, members }, id);
        return;
      }
      case 'ping':
        this.send('RESPONSE', { kind: 'pong' }, id);
        return;
    }
  }

  async #limit(identity: RealtimeIdentity): Promise<void> {
    const limiter = this.#hub.rateLimiter;
    if (limiter === undefined) return;
    const decision = await limiter.consume(`cred:${identity.rateKey}`);
    if (!decision.allowed) {
      throw new ApiError(
        'RATE_LIMITED',
        `Too many requests; retry in ${decision.retryAfterSeconds} s`,
        { details: { retry_after_seconds: decision.retryAfterSeconds } },
      );
    }
  }

  async #auth(frame: FrameOf<'auth'>): Promise<void> {
    if (this.#identity !== undefined) {
      throw new ApiError('BAD_REQUEST', 'The connection is already authenticated');
    }
    clearTimeout(this.#timer);
    try {
      const { identity, recheck } = await this.#hub.authenticateToken(frame.payload.token);
      this.#identity = identity;
      this.#recheck = recheck;
      markAuthenticated(this.#tcp);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.#sendError(err, frame.header.id);
        this.close(CLOSE_CODES.UNAUTHENTICATED);
        return;
      }
      this.#timer = setTimeout(() => this.close(CLOSE_CODES.TIMEOUT), AUTH_TIMEOUT_MS);
      throw err;
    }
    this.#armExpiry();
    this.send('RESPONSE', { kind: 'authenticated', ...this.describe() }, frame.header.id);
  }

  /** What `authenticated` says; also sent for header-authenticated connections on request. */
  describe(): Record<string, unknown> {
    const identity = this.#identity;
    return {
      tenant_id: identity?.tenantId,
      role: identity?.role,
      client_id: identity?.clientId,
      connection_id: this.id,
      limits: {
        max_frame_bytes: this.#hub.settings.maxFrameBytes,
        max_subscriptions: this.#hub.settings.maxSubscriptions,
        max_queue_bytes: this.#hub.settings.maxQueueBytes,
      },
    };
  }

  async #subscribe(identity: RealtimeIdentity, frame: FrameOf<'subscribe'>): Promise<void> {
    const { payload } = frame;
    const id = frame.header.id;
    const name = payload.topic;
    const allowed = this.#hub.subscribeLimiter?.consume(this.id);
    if (allowed !== undefined && !allowed.allowed) {
      const { subscribesPerSecond } = this.#hub.settings;
      throw new ApiError(
        'RATE_LIMITED',
        `More than ${subscribesPerSecond} subscribe frames per second on this connection (ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND); retry in ${allowed.retryAfterSeconds} s`,
        {
          details: {
            retry_after_seconds: allowed.retryAfterSeconds,
            limit: 'ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND',
            value: subscribesPerSecond,
          },
        },
      );
    }
    if (this.#topics.has(name) || this.#patterns.has(name)) {
      throw new ApiError('ALREADY_SUBSCRIBED', `Already subscribed to ${name}`);
    }
    if (this.#topics.size + this.#patterns.size >= this.#hub.settings.maxSubscriptions) {
      throw new ApiError(
        'SUBSCRIPTION_LIMIT_REACHED',
        `A connection may hold ${this.#hub.settings.maxSubscriptions} subscriptions`,
      );
    }
    if (isPattern(name)) {
      const pattern = parsePattern(name, 'payload.topic');
      for (const field of ['from', 'epoch', 'presence', 'info'] as const) {
        if (payload[field] !== undefined) {
          throw new ApiError(
            'VALIDATION_FAILED',
            `payload.${field}: is only for a topic, not a pattern`,
            {
              details: {
                fields: [
                  { field: `payload.${field}`, message: 'is only for a topic, not a pattern' },
                ],
              },
            },
          );
        }
      }
      assertCanReadPattern(identity, pattern);
      const subscription: PatternSubscription = { connection: this, pattern };
      this.#patterns.set(name, subscription);
      this.#hub.addPattern(identity.tenantId, subscription);
      this.send('RESPONSE', { kind: 'subscribed', topic: name, pattern: true }, id);
      return;
    }
    const topic = this.#hub.topics.parse(name, 'payload.topic');
    assertCanRead(identity, topic);
    const topics = this.#hub.topics;
    const member: Member | undefined =
      payload.presence === true
        ? {
            connection_id: this.id,
            client_id: identity.clientId,
            info: payload.info ?? identity.grant?.info ?? {},
            joined_at: new Date().toISOString(),
          }
        : undefined;
    // Registered before reading the head, so that nothing published meanwhile is missed:
    // it is read from the store by the catch-up below.
    const state = this.#hub.stateFor(identity.tenantId, topic);
    const subscription = new TopicSubscription(state, this, member);
    state.subscriptions.add(subscription);
    this.#topics.set(name, subscription);
    this.#streams.add(state.stream);
    let described: Awaited<ReturnType<typeof topics.describe>>;
    try {
      // Subscribing stores nothing: a topic nobody published to yet is empty until then.
      described = await topics.describe(identity.tenantId, topic, { missing: 'empty' });
    } catch (err) {
      await this.#unsubscribe(name);
      throw err;
    }
    const { epoch, lastOffset } = described;
    let start = lastOffset;
    let recovered: boolean | undefined;
    if (payload.from !== undefined) {
      recovered = (!payload.epoch || payload.epoch === epoch) && payload.from <= lastOffset;
      if (recovered && payload.from < lastOffset) {
        const first = await topics.read(identity.tenantId, topic, payload.from, 1);
        recovered = first !== undefined && first.gap === undefined;
      }
      if (recovered) start = payload.from;
    }
    if (subscription.closed) return;
    if (member !== undefined) {
      state.addMember();
      await topics.join(identity.tenantId, topic.name, member);
    }
    subscription.delivered = start;
    state.maxSeen = Math.max(state.maxSeen, lastOffset);
    this.send(
      'RESPONSE',
      {
        kind: 'subscribed',
        topic: name,
        epoch,
        offset: lastOffset,
        ...(recovered !== undefined ? { recovered } : {}),
      },
      id,
    );
    if (state.maxSeen > subscription.delivered) void subscription.catchUp();
    else subscription.catchingUp = false;
  }

  /** Ends a subscription by its topic or pattern; false when there was none. */
  async #unsubscribe(name: string): Promise<boolean> {
    const identity = this.#identity;
    const pattern = this.#patterns.get(name);
    if (pattern !== undefined && identity !== undefined) {
      this.#patterns.delete(name);
      this.#hub.removePattern(identity.tenantId, pattern);
      return true;
    }
    const subscription = this.#topics.get(name);
    if (subscription === undefined || identity === undefined) return false;
    subscription.closed = true;
    this.#topics.delete(name);
    const state = subscription.state;
    this.#streams.delete(state.stream);
    state.subscriptions.delete(subscription);
    this.#hub.releaseState(state);
    if (subscription.member !== undefined) {
      state.removeMember();
      await this.#hub.topics
        .leave(identity.tenantId, state.topic.name, subscription.member)
        .catch((err: unknown) => this.#hub.log.warn({ err }, 'presence leave not recorded'));
    }
    return true;
  }

  /** Ends a subscription on the server's initiative (its topic was deleted) and says so. */
  endSubscription(name: string, reason: string): void {
    void this.#unsubscribe(name).then((ended) => {
      if (ended) this.send('EVENT', { kind: 'unsubscribed', topic: name, reason });
    });
  }

  async #cleanup(): Promise<void> {
    await this.#chain.catch(() => {});
    for (const name of [...this.#topics.keys(), ...this.#patterns.keys()]) {
      await this.#unsubscribe(name);
    }
  }
}
