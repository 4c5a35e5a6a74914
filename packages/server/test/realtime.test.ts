import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker } from '@orchestra/sdk';
import WebSocket from 'ws';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';
import {
  RealtimeTestClient as Client,
  contractProblem,
  contractViolations,
} from './realtime-client.ts';
import { SseReader } from './sse.ts';

// The realtime gateway through real WebSocket clients (the `ws` package), REST and SSE,
// as docs/protocol.md ("Realtime protocol") describes it.

for (const store of STORE_VARIANTS) {
  describe(`realtime gateway (${store})`, () => {
    let server: TestServer;
    const clients: Client[] = [];
    const open = async (credential?: string, options?: WebSocket.ClientOptions) => {
      const client = await Client.open(server.url, credential, options);
      clients.push(client);
      return client;
    };
    let keyOf: (role: string) => Promise<string>;

    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_TOPIC_HISTORY: 'short.>=5/3600000',
          ORCHESTRA_REALTIME_MAX_QUEUE_BYTES: '65536',
          ORCHESTRA_REALTIME_MAX_SUBSCRIPTIONS: '5',
          // The subscribe rate has its own suite below.
          ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND: '0',
        },
      });
      const keys = new Map<string, string>();
      keyOf = async (role) => {
        const known = keys.get(role);
        if (known) return known;
        const created = await server.call('POST', '/v1/api-keys', { body: { name: role, role } });
        const secret = (created.body as { secret: string }).secret;
        keys.set(role, secret);
        return secret;
      };
    });
    after(async () => {
      for (const c of clients) c.close();
      await server.stop();
    });

    test('a subscriber gets every message in order, with offsets', async () => {
      const sub = await open(server.adminKey);
      const subscribed = await sub.request({ kind: 'subscribe', topic: 'chat.order' });
      assert.equal(subscribed.kind, 'subscribed');
      assert.equal(subscribed.offset, 0);
      // Nobody has published yet: the topic has no epoch before its first message.
      assert.equal(subscribed.epoch, '');
      const pub = await open(server.adminKey);
      for (let i = 1; i <= 20; i++) pub.send({ kind: 'publish', topic: 'chat.order', data: { i } });
      const acked = await pub.request({
        kind: 'publish',
        topic: 'chat.order',
        data: { i: 21 },
        ack: true,
      });
      assert.equal(acked.kind, 'published');
      assert.equal(acked.offset, 21);
      assert.match(acked.epoch, /^.+$/);
      const messages = await sub.waitForMessages('chat.order', 21);
      assert.deepEqual(
        messages.map((m) => [m.offset, m.data.i, m.event]),
        Array.from({ length: 21 }, (_, k) => [k + 1, k + 1, 'message']),
      );
    });

    test('recovery after a dropped connection is gap-free and duplicate-free', async () => {
      const topic = 'chat.recover';
      const first = await open(server.adminKey);
      const { epoch } = await first.request({ kind: 'subscribe', topic });
      const pub = await open(server.adminKey);
      for (let i = 1; i <= 5; i++)
        await pub.request({ kind: 'publish', topic, data: i, ack: true });
      const seen = await first.waitForMessages(topic, 5);
      first.close();
      for (let i = 6; i <= 12; i++)
        await pub.request({ kind: 'publish', topic, data: i, ack: true });
      const again = await open(server.adminKey);
      const last = seen.at(-1)?.offset as number;
      // Live publishes keep coming while the replay runs.
      const live = (async () => {
        for (let i = 13; i <= 20; i++)
          await pub.request({ kind: 'publish', topic, data: i, ack: true });
      })();
      const answer = await again.request({ kind: 'subscribe', topic, from: last, epoch });
      assert.equal(answer.recovered, true);
      await live;
      const got = await again.waitForMessages(topic, 15);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(
        again.messages(topic).map((m) => m.offset),
        Array.from({ length: 15 }, (_, k) => k + 6),
      );
      assert.deepEqual(
        got.map((m) => m.data),
        Array.from({ length: 15 }, (_, k) => k + 6),
      );
    });

    test('recovered: false when history no longer covers the gap, or the epoch differs', async () => {
      const topic = 'short.trimmed'; // keeps 5 messages
      const pub = await open(server.adminKey);
      let epoch = '';
      for (let i = 1; i <= 12; i++) {
        epoch = (await pub.request({ kind: 'publish', topic, data: i, ack: true })).epoch;
      }
      const sub = await open(server.adminKey);
      const gone = await sub.request({ kind: 'subscribe', topic, from: 3, epoch });
      assert.equal(gone.recovered, false);
      assert.equal(gone.offset, 12);
      await pub.request({ kind: 'publish', topic, data: 13, ack: true });
      assert.deepEqual(
        (await sub.waitForMessages(topic, 1)).map((m) => m.offset),
        [13],
      );

      const covered = await open(server.adminKey);
      const ok = await covered.request({ kind: 'subscribe', topic, from: 9, epoch });
      assert.equal(ok.recovered, true);
      assert.deepEqual(
        (await covered.waitForMessages(topic, 4)).map((m) => m.offset),
        [10, 11, 12, 13],
      );

      const otherEpoch = await open(server.adminKey);
      const wrong = await otherEpoch.request({
        kind: 'subscribe',
        topic,
        from: 12,
        epoch: 'not-it',
      });
      assert.equal(wrong.recovered, false);
      assert.equal(wrong.epoch, epoch);

      const history = await server.call('GET', `/v1/topics/${topic}/messages?after=0`);
      assert.equal(history.status, 200);
      assert.equal(history.body.first_offset, 9);
      assert.deepEqual(
        history.body.messages.map((m: { offset: number }) => m.offset),
        [9, 10, 11, 12, 13],
      );
    });

    test('a deleted and re-created topic has a new epoch', async () => {
      const topic = 'chat.deleted';
      const first = await server.call('POST', `/v1/topics/${topic}/messages`, {
        body: { data: 1 },
      });
      assert.equal(first.status, 201);
      const sub = await open(server.adminKey);
      await sub.request({ kind: 'subscribe', topic });
      assert.equal((await server.call('DELETE', `/v1/topics/${topic}`)).status, 204);
      const ended = await sub.next((f) => f.payload.kind === 'unsubscribed');
      assert.equal(ended.payload.reason, 'topic_deleted');
      const again = await server.call('POST', `/v1/topics/${topic}/messages`, {
        body: { data: 2 },
      });
      assert.equal(again.body.offset, 1);
      assert.notEqual(again.body.epoch, first.body.epoch);
      expectError(await server.call('DELETE', '/v1/topics/chat.never'), 404, 'TOPIC_NOT_FOUND');
    });

    const metric = async (series: string): Promise<number> => {
      const res = await fetch(`${server.url}/metrics`);
      const line = (await res.text()).split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? 0 : Number(line.split(' ').at(-1));
    };
    const slowConsumerCuts = () => metric('orchestra_realtime_server_closes_total{code="4507"}');

    test('a slow consumer is cut with 4507 and the others are unaffected', async () => {
      const topic = 'chat.slow';
      const slow = await open(server.adminKey);
      const fast = await open(server.adminKey);
      await slow.request({ kind: 'subscribe', topic });
      await fast.request({ kind: 'subscribe', topic });
      // The slow client stops reading from its TCP socket.
      (slow.socket as unknown as { _socket: { pause(): void } })._socket.pause();
      const pub = await open(server.adminKey);
      assert.ok((await metric('orchestra_realtime_connections')) >= 3);
      // More than the kernel's socket buffers on loopback can absorb (a few MiB), so that
      // the server's own queue for the slow client passes its 64 KiB limit.
      const big = 'x'.repeat(16_000);
      const count = 1200;
      // The slow client reads again as soon as the server has cut it: a client that
      // reads nothing for 5 s after the cut is terminated without its close frame.
      const cutsBefore = await slowConsumerCuts();
      const resumed = (async () => {
        while ((await slowConsumerCuts()) === cutsBefore) {
          await new Promise((r) => setTimeout(r, 25));
        }
        (slow.socket as unknown as { _socket: { resume(): void } })._socket.resume();
      })();
      for (let i = 1; i <= count; i++) {
        if (i % 50 === 0) await pub.request({ kind: 'publish', topic, data: big, ack: true });
        else pub.send({ kind: 'publish', topic, data: big });
      }
      await resumed;
      const messages = await fast.waitForMessages(topic, count);
      assert.deepEqual(
        messages.map((m) => m.offset),
        Array.from({ length: count }, (_, k) => k + 1),
      );
      const { code } = await slow.closed;
      assert.equal(code, 4507);
      assert.ok(slow.messages(topic).length < count);
    });

    test('a subscriber of tenant B never receives tenant A’s topics', async () => {
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `rt-b-${store}` } });
      const otherKey = (tenant.body as { admin_key: { secret: string } }).admin_key.secret;
      const b = await open(otherKey);
      await b.request({ kind: 'subscribe', topic: 'shared.name' });
      await b.request({ kind: 'subscribe', topic: 'shared.*' });
      const a = await open(server.adminKey);
      await a.request({ kind: 'subscribe', topic: 'shared.name' });
      await server.call('POST', '/v1/topics/shared.name/messages', { body: { data: 'from A' } });
      await a.waitForMessages('shared.name', 1);
      await server.call('POST', '/v1/topics/shared.name/messages', {
        key: otherKey,
        body: { data: 'from B' },
      });
      const got = await b.waitForMessages('shared.name', 1);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(
        b.messages('shared.name').map((m) => m.data),
        ['from B'],
      );
      assert.equal(got[0]?.offset, 1);
      assert.deepEqual(
        a.messages('shared.name').map((m) => m.data),
        ['from A'],
      );
      // Tenant A's task topics do not exist for B.
      const task = await server.call('POST', '/v1/tasks', { body: { capabilities: ['none'] } });
      const refused = await b.request({ kind: 'subscribe', topic: `tasks.${task.body.id}` });
      assert.equal(refused.code, 'TOPIC_NOT_FOUND');
      expectError(
        await server.call('GET', `/v1/topics/tasks.${task.body.id}/messages`, { key: otherKey }),
        404,
        'TOPIC_NOT_FOUND',
      );
      await server.call('POST', `/v1/tasks/${task.body.id}/cancel`);
    });

    test('publishing without permission is refused', async () => {
      const viewer = await open(await keyOf('viewer'));
      const denied = await viewer.request({ kind: 'publish', topic: 'chat.x', data: 1, ack: true });
      assert.equal(denied.kind, 'error');
      assert.equal(denied.code, 'PERMISSION_DENIED');
      const admin = await open(server.adminKey);
      const system = await admin.request({ kind: 'publish', topic: 'tasks.tsk_x', data: 1 });
      assert.equal(system.code, 'PERMISSION_DENIED');
      expectError(
        await server.call('POST', '/v1/topics/agents/messages', { body: { data: 1 } }),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await server.call('POST', '/v1/topics/chat.x/messages', {
          key: await keyOf('viewer'),
          body: { data: 1 },
        }),
        403,
        'PERMISSION_DENIED',
      );
      const agent = await open(await keyOf('agent'));
      assert.equal(
        (await agent.request({ kind: 'subscribe', topic: 'agents' })).code,
        'PERMISSION_DENIED',
      );
      assert.equal(
        (await agent.request({ kind: 'subscribe', topic: 'chat.agent' })).kind,
        'subscribed',
      );
      // A subscription survives a refused frame.
      assert.equal(
        (await viewer.request({ kind: 'subscribe', topic: 'chat.x' })).kind,
        'subscribed',
      );
    });

    test('a realtime token grants its topics to a browser-style client, and nothing else', async () => {
      const issued = await server.call('POST', '/v1/realtime/tokens', {
        body: {
          topics: ['room.1', 'feed.>'],
          client_id: 'ada',
          info: { name: 'Ada' },
          ttl_seconds: 60,
        },
      });
      assert.equal(issued.status, 201);
      const token = issued.body.token as string;
      assert.match(token, /^ort_/);
      // No credential in the upgrade: the first frame authenticates.
      const browser = await open();
      const early = await browser.request({ kind: 'ping' });
      assert.equal(early.code, 'UNAUTHENTICATED');
      assert.equal((await browser.closed).code, 4401);

      const ok = await open();
      const auth = await ok.request({ kind: 'auth', token });
      assert.equal(auth.kind, 'authenticated');
      assert.equal(auth.role, 'token');
      assert.equal(auth.client_id, 'ada');
      assert.equal(
        (await ok.request({ kind: 'subscribe', topic: 'room.1', presence: true })).kind,
        'subscribed',
      );
      assert.equal((await ok.request({ kind: 'subscribe', topic: 'feed.>' })).kind, 'subscribed');
      assert.equal(
        (await ok.request({ kind: 'subscribe', topic: 'room.2' })).code,
        'PERMISSION_DENIED',
      );
      assert.equal(
        (await ok.request({ kind: 'publish', topic: 'room.1', data: 1 })).code,
        'PERMISSION_DENIED',
      );
      await server.call('POST', '/v1/topics/feed.a.b/messages', { body: { data: 'deep' } });
      const [deep] = await ok.waitForMessages('feed.a.b', 1);
      assert.equal(deep?.data, 'deep');
      // The token reads over REST too, but reaches no other route.
      assert.equal(
        (await server.call('GET', '/v1/topics/room.1/presence', { key: token })).body.members[0]
          .client_id,
        'ada',
      );
      expectError(await server.call('GET', '/v1/tasks', { key: token }), 401, 'INVALID_TOKEN');
      const forged = `${token.slice(0, -3)}abc`;
      const bad = await open();
      assert.equal((await bad.request({ kind: 'auth', token: forged })).code, 'INVALID_TOKEN');
      assert.equal((await bad.closed).code, 4401);
      expectError(
        await server.call('POST', '/v1/realtime/tokens', { body: { topics: ['a..b'] } }),
        400,
        'VALIDATION_FAILED',
      );
    });

    test('presence lists members and tells members who joins and leaves', async () => {
      const topic = 'room.presence';
      const ada = await open(server.adminKey);
      await ada.request({ kind: 'subscribe', topic, presence: true, info: { name: 'Ada' } });
      const bob = await open(server.adminKey);
      await bob.request({ kind: 'subscribe', topic, presence: true, info: { name: 'Bob' } });
      const joined = await ada.next((f) => f.payload.kind === 'presence.join');
      assert.deepEqual(joined.payload.member.info, { name: 'Bob' });
      const list = await ada.request({ kind: 'presence', topic });
      assert.deepEqual(
        list.members.map((m: { info: { name: string } }) => m.info.name),
        ['Ada', 'Bob'],
      );
      bob.close();
      const left = await ada.next((f) => f.payload.kind === 'presence.leave');
      assert.deepEqual(left.payload.member.info, { name: 'Bob' });
      const rest = await server.call('GET', `/v1/topics/${topic}/presence`);
      assert.deepEqual(
        rest.body.members.map((m: { info: { name: string } }) => m.info.name),
        ['Ada'],
      );
    });

    test('a task’s events arrive on tasks.<id> in order, and agent changes on agents', async () => {
      const watcher = await open(server.adminKey);
      await watcher.request({ kind: 'subscribe', topic: 'agents' });
      await watcher.request({ kind: 'subscribe', topic: 'tasks.*' });
      const worker = new AgentWorker({
        url: server.url,
        apiKey: await keyOf('agent'),
        agentId: `rt-agent-${store}`,
        capabilities: ['rt-echo'],
        concurrency: 1,
        handleSignals: false,
        handler: async (input, ctx) => {
          ctx.progress(1, 2);
          ctx.output('half');
          return input;
        },
      });
      await worker.start();
      try {
        const online = await watcher.next(
          (f) => f.payload.topic === 'agents' && f.payload.event === 'agent.online',
        );
        assert.equal(online.payload.data.agent_id, `rt-agent-${store}`);
        const session = await server.call('POST', '/v1/sessions', { body: {} });
        assert.equal(session.status, 201);
        const task = await server.call('POST', '/v1/tasks', {
          body: { capabilities: ['rt-echo'], input: { a: 1 }, session_id: session.body.id },
        });
        const sub = await open(server.adminKey);
        const answer = await sub.request({
          kind: 'subscribe',
          topic: `tasks.${task.body.id}`,
          from: 0,
        });
        assert.equal(answer.recovered, true);
        const topic = `tasks.${task.body.id}`;
        await sub.next(() => sub.messages(topic).some((m) => m.event === 'task.succeeded'));
        const events = sub.messages(topic);
        assert.deepEqual(
          events.map((m) => m.offset),
          events.map((_, i) => i + 1),
        );
        assert.deepEqual(
          events.map((m) => m.event),
          [
            'task.queued',
            'task.assigned',
            'task.running',
            'task.progress',
            'task.output',
            'task.succeeded',
          ],
        );
        // The pattern subscription saw the same events.
        await watcher.next(() => watcher.messages(topic).length === 6);
        // And the session's topic carries them too, with the session's own offsets.
        const sessionTopic = `sessions.${session.body.id}`;
        assert.equal(
          (await sub.request({ kind: 'subscribe', topic: sessionTopic, from: 0 })).recovered,
          true,
        );
        const inSession = await sub.waitForMessages(sessionTopic, 7);
        assert.deepEqual(
          inSession.map((m) => [m.offset, m.event, m.data.task_id]),
          [
            [1, 'session.created', undefined],
            ...events.map((m, i) => [i + 2, m.event, task.body.id]),
          ],
        );
      } finally {
        await worker.stop();
      }
    });

    const listedTopics = async (prefix: string) =>
      (await server.call('GET', `/v1/topics?prefix=${prefix}`)).body.items.map(
        (t: { name: string }) => t.name,
      );

    test('a viewer subscribing and unsubscribing 200 fresh topic names stores no topic', async () => {
      const viewer = await open(await keyOf('viewer'));
      for (let i = 0; i < 200; i++) {
        const topic = `fresh.n${i}`;
        const subscribed = await viewer.request({ kind: 'subscribe', topic });
        assert.deepEqual(
          [subscribed.kind, subscribed.epoch, subscribed.offset],
          ['subscribed', '', 0],
        );
        assert.equal((await viewer.request({ kind: 'unsubscribe', topic })).kind, 'unsubscribed');
      }
      assert.deepEqual(await listedTopics('fresh.'), []);
      // A subscription made before the topic exists receives its first messages.
      const waiting = await viewer.request({ kind: 'subscribe', topic: 'fresh.later' });
      assert.deepEqual([waiting.epoch, waiting.offset], ['', 0]);
      const publisher = await open(server.adminKey);
      const first = await publisher.request({
        kind: 'publish',
        topic: 'fresh.later',
        data: 1,
        ack: true,
      });
      await publisher.request({ kind: 'publish', topic: 'fresh.later', data: 2, ack: true });
      const received = await viewer.waitForMessages('fresh.later', 2);
      assert.deepEqual(
        received.map((m) => [m.offset, m.data]),
        [
          [1, 1],
          [2, 2],
        ],
      );
      assert.deepEqual(await listedTopics('fresh.'), ['fresh.later']);
      // Resuming with the empty epoch it was given recovers what followed.
      const again = await open(await keyOf('viewer'));
      const resumed = await again.request({
        kind: 'subscribe',
        topic: 'fresh.later',
        from: 1,
        epoch: '',
      });
      assert.deepEqual([resumed.recovered, resumed.epoch], [true, first.epoch]);
      assert.deepEqual(
        (await again.waitForMessages('fresh.later', 1)).map((m) => m.offset),
        [2],
      );
    });

    test('GET /v1/topics/{t}/events on a fresh name stores no topic, and follows it once published', async () => {
      const reader = await SseReader.open(`${server.url}/v1/topics/fresh-sse.a/events`, {
        authorization: `Bearer ${await keyOf('viewer')}`,
      });
      assert.equal(reader.status, 200);
      assert.deepEqual(await listedTopics('fresh-sse.'), []);
      const history = await server.call('GET', '/v1/topics/fresh-sse.a/messages');
      expectError(history, 404, 'TOPIC_NOT_FOUND');
      await server.call('GET', '/v1/topics/fresh-sse.a/presence');
      assert.deepEqual(await listedTopics('fresh-sse.'), []);
      await server.call('POST', '/v1/topics/fresh-sse.a/messages', { body: { data: 'hi' } });
      const events = await reader.waitFor((all) => all.length >= 1);
      assert.deepEqual([events[0]?.id, events[0]?.data.data], ['1', 'hi']);
      reader.close();
    });

    test('SSE resume with Last-Event-ID is gap-free', async () => {
      const topic = 'chat.sse';
      for (let i = 1; i <= 5; i++)
        await server.call('POST', `/v1/topics/${topic}/messages`, { body: { data: i } });
      const read = async (headers: Record<string, string>, count: number) => {
        const controller = new AbortController();
        const response = await fetch(`${server.url}/v1/topics/${topic}/events`, {
          headers: {
            authorization: `Bearer ${server.adminKey}`,
            accept: 'text/event-stream',
            ...headers,
          },
          signal: controller.signal,
        });
        assert.equal(response.status, 200);
        const ids: number[] = [];
        const decoder = new TextDecoder();
        let text = '';
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          text += decoder.decode(chunk, { stream: true });
          const found = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
          if (found.length >= count) {
            ids.push(...found);
            break;
          }
        }
        controller.abort();
        return ids;
      };
      assert.deepEqual(await read({ 'last-event-id': '2' }, 3), [3, 4, 5]);
      const live = read({ 'last-event-id': '5' }, 2);
      await new Promise((r) => setTimeout(r, 200));
      for (let i = 6; i <= 7; i++)
        await server.call('POST', `/v1/topics/${topic}/messages`, { body: { data: i } });
      assert.deepEqual(await live, [6, 7]);
    });

    test('bad frames get error frames; too many close with 4400; a huge one with 1009', async () => {
      const client = await open(server.adminKey);
      client.sendRaw('not json');
      assert.equal(
        (await client.next((f) => f.payload.kind === 'error')).payload.code,
        'INVALID_JSON',
      );
      const unknown = await client.request({ kind: 'shout' });
      assert.equal(unknown.code, 'VALIDATION_FAILED');
      assert.equal(unknown.details.fields[0].field, 'payload.kind');
      const badTopic = await client.request({ kind: 'subscribe', topic: 'a..b' });
      assert.equal(badTopic.details.fields[0].field, 'payload.topic');
      const missing = await client.request({ kind: 'publish', topic: 'chat.x' });
      assert.equal(missing.details.fields[0].field, 'payload.data');
      assert.equal(
        (await client.request({ kind: 'unsubscribe', topic: 'chat.none' })).code,
        'NOT_SUBSCRIBED',
      );
      for (let i = 0; i < 5; i++) {
        const ok = await client.request({ kind: 'subscribe', topic: `chat.limit${i}` });
        assert.equal(ok.kind, 'subscribed');
      }
      assert.equal(
        (await client.request({ kind: 'subscribe', topic: 'chat.limit0' })).code,
        'ALREADY_SUBSCRIBED',
      );
      assert.equal(
        (await client.request({ kind: 'subscribe', topic: 'chat.limit9' })).code,
        'SUBSCRIPTION_LIMIT_REACHED',
      );
      assert.equal((await client.request({ kind: 'ping' })).kind, 'pong');
      for (let i = 0; i < 25; i++) client.sendRaw('{');
      assert.equal((await client.closed).code, 4400);

      const big = await open(server.adminKey);
      big.sendRaw(JSON.stringify({ pad: 'x'.repeat(70_000) }));
      assert.equal((await big.closed).code, 1009);

      // The server is unaffected.
      const fine = await open(server.adminKey);
      assert.equal((await fine.request({ kind: 'ping' })).kind, 'pong');
      expectError(await server.call('GET', '/v1/realtime'), 426, 'UPGRADE_REQUIRED');
      await assert.rejects(Client.open(server.url, 'ork_wrong'), /401/);
    });

    test('compressed connections receive the broadcast intact', async () => {
      // Compression is off on this server: negotiation is declined and messages still flow.
      const client = await open(server.adminKey, { perMessageDeflate: true });
      assert.equal(client.socket.extensions, '');
      await client.request({ kind: 'subscribe', topic: 'chat.plain' });
      await server.call('POST', '/v1/topics/chat.plain/messages', {
        body: { data: 'y'.repeat(5000) },
      });
      assert.equal((await client.waitForMessages('chat.plain', 1))[0]?.data.length, 5000);
    });
  });
}

