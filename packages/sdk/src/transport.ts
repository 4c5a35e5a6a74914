import { Backoff, type ReconnectOptions, sleep } from './backoff.ts';
import { type ErrorPayload, OrchestraError } from './errors.ts';

/**
 * A credential: an `ork_…` API key, a JWT or, for `RealtimeClient`, a realtime token
 * (`ort_…`). A function is called before every request and every (re)connection, so that
 * it can hand out a fresh short-lived token.
 */
export type Credential = string | (() => string | Promise<string>);

/**
 * Where a client stands with the server:
 * - `connecting`: it has not reached it yet;
 * - `connected`: it reached it (the last request was answered, or the connection is up);
 * - `reconnecting`: it lost it and tries again (or, for the REST client, the last request
 *   reached no node);
 * - `closed`: closed for good, by `close`/`stop` or because reconnecting could not help.
 */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** What `onStatus` is called with. */
export interface ConnectionStatus {
  state: ConnectionState;
  /** The node the client uses now (the next one it tries, while reconnecting). */
  url: string;
  /** Set when the client will try again by itself: the delay before it does. */
  retryInMs?: number;
  /** Why the client is not connected, when it knows. */
  error?: Error;
}

/**
 * The options every client of the SDK shares (`Orchestra`, `AgentWorker`,
 * `RealtimeClient`, `ConfigClient`, `ServiceClient`).
 */
export interface ConnectionOptions<S extends ConnectionStatus = ConnectionStatus> {
  /**
   * Base URL of the server, such as `http://localhost:8080`. Several URLs (the nodes of a
   * cluster, without a load balancer in front): the client uses one node until it cannot
   * be reached, then moves to the next, and keeps the one that answers.
   */
  url: string | string[];
  /** An API key or JWT (or a function that returns one), sent with every request. */
  apiKey?: Credential;
  /**
   * Backoff between attempts to reach the server again (reconnects, stream resumes): the
   * first step and the ceiling; each client has its own defaults.
   */
  reconnect?: ReconnectOptions;
  /**
   * Called when the connection state changes, and before each retry the client schedules
   * by itself. An error it throws is ignored.
   */
  onStatus?: (status: S) => void;
}

/** What the transport reports; the close code and reason are set for WebSocket closes. */
export interface TransportStatus extends ConnectionStatus {
  code?: number;
  reason?: string;
}

/** The transport's own settings besides the shared options. */
export interface TransportOptions extends Omit<ConnectionOptions, 'onStatus'> {
  onStatus?: ((status: TransportStatus) => void) | undefined;
  /** Per-request timeout; default 30 s. */
  timeoutMs?: number | undefined;
  /** Replaces the global `fetch`. */
  fetch?: typeof fetch | undefined;
  /** Extra headers sent with every request. */
  headers?: Record<string, string> | undefined;
  /** URL schemes accepted; default http(s) and ws(s). */
  schemes?: readonly string[];
  /**
   * Whether answered and unanswered requests move the state (REST clients). WebSocket
   * clients say false: only their connection does.
   */
  statusFromRequests: boolean;
  /** Backoff defaults for stream resumes and request retries. */
  retryDefaults?: Required<ReconnectOptions>;
}

type QueryValue = string | number | boolean | undefined;
/** Query parameters; an array value repeats the parameter once per item. */
export type Query = Record<string, QueryValue | readonly QueryValue[]>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
  /**
   * `text`: a successful answer's body as it came (CSV), not parsed as JSON; `bytes`: as a
   * Uint8Array (a file, an archive).
   */
  as?: 'json' | 'text' | 'bytes';
  /** Sent as it is (a file, an archive) instead of `body` as JSON. */
  rawBody?: Uint8Array | string;
}

