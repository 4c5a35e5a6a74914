// The WebSocket connection core (platform/ws-connection.ts) that the agent and realtime
// protocols run on, tested alone with a protocol of its own over real WebSockets, then
// through the server: the realtime routes authenticate in the request pipeline (issue 19).
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { WebSocketServer } from 'ws';
import type { Caller } from '../src/platform/auth.ts';
import { type Envelope, parseEnvelope } from '../src/platform/envelope.ts';
import { ApiError, CLOSE_CODES } from '../src/platform/errors.ts';
import {
  type CloseCode,
  type ConnectionAuth,
  type ConnectionOptions,
  type WsConnection,
  WsConnections,
} from '../src/platform/ws-connection.ts';
import { type WireSocket, wsSocket } from '../src/platform/ws-socket.ts';
import { eventually, startTestServer, type TestServer } from './helpers.ts';
import { RealtimeTestClient } from './realtime-client.ts';

const tokenCaller = (expiresAtMs: number): Caller => ({
  token: { id: 'token:test', tenantId: 'ten_test', expiresAtMs, grant: null },
});

/**
 * A protocol of the test's own on the core, in the envelope: `echo` is answered, `hold`
 * waits until the test releases it, `flood` sends until the core cuts the connection,
 * `auth` authenticates with the core.
 */
class TestProtocol {
  readonly connection: WsConnection<Envelope>;
  readonly wire: WireSocket;
  readonly held: (() => void)[] = [];
  received = 0;
  paused = 0;
  resumed = 0;
  /** The largest send queue seen while the connection was still open. */
  largestOpenQueue = 0;
  readonly closedWith: Promise<CloseCode | undefined>;
  #closed: (code: CloseCode | undefined) => void = () => {};

  constructor(connection: WsConnection<Envelope>, wire: WireSocket) {
    this.connection = connection;
    this.wire = wire;
    this.closedWith = new Promise((resolve) => {
      this.#closed = resolve;
    });
  }

  parse(data: Buffer): Envelope {
    return parseEnvelope(data.toString('utf8'));
  }

  receive(frame: Envelope): void {
    this.received += 1;
    const id = frame.header.id;
    switch (frame.payload.kind) {
      case 'echo':
        this.connection.sendFrame('RESPONSE', { kind: 'echo', n: this.received }, id);
        return;
      case 'hold':
        this.connection.inboundQueued();
        this.held.push(() => this.connection.inboundHandled());
        return;
      case 'flood': {
        const chunk = JSON.stringify({
          header: { id: 'f' },
          payload: { kind: 'filler', data: 'x'.repeat(16_000) },
        });
        while (this.connection.isOpen) {
          this.connection.send(chunk);
          if (this.connection.isOpen) {
            this.largestOpenQueue = Math.max(this.largestOpenQueue, this.wire.bufferedAmount);
          }
        }
        return;
      }
      case 'auth':
        void this.connection
          .authenticate(String(frame.payload.token), id)
          .then((caller) => {
            if (caller !== undefined) {
              this.connection.sendFrame('RESPONSE', { kind: 'authenticated' }, id);
            }
          })
          .catch((err: ApiError) => this.connection.sendError(err, id));
        return;
    }
  }

  readingPaused(): void {
    this.paused += 1;
  }

  readingResumed(): void {
    this.resumed += 1;
  }

  async closed(code: CloseCode | undefined): Promise<void> {
    this.#closed(code);
  }
}

