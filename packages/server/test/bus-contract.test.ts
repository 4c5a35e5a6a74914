import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { type Bus, InProcessBus } from '../src/bus/bus.ts';
import { NatsBus } from '../src/bus/nats.ts';
import { startTestServer } from './helpers.ts';
import { NatsServer } from './nats-server.ts';

// One contract for both buses: the in-process one, and NATS against the NATS server the
// machine runs (127.0.0.1:4222), each run under a prefix of its own.

const NATS_URL = process.env.ORCHESTRA_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const log = pino({ level: 'silent' });

const natsBus = (prefix: string, servers = [NATS_URL]) =>
  NatsBus.connect({ servers, prefix, name: 'orchestra test', log });

/** Collects what a subscription receives; `until` waits for a message that passes `match`. */
function inbox(bus: Bus, subject: string) {
  const messages: unknown[] = [];
  const waiters: { match: (m: unknown) => boolean; resolve: () => void }[] = [];
  const stop = bus.subscribe(subject, (m) => {
    messages.push(m);
    for (const w of [...waiters]) {
      if (w.match(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  return {
    messages,
    stop,
    until(match: (m: unknown) => boolean, what = 'a message'): Promise<void> {
      if (messages.some(match)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 10_000);
        waiters.push({
          match,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
}

const isMarker = (id: string) => (m: unknown) => (m as { marker?: string }).marker === id;

for (const variant of ['in-process', 'nats'] as const) {
  describe(`bus contract: ${variant}`, () => {
    let bus: Bus;
    before(async () => {
      bus = variant === 'nats' ? await natsBus(`t${randomUUID().slice(0, 8)}`) : new InProcessBus();
    });
    after(async () => {
      await bus.close();
    });

    test('a message reaches every subscriber of its subject, in order, and no other subject', async () => {
      const a1 = inbox(bus, 'events.s1');
      const a2 = inbox(bus, 'events.s1');
      const b = inbox(bus, 'events.s2');
      for (let i = 0; i < 50; i++) bus.publish('events.s1', { i, data: { nested: [i, 'x'] } });
      bus.publish('events.s2', { marker: 'end' });
      await b.until(isMarker('end'));
      await a1.until((m) => (m as { i?: number }).i === 49);
      await a2.until((m) => (m as { i?: number }).i === 49);
      const expected = Array.from({ length: 50 }, (_, i) => ({ i, data: { nested: [i, 'x'] } }));
      assert.deepEqual(a1.messages, expected);
      assert.deepEqual(a2.messages, expected);
      assert.deepEqual(b.messages, [{ marker: 'end' }]);
      for (const x of [a1, a2, b]) x.stop();
    });

    test('subjects are kept apart whatever they hold: dots, spaces, wildcards, escapes, unicode', async () => {
      const subjects = ['a.b', 'a=2eb', 'a b', 'a.*', 'a.>', 'tenant.ümlaut.話', 'x..y', '.', ''];
      const inboxes = subjects.map((s) => inbox(bus, s));
      subjects.forEach((s, i) => {
        bus.publish(s, { i });
      });
      for (const [i, box] of inboxes.entries()) {
        await box.until((m) => (m as { i?: number }).i === i, `subject ${subjects[i]}`);
      }
      // Every message published so far has been handed out; none went astray.
      const last = inbox(bus, 'last');
      bus.publish('last', { marker: 'last' });
      await last.until(isMarker('last'));
      for (const [i, box] of inboxes.entries())
        assert.deepEqual(box.messages, [{ i }], subjects[i]);
      for (const box of [...inboxes, last]) box.stop();
    });

    test('unsubscribing stops one handler; a throwing handler does not stop the others', async () => {
      const kept = inbox(bus, 'u');
      const dropped = inbox(bus, 'u');
      const thrower = bus.subscribe('u', () => {
        throw new Error('handler bug');
      });
      bus.publish('u', { n: 1 });
      await dropped.until((m) => (m as { n?: number }).n === 1);
      dropped.stop();
      bus.publish('u', { n: 2 });
      await kept.until((m) => (m as { n?: number }).n === 2);
      assert.deepEqual(kept.messages, [{ n: 1 }, { n: 2 }]);
      assert.deepEqual(dropped.messages, [{ n: 1 }]);
      thrower();
      kept.stop();
      // With no subscriber left, publishing is a no-op, not an error.
      bus.publish('u', { n: 3 });
    });

    test('ping answers while the bus works', async () => {
      await bus.ping(2_000);
    });
  });
}

describe('bus on NATS across nodes', () => {
  test('every node sees what any node publishes; another prefix sees nothing', async () => {
    const prefix = `t${randomUUID().slice(0, 8)}`;
    const nodes = [await natsBus(prefix), await natsBus(prefix), await natsBus(prefix)];
    const stranger = await natsBus(`${prefix}x`);
    try {
      const boxes = nodes.map((n) => inbox(n, 'tasks.dispatch'));
      const strangerBox = inbox(stranger, 'tasks.dispatch');
      await Promise.all(nodes.map((n) => n.ping(2_000)));
      await stranger.ping(2_000);
      nodes.forEach((n, i) => {
        n.publish('tasks.dispatch', { from: i });
      });
      stranger.publish('tasks.dispatch', { marker: 'stranger' });
      for (const box of boxes) {
        for (let i = 0; i < nodes.length; i++) {
          await box.until((m) => (m as { from?: number }).from === i);
        }
        assert.equal(box.messages.length, 3);
      }
      await strangerBox.until(isMarker('stranger'));
      assert.deepEqual(strangerBox.messages, [{ marker: 'stranger' }]);
    } finally {
      for (const n of [...nodes, stranger]) await n.close();
    }
  });

  test('NATS down: publishes are dropped and counted, ping fails; NATS back: messages flow again', async () => {
    const server = await NatsServer.start();
    const a = await natsBus('restart', [server.url]);
    const b = await natsBus('restart', [server.url]);
    try {
      const box = inbox(b, 's');
      await b.ping(2_000); // the subscription has reached the server before a publishes
      a.publish('s', { n: 1 });
      await box.until((m) => (m as { n?: number }).n === 1);
      await server.kill();
      // The clients notice the closed socket at once; until then a publish is buffered.
      const deadline = Date.now() + 10_000;
      while (a.connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(a.connected, false);
      const before = a.dropped;
      a.publish('s', { n: 2 });
      assert.equal(a.dropped, before + 1);
      await assert.rejects(a.ping(500));
      await server.resume();
      // Each client reconnects by itself, and resubscribes.
      const back = Date.now() + 20_000;
      while (!(a.connected && b.connected) && Date.now() < back)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(a.connected && b.connected, 'both reconnected');
      await b.ping(2_000);
      a.publish('s', { n: 3 });
      await box.until((m) => (m as { n?: number }).n === 3);
      assert.deepEqual(box.messages, [{ n: 1 }, { n: 3 }]);
    } finally {
      await a.close();
      await b.close();
      await server.stop();
    }
  });

  test('a NATS that cannot be reached at start is an error, not a hang', async () => {
    const server = await NatsServer.start();
    const url = server.url;
    await server.stop();
    await assert.rejects(natsBus('nobody', [url]));
  });
});

describe('a node on NATS when NATS goes away', () => {
  test('degraded in /readyz and metrics, topics still work on the node; all back with NATS', async () => {
    const nats = await NatsServer.start();
    const server = await startTestServer({
      store: 'postgres',
      env: { ORCHESTRA_NATS_URL: nats.url, ORCHESTRA_NATS_PREFIX: 'outage' },
    });
    const metric = async (pattern: RegExp) => {
      const text = (await server.call('GET', '/metrics', { key: null })).body as string;
      return pattern.exec(text)?.[1];
    };
    const natsUp = /orchestra_dependency_up\{dependency="nats"\} (\d)/;
    const dropped = /orchestra_bus_dropped_messages_total (\d+)/;
    const publish = (n: number) =>
      server.call('POST', '/v1/topics/outage.t/messages', { body: { data: { n } } });
    try {
      const ready = await server.call('GET', '/readyz', { key: null });
      assert.equal(ready.body.status, 'ready');
      assert.equal(ready.body.checks.bus.backend, 'nats');
      assert.equal(await metric(natsUp), '1');
      assert.equal(await metric(dropped), '0');
      assert.equal((await publish(1)).status, 201);
      await nats.kill();
      try {
        const deadline = Date.now() + 10_000;
        let degraded = await server.call('GET', '/readyz', { key: null });
        while (degraded.body.status !== 'degraded' && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          degraded = await server.call('GET', '/readyz', { key: null });
        }
        assert.equal(degraded.status, 200);
        assert.equal(degraded.body.status, 'degraded');
        assert.deepEqual(degraded.body.checks.bus, { status: 'failed', backend: 'nats' });
        assert.equal(await metric(natsUp), '0');
        // Writes are durable without NATS; only the wake-up to other nodes is dropped (once
        // the client has noticed the closed socket: until then it buffers).
        let n = 1;
        const until = Date.now() + 10_000;
        do {
          n += 1;
          assert.equal((await publish(n)).status, 201);
        } while (Number(await metric(dropped)) < 1 && Date.now() < until);
        assert.ok(Number(await metric(dropped)) >= 1, 'the lost wake-up is counted');
        const history = await server.call('GET', '/v1/topics/outage.t/messages?after=0&limit=100');
        assert.deepEqual(
          history.body.messages.map((m: { data: { n: number } }) => m.data.n),
          Array.from({ length: n }, (_, i) => i + 1),
        );
      } finally {
        await nats.resume();
      }
      const back = Date.now() + 20_000;
      let ready2 = await server.call('GET', '/readyz', { key: null });
      while (ready2.body.status !== 'ready' && Date.now() < back) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        ready2 = await server.call('GET', '/readyz', { key: null });
      }
      assert.equal(ready2.body.status, 'ready');
      assert.equal(await metric(natsUp), '1');
    } finally {
      await server.stop();
      await nats.stop();
    }
  });
});