/** One resumable stream, as `Transport.resume` follows it. */
export interface ResumableStream<T> {
  /** What the stream is, for errors: `the event stream of task "tsk_1"`. */
  what: string;
  signal?: AbortSignal | undefined;
  /** Failed reconnections in a row before giving up. */
  maxReconnects: number;
  /**
   * One connection from where the stream is now. The caller keeps the position (an offset,
   * a revision) as items pass, and skips items it delivered already.
   */
  connect(onOpen: (status: number) => void): AsyncIterable<T>;
  /** Where the stream is, for the error when it cannot be resumed: `offset 5`. */
  position(): string;
  /**
   * After a connection ended without an error, with `received` items: whether the stream
   * is complete (`done`), may go on at once (`again`), or should resume after a backoff
   * (`problem`). Without it, every end resumes after a backoff.
   */
  ended?(received: number): Promise<{ done: true } | { again: true } | { problem: unknown }>;
  /** An opened connection counts as progress (resets the failures): for streams that idle. */
  openIsProgress?: boolean;
  /** A failure before any connection opened ends the iteration instead of resuming. */
  failFirst?: boolean;
}

/** One WebSocket protocol, as `Transport.socket` runs it. */
export interface SocketProtocol {
  /** The route, such as `/v1/realtime`. */
  path: string;
  /** Node only: send the credential as an Authorization header (browsers cannot). */
  authorizationHeader: boolean;
  /**
   * `retry`: the first connection is retried with backoff until it succeeds (agents).
   * `each-node-once`: every node is tried once, then `connect` rejects (realtime).
   */
  firstConnect: 'retry' | 'each-node-once';
  /** Runs on an open socket: resolves once it is usable (authenticated, registered). */
  handshake(socket: WebSocket, credential: string | undefined): Promise<void>;
  message(text: string): void;
  /** Runs when a socket closes; returns an error when reconnecting cannot help. */
  closed(code: number, reason: string): Error | undefined;
  /** Runs when a handshake failed; returns an error when reconnecting cannot help. */
  failed?(error: unknown): Error | undefined;
}

/** Statuses a request or a stream may be retried after; any other error status is final. */
const TRANSIENT_STATUSES = new Set([429, 502, 503, 504]);
/** Methods whose request may be sent again to another node after a network error. */
const REPEATABLE_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);
const DEFAULT_TIMEOUT_MS = 30_000;
/** Stream resumes: half a step to a step, from 200 ms to 5 s. */
const RETRY_DEFAULTS = { initialDelayMs: 200, maxDelayMs: 5_000 };
/** Reconnects: anywhere within the step, from 250 ms to 10 s. */
const RECONNECT_DEFAULTS = { initialDelayMs: 250, maxDelayMs: 10_000 };
/** How long a closing socket may take to say it closed. */
const CLOSE_WAIT_MS = 2_000;

/** Whether a failure is worth retrying: no answer, or a transient error status. */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof OrchestraError)) return true; // the body stream broke off
  return err.status === 0 || TRANSIENT_STATUSES.has(err.status);
}

/**
 * The connection to one Orchestra deployment that every client of the SDK is built on, as
 * the MCP SDK's clients sit on a `Transport` and nats.js builds JetStream on one
 * connection. It owns:
 * - the nodes and failover between them (one current node, shared by requests, streams and
 *   sockets);
 * - the credential, headers and timeouts of every request;
 * - retries with backoff and jitter, and resumable NDJSON streams (cursors kept by the
 *   caller);
 * - WebSocket connections that reconnect, moving between nodes (`socket`);
 * - the connection state that `onStatus` reports.
 *
 * Internal: users construct the clients, never this.
 */
export class Transport {
  /** The base URLs, in the order they are tried, without a trailing slash. */
  readonly urls: readonly string[];
  readonly timeoutMs: number;
  readonly reconnect: ReconnectOptions;
  readonly #options: TransportOptions;
  readonly #fetch: typeof fetch;
  #urlIndex = 0;
  #state: ConnectionState = 'connecting';

  constructor(options: TransportOptions) {
    const schemes = options.schemes ?? ['http', 'https', 'ws', 'wss'];
    const urls = typeof options.url === 'string' ? [options.url] : [...(options.url ?? [])];
    if (urls.length === 0) throw new TypeError('url must be a URL or a non-empty list of URLs');
    for (const url of urls) {
      const scheme = typeof url === 'string' ? /^([a-z]+):\/\//.exec(url)?.[1] : undefined;
      if (scheme === undefined || !schemes.includes(scheme)) {
        throw new TypeError(
          `url must start with ${schemes.map((s) => `${s}://`).join(' or ')}, got "${url}"`,
        );
      }
    }
    this.urls = urls.map((u) => u.replace(/\/+$/, ''));
    this.#options = options;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.reconnect = options.reconnect ?? {};
    // Bound: browsers refuse a `fetch` called as a method of another object ("Illegal
    // invocation"), which is how a field holding it would call it.
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    // Throws a RangeError for a bad `reconnect` now, rather than at the first reconnect.
    new Backoff(this.reconnect, { ...RECONNECT_DEFAULTS, jitter: 'full' });
  }

