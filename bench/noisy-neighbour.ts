/**
 * Benchmark: what one tenant's oversized reads cost another tenant.
 *
 *   node bench/noisy-neighbour.ts [--postgres] [--duration S] [--attackers N] [--help]
 *
 * A quiet tenant's probe measures GET /v1/whoami and a small task submit, one request at a
 * time, on an idle node and then while a viewer of another tenant reads a topic of 1 MB
 * messages (`?last=1000&limit=1000`) from N connections at once: the attack of issue 18.
 * Both phases run on the same node in the same run; the result is the ratio of the probe's
 * p99 under attack to its p99 idle. Three nodes, one after the other: the default settings
 * (response budget, rate limit, and the rate limit charging response bytes); the same with
 * byte charging off (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN=0); and no bound at all (the
 * budget raised to its maximum, no rate limit: what the server did before responses had a
 * bound). Writes bench/results/noisy-neighbour-<store>-<date>.json.
 */
import { spawn } from 'node:child_process';
import { SETTINGS } from '../packages/server/src/modules.ts';
import {
  type CommonOptions,
  commonOptions,
  intOption,
  Processes,
  parseOptions,
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
} from './common.ts';

const ATTACK_FLAG = '--serve-attack';
const SELF = import.meta.filename;
const TOPIC = 'noisy.history';
/**
 * The probe sends at most one request per this many ms (50 a second): a quiet tenant, well
 * under the default rate limit (100 a second), so that it is never refused itself.
 */
const PROBE_INTERVAL_MS = 20;

const HELP = `Usage: node bench/noisy-neighbour.ts [options]

Measures a quiet tenant's request latency (GET /v1/whoami, POST /v1/tasks) on an idle node
and while another tenant reads a topic of large messages from several connections, on
127.0.0.1, and reports p50/p99 and the ratio attack p99 / idle p99. Three nodes: the
default settings (response budget, rate limit charging response bytes); the same with byte
charging off; and the budget raised to its maximum without a rate limit (no bound).

Options:
  --postgres              Use PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL for a throwaway database (env BENCH_POSTGRES_URL)
  --duration S            Seconds per phase (env BENCH_DURATION; default 10)
  --attackers N           Concurrent attacking connections (env BENCH_ATTACKERS; default 4)
  --messages N            Messages in the topic (env BENCH_MESSAGES; default 100)
  --message-bytes N       Bytes per message (env BENCH_MESSAGE_BYTES; default 1000000)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)
  -h, --help              Show this help`;

