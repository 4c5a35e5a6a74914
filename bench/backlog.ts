/**
 * Benchmark: how long a task an idle agent can take waits behind N queued tasks that no
 * agent can take, for N from 0 to 100,000, in one run.
 *
 *   node bench/backlog.ts [--levels 0,1000,10000,100000] [--samples S] [--postgres] [--help]
 *
 * Three tenants on one Orchestra server, each with an agent (an `AgentWorker` in this
 * process, capability `work`, 2 slots): `capability` queues N tasks needing a capability
 * nobody offers; `key` queues N tasks of one concurrency key while a task of that key holds
 * its limit (1) on the agent; `empty` (the anchor) queues nothing. At each level the
 * tenants take turns submitting a task the idle slot can take, one at a time, and the time
 * from the submit call to the agent's handler is measured. Ratios are to the anchor in the
 * same level. Writes bench/results/backlog-<store>-<date>.json. See bench/README.md.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentWorker, Orchestra } from '../packages/sdk/src/index.ts';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  envFlag,
  intOption,
  Processes,
  parseOptions,
  RunRecord,
  round1,
  round3,
  runBenchmark,
  startOrchestraNode,
  startWatchdog,
  table,
  throwawayDatabase,
  withPostgres,
} from './common.ts';

const SELF = import.meta.filename;
const CAPABILITY = 'work';
const BATCH = 500;
/** A sample whose task reaches no agent in this time fails the run. */
const SAMPLE_TIMEOUT_MS = 60_000;
const PAUSE_MS = 100;

const HELP = `Usage: node bench/backlog.ts [options]

Measures how long a task an idle agent can take waits behind N queued tasks that no agent
can take (a capability nobody offers; one concurrency key at its limit), against a tenant
with an empty queue in the same run, on 127.0.0.1. Every option also has an environment
variable.

Options:
  --levels N,N,...        Backlog sizes, ascending (env BENCH_LEVELS; default
                          0,1000,10000,100000)
  --samples S             Tasks submitted per tenant and level (env BENCH_SAMPLES; default 20)
  --idle-seconds S        Seconds with the backlog queued and nothing submitted, to read the
                          server's CPU at each level (env BENCH_IDLE_SECONDS; default 3)
  --postgres              Orchestra on PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop a throwaway database
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --skip-analyze          With --postgres, do not ANALYZE after queueing each level
                          (env BENCH_SKIP_ANALYZE=1)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)
  --orchestra-env K=V     Extra environment for the Orchestra server, repeatable
  -h, --help              Show this help`;

const clock = () => performance.timeOrigin + performance.now();

interface Options extends CommonOptions {
  levels: number[];
  samples: number;
  idleSeconds: number;
  analyze: boolean;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    levels: { type: 'string' },
    samples: { type: 'string' },
    'idle-seconds': { type: 'string' },
    'skip-analyze': { type: 'boolean' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const levels = (values.levels ?? env.BENCH_LEVELS ?? '0,1000,10000,100000')
    .split(',')
    .map((raw) => intOption('levels', raw.trim(), 0, 0));
  if (levels.some((n, i) => i > 0 && n < (levels[i - 1] ?? 0)) || levels.some((n) => n > 200_000)) {
    throw new Error('--levels must be ascending, each at most 200000');
  }
  return {
    ...commonOptions(values),
    levels,
    samples: intOption('samples', values.samples ?? env.BENCH_SAMPLES, 20, 1),
    idleSeconds: intOption('idle-seconds', values['idle-seconds'] ?? env.BENCH_IDLE_SECONDS, 3, 0),
    analyze: !(values['skip-analyze'] ?? envFlag(env.BENCH_SKIP_ANALYZE)),
  };
}

const processes = new Processes({ stopTimeoutMs: 10_000, childrenFirst: false });

type Kind = 'empty' | 'capability' | 'key';
const KINDS: readonly Kind[] = ['empty', 'capability', 'key'];

/** A tenant of the run: its client, its agent and when its handler last ran each task. */
interface Tenant {
  kind: Kind;
  client: Orchestra;
  worker: AgentWorker;
  started: Map<string, number>;
  waiters: Map<string, () => void>;
  queued: number;
}

async function openTenant(url: string, admin: Orchestra, kind: Kind): Promise<Tenant> {
  const { admin_key } = await admin.tenants.create({ id: `backlog-${kind}` });
  const client = new Orchestra({ url, apiKey: admin_key.secret });
  const agentKey = (await client.apiKeys.create({ name: 'agent', role: 'agent' })).secret;
  const started = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  const worker = new AgentWorker({
    url,
    apiKey: agentKey,
    agentId: `agent-${kind}`,
    capabilities: [CAPABILITY],
    concurrency: 2,
    handleSignals: false,
    handler: (input, ctx) => {
      if ((input as { hold?: boolean } | null)?.hold === true) {
        return new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(null)));
      }
      started.set(ctx.task.id, clock());
      waiters.get(ctx.task.id)?.();
      return null;
    },
  });
  await worker.start();
  processes.onCleanup(() => worker.stop({ drain: false }));
  const tenant: Tenant = { kind, client, worker, started, waiters, queued: 0 };
  if (kind === 'key') {
    // Holds the key's limit (1) for the whole run: every task of the key after it waits.
    const holder = await client.tasks.create({
      capabilities: [CAPABILITY],
      concurrency_key: 'k',
      input: { hold: true },
    });
    const until = Date.now() + SAMPLE_TIMEOUT_MS;
    while ((await client.tasks.get(holder.id)).state !== 'running') {
      if (Date.now() > until) throw new Error('the key holder never started');
      await sleep(50);
    }
  }
  return tenant;
}