  /** The base URL in use now. */
  get url(): string {
    return this.urls[this.#urlIndex] ?? '';
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Moves to the next node, unless another caller moved on from `from` already. */
  moveOn(from: string): void {
    if (this.url === from) this.#urlIndex = (this.#urlIndex + 1) % this.urls.length;
  }

  /**
   * Sets the state and tells `onStatus`: when the state changes, or when a retry is
   * scheduled (`retryInMs`).
   */
  report(state: ConnectionState, details: Omit<TransportStatus, 'state' | 'url'> = {}): void {
    if (this.#state === 'closed') return; // closed is for good
    const changed = this.#state !== state;
    this.#state = state;
    if (!changed && details.retryInMs === undefined) return;
    try {
      this.#options.onStatus?.({ state, url: this.url, ...details });
    } catch {
      // A failing status callback must not break the client.
    }
  }

  /** Closes for good: only `closed` is reported, once. */
  close(error?: Error): void {
    this.report('closed', error ? { error } : {});
  }

  /**
   * Reports that the server could not be reached (or a connection was lost): `connecting`
   * while it never was, else `reconnecting`.
   */
  reportLost(details: Omit<TransportStatus, 'state' | 'url'>): void {
    this.report(this.#state === 'connecting' ? 'connecting' : 'reconnecting', details);
  }

  /** Records what a request found out about the server (REST clients only). */
  #observe(problem: unknown, answered: boolean): void {
    if (!this.#options.statusFromRequests || this.#state === 'closed') return;
    if (answered) this.report('connected');
    else this.reportLost({ error: asError(problem) });
  }

  /** The credential for the next request or connection. */
  async credential(): Promise<string | undefined> {
    const { apiKey } = this.#options;
    return typeof apiKey === 'function' ? await apiKey() : apiKey;
  }

  /** A backoff for retries and stream resumes: equal jitter, within `reconnect`. */
  retryBackoff(): Backoff {
    return new Backoff(this.reconnect, {
      ...(this.#options.retryDefaults ?? RETRY_DEFAULTS),
      jitter: 'equal',
    });
  }

  /** Sends one request and parses the JSON answer; undefined when it has no body. */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return (await this.exchange<T>(method, path, options)).body;
  }

  /** `request`, also resolving to the status and headers of the answer. */
  async exchange<T>(
    method: string,
    path: string,
    options: RequestOptions,
  ): Promise<{ status: number; headers: Headers; body: T }> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timeout = deadline(timeoutMs);
    try {
      const { response, url } = await this.#send(method, path, options, timeout.signal, timeoutMs);
      if (options.as === 'bytes' && response.ok) {
        let bytes: Uint8Array;
        try {
          bytes = new Uint8Array(await response.arrayBuffer());
        } catch (err) {
          throw this.#noAnswer(err, method, url, options.signal, timeoutMs);
        }
        return { status: response.status, headers: response.headers, body: bytes as T };
      }
      let text: string;
      try {
        text = await response.text();
      } catch (err) {
        throw this.#noAnswer(err, method, url, options.signal, timeoutMs);
      }
      if (options.as === 'text' && response.ok) {
        return { status: response.status, headers: response.headers, body: text as T };
      }
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch (err) {
        if (response.ok) {
          throw new OrchestraError(
            'INVALID_RESPONSE',
            `${method} ${url.pathname} answered with non-JSON`,
            { status: response.status, cause: err },
          );
        }
      }
      if (!response.ok) throw errorOf(method, url, response, body);
      return { status: response.status, headers: response.headers, body: body as T };
    } finally {
      timeout.clear();
    }
  }

  /**
   * One connection to an NDJSON stream: yields each line parsed as JSON until the stream
   * ends, and closes it when the reader stops early. `onOpen` runs once the response
   * headers arrive; an error status rejects with the server's error. Resuming is `resume`'s
   * business.
   */
  async *streamJson(
    path: string,
    query: Query,
    options: {
      signal?: AbortSignal | undefined;
      onOpen?: (status: number) => void;
      /** A POST whose answer is a stream (`exec` with `stream: true`); GET by default. */
      body?: unknown;
    } = {},
  ): AsyncIterable<unknown> {
    const method = options.body === undefined ? 'GET' : 'POST';
    const release = new AbortController();
    const linked = options.signal
      ? AbortSignal.any([options.signal, release.signal])
      : release.signal;
    try {
      const timeout = deadline(this.timeoutMs);
      let response: Response;
      let url: URL;
      try {
        ({ response, url } = await this.#send(
          method,
          path,
          {
            query,
            headers: { accept: 'application/x-ndjson' },
            signal: linked,
            ...(options.body === undefined ? {} : { body: options.body }),
          },
          timeout.signal,
          this.timeoutMs,
        ));
      } finally {
        timeout.clear(); // bounds the wait for the headers only: a watch may idle for long
      }
      if (!response.ok) {
        const text = await response.text().catch(() => '');
        throw errorOf(method, url, response, parseOrUndefined(text));
      }
      options.onOpen?.(response.status);
      if (response.status === 204 || response.body === null) return;
      for await (const line of ndjsonLines(response.body)) {
        const item = parseOrUndefined(line);
        if (item === undefined) {
          throw new OrchestraError(
            'INVALID_RESPONSE',
            `${method} ${path} streamed a line that is not JSON`,
            { status: 200 },
          );
        }
        yield item;
      }
    } finally {
      release.abort();
    }
  }

  /**
   * Follows a stream across connections: after a dropped connection (or a server that went
   * away, or a transient error status) it connects again, with backoff, from where the
   * caller's cursor is. Gives up after `maxReconnects` failures in a row: with the server's
   * error when it answered one, else with `CONNECTION_FAILED`.
   */
  async *resume<T>(stream: ResumableStream<T>): AsyncIterable<T> {
    const { signal } = stream;
    const backoff = this.retryBackoff();
    let opened = false;
    for (;;) {
      signal?.throwIfAborted();
      let received = 0;
      let problem: unknown;
      let again = false;
      try {
        const onOpen = () => {
          opened = true;
          if (stream.openIsProgress) backoff.reset();
        };
        for await (const item of stream.connect(onOpen)) {
          opened = true;
          received += 1;
          backoff.reset();
          yield item;
        }
        const end = stream.ended ? await stream.ended(received) : undefined;
        if (end !== undefined && 'done' in end) return;
        if (end !== undefined && 'again' in end) again = true;
        else
          problem =
            end?.problem ??
            new OrchestraError('CONNECTION_FAILED', `${capitalized(stream.what)} ended`, {
              status: 0,
            });
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if ((stream.failFirst && !opened) || !isTransient(err)) throw err;
        problem = err;
      }
      if (again) continue; // items arrived: go on at once
      const retryAfter = problem instanceof OrchestraError ? problem.retryAfterSeconds : undefined;
      const delay = backoff.fail((retryAfter ?? 0) * 1000);
      if (backoff.failures > stream.maxReconnects) {
        if (problem instanceof OrchestraError && problem.status !== 0) throw problem;
        throw new OrchestraError(
          'CONNECTION_FAILED',
          `Lost ${stream.what} after ${stream.position()} and could not resume it in ${stream.maxReconnects} attempts: ${(problem as Error)?.message ?? String(problem)}`,
          { status: 0, cause: problem },
        );
      }
      if (this.#options.statusFromRequests) {
        this.reportLost({ retryInMs: delay, error: asError(problem) });
      }
      await sleep(delay, signal);
    }
  }

  /** A WebSocket connection for `protocol` that reconnects by itself; see `ReconnectingSocket`. */
  socket(protocol: SocketProtocol): ReconnectingSocket {
    return new ReconnectingSocket(this, protocol);
  }

  /**
   * Sends the request and resolves once the response headers arrive, moving to another
   * node when this one cannot be reached and the request is safe to send again. Rejects
   * with the reason of `options.signal` when it aborts, else with `TIMEOUT` or
   * `CONNECTION_FAILED`.
   */
  async #send(
    method: string,
    path: string,
    options: RequestOptions,
    timeout: AbortSignal,
    timeoutMs: number,
  ): Promise<{ response: Response; url: URL }> {
    const credential = await this.credential();
    // Each other node is tried once; the one that answers is kept for what follows.
    for (let tried = 1; ; tried++) {
      const base = this.url;
      try {
        const sent = await this.#sendTo(
          httpBase(base),
          method,
          path,
          options,
          credential,
          timeout,
          timeoutMs,
        );
        this.#observe(undefined, true);
        return sent;
      } catch (err) {
        const cause = err instanceof OrchestraError ? err.cause : undefined;
        const noAnswer = err instanceof OrchestraError && err.status === 0;
        const retry =
          tried < this.urls.length &&
          noAnswer &&
          err.code === 'CONNECTION_FAILED' &&
          (REPEATABLE_METHODS.has(method) || connectionRefused(cause));
        if (!retry) {
          if (noAnswer) this.#observe(err, false);
          throw err;
        }
        this.moveOn(base);
      }
    }
  }

