import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus } from '../bus/bus.ts';
import {
  type StreamAppend,
  type StreamEvent,
  streamSubject,
  tenantStreamsSubject,
} from '../events/index.ts';
import { CLOSE_CODES } from '../platform/errors.ts';
import type { Authenticated } from '../platform/http.ts';
import type { Metrics } from '../platform/metrics.ts';
import { InMemoryRateLimiter, type RateLimiter } from '../platform/rate-limit.ts';
import { connectionAuth, WsConnections } from '../platform/ws-connection.ts';
import type { SharedFrame, WireSocket } from '../platform/ws-socket.ts';
import { REALTIME_INBOUND, RealtimeConnection } from './connection.ts';
import type { RealtimeFrame } from './protocol.ts';
import {
  type Member,
  type PresenceChange,
  presenceSubject,
  TOPIC_DELETED_SUBJECT,
  type TopicDeleted,
  type TopicMessage,
  type TopicService,
} from './topic-service.ts';
import {
  matches,
  type Topic,
  type TopicPattern,
  tenantWideTopicOf,
  topicStream,
} from './topics.ts';

export interface HubSettings {
  maxFrameBytes: number;
  maxSubscriptions: number;
  maxQueueBytes: number;
  /** About the most message data one `history` answer carries (ORCHESTRA_RESPONSE_MAX_BYTES). */
  historyMaxBytes: number;
  compression: boolean;
  /** Each connection is pinged and its credential rechecked once per this interval. */
  pingIntervalMs: number;
  /**
   * Sustained `subscribe` frames per second per connection (0: no limit); a connection
   * may subscribe `maxSubscriptions` at once, as a reconnecting client does.
   */
  subscribesPerSecond: number;
  /**
   * Bytes read from the store for a connection (history, catch-up) that cost its
   * credential one rate-limit token (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN); 0: not charged.
   */
  bytesPerToken: number;
  instanceId: string;
}

/** A connection that did not authenticate in the upgrade must send `auth` within this. */
const AUTH_TIMEOUT_MS = 10_000;
const READ_PAGE = 500;

/** A connection's subscription to one topic by name: gap-free, in offset order. */
export class TopicSubscription {
  readonly state: TopicState;
  readonly connection: RealtimeConnection;
  readonly member: Member | undefined;
  /** The newest offset sent to the client. */
  delivered = 0;
  /** Reading missed messages from the store; live ones are left to that read meanwhile. */
  catchingUp = true;
  closed = false;

  constructor(state: TopicState, connection: RealtimeConnection, member: Member | undefined) {
    this.state = state;
    this.connection = connection;
    this.member = member;
  }

  offer(offset: number, frame: () => SharedFrame): void {
    if (this.catchingUp || offset <= this.delivered) return;
    if (offset === this.delivered + 1) {
      this.delivered = offset;
      this.connection.sendShared(frame());
      return;
    }
    // A message is missing (out-of-order commits, a lost bus message): the store has it.
    void this.catchUp();
  }

  /** Sends what the store holds after `delivered`, until the subscription is live again. */
  async catchUp(): Promise<void> {
    this.catchingUp = true;
    const hub = this.state.hub;
    while (!this.closed) {
      let page: Awaited<ReturnType<TopicService['read']>>;
      try {
        page = await hub.topics.read(
          this.state.tenantId,
          this.state.topic,
          this.delivered,
          READ_PAGE,
          hub.settings.historyMaxBytes,
        );
      } catch (err) {
        hub.log.warn(
          { err, topic: this.state.topic.name },
          'realtime catch-up read failed; retrying',
        );
        await new Promise((resolve) => setTimeout(resolve, 1000).unref());
        continue;
      }
      if (this.closed) return;
      if (page === undefined) return; // the topic was deleted; its own notice ends this
      if (page.gap) {
        // The client fell so far behind that the history no longer covers it.
        this.connection.close(CLOSE_CODES.SLOW_CONSUMER);
        return;
      }
      for (const message of page.messages) {
        if (message.offset <= this.delivered) continue;
        this.delivered = message.offset;
        const frame = hub.frameOf(message);
        this.connection.sendShared(frame);
        this.connection.chargeRead(frame.text.length);
      }
      this.state.maxSeen = Math.max(this.state.maxSeen, page.lastOffset);
      if (page.messages.length < READ_PAGE || this.delivered >= this.state.maxSeen) {
        if (this.delivered >= this.state.maxSeen || page.messages.length === 0) {
          this.catchingUp = false;
          return;
        }
      }
    }
  }
}

