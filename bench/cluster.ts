/**
 * Orchestra as a cluster: 1 node, then 3 nodes, on the same PostgreSQL, NATS, etcd and Redis,
 * in the same run, all on 127.0.0.1.
 *
 * - publish→deliver latency of a topic: a publisher on the first node, subscribers on the
 *   other nodes (with 1 node, on the same node), at a fixed rate; and the same workload on
 *   raw NATS core pub/sub, the transport alone, as the floor.
 * - dispatch throughput: tasks submitted round-robin to every node, agents spread over the
 *   nodes, until PostgreSQL says every task succeeded.
 *
 * See bench/README.md and `node bench/cluster.ts --help`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import { Orchestra, RealtimeClient } from '../packages/sdk/src/index.ts';
import type { AgentConfig, AgentRequest } from './cluster/agent.ts';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  dropDatabase,
  HOST,
  intOption,
  LoadProcess,
  type OrchestraNode as NodeProcess,
  Processes,
  parseOptions,
  REPO_ROOT,
  RunRecord,
  round1,
  round3,
  runBenchmark,
  SETTLE_MS,
  sleep,
  startOrchestraNode,
  startWatchdog,
  table,
  throwawayDatabase,
  withPostgres,
} from './common.ts';
import { startEtcd } from './config/etcd.ts';

const AGENT_SCRIPT = join(REPO_ROOT, 'bench/cluster/agent.ts');
const CAPABILITY = 'bench-cluster';
const TOPIC = 'bench.cluster';
const POLL_MS = 50;
const DRAIN_TIMEOUT_MS = 120_000;
/** Publishes the publisher may have unanswered at once; a due publish waits beyond it. */
const MAX_IN_FLIGHT = 64;

const HELP = `Usage: node bench/cluster.ts [options]

Runs Orchestra with 1 node and with 3 nodes (in the same run, alternating the order every
round) on PostgreSQL, NATS, etcd and Redis, and reports cross-node publish→deliver latency
(p50/p99, against raw NATS core pub/sub on the same workload) and dispatch throughput
(3 nodes / 1 node). PostgreSQL, NATS and Redis are the machine's (a throwaway database and
prefixes of the run's own); etcd is started by the benchmark. Every option also has an
environment variable.

Options:
  --rate R                Publishes/s of the latency runs (env BENCH_RATE; default 200)
  --duration S            Seconds of each latency run (env BENCH_DURATION; default 10)
  --warmup S              Seconds published before it, not measured (env BENCH_WARMUP;
                          default 2)
  --subscribers N         Subscribers of the latency runs (env BENCH_SUBSCRIBERS; default 20)
  --tasks N               Tasks per throughput run (env BENCH_TASKS; default 3000)
  --agents K              Agent processes, spread over the nodes (env BENCH_AGENTS; default 3)
  --concurrency C         Tasks each agent runs at once (env BENCH_CONCURRENCY; default 50)
  --submitters S          Submits in flight in the producer (env BENCH_SUBMITTERS; default 64)
  --rounds N              Rounds; each runs both topologies (env BENCH_ROUNDS; default 2)
  --postgres-url URL      Admin URL used to create and drop the throwaway databases
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --nats-url URL          NATS (env BENCH_NATS_URL; default nats://127.0.0.1:4222)
  --redis-url URL         Redis (env BENCH_REDIS_URL; default redis://127.0.0.1:6379)
  --etcd-bin PATH         The etcd binary (env BENCH_ETCD_BIN; default etcd, from PATH)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)

Diagnostics:
  --profile               Run the Orchestra nodes under --cpu-prof (bench/.scratch/profiles)
  --orchestra-env K=V     Extra environment for the Orchestra nodes, repeatable
  -h, --help              Show this help`;

