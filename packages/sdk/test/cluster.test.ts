import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import { EtcdServer } from '../../server/test/etcd-server.ts';
import {
  createTestDatabase,
  logLines,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from '../../server/test/helpers.ts';
import { NatsServer } from '../../server/test/nats-server.ts';
import { RedisServer } from '../../server/test/redis-server.ts';
import { Orchestra, RealtimeClient, type TopicMessage } from '../src/index.ts';
import { killScripts, spawnScript } from './support.ts';

// Three `orchestra start` processes on one PostgreSQL database, and a NATS, an etcd and a
// Redis of the test's own: any node answers any request, whichever node holds the agent,
// the subscriber or the stream.

const AGENT_SCRIPT = fileURLToPath(new URL('./fixtures/agent.ts', import.meta.url));

describe('a cluster of three nodes', () => {
  let etcd: EtcdServer;
  let redis: RedisServer;
  let nats: NatsServer;
  let database: { url: string; drop: () => Promise<void> };
  const dirs = [tempDir(), tempDir(), tempDir()];
  const nodes: SpawnedOrchestra[] = [];
  let adminKey: string;
  /** One SDK client per node, with the admin key. */
  let clients: Orchestra[];

  before(async () => {
    [etcd, redis, nats, database] = await Promise.all([
      EtcdServer.start(),
      RedisServer.start(),
      NatsServer.start(),
      createTestDatabase(),
    ]);
    const env = {
      ORCHESTRA_DATABASE_URL: database.url,
      ORCHESTRA_NATS_URL: nats.url,
      ORCHESTRA_ETCD_ENDPOINTS: etcd.endpoint,
      ORCHESTRA_REDIS_URL: redis.url,
      // A bucket that does not refill during the test: each request takes exactly one token.
      ORCHESTRA_RATE_LIMIT_PER_SECOND: '0.001',
      ORCHESTRA_RATE_LIMIT_BURST: '100000',
    };
    // The first node creates the schema and the system tenant; the others join it.
    for (const dir of dirs) {
      nodes.push(await spawnOrchestra({ cwd: dir.path, dataDir: dir.path, env }));
    }
    adminKey = readFileSync(join(dirs[0]?.path ?? '', 'admin-key'), 'utf8').trim();
    clients = nodes.map((n) => new Orchestra({ url: n.url, apiKey: adminKey }));
  });

  after(async () => {
    await killScripts();
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all([etcd?.stop(), redis?.stop(), nats?.stop(), database?.drop()]);
    for (const dir of dirs) dir.remove();
  });

  const node = (i: number) => {
    const n = nodes[i];
    assert.ok(n);
    return n;
  };
  const client = (i: number) => {
    const c = clients[i];
    assert.ok(c);
    return c;
  };

  test('every node is ready on the shared services and lists the three nodes', async () => {
    for (const n of nodes) {
      const ready = (await (await fetch(`${n.url}/readyz`)).json()) as any;
      assert.equal(ready.status, 'ready', JSON.stringify(ready));
      assert.equal(ready.store, 'postgres');
      assert.equal(ready.checks.kv.backend, 'etcd');
      assert.equal(ready.checks.bus.backend, 'nats');
      assert.equal(ready.checks.bus.status, 'ok');
      assert.equal(ready.checks.rate_limit.backend, 'redis');
      assert.equal(ready.checks.rate_limit.status, 'ok');
      const mode = logLines(n.stdout()).find((l) => String(l.msg).startsWith('cluster mode'));
      assert.equal(mode?.msg, 'cluster mode: every node shares this state');
    }
    const res = await fetch(`${node(2).url}/v1/cluster/nodes`, {
      headers: { authorization: `Bearer ${adminKey}` },
    });
    const listed = ((await res.json()) as { items: { url: string }[] }).items.map((i) => i.url);
    assert.deepEqual(listed.sort(), nodes.map((n) => n.url).sort());
  });

  test('a credential has one rate-limit bucket, whichever node it calls', async () => {
    const key = (await client(0).apiKeys.create({ name: 'limited', role: 'viewer' })).secret;
    const remaining: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${node(i % 3).url}/v1/whoami`, {
        headers: { authorization: `Bearer ${key}` },
      });
      assert.equal(res.status, 200);
      remaining.push(Number(res.headers.get('ratelimit-remaining')));
    }
    // Per node, the third node's first call would see a full bucket again.
    assert.deepEqual(
      remaining,
      [99_999, 99_998, 99_997, 99_996, 99_995, 99_994],
      'one bucket across the nodes',
    );
  });

  test('a message published on one node reaches subscribers on every node, at one offset', async () => {
    const realtime = nodes.map((n) => new RealtimeClient({ url: n.url, apiKey: adminKey }));
    try {
      const received = realtime.map(() => [] as TopicMessage<unknown>[]);
      await Promise.all(realtime.map((r) => r.connect()));
      await Promise.all(
        realtime.map((r, i) =>
          r.subscribe('cluster.chat', { onMessage: (m) => received[i]?.push(m) }),
        ),
      );
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${node(i).url}/v1/topics/cluster.chat/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ data: { from: i } }),
        });
        assert.equal(res.status, 201, await res.text());
      }
      const deadline = Date.now() + 20_000;
      while (received.some((r) => r.length < 3) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const seen = received.map((r) => r.map((m) => [m.offset, (m.data as { from: number }).from]));
      assert.deepEqual(seen[0], [
        [1, 0],
        [2, 1],
        [3, 2],
      ]);
      assert.deepEqual(seen[1], seen[0]);
      assert.deepEqual(seen[2], seen[0]);
    } finally {
      for (const r of realtime) r.close();
    }
  });

  test('a task submitted on one node runs on an agent of another and streams to a third; the stream resumes on any node', async () => {
    const agentKey = (await client(0).apiKeys.create({ name: 'agents', role: 'agent' })).secret;
    const agent = spawnScript(AGENT_SCRIPT, {
      args: [
        '--url',
        node(0).url,
        '--api-key',
        agentKey,
        '--agent-id',
        'cluster-agent',
        '--capabilities',
        'cluster',
        '--concurrency',
        '2',
      ],
    });
    await agent.waitFor('registered', (l) => l.event === 'registered');
    const task = await client(1).tasks.create({
      capabilities: ['cluster'],
      input: { op: 'progress', steps: 3 },
    });
    const done = await client(2).tasks.wait(task.id, { timeoutMs: 30_000 });
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    assert.equal(done.agent_id, 'cluster-agent');
    const all = [];
    for await (const item of client(2).tasks.events(task.id)) all.push(item);
    const offsets = all.map((e) => ('offset' in e ? e.offset : -1));
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => i + 1),
      'every event once, in order',
    );
    assert.ok(all.some((e) => e.type === 'task.progress'));
    // Read half on one node, the rest on another: nothing missing, nothing twice.
    const half = Math.floor(all.length / 2);
    const rest = [];
    for await (const item of client(1).tasks.events(task.id, { after: half })) rest.push(item);
    assert.deepEqual(
      rest.map((e) => ('offset' in e ? e.offset : -1)),
      offsets.slice(half),
    );
    await agent.kill('SIGTERM');
  });

  // Last: it kills a node.
  test('a tenant’s own limit set on one node applies on every node', async () => {
    const created = await client(0).tenants.create({ id: 'cluster-limited' });
    const publish = (i: number, topic: string) =>
      fetch(`${node(i).url}/v1/topics/${topic}/messages`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${created.admin_key.secret}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ data: 1 }),
      });
    // Every node has read (and cached) the tenant's limits before they change.
    for (let i = 0; i < 3; i++) assert.equal((await publish(i, `before.${i}`)).status, 201);
    await client(0).tenants.update('cluster-limited', { limits: { max_topics: 3 } });
    assert.equal((await publish(0, 'after.0')).status, 409, 'at once on the node that changed it');
    // The others within ORCHESTRA_AUTH_CACHE_TTL_MS (5 s); the bound here is generous.
    for (const i of [1, 2]) {
      const until = Date.now() + 60_000;
      let status = 0;
      // A new topic each time: only the publish that creates one counts against the limit.
      for (let n = 0; Date.now() < until; n++) {
        status = (await publish(i, `after.${i}.${n}`)).status;
        if (status === 409) break;
        assert.equal(status, 201);
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(status, 409, `node ${i} refuses a topic past the tenant's limit`);
    }
  });

  test('SIGKILL one node under load: its agent moves to another node, every acknowledged task ends once', async () => {
    const agentKey = (await client(0).apiKeys.create({ name: 'failover', role: 'agent' })).secret;
    const urls = nodes.map((n) => n.url);
    const startAgent = (id: string, order: string[]) =>
      spawnScript(AGENT_SCRIPT, {
        args: [
          ...['--url', order.join(','), '--api-key', agentKey, '--agent-id', id],
          ...['--capabilities', 'failover', '--concurrency', '3', '--reconnect-max-ms', '500'],
        ],
      });
    // The first agent is on the node that dies; the second on another.
    const doomed = startAgent('on-node-0', urls);
    const other = startAgent('on-node-1', [urls[1] ?? '', urls[2] ?? '', urls[0] ?? '']);
    await doomed.waitFor('registered', (l) => l.event === 'registered');
    await other.waitFor('registered', (l) => l.event === 'registered');
    // A subscriber and a REST client that start on the node that dies.
    const feed: number[] = [];
    const realtime = new RealtimeClient({
      url: urls,
      apiKey: adminKey,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    await realtime.subscribe<{ n: number }>('failover.feed', {
      onMessage: (m) => feed.push(m.offset),
    });
    const rest = new Orchestra({ url: urls, apiKey: adminKey });
    const publish = (n: number) => client(1 + (n % 2)).topics.publish('failover.feed', { n });
    for (let n = 1; n <= 3; n++) await publish(n);
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const task = await client(1 + (i % 2)).tasks.create({
        capabilities: ['failover'],
        input: { op: 'sleep', ms: 150 },
        max_attempts: 5,
      });
      ids.push(task.id);
    }
    // Kill the node while its agent is busy.
    await doomed.waitFor('a task running', (l) => l.event === 'started');
    const registrations = doomed.lines().filter((l) => l.event === 'registered').length;
    await node(0).stop('SIGKILL');
    await doomed.waitFor(
      'registered again, on another node',
      (l) => l.event === 'registered',
      registrations,
    );
    // Published while the subscriber's node is gone: recovered on the node it moved to.
    for (let n = 4; n <= 6; n++) await publish(n);
    // The REST client moves on too, a POST included (the dead node refuses connections).
    const late = await rest.tasks.create({
      capabilities: ['failover'],
      input: { op: 'sleep', ms: 10 },
      max_attempts: 5,
    });
    ids.push(late.id);
    assert.equal(rest.url, urls[1]);
    const deadline0 = Date.now() + 30_000;
    while (feed.length < 6 && Date.now() < deadline0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(feed, [1, 2, 3, 4, 5, 6], 'every message once, in order, across the failover');
    assert.notEqual(realtime.url, urls[0]);
    realtime.close();
    const ended = await Promise.all(
      ids.map((id) => client(1).tasks.wait(id, { timeoutMs: 60_000 })),
    );
    assert.deepEqual(
      ended.map((t) => t.state),
      ids.map(() => 'succeeded'),
    );
    const eventCounts = new Map<string, number>();
    for (const id of ids) {
      const events = [];
      for await (const item of client(2).tasks.events(id)) events.push(item);
      eventCounts.set(id, events.length);
      const terminal = events.filter(
        (e) =>
          'type' in e && /^task\.(succeeded|failed|cancelled|timed_out|dead)$/.test(String(e.type)),
      );
      assert.deepEqual(
        terminal.map((e) => ('type' in e ? e.type : '')),
        ['task.succeeded'],
        `task ${id} ended once`,
      );
    }
    // The dead node leaves the node list.
    const listed = async () => {
      const res = await fetch(`${node(1).url}/v1/cluster/nodes`, {
        headers: { authorization: `Bearer ${adminKey}` },
      });
      return ((await res.json()) as { items: { url: string }[] }).items.map((i) => i.url).sort();
    };
    const deadline = Date.now() + 30_000;
    let left = await listed();
    while (left.length !== 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      left = await listed();
    }
    assert.deepEqual(left, [urls[1], urls[2]].sort());
    await Promise.all([doomed.kill('SIGTERM'), other.kill('SIGTERM')]);

    // JetStream has every event of every task once and in order, whichever node exported
    // it: the export's leader may have been the node that died.
    const nc = await connectNats({ servers: nats.url });
    try {
      await (await jetstreamManager(nc)).consumers.add('orchestra-events', {
        durable_name: 'cluster-test',
        ack_policy: AckPolicy.Explicit,
        filter_subject: 'orchestra.export.*.task.>',
      });
      const consumer = await jetstream(nc).consumers.get('orchestra-events', 'cluster-test');
      const exported = new Map<string, number[]>();
      const complete = () =>
        ids.every((id) => (exported.get(`task:${id}`)?.length ?? 0) >= (eventCounts.get(id) ?? 0));
      const until = Date.now() + 30_000;
      while (!complete() && Date.now() < until) {
        for await (const m of await consumer.fetch({ max_messages: 500, expires: 1000 })) {
          const event = m.json<{ stream: string; offset: number }>();
          exported.set(event.stream, [...(exported.get(event.stream) ?? []), event.offset]);
          m.ack();
        }
      }
      for (const id of ids) {
        const count = eventCounts.get(id) ?? 0;
        assert.deepEqual(
          exported.get(`task:${id}`),
          Array.from({ length: count }, (_, i) => i + 1),
          `task ${id}: its events in JetStream, once each`,
        );
      }
    } finally {
      await nc.close();
    }
  });
});

describe('a node with only some of the cluster services', () => {
  test('says at start which features run on it alone', async () => {
    const database = await createTestDatabase();
    const dir = tempDir();
    try {
      const partial = await spawnOrchestra({
        cwd: dir.path,
        dataDir: dir.path,
        env: { ORCHESTRA_DATABASE_URL: database.url },
      });
      const line = logLines(partial.stdout()).find(
        (l) => l.msg === 'cluster mode: some features run on this node alone',
      ) as { single_node?: string[]; services?: Record<string, string> } | undefined;
      await partial.stop();
      assert.ok(line, partial.stdout());
      assert.deepEqual(line.services, {
        store: 'postgres',
        bus: 'in-process',
        kv: 'store',
        rate_limit: 'memory',
      });
      assert.equal(line.single_node?.length, 2);
      assert.match(line.single_node?.[0] ?? '', /ORCHESTRA_NATS_URL/);
      assert.match(line.single_node?.[1] ?? '', /ORCHESTRA_REDIS_URL/);
    } finally {
      await database.drop();
      dir.remove();
    }
  });
});