/** The subscribers of one topic on this node, fed by one bus subscription. */
export class TopicState {
  readonly hub: RealtimeHub;
  readonly tenantId: string;
  readonly topic: Topic;
  readonly stream: string;
  readonly subscriptions = new Set<TopicSubscription>();
  /** The highest offset known to exist. */
  maxSeen = 0;
  #members = 0;
  readonly #unsubscribe: () => void;
  #unsubscribePresence: (() => void) | undefined;

  constructor(hub: RealtimeHub, tenantId: string, topic: Topic) {
    this.hub = hub;
    this.tenantId = tenantId;
    this.topic = topic;
    this.stream = topicStream(tenantId, topic);
    this.#unsubscribe = hub.bus.subscribe(streamSubject(this.stream), (message) =>
      this.#onAppend(message as StreamAppend),
    );
  }

  #onAppend(append: StreamAppend): void {
    for (const event of append.events) {
      if (event.offset > this.maxSeen) this.maxSeen = event.offset;
      let frame: SharedFrame | undefined;
      const get = () => {
        frame ??= this.hub.frameOfEvent(this.topic.name, event);
        return frame;
      };
      for (const subscription of this.subscriptions) subscription.offer(event.offset, get);
    }
  }

  addMember(): void {
    if (this.#members++ === 0) {
      this.#unsubscribePresence = this.hub.bus.subscribe(
        presenceSubject(this.tenantId, this.topic.name),
        (message) => this.#onPresence(message as PresenceChange),
      );
    }
  }

  removeMember(): void {
    if (--this.#members === 0) {
      this.#unsubscribePresence?.();
      this.#unsubscribePresence = undefined;
    }
  }

  #onPresence(change: PresenceChange): void {
    for (const subscription of this.subscriptions) {
      if (subscription.member === undefined) continue;
      if (subscription.member.connection_id === change.member.connection_id) continue;
      subscription.connection.send('EVENT', {
        kind: change.type === 'join' ? 'presence.join' : 'presence.leave',
        topic: this.topic.name,
        member: change.member,
      });
    }
  }

  dispose(): void {
    this.#unsubscribe();
    this.#unsubscribePresence?.();
  }
}

/** A connection's subscription to a pattern: live messages of every matching topic. */
export interface PatternSubscription {
  connection: RealtimeConnection;
  pattern: TopicPattern;
}

/**
 * The realtime gateway on this node: its connections, who is subscribed to what, and the
 * fan-out of every appended event to the local subscribers. In-memory state is a
 * connection registry; messages and members live in the store, and the bus brings every
 * node the appends.
 */
export class RealtimeHub {
  readonly topics: TopicService;
  readonly bus: Bus;
  readonly log: Logger;
  readonly settings: HubSettings;
  readonly rateLimiter: RateLimiter | undefined;
  /** Subscribe frames, by connection id; connection state, so in this node's memory. */
  readonly subscribeLimiter: InMemoryRateLimiter | undefined;
  readonly source: string;
  readonly #states = new Map<string, TopicState>();
  readonly #patterns = new Map<
    string,
    { subscriptions: Set<PatternSubscription>; unsubscribe: () => void }
  >();
  readonly metrics: Metrics | undefined;
  readonly #sockets: WsConnections<RealtimeFrame>;
  readonly #unsubscribeDeleted: () => void;