describe('realtime subscribe rate', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      // A burst of 3, then one subscribe per 1000 s: the 4th within a test is over the rate.
      env: {
        ORCHESTRA_REALTIME_MAX_SUBSCRIPTIONS: '3',
        ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND: '0.001',
      },
    });
  });
  after(async () => server.stop());

  test('subscribe frames over ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND get RATE_LIMITED; the connection stays', async () => {
    const client = await Client.open(server.url, server.adminKey);
    try {
      for (const topic of ['rate.a', 'rate.b', 'rate.c']) {
        assert.equal((await client.request({ kind: 'subscribe', topic })).kind, 'subscribed');
      }
      await client.request({ kind: 'unsubscribe', topic: 'rate.a' });
      const refused = await client.request({ kind: 'subscribe', topic: 'rate.d' });
      assert.equal(refused.kind, 'error');
      assert.equal(refused.code, 'RATE_LIMITED');
      assert.equal(refused.details.limit, 'ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND');
      assert.equal(refused.details.value, 0.001);
      assert.ok(refused.details.retry_after_seconds > 0);
      assert.equal((await client.request({ kind: 'ping' })).kind, 'pong');
      // Another connection has its own budget.
      const other = await Client.open(server.url, server.adminKey);
      assert.equal(
        (await other.request({ kind: 'subscribe', topic: 'rate.d' })).kind,
        'subscribed',
      );
      other.close();
    } finally {
      client.close();
    }
  });
});