  async #sendTo(
    base: string,
    method: string,
    path: string,
    options: RequestOptions,
    credential: string | undefined,
    timeout: AbortSignal,
    timeoutMs: number,
  ): Promise<{ response: Response; url: URL }> {
    const url = new URL(base + path);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item !== undefined) url.searchParams.append(name, String(item));
      }
    }
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...this.#options.headers,
      ...options.headers,
    };
    if (credential !== undefined) headers.authorization = `Bearer ${credential}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    if (options.rawBody !== undefined) headers['content-type'] ??= 'application/octet-stream';
    const body =
      options.rawBody !== undefined
        ? options.rawBody
        : options.body !== undefined
          ? JSON.stringify(options.body)
          : undefined;
    try {
      const response = await this.#fetch(url, {
        method,
        headers,
        ...(body !== undefined ? { body: body as BodyInit } : {}),
        signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout,
      });
      return { response, url };
    } catch (err) {
      throw this.#noAnswer(err, method, url, options.signal, timeoutMs);
    }
  }

  /** The error for a request that got no (complete) answer. */
  #noAnswer(
    err: unknown,
    method: string,
    url: URL,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): unknown {
    if (signal?.aborted) return signal.reason;
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    return new OrchestraError(
      timedOut ? 'TIMEOUT' : 'CONNECTION_FAILED',
      timedOut
        ? `${method} ${url.pathname} got no answer within ${timeoutMs} ms`
        : `Cannot reach Orchestra at ${url.origin}: ${(err as Error).message}`,
      { status: 0, cause: err },
    );
  }
}

interface Attempt {
  /** The handshake succeeded: the connection was usable. */
  connected: boolean;
  code: number;
  reason: string;
  error: Error;
  /** Set when the socket opened but the handshake failed. */
  handshakeError?: unknown;
}

/**
 * A WebSocket that stays connected: it opens the protocol's route on the transport's
 * current node, runs the handshake, and when the connection fails or drops it tries the
 * other nodes once each at once, then the nodes in turn with backoff and full jitter
 * (`reconnect`; 250 ms to 10 s by default), until `close` or a close after which
 * reconnecting cannot help. A server going away (1001) is tried again at once: it usually
 * restarts or has peers.
 */
export class ReconnectingSocket {
  readonly #transport: Transport;
  readonly #protocol: SocketProtocol;
  #socket: WebSocket | undefined;
  #connected = false;
  #everConnected = false;
  #stopped = false;
  #first: Promise<void> | undefined;
  #settle: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  #wake = new AbortController();

  constructor(transport: Transport, protocol: SocketProtocol) {
    this.#transport = transport;
    this.#protocol = protocol;
  }

  /** The socket of the current attempt (open, or still opening or handshaking). */
  get socket(): WebSocket | undefined {
    return this.#socket;
  }

  /** Whether the handshake of the current socket succeeded and it is still open. */
  get connected(): boolean {
    return this.#connected;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Starts connecting and resolves once connected the first time; after that it resolves
   * at once, even while reconnecting. Rejects when reconnecting cannot help, and, for
   * `each-node-once`, when no node could be reached: a later call starts over.
   */
  connect(): Promise<void> {
    if (this.#first !== undefined) return this.#first;
    if (this.#stopped) {
      return Promise.reject(new OrchestraError('CONNECTION_FAILED', 'Closed', { status: 0 }));
    }
    this.#first = new Promise<void>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    void this.#run();
    return this.#first;
  }

  /** Sends on the current socket; false when it is not open. */
  send(text: string): boolean {
    const socket = this.#socket;
    if (socket?.readyState !== WebSocket.OPEN) return false;
    socket.send(text);
    return true;
  }

  /**
   * Closes for good: no reconnect follows. Resolves once the socket closed (or after 2 s).
   * `closed` is reported.
   */
  async close(code = 1000, reason = ''): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#wake.abort();
      this.#settle?.reject(new OrchestraError('CONNECTION_FAILED', 'Closed', { status: 0 }));
      this.#settle = undefined;
      this.#transport.close();
    }
    const socket = this.#socket;
    if (socket === undefined || socket.readyState === WebSocket.CLOSED) return;
    const closed = waitForClose(socket, CLOSE_WAIT_MS);
    if (socket.readyState !== WebSocket.CLOSING) socket.close(code, reason);
    await closed;
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(this.#transport.reconnect, {
      ...RECONNECT_DEFAULTS,
      jitter: 'full',
    });
    const nodes = this.#transport.urls.length;
    for (;;) {
      if (this.#stopped) return;
      const url = this.#transport.url;
      const attempt = await this.#attempt(url);
      if (attempt.connected) backoff.reset();
      const fatal =
        this.#protocol.closed(attempt.code, attempt.reason) ??
        (attempt.handshakeError !== undefined
          ? this.#protocol.failed?.(attempt.handshakeError)
          : undefined);
      if (this.#stopped) return;
      if (fatal !== undefined) {
        this.#stopped = true;
        this.#settle?.reject(attempt.handshakeError ?? fatal);
        this.#settle = undefined;
        this.#transport.close(fatal);
        return;
      }
      const drawn = backoff.fail();
      if (!this.#everConnected && this.#protocol.firstConnect === 'each-node-once') {
        const tried = attempt.handshakeError !== undefined || backoff.failures >= nodes;
        if (tried) {
          this.#settle?.reject(attempt.handshakeError ?? attempt.error);
          this.#settle = undefined;
          this.#first = undefined; // a later connect() starts over
          if (attempt.handshakeError === undefined) this.#transport.moveOn(url);
          return;
        }
      }
      // Another node may be up while this one is not: each is tried once at once.
      const others = nodes > 1 && backoff.failures < nodes;
      const delay = others || (attempt.code === 1001 && backoff.failures === 1) ? 0 : drawn;
      this.#transport.moveOn(url);
      this.#transport.reportLost({
        retryInMs: delay,
        code: attempt.code,
        reason: attempt.reason,
        error: attempt.error,
      });
      await sleep(delay, this.#wake.signal).catch(() => {});
    }
  }

  /** One connection, from opening to closing. */
  async #attempt(url: string): Promise<Attempt> {
    const base = wsBase(url);
    const target = `${base}${this.#protocol.path}`;
    let credential: string | undefined;
    try {
      credential = await this.#transport.credential();
    } catch (err) {
      return { connected: false, code: 1006, reason: '', error: asError(err), handshakeError: err };
    }
    // Node's WebSocket (undici) takes headers; browsers ignore the second argument's fields.
    const socket = new WebSocket(
      target,
      (this.#protocol.authorizationHeader && credential !== undefined
        ? { headers: { authorization: `Bearer ${credential}` } }
        : undefined) as unknown as string[],
    );
    this.#socket = socket;
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      socket.addEventListener(
        'close',
        (event) => resolve({ code: event.code, reason: event.reason }),
        {
          once: true,
        },
      );
    });
    socket.addEventListener('message', (event) => {
      if (this.#socket === socket) this.#protocol.message(String(event.data));
    });
    const opened = await Promise.race([
      new Promise<boolean>((resolve) =>
        socket.addEventListener('open', () => resolve(true), { once: true }),
      ),
      closed.then(() => false),
    ]);
    if (!opened) {
      const { code, reason } = await closed;
      return {
        connected: false,
        code,
        reason,
        error: new OrchestraError('CONNECTION_FAILED', `Cannot connect to ${target}`, {
          status: 0,
        }),
      };
    }
    const closedError = ({ code, reason }: { code: number; reason: string }) =>
      new OrchestraError(
        'CONNECTION_FAILED',
        `The connection to ${base} closed (${code} ${reason})`,
        {
          status: 0,
        },
      );
    const handshake = await Promise.race([
      this.#protocol.handshake(socket, credential).then(
        () => ({ ok: true as const }),
        (error: unknown) => ({ ok: false as const, error }),
      ),
      closed.then(() => undefined),
    ]);
    if (handshake === undefined) {
      // The connection dropped during the handshake: a connection failure like any other.
      const ended = await closed;
      return { connected: false, ...ended, error: closedError(ended) };
    }
    if (!handshake.ok) {
      if (socket.readyState === WebSocket.OPEN) {
        // The server closes on a refused credential with a code that says so: wait a moment
        // for it before closing from this side.
        await waitForClose(socket, 1_000);
        if (socket.readyState === WebSocket.OPEN) socket.close(1000, 'handshake failed');
      }
      await waitForClose(socket, CLOSE_WAIT_MS);
      const ended =
        socket.readyState === WebSocket.CLOSED ? await closed : { code: 1006, reason: '' };
      return {
        connected: false,
        ...ended,
        error: asError(handshake.error),
        handshakeError: handshake.error,
      };
    }
    if (this.#stopped) {
      socket.close(1000);
      return { ...(await closed), connected: false, error: new Error('closed') };
    }
    this.#connected = true;
    this.#everConnected = true;
    this.#transport.report('connected');
    this.#settle?.resolve();
    this.#settle = undefined;
    const ended = await closed;
    this.#connected = false;
    return { connected: true, ...ended, error: closedError(ended) };
  }
}