  constructor(deps: {
    topics: TopicService;
    bus: Bus;
    log: Logger;
    settings: HubSettings;
    rateLimiter: RateLimiter | undefined;
    metrics?: Metrics | undefined;
  }) {
    this.metrics = deps.metrics;
    this.#sockets = new WsConnections({
      pingIntervalMs: deps.settings.pingIntervalMs,
      onCount: (count) => this.metrics?.realtimeConnections.set(count),
    });
    this.topics = deps.topics;
    this.bus = deps.bus;
    this.log = deps.log;
    this.settings = deps.settings;
    this.rateLimiter = deps.rateLimiter;
    this.subscribeLimiter =
      deps.settings.subscribesPerSecond > 0
        ? new InMemoryRateLimiter({
            ratePerSecond: deps.settings.subscribesPerSecond,
            burst: deps.settings.maxSubscriptions,
          })
        : undefined;
    this.source = `orchestra:${deps.settings.instanceId}`;
    this.#unsubscribeDeleted = this.bus.subscribe(TOPIC_DELETED_SUBJECT, (message) => {
      const { tenantId, name } = message as TopicDeleted;
      const state = this.#states.get(topicStream(tenantId, { kind: 'user', name }));
      for (const subscription of [...(state?.subscriptions ?? [])]) {
        subscription.connection.endSubscription(name, 'topic_deleted');
      }
    });
  }

  start(): void {
    this.#sockets.start();
  }

  /**
   * Takes a new WebSocket: authenticated in the upgrade request, or with the pipeline's
   * `authenticateLater` for the credential that an `auth` frame brings.
   */
  accept(
    socket: WireSocket,
    auth: Authenticated | ((credential: string) => Promise<Authenticated>),
  ): void {
    this.#sockets.open(
      socket,
      {
        auth: connectionAuth(auth, AUTH_TIMEOUT_MS),
        maxFrameBytes: this.settings.maxFrameBytes,
        maxQueueBytes: this.settings.maxQueueBytes,
        inbound: REALTIME_INBOUND,
        source: this.source,
        log: this.log,
        onServerClose: (code) => this.metrics?.realtimeCloses.inc({ code: String(code.code) }),
      },
      (connection) => new RealtimeConnection(this, connection),
    );
  }

  get connectionCount(): number {
    return this.#sockets.size;
  }

  stateFor(tenantId: string, topic: Topic): TopicState {
    const stream = topicStream(tenantId, topic);
    let state = this.#states.get(stream);
    if (state === undefined) {
      state = new TopicState(this, tenantId, topic);
      this.#states.set(stream, state);
    }
    return state;
  }

  releaseState(state: TopicState): void {
    if (state.subscriptions.size > 0 || this.#states.get(state.stream) !== state) return;
    this.#states.delete(state.stream);
    state.dispose();
  }

  addPattern(tenantId: string, subscription: PatternSubscription): void {
    let entry = this.#patterns.get(tenantId);
    if (entry === undefined) {
      const subscriptions = new Set<PatternSubscription>();
      entry = {
        subscriptions,
        unsubscribe: this.bus.subscribe(tenantStreamsSubject(tenantId), (message) =>
          this.#onTenantAppend(tenantId, subscriptions, message as StreamAppend),
        ),
      };
      this.#patterns.set(tenantId, entry);
    }
    entry.subscriptions.add(subscription);
  }

  removePattern(tenantId: string, subscription: PatternSubscription): void {
    const entry = this.#patterns.get(tenantId);
    if (entry === undefined) return;
    entry.subscriptions.delete(subscription);
    if (entry.subscriptions.size === 0) {
      entry.unsubscribe();
      this.#patterns.delete(tenantId);
    }
  }

  #onTenantAppend(
    tenantId: string,
    subscriptions: Set<PatternSubscription>,
    append: StreamAppend,
  ): void {
    const name = topicNameOfStream(append.stream, tenantId);
    if (name === undefined) return;
    const frames = new Map<StreamEvent, SharedFrame>();
    for (const subscription of subscriptions) {
      if (!matches(subscription.pattern, name)) continue;
      // A connection subscribed to the topic by name gets it from there, once.
      if (subscription.connection.subscribedToStream(append.stream)) continue;
      for (const event of append.events) {
        let frame = frames.get(event);
        if (frame === undefined) {
          frame = this.frameOfEvent(name, event);
          frames.set(event, frame);
        }
        subscription.connection.sendShared(frame);
      }
    }
  }

  frameOfEvent(topic: string, event: StreamEvent): SharedFrame {
    return this.frameOf({
      topic,
      offset: event.offset,
      event: event.type,
      data: event.data,
      time: event.time,
    });
  }

  frameOf(message: TopicMessage): SharedFrame {
    const frame = {
      header: {
        id: randomUUID(),
        type: 'EVENT',
        timestamp: new Date().toISOString(),
        source: this.source,
        version: 1,
      },
      payload: { kind: 'message', ...message, data: message.data ?? null },
    };
    return { text: Buffer.from(JSON.stringify(frame)) };
  }

  /** Closes every connection with 1001 and stops. */
  async close(): Promise<void> {
    this.subscribeLimiter?.close();
    this.#unsubscribeDeleted();
    await this.#sockets.close();
  }
}

/** The topic name of an event-log stream of `tenantId`, or undefined for other streams. */
function topicNameOfStream(stream: string, tenantId: string): string | undefined {
  if (stream.startsWith('task:')) return `tasks.${stream.slice(5)}`;
  if (stream.startsWith('session:')) return `sessions.${stream.slice(8)}`;
  const tenantWide = tenantWideTopicOf(stream, tenantId);
  if (tenantWide !== undefined) return tenantWide;
  if (stream.startsWith(`config:${tenantId}:`))
    return `config.${stream.slice(`config:${tenantId}:`.length)}`;
  if (stream.startsWith(`services:${tenantId}:`))
    return `services.${stream.slice(`services:${tenantId}:`.length)}`;
  const prefix = `topic:${tenantId}:`;
  if (stream.startsWith(prefix)) return stream.slice(prefix.length);
  return undefined;
}
