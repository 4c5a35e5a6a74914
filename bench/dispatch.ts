/**
 * Benchmark: end-to-end task dispatch through Orchestra against BullMQ on Redis, in one run.
 *
 *   node bench/dispatch.ts [--tasks N] [--agents K] [--concurrency C] [--rate R] [--postgres]
 *                          [--help]
 *
 * Runs the same workload through both: K agent processes (Orchestra's AgentWorker, or a
 * BullMQ Worker) with concurrency C each, whose handler echoes its input, and a producer
 * process that submits tasks through a bounded number of concurrent submitters (the SDK's
 * `tasks.create`, or `Queue.add`). Measures (1) throughput: N tasks submitted as fast as the
 * submitters allow, until every one completed; (2) latency at a fixed, open-loop rate: submit
 * to the agent's handler, and submit to the acknowledged result. Writes
 * bench/results/dispatch-<store>-<date>.json. See bench/README.md for how to read it.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  envFlag,
  HOST,
  intOption,
  LoadProcess,
  type LoadReply,
  machineCpuTicks,
  mean,
  meanOrNull,
  PROFILE_DIR,
  Processes,
  parseOptions,
  profileArgs,
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

const CHILD_FLAG = '--child';
const CHILD_CONFIG_ENV = 'BENCH_DISPATCH_CHILD';
const SELF = import.meta.filename;
const CAPABILITY = 'bench';
const STOP_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/**
 * After the last submit, completions may stall this long, and trail it this long in all,
 * before a run counts as failed.
 */
const STALL_TIMEOUT_MS = 30_000;
const DRAIN_TIMEOUT_MS = 120_000;
const POLL_MS = 50;

const HELP = `Usage: node bench/dispatch.ts [options]

Runs the same task workload through Orchestra (server + AgentWorker processes, tasks
submitted with the SDK) and BullMQ (Redis + Worker processes, jobs added with Queue.add)
alternately on 127.0.0.1, and reports end-to-end throughput, latency at a fixed rate, CPU per
task and the ratios Orchestra / BullMQ. Every option also has an environment variable.

Options:
  --tasks N               Tasks per throughput run (env BENCH_TASKS; default 20000, and
                          5000 with --postgres, where Orchestra is much slower)
  --agents K              Agent (worker) processes per system (env BENCH_AGENTS; default 2)
  --concurrency C         Tasks each agent runs at once (env BENCH_CONCURRENCY; default 50)
  --submitters S          Concurrent submits in flight in the producer
                          (env BENCH_SUBMITTERS; default 64)
  --rate R                Tasks/s of the fixed-rate latency runs (env BENCH_RATE; default 500)
  --duration S            Seconds of each fixed-rate run (env BENCH_DURATION; default 10)
  --rounds N              Measured rounds; each runs both phases on both systems, alternating
                          (env BENCH_ROUNDS; default 2)
  --warmup N              Tasks per system before the rounds (env BENCH_WARMUP; default 3000)
  --max-run-seconds S     A throughput run stops submitting after this long
                          (env BENCH_MAX_RUN_SECONDS; default 60)
  --postgres              Orchestra on PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop a throwaway database
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --skip-analyze          With --postgres, do not ANALYZE Orchestra's database after the
                          warm-up (see bench/README.md; env BENCH_SKIP_ANALYZE=1)
  --redis-url URL         Redis for BullMQ; keys go under a prefix unique to the run and are
                          deleted at the end (env BENCH_REDIS_URL; default redis://127.0.0.1:6379)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)

Diagnostics (the result is then not the standard measurement; use --out-dir elsewhere):
  --single-submits        The producer's SDK client sends every tasks.create as its own
                          request (batchSubmits: false) instead of batching the calls made
                          together (env BENCH_SINGLE_SUBMITS=1)
  --profile               Run the Orchestra server, the producer and the first agent of each
                          system under --cpu-prof; the .cpuprofile files go to
                          bench/.scratch/profiles when the processes stop
  --orchestra-env K=V     Extra environment for the Orchestra server, repeatable
  -h, --help              Show this help`;

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
const clock = () => performance.timeOrigin + performance.now();

type System = 'orchestra' | 'bullmq';
const SYSTEMS: readonly System[] = ['orchestra', 'bullmq'];

// ---------------------------------------------------------------------------------------
// Child processes: agents (one system each) and the producer, all this same file. They
// talk to the benchmark over Node's IPC channel; every message below is one of these.

interface ChildConfig {
  role: 'agent' | 'producer';
  /** For an agent: which system it serves. */
  system?: System;
  index?: number;
  concurrency?: number;
  orchestra: { url: string; adminKey: string; agentKey: string };
  bullmq: { host: string; port: number; prefix: string; queue: string };
  /** For the producer: one request per submit (no batching by the SDK). */
  singleSubmits?: boolean;
}

type Request =
  | { type: 'count' }
  | { type: 'collect' }
  | { type: 'stop' }
  | { type: 'sanity'; system: System }
  | { type: 'burst'; system: System; tasks: number; submitters: number; maxMs: number }
  | { type: 'paced'; system: System; rate: number; seconds: number; submitters: number };

interface Envelope {
  id: number;
  request: Request;
}

/** The children answer as every load process does (`LoadProcess`). */
type Reply = LoadReply;

/** What an agent says about the tasks it handled since the last `collect`. */
interface AgentCount {
  received: number;
  terminal: number;
  /** Results the server (or Redis) did not accept, errors and disconnects reported. */
  refused: number;
  errors: number;
  lastError: string | null;
}

interface AgentSamples {
  sent: Float64Array;
  received: Float64Array;
  terminal: Float64Array;
}

interface SubmitReport {
  submitted: number;
  /** Paced runs: the tasks due in the planned duration (more than `submitted` if it fell behind). */
  planned?: number;
  errors: number;
  firstError: string | null;
  firstStart: number;
  lastEnd: number;
  /** Duration of each submit call (HTTP POST or Queue.add), ms. */
  submitMs: Float64Array;
  /** Paced runs: how late each submit started against its schedule, ms. */
  lagMs: Float64Array | null;
}

/** The submits of one run, timed. A failed submit is counted, and the run goes on. */
class SubmitLog {
  readonly #submit: (sentAt: number) => Promise<unknown>;
  readonly #submitMs: Float64Array;
  readonly #firstStart: number;
  #lastEnd: number;
  #errors = 0;
  #firstError: string | null = null;

  constructor(submit: (sentAt: number) => Promise<unknown>, tasks: number, firstStart: number) {
    this.#submit = submit;
    this.#submitMs = new Float64Array(tasks);
    this.#firstStart = firstStart;
    this.#lastEnd = firstStart;
  }

  /** Submits task `i`. */
  async submit(i: number): Promise<void> {
    const sentAt = clock();
    try {
      await this.#submit(sentAt);
    } catch (err) {
      this.#errors += 1;
      this.#firstError ??= (err as Error).message;
    }
    this.#lastEnd = clock();
    this.#submitMs[i] = this.#lastEnd - sentAt;
  }

