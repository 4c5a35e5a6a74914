import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EtcdServer } from '../../server/test/etcd-server.ts';
import {
  logLines,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from '../../server/test/helpers.ts';
import { NatsServer } from '../../server/test/nats-server.ts';
import { PostgresServer } from '../../server/test/postgres-server.ts';
import { RedisServer } from '../../server/test/redis-server.ts';
import type { ServerProcess } from '../../server/test/server-process.ts';
import { Orchestra } from '../src/index.ts';
import { killScripts, type SpawnedScript, spawnScript } from './support.ts';

// Three nodes on a PostgreSQL, a NATS, an etcd and a Redis of the test's own, under a light
// load of task submissions, config writes and topic publishes spread over the nodes. Each
// dependency in turn crashes and comes back: the nodes say so (/readyz, /metrics), refuse
// with 503 and Retry-After what they cannot make durable, recover on their own, and nothing
// they acknowledged is lost.

const AGENT_SCRIPT = fileURLToPath(new URL('./fixtures/agent.ts', import.meta.url));
const TOPIC = 'faults.feed';
const ENV = 'faults';

let postgres: PostgresServer;
let nats: NatsServer;
let etcd: EtcdServer;
let redis: RedisServer;
const dirs = [tempDir(), tempDir(), tempDir()];
const nodes: SpawnedOrchestra[] = [];
let adminKey: string;
let agents: SpawnedScript[] = [];

before(async () => {
  [postgres, nats, etcd, redis] = await Promise.all([
    PostgresServer.start(),
    NatsServer.start(),
    EtcdServer.start(),
    RedisServer.start(),
  ]);
  const env = {
    ORCHESTRA_DATABASE_URL: await postgres.createDatabase('orchestra'),
    ORCHESTRA_NATS_URL: nats.url,
    ORCHESTRA_ETCD_ENDPOINTS: etcd.endpoint,
    ORCHESTRA_REDIS_URL: redis.url,
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '1000',
  };
  for (const dir of dirs)
    nodes.push(await spawnOrchestra({ cwd: dir.path, dataDir: dir.path, env }));
  adminKey = readFileSync(join(dirs[0]?.path ?? '', 'admin-key'), 'utf8').trim();
  const admin = new Orchestra({ url: nodes[0]?.url ?? '', apiKey: adminKey });
  const agentKey = (await admin.apiKeys.create({ name: 'faults', role: 'agent' })).secret;
  const urls = nodes.map((n) => n.url);
  agents = [0, 1].map((i) =>
    spawnScript(AGENT_SCRIPT, {
      args: [
        ...['--url', [...urls.slice(i), ...urls.slice(0, i)].join(','), '--api-key', agentKey],
        ...['--agent-id', `faults-${i}`, '--capabilities', 'faults', '--concurrency', '4'],
        ...['--reconnect-max-ms', '1000'],
      ],
    }),
  );
  for (const agent of agents) await agent.waitFor('registered', (l) => l.event === 'registered');
});

after(async () => {
  await killScripts();
  await Promise.all(nodes.map((n) => n.stop()));
  await Promise.all([postgres, nats, etcd, redis].map((s) => s?.stop()));
  for (const dir of dirs) dir.remove();
});

interface Outcome {
  status: number;
  body: any;
  retryAfter: string | null;
}

/** One request; a network error or a 10 s silence is status 0 (and fails the test below). */
async function call(url: string, method: string, body?: unknown): Promise<Outcome> {
  try {
    const res = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${adminKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: kept as text for the assertion message
    }
    return { status: res.status, body: parsed, retryAfter: res.headers.get('retry-after') };
  } catch (err) {
    return { status: 0, body: String(err), retryAfter: null };
  }
}

/** The light load: every 100 ms one task, one config write and one publish, node by node. */
class Load {
  readonly tasks: string[] = [];
  readonly config = new Map<string, number>();
  readonly published: { offset: number; n: number }[] = [];
  /** Refusals seen, by kind: 503 with Retry-After is the only acceptable one. */
  readonly refused: { what: string; code: string; retryAfter: string | null }[] = [];
  readonly unexpected: string[] = [];
  #n = 0;
  #running = true;
  readonly #done: Promise<void>;

  constructor() {
    this.#done = this.#loop();
  }

  async #loop(): Promise<void> {
    // Bounded: the suite's timeout would stop it anyway, this stops it first.
    const deadline = Date.now() + 240_000;
    while (this.#running && Date.now() < deadline) {
      const n = ++this.#n;
      const base = nodes[n % nodes.length]?.url ?? '';
      await Promise.all([
        call(`${base}/v1/tasks`, 'POST', {
          capabilities: ['faults'],
          input: { op: 'sleep', ms: 50 },
          max_attempts: 10,
        }).then((o) => this.#record('task', o, () => this.tasks.push(o.body.id))),
        call(`${base}/v1/config/load/k${n}?env=${ENV}`, 'PUT', { value: n }).then((o) =>
          this.#record('config', o, () => this.config.set(`load/k${n}`, n)),
        ),
        call(`${base}/v1/topics/${TOPIC}/messages`, 'POST', { data: { n } }).then((o) =>
          this.#record('publish', o, () => this.published.push({ offset: o.body.offset, n })),
        ),
      ]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  #record(what: string, o: Outcome, acknowledged: () => void): void {
    if (o.status === 200 || o.status === 201 || o.status === 202) acknowledged();
    else if (o.status === 503)
      this.refused.push({ what, code: o.body?.error?.code, retryAfter: o.retryAfter });
    else this.unexpected.push(`${what}: ${o.status} ${JSON.stringify(o.body).slice(0, 300)}`);
  }

  /** Marks where a phase starts, to count what it acknowledged. */
  get counts(): { tasks: number; config: number; published: number } {
    return { tasks: this.tasks.length, config: this.config.size, published: this.published.length };
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

async function readyz(node: SpawnedOrchestra): Promise<Outcome> {
  return call(`${node.url}/readyz`, 'GET');
}

/** `orchestra_dependency_up{dependency="<name>"}` on a node, or null when not exported. */
async function dependencyUp(node: SpawnedOrchestra, name: string): Promise<number | null> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`orchestra_dependency_up{dependency="${name}"}`));
  return line === undefined ? null : Number(line.split(' ').pop());
}

/** Polls `probe` until it holds for every node, or fails with the last answers. */
async function untilEveryNode(
  what: string,
  probe: (node: SpawnedOrchestra) => Promise<boolean>,
  timeoutMs = 45_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const results = await Promise.all(nodes.map(probe));
    if (results.every(Boolean)) return;
    if (Date.now() > deadline) {
      const answers = await Promise.all(nodes.map(readyz));
      assert.fail(`${what}: not on every node in time; /readyz: ${JSON.stringify(answers)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const allReady = () =>
  untilEveryNode('ready again', async (n) => {
    const r = await readyz(n);
    return r.status === 200 && r.body.status === 'ready';
  });

/** Waits until the load acknowledged `count` more tasks than at `from`. */
async function progressed(load: Load, from: number, count: number): Promise<void> {
  const deadline = Date.now() + 45_000;
  while (load.tasks.length < from + count) {
    if (Date.now() > deadline)
      assert.fail(`the load did not progress: ${load.unexpected.join('; ')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Crashes `server` for `outageMs`, running `during` while it is down, and starts it again. */
async function outage(
  load: Load,
  server: ServerProcess,
  during: () => Promise<void>,
  outageMs = 3000,
): Promise<void> {
  await progressed(load, load.tasks.length, 5);
  await server.kill();
  const downSince = Date.now();
  await during();
  const left = outageMs - (Date.now() - downSince);
  if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
  await server.resume();
  await allReady();
  await progressed(load, load.tasks.length, 5);
}

test('NATS, PostgreSQL, etcd and Redis restart in turn under load: nodes degrade visibly, recover, and lose nothing acknowledged', async (t) => {
  await allReady();
  const load = new Load();
  try {
    // NATS: degraded, but every write still works (wake-ups fall back to polling the store).
    const natsFrom = load.counts;
    await outage(load, nats, async () => {
      await untilEveryNode('NATS reported down', async (n) => {
        const r = await readyz(n);
        return (
          r.status === 200 && r.body.status === 'degraded' && r.body.checks.bus.status === 'failed'
        );
      });
      assert.equal(await dependencyUp(nodes[0] as SpawnedOrchestra, 'nats'), 0);
      const before = load.tasks.length;
      await progressed(load, before, 5);
    });
    assert.equal(
      load.refused.length,
      0,
      `nothing is refused while NATS is down: ${JSON.stringify(load.refused)}`,
    );
    assert.ok(load.counts.config > natsFrom.config && load.counts.published > natsFrom.published);
    assert.equal(await dependencyUp(nodes[0] as SpawnedOrchestra, 'nats'), 1);

    // PostgreSQL: not ready (503), writes refused with 503 + Retry-After, none half-done.
    await outage(load, postgres, async () => {
      await untilEveryNode('PostgreSQL reported down', async (n) => {
        const r = await readyz(n);
        return r.status === 503 && r.body.error?.code === 'STORAGE_UNAVAILABLE';
      });
      assert.equal(await dependencyUp(nodes[1] as SpawnedOrchestra, 'postgres'), 0);
      const refusedBefore = load.refused.length;
      const deadline = Date.now() + 20_000;
      while (!load.refused.slice(refusedBefore).some((r) => r.what === 'task')) {
        assert.ok(Date.now() < deadline, 'a task submission refused while PostgreSQL is down');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    assert.equal(await dependencyUp(nodes[1] as SpawnedOrchestra, 'postgres'), 1);

    // etcd: degraded; config writes refused with 503, tasks and topics unaffected.
    await outage(load, etcd, async () => {
      await untilEveryNode('etcd reported down', async (n) => {
        const r = await readyz(n);
        return (
          r.status === 200 && r.body.status === 'degraded' && r.body.checks.kv.status === 'failed'
        );
      });
      assert.equal(await dependencyUp(nodes[2] as SpawnedOrchestra, 'etcd'), 0);
      const tasksBefore = load.tasks.length;
      const refusedBefore = load.refused.length;
      await progressed(load, tasksBefore, 5);
      assert.ok(
        load.refused.slice(refusedBefore).some((r) => r.what === 'config'),
        'a config write refused while etcd is down',
      );
    });
    assert.equal(await dependencyUp(nodes[2] as SpawnedOrchestra, 'etcd'), 1);

    // Redis: degraded, each node limits on its own; nothing refused.
    const refusedBeforeRedis = load.refused.length;
    await outage(load, redis, async () => {
      await untilEveryNode('Redis reported down', async (n) => {
        const r = await readyz(n);
        return (
          r.status === 200 &&
          r.body.status === 'degraded' &&
          r.body.checks.rate_limit.status === 'failed'
        );
      });
      assert.equal(await dependencyUp(nodes[0] as SpawnedOrchestra, 'redis'), 0);
      await progressed(load, load.tasks.length, 5);
    });
    assert.equal(load.refused.length, refusedBeforeRedis, 'nothing refused while Redis is down');
    assert.equal(await dependencyUp(nodes[0] as SpawnedOrchestra, 'redis'), 1);
  } finally {
    await load.stop();
  }

  const refusedBy = (what: string) => load.refused.filter((r) => r.what === what).length;
  t.diagnostic(
    `acknowledged: ${load.tasks.length} tasks, ${load.config.size} config writes, ` +
      `${load.published.length} publishes; refused with 503: ${refusedBy('task')} tasks, ` +
      `${refusedBy('config')} config writes, ${refusedBy('publish')} publishes`,
  );
  // What the nodes logged at error level says why, should anything else have come back.
  const errors = nodes.flatMap((n) =>
    logLines(n.stdout())
      .filter((l) => Number(l.level) >= 50)
      .map((l) => JSON.stringify({ msg: l.msg, err: l.err }).slice(0, 1500)),
  );
  assert.deepEqual(
    load.unexpected,
    [],
    `only 2xx and 503 answers, never a 500 or a hang; the nodes logged: ${errors.join('\n')}`,
  );
  for (const r of load.refused) {
    assert.equal(r.code, 'STORAGE_UNAVAILABLE', JSON.stringify(r));
    assert.ok(Number(r.retryAfter) > 0, `a 503 says when to retry: ${JSON.stringify(r)}`);
  }

  // Every acknowledged task reaches a terminal state, and succeeds exactly once.
  const client = new Orchestra({ url: nodes[1]?.url ?? '', apiKey: adminKey });
  const ended = await Promise.all(
    load.tasks.map((id) => client.tasks.wait(id, { timeoutMs: 60_000 })),
  );
  assert.deepEqual(
    ended.filter((t) => t.state !== 'succeeded').map((t) => [t.id, t.state]),
    [],
  );
  for (const id of load.tasks) {
    const terminal = [];
    for await (const e of client.tasks.events(id)) {
      if ('type' in e && /^task\.(succeeded|failed|cancelled|timed_out|dead)$/.test(String(e.type)))
        terminal.push(e.type);
    }
    assert.deepEqual(terminal, ['task.succeeded'], `task ${id} ended once`);
  }
  const finished = agents.flatMap((a) => a.lines().filter((l) => l.event === 'finished'));
  assert.ok(finished.length >= load.tasks.length);

  // Every acknowledged config write is there with its value.
  const keys = new Map<string, unknown>();
  let cursor: string | undefined;
  do {
    const page = await call(
      `${nodes[2]?.url}/v1/config?env=${ENV}&prefix=load/&limit=200${cursor ? `&cursor=${cursor}` : ''}`,
      'GET',
    );
    assert.equal(page.status, 200, JSON.stringify(page.body));
    for (const item of page.body.items) keys.set(item.key, item.value);
    cursor = page.body.next_cursor ?? undefined;
  } while (cursor);
  for (const [key, value] of load.config) assert.equal(keys.get(key), value, key);

  // Every acknowledged publish is in the topic's history at the offset it was given.
  const byOffset = new Map<number, unknown>();
  for (let after = 0; ; ) {
    const page = await call(
      `${nodes[0]?.url}/v1/topics/${TOPIC}/messages?after=${after}&limit=1000`,
      'GET',
    );
    assert.equal(page.status, 200, JSON.stringify(page.body));
    const messages = page.body.messages as { offset: number; data: { n: number } }[];
    for (const m of messages) byOffset.set(m.offset, m.data.n);
    const last = messages[messages.length - 1];
    if (last === undefined) break;
    after = last.offset;
  }
  for (const p of load.published) assert.equal(byOffset.get(p.offset), p.n, `offset ${p.offset}`);
});
