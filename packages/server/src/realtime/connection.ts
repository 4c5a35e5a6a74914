import type { RealtimeServerFrameKind, RealtimeServerFramePayload } from '@orchestra/protocol';
import type { MessageType } from '../platform/envelope.ts';
import { ApiError, CLOSE_CODES } from '../platform/errors.ts';
import { ByteCharge } from '../platform/rate-limit.ts';
import type { CloseCode, ConnectionHandler, WsConnection } from '../platform/ws-connection.ts';
import type { SharedFrame } from '../platform/ws-socket.ts';
import {
  assertCanPublish,
  assertCanRead,
  assertCanReadPattern,
  identityOfCaller,
  type RealtimeIdentity,
} from './access.ts';
import type { PatternSubscription, RealtimeHub } from './hub.ts';
import { TopicSubscription } from './hub.ts';
import { parseRealtimeFrame, type RealtimeFrame } from './protocol.ts';
import type { Member } from './topic-service.ts';
import { isPattern, parsePattern } from './topics.ts';

/** Inbound frames waiting to be handled before the socket stops reading, and again reading. */
export const REALTIME_INBOUND = { pauseAt: 256, resumeAt: 64 };

type FrameOf<K extends RealtimeFrame['payload']['kind']> = Extract<
  RealtimeFrame,
  { payload: { kind: K } }
>;

/**
 * One client's connection on `/v1/realtime`: its frames, subscriptions and presence. The
 * connection core below it owns authentication, frame limits, the send queue, pings and
 * closing.
 */
export class RealtimeConnection implements ConnectionHandler<RealtimeFrame> {
  readonly #hub: RealtimeHub;
  readonly #connection: WsConnection<RealtimeFrame>;
  #identity: RealtimeIdentity | undefined;
  #byteCharge: ByteCharge | undefined;
  readonly #topics = new Map<string, TopicSubscription>();
  readonly #patterns = new Map<string, PatternSubscription>();
  readonly #streams = new Set<string>();
  #chain: Promise<void> = Promise.resolve();

  constructor(hub: RealtimeHub, connection: WsConnection<RealtimeFrame>) {
    this.#hub = hub;
    this.#connection = connection;
    const caller = connection.caller;
    this.#identity = caller === undefined ? undefined : identityOfCaller(caller);
  }

  get id(): string {
    return this.#connection.id;
  }

  get #closed(): boolean {
    return !this.#connection.isOpen;
  }

  subscribedToStream(stream: string): boolean {
    return this.#streams.has(stream);
  }

  // Sending.

  /** Sends one frame; returns its size in bytes. */
  /** Sends a frame of the realtime protocol; its payload is the wire contract's for its kind. */
  send<K extends RealtimeServerFrameKind>(
    type: MessageType,
    payload: RealtimeServerFramePayload<K>,
    correlationId?: string,
  ): number {
    return this.#connection.sendFrame(type, payload, correlationId);
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
    this.#connection.sendShared(frame);
  }

  #sendError(error: ApiError, correlationId: string | undefined): void {
    this.#connection.sendError(error, correlationId);
  }

  close(code: CloseCode): void {
    this.#connection.close(code);
  }

  // Receiving.

  parse(data: Buffer): RealtimeFrame {
    return parseRealtimeFrame(data.toString('utf8'));
  }

  /** Handles frames one at a time, in the order received. */
  receive(frame: RealtimeFrame): void {
    this.#connection.inboundQueued();
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
        this.#connection.inboundHandled();
      }
    });
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
      this.#hub.metrics?.rateLimited.inc({ scope: 'credential' });
      throw new ApiError(
        'RATE_LIMITED',
        `Too many requests; retry in ${decision.retryAfterSeconds} s`,
        { details: { retry_after_seconds: decision.retryAfterSeconds } },
      );
    }
  }

  /** A credential in a frame: checked by the request pipeline, as in the upgrade request. */
  async #auth(frame: FrameOf<'auth'>): Promise<void> {
    const caller = await this.#connection.authenticate(frame.payload.token, frame.header.id);
    if (caller === undefined) return;
    const identity = identityOfCaller(caller);
    this.#identity = identity;
    this.send('RESPONSE', { kind: 'authenticated', ...this.#describe(identity) }, frame.header.id);
  }

  /** What `authenticated` says about the connection's caller. */
  #describe(identity: RealtimeIdentity): Omit<RealtimeServerFramePayload<'authenticated'>, 'kind'> {
    return {
      tenant_id: identity.tenantId,
      role: identity.role,
      client_id: identity.clientId,
      connection_id: this.#connection.id,
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

  /** The socket is gone: its subscriptions and presence end. */
  async closed(): Promise<void> {
    await this.#chain.catch(() => {});
    for (const name of [...this.#topics.keys(), ...this.#patterns.keys()]) {
      await this.#unsubscribe(name);
    }
  }
}