  /** The report on tasks 0 to `submitted` - 1; paced runs add what was planned and the lag. */
  report(submitted: number, paced?: { planned: number; lagMs: Float64Array }): SubmitReport {
    return {
      submitted,
      ...(paced === undefined ? {} : { planned: paced.planned }),
      errors: this.#errors,
      firstError: this.#firstError,
      firstStart: this.#firstStart,
      lastEnd: this.#lastEnd,
      submitMs: this.#submitMs.subarray(0, submitted),
      lagMs: paced === undefined ? null : paced.lagMs.subarray(0, submitted),
    };
  }
}

/** Records, per task, when it was sent, received by the handler and acknowledged as done. */
class Recorder {
  sent: number[] = [];
  received: number[] = [];
  terminal: number[] = [];
  terminalCount = 0;
  refused = 0;
  errors = 0;
  lastError: string | null = null;
  readonly #byId = new Map<string, number>();

  receive(id: string, sentAt: unknown): void {
    const index = this.received.push(clock()) - 1;
    this.sent.push(typeof sentAt === 'number' ? sentAt : Number.NaN);
    this.terminal.push(Number.NaN);
    this.#byId.set(id, index);
  }

  done(id: string, at: number, accepted: boolean): void {
    const index = this.#byId.get(id);
    if (index === undefined) return;
    this.#byId.delete(id);
    if (!accepted) {
      this.refused += 1;
      return;
    }
    this.terminal[index] = at;
    this.terminalCount += 1;
  }

  error(message: string): void {
    this.errors += 1;
    this.lastError = message.slice(0, 500);
  }

  count(): AgentCount {
    return {
      received: this.received.length,
      terminal: this.terminalCount,
      refused: this.refused,
      errors: this.errors,
      lastError: this.lastError,
    };
  }

  /** Hands over the samples and starts afresh (tasks still in flight keep their slot). */
  collect(): AgentSamples {
    const samples = {
      sent: Float64Array.from(this.sent),
      received: Float64Array.from(this.received),
      terminal: Float64Array.from(this.terminal),
    };
    this.sent = [];
    this.received = [];
    this.terminal = [];
    this.terminalCount = 0;
    this.refused = 0;
    this.errors = 0;
    this.lastError = null;
    this.#byId.clear();
    return samples;
  }
}

function serveRequests(handle: (request: Request) => Promise<unknown> | unknown): void {
  process.on('message', (message: Envelope) => {
    void (async () => {
      let reply: Reply;
      try {
        reply = { id: message.id, ok: true, value: await handle(message.request) };
      } catch (err) {
        reply = { id: message.id, ok: false, error: (err as Error).stack ?? String(err) };
      }
      process.send?.(reply);
    })();
  });
}

/**
 * An Orchestra agent: the SDK's AgentWorker with an echo handler. The SDK resolves a task
 * only when the server acknowledges its result (an `ack` frame, sent after the commit), but
 * does not expose that moment; a WebSocket subclass that also listens to every incoming
 * frame records it. It reads frames, it changes none.
 */
async function runOrchestraAgent(config: ChildConfig, recorder: Recorder) {
  const Base = globalThis.WebSocket;
  class TimedWebSocket extends Base {
    constructor(...args: ConstructorParameters<typeof WebSocket>) {
      super(...args);
      this.addEventListener('message', (event) => {
        const text = event.data;
        if (typeof text !== 'string' || !text.includes('"kind":"ack"')) return;
        const at = clock();
        const frame = JSON.parse(text) as { payload?: { task_id?: unknown; accepted?: unknown } };
        const taskId = frame.payload?.task_id;
        if (typeof taskId === 'string') recorder.done(taskId, at, frame.payload?.accepted === true);
      });
    }
  }
  globalThis.WebSocket = TimedWebSocket;
  const { AgentWorker } = await import('../packages/sdk/src/index.ts');
  const worker = new AgentWorker({
    url: config.orchestra.url,
    apiKey: config.orchestra.agentKey,
    agentId: `bench-agent-${config.index ?? 0}`,
    capabilities: [CAPABILITY],
    concurrency: config.concurrency ?? 1,
    handleSignals: false,
    handler: (input, context) => {
      recorder.receive(context.task.id, (input as { sent_at?: unknown } | null)?.sent_at);
      return input;
    },
    onStatus: (status) => {
      if (status.type === 'error') recorder.error(status.error.message);
      if (status.type === 'disconnected') recorder.error(`disconnected: ${status.code}`);
    },
  });
  await worker.start();
  return () => worker.stop({ drain: false });
}

/** A BullMQ worker with the same echo. `completed` is emitted after Redis stored the result. */
async function runBullmqAgent(config: ChildConfig, recorder: Recorder) {
  const { Worker } = await import('bullmq');
  const { host, port, prefix, queue } = config.bullmq;
  const worker = new Worker(
    queue,
    async (job) => {
      recorder.receive(String(job.id), (job.data as { sent_at?: unknown } | null)?.sent_at);
      return job.data;
    },
    {
      connection: { host, port, maxRetriesPerRequest: null },
      prefix,
      concurrency: config.concurrency ?? 1,
    },
  );
  worker.on('completed', (job) => recorder.done(String(job.id), clock(), true));
  worker.on('failed', (job, err) => {
    if (job) recorder.done(String(job.id), clock(), false);
    recorder.error(err.message);
  });
  worker.on('error', (err) => recorder.error(err.message));
  await worker.waitUntilReady();
  return () => worker.close();
}

async function runAgent(config: ChildConfig): Promise<void> {
  const recorder = new Recorder();
  const stop =
    config.system === 'orchestra'
      ? await runOrchestraAgent(config, recorder)
      : await runBullmqAgent(config, recorder);
  serveRequests(async (request) => {
    switch (request.type) {
      case 'count':
        return recorder.count();
      case 'collect':
        return recorder.collect();
      case 'stop':
        await stop();
        setImmediate(() => process.exit(0));
        return null;
      default:
        throw new Error(`an agent does not do ${request.type}`);
    }
  });
  process.send?.({ id: 0, ok: true, value: 'ready' } satisfies Reply);
}