/** A WebSocket server on port 0 whose connections run `TestProtocol` on the core. */
async function coreServer(options: Partial<ConnectionOptions> & { auth?: ConnectionAuth } = {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const connections = new WsConnections<Envelope>({});
  const protocols: TestProtocol[] = [];
  const waiting: ((p: TestProtocol) => void)[] = [];
  wss.on('connection', (socket) => {
    const wire = wsSocket(socket);
    connections.open(
      wire,
      {
        auth: {
          kind: 'request',
          caller: tokenCaller(Date.now() + 3_600_000),
          recheck: async () => {},
        },
        maxFrameBytes: 4096,
        maxQueueBytes: 262_144,
        inbound: { pauseAt: 4, resumeAt: 1 },
        source: 'orchestra:test',
        log: pino({ level: 'silent' }),
        ...options,
      },
      (connection) => {
        const protocol = new TestProtocol(connection, wire);
        protocols.push(protocol);
        waiting.shift()?.(protocol);
        return protocol;
      },
    );
  });
  // RealtimeTestClient speaks the envelope; this server takes it on any path.
  const url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  return {
    connections,
    /** Connects a client, and resolves with it and the server's side of the connection. */
    async connect() {
      const server = new Promise<TestProtocol>((resolve) => waiting.push(resolve));
      const client = await RealtimeTestClient.open(url);
      return { client, server: await server };
    },
    /** Connects a client that the server refuses at once. */
    refused: () => new RealtimeTestClient(url),
    async stop() {
      await connections.close();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}

/** Resolves once the client holds `count` frames. */
function frameCount(client: RealtimeTestClient, count: number) {
  return client.next(() => client.frames.length >= count, 60_000);
}

describe('the WebSocket connection core', () => {
  test('20 invalid frames are each answered; the 21st closes the connection with 4400', async () => {
    const core = await coreServer();
    try {
      const { client, server } = await core.connect();
      for (let i = 0; i < 19; i++) client.sendRaw('not json');
      // Valid frames between them are handled as usual and cost nothing.
      const echo = await client.request({ kind: 'echo' });
      assert.equal(echo.kind, 'echo');
      client.socket.send(Buffer.from([1, 2, 3]), { binary: true });
      await frameCount(client, 21);
      assert.equal(server.connection.state, 'open');
      client.sendRaw('{"header":');
      const { code } = await client.closed;
      assert.equal(code, CLOSE_CODES.PROTOCOL_VIOLATION.code);
      assert.equal(await server.closedWith, CLOSE_CODES.PROTOCOL_VIOLATION);
      const errors = client.frames.filter((f) => f.payload.kind === 'error');
      assert.equal(errors.length, 21, 'the 21st is answered before the close');
      assert.ok(
        errors.every((f) => f.header.type === 'EVENT' && f.header.correlation_id === undefined),
      );
      assert.deepEqual(errors[19]?.payload.details, {
        fields: [{ field: 'frame', message: 'must be a text frame holding JSON' }],
      });
      assert.equal(errors[0]?.payload.code, 'INVALID_JSON');
    } finally {
      await core.stop();
    }
  });

  test('a frame larger than maxFrameBytes closes the connection with 1009', async () => {
    const core = await coreServer({ maxFrameBytes: 1000 });
    try {
      const { client, server } = await core.connect();
      client.send({ kind: 'echo', padding: 'x'.repeat(2000) });
      assert.equal((await client.closed).code, 1009);
      assert.equal(await server.closedWith, CLOSE_CODES.MESSAGE_TOO_BIG);
      assert.equal(server.received, 0);
    } finally {
      await core.stop();
    }
  });

  test('the send queue is bounded: past maxQueueBytes the connection is cut with 4507, and the client still learns why', async () => {
    const maxQueueBytes = 262_144;
    const core = await coreServer({ maxQueueBytes });
    try {
      const { client, server } = await core.connect();
      client.send({ kind: 'flood' });
      assert.equal((await client.closed).code, CLOSE_CODES.SLOW_CONSUMER.code);
      assert.equal(await server.closedWith, CLOSE_CODES.SLOW_CONSUMER);
      // Frames leave in one write per turn of the event loop: the whole flood was queued,
      // and the queue never held more than the bound while the connection was open.
      assert.ok(server.largestOpenQueue > 0);
      assert.ok(server.largestOpenQueue <= maxQueueBytes, `${server.largestOpenQueue}`);
    } finally {
      await core.stop();
    }
  });

  test('reading stops while pauseAt frames wait to be handled, and resumes at resumeAt', async () => {
    const core = await coreServer({ inbound: { pauseAt: 4, resumeAt: 1 } });
    try {
      const { client, server } = await core.connect();
      for (let i = 0; i < 10; i++) client.send({ kind: 'hold' });
      await eventually('reading paused', () => server.paused === 1);
      assert.equal(server.resumed, 0);
      // Released one by one, as a protocol finishes its frames: reading resumes at one
      // waiting, and every frame arrives in the end.
      while (server.received < 10 || server.held.length > 0) {
        await eventually('a held frame', () => server.held.length > 0);
        server.held.shift()?.();
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.ok(server.resumed >= 1);
      assert.equal(server.paused, server.resumed);
      assert.equal((await client.request({ kind: 'echo' })).n, 11);
    } finally {
      await core.stop();
    }
  });

  test('an expected frame that does not come by its deadline closes the connection with 4408', async () => {
    const core = await coreServer();
    try {
      const { client, server } = await core.connect();
      server.connection.setDeadline(100);
      assert.equal((await client.closed).code, CLOSE_CODES.TIMEOUT.code);
      assert.equal(await server.closedWith, CLOSE_CODES.TIMEOUT);
    } finally {
      await core.stop();
    }
  });

  test('a credential sent later: refused with 401 it is answered, then closed with 4401; accepted it sets the caller', async () => {
    const core = await coreServer({
      auth: {
        kind: 'later',
        timeoutMs: 60_000,
        authenticate: async (credential) => {
          if (credential === 'busy') throw new ApiError('RATE_LIMITED');
          if (credential !== 'good') throw new ApiError('INVALID_API_KEY');
          return { caller: tokenCaller(Date.now() + 3_600_000), recheck: async () => {} };
        },
      },
    });
    try {
      const refused = await core.connect();
      assert.equal(refused.server.connection.caller, undefined);
      const error = await refused.client.request({ kind: 'auth', token: 'wrong' });
      assert.equal(error.code, 'INVALID_API_KEY');
      assert.equal((await refused.client.closed).code, CLOSE_CODES.UNAUTHENTICATED.code);

      const accepted = await core.connect();
      // A failure that is not a refusal leaves the connection open for another try.
      const auth = (token: string) => accepted.client.request({ kind: 'auth', token });
      assert.equal((await auth('busy')).code, 'RATE_LIMITED');
      assert.equal((await auth('good')).kind, 'authenticated');
      assert.equal(accepted.server.connection.caller?.token?.id, 'token:test');
      assert.equal((await auth('good')).code, 'BAD_REQUEST');
    } finally {
      await core.stop();
    }
  });

  test('a credential closes its connection with 4401 when it expires, or when a recheck refuses it', async () => {
    let revoked = false;
    const expiring = await coreServer({
      auth: { kind: 'request', caller: tokenCaller(Date.now() - 1), recheck: async () => {} },
    });
    const revocable = await coreServer({
      auth: {
        kind: 'request',
        caller: tokenCaller(Date.now() + 3_600_000),
        recheck: async () => {
          if (revoked) throw new ApiError('API_KEY_REVOKED');
        },
      },
    });
    try {
      const expired = await expiring.connect();
      assert.equal((await expired.client.closed).code, CLOSE_CODES.UNAUTHENTICATED.code);

      const { client, server } = await revocable.connect();
      assert.equal(await server.connection.recheckCredential(), true);
      revoked = true;
      // The keep-alive round rechecks it, as `WsConnections` runs it every ping interval.
      server.connection.tick();
      assert.equal((await client.closed).code, CLOSE_CODES.UNAUTHENTICATED.code);
      assert.equal(await server.closedWith, CLOSE_CODES.UNAUTHENTICATED);
    } finally {
      await expiring.stop();
      await revocable.stop();
    }
  });

  test('at shutdown every connection is closed with 1001, and a new one is closed at once with 1001', async () => {
    const core = await coreServer();
    const { client, server } = await core.connect();
    const stopped = core.connections.close();
    assert.equal((await client.closed).code, 1001);
    assert.equal(await server.closedWith, CLOSE_CODES.GOING_AWAY);
    await stopped;
    assert.equal(core.connections.size, 0);
    const late = core.refused();
    assert.equal((await late.closed).code, 1001);
    await core.stop();
  });
});

describe('realtime routes authenticate in the request pipeline', () => {
  const BURST = 5;
  let server: TestServer;
  before(async () => {
    // One token in 1,000 s: the counts below are exact.
    server = await startTestServer({
      env: { ORCHESTRA_RATE_LIMIT_PER_SECOND: '0.001', ORCHESTRA_RATE_LIMIT_BURST: String(BURST) },
    });
  });
  after(() => server.stop());

  async function realtimeToken(): Promise<string> {
    const key = await server.call('POST', '/v1/api-keys', {
      body: { name: 'rt', role: 'operator' },
    });
    const issued = await server.call('POST', '/v1/realtime/tokens', {
      key: key.body.secret,
      body: { topics: ['news.>'], publish: true },
    });
    assert.equal(issued.status, 201);
    return issued.body.token;
  }

  async function rateLimitedCount(scope: string): Promise<number> {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const line = text
      .split('\n')
      .find((l) => l.startsWith(`orchestra_rate_limited_requests_total{scope="${scope}"}`));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  test('a realtime token’s requests take from its own bucket and, refused, are counted like any other', async () => {
    const token = await realtimeToken();
    const before = await rateLimitedCount('credential');
    const statuses: number[] = [];
    for (let i = 0; i < BURST + 1; i++) {
      const response = await server.call('GET', '/v1/topics/news.today/presence', { key: token });
      statuses.push(response.status);
      if (i === 0) assert.equal(response.headers.get('ratelimit-limit'), String(BURST));
      if (response.status === 429) {
        assert.equal(response.body.error.code, 'RATE_LIMITED');
        assert.ok(Number(response.headers.get('retry-after')) > 0);
      }
    }
    assert.deepEqual(statuses, [...Array(BURST).fill(200), 429]);
    assert.equal(await rateLimitedCount('credential'), before + 1);
    // The address was not charged for them: a request without a credential still has its
    // whole burst (the IP bucket), and gets its 401.
    const anonymous = await server.call('GET', '/v1/topics/news.today/messages', { key: null });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('ratelimit-remaining'), String(BURST - 1));
  });

  test('a credential in an auth frame takes from the same bucket: when it is empty the frame gets RATE_LIMITED and the connection stays', async () => {
    const token = await realtimeToken();
    for (let i = 0; i < BURST; i++) {
      const response = await server.call('GET', '/v1/topics/news.today/presence', { key: token });
      assert.equal(response.status, 200);
    }
    const client = await RealtimeTestClient.open(server.url);
    try {
      const answer = await client.request({ kind: 'auth', token });
      assert.equal(answer.kind, 'error');
      assert.equal(answer.code, 'RATE_LIMITED');
      assert.ok(answer.details.retry_after_seconds > 0);
      assert.equal((await client.request({ kind: 'ping' })).code, 'UNAUTHENTICATED');
    } finally {
      client.close();
    }
  });

  test('the OpenAPI document lists what each realtime route accepts, from its declaration', async () => {
    const doc = (await server.call('GET', '/openapi.json')).body;
    const credentials = [{ bearerAuth: [] }, { apiKeyHeader: [] }, { realtimeToken: [] }];
    assert.deepEqual(doc.paths['/v1/realtime'].get.security, [...credentials, {}]);
    assert.deepEqual(doc.paths['/v1/topics/{topic}/events'].get.security, [
      ...credentials,
      { realtimeTokenQuery: [] },
    ]);
    for (const [path, method] of [
      ['/v1/topics/{topic}/messages', 'get'],
      ['/v1/topics/{topic}/messages', 'post'],
      ['/v1/topics/{topic}/presence', 'get'],
    ] as const) {
      assert.deepEqual(doc.paths[path][method].security, credentials, `${method} ${path}`);
    }
    // Routes that take no token say so too.
    assert.deepEqual(doc.paths['/v1/topics'].get.security, [
      { bearerAuth: [] },
      { apiKeyHeader: [] },
    ]);
  });
});