interface Options extends CommonOptions {
  attackers: number;
  messages: number;
  messageBytes: number;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    postgres: { type: 'boolean' },
    'postgres-url': { type: 'string' },
    attackers: { type: 'string' },
    messages: { type: 'string' },
    'message-bytes': { type: 'string' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  return {
    ...commonOptions(values),
    attackers: intOption('attackers', values.attackers ?? env.BENCH_ATTACKERS, 4, 1),
    messages: intOption('messages', values.messages ?? env.BENCH_MESSAGES, 100, 1),
    messageBytes: intOption(
      'message-bytes',
      values['message-bytes'] ?? env.BENCH_MESSAGE_BYTES,
      1_000_000,
      16,
    ),
  };
}

// ---------------------------------------------------------------------------------------
// The attacker: its own process, so that reading large bodies does not slow the probe.

interface AttackSummary {
  requests: number;
  statuses: Record<string, number>;
  bytes: number;
  meanMs: number;
  maxMs: number;
}

async function serveAttack(url: string, key: string, connections: number, ms: number) {
  const until = performance.now() + ms;
  const statuses: Record<string, number> = {};
  const times: number[] = [];
  let bytes = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        const response = await fetch(`${url}/v1/topics/${TOPIC}/messages?last=1000&limit=1000`, {
          headers: { authorization: `Bearer ${key}` },
        }).catch(() => undefined);
        const body = response ? await response.arrayBuffer().catch(() => undefined) : undefined;
        times.push(performance.now() - started);
        bytes += body?.byteLength ?? 0;
        const status = String(response?.status ?? 'error');
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
  const summary: AttackSummary = {
    requests: times.length,
    statuses,
    bytes,
    meanMs: round1(times.reduce((a, b) => a + b, 0) / Math.max(1, times.length)),
    maxMs: round1(Math.max(0, ...times)),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

// ---------------------------------------------------------------------------------------

/** The fields read from what the set-up creates (tenants, keys). */
interface Created {
  secret: string;
  admin_key: { secret: string };
}

async function call(url: string, key: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text) as Created;
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;

interface Latency {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function latencyOf(times: number[]): Latency {
  const sorted = [...times].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50Ms: round3(percentile(sorted, 50)),
    p99Ms: round3(percentile(sorted, 99)),
    maxMs: round3(sorted[sorted.length - 1] ?? 0),
  };
}

/** The quiet tenant's requests, one at a time, alternating, for `ms`. */
async function probe(url: string, key: string, ms: number) {
  const whoami: number[] = [];
  const submit: number[] = [];
  const until = performance.now() + ms;
  let i = 0;
  while (performance.now() < until) {
    const started = performance.now();
    const next = started + PROBE_INTERVAL_MS;
    if (i % 2 === 0) {
      await call(url, key, 'GET', '/v1/whoami');
      whoami.push(performance.now() - started);
    } else {
      await call(url, key, 'POST', '/v1/tasks', { capabilities: ['quiet'], input: { i } });
      submit.push(performance.now() - started);
    }
    i += 1;
    await sleep(Math.max(0, next - performance.now()));
  }
  return { whoami: latencyOf(whoami), submit: latencyOf(submit) };
}

/**
 * The node's longest event-loop delay since the previous call, in ms: prom-client's
 * `nodejs_eventloop_lag_max_seconds`, whose histogram starts again at every scrape.
 */
async function eventLoopMaxMs(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const match = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text);
  return round1(Number(match?.[1] ?? Number.NaN) * 1000);
}

async function attack(url: string, key: string, o: Options): Promise<AttackSummary> {
  const child = spawn(
    process.execPath,
    [SELF, ATTACK_FLAG, url, key, String(o.attackers), String(o.durationSeconds * 1000)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    out += chunk;
  });
  await new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return JSON.parse(out.trim()) as AttackSummary;
}

async function measureNode(o: Options, name: string, settings: Record<string, string>) {
  const node = await startOrchestraNode(processes, {
    name,
    settings,
    orchestraEnv: o.orchestraEnv,
  });
  const admin = node.adminKey as string;
  const noisy = (await call(node.url, admin, 'POST', '/v1/tenants', { id: 'noisy' })).admin_key
    .secret;
  const quiet = (await call(node.url, admin, 'POST', '/v1/tenants', { id: 'quiet' })).admin_key
    .secret;
  const viewer = (
    await call(node.url, noisy, 'POST', '/v1/api-keys', { name: 'reader', role: 'viewer' })
  ).secret;
  const data = 'x'.repeat(o.messageBytes);
  for (let i = 0; i < o.messages; i += 1) {
    await call(node.url, noisy, 'POST', `/v1/topics/${TOPIC}/messages`, { data });
  }
  await sleep(SETTLE_MS);
  await probe(node.url, quiet, 1000); // warm-up
  await eventLoopMaxMs(node.url);
  const idle = await probe(node.url, quiet, o.durationSeconds * 1000);
  const idleEventLoopMaxMs = await eventLoopMaxMs(node.url);
  const [underAttack, attacker] = await Promise.all([
    probe(node.url, quiet, o.durationSeconds * 1000),
    attack(node.url, viewer, o),
  ]);
  const attackEventLoopMaxMs = await eventLoopMaxMs(node.url);
  await processes.stop(node.proc);
  const ratio = (a: Latency, b: Latency) => round3(a.p99Ms / Math.max(b.p99Ms, 0.001));
  return {
    settings,
    idle,
    underAttack,
    attacker,
    eventLoopDelayMaxMs: { idle: idleEventLoopMaxMs, underAttack: attackEventLoopMaxMs },
    p99Ratio: {
      whoami: ratio(underAttack.whoami, idle.whoami),
      submit: ratio(underAttack.submit, idle.submit),
    },
  };
}

const processes = new Processes({ stopTimeoutMs: 10_000, childrenFirst: false });

async function main(o: Options): Promise<number> {
  startWatchdog(processes, 15 * 60_000);
  const record = new RunRecord('noisy-neighbour', SELF);
  process.stdout.write(record.machineLine());
  const store = async (name: string): Promise<Record<string, string>> =>
    o.store === 'postgres'
      ? {
          ORCHESTRA_DATABASE_URL: await throwawayDatabase(
            processes,
            o.postgresUrl,
            `bench_noisy_${name}_${process.pid}`,
          ),
        }
      : {};
  // The default rate limit, which the other benchmarks turn off to measure work.
  const rateLimit = {
    ORCHESTRA_RATE_LIMIT_PER_SECOND: String(SETTINGS.rateLimitPerSecond.default),
    ORCHESTRA_RATE_LIMIT_BURST: String(SETTINGS.rateLimitBurst.default),
  };
  const charged = await measureNode(o, 'charged', { ...(await store('charged')), ...rateLimit });
  const budgetOnly = await measureNode(o, 'budget-only', {
    ...(await store('budget_only')),
    ...rateLimit,
    ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN: '0',
  });
  const unbounded = await measureNode(o, 'unbounded', {
    ...(await store('unbounded')),
    ORCHESTRA_RESPONSE_MAX_BYTES: '268435456',
  });
  const rows = [
    ['defaults: budget + byte charging', charged] as const,
    ['budget, byte charging off', budgetOnly] as const,
    ['no bound, no rate limit', unbounded] as const,
  ].flatMap(([label, r]) =>
    (['whoami', 'submit'] as const).map((op) => [
      label,
      op,
      r.idle[op].p50Ms,
      r.idle[op].p99Ms,
      r.underAttack[op].p50Ms,
      r.underAttack[op].p99Ms,
      r.underAttack[op].maxMs,
      r.p99Ratio[op],
      `${r.eventLoopDelayMaxMs.idle} / ${r.eventLoopDelayMaxMs.underAttack}`,
      `${r.attacker.requests} (${Object.entries(r.attacker.statuses)
        .map(([s, n]) => `${s}: ${n}`)
        .join(', ')})`,
    ]),
  );
  process.stdout.write(
    `${table(
      [
        'node',
        'probe',
        'idle p50 ms',
        'idle p99 ms',
        'attack p50 ms',
        'attack p99 ms',
        'attack max ms',
        'p99 ratio',
        'loop delay max ms idle / attack',
        'attack requests',
      ],
      rows,
    )}\n`,
  );
  const file = record.write(o, {
    options: {
      durationSeconds: o.durationSeconds,
      attackers: o.attackers,
      messages: o.messages,
      messageBytes: o.messageBytes,
    },
    note: 'The machine has 2 cores shared with other engineers working at the same time: absolute latencies are noisy; the ratios within one node are the result.',
    charged,
    budgetOnly,
    unbounded,
  });
  process.stdout.write(`wrote ${file}\n`);
  return 0;
}

if (process.argv[2] === ATTACK_FLAG) {
  const [url, key, connections, ms] = process.argv.slice(3);
  await serveAttack(url as string, key as string, Number(connections), Number(ms));
} else {
  await runBenchmark({
    script: SELF,
    processes,
    stopping: 'Orchestra and the attacker',
    readOptions,
    main,
  });
}
