import type { PresenceMember, TopicMessage as WireTopicMessage } from '@orchestra/protocol';
import type { ReconnectOptions } from './backoff.ts';
import { OrchestraError } from './errors.ts';
import {
  type ConnectionOptions,
  type ConnectionState,
  type Credential,
  type ReconnectingSocket,
  Transport,
} from './transport.ts';

/** A message of a topic, as delivered; `T` types its `data` (the wire's `unknown`). */
export type TopicMessage<T = unknown> = {
  [K in keyof WireTopicMessage]: K extends 'data' ? T : WireTopicMessage[K];
};

export type { PresenceMember };

export interface RealtimeClientOptions extends ConnectionOptions {
  /**
   * Base URL of the server, such as `http://localhost:8080` (`ws(s)://` also works).
   * Several URLs (the nodes of a cluster): the client starts with the first and moves to
   * the next whenever a connection fails or drops, recovering its subscriptions there.
   */
  url: string | string[];
  /**
   * An API key, JWT or realtime token (`ort_…`), sent in the first frame (so this works in
   * browsers too). A function is called at every (re)connect, to fetch a fresh token.
   * Required (or the deprecated `token`).
   */
  apiKey?: Credential;
  /** @deprecated Since 0.2: use `apiKey`, which takes the same values. Goes in 0.3. */
  token?: Credential;
  /** How long a request waits for its answer. Default 10 s. */
  timeoutMs?: number;
  /**
   * Reconnect backoff: from `initialDelayMs` (default 250) doubling up to `maxDelayMs`
   * (default 10,000), with full jitter. Other nodes are tried once each at once first.
   */
  reconnect?: ReconnectOptions;
  /**
   * @deprecated Since 0.2: use `reconnect: { initialDelayMs: min, maxDelayMs: max }`. Goes
   * in 0.3.
   */
  reconnectDelayMs?: { min: number; max: number };
  /**
   * Called on every connection state change (and before each reconnect, with
   * `retryInMs`). A failed first `connect` reports nothing: it rejects.
   */
  onStatus?: ConnectionOptions['onStatus'];
  /** @deprecated Since 0.2: use `onStatus` and read `status.state`. Goes in 0.3. */
  onStateChange?: (state: RealtimeState) => void;
}

/** The connection state; the same as every client's `ConnectionState`. */
export type RealtimeState = ConnectionState;

export interface SubscribeOptions<T> {
  /** Called for each message, in offset order. Alternatively iterate the subscription. */
  onMessage?: (message: TopicMessage<T>) => void;
  /**
   * Called when messages were missed and could not be recovered (the history no longer
   * covered the gap, or the topic was re-created): reload what you show from the source.
   */
  onRecoveryFailed?: (info: { topic: string; epoch: string; offset: number }) => void;
  /** Be listed in presence and receive join/leave events. */
  presence?: boolean;
  info?: Record<string, unknown>;
  onPresence?: (change: { type: 'join' | 'leave'; member: PresenceMember }) => void;
  /** Resume after this offset of `epoch` (for example one saved before a reload). */
  from?: { offset: number; epoch?: string };
}

type Payload = { kind: string } & Record<string, unknown>;
interface Pending {
  resolve: (payload: Payload) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A subscription to one topic (gap-free, in offset order, recovering after reconnects) or
 * to a pattern (live only). Iterate it with `for await`, or pass `onMessage`.
 */
export class Subscription<T = unknown> implements AsyncIterable<TopicMessage<T>> {
  readonly topic: string;
  readonly isPattern: boolean;
  /** The epoch and the newest offset delivered; what a reconnect resumes from. */
  epoch: string | undefined;
  offset: number | undefined;
  readonly options: SubscribeOptions<T>;
  readonly #client: RealtimeClient;
  readonly #buffer: TopicMessage<T>[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(client: RealtimeClient, topic: string, options: SubscribeOptions<T>) {
    this.#client = client;
    this.topic = topic;
    this.isPattern = topic.split('.').some((s) => s === '*' || s === '>');
    this.options = options;
    if (options.from) {
      this.offset = options.from.offset;
      this.epoch = options.from.epoch;
    }
  }

  /** @internal */
  deliver(message: TopicMessage<T>): void {
    if (!this.isPattern) {
      if (this.offset !== undefined && message.offset <= this.offset) return; // a replayed duplicate
      this.offset = message.offset;
    }
    if (this.options.onMessage) this.options.onMessage(message);
    else {
      this.#buffer.push(message);
      this.#wake?.();
    }
  }