interface Options extends CommonOptions {
  rate: number;
  warmupSeconds: number;
  subscribers: number;
  tasks: number;
  agents: number;
  concurrency: number;
  submitters: number;
  natsUrl: string;
  redisUrl: string;
  etcdBin: string;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    rate: { type: 'string' },
    warmup: { type: 'string' },
    subscribers: { type: 'string' },
    tasks: { type: 'string' },
    agents: { type: 'string' },
    concurrency: { type: 'string' },
    submitters: { type: 'string' },
    'nats-url': { type: 'string' },
    'redis-url': { type: 'string' },
    'etcd-bin': { type: 'string' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const common = commonOptions(values);
  return {
    ...common,
    // A cluster shares its relational state in PostgreSQL: there is no SQLite variant.
    store: 'postgres',
    rate: intOption('rate', values.rate ?? env.BENCH_RATE, 200, 1),
    warmupSeconds: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, 2, 0),
    subscribers: intOption('subscribers', values.subscribers ?? env.BENCH_SUBSCRIBERS, 20, 1),
    tasks: intOption('tasks', values.tasks ?? env.BENCH_TASKS, 3000, 1),
    agents: intOption('agents', values.agents ?? env.BENCH_AGENTS, 3, 1),
    concurrency: intOption('concurrency', values.concurrency ?? env.BENCH_CONCURRENCY, 50, 1),
    submitters: intOption('submitters', values.submitters ?? env.BENCH_SUBMITTERS, 64, 1),
    natsUrl: values['nats-url'] ?? env.BENCH_NATS_URL ?? `nats://${HOST}:4222`,
    redisUrl: values['redis-url'] ?? env.BENCH_REDIS_URL ?? `redis://${HOST}:6379`,
    etcdBin: values['etcd-bin'] ?? env.BENCH_ETCD_BIN ?? 'etcd',
  };
}

const processes = new Processes({ stopTimeoutMs: 10_000, childrenFirst: false });

// ---------------------------------------------------------------------------------------
// Latency

interface Latency {
  deliveries: number;
  /** Deliveries due (publishes × subscribers) that did not arrive by the end. */
  missing: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function summarize(samples: number[], due: number): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) =>
    round1(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN);
  return {
    deliveries: sorted.length,
    missing: due - sorted.length,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: round1(sorted[sorted.length - 1] ?? NaN),
  };
}

/**
 * Publishes `{t}` at `rate` for warm-up + duration through `publish`; a delivery at or after
 * the measured start counts `now - t`. Resolves once every due delivery arrived or 5 s after
 * the last publish.
 */
async function paced(
  o: Options,
  publish: (t: number) => Promise<unknown>,
  subscribe: (onDelivery: (t: number) => void) => Promise<void>,
  subscribers: number,
): Promise<Latency> {
  const samples: number[] = [];
  let measuredFrom = Number.POSITIVE_INFINITY;
  let due = 0;
  await subscribe((t) => {
    if (t >= measuredFrom) samples.push(performance.now() - t);
  });
  const interval = 1000 / o.rate;
  const start = performance.now();
  const end = start + (o.warmupSeconds + o.durationSeconds) * 1000;
  measuredFrom = start + o.warmupSeconds * 1000;
  let inFlight = 0;
  const failures: string[] = [];
  for (let i = 0; ; i++) {
    const at = start + i * interval;
    if (at >= end) break;
    const wait = at - performance.now();
    if (wait > 1) await sleep(wait);
    while (inFlight >= MAX_IN_FLIGHT) await sleep(1);
    const t = performance.now();
    if (t >= measuredFrom) due += subscribers;
    inFlight += 1;
    void publish(t)
      .catch((err: Error) => {
        if (failures.length < 3) failures.push(err.message);
      })
      .finally(() => {
        inFlight -= 1;
      });
  }
  const deadline = performance.now() + 5000;
  while ((samples.length < due || inFlight > 0) && performance.now() < deadline) await sleep(20);
  if (failures.length > 0) throw new Error(`publishes failed: ${failures.join('; ')}`);
  return summarize(samples, due);
}