describe('realtime compression', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { ORCHESTRA_REALTIME_COMPRESSION: 'true' } });
  });
  after(async () => server.stop());

  test('a broadcast is compressed once and every deflate subscriber decodes it', async () => {
    const clients = await Promise.all(
      [true, true, false].map((deflate) =>
        Client.open(server.url, server.adminKey, { perMessageDeflate: deflate }),
      ),
    );
    try {
      assert.match(clients[0]?.socket.extensions ?? '', /permessage-deflate/);
      for (const c of clients) await c.request({ kind: 'subscribe', topic: 'zip.me' });
      const data = { text: 'compress me '.repeat(500) };
      for (let i = 0; i < 3; i++)
        await server.call('POST', '/v1/topics/zip.me/messages', { body: { data } });
      for (const c of clients) {
        const got = await c.waitForMessages('zip.me', 3);
        assert.deepEqual(
          got.map((m) => m.data),
          [data, data, data],
        );
        assert.deepEqual(
          got.map((m) => m.offset),
          [1, 2, 3],
        );
      }
      // The same frame (one header id) went to all of them.
      const ids = clients.map((c) =>
        c.frames.filter((f) => f.payload.kind === 'message').map((f) => f.header.id),
      );
      assert.deepEqual(ids[0], ids[1]);
      assert.deepEqual(ids[0], ids[2]);
    } finally {
      for (const c of clients) c.close();
    }
  });
});