  /** @internal */
  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async unsubscribe(): Promise<void> {
    await this.#client.unsubscribe(this as unknown as Subscription<never>);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TopicMessage<T>> {
    for (;;) {
      const next = this.#buffer.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }
}

/**
 * Client of the realtime gateway (`/v1/realtime`) for Node and browsers: subscribes,
 * publishes, reads history and presence. It reconnects with backoff and jitter,
 * re-subscribes, and recovers every topic subscription from its last offset; when that
 * is not possible it says so through `onRecoveryFailed`.
 */
export class RealtimeClient {
  readonly #options: RealtimeClientOptions;
  readonly #subscriptions = new Map<string, Subscription<never>>();
  readonly #pending = new Map<string, Pending>();
  readonly #transport: Transport;
  readonly #link: ReconnectingSocket;
  /** Set while a (re)connection authenticates and subscribes again. */
  #handshaking = false;
  #closed = false;
  #nextId = 0;

  constructor(options: RealtimeClientOptions) {
    const apiKey = options.apiKey ?? options.token;
    if (apiKey === undefined || apiKey === '') {
      throw new TypeError('apiKey is required: an API key, a JWT or a realtime token');
    }
    const legacyDelays = options.reconnectDelayMs;
    const { onStatus, onStateChange } = options;
    let reported: RealtimeState = 'connecting';
    this.#transport = new Transport({
      url: options.url,
      apiKey,
      reconnect:
        options.reconnect ??
        (legacyDelays ? { initialDelayMs: legacyDelays.min, maxDelayMs: legacyDelays.max } : {}),
      statusFromRequests: false,
      onStatus: (status) => {
        onStatus?.(status);
        if (status.state === reported) return;
        reported = status.state;
        onStateChange?.(status.state);
      },
    });
    this.#options = options;
    this.#link = this.#transport.socket({
      path: '/v1/realtime',
      authorizationHeader: false,
      firstConnect: 'each-node-once',
      handshake: (_socket, credential) => this.#handshake(credential),
      message: (text) => this.#onMessage(text),
      closed: (code, reason) => this.#onClose(code, reason),
    });
  }

  /** The base URL of the node this client connects to now. */
  get url(): string {
    return this.#transport.url;
  }

  get state(): RealtimeState {
    return this.#transport.state;
  }

  /**
   * Connects and authenticates; resolves once the server accepted the credential. Every
   * node is tried once; when none can be reached it rejects, and a later `connect()`
   * starts over. Once connected, the client reconnects by itself until `close`.
   */
  connect(): Promise<void> {
    return this.#link.connect();
  }

  /** Authenticates a new connection and subscribes again, from each topic's last offset. */
  async #handshake(credential: string | undefined): Promise<void> {
    this.#handshaking = true;
    try {
      await this.#request({ kind: 'auth', token: credential });
      for (const subscription of this.#subscriptions.values()) {
        await this.#sendSubscribe(subscription).catch(() => {});
      }
    } finally {
      this.#handshaking = false;
    }
  }

  /** Runs when a socket closes: fails what waits on it; a refused credential ends the client. */
  #onClose(code: number, reason: string): Error | undefined {
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(
        new OrchestraError('CONNECTION_FAILED', `The connection closed (${code} ${reason})`, {
          status: 0,
        }),
      );
      this.#pending.delete(id);
    }
    // A refused credential will be refused again: stop rather than loop.
    if (this.#closed || code !== 4401) return undefined;
    this.#closed = true;
    for (const s of this.#subscriptions.values()) s.end();
    return new OrchestraError('UNAUTHENTICATED', `The server refused the credential (${reason})`, {
      status: 0,
    });
  }

  #onMessage(text: string): void {
    let frame: { header: { correlation_id?: string }; payload: Payload };
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const { payload } = frame;
    const id = frame.header.correlation_id;
    if (id !== undefined && this.#pending.has(id)) {
      const pending = this.#pending.get(id) as Pending;
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      if (payload.kind === 'error') {
        pending.reject(
          new OrchestraError(String(payload.code), String(payload.message), {
            status: 0,
            details: payload.details as Record<string, unknown> | undefined,
          }),
        );
      } else pending.resolve(payload);
      return;
    }
    switch (payload.kind) {
      case 'message': {
        const message = payload as unknown as TopicMessage & { kind: string };
        const exact = this.#subscriptions.get(message.topic);
        if (exact) exact.deliver(strip(message) as never);
        else {
          for (const s of this.#subscriptions.values()) {
            if (s.isPattern && matches(s.topic, message.topic)) s.deliver(strip(message) as never);
          }
        }
        return;
      }
      case 'presence.join':
      case 'presence.leave': {
        const s = this.#subscriptions.get(String(payload.topic));
        s?.options.onPresence?.({
          type: payload.kind === 'presence.join' ? 'join' : 'leave',
          member: payload.member as PresenceMember,
        });
        return;
      }
      case 'unsubscribed': {
        const s = this.#subscriptions.get(String(payload.topic));
        if (s) {
          this.#subscriptions.delete(s.topic);
          s.end();
        }
        return;
      }
    }
  }

  #request(payload: Payload): Promise<Payload> {
    const socket = this.#link.socket;
    // Before a new connection is authenticated, only the handshake may use it.
    const usable = this.#link.connected || this.#handshaking;
    if (socket === undefined || socket.readyState !== WebSocket.OPEN || !usable) {
      return Promise.reject(
        new OrchestraError('CONNECTION_FAILED', 'Not connected', { status: 0 }),
      );
    }
    const id = `r${++this.#nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new OrchestraError('TIMEOUT', `No answer to ${payload.kind} in time`, { status: 0 }),
        );
      }, this.#options.timeoutMs ?? 10_000);
      this.#pending.set(id, { resolve, reject, timer });
      socket.send(
        JSON.stringify({
          header: {
            id,
            type: 'REQUEST',
            timestamp: new Date().toISOString(),
            source: 'sdk:realtime',
            version: 1,
          },
          payload,
        }),
      );
    });
  }

  async #sendSubscribe(subscription: Subscription<never>): Promise<void> {
    const { options } = subscription;
    const answer = await this.#request({
      kind: 'subscribe',
      topic: subscription.topic,
      ...(subscription.offset !== undefined && !subscription.isPattern
        ? {
            from: subscription.offset,
            ...(subscription.epoch ? { epoch: subscription.epoch } : {}),
          }
        : {}),
      ...(options.presence ? { presence: true } : {}),
      ...(options.info ? { info: options.info } : {}),
    });
    if (subscription.isPattern) return;
    const epoch = String(answer.epoch);
    const offset = Number(answer.offset);
    if (answer.recovered === false) {
      subscription.offset = offset;
      subscription.epoch = epoch;
      options.onRecoveryFailed?.({ topic: subscription.topic, epoch, offset });
      return;
    }
    subscription.epoch = epoch;
    subscription.offset ??= offset;
  }

  /** Subscribes to a topic or pattern; resolves once the server confirmed it. */
  async subscribe<T = unknown>(
    topic: string,
    options: SubscribeOptions<T> = {},
  ): Promise<Subscription<T>> {
    await this.connect();
    if (this.#subscriptions.has(topic)) {
      throw new OrchestraError('ALREADY_SUBSCRIBED', `Already subscribed to ${topic}`, {
        status: 0,
      });
    }
    const subscription = new Subscription<T>(this, topic, options);
    this.#subscriptions.set(topic, subscription as unknown as Subscription<never>);
    try {
      await this.#sendSubscribe(subscription as unknown as Subscription<never>);
    } catch (err) {
      this.#subscriptions.delete(topic);
      throw err;
    }
    return subscription;
  }

  /** @internal Use `subscription.unsubscribe()`. */
  async unsubscribe(subscription: Subscription<never>): Promise<void> {
    if (this.#subscriptions.get(subscription.topic) !== subscription) return;
    this.#subscriptions.delete(subscription.topic);
    subscription.end();
    await this.#request({ kind: 'unsubscribe', topic: subscription.topic }).catch(() => {});
  }

  /** Publishes a message; resolves with its offset once it is stored durably. */
  async publish(
    topic: string,
    data: unknown,
    options: { event?: string } = {},
  ): Promise<{ topic: string; epoch: string; offset: number }> {
    await this.connect();
    const answer = await this.#request({
      kind: 'publish',
      topic,
      data: data ?? null,
      ack: true,
      ...(options.event ? { event: options.event } : {}),
    });
    return { topic, epoch: String(answer.epoch), offset: Number(answer.offset) };
  }

  /**
   * Retained messages after an offset, or the last N, at most `limit` and about the
   * server's ORCHESTRA_RESPONSE_MAX_BYTES; `next_after` (when not null) is the `after` that
   * gets the rest.
   */
  async history<T = unknown>(
    topic: string,
    query: { after?: number; last?: number; limit?: number } = {},
  ): Promise<{
    topic: string;
    epoch: string;
    first_offset: number;
    last_offset: number;
    next_after: number | null;
    messages: TopicMessage<T>[];
  }> {
    await this.connect();
    const { kind: _, ...answer } = await this.#request({ kind: 'history', topic, ...query });
    return answer as never;
  }

  /** Who is present on a topic, on every node. */
  async presence(topic: string): Promise<PresenceMember[]> {
    await this.connect();
    return (await this.#request({ kind: 'presence', topic })).members as PresenceMember[];
  }

  /** Closes the connection for good; subscriptions' iterators end. */
  close(): void {
    this.#closed = true;
    void this.#link.close(1000);
    for (const s of this.#subscriptions.values()) s.end();
  }
}

function strip(message: TopicMessage & { kind?: string }): TopicMessage {
  return {
    topic: message.topic,
    offset: message.offset,
    event: message.event,
    data: message.data,
    time: message.time,
  };
}

function matches(pattern: string, topic: string): boolean {
  const p = pattern.split('.');
  const t = topic.split('.');
  const tail = p.at(-1) === '>';
  if (tail) p.pop();
  if (tail ? t.length <= p.length : t.length !== p.length) return false;
  return p.every((s, i) => s === '*' || s === t[i]);
}