/** The same workload on raw NATS core: one connection publishing, one per subscriber. */
async function natsLatency(o: Options): Promise<Latency> {
  const subject = `bench.cluster.${randomUUID()}`;
  const publisher = await connectNats({ servers: o.natsUrl });
  const subscribers = await Promise.all(
    Array.from({ length: o.subscribers }, () => connectNats({ servers: o.natsUrl })),
  );
  try {
    return await paced(
      o,
      async (t) => publisher.publish(subject, JSON.stringify({ t })),
      async (onDelivery) => {
        for (const nc of subscribers) {
          nc.subscribe(subject, {
            callback: (_err, msg) => onDelivery((msg.json() as { t: number }).t),
          });
        }
        await Promise.all(subscribers.map((nc) => nc.flush()));
      },
      o.subscribers,
    );
  } finally {
    await Promise.all([publisher, ...subscribers].map((nc) => nc.close()));
  }
}

/** Publisher on node 0; subscribers on the other nodes, or on node 0 when it is alone. */
async function orchestraLatency(o: Options, nodes: NodeProcess[], key: string): Promise<Latency> {
  const others = nodes.length > 1 ? nodes.slice(1) : nodes;
  const clients = Array.from(
    { length: o.subscribers },
    (_, i) => new RealtimeClient({ url: others[i % others.length]?.url ?? '', apiKey: key }),
  );
  const publisher = new RealtimeClient({ url: nodes[0]?.url ?? '', apiKey: key });
  const topic = `${TOPIC}.${randomUUID().slice(0, 8)}`;
  try {
    await publisher.connect();
    return await paced(
      o,
      (t) => publisher.publish(topic, { t }),
      async (onDelivery) => {
        await Promise.all(
          clients.map((c) =>
            c.subscribe<{ t: number }>(topic, { onMessage: (m) => onDelivery(m.data.t) }),
          ),
        );
      },
      o.subscribers,
    );
  } finally {
    for (const c of [publisher, ...clients]) c.close();
  }
}

// ---------------------------------------------------------------------------------------
// Dispatch throughput

interface Throughput {
  tasks: number;
  seconds: number;
  tasksPerSecond: number;
  /** Tasks the agents on each node ran. */
  perNode: number[];
}

async function throughput(
  o: Options,
  nodes: NodeProcess[],
  agents: LoadProcess<AgentRequest>[],
  agentNodes: number[],
  adminKey: string,
  databaseUrl: string,
): Promise<Throughput> {
  const clients = nodes.map((n) => new Orchestra({ url: n.url, apiKey: adminKey }));
  const succeeded = () =>
    withPostgres(databaseUrl, async (db) => {
      const r = await db.query("select count(*)::int as n from tasks where state = 'succeeded'");
      return (r.rows[0] as { n: number }).n;
    });
  const before = await succeeded();
  const handledBefore = await Promise.all(
    agents.map((a) => a.request<{ handled: number }>({ type: 'count' })),
  );
  const started = performance.now();
  let next = 0;
  const submitter = async () => {
    while (next < o.tasks) {
      const i = next++;
      await clients[i % clients.length]?.tasks.create({
        capabilities: [CAPABILITY],
        input: { i },
      });
    }
  };
  await Promise.all(Array.from({ length: o.submitters }, submitter));
  const deadline = performance.now() + DRAIN_TIMEOUT_MS;
  let done = 0;
  for (;;) {
    done = (await succeeded()) - before;
    if (done >= o.tasks) break;
    if (performance.now() > deadline) {
      throw new Error(`${done} of ${o.tasks} tasks succeeded within ${DRAIN_TIMEOUT_MS} ms`);
    }
    await sleep(POLL_MS);
  }
  const seconds = (performance.now() - started) / 1000;
  const handled = await Promise.all(
    agents.map((a) => a.request<{ handled: number }>({ type: 'count' })),
  );
  const perNode = nodes.map(() => 0);
  handled.forEach((h, i) => {
    const node = agentNodes[i] ?? 0;
    perNode[node] = (perNode[node] ?? 0) + h.handled - (handledBefore[i]?.handled ?? 0);
  });
  return {
    tasks: o.tasks,
    seconds: round1(seconds),
    tasksPerSecond: Math.round(o.tasks / seconds),
    perNode,
  };
}

