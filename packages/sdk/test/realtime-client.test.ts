import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closedPort } from '../../server/test/helpers.ts';
import { type ConnectionStatus, RealtimeClient, type TopicMessage } from '../src/index.ts';
import { type RestartableServer, rejection, startRestartableServer } from './support.ts';

// RealtimeClient against a real `orchestra start`, killed and restarted under it: the
// client reconnects on its own, re-subscribes from its last offset and loses nothing.

describe('SDK RealtimeClient', () => {
  let server: RestartableServer;
  const clients: RealtimeClient[] = [];
  const client = (token?: string) => {
    const c = new RealtimeClient({
      url: server.url,
      apiKey: token ?? server.adminKey,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startRestartableServer('sqlite', {
      ORCHESTRA_TOPIC_HISTORY: 'brief.>=3/3600000',
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.remove();
  });

  test('with several URLs, a node that is down is passed over; all down rejects connect', async () => {
    const down = `http://127.0.0.1:${await closedPort()}`;
    const statuses: ConnectionStatus[] = [];
    const c = new RealtimeClient({
      url: [down, server.url],
      apiKey: server.adminKey,
      onStatus: (status) => statuses.push(status),
    });
    clients.push(c);
    await c.connect();
    assert.equal(c.url, server.url);
    assert.equal((await c.publish('sdk.failover', { n: 1 })).offset, 1);
    // The dead node was tried first, and the next one at once.
    assert.deepEqual(
      statuses.map((s) => [s.state, s.url, s.retryInMs]),
      [
        ['connecting', server.url, 0],
        ['connected', server.url, undefined],
      ],
    );

    const nowhere = new RealtimeClient({
      url: [down, `http://127.0.0.1:${await closedPort()}`],
      apiKey: server.adminKey,
    });
    clients.push(nowhere);
    const err = await rejection(() => nowhere.connect());
    assert.equal(err.code, 'CONNECTION_FAILED');
    // Not left retrying in the background (that would keep this test file from ending):
    // a later connect starts over.
    assert.equal((await rejection(() => nowhere.connect())).code, 'CONNECTION_FAILED');
    assert.throws(() => new RealtimeClient({ url: [], apiKey: 'x' }), TypeError);
  });

  test('subscribe, publish with offsets, history and presence', async () => {
    const sub = client();
    const got: TopicMessage<{ n: number }>[] = [];
    await sub.subscribe<{ n: number }>('sdk.basic', {
      presence: true,
      info: { name: 'Ada' },
      onMessage: (m) => got.push(m),
    });
    const pub = client();
    const first = await pub.publish('sdk.basic', { n: 1 });
    assert.equal(first.offset, 1);
    await pub.publish('sdk.basic', { n: 2 }, { event: 'count' });
    while (got.length < 2) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      got.map((m) => [m.offset, m.data.n, m.event]),
      [
        [1, 1, 'message'],
        [2, 2, 'count'],
      ],
    );
    const history = await pub.history('sdk.basic', { last: 1 });
    assert.deepEqual(
      history.messages.map((m) => m.offset),
      [2],
    );
    const members = await pub.presence('sdk.basic');
    assert.deepEqual(
      members.map((m) => m.info),
      [{ name: 'Ada' }],
    );
    const denied = await rejection(() => pub.publish('tasks.x', 1));
    assert.equal(denied.code, 'PERMISSION_DENIED');
  });

  test('after the server restarts, the client recovers every message published meanwhile', async () => {
    const sub = client();
    const subscription = await sub.subscribe<number>('sdk.recover');
    const reader = (async () => {
      const seen: number[] = [];
      for await (const m of subscription) {
        seen.push(m.offset);
        if (seen.length === 10) return seen;
      }
      return seen;
    })();
    const publish = (n: number) =>
      fetch(`${server.url}/v1/topics/sdk.recover/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ data: n }),
      }).then((r) => assert.equal(r.status, 201));
    for (let n = 1; n <= 4; n++) await publish(n);
    while ((subscription.offset ?? 0) < 4) await new Promise((r) => setTimeout(r, 10));
    await server.crash();
    await server.restart();
    for (let n = 5; n <= 10; n++) await publish(n);
    assert.deepEqual(await reader, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(sub.state, 'connected');
  });

  test('when history no longer covers the gap, onRecoveryFailed says so', async () => {
    const pub = client();
    let epoch = '';
    for (let n = 1; n <= 6; n++) epoch = (await pub.publish('brief.topic', n)).epoch; // keeps 3
    const sub = client();
    let failed: { epoch: string; offset: number } | undefined;
    const got: number[] = [];
    const subscription = await sub.subscribe<number>('brief.topic', {
      from: { offset: 1, epoch }, // saved before a reload, say
      onMessage: (m) => got.push(m.data),
      onRecoveryFailed: (info) => {
        failed = info;
      },
    });
    assert.deepEqual(failed, { topic: 'brief.topic', epoch, offset: 6 });
    assert.equal(subscription.offset, 6);
    await pub.publish('brief.topic', 7);
    while (got.length < 1) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got, [7]);

    const fine = client();
    const replayed: number[] = [];
    await fine.subscribe<number>('brief.topic', {
      from: { offset: 5, epoch },
      onMessage: (m) => replayed.push(m.data),
      onRecoveryFailed: () => assert.fail('recovery was possible'),
    });
    while (replayed.length < 2) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(replayed, [6, 7]);
  });
});