/** Resolves once the socket closed (at once when it is), or after `ms`. */
function waitForClose(socket: WebSocket, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) {
      resolve();
      return;
    }
    // Cleared on close, or it would keep the process alive after the close resolved.
    const timer = setTimeout(resolve, ms);
    socket.addEventListener(
      'close',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

/** `http(s)://` for a URL given as `ws(s)://` too. */
function httpBase(url: string): string {
  return url.replace(/^ws/, 'http');
}

function wsBase(url: string): string {
  return url.replace(/^http/, 'ws');
}

function capitalized(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function asError(problem: unknown): Error {
  return problem instanceof Error ? problem : new Error(String(problem));
}

/** Whether a fetch failure means the request never reached the server. */
function connectionRefused(cause: unknown): boolean {
  const code = (cause as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  return code === 'ECONNREFUSED';
}

/** A timeout that can be cleared once it no longer applies. */
function deadline(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')),
    ms,
  );
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

/** The error of an error status, from Orchestra's error body when it has one. */
function errorOf(method: string, url: URL, response: Response, body: unknown): OrchestraError {
  const retryAfter = Number(response.headers.get('retry-after'));
  const payload = (body as { error?: ErrorPayload; trace_id?: string } | undefined)?.error;
  if (payload?.code === undefined) {
    return new OrchestraError(
      'HTTP_ERROR',
      `${method} ${url.pathname} failed with HTTP ${response.status}`,
      { status: response.status },
    );
  }
  return new OrchestraError(payload.code, payload.message, {
    status: response.status,
    requestId: payload.request_id,
    details: payload.details,
    traceId: (body as { trace_id?: string }).trace_id,
    retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  });
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The complete lines of a byte stream; a last line without its newline counts too. */
async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncIterable<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline = buffered.indexOf('\n');
      while (newline !== -1) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line !== '') yield line;
        newline = buffered.indexOf('\n');
      }
    }
    buffered += decoder.decode();
    if (buffered.trim() !== '') yield buffered.trim();
  } finally {
    // Leaving early (or failing) must not keep the connection open.
    await reader.cancel().catch(() => {});
  }
}
