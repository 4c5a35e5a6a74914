import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { AckPolicy, type Consumer, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ExportedEvent } from '../src/events/jetstream-export.ts';
import { spawnOrchestra, startTestServer, type TestServer, tempDir } from './helpers.ts';
import { NatsServer } from './nats-server.ts';

// The event log's export to JetStream, as a consumer outside Orchestra sees it: a durable
// consumer on the stream `<prefix>-events` gets every event once, in offset order per
// stream, through a NATS restart, and a repeated publish is dropped as a duplicate.

describe('event export to JetStream (PostgreSQL, NATS)', () => {
  let nats: NatsServer;
  let server: TestServer;
  let nc: NatsConnection;
  let consumer: Consumer;
  const prefix = `x${randomUUID().slice(0, 8)}`;
  const stream = `${prefix}-events`;
  /** Every message the durable consumer got, in arrival order. */
  const received: { subject: string; msgId: string | undefined; event: ExportedEvent }[] = [];

  before(async () => {
    nats = await NatsServer.start();
    server = await startTestServer({
      store: 'postgres',
      env: { ORCHESTRA_NATS_URL: nats.url, ORCHESTRA_NATS_PREFIX: prefix },
    });
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(stream, {
      durable_name: 'test-reader',
      ack_policy: AckPolicy.Explicit,
    });
    consumer = await jetstream(nc).consumers.get(stream, 'test-reader');
  });

  after(async () => {
    await nc?.close();
    await server?.stop();
    await nats?.stop();
  });

  const publish = async (topic: string, n: number) => {
    const res = await fetch(`${server.url}/v1/topics/${topic}/messages`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${server.adminKey}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ data: { n } }),
    });
    assert.equal(res.status, 201, await res.text());
  };

  /** Reads from the durable consumer until `done()` holds. */
  const readUntil = async (what: string, done: () => boolean) => {
    const deadline = Date.now() + 30_000;
    while (!done()) {
      if (Date.now() > deadline) {
        const exported = await server.store.db
          .selectFrom('event_export_offsets')
          .selectAll()
          .execute();
        const info = await (await jetstreamManager(nc)).streams.info(stream);
        assert.fail(
          `${what}: got ${received.length} messages; exported: ${JSON.stringify(exported)}; ` +
            `stream: ${JSON.stringify(info.state)}`,
        );
      }
      const batch = await consumer.fetch({ max_messages: 200, expires: 1000 }).catch(() => null);
      if (batch === null) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      for await (const m of batch) {
        received.push({
          subject: m.subject,
          msgId: m.headers?.get('Nats-Msg-Id'),
          event: m.json<ExportedEvent>(),
        });
        m.ack();
      }
    }
  };

  const offsetsOf = (name: string) =>
    received.filter((r) => r.event.stream.endsWith(`:${name}`)).map((r) => r.event.offset);

  test('every event reaches the stream once, in offset order, with its message id and subject', async () => {
    for (let n = 1; n <= 30; n++) await publish('export.one', n);
    await readUntil('30 messages of export.one', () => offsetsOf('export.one').length >= 30);
    assert.deepEqual(
      offsetsOf('export.one'),
      Array.from({ length: 30 }, (_, i) => i + 1),
    );
    const first = received.find((r) => r.event.stream.endsWith(':export.one'));
    assert.ok(first);
    assert.equal(first.msgId, `${first.event.stream}:1`);
    assert.equal(first.event.type, 'message');
    assert.deepEqual(first.event.data, { n: 1 });
    // Tasks, sessions and topics only: the node's own KV writes (its registration) are not.
    assert.deepEqual(
      received.filter((r) => !/^(task|session|topic):/.test(r.event.stream)),
      [],
    );
    // <prefix>.export.<tenant>.<kind>.<id>, the topic name's dots escaped in its token.
    const tenant = first.event.tenant_id;
    assert.equal(first.subject, `${prefix}.export.${tenant}.topic.${tenant}:export=2eone`);
  });

  test('while NATS is down writes go on; once it is back the export catches up, nothing missing', async () => {
    await publish('export.two', 1);
    await readUntil('the first of export.two', () => offsetsOf('export.two').length === 1);
    await nats.kill();
    for (let n = 2; n <= 10; n++) await publish('export.two', n);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /orchestra_event_export_pending_streams [1-9]/);
    await nats.resume();
    await readUntil('10 messages of export.two', () => offsetsOf('export.two').length >= 10);
    assert.deepEqual(
      offsetsOf('export.two'),
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
  });

  test('a backlog larger than one pass (2,000 events) is exported in full, in order', async () => {
    await nats.kill();
    const topics = ['backlog.a', 'backlog.b'];
    let next = 0;
    const total = 1_100 * topics.length;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < total) {
          const i = next++;
          await publish(topics[i % topics.length] as string, i);
        }
      }),
    );
    await nats.resume();
    await readUntil('1,100 messages on each topic', () =>
      topics.every((t) => offsetsOf(t).length >= 1_100),
    );
    for (const t of topics) {
      assert.deepEqual(
        offsetsOf(t),
        Array.from({ length: 1_100 }, (_, i) => i + 1),
        t,
      );
    }
  });

  test('events published again (a lost offset after a crash) are dropped as duplicates', async () => {
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info(stream)).state.messages;
    const streamId = received.find((r) => r.event.stream.endsWith(':export.one'))?.event.stream;
    assert.ok(streamId);
    // What a leader that died between publishing and recording its progress leaves behind.
    await server.store.db
      .updateTable('event_export_offsets')
      .set({ exported_offset: 0 })
      .where('stream_id', '=', streamId)
      .execute();
    await server.store.db
      .insertInto('event_export_pending')
      .values({ stream_id: streamId, marked_offset: 30 })
      .onConflict((oc) => oc.doNothing())
      .execute();
    const deadline = Date.now() + 30_000;
    for (;;) {
      const row = await server.store.db
        .selectFrom('event_export_offsets')
        .select('exported_offset')
        .where('stream_id', '=', streamId)
        .executeTakeFirst();
      if (row?.exported_offset === 30) break;
      assert.ok(Date.now() < deadline, 'exported again');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal((await jsm.streams.info(stream)).state.messages, before);
    await publish('export.one', 31);
    await readUntil('offset 31', () => offsetsOf('export.one').includes(31));
    assert.deepEqual(
      offsetsOf('export.one'),
      Array.from({ length: 31 }, (_, i) => i + 1),
      'no offset twice',
    );
  });
});