/** The producer: submits tasks to either system through at most `submitters` calls at once. */
async function runProducer(config: ChildConfig): Promise<void> {
  const { Orchestra } = await import('../packages/sdk/src/index.ts');
  const { Queue } = await import('bullmq');
  const client = new Orchestra({
    url: config.orchestra.url,
    apiKey: config.orchestra.adminKey,
    batchSubmits: config.singleSubmits !== true,
  });
  const { host, port, prefix, queue: name } = config.bullmq;
  const queue = new Queue(name, { connection: { host, port }, prefix });
  await queue.waitUntilReady();

  const submitters: Record<System, (sentAt: number) => Promise<unknown>> = {
    orchestra: (sentAt) =>
      client.tasks.create({ capabilities: [CAPABILITY], input: { sent_at: sentAt } }),
    bullmq: (sentAt) => queue.add('bench', { sent_at: sentAt }),
  };

  /** As fast as the submitters allow: each loops until the tasks or the time run out. */
  async function burst(system: System, tasks: number, parallel: number, maxMs: number) {
    const firstStart = clock();
    const log = new SubmitLog(submitters[system], tasks, firstStart);
    const deadline = firstStart + maxMs;
    let next = 0;
    const loop = async () => {
      while (next < tasks && clock() < deadline) await log.submit(next++);
    };
    await Promise.all(Array.from({ length: Math.min(parallel, tasks) }, loop));
    return log.report(next);
  }

  /**
   * Open loop: task i is due at start + i / rate, whatever happened to the earlier ones. A
   * submit that finds every submitter busy waits for one; that delay is reported as lag.
   * A system that cannot keep up is given twice the planned time, then submitting stops.
   */
  async function paced(system: System, rate: number, seconds: number, parallel: number) {
    const tasks = Math.max(1, Math.round(rate * seconds));
    const interval = 1000 / rate;
    const lagMs = new Float64Array(tasks);
    let inFlight = 0;
    let freed: (() => void) | undefined;
    const running = new Set<Promise<void>>();
    const start = clock() + 5;
    const log = new SubmitLog(submitters[system], tasks, start);
    const deadline = start + 2 * seconds * 1000;
    let i = 0;
    while (i < tasks && clock() < deadline) {
      const due = start + i * interval;
      const now = clock();
      if (now < due) {
        await sleep(due - now);
        continue;
      }
      if (inFlight >= parallel) {
        await new Promise<void>((done) => {
          freed = done;
        });
        continue;
      }
      const index = i++;
      lagMs[index] = now - due;
      inFlight += 1;
      const call = (async () => {
        await log.submit(index);
        inFlight -= 1;
        const wake = freed;
        freed = undefined;
        wake?.();
      })();
      running.add(call);
      void call.finally(() => running.delete(call));
    }
    await Promise.all(running);
    return log.report(i, { planned: tasks, lagMs });
  }

  /** One task through each system, checked end to end: the echo comes back as the result. */
  async function sanity(system: System) {
    const input = { sent_at: clock(), check: 'echo' };
    if (system === 'orchestra') {
      const task = await client.tasks.create(
        { capabilities: [CAPABILITY], input },
        { wait: 10_000 },
      );
      if (task.state !== 'succeeded' || JSON.stringify(task.result) !== JSON.stringify(input)) {
        throw new Error(`the Orchestra sanity task ended ${task.state}: ${JSON.stringify(task)}`);
      }
      return task.id;
    }
    const job = await queue.add('bench', input);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      // Read the job after it completed: a copy read before holds no return value yet.
      const completed = job.id !== undefined && (await job.isCompleted());
      const current = completed && job.id !== undefined ? await queue.getJob(job.id) : undefined;
      if (current !== undefined) {
        if (JSON.stringify(current.returnvalue) !== JSON.stringify(input)) {
          throw new Error(`the BullMQ sanity job returned ${JSON.stringify(current.returnvalue)}`);
        }
        return job.id;
      }
      await sleep(20);
    }
    throw new Error('the BullMQ sanity job did not complete within 10 s');
  }

  serveRequests(async (request) => {
    switch (request.type) {
      case 'burst':
        return burst(request.system, request.tasks, request.submitters, request.maxMs);
      case 'paced':
        return paced(request.system, request.rate, request.seconds, request.submitters);
      case 'sanity':
        return sanity(request.system);
      case 'stop':
        await queue.close();
        setImmediate(() => process.exit(0));
        return null;
      default:
        throw new Error(`the producer does not do ${request.type}`);
    }
  });
  process.send?.({ id: 0, ok: true, value: 'ready' } satisfies Reply);
}

async function runChild(): Promise<void> {
  // Whatever happens to the benchmark, its children do not outlive it.
  process.on('disconnect', () => process.exit(0));
  process.on('SIGINT', () => undefined); // the benchmark stops its children itself
  const config = JSON.parse(process.env[CHILD_CONFIG_ENV] ?? '{}') as ChildConfig;
  try {
    if (config.role === 'agent') await runAgent(config);
    else await runProducer(config);
  } catch (err) {
    process.send?.({ id: 0, ok: false, error: (err as Error).stack ?? String(err) } as Reply);
    setTimeout(() => process.exit(1), 100);
  }
}

// ---------------------------------------------------------------------------------------
// Options

interface Options extends CommonOptions {
  redisUrl: string;
  tasks: number;
  agents: number;
  concurrency: number;
  submitters: number;
  rate: number;
  warmupTasks: number;
  maxRunSeconds: number;
  analyze: boolean;
  singleSubmits: boolean;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    tasks: { type: 'string' },
    agents: { type: 'string' },
    concurrency: { type: 'string' },
    submitters: { type: 'string' },
    rate: { type: 'string' },
    warmup: { type: 'string' },
    'max-run-seconds': { type: 'string' },
    'redis-url': { type: 'string' },
    'skip-analyze': { type: 'boolean' },
    'single-submits': { type: 'boolean' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const common = commonOptions(values);
  const redisUrl = values['redis-url'] ?? env.BENCH_REDIS_URL ?? `redis://${HOST}:6379`;
  const redisHost = new URL(redisUrl).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(redisHost)) {
    throw new Error(`--redis-url must be on loopback, got "${redisUrl}"`);
  }
  const postgres = common.store === 'postgres';
  return {
    ...common,
    redisUrl,
    tasks: intOption('tasks', values.tasks ?? env.BENCH_TASKS, postgres ? 5_000 : 20_000, 1),
    agents: intOption('agents', values.agents ?? env.BENCH_AGENTS, 2, 1),
    concurrency: intOption('concurrency', values.concurrency ?? env.BENCH_CONCURRENCY, 50, 1),
    submitters: intOption('submitters', values.submitters ?? env.BENCH_SUBMITTERS, 64, 1),
    rate: intOption('rate', values.rate ?? env.BENCH_RATE, 500, 1),
    warmupTasks: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, 3_000, 0),
    maxRunSeconds: intOption(
      'max-run-seconds',
      values['max-run-seconds'] ?? env.BENCH_MAX_RUN_SECONDS,
      60,
      1,
    ),
    analyze: !(values['skip-analyze'] ?? envFlag(env.BENCH_SKIP_ANALYZE)),
    singleSubmits: values['single-submits'] ?? envFlag(env.BENCH_SINGLE_SUBMITS),
  };
}

// ---------------------------------------------------------------------------------------
// Process management

// The cleanup steps stop the agents, then the server (so that CPU profiles get written),
// then drop the database, directories and Redis keys; whatever still runs is stopped last.
const processes = new Processes({ stopTimeoutMs: STOP_TIMEOUT_MS, childrenFirst: false });

/** A child process of this file (an agent or the producer), driven over IPC. */
class Child extends LoadProcess<Request> {
  constructor(name: string, config: ChildConfig, nodeArgs: string[] = []) {
    super({
      processes,
      script: SELF,
      name,
      nodeArgs,
      args: [CHILD_FLAG],
      env: { [CHILD_CONFIG_ENV]: JSON.stringify(config) },
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      stopTimeoutMs: STOP_TIMEOUT_MS,
    });
  }
}