/** Deletes the stream of exported events the nodes created; idempotent. */
async function deleteExportStream(natsUrl: string, prefix: string): Promise<void> {
  const nc = await connectNats({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(`${prefix}-events`).catch(() => false);
  } finally {
    await nc.close();
  }
}

// ---------------------------------------------------------------------------------------
// One topology

interface TopologyResult {
  nodes: number;
  round: number;
  latency: Latency;
  throughput: Throughput;
  warnings: { count: number; last: string[] }[];
}

async function runTopology(
  o: Options,
  count: number,
  round: number,
  etcdEndpoint: string,
): Promise<TopologyResult> {
  const run = `${process.pid}_${round}_${count}_${Date.now().toString(36)}`;
  const database = `orchestra_bench_cluster_${run}`;
  const natsPrefix = `bench${run.replaceAll('_', '')}`;
  // The nodes export every event to this JetStream stream on the machine's NATS.
  processes.onCleanup(() => deleteExportStream(o.natsUrl, natsPrefix));
  const databaseUrl = await throwawayDatabase(processes, o.postgresUrl, database);
  const settings = {
    ORCHESTRA_DATABASE_URL: databaseUrl,
    // The nodes share the stored secrets, so they share the key that encrypts them.
    ORCHESTRA_SECRET_KEY: randomBytes(32).toString('base64'),
    ORCHESTRA_NATS_URL: o.natsUrl,
    ORCHESTRA_NATS_PREFIX: natsPrefix,
    ORCHESTRA_ETCD_ENDPOINTS: etcdEndpoint,
    ORCHESTRA_ETCD_PREFIX: `/orchestra-bench-${run}/`,
    ORCHESTRA_REDIS_URL: o.redisUrl,
    ORCHESTRA_REDIS_PREFIX: `orchestra-bench-${run}:`,
  };
  const nodes: NodeProcess[] = [];
  // The first node creates the schema and the system tenant; the others join it.
  for (let i = 0; i < count; i++) {
    nodes.push(
      await startOrchestraNode(processes, {
        name: `cluster-${count}-${i}`,
        settings,
        orchestraEnv: o.orchestraEnv,
        profileName: o.profile ? `orchestra-cluster-${count}-${i}` : undefined,
      }),
    );
  }
  const first = nodes[0] as NodeProcess;
  const adminKey = adminKeyOf(first);
  const admin = new Orchestra({ url: first.url, apiKey: adminKey });
  const agentKey = (await admin.apiKeys.create({ name: 'bench-cluster', role: 'agent' })).secret;
  const agentNodes = Array.from({ length: o.agents }, (_, i) => i % count);
  const agents = agentNodes.map(
    (_node, i) =>
      new LoadProcess<AgentRequest>({ processes, script: AGENT_SCRIPT, name: `agent-${i}` }),
  );
  try {
    await Promise.all(agents.map((a) => a.ready));
    await Promise.all(
      agents.map((a, i) => {
        const node = agentNodes[i] ?? 0;
        const config: AgentConfig = {
          // Its own node first, the others to fail over to.
          urls: [...nodes.slice(node), ...nodes.slice(0, node)].map((n) => n.url),
          apiKey: agentKey,
          agentId: `bench-${i}`,
          capability: CAPABILITY,
          concurrency: o.concurrency,
        };
        return a.request({ type: 'start', config }, 60_000);
      }),
    );
    const latency = await orchestraLatency(o, nodes, adminKey);
    const result = await throughput(o, nodes, agents, agentNodes, adminKey, databaseUrl);
    return {
      nodes: count,
      round,
      latency,
      throughput: result,
      warnings: nodes.map((n) => n.warnings()),
    };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await Promise.all(nodes.map((n) => processes.stop(n.proc)));
    // Now, so that its autovacuum does not run during the next topology's measurement.
    await dropDatabase(o.postgresUrl, database);
    await deleteExportStream(o.natsUrl, natsPrefix);
    await sleep(SETTLE_MS);
  }
}

// ---------------------------------------------------------------------------------------

async function main(o: Options): Promise<number> {
  const record = new RunRecord('cluster', import.meta.filename);
  process.stdout.write(record.machineLine());
  process.stdout.write(
    `layout: the nodes, PostgreSQL, NATS, etcd, Redis, the agents and this process share ` +
      `the machine's ${record.cpus.length} CPUs (no pinning)\n`,
  );
  startWatchdog(processes, 30 * 60_000);
  const etcd = await startEtcd(processes, { bin: o.etcdBin, parentDir: os.tmpdir() });
  const topologies: TopologyResult[] = [];
  const nats: Latency[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? [1, 3] : [3, 1];
    for (const count of order) {
      process.stdout.write(`round ${round}: ${count} node(s)… `);
      const result = await runTopology(o, count, round, etcd.endpoint);
      topologies.push(result);
      process.stdout.write(
        `p50 ${result.latency.p50Ms} ms, p99 ${result.latency.p99Ms} ms, ` +
          `${result.throughput.tasksPerSecond} tasks/s\n`,
      );
    }
    process.stdout.write(`round ${round}: raw NATS… `);
    const anchor = await natsLatency(o);
    nats.push(anchor);
    process.stdout.write(`p50 ${anchor.p50Ms} ms, p99 ${anchor.p99Ms} ms\n`);
  }
  const of = (count: number) => topologies.filter((t) => t.nodes === count);
  const meanOf = (values: number[]) => round1(values.reduce((a, b) => a + b, 0) / values.length);
  const summary = {
    oneNode: {
      p50Ms: meanOf(of(1).map((t) => t.latency.p50Ms)),
      p99Ms: meanOf(of(1).map((t) => t.latency.p99Ms)),
      tasksPerSecond: Math.round(meanOf(of(1).map((t) => t.throughput.tasksPerSecond))),
    },
    threeNodes: {
      p50Ms: meanOf(of(3).map((t) => t.latency.p50Ms)),
      p99Ms: meanOf(of(3).map((t) => t.latency.p99Ms)),
      tasksPerSecond: Math.round(meanOf(of(3).map((t) => t.throughput.tasksPerSecond))),
    },
    rawNats: { p50Ms: meanOf(nats.map((n) => n.p50Ms)), p99Ms: meanOf(nats.map((n) => n.p99Ms)) },
  };
  const throughputRatio = round3(
    summary.threeNodes.tasksPerSecond / summary.oneNode.tasksPerSecond,
  );
  process.stdout.write(
    `\n${table(
      ['system', 'publish→deliver p50 ms', 'p99 ms', 'dispatch tasks/s'],
      [
        [
          'Orchestra, 1 node (same node)',
          summary.oneNode.p50Ms,
          summary.oneNode.p99Ms,
          summary.oneNode.tasksPerSecond,
        ],
        [
          'Orchestra, 3 nodes (cross-node)',
          summary.threeNodes.p50Ms,
          summary.threeNodes.p99Ms,
          summary.threeNodes.tasksPerSecond,
        ],
        ['raw NATS core pub/sub', summary.rawNats.p50Ms, summary.rawNats.p99Ms, '-'],
      ],
    )}\n`,
  );
  const missing = topologies.reduce((a, t) => a + t.latency.missing, 0);
  process.stdout.write(
    `ratio 3 nodes / 1 node dispatch throughput = ${throughputRatio}\n` +
      `targets: cross-node p99 < 20 ms: ${summary.threeNodes.p99Ms < 20 ? 'met' : 'NOT met'} ` +
      `(${summary.threeNodes.p99Ms} ms); deliveries missing: ${missing}\n`,
  );
  const file = record.write(o, {
    options: {
      rate: o.rate,
      durationSeconds: o.durationSeconds,
      warmupSeconds: o.warmupSeconds,
      subscribers: o.subscribers,
      tasks: o.tasks,
      agents: o.agents,
      concurrency: o.concurrency,
      submitters: o.submitters,
      rounds: o.rounds,
    },
    etcdVersion: etcd.version,
    summary,
    throughputRatio,
    topologies,
    rawNats: nats,
  });
  process.stdout.write(`\nresult: ${file}\n`);
  return missing > 0 ? 1 : 0;
}

await runBenchmark({
  script: import.meta.filename,
  processes,
  stopping: 'the nodes, agents and etcd',
  readOptions,
  main,
});