/** Queues blockers until the tenant has `level` of them. */
async function fill(tenant: Tenant, level: number): Promise<void> {
  while (tenant.queued < level) {
    const count = Math.min(BATCH, level - tenant.queued);
    const task =
      tenant.kind === 'capability'
        ? { capabilities: ['nobody-offers-this'], input: null }
        : { capabilities: [CAPABILITY], concurrency_key: 'k', input: null };
    const outcomes = await tenant.client.tasks.createMany(
      Array.from({ length: count }, () => task),
    );
    const failed = outcomes.find((o) => !o.ok);
    if (failed !== undefined) throw new Error(`a blocker was refused: ${JSON.stringify(failed)}`);
    tenant.queued += count;
  }
}

/** Submits a task the idle slot can take; resolves to ms from the submit call to the handler. */
async function sample(tenant: Tenant): Promise<number> {
  const sentAt = clock();
  const task = await tenant.client.tasks.create({ capabilities: [CAPABILITY], input: null });
  if (!tenant.started.has(task.id)) {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${tenant.kind}: no agent got ${task.id} in 60 s`)),
        SAMPLE_TIMEOUT_MS,
      );
      tenant.waiters.set(task.id, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  tenant.waiters.delete(task.id);
  const at = tenant.started.get(task.id) ?? Number.NaN;
  tenant.started.delete(task.id);
  // The slot frees once the result is in: wait for it, so every sample finds it idle.
  await tenant.client.tasks.wait(task.id, { timeoutMs: SAMPLE_TIMEOUT_MS });
  return at - sentAt;
}

interface Summary {
  count: number;
  p50: number;
  p90: number;
  max: number;
  mean: number;
}

function summarize(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) =>
    round3(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0);
  return {
    count: sorted.length,
    p50: at(0.5),
    p90: at(0.9),
    max: round3(sorted.at(-1) ?? 0),
    mean: round3(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length)),
  };
}

interface LevelResult {
  level: number;
  fillSeconds: number;
  /** Server CPU over `idleSeconds` with the backlog queued and no submits, % of a core. */
  idleServerCpuPercent: number | null;
  latencyMs: Record<Kind, Summary>;
  /** p50 and p90 of each backlog tenant over those of the anchor (`empty`). */
  ratioToEmpty: Record<Exclude<Kind, 'empty'>, { p50: number; p90: number }>;
  samplesMs: Record<Kind, number[]>;
}

async function main(o: Options): Promise<number> {
  const queuedTotal = 2 * (o.levels.at(-1) ?? 0);
  // Filling runs at about 1,000 tasks/s on PostgreSQL here; samples are quick.
  startWatchdog(processes, (600 + queuedTotal / 200 + o.levels.length * o.samples * 3) * 1000);
  const run = new RunRecord('backlog', SELF);
  console.log(
    `backlog benchmark (${o.store}): levels ${o.levels.join(', ')}; ${o.samples} samples per ` +
      'tenant and level',
  );
  console.log(run.machineLine());

  // The backlog is the point here: no per-tenant cap on queued tasks (100,000 by default).
  const settings: Record<string, string> = { ORCHESTRA_TENANT_MAX_QUEUED_TASKS: '0' };
  let databaseUrl: string | null = null;
  if (o.store === 'postgres') {
    const name = `orchestra_bench_backlog_${process.pid}_${Date.now().toString(36)}`;
    databaseUrl = await throwawayDatabase(processes, o.postgresUrl, name);
    settings.ORCHESTRA_DATABASE_URL = databaseUrl;
  }
  const node = await startOrchestraNode(processes, {
    name: 'backlog',
    settings,
    orchestraEnv: o.orchestraEnv,
  });
  const admin = new Orchestra({ url: node.url, apiKey: adminKeyOf(node) });
  const tenants: Tenant[] = [];
  for (const kind of KINDS) tenants.push(await openTenant(node.url, admin, kind));

  const results: LevelResult[] = [];
  for (const level of o.levels) {
    const fillStart = performance.now();
    for (const tenant of tenants) if (tenant.kind !== 'empty') await fill(tenant, level);
    const fillSeconds = round1((performance.now() - fillStart) / 1000);
    if (databaseUrl !== null && o.analyze) {
      await withPostgres(databaseUrl, (client) => client.query('analyze tasks'));
    }
    await sleep(1_000);
    let idleServerCpuPercent: number | null = null;
    if (o.idleSeconds > 0) {
      const before = cpuMsOf(node.pid);
      await sleep(o.idleSeconds * 1000);
      const after = cpuMsOf(node.pid);
      if (before !== null && after !== null) {
        idleServerCpuPercent = round1(((after - before) / (o.idleSeconds * 1000)) * 100);
      }
    }
    const samplesMs: Record<Kind, number[]> = { empty: [], capability: [], key: [] };
    for (let i = 0; i < o.samples; i += 1) {
      // The tenants take turns, in a rotating order, so that a change in machine load hits
      // all of them.
      for (let j = 0; j < tenants.length; j += 1) {
        const tenant = tenants[(i + j) % tenants.length];
        if (tenant === undefined) continue;
        samplesMs[tenant.kind].push(round3(await sample(tenant)));
        await sleep(PAUSE_MS);
      }
    }
    const latencyMs = {
      empty: summarize(samplesMs.empty),
      capability: summarize(samplesMs.capability),
      key: summarize(samplesMs.key),
    };
    const ratio = (kind: 'capability' | 'key') => ({
      p50: round3(latencyMs[kind].p50 / latencyMs.empty.p50),
      p90: round3(latencyMs[kind].p90 / latencyMs.empty.p90),
    });
    results.push({
      level,
      fillSeconds,
      idleServerCpuPercent,
      latencyMs,
      ratioToEmpty: { capability: ratio('capability'), key: ratio('key') },
      samplesMs,
    });
    console.log(
      `level ${level}: queued in ${fillSeconds} s; p50 empty ${latencyMs.empty.p50} ms, ` +
        `capability ${latencyMs.capability.p50} ms, key ${latencyMs.key.p50} ms`,
    );
  }

  console.log(`\nsubmit → agent handler, ms (${o.store}; ${o.samples} samples per cell)\n`);
  console.log(
    table(
      [
        'queued ahead',
        'empty p50',
        'p90',
        'capability p50',
        'p90',
        'ratio',
        'key p50',
        'p90',
        'ratio',
        'idle server CPU',
      ],
      results.map((r) => [
        r.level,
        r.latencyMs.empty.p50,
        r.latencyMs.empty.p90,
        r.latencyMs.capability.p50,
        r.latencyMs.capability.p90,
        r.ratioToEmpty.capability.p50,
        r.latencyMs.key.p50,
        r.latencyMs.key.p90,
        r.ratioToEmpty.key.p50,
        r.idleServerCpuPercent === null ? 'n/a' : `${r.idleServerCpuPercent} %`,
      ]),
    ),
  );
  const warnings = node.warnings();
  const file = run.write(o, {
    parameters: {
      levels: o.levels,
      samples: o.samples,
      idleSeconds: o.idleSeconds,
      analyzedAfterEachLevel: databaseUrl !== null && o.analyze,
      agentSlots: 2,
      batch: BATCH,
    },
    serverWarnings: warnings,
    levels: results,
  });
  console.log(`\nwrote ${file}`);
  return 0;
}

await runBenchmark({ script: SELF, processes, stopping: 'the server', readOptions, main });