interface OrchestraServer {
  proc: ChildProcess;
  pid: number;
  url: string;
  adminKey: string;
  agentKey: string;
  /** The throwaway database and its URL, with --postgres. */
  database: string | null;
  databaseUrl: string | null;
  /** Log lines at warn level or above (the server runs with ORCHESTRA_LOG_LEVEL=warn). */
  warnings(): { count: number; last: string[] };
}

/** Starts Orchestra as it is deployed, on a free port, a fresh data dir (and database). */
async function startOrchestra(o: Options): Promise<OrchestraServer> {
  const settings: Record<string, string> = {};
  let database: string | null = null;
  let databaseUrl: string | null = null;
  if (o.store === 'postgres') {
    const name = `orchestra_bench_dispatch_${process.pid}_${Date.now().toString(36)}`;
    databaseUrl = await throwawayDatabase(processes, o.postgresUrl, name);
    settings.ORCHESTRA_DATABASE_URL = databaseUrl;
    database = name;
  }
  // Stopped after the agents (cleanups run in reverse), so that its CPU profile is written.
  const node = await startOrchestraNode(processes, {
    name: 'dispatch',
    settings,
    orchestraEnv: o.orchestraEnv,
    profileName: o.profile ? 'orchestra-server' : undefined,
  });
  const { proc, url } = node;
  const adminKey = adminKeyOf(node);
  const created = await fetch(`${url}/v1/api-keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench-dispatch-agents', role: 'agent' }),
  });
  const body = (await created.json()) as { secret?: unknown };
  if (created.status !== 201 && created.status !== 200) {
    throw new Error(`POST /v1/api-keys answered ${created.status}`);
  }
  if (typeof body.secret !== 'string') throw new Error('POST /v1/api-keys returned no secret');
  return {
    proc,
    pid: proc.pid ?? -1,
    url,
    adminKey,
    agentKey: body.secret,
    database,
    databaseUrl,
    warnings: node.warnings,
  };
}

// ---------------------------------------------------------------------------------------
// PostgreSQL readings

/**
 * CPU time of the PostgreSQL backends connected to `database` (Orchestra's connection pool),
 * in ms, from /proc. Backends of other databases (anyone else using the server) and the
 * server's background processes (WAL writer, checkpointer) are not counted.
 */
function postgresBackendsCpuMs(adminUrl: string, database: string): Promise<number | null> {
  return withPostgres(adminUrl, async (client) => {
    const { rows } = await client.query<{ pid: number }>(
      'select pid from pg_stat_activity where datname = $1',
      [database],
    );
    let total = 0;
    for (const { pid } of rows) total += cpuMsOf(pid) ?? 0;
    return rows.length > 0 ? total : null;
  }).catch(() => null);
}

const PG_COUNTERS = [
  'xact_commit',
  'xact_rollback',
  'tup_returned',
  'tup_fetched',
  'tup_inserted',
  'tup_updated',
  'tup_deleted',
  'blks_read',
  'blks_hit',
] as const;
type PgCounters = Record<(typeof PG_COUNTERS)[number], number>;

/**
 * The cumulative statistics of one database (pg_stat_database): transactions and rows
 * touched. Backends report them when idle, at most about once a second, so read them a
 * little after the load stops.
 */
function postgresCounters(adminUrl: string, database: string): Promise<PgCounters | null> {
  return withPostgres(adminUrl, async (client) => {
    const { rows } = await client.query<Record<string, string>>(
      `select ${PG_COUNTERS.join(', ')} from pg_stat_database where datname = $1`,
      [database],
    );
    const row = rows[0];
    if (row === undefined) return null;
    return Object.fromEntries(PG_COUNTERS.map((k) => [k, Number(row[k])])) as PgCounters;
  }).catch(() => null);
}

/** Settings of the PostgreSQL server that change what the benchmark measures. */
function postgresSettings(adminUrl: string): Promise<Record<string, string>> {
  return withPostgres(adminUrl, async (client) => {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `select name, setting from pg_settings where name in ('server_version', 'autovacuum',
         'synchronous_commit', 'fsync', 'shared_buffers', 'max_connections')`,
    );
    return Object.fromEntries(rows.map((r) => [r.name, r.setting]));
  });
}

/**
 * ANALYZE, as autovacuum does on its own after a table changed enough. Without statistics
 * the planner may pick a poor index for Orchestra's per-task queries (see bench/README.md).
 */
async function analyzeDatabase(url: string): Promise<void> {
  await withPostgres(url, (client) => client.query('analyze'));
}

/**
 * How Orchestra's database was read over the whole run: scans and entries read per index
 * and table (pg_stat_user_indexes, pg_stat_user_tables), the busiest first. Which index
 * serves the per-task queries shows here.
 */
function postgresScanStats(url: string) {
  return withPostgres(url, async (client) => {
    const indexes = await client.query<Record<string, string>>(
      `select relname as table, indexrelname as index, idx_scan as scans, idx_tup_read as read
         from pg_stat_user_indexes where idx_scan > 0 order by idx_tup_read desc limit 12`,
    );
    const tables = await client.query<Record<string, string>>(
      `select relname as table, seq_scan, seq_tup_read, idx_scan, n_live_tup, n_dead_tup
         from pg_stat_user_tables order by seq_tup_read + coalesce(idx_scan, 0) desc limit 8`,
    );
    const numeric = (rows: Record<string, string>[]) =>
      rows.map((r) =>
        Object.fromEntries(Object.entries(r).map(([k, v]) => [k, /^\d+$/.test(v) ? Number(v) : v])),
      );
    return { indexes: numeric(indexes.rows), tables: numeric(tables.rows) };
  });
}

// ---------------------------------------------------------------------------------------
// Statistics

interface Summary {
  count: number;
  mean: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Nearest-rank percentiles, in ms rounded to µs. */
function summarize(values: ArrayLike<number>): Summary | null {
  const sorted = Float64Array.from(values)
    .filter((v) => Number.isFinite(v))
    .sort();
  const n = sorted.length;
  if (n === 0) return null;
  const at = (q: number) => round3(sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] ?? 0);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: n,
    mean: round3(sum / n),
    min: round3(sorted[0] ?? 0),
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: round3(sorted[n - 1] ?? 0),
  };
}

function concat(arrays: Float64Array[]): Float64Array {
  const out = new Float64Array(arrays.reduce((a, b) => a + b.length, 0));
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// One measured run

type Phase = 'throughput' | 'latency' | 'warmup';

interface CpuReading {
  server: number | null;
  agents: number | null;
  producer: number | null;
  database: number | null;
}

interface RunResult {
  system: System;
  phase: Phase;
  round: number;
  loadavgAtStart: number[];
  submitted: number;
  /** Latency runs: tasks due at the rate in the planned duration. */
  planned: number | null;
  completed: number;
  /** First submit to last acknowledged completion, ms. */
  wallMs: number;
  /** Tasks per second from the first submit to the last acknowledged completion. */
  endToEndPerSecond: number;
  /** Tasks per second from the first submit to the last submit's answer. */
  submitPerSecond: number;
  submitCallMs: Summary | null;
  pacingLagMs: Summary | null;
  toAgentMs: Summary | null;
  toCompletedMs: Summary | null;
  cpuUsPerTask: CpuReading;
  cpuPercent: CpuReading;
  machineBusyPercent: number | null;
  stealPercent: number | null;
  /** Deliveries beyond one per task (redeliveries), results refused, agent-side errors. */
  redeliveries: number;
  refused: number;
  agentErrors: number;
  /** With --postgres, Orchestra runs: pg_stat_database counters of its database per task. */
  postgresPerTask: Record<string, number> | null;
  /** Raw arrays for pooling across rounds; not written to the JSON. */
  raw?: { toAgent: Float64Array; toCompleted: Float64Array; submitCall: Float64Array };
}

interface Rig {
  system: System;
  agents: Child[];
  producer: Child;
  /** CPU time of the server side: the Orchestra process, or Redis (from INFO cpu). */
  serverCpuMs: () => Promise<number | null>;
  databaseCpuMs: () => Promise<number | null>;
  databaseCounters: () => Promise<PgCounters | null>;
}

async function readCpu(rig: Rig): Promise<CpuReading> {
  const agentTimes = rig.agents.map((a) => cpuMsOf(a.pid));
  return {
    server: await rig.serverCpuMs(),
    agents: agentTimes.some((t) => t === null)
      ? null
      : agentTimes.reduce<number>((a, b) => a + (b ?? 0), 0),
    producer: cpuMsOf(rig.producer.pid),
    database: await rig.databaseCpuMs(),
  };
}

async function measure(rig: Rig, phase: Phase, round: number, o: Options): Promise<RunResult> {
  const loadavgAtStart = os.loadavg().map(round3);
  // Start from nothing: earlier samples are dropped.
  await Promise.all(rig.agents.map((a) => a.request<AgentSamples>({ type: 'collect' })));
  const countersBefore = await rig.databaseCounters();
  const machineBefore = machineCpuTicks();
  const cpuBefore = await readCpu(rig);
  const wallBefore = performance.now();
  const request: Request =
    phase === 'latency'
      ? {
          type: 'paced',
          system: rig.system,
          rate: o.rate,
          seconds: o.durationSeconds,
          submitters: o.submitters,
        }
      : {
          type: 'burst',
          system: rig.system,
          tasks: phase === 'warmup' ? o.warmupTasks : o.tasks,
          submitters: o.submitters,
          maxMs: o.maxRunSeconds * 1000,
        };
  const submitTimeout =
    (phase === 'latency' ? 2 * o.durationSeconds : o.maxRunSeconds) * 1000 + 60_000;
  const report = await rig.producer.request<SubmitReport>(request, submitTimeout);
  if (report.errors > 0) {
    throw new Error(
      `${rig.system} ${phase}: ${report.errors} of ${report.submitted} submits failed (first: ` +
        `${report.firstError}). A run with failed submits measures the wrong thing; the ` +
        'benchmark stops here.',
    );
  }
  // Wait until the agents have seen every task acknowledged.
  const expected = report.submitted;
  const deadline = performance.now() + DRAIN_TIMEOUT_MS;
  let counts: AgentCount[] = [];
  let progress = { terminal: -1, at: performance.now() };
  for (;;) {
    counts = await Promise.all(rig.agents.map((a) => a.request<AgentCount>({ type: 'count' })));
    const terminal = counts.reduce((a, c) => a + c.terminal, 0);
    if (terminal >= expected) break;
    const now = performance.now();
    if (terminal > progress.terminal) progress = { terminal, at: now };
    if (now > deadline || now - progress.at > STALL_TIMEOUT_MS) {
      const received = counts.reduce((a, c) => a + c.received, 0);
      throw new Error(
        `${rig.system} ${phase}: ${terminal} of ${expected} tasks completed (${received} ` +
          `received) ${round1((now - wallBefore) / 1000)} s after the first submit` +
          `${now > deadline ? '' : `, none in the last ${STALL_TIMEOUT_MS / 1000} s`}. Agent ` +
          `errors: ${counts.map((c) => c.lastError ?? 'none').join('; ')}`,
      );
    }
    await sleep(POLL_MS);
  }
  const wallMs = performance.now() - wallBefore;
  const cpuAfter = await readCpu(rig);
  const machineAfter = machineCpuTicks();
  const samples = await Promise.all(
    rig.agents.map((a) => a.request<AgentSamples>({ type: 'collect' })),
  );
  let postgresPerTask: Record<string, number> | null = null;
  if (countersBefore !== null) {
    await sleep(1_500); // until the backends have reported their statistics
    const after = await rig.databaseCounters();
    if (after !== null) {
      postgresPerTask = Object.fromEntries(
        PG_COUNTERS.map((k) => [k, round1((after[k] - countersBefore[k]) / Math.max(expected, 1))]),
      );
    }
  }
  const sent = concat(samples.map((s) => s.sent));
  const received = concat(samples.map((s) => s.received));
  const terminal = concat(samples.map((s) => s.terminal));
  const toAgent = new Float64Array(sent.length);
  const toCompleted = new Float64Array(sent.length);
  let firstSent = Number.POSITIVE_INFINITY;
  let lastTerminal = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < sent.length; i++) {
    const s = sent[i] ?? Number.NaN;
    const t = terminal[i] ?? Number.NaN;
    toAgent[i] = (received[i] ?? Number.NaN) - s;
    toCompleted[i] = t - s;
    if (s < firstSent) firstSent = s;
    if (t > lastTerminal) lastTerminal = t;
  }
  firstSent = Math.min(firstSent, report.firstStart);
  const completed = counts.reduce((a, c) => a + c.terminal, 0);
  const e2eMs = lastTerminal - firstSent;
  const cpuDelta = (k: keyof CpuReading) => {
    const before = cpuBefore[k];
    const after = cpuAfter[k];
    return before === null || after === null ? null : after - before;
  };
  const perTask = (k: keyof CpuReading) => {
    const d = cpuDelta(k);
    return d === null ? null : round1((d * 1000) / Math.max(expected, 1));
  };
  const percent = (k: keyof CpuReading) => {
    const d = cpuDelta(k);
    return d === null ? null : round1((d / wallMs) * 100);
  };
  const machine =
    machineBefore && machineAfter
      ? {
          total: Math.max(machineAfter.total - machineBefore.total, 1),
          idle: machineAfter.idle - machineBefore.idle,
          steal: machineAfter.steal - machineBefore.steal,
        }
      : null;
  return {
    system: rig.system,
    phase,
    round,
    loadavgAtStart,
    submitted: expected,
    planned: report.planned ?? null,
    completed,
    wallMs: round1(e2eMs),
    endToEndPerSecond: round1((completed / e2eMs) * 1000),
    submitPerSecond: round1((report.submitted / (report.lastEnd - report.firstStart)) * 1000),
    submitCallMs: summarize(report.submitMs),
    pacingLagMs: report.lagMs ? summarize(report.lagMs) : null,
    toAgentMs: summarize(toAgent),
    toCompletedMs: summarize(toCompleted),
    cpuUsPerTask: {
      server: perTask('server'),
      agents: perTask('agents'),
      producer: perTask('producer'),
      database: perTask('database'),
    },
    cpuPercent: {
      server: percent('server'),
      agents: percent('agents'),
      producer: percent('producer'),
      database: percent('database'),
    },
    machineBusyPercent: machine ? round1((1 - machine.idle / machine.total) * 100) : null,
    stealPercent: machine ? round1((machine.steal / machine.total) * 100) : null,
    redeliveries: Math.max(0, received.length - expected),
    refused: counts.reduce((a, c) => a + c.refused, 0),
    agentErrors: counts.reduce((a, c) => a + c.errors, 0),
    postgresPerTask,
    raw: { toAgent, toCompleted, submitCall: report.submitMs },
  };
}

function describe(r: RunResult): string {
  const ms = (s: Summary | null, k: 'p50' | 'p99' | 'max') => (s === null ? '?' : s[k].toFixed(2));
  const cpu = r.cpuUsPerTask;
  const base =
    `  ${r.phase === 'warmup' ? 'warm-up' : `round ${r.round}`} ${r.system.padEnd(9)} ` +
    `${r.phase.padEnd(10)} ${r.completed} tasks, `;
  const costs =
    `CPU µs/task server ${cpu.server ?? '?'} agents ${cpu.agents ?? '?'} producer ` +
    `${cpu.producer ?? '?'}${cpu.database === null ? '' : ` postgres ${cpu.database}`}; ` +
    `machine ${r.machineBusyPercent ?? '?'}% busy, load ${r.loadavgAtStart[0]}` +
    (r.postgresPerTask === null
      ? ''
      : `; per task: ${r.postgresPerTask.xact_commit} PostgreSQL commits, ` +
        `${r.postgresPerTask.tup_returned} rows read by scans, ` +
        `${r.postgresPerTask.tup_inserted} inserted, ${r.postgresPerTask.tup_updated} updated`);
  if (r.phase === 'latency') {
    const behind =
      r.planned !== null && r.planned > r.submitted
        ? ` (fell behind: ${r.planned - r.submitted} of ${r.planned} never submitted)`
        : '';
    return (
      `${base}${r.submitPerSecond.toFixed(0)}/s submitted${behind}; submit→agent p50 ` +
      `${ms(r.toAgentMs, 'p50')} p99 ${ms(r.toAgentMs, 'p99')} max ${ms(r.toAgentMs, 'max')} ms; ` +
      `submit→completed p50 ${ms(r.toCompletedMs, 'p50')} p99 ${ms(r.toCompletedMs, 'p99')} ms; ` +
      costs
    );
  }
  return (
    `${base}${r.endToEndPerSecond.toFixed(0)} tasks/s end to end, ` +
    `${r.submitPerSecond.toFixed(0)} submits/s; ${costs}`
  );
}

// ---------------------------------------------------------------------------------------
// Reporting

/** One system's phase over the rounds: means of rates and costs, percentiles of all samples. */
function aggregate(runs: RunResult[]) {
  const raw = runs.flatMap((r) => (r.raw ? [r.raw] : []));
  return {
    runs: runs.length,
    tasks: runs.reduce((a, r) => a + r.completed, 0),
    endToEndPerSecond: round1(mean(runs.map((r) => r.endToEndPerSecond))),
    submitPerSecond: round1(mean(runs.map((r) => r.submitPerSecond))),
    toAgentMs: summarize(concat(raw.map((r) => r.toAgent))),
    toCompletedMs: summarize(concat(raw.map((r) => r.toCompleted))),
    submitCallMs: summarize(concat(raw.map((r) => r.submitCall))),
    cpuUsPerTask: {
      server: meanOrNull(runs.map((r) => r.cpuUsPerTask.server)),
      agents: meanOrNull(runs.map((r) => r.cpuUsPerTask.agents)),
      producer: meanOrNull(runs.map((r) => r.cpuUsPerTask.producer)),
      database: meanOrNull(runs.map((r) => r.cpuUsPerTask.database)),
    },
    machineBusyPercent: meanOrNull(runs.map((r) => r.machineBusyPercent)),
    stealPercent: meanOrNull(runs.map((r) => r.stealPercent)),
    pacingLagP99MaxMs: runs.some((r) => r.pacingLagMs !== null)
      ? Math.max(...runs.map((r) => r.pacingLagMs?.p99 ?? 0))
      : null,
    redeliveries: runs.reduce((a, r) => a + r.redeliveries, 0),
    /** Latency runs: tasks due at the rate that were never submitted (fell behind). */
    notSubmitted: runs.reduce(
      (a, r) => a + Math.max(0, (r.planned ?? r.submitted) - r.submitted),
      0,
    ),
    postgresPerTask: runs.every((r) => r.postgresPerTask !== null)
      ? Object.fromEntries(
          PG_COUNTERS.map((k) => [k, round1(mean(runs.map((r) => r.postgresPerTask?.[k] ?? 0)))]),
        )
      : null,
  };
}

function withoutRaw(r: RunResult): Omit<RunResult, 'raw'> {
  const { raw: _raw, ...rest } = r;
  return rest;
}

// ---------------------------------------------------------------------------------------

async function deleteRedisKeys(redisUrl: string, prefix: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
  await redis.connect();
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}

async function main(o: Options): Promise<number> {
  const perRound = 2 * (o.maxRunSeconds + o.durationSeconds + 2 * (DRAIN_TIMEOUT_MS / 1000));
  startWatchdog(processes, (o.rounds * perRound + 2 * o.maxRunSeconds + 180) * 1000);

  const run = new RunRecord('dispatch', SELF);
  console.log(
    `dispatch benchmark: Orchestra (${o.store}) and BullMQ; ${o.agents} agents x concurrency ` +
      `${o.concurrency}, ${o.submitters} submitters; throughput runs of ${o.tasks} tasks, ` +
      `latency runs at ${o.rate} tasks/s for ${o.durationSeconds} s; ${o.rounds} rounds`,
  );
  console.log(run.machineLine());

  // Redis for BullMQ: its own key prefix, deleted at the end; its CPU from INFO.
  const redisUrl = new URL(o.redisUrl);
  const prefix = `bench-dispatch-${process.pid}-${Date.now().toString(36)}`;
  const bullmq = {
    host: redisUrl.hostname.replace(/^\[|\]$/g, ''),
    port: Number(redisUrl.port || 6379),
    prefix,
    queue: 'dispatch',
  };
  const { Redis } = await import('ioredis');
  const redis = new Redis(o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
  await redis.connect();
  processes.onCleanup(async () => {
    redis.disconnect();
    const deleted = await deleteRedisKeys(o.redisUrl, prefix);
    console.log(`bench: deleted ${deleted} Redis keys under ${prefix}:`);
  });
  const redisInfo = await redis.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(redisInfo)?.[1] ?? null;
  const redisPersistence = {
    appendonly: ((await redis.config('GET', 'appendonly')) as string[])[1] ?? null,
    save: ((await redis.config('GET', 'save')) as string[])[1] ?? null,
  };
  const redisCpuMs = async () => {
    const info = await redis.info('cpu');
    const user = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]);
    const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1]);
    return Number.isFinite(user + sys) ? (user + sys) * 1000 : null;
  };

  const pgSettings = o.store === 'postgres' ? await postgresSettings(o.postgresUrl) : null;
  if (pgSettings !== null) {
    console.log(`PostgreSQL: ${JSON.stringify(pgSettings)}`);
  }
  console.log('starting Orchestra, agents, workers and the producer');
  const server = await startOrchestra(o);
  const orchestra = { url: server.url, adminKey: server.adminKey, agentKey: server.agentKey };
  const spawnAgents = (system: System) =>
    Array.from(
      { length: o.agents },
      (_, i) =>
        new Child(
          `${system} agent ${i + 1}`,
          {
            role: 'agent',
            system,
            index: i,
            concurrency: o.concurrency,
            orchestra,
            bullmq,
          },
          o.profile && i === 0 ? profileArgs(`${system}-agent`) : [],
        ),
    );
  const orchestraAgents = spawnAgents('orchestra');
  const bullmqAgents = spawnAgents('bullmq');
  const producer = new Child(
    'producer',
    { role: 'producer', orchestra, bullmq, singleSubmits: o.singleSubmits },
    o.profile ? profileArgs('producer') : [],
  );
  const all = [...orchestraAgents, ...bullmqAgents, producer];
  // Agents stop before the server (cleanups run last first).
  processes.onCleanup(async () => {
    await Promise.all(all.map((c) => c.stop()));
  });
  await Promise.all(all.map((c) => c.ready));

  const rigs: Record<System, Rig> = {
    orchestra: {
      system: 'orchestra',
      agents: orchestraAgents,
      producer,
      serverCpuMs: async () => cpuMsOf(server.pid),
      databaseCpuMs: async () =>
        server.database === null ? null : postgresBackendsCpuMs(o.postgresUrl, server.database),
      databaseCounters: async () =>
        server.database === null ? null : postgresCounters(o.postgresUrl, server.database),
    },
    bullmq: {
      system: 'bullmq',
      agents: bullmqAgents,
      producer,
      serverCpuMs: redisCpuMs,
      databaseCpuMs: async () => null,
      databaseCounters: async () => null,
    },
  };

  // One task through each, checked: the echo comes back as the stored result.
  for (const system of SYSTEMS) await producer.request({ type: 'sanity', system });

  const warmup: Partial<Record<System, Omit<RunResult, 'raw'>>> = {};
  if (o.warmupTasks > 0) {
    console.log(`\nwarm-up: ${o.warmupTasks} tasks each`);
    for (const system of SYSTEMS) {
      const r = await measure(rigs[system], 'warmup', 0, o);
      console.log(describe(r));
      warmup[system] = withoutRaw(r);
    }
  }

  let analyzed = false;
  if (server.databaseUrl !== null && o.analyze) {
    await analyzeDatabase(server.databaseUrl);
    analyzed = true;
    console.log("ANALYZE of Orchestra's database after the warm-up (as autovacuum would do)");
  }

  console.log('\nmeasured rounds (throughput, then latency, per system; ABBA order):');
  const runs: RunResult[] = [];
  const rounds: { round: number; order: System[]; throughputRatio: number | null }[] = [];
  for (let i = 0; i < o.rounds; i++) {
    const order: System[] = i % 2 === 0 ? ['orchestra', 'bullmq'] : ['bullmq', 'orchestra'];
    const inRound: RunResult[] = [];
    for (const system of order) {
      for (const phase of ['throughput', 'latency'] as const) {
        await sleep(SETTLE_MS);
        const r = await measure(rigs[system], phase, i + 1, o);
        console.log(describe(r));
        inRound.push(r);
      }
    }
    runs.push(...inRound);
    const tp = (s: System) =>
      inRound.find((r) => r.system === s && r.phase === 'throughput')?.endToEndPerSecond;
    const a = tp('orchestra');
    const b = tp('bullmq');
    rounds.push({
      round: i + 1,
      order,
      throughputRatio: a !== undefined && b !== undefined ? round3(a / b) : null,
    });
  }

  // Backends report their statistics when idle, about once a second.
  const postgresScans =
    server.databaseUrl === null
      ? null
      : await sleep(1_500).then(() => postgresScanStats(server.databaseUrl ?? ''));

  const pick = (system: System, phase: Phase) =>
    aggregate(runs.filter((r) => r.system === system && r.phase === phase));
  const results = {
    orchestra: {
      throughput: pick('orchestra', 'throughput'),
      latency: pick('orchestra', 'latency'),
    },
    bullmq: { throughput: pick('bullmq', 'throughput'), latency: pick('bullmq', 'latency') },
  };
  const ratio = (a: number | null | undefined, b: number | null | undefined) =>
    a === null || a === undefined || b === null || b === undefined || b === 0
      ? null
      : round3(a / b);
  const ot = results.orchestra.throughput;
  const bt = results.bullmq.throughput;
  const ol = results.orchestra.latency;
  const bl = results.bullmq.latency;
  const ratios = {
    endToEndThroughput: ratio(ot.endToEndPerSecond, bt.endToEndPerSecond),
    throughputPerRound: rounds.map((r) => r.throughputRatio),
    submitThroughput: ratio(ot.submitPerSecond, bt.submitPerSecond),
    toAgentP50: ratio(ol.toAgentMs?.p50, bl.toAgentMs?.p50),
    toAgentP99: ratio(ol.toAgentMs?.p99, bl.toAgentMs?.p99),
    toCompletedP50: ratio(ol.toCompletedMs?.p50, bl.toCompletedMs?.p50),
    toCompletedP99: ratio(ol.toCompletedMs?.p99, bl.toCompletedMs?.p99),
    serverCpuPerTask: ratio(ot.cpuUsPerTask.server, bt.cpuUsPerTask.server),
    agentCpuPerTask: ratio(ot.cpuUsPerTask.agents, bt.cpuUsPerTask.agents),
  };
  const targets = {
    throughputAtLeast5000PerSecond: ot.endToEndPerSecond >= 5000,
    toAgentP99Under10MsAtRate: (ol.toAgentMs?.p99 ?? Number.POSITIVE_INFINITY) < 10,
    throughputAtLeastBullmq: (ratios.endToEndThroughput ?? 0) >= 1,
  };

  const f = (n: number | null | undefined, digits = 2) =>
    n === null || n === undefined ? '?' : n.toFixed(digits);
  const i0 = (n: number | null | undefined) =>
    n === null || n === undefined ? '?' : Math.round(n).toLocaleString('en-US');
  const row = (
    label: string,
    a: number | null | undefined,
    b: number | null | undefined,
    fmt: (n: number | null | undefined) => string,
  ) => [label, fmt(a), fmt(b), f(ratio(a, b), 3)];
  console.log(
    `\nsummary (${o.store}; rates and CPU are means of ${o.rounds} rounds, percentiles pool ` +
      'every task of the rounds):',
  );
  console.log(
    table(
      ['', `Orchestra (${o.store})`, 'BullMQ (Redis)', 'Orchestra / BullMQ'],
      [
        [`throughput: ${o.tasks} tasks, ${o.submitters} submitters`, '', '', ''],
        row('  end to end (tasks/s)', ot.endToEndPerSecond, bt.endToEndPerSecond, i0),
        row('  submits/s', ot.submitPerSecond, bt.submitPerSecond, i0),
        row('  submit call p50 (ms)', ot.submitCallMs?.p50, bt.submitCallMs?.p50, f),
        row('  submit call p99 (ms)', ot.submitCallMs?.p99, bt.submitCallMs?.p99, f),
        row('  server CPU per task (µs)', ot.cpuUsPerTask.server, bt.cpuUsPerTask.server, i0),
        row('  agents CPU per task (µs)', ot.cpuUsPerTask.agents, bt.cpuUsPerTask.agents, i0),
        row('  producer CPU per task (µs)', ot.cpuUsPerTask.producer, bt.cpuUsPerTask.producer, i0),
        ...(ot.cpuUsPerTask.database === null
          ? []
          : [['  PostgreSQL CPU per task (µs)', i0(ot.cpuUsPerTask.database), '', '']]),
        row('  machine busy (%)', ot.machineBusyPercent, bt.machineBusyPercent, i0),
        [`latency: ${o.rate} tasks/s for ${o.durationSeconds} s`, '', '', ''],
        row('  submits/s achieved', ol.submitPerSecond, bl.submitPerSecond, i0),
        row('  submit→agent p50 (ms)', ol.toAgentMs?.p50, bl.toAgentMs?.p50, f),
        row('  submit→agent p90 (ms)', ol.toAgentMs?.p90, bl.toAgentMs?.p90, f),
        row('  submit→agent p99 (ms)', ol.toAgentMs?.p99, bl.toAgentMs?.p99, f),
        row('  submit→agent max (ms)', ol.toAgentMs?.max, bl.toAgentMs?.max, f),
        row('  submit→completed p50 (ms)', ol.toCompletedMs?.p50, bl.toCompletedMs?.p50, f),
        row('  submit→completed p90 (ms)', ol.toCompletedMs?.p90, bl.toCompletedMs?.p90, f),
        row('  submit→completed p99 (ms)', ol.toCompletedMs?.p99, bl.toCompletedMs?.p99, f),
        row('  submit→completed max (ms)', ol.toCompletedMs?.max, bl.toCompletedMs?.max, f),
        row('  submit call p99 (ms)', ol.submitCallMs?.p99, bl.submitCallMs?.p99, f),
        row('  producer pacing lag p99 (ms)', ol.pacingLagP99MaxMs, bl.pacingLagP99MaxMs, f),
        ['  tasks due but not submitted', ol.notSubmitted, bl.notSubmitted, ''],
        row('  server CPU per task (µs)', ol.cpuUsPerTask.server, bl.cpuUsPerTask.server, i0),
        row('  agents CPU per task (µs)', ol.cpuUsPerTask.agents, bl.cpuUsPerTask.agents, i0),
        row('  machine busy (%)', ol.machineBusyPercent, bl.machineBusyPercent, i0),
      ],
    ),
  );
  const yes = (b: boolean) => (b ? 'met' : 'NOT met');
  console.log(
    `\nratio orchestra / bullmq end-to-end throughput = ${ratios.endToEndThroughput} ` +
      `(per round: ${ratios.throughputPerRound.join(', ')})`,
  );
  console.log(
    `targets: >= 5,000 tasks/s: ${yes(targets.throughputAtLeast5000PerSecond)} ` +
      `(${i0(ot.endToEndPerSecond)}); p99 submit→agent < 10 ms at ${o.rate}/s: ` +
      `${yes(targets.toAgentP99Under10MsAtRate)} (${f(ol.toAgentMs?.p99)} ms); ` +
      `>= BullMQ throughput: ${yes(targets.throughputAtLeastBullmq)} (${ratios.endToEndThroughput})`,
  );
  if (postgresScans !== null) {
    console.log("\nPostgreSQL index reads over the whole run (Orchestra's database):");
    for (const i of postgresScans.indexes.slice(0, 6)) {
      console.log(`  ${String(i.index).padEnd(28)} ${i.scans} scans, ${i.read} entries read`);
    }
  }
  const warnings = server.warnings();
  if (warnings.count > 0) {
    console.log(`\nOrchestra logged ${warnings.count} warnings or errors; the last:`);
    for (const line of warnings.last) console.log(`  ${line}`);
  }

  const file = run.write(
    o,
    {
      parameters: {
        host: HOST,
        tasks: o.tasks,
        agents: o.agents,
        concurrency: o.concurrency,
        submitters: o.submitters,
        singleSubmits: o.singleSubmits,
        rate: o.rate,
        durationSeconds: o.durationSeconds,
        rounds: o.rounds,
        roundOrder: 'ABBA (Orchestra first in odd rounds, BullMQ first in even rounds)',
        warmupTasks: o.warmupTasks,
        maxRunSeconds: o.maxRunSeconds,
        profiled: o.profile,
        orchestraExtraEnv: o.orchestraEnv,
        orchestra:
          'node packages/server/src/cli/main.ts start (fresh data dir), ORCHESTRA_LOG_LEVEL=warn, ' +
          'ORCHESTRA_RATE_LIMIT_PER_SECOND=0, ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS=0; agents: SDK ' +
          `AgentWorker, capability "${CAPABILITY}", echo handler; producer: SDK tasks.create ` +
          `with the admin key, ${o.singleSubmits ? 'one request per submit (batchSubmits: false)' : 'the calls made together sent as one POST /v1/tasks/batch (batchSubmits, the default)'}; ` +
          'completion: the ack frame of task.result, seen by the agent',
        bullmq:
          `bullmq ${bullmqVersion()} on Redis ${redisVersion} (appendonly ${redisPersistence.appendonly}, ` +
          `save "${redisPersistence.save}"); Worker with the same echo; producer: Queue.add; ` +
          'completion: the Worker "completed" event (after moveToCompleted); default job ' +
          'options (completed jobs kept, like Orchestra keeps its tasks)',
        postgres:
          pgSettings === null
            ? null
            : {
                ...pgSettings,
                analyzedAfterWarmup: analyzed,
                database: 'throwaway, dropped at the end',
              },
        timestamps: 'performance.timeOrigin + performance.now() in each process',
      },
      results: { ...results },
      ratios,
      targets,
      rounds,
      runs: runs.map(withoutRaw),
      warmup,
      postgresScans,
      orchestraWarnings: warnings,
    },
    o.singleSubmits ? 'single-submits' : undefined,
  );
  console.log(`\nresult: ${file}`);
  if (o.profile) console.log(`CPU profile of Orchestra: ${PROFILE_DIR}`);
  return 0;
}

function bullmqVersion(): string | null {
  try {
    const pkg = readFileSync(join(REPO_ROOT, 'node_modules/bullmq/package.json'), 'utf8');
    return (JSON.parse(pkg) as { version?: string }).version ?? null;
  } catch {
    return null;
  }
}

if (process.argv[2] === CHILD_FLAG) {
  await runChild();
} else {
  await runBenchmark({ script: SELF, processes, stopping: 'every process', readOptions, main });
}