describe('realtime liveness and credentials while connected', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { ORCHESTRA_REALTIME_PING_INTERVAL_MS: '300' } });
  });
  after(async () => server.stop());

  test('a client that answers pings stays; one that stops answering is dropped', async () => {
    const live = await Client.open(server.url, server.adminKey);
    const mute = await Client.open(server.url, server.adminKey, { autoPong: false });
    try {
      // The mute client is pinged, does not answer, and is gone by the next ping.
      const closed = await mute.closed;
      assert.equal(closed.code, 1006);
      assert.ok(mute.pings >= 1, 'the server pinged the mute client');
      assert.equal(live.socket.readyState, WebSocket.OPEN);
      assert.equal((await live.request({ kind: 'ping' })).kind, 'pong');
    } finally {
      live.close();
      mute.close();
    }
  });

  test('revoking an API key closes its open connections with 4401', async () => {
    const created = await server.call('POST', '/v1/api-keys', {
      body: { name: 'revoked-while-connected', role: 'viewer' },
    });
    const other = await server.call('POST', '/v1/api-keys', {
      body: { name: 'kept', role: 'viewer' },
    });
    const doomed = await Client.open(server.url, created.body.secret);
    const kept = await Client.open(server.url, other.body.secret);
    try {
      assert.equal(
        (await doomed.request({ kind: 'subscribe', topic: 'rev.a' })).kind,
        'subscribed',
      );
      const revoked = await server.call('DELETE', `/v1/api-keys/${created.body.id}`);
      assert.equal(revoked.status, 200);
      assert.equal((await doomed.closed).code, 4401);
      assert.equal(kept.socket.readyState, WebSocket.OPEN);
      assert.equal((await kept.request({ kind: 'ping' })).kind, 'pong');
    } finally {
      doomed.close();
      kept.close();
    }
  });

  test('a realtime token that expires while connected closes the connection with 4401', async () => {
    const issued = await server.call('POST', '/v1/realtime/tokens', {
      body: { topics: ['short.lived'], ttl_seconds: 1 },
    });
    const client = await Client.open(server.url);
    try {
      assert.equal(
        (await client.request({ kind: 'auth', token: issued.body.token })).kind,
        'authenticated',
      );
      assert.equal(
        (await client.request({ kind: 'subscribe', topic: 'short.lived' })).kind,
        'subscribed',
      );
      const closed = await client.closed;
      assert.equal(closed.code, 4401);
      // Timers may fire a millisecond early; the close must not come sooner than that.
      assert.ok(Date.now() + 5 >= Date.parse(issued.body.expires_at), 'not closed before expiry');
    } finally {
      client.close();
    }
  });
});

// Last in the file: the clients above kept every frame the server sent them.
test('every frame the server sent in this file follows the wire contract (REALTIME_SERVER_FRAMES)', () => {
  assert.deepEqual(contractViolations, []);
  // And the check sees a frame that does not.
  assert.match(String(contractProblem({ kind: 'pong', extra: true })), /payload/);
  assert.match(String(contractProblem({ kind: 'subscribed' })), /topic|required/);
  assert.match(String(contractProblem({ kind: 'messages' })), /unknown payload.kind/);
});