describe('event export without JetStream', () => {
  test('the node does not start, and says how to fix it', async () => {
    const plain = await NatsServer.start({ jetstream: false });
    const dir = tempDir();
    try {
      const node = await spawnOrchestra({
        cwd: dir.path,
        dataDir: dir.path,
        env: { ORCHESTRA_NATS_URL: plain.url },
      }).then(
        () => assert.fail('started without JetStream'),
        (err: Error) => err.message,
      );
      assert.match(node, /ORCHESTRA_NATS_EXPORT_EVENTS: could not create the JetStream stream/);
      assert.match(node, /ORCHESTRA_NATS_EXPORT_EVENTS=false/);
    } finally {
      await plain.stop();
      dir.remove();
    }
  });

  test('with ORCHESTRA_NATS_EXPORT_EVENTS=false it starts on core NATS alone', async () => {
    const plain = await NatsServer.start({ jetstream: false });
    const server = await startTestServer({
      env: { ORCHESTRA_NATS_URL: plain.url, ORCHESTRA_NATS_EXPORT_EVENTS: 'false' },
    });
    try {
      const ready = (await (await fetch(`${server.url}/readyz`)).json()) as {
        checks: { bus: { backend: string; status: string } };
      };
      assert.deepEqual(ready.checks.bus, { ...ready.checks.bus, backend: 'nats', status: 'ok' });
    } finally {
      await server.stop();
      await plain.stop();
    }
  });
});
