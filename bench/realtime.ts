/**
 * Benchmark: realtime fan-out through Orchestra's `/v1/realtime` against a plain `ws`
 * broadcast server and Socket.IO rooms, in one run.
 *
 *   node bench/realtime.ts [--sizes 1000,10000] [--systems ws,socketio,orchestra] [--help]
 *
 * Measures, on 127.0.0.1 only, with the servers and the load generators in separate
 * processes (pinned to different cores when `taskset` is there):
 *   1. fan-out: one topic, N subscribers, a publish rate stepped up until deliveries no
 *      longer keep up; the deliveries/s at that knee, and publish→deliver latency at half
 *      the knee rate;
 *   2. density: RSS per idle (authenticated) connection subscribed to two topics;
 *   3. slow consumer: one of N subscribers stops reading during a broadcast; the others'
 *      latency against the same broadcast without it, the server's RSS, and whether (and
 *      when) the server cut the slow one.
 * Writes bench/results/realtime-<store>-<date>.json. See bench/README.md for how to read it.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  envFlag,
  f2,
  HOST,
  intOption,
  machineCpuTicks,
  mean,
  median,
  n0,
  PROFILE_DIR,
  Processes,
  packageVersion,
  parseOptions,
  profileArgs,
  REPO_ROOT,
  RunRecord,
  ratio,
  redactKeys,
  round1,
  round3,
  runBenchmark,
  SETTLE_MS,
  LoadProcess as SharedLoadProcess,
  START_TIMEOUT_MS,
  startOrchestraNode,
  startWatchdog,
  stderrTail,
  table,
  throwawayDatabase,
} from './common.ts';
import {
  type ConnectReport,
  clock,
  type HistogramData,
  type LatencySummary,
  type LoadCollect,
  type LoadCount,
  type LoadRequest,
  merged,
  type PublishReport,
  quantile,
  type SlowReport,
  SYSTEM_NAMES,
  SYSTEMS,
  type System,
  sleep,
  summary,
  type Target,
  type TopicPlan,
} from './realtime/shared.ts';

const SELF = import.meta.filename;
const LOAD_SCRIPT = join(REPO_ROOT, 'bench/realtime/load.ts');
const ANCHOR_SCRIPT = join(REPO_ROOT, 'bench/realtime/anchor-server.ts');
const STOP_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** After the publisher's last send, deliveries may trickle in this long. */
const DRAIN_MS = 3_000;
/** ...and the drain ends early once nothing has arrived for this long. */
const QUIET_MS = 500;
const POLL_MS = 100;
const RSS_SAMPLE_MS = 250;
/** Orchestra's default ORCHESTRA_REALTIME_MAX_QUEUE_BYTES; the slow-consumer bound is 8x. */
const ORCHESTRA_QUEUE_BYTES = 4 * 1024 * 1024;
const SLOW_RSS_BOUND_BYTES = 8 * ORCHESTRA_QUEUE_BYTES;
const SLOW_CLOSE_CODE = 4507;
const DEFAULT_SLOW_RATE = 50;

const HELP = `Usage: node bench/realtime.ts [options]

Loads Orchestra's realtime WebSocket (/v1/realtime), a plain \`ws\` broadcast server and
Socket.IO rooms with the same workload on 127.0.0.1, one after the other, and reports the
fan-out knee (deliveries/s), latency at half the knee, RSS per idle connection, the effect
of one slow consumer, and the ratios Orchestra / ws and Orchestra / Socket.IO. Every option
also has an environment variable.

Options:
  --systems LIST          Which systems, comma-separated: ws, socketio, orchestra
                          (env BENCH_SYSTEMS; default all three)
  --sizes LIST            Subscribers of the fan-out runs, comma-separated
                          (env BENCH_SIZES; default 1000,10000)
  --duration S            Seconds each fan-out step publishes (env BENCH_DURATION; default 5)
  --start-rate N          Deliveries/s of the first step (env BENCH_START_RATE; default 50000)
  --step-factor F         Each step's rate is the last one's times F until a step fails
                          (env BENCH_STEP_FACTOR; default 1.5)
  --refine N              Steps that then bisect between the last pass and the first failure
                          (env BENCH_REFINE; default 3)
  --max-steps N           Steps per system and size, refinement included
                          (env BENCH_MAX_STEPS; default 16)
  --max-rate N            Never step above this many deliveries/s (env BENCH_MAX_RATE;
                          default 5000000)
  --min-delivered PCT     A step passes if at least PCT % of the deliveries due arrive...
                          (env BENCH_MIN_DELIVERED; default 95)
  --max-p99-ms MS         ...its p99 latency is at most MS (env BENCH_MAX_P99_MS; default 1000)
                          and the median of its last quarter is at most twice that of its
                          first quarter + 10 ms (latency does not run away)
  --latency-duration S    Seconds of the run at half the knee rate
                          (env BENCH_LATENCY_DURATION; default 10)
  --warmup S              Seconds published at the start rate before the steps, per system
                          and size, not measured (env BENCH_WARMUP; default 2)
  --payload-bytes N       Padding in each message's data (env BENCH_PAYLOAD_BYTES; default 64)
  --ack-window N          Orchestra's publisher sends \`ack: true\` and keeps at most N
                          publishes unanswered; 0 sends \`ack: false\` (env BENCH_ACK_WINDOW;
                          default 0)
  --density-connections N Idle connections of the density run, each on 2 topics; 0 skips it
                          (env BENCH_DENSITY_CONNECTIONS; default 10000)
  --density-topics N      The second topic of connection i is one of N (env
                          BENCH_DENSITY_TOPICS; default 100); the first is shared by all
  --slow-subscribers N    Subscribers of the slow-consumer runs; 0 skips them
                          (env BENCH_SLOW_SUBSCRIBERS; default 1000)
  --slow-duration S       Seconds of each slow-consumer run (env BENCH_SLOW_DURATION; default 30)
  --slow-rate R           Messages/s of the slow-consumer runs (env BENCH_SLOW_RATE; default
                          50, or half the system's knee with that many subscribers if lower)
  --slow-payload-bytes N  Padding in the slow-consumer runs (env BENCH_SLOW_PAYLOAD_BYTES;
                          default 16384: about 0.8 MB/s to each subscriber at 50 msg/s, so
                          that the slow one's backlog passes the kernel's socket buffers and
                          Orchestra's 4 MiB send queue well within the run)
  --slow-pause-after S    The slow subscriber stops reading this long into the run
                          (env BENCH_SLOW_PAUSE_AFTER; default 5)
  --generators N          Subscriber processes; the publisher has one of its own
                          (env BENCH_GENERATORS; default 2)
  --connect-parallel N    Connections each generator opens at once
                          (env BENCH_CONNECT_PARALLEL; default 50)
  --connect-timeout S     Time to open all connections of a run (env BENCH_CONNECT_TIMEOUT;
                          default 180)
  --source-addresses N    Spread the connections over the source addresses 127.0.0.1 …
                          127.0.0.N (env BENCH_SOURCE_ADDRESSES; default 4)
  --no-pin                Do not pin the servers to CPU 0 and the load to the others with
                          taskset (env BENCH_NO_PIN=1)
  --rounds N              Rounds; each starts fresh servers and runs every phase on every
                          system, the order reversed every other round (env BENCH_ROUNDS;
                          default 1)
  --postgres              Orchestra on PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop a throwaway database
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)

Diagnostics (the result is then not the standard measurement; use --out-dir elsewhere):
  --profile               Run the Orchestra server, the first subscriber process and the
                          publisher under --cpu-prof; the .cpuprofile files go to
                          bench/.scratch/profiles
  --orchestra-env K=V     Extra environment for the Orchestra server, repeatable
  -h, --help              Show this help

A short run, to check the setup (not to measure):
  node bench/realtime.ts --sizes 200 --density-connections 200 --slow-subscribers 200 \\
    --duration 2 --latency-duration 2 --slow-duration 20 --slow-pause-after 2 --warmup 1 \\
    --max-steps 6 --start-rate 20000 --out-dir /tmp/bench`;

// ---------------------------------------------------------------------------------------
// Options

interface Options extends CommonOptions {
  systems: System[];
  sizes: number[];
  startRate: number;
  stepFactor: number;
  refine: number;
  maxSteps: number;
  maxRate: number;
  minDelivered: number;
  maxP99Ms: number;
  latencySeconds: number;
  warmupSeconds: number;
  payloadBytes: number;
  ackWindow: number;
  densityConnections: number;
  densityTopics: number;
  slowSubscribers: number;
  slowSeconds: number;
  slowRate: number | null;
  slowPayloadBytes: number;
  slowPauseAfterSeconds: number;
  generators: number;
  connectParallel: number;
  connectTimeoutSeconds: number;
  sourceAddresses: number;
  pin: boolean;
}

function floatOption(flag: string, raw: string | undefined, fallback: number, min: number) {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${flag} must be a number >= ${min}`);
  return n;
}

function listOption(flag: string, raw: string | undefined, fallback: number[]): number[] {
  if (raw === undefined || raw === '') return fallback;
  const values = raw.split(',').map((s) => intOption(flag, s.trim(), 0, 1));
  if (values.length === 0) throw new Error(`--${flag} needs at least one number`);
  return values;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    systems: { type: 'string' },
    sizes: { type: 'string' },
    'start-rate': { type: 'string' },
    'step-factor': { type: 'string' },
    refine: { type: 'string' },
    'max-steps': { type: 'string' },
    'max-rate': { type: 'string' },
    'min-delivered': { type: 'string' },
    'max-p99-ms': { type: 'string' },
    'latency-duration': { type: 'string' },
    warmup: { type: 'string' },
    'payload-bytes': { type: 'string' },
    'ack-window': { type: 'string' },
    'density-connections': { type: 'string' },
    'density-topics': { type: 'string' },
    'slow-subscribers': { type: 'string' },
    'slow-duration': { type: 'string' },
    'slow-rate': { type: 'string' },
    'slow-payload-bytes': { type: 'string' },
    'slow-pause-after': { type: 'string' },
    generators: { type: 'string' },
    'connect-parallel': { type: 'string' },
    'connect-timeout': { type: 'string' },
    'source-addresses': { type: 'string' },
    'no-pin': { type: 'boolean' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const common = commonOptions(values);
  const systemsRaw = values.systems ?? env.BENCH_SYSTEMS ?? SYSTEMS.join(',');
  const systems = systemsRaw.split(',').map((s) => s.trim());
  for (const s of systems) {
    if (!SYSTEMS.includes(s as System)) {
      throw new Error(`--systems: unknown system "${s}" (use ${SYSTEMS.join(', ')})`);
    }
  }
  const slowRateRaw = values['slow-rate'] ?? env.BENCH_SLOW_RATE;
  const opts: Options = {
    ...common,
    // This benchmark's defaults differ from the common ones: short steps, one round.
    durationSeconds: intOption('duration', values.duration ?? env.BENCH_DURATION, 5, 1),
    rounds: intOption('rounds', values.rounds ?? env.BENCH_ROUNDS, 1, 1),
    systems: SYSTEMS.filter((s) => systems.includes(s)),
    sizes: listOption('sizes', values.sizes ?? env.BENCH_SIZES, [1_000, 10_000]),
    startRate: intOption('start-rate', values['start-rate'] ?? env.BENCH_START_RATE, 50_000, 1),
    stepFactor: floatOption(
      'step-factor',
      values['step-factor'] ?? env.BENCH_STEP_FACTOR,
      1.5,
      1.01,
    ),
    refine: intOption('refine', values.refine ?? env.BENCH_REFINE, 3, 0),
    maxSteps: intOption('max-steps', values['max-steps'] ?? env.BENCH_MAX_STEPS, 16, 1),
    maxRate: intOption('max-rate', values['max-rate'] ?? env.BENCH_MAX_RATE, 5_000_000, 1),
    minDelivered: floatOption(
      'min-delivered',
      values['min-delivered'] ?? env.BENCH_MIN_DELIVERED,
      95,
      0,
    ),
    maxP99Ms: floatOption('max-p99-ms', values['max-p99-ms'] ?? env.BENCH_MAX_P99_MS, 1000, 0),
    latencySeconds: intOption(
      'latency-duration',
      values['latency-duration'] ?? env.BENCH_LATENCY_DURATION,
      10,
      1,
    ),
    warmupSeconds: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, 2, 0),
    payloadBytes: intOption(
      'payload-bytes',
      values['payload-bytes'] ?? env.BENCH_PAYLOAD_BYTES,
      64,
      0,
    ),
    ackWindow: intOption('ack-window', values['ack-window'] ?? env.BENCH_ACK_WINDOW, 0, 0),
    densityConnections: intOption(
      'density-connections',
      values['density-connections'] ?? env.BENCH_DENSITY_CONNECTIONS,
      10_000,
      0,
    ),
    densityTopics: intOption(
      'density-topics',
      values['density-topics'] ?? env.BENCH_DENSITY_TOPICS,
      100,
      1,
    ),
    slowSubscribers: intOption(
      'slow-subscribers',
      values['slow-subscribers'] ?? env.BENCH_SLOW_SUBSCRIBERS,
      1_000,
      0,
    ),
    slowSeconds: intOption(
      'slow-duration',
      values['slow-duration'] ?? env.BENCH_SLOW_DURATION,
      30,
      1,
    ),
    slowRate:
      slowRateRaw === undefined || slowRateRaw === ''
        ? null
        : floatOption('slow-rate', slowRateRaw, 0, 0.1),
    slowPayloadBytes: intOption(
      'slow-payload-bytes',
      values['slow-payload-bytes'] ?? env.BENCH_SLOW_PAYLOAD_BYTES,
      16_384,
      0,
    ),
    slowPauseAfterSeconds: floatOption(
      'slow-pause-after',
      values['slow-pause-after'] ?? env.BENCH_SLOW_PAUSE_AFTER,
      5,
      0,
    ),
    generators: intOption('generators', values.generators ?? env.BENCH_GENERATORS, 2, 1),
    connectParallel: intOption(
      'connect-parallel',
      values['connect-parallel'] ?? env.BENCH_CONNECT_PARALLEL,
      50,
      1,
    ),
    connectTimeoutSeconds: intOption(
      'connect-timeout',
      values['connect-timeout'] ?? env.BENCH_CONNECT_TIMEOUT,
      180,
      1,
    ),
    sourceAddresses: intOption(
      'source-addresses',
      values['source-addresses'] ?? env.BENCH_SOURCE_ADDRESSES,
      4,
      1,
    ),
    pin: !(values['no-pin'] ?? envFlag(env.BENCH_NO_PIN)),
  };
  if (opts.systems.length === 0) throw new Error('--systems: name at least one system');
  if (opts.sourceAddresses > 254) throw new Error('--source-addresses must be at most 254');
  if (opts.slowPauseAfterSeconds >= opts.slowSeconds) {
    throw new Error('--slow-pause-after must be shorter than --slow-duration');
  }
  return opts;
}

// ---------------------------------------------------------------------------------------
// Process management

// The cleanup steps stop the load generators, then the servers, then remove the data
// directories and the database; whatever still runs is stopped last.
const processes = new Processes({ stopTimeoutMs: STOP_TIMEOUT_MS, childrenFirst: false });

/** A load generator (bench/realtime/load.ts). */
class LoadProcess extends SharedLoadProcess<LoadRequest> {
  constructor(name: string, nodeArgs: string[] = []) {
    super({
      processes,
      script: LOAD_SCRIPT,
      name,
      nodeArgs,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      stopTimeoutMs: STOP_TIMEOUT_MS,
    });
  }
}

// ---------------------------------------------------------------------------------------
// The machine: CPU pinning, file-descriptor limits, /proc readings

interface Layout {
  pinned: boolean;
  why: string;
  serverCpus: string | null;
  loadCpus: string | null;
}

function planLayout(o: Options): Layout {
  const cpus = os.cpus().length;
  if (!o.pin) return { pinned: false, why: '--no-pin', serverCpus: null, loadCpus: null };
  if (cpus < 2) return { pinned: false, why: 'one CPU', serverCpus: null, loadCpus: null };
  try {
    execFileSync('taskset', ['--version'], { stdio: 'ignore' });
  } catch {
    return { pinned: false, why: 'no taskset', serverCpus: null, loadCpus: null };
  }
  return {
    pinned: true,
    why: 'taskset',
    serverCpus: '0',
    loadCpus: cpus === 2 ? '1' : `1-${cpus - 1}`,
  };
}

/** Every thread of `pid` on `cpus`; true if taskset did it. */
function pin(pid: number, cpus: string | null): boolean {
  if (cpus === null || pid <= 0) return false;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function openFilesLimit(pid: number | 'self'): { soft: number; hard: number } | null {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const [soft, hard] = (line ?? '').slice('Max open files'.length).trim().split(/\s+/);
    const parse = (v: string | undefined) =>
      v === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(v);
    return { soft: parse(soft), hard: parse(hard) };
  } catch {
    return null;
  }
}

/** Raises the open-files limit of `pid` to at least `needed` with prlimit, if it is lower. */
function ensureOpenFiles(pid: number, needed: number): { soft: number; raised: boolean } | null {
  const limit = openFilesLimit(pid);
  if (limit === null) return null;
  if (limit.soft >= needed) return { soft: limit.soft, raised: false };
  const target = Math.max(needed, limit.soft);
  const hard = Math.max(limit.hard, target);
  try {
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${target}:${hard}`], {
      stdio: 'ignore',
    });
    return { soft: openFilesLimit(pid)?.soft ?? target, raised: true };
  } catch {
    throw new Error(
      `process ${pid} may open ${limit.soft} files and needs ${needed}; raise "ulimit -n" ` +
        '(prlimit could not)',
    );
  }
}

/** VmRSS of a process, in bytes. */
function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Bytes a process has read with read(2) and friends (sockets included), /proc/<pid>/io. */
function bytesRead(pid: number): number | null {
  try {
    const m = /rchar:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

const sumOrNull = (values: (number | null)[]) =>
  values.some((v) => v === null) ? null : values.reduce<number>((a, b) => a + (b ?? 0), 0);

/** The median of `samples` RSS readings `gapMs` apart. */
async function steadyRss(pid: number, samples = 3, gapMs = 500): Promise<number | null> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(gapMs);
    const v = rssBytes(pid);
    if (v !== null) values.push(v);
  }
  return values.length === 0 ? null : median(values);
}

/**
 * The server side of one TCP connection, from `ss`: whether it is still established and
 * the bytes in its kernel send queue. null if `ss` is missing or failed.
 */
function serverSideOf(
  serverPort: number,
  clientPort: number,
): { established: boolean; sendQueue: number } | null {
  try {
    const out = execFileSync(
      'ss',
      ['-tnH', 'state', 'established', `( sport = :${serverPort} and dport = :${clientPort} )`],
      { encoding: 'utf8', timeout: 2_000 },
    ).trim();
    if (out === '') return { established: false, sendQueue: 0 };
    // Recv-Q Send-Q Local Peer
    const fields = out.split('\n')[0]?.trim().split(/\s+/) ?? [];
    return { established: true, sendQueue: Number(fields[1]) || 0 };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// The servers

interface ServerUnderTest {
  system: System;
  proc: ChildProcess;
  pid: number;
  port: number;
  target: Target;
  pinned: boolean;
  /** RSS after start and an idle pause, before any connection. */
  idleRss: number | null;
  openFiles: { soft: number; raised: boolean } | null;
  warnings(): { count: number; last: string[] };
  stop(): Promise<void>;
}

async function startAnchor(system: 'ws' | 'socketio'): Promise<Omit<ServerUnderTest, 'idleRss'>> {
  const { proc } = processes.spawn([ANCHOR_SCRIPT, system], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  processes.onCleanup(() => processes.stop(proc));
  const stderr = stderrTail(proc);
  const port = await new Promise<number>((resolvePort, rejectPort) => {
    const timer = setTimeout(
      () => rejectPort(new Error(`${system} anchor: no port within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    proc.once('message', (m: { port?: number }) => {
      clearTimeout(timer);
      resolvePort(m.port ?? 0);
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      rejectPort(new Error(`${system} anchor exited (${signal ?? code}): ${stderr()}`));
    });
  });
  const url = system === 'ws' ? `ws://${HOST}:${port}/` : `http://${HOST}:${port}`;
  return {
    system,
    proc,
    pid: proc.pid ?? -1,
    port,
    target: { system, url },
    pinned: false,
    openFiles: null,
    warnings: () => ({ count: 0, last: [] }),
    stop: () => processes.stop(proc),
  };
}

/** Orchestra as it is deployed, on a free port, a fresh data dir (and database). */
async function startOrchestra(
  o: Options,
  round: number,
): Promise<Omit<ServerUnderTest, 'idleRss'>> {
  const settings: Record<string, string> = {};
  if (o.store === 'postgres') {
    const name = `orchestra_bench_realtime_${process.pid}_${round}_${Date.now().toString(36)}`;
    settings.ORCHESTRA_DATABASE_URL = await throwawayDatabase(processes, o.postgresUrl, name);
  }
  const node = await startOrchestraNode(processes, {
    name: 'realtime',
    settings,
    orchestraEnv: o.orchestraEnv,
    profileName: o.profile ? 'orchestra-server' : undefined,
  });
  const { proc, port } = node;
  const apiKey = adminKeyOf(node);
  const target: Target = {
    system: 'orchestra',
    url: `ws://${HOST}:${port}/v1/realtime`,
    apiKey,
  };
  await checkRealtime(target);
  return {
    system: 'orchestra',
    proc,
    pid: proc.pid ?? -1,
    port,
    target,
    pinned: false,
    openFiles: null,
    warnings: node.warnings,
    stop: () => processes.stop(proc),
  };
}

/** Orchestra answers the realtime upgrade (it is not there before the feature lands). */
async function checkRealtime(target: Target): Promise<void> {
  const ws = new WebSocket(target.url, {
    headers: { authorization: `Bearer ${target.apiKey ?? ''}` },
    handshakeTimeout: 10_000,
  });
  const outcome = await new Promise<string | null>((done) => {
    ws.once('open', () => done(null));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      done(`the upgrade of ${new URL(target.url).pathname} was answered ${res.statusCode}`);
    });
    ws.once('error', (err) => done(err.message));
  });
  ws.terminate();
  if (outcome !== null) {
    throw new Error(
      `Orchestra's realtime WebSocket is not available: ${outcome}. ` +
        'Run with --systems ws,socketio to measure the anchors alone.',
    );
  }
}

// ---------------------------------------------------------------------------------------
// The load: generators (subscribers) and the publisher

interface Load {
  generators: LoadProcess[];
  publisher: LoadProcess;
  sourceAddresses: string[];
}

function all(load: Load): LoadProcess[] {
  return [...load.generators, load.publisher];
}

/** Connection counts of each generator for `total` connections. */
function split(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

/** Opens `total` subscriber connections spread over the generators; fails if any fails. */
async function connectSubscribers(
  load: Load,
  server: ServerUnderTest,
  total: number,
  topics: TopicPlan,
  o: Options,
  slowCandidate: boolean,
): Promise<{ ms: number; perSecond: number }> {
  const counts = split(total, load.generators.length);
  const timeoutMs = o.connectTimeoutSeconds * 1000;
  const started = clock();
  let first = 0;
  const reports = await Promise.all(
    load.generators.map((g, i) => {
      const count = counts[i] ?? 0;
      const firstIndex = first;
      first += count;
      if (count === 0) {
        return Promise.resolve({ connected: 0, failed: 0, firstError: null, ms: 0 });
      }
      return g.request<ConnectReport>(
        {
          type: 'connect',
          target: server.target,
          count,
          topics,
          firstIndex,
          sourceAddresses: load.sourceAddresses,
          parallel: o.connectParallel,
          slowCandidate: slowCandidate && i === 0,
          timeoutMs,
        },
        timeoutMs + 30_000,
      );
    }),
  );
  const failed = reports.reduce((a, r) => a + r.failed, 0);
  if (failed > 0) {
    const firstError = reports.find((r) => r.firstError !== null)?.firstError;
    throw new Error(
      `${SYSTEM_NAMES[server.system]}: ${failed} of ${total} connections failed (first: ` +
        `${firstError ?? 'timed out'})`,
    );
  }
  const ms = clock() - started;
  return { ms: Math.round(ms), perSecond: round1((total / ms) * 1000) };
}

async function disconnectAll(load: Load): Promise<void> {
  await Promise.all(
    all(load).map((g) => g.request({ type: 'disconnect', timeoutMs: 10_000 }, 60_000)),
  );
}

// ---------------------------------------------------------------------------------------
// One step: publish at a rate for a while, wait for the deliveries, read what happened

type StepKind = 'warmup' | 'step' | 'latency' | 'slow-baseline' | 'slow';

interface StepResult {
  kind: StepKind;
  system: System;
  subscribers: number;
  step: number;
  targetDeliveriesPerSecond: number;
  rate: number;
  seconds: number;
  payloadBytes: number;
  planned: number;
  published: number;
  /** Subscribers that should have received every message (open, not paused). */
  receivers: number;
  /** Connections closed by the server before the step and opened again; those that could not be. */
  reopened: number;
  notReopened: number;
  expected: number;
  delivered: number;
  deliveredPercent: number;
  /** Deliveries / the publishing window (first to last publish, plus one interval). */
  deliveriesPerSecond: number;
  latencyMs: LatencySummary | null;
  /** Median latency of each quarter of the step (by publish order), ms. */
  quarterP50Ms: (number | null)[];
  publisherLagP99Ms: number | null;
  publisherHeldBack: number;
  publishErrors: number;
  firstPublishError: string | null;
  acked: number;
  stale: number;
  gaps: number;
  repeats: number;
  errorFrames: number;
  lastError: string | null;
  closes: Record<string, number>;
  serverCpuPercent: number | null;
  serverCpuUsPerDelivery: number | null;
  generatorsCpuPercent: number | null;
  publisherCpuPercent: number | null;
  machineBusyPercent: number | null;
  stealPercent: number | null;
  /**
   * The load processes (subscribers and publisher) used at least 90 % of the CPUs they may
   * run on: the step measured them as much as the server.
   */
  loadBound: boolean | null;
  /** Bytes the subscriber processes read per delivery (frames, TCP payload). */
  bytesReadPerDelivery: number | null;
  serverRssAfter: number | null;
  /** Server RSS sampled every 250 ms while publishing: first, peak, last. */
  serverRss: { first: number | null; peak: number | null; last: number | null };
  loadavgAtStart: number[];
  pass: boolean;
  failures: string[];
  slow?: SlowOutcome;
}

interface SlowOutcome {
  report: SlowReport | null;
  /** From `ss`: when the server side of the slow connection stopped being established. */
  serverSideClosedAfterPauseMs: number | null;
  serverSideSendQueuePeak: number | null;
  ssAvailable: boolean;
  /** About what was published to the slow one after its pause: messages x bytes per delivery. */
  offeredBytesAfterPause: number | null;
}

let stepCounter = 0;
/** CPUs the load processes may use (set in main from the layout). */
let loadCores = os.cpus().length;
const LOAD_BOUND_PERCENT = 90;

async function runStep(
  load: Load,
  server: ServerUnderTest,
  args: {
    kind: StepKind;
    subscribers: number;
    topic: string;
    rate: number;
    seconds: number;
    payloadBytes: number;
  },
  o: Options,
): Promise<StepResult> {
  const step = ++stepCounter;
  const { kind, rate, seconds } = args;
  const loadavgAtStart = os.loadavg().map(round3);
  // Connections the server closed in an earlier step (a slow-consumer cut at saturation)
  // are opened again, so that every step has its subscribers.
  const topUps = await Promise.all(
    load.generators.map((g) =>
      g.request<ConnectReport>({ type: 'top-up' }, o.connectTimeoutSeconds * 1000 + 30_000),
    ),
  );
  const reopened = topUps.reduce((a, r) => a + r.connected, 0);
  const notReopened = topUps.reduce((a, r) => a + r.failed, 0);
  await Promise.all(
    load.generators.map((g) => g.request({ type: 'reset', step, excludeSlow: kind === 'slow' })),
  );
  const open = (
    await Promise.all(load.generators.map((g) => g.request<LoadCount>({ type: 'count' })))
  ).reduce((a, c) => a + c.open, 0);
  const generatorPids = load.generators.map((g) => g.pid);
  const before = {
    server: cpuMsOf(server.pid),
    generators: sumOrNull(generatorPids.map(cpuMsOf)),
    publisher: cpuMsOf(load.publisher.pid),
    read: sumOrNull(generatorPids.map(bytesRead)),
    machine: machineCpuTicks(),
    wall: performance.now(),
  };

  // Server RSS while publishing, and for the slow consumer its pause and the server side.
  const rss: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const v = rssBytes(server.pid);
      if (v !== null) rss.push(v);
      await sleep(RSS_SAMPLE_MS);
    }
  })();
  let slowWatch: Promise<SlowOutcome> | null = null;
  if (kind === 'slow') {
    slowWatch = (async () => {
      await sleep(o.slowPauseAfterSeconds * 1000);
      const paused = await load.generators[0]?.request<SlowReport | null>({ type: 'pause' });
      const pausedAt = clock();
      let closedAfter: number | null = null;
      let sendQueuePeak: number | null = null;
      let ssAvailable = true;
      const clientPort = paused?.localPort ?? null;
      while (sampling && clientPort !== null && closedAfter === null) {
        const side = serverSideOf(server.port, clientPort);
        if (side === null) {
          ssAvailable = false;
          break;
        }
        if (!side.established) closedAfter = Math.round(clock() - pausedAt);
        else sendQueuePeak = Math.max(sendQueuePeak ?? 0, side.sendQueue);
        await sleep(RSS_SAMPLE_MS);
      }
      return {
        report: paused ?? null,
        serverSideClosedAfterPauseMs: closedAfter,
        serverSideSendQueuePeak: sendQueuePeak,
        ssAvailable: ssAvailable && clientPort !== null,
        offeredBytesAfterPause: null,
      };
    })();
  }

  const report = await load.publisher
    .request<PublishReport>(
      {
        type: 'publish',
        step,
        topic: args.topic,
        rate,
        seconds,
        payloadBytes: args.payloadBytes,
        ackWindow: server.system === 'orchestra' ? o.ackWindow : 0,
        maxMs: seconds * 1500 + 2_000,
      },
      seconds * 1500 + 60_000,
    )
    .catch((err: unknown) => {
      sampling = false;
      throw err;
    });
  const receivers = kind === 'slow' ? open - 1 : open;
  const expected = report.published * receivers;

  try {
    // Until everything due arrived, or nothing more arrives, or the drain time is up.
    const drainDeadline = performance.now() + DRAIN_MS + (kind === 'slow' ? 2_000 : 0);
    let last = -1;
    let lastChange = performance.now();
    for (;;) {
      const counts = await Promise.all(
        load.generators.map((g) => g.request<LoadCount>({ type: 'count' })),
      );
      const got = counts.reduce((a, c) => a + c.delivered, 0);
      const now = performance.now();
      if (got >= expected || now > drainDeadline) break;
      if (got !== last) {
        last = got;
        lastChange = now;
      } else if (now - lastChange > QUIET_MS) {
        break;
      }
      await sleep(POLL_MS);
    }
  } finally {
    sampling = false;
  }
  const wallMs = performance.now() - before.wall;
  await sampler;
  let slow = slowWatch === null ? undefined : await slowWatch;
  const after = {
    server: cpuMsOf(server.pid),
    generators: sumOrNull(generatorPids.map(cpuMsOf)),
    publisher: cpuMsOf(load.publisher.pid),
    read: sumOrNull(generatorPids.map(bytesRead)),
    machine: machineCpuTicks(),
  };
  const collected = await Promise.all(
    load.generators.map((g) => g.request<LoadCollect>({ type: 'collect' })),
  );
  const delta = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);
  const delivered = collected.reduce((a, c) => a + c.delivered, 0);
  const read = delta(before.read, after.read);
  if (slow !== undefined) {
    // The slow one reads again: what was waiting for it, then the close, if the server cut it.
    const resumed = await load.generators[0]?.request<SlowReport | null>(
      { type: 'resume', waitMs: 10_000 },
      30_000,
    );
    const afterPause = 1 - o.slowPauseAfterSeconds / seconds;
    slow = {
      ...slow,
      report: resumed ?? slow.report,
      offeredBytesAfterPause:
        read === null || delivered === 0
          ? null
          : Math.round(report.published * afterPause * (read / delivered)),
    };
  }

  const latency = merged(collected.map((c) => c.latency));
  const quarters = [0, 1, 2, 3].map((q) =>
    merged(collected.map((c) => c.quarters[q] as HistogramData)),
  );
  const closes: Record<string, number> = {};
  for (const c of collected) {
    for (const [code, n] of Object.entries(c.closes)) closes[code] = (closes[code] ?? 0) + n;
  }
  const serverCpu = delta(before.server, after.server);
  const percentOf = (ms: number | null) => (ms === null ? null : round1((ms / wallMs) * 100));
  const machine =
    before.machine && after.machine
      ? {
          total: Math.max(after.machine.total - before.machine.total, 1),
          idle: after.machine.idle - before.machine.idle,
          steal: after.machine.steal - before.machine.steal,
        }
      : null;
  const windowMs =
    report.published > 0 ? report.lastAt - report.firstAt + 1000 / Math.max(rate, 1e-9) : 0;
  const errorFrames = collected.reduce((a, c) => a + c.errorFrames, 0);
  const result: StepResult = {
    kind,
    system: server.system,
    subscribers: args.subscribers,
    step,
    targetDeliveriesPerSecond: Math.round(rate * args.subscribers),
    rate: round3(rate),
    seconds,
    payloadBytes: args.payloadBytes,
    planned: report.planned,
    published: report.published,
    receivers,
    reopened,
    notReopened,
    expected,
    delivered,
    deliveredPercent: expected > 0 ? round1((delivered / expected) * 100) : 0,
    deliveriesPerSecond: windowMs > 0 ? Math.round((delivered / windowMs) * 1000) : 0,
    latencyMs: summary(latency),
    quarterP50Ms: quarters.map((h) => {
      const v = quantile(h, 0.5);
      return v === null ? null : round3(v);
    }),
    publisherLagP99Ms: (() => {
      const v = quantile(report.lag, 0.99);
      return v === null ? null : round3(v);
    })(),
    publisherHeldBack: report.heldBack,
    publishErrors: report.errors,
    firstPublishError: report.firstError,
    acked: report.acked,
    stale: collected.reduce((a, c) => a + c.stale, 0),
    gaps: collected.reduce((a, c) => a + c.gaps, 0),
    repeats: collected.reduce((a, c) => a + c.repeats, 0),
    errorFrames,
    lastError: collected.find((c) => c.lastError !== null)?.lastError ?? null,
    closes,
    serverCpuPercent: percentOf(serverCpu),
    serverCpuUsPerDelivery:
      serverCpu === null || delivered === 0 ? null : round3((serverCpu * 1000) / delivered),
    generatorsCpuPercent: percentOf(delta(before.generators, after.generators)),
    publisherCpuPercent: percentOf(delta(before.publisher, after.publisher)),
    machineBusyPercent: machine ? round1((1 - machine.idle / machine.total) * 100) : null,
    stealPercent: machine ? round1((machine.steal / machine.total) * 100) : null,
    loadBound: (() => {
      const g = delta(before.generators, after.generators);
      const p = delta(before.publisher, after.publisher);
      if (g === null || p === null) return null;
      return ((g + p) / wallMs) * 100 >= LOAD_BOUND_PERCENT * loadCores;
    })(),
    bytesReadPerDelivery: read === null || delivered === 0 ? null : round1(read / delivered),
    serverRssAfter: rssBytes(server.pid),
    serverRss: {
      first: rss[0] ?? null,
      peak: rss.length > 0 ? Math.max(...rss) : null,
      last: rss[rss.length - 1] ?? null,
    },
    loadavgAtStart,
    pass: false,
    failures: [],
    ...(slow === undefined ? {} : { slow }),
  };
  result.failures = judge(result, o);
  result.pass = result.failures.length === 0;
  return result;
}

/** Why a step does not count as keeping up; empty if it does. */
function judge(r: StepResult, o: Options): string[] {
  const failures: string[] = [];
  if (r.published < r.planned * 0.95) {
    failures.push(`published ${r.published} of ${r.planned} in time`);
  }
  if (r.publishErrors > 0)
    failures.push(`${r.publishErrors} publish errors (${r.firstPublishError})`);
  if (r.deliveredPercent < o.minDelivered) failures.push(`${r.deliveredPercent}% delivered`);
  const p99 = r.latencyMs?.p99 ?? Number.POSITIVE_INFINITY;
  if (p99 > o.maxP99Ms) failures.push(`p99 ${round1(p99)} ms`);
  const [q0, , , q3] = r.quarterP50Ms;
  if (q0 != null && q3 != null && q3 > 2 * q0 + 10) {
    failures.push(`latency runs away (median ${round1(q0)} → ${round1(q3)} ms)`);
  }
  const missing = r.subscribers - (r.kind === 'slow' ? 1 : 0) - r.receivers;
  if (missing > 0) failures.push(`${missing} subscribers missing`);
  const closed = Object.values(r.closes).reduce((a, b) => a + b, 0);
  if (closed > 0 && r.kind !== 'slow') failures.push(`${closed} connections closed`);
  return failures;
}

const mib = (bytes: number | null | undefined) =>
  bytes === null || bytes === undefined ? '?' : (bytes / 2 ** 20).toFixed(1);

function describe(r: StepResult): string {
  const label = r.kind === 'step' ? `step ${r.step}` : r.kind;
  const verdict =
    r.kind === 'step' ? (r.pass ? 'keeps up' : `falls behind: ${r.failures.join(', ')}`) : '';
  return (
    `  ${SYSTEM_NAMES[r.system].padEnd(15)} ${n0(r.subscribers).padStart(6)} subs  ${label.padEnd(13)} ` +
    `${n0(r.targetDeliveriesPerSecond).padStart(9)}/s due (${r.rate} msg/s): ` +
    `${n0(r.deliveriesPerSecond)}/s, ${r.deliveredPercent}% delivered, ` +
    `p50 ${f2(r.latencyMs?.p50)} p99 ${f2(r.latencyMs?.p99)} ms; server CPU ` +
    `${r.serverCpuPercent ?? '?'}% (${f2(r.serverCpuUsPerDelivery)} µs/delivery), load CPU ` +
    `${r.generatorsCpuPercent ?? '?'}% + ${r.publisherCpuPercent ?? '?'}%` +
    (r.loadBound ? ' (load-bound)' : '') +
    (r.reopened > 0 ? `; ${r.reopened} closed connections reopened before it` : '') +
    (verdict === '' ? '' : `; ${verdict}`)
  );
}

// ---------------------------------------------------------------------------------------
// The phases

interface FanoutResult {
  system: System;
  subscribers: number;
  round: number;
  connect: { ms: number; perSecond: number };
  steps: StepResult[];
  warmup: StepResult | null;
  /** The highest step that kept up: its deliveries/s, and whether no step failed at all. */
  kneeDeliveriesPerSecond: number | null;
  kneeStep: number | null;
  kneeIsLowerBound: boolean;
  /** The knee step, or the failing one after it, was load-bound (see StepResult.loadBound). */
  kneeLoadBound: boolean;
  kneeServerCpuUsPerDelivery: number | null;
  halfKnee: StepResult | null;
  slow: SlowResult | null;
}

interface SlowResult {
  system: System;
  subscribers: number;
  round: number;
  rate: number;
  payloadBytes: number;
  baseline: StepResult;
  withSlow: StepResult;
  /** Others' p99 with the slow one / without, minus 1, in %. */
  othersP99ChangePercent: number | null;
  cut: boolean;
  closeCode: number | null;
  /**
   * When the server cut it, ms after the pause: from `ss`, else the publish time of the last
   * message it received (a lower bound: what the server still had queued for it is lost).
   */
  cutAfterPauseMs: number | null;
  cutTimeSource: 'ss' | 'last message (lower bound)' | null;
  peakRssOverBaselineBytes: number | null;
}

async function fanout(
  load: Load,
  server: ServerUnderTest,
  subscribers: number,
  round: number,
  o: Options,
): Promise<FanoutResult> {
  const topic = `bench.fanout.r${round}.n${subscribers}`;
  const withSlow = o.slowSubscribers === subscribers;
  const connect = await connectSubscribers(
    load,
    server,
    subscribers,
    { shared: topic, groups: 0, groupPrefix: '' },
    o,
    withSlow,
  );
  console.log(
    `  ${SYSTEM_NAMES[server.system]}: ${n0(subscribers)} subscribers connected in ` +
      `${(connect.ms / 1000).toFixed(1)} s (${n0(connect.perSecond)}/s)`,
  );
  await load.publisher.request({ type: 'publisher-connect', target: server.target });
  const step = (kind: StepKind, deliveriesPerSecond: number, seconds: number) =>
    runStep(
      load,
      server,
      {
        kind,
        subscribers,
        topic,
        rate: deliveriesPerSecond / subscribers,
        seconds,
        payloadBytes: o.payloadBytes,
      },
      o,
    );

  let warmup: StepResult | null = null;
  if (o.warmupSeconds > 0) {
    warmup = await step('warmup', o.startRate, o.warmupSeconds);
    console.log(describe(warmup));
    await sleep(SETTLE_MS);
  }
  // Up by the factor until a step fails, then bisect (geometrically) between the last pass
  // and the first failure; down by half while nothing passed yet.
  const steps: StepResult[] = [];
  let best: StepResult | null = null;
  let worst: StepResult | null = null;
  let rate = o.startRate;
  let refinements = 0;
  const minRate = Math.max(1, subscribers / o.durationSeconds);
  while (steps.length < o.maxSteps) {
    const r = await step('step', rate, o.durationSeconds);
    steps.push(r);
    console.log(describe(r));
    await sleep(SETTLE_MS);
    if (r.pass) {
      if (best === null || r.targetDeliveriesPerSecond > best.targetDeliveriesPerSecond) best = r;
    } else if (worst === null || r.targetDeliveriesPerSecond < worst.targetDeliveriesPerSecond) {
      worst = r;
    }
    if (best !== null && worst !== null) {
      if (refinements >= o.refine) break;
      refinements += 1;
      rate = Math.sqrt(best.targetDeliveriesPerSecond * worst.targetDeliveriesPerSecond);
      if (rate / best.targetDeliveriesPerSecond < 1.02) break;
    } else if (best !== null) {
      rate *= o.stepFactor;
      if (rate > o.maxRate) break;
    } else {
      rate /= 2;
      if (rate < minRate) break;
    }
  }

  let halfKnee: StepResult | null = null;
  if (best !== null) {
    await sleep(SETTLE_MS);
    halfKnee = await step('latency', best.deliveriesPerSecond / 2, o.latencySeconds);
    console.log(describe(halfKnee));
  }
  let slow: SlowResult | null = null;
  if (withSlow) {
    const halfKneeRate = best === null ? null : best.deliveriesPerSecond / 2 / subscribers;
    const slowRate = o.slowRate ?? Math.min(DEFAULT_SLOW_RATE, halfKneeRate ?? DEFAULT_SLOW_RATE);
    slow = await slowConsumer(load, server, subscribers, topic, slowRate, round, o);
  }
  await disconnectAll(load);
  return {
    system: server.system,
    subscribers,
    round,
    connect,
    steps,
    warmup,
    kneeDeliveriesPerSecond: best?.deliveriesPerSecond ?? null,
    kneeStep: best?.step ?? null,
    kneeIsLowerBound: best !== null && worst === null,
    kneeLoadBound:
      best?.loadBound === true ||
      steps.some(
        (r) =>
          !r.pass &&
          r.loadBound === true &&
          r.targetDeliveriesPerSecond > (best?.targetDeliveriesPerSecond ?? 0),
      ),
    kneeServerCpuUsPerDelivery: best?.serverCpuUsPerDelivery ?? null,
    halfKnee,
    slow,
  };
}

/** The same broadcast without, then with, a subscriber that stops reading. */
async function slowConsumer(
  load: Load,
  server: ServerUnderTest,
  subscribers: number,
  topic: string,
  rate: number,
  round: number,
  o: Options,
): Promise<SlowResult> {
  const run = (kind: 'warmup' | 'slow-baseline' | 'slow', seconds: number) =>
    runStep(
      load,
      server,
      {
        kind,
        subscribers,
        topic,
        rate,
        seconds,
        payloadBytes: o.slowPayloadBytes,
      },
      o,
    );
  // The larger messages first warm up the servers and the clients (buffers, JIT, heap).
  await sleep(SETTLE_MS);
  const warmup = await run('warmup', Math.max(3, o.warmupSeconds));
  console.log(describe(warmup));
  await sleep(SETTLE_MS);
  const baseline = await run('slow-baseline', o.slowSeconds);
  console.log(describe(baseline));
  await sleep(SETTLE_MS);
  const withSlow = await run('slow', o.slowSeconds);
  console.log(describe(withSlow));
  const report = withSlow.slow?.report ?? null;
  const closeCode = report?.closeCode ?? null;
  const ssClosed = withSlow.slow?.serverSideClosedAfterPauseMs ?? null;
  const cut = closeCode !== null || ssClosed !== null;
  let cutAfterPauseMs: number | null = null;
  let cutTimeSource: SlowResult['cutTimeSource'] = null;
  if (ssClosed !== null) {
    cutAfterPauseMs = ssClosed;
    cutTimeSource = 'ss';
  } else if (cut && report?.lastSentAt != null && report.pausedAt !== null) {
    cutAfterPauseMs = Math.round(report.lastSentAt - report.pausedAt);
    cutTimeSource = 'last message (lower bound)';
  }
  const b99 = baseline.latencyMs?.p99;
  const s99 = withSlow.latencyMs?.p99;
  const bPeak = baseline.serverRss.peak;
  const sPeak = withSlow.serverRss.peak;
  const result: SlowResult = {
    system: server.system,
    subscribers,
    round,
    rate: round3(rate),
    payloadBytes: o.slowPayloadBytes,
    baseline,
    withSlow,
    othersP99ChangePercent:
      b99 === undefined || s99 === undefined || b99 === 0 ? null : round1((s99 / b99 - 1) * 100),
    cut,
    closeCode,
    cutAfterPauseMs,
    cutTimeSource,
    peakRssOverBaselineBytes: bPeak === null || sPeak === null ? null : sPeak - bPeak,
  };
  console.log(
    `  ${SYSTEM_NAMES[server.system]}: slow consumer ${
      cut
        ? `cut (close code ${closeCode ?? '?'}) ${
            cutAfterPauseMs === null
              ? ''
              : `${(cutAfterPauseMs / 1000).toFixed(1)} s after the pause`
          }`
        : `not cut within ${o.slowSeconds - o.slowPauseAfterSeconds} s`
    }; others' p99 ${f2(b99)} → ${f2(s99)} ms (${result.othersP99ChangePercent ?? '?'}%); peak RSS ` +
      `${mib(bPeak)} → ${mib(sPeak)} MiB`,
  );
  return result;
}

interface DensityResult {
  system: System;
  round: number;
  connections: number;
  topicsPerConnection: number;
  connect: { ms: number; perSecond: number };
  idleRss: number | null;
  loadedRss: number | null;
  afterDisconnectRss: number | null;
  bytesPerConnection: number | null;
}

async function density(
  load: Load,
  server: ServerUnderTest,
  round: number,
  o: Options,
): Promise<DensityResult> {
  const idleRss = (await steadyRss(server.pid)) ?? server.idleRss;
  const connect = await connectSubscribers(
    load,
    server,
    o.densityConnections,
    {
      shared: `bench.density.r${round}.all`,
      groups: o.densityTopics,
      groupPrefix: `bench.density.r${round}.g`,
    },
    o,
    false,
  );
  await sleep(3_000);
  const loadedRss = await steadyRss(server.pid, 3, 1_000);
  await disconnectAll(load);
  await sleep(2_000);
  const afterDisconnectRss = rssBytes(server.pid);
  const result: DensityResult = {
    system: server.system,
    round,
    connections: o.densityConnections,
    topicsPerConnection: 2,
    connect,
    idleRss,
    loadedRss,
    afterDisconnectRss,
    bytesPerConnection:
      idleRss === null || loadedRss === null
        ? null
        : Math.round((loadedRss - idleRss) / o.densityConnections),
  };
  console.log(
    `  ${SYSTEM_NAMES[server.system].padEnd(15)} ${n0(o.densityConnections)} connections x 2 ` +
      `topics (connected in ${(connect.ms / 1000).toFixed(1)} s): RSS ${mib(idleRss)} → ` +
      `${mib(loadedRss)} MiB, ${f2((result.bytesPerConnection ?? Number.NaN) / 1024)} KiB per ` +
      `connection; ${mib(afterDisconnectRss)} MiB after they closed`,
  );
  return result;
}

// ---------------------------------------------------------------------------------------

async function startServers(o: Options, round: number, layout: Layout) {
  const servers = new Map<System, ServerUnderTest>();
  const needed =
    Math.max(o.densityConnections, o.slowSubscribers, ...o.sizes) + 1_000 /* files, margin */;
  for (const system of o.systems) {
    const started =
      system === 'orchestra' ? await startOrchestra(o, round) : await startAnchor(system);
    const pinned = pin(started.pid, layout.serverCpus);
    const openFiles = ensureOpenFiles(started.pid, needed);
    servers.set(system, { ...started, pinned, openFiles, idleRss: null });
  }
  await sleep(SETTLE_MS * 2);
  for (const server of servers.values()) server.idleRss = await steadyRss(server.pid);
  return servers;
}

function tcpSettings(): Record<string, string | null> {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8').trim().replace(/\s+/g, ' ');
    } catch {
      return null;
    }
  };
  return {
    tcp_rmem: read('/proc/sys/net/ipv4/tcp_rmem'),
    tcp_wmem: read('/proc/sys/net/ipv4/tcp_wmem'),
    ip_local_port_range: read('/proc/sys/net/ipv4/ip_local_port_range'),
    tcp_tw_reuse: read('/proc/sys/net/ipv4/tcp_tw_reuse'),
    somaxconn: read('/proc/sys/net/core/somaxconn'),
  };
}

const meanOf = (values: (number | null | undefined)[]) => {
  const known = values.filter((v): v is number => v !== null && v !== undefined);
  return known.length === 0 ? null : mean(known);
};

async function main(o: Options): Promise<number> {
  const perSize = (o.maxSteps + 1) * (o.durationSeconds * 1.5 + 12) + o.latencySeconds + 60;
  const perSystem =
    o.sizes.length * (perSize + o.connectTimeoutSeconds + 60) +
    (o.slowSubscribers > 0 ? 2 * (o.slowSeconds * 1.5 + 40) + o.connectTimeoutSeconds : 0) +
    (o.densityConnections > 0 ? o.connectTimeoutSeconds + 90 : 0);
  startWatchdog(processes, (o.rounds * o.systems.length * perSystem + 300) * 1000);

  const run = new RunRecord('realtime', SELF);
  const layout = planLayout(o);
  console.log(
    `realtime benchmark: ${o.systems.map((s) => SYSTEM_NAMES[s]).join(', ')}; fan-out to ` +
      `${o.sizes.map(n0).join(' and ')} subscribers (steps of ${o.durationSeconds} s from ` +
      `${n0(o.startRate)} deliveries/s, x${o.stepFactor}); density ${n0(o.densityConnections)} ` +
      `connections; slow consumer 1 of ${n0(o.slowSubscribers)}; ${o.rounds} round(s)`,
  );
  console.log(run.machineLine().trimEnd());
  console.log(
    layout.pinned
      ? `layout: servers on CPU ${layout.serverCpus}, ${o.generators} subscriber processes, ` +
          `the publisher and this process on CPU ${layout.loadCpus} (taskset)`
      : `layout: not pinned (${layout.why}); ${o.generators} subscriber processes and one publisher`,
  );
  const selfPinned = pin(process.pid, layout.loadCpus);
  loadCores = layout.pinned ? os.cpus().length - 1 : os.cpus().length;

  const sourceAddresses = Array.from({ length: o.sourceAddresses }, (_, i) => `127.0.0.${i + 1}`);
  const load: Load = {
    generators: Array.from(
      { length: o.generators },
      (_, i) =>
        new LoadProcess(
          `generator ${i + 1}`,
          o.profile && i === 0 ? profileArgs('realtime-generator') : [],
        ),
    ),
    publisher: new LoadProcess('publisher', o.profile ? profileArgs('realtime-publisher') : []),
    sourceAddresses,
  };
  processes.onCleanup(async () => {
    await Promise.all(all(load).map((g) => g.stop()));
  });
  await Promise.all(all(load).map((g) => g.ready));
  const perGenerator =
    Math.ceil(Math.max(o.densityConnections, o.slowSubscribers, ...o.sizes) / o.generators) + 1_000;
  const generatorFiles = load.generators.map((g) => ensureOpenFiles(g.pid, perGenerator));
  const loadPinned = all(load).map((g) => pin(g.pid, layout.loadCpus));

  const densities: DensityResult[] = [];
  const fanouts: FanoutResult[] = [];
  const slows: SlowResult[] = [];
  const serverInfo: Record<string, unknown>[] = [];
  const phaseErrors: { round: number; system: System; phase: string; error: string }[] = [];
  const warnings: Record<string, { count: number; last: string[] }> = {};
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? [...o.systems] : [...o.systems].reverse();
    console.log(`\nround ${round}: starting ${order.map((s) => SYSTEM_NAMES[s]).join(', ')}`);
    const servers = await startServers(o, round, layout);
    for (const s of servers.values()) {
      serverInfo.push({
        round,
        system: s.system,
        pinned: s.pinned,
        openFiles: s.openFiles,
        idleRss: s.idleRss,
      });
    }
    const serverOf = (system: System) => {
      const s = servers.get(system);
      if (s === undefined) throw new Error(`no ${system} server`);
      return s;
    };
    /**
     * One phase on one system. A failure is recorded and the run goes on with the next (the
     * other systems still get measured); the benchmark then ends with exit code 1.
     */
    const attempt = async (system: System, phase: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        const message = redactKeys((err as Error).message).slice(0, 2000);
        console.log(`  ${SYSTEM_NAMES[system]}: ${phase} FAILED: ${message}`);
        phaseErrors.push({ round, system, phase, error: message });
        await disconnectAll(load).catch(() => undefined);
      }
    };
    if (o.densityConnections > 0) {
      console.log(`\ndensity: ${n0(o.densityConnections)} idle connections, 2 topics each`);
      for (const system of order) {
        await attempt(system, 'density', async () => {
          densities.push(await density(load, serverOf(system), round, o));
        });
      }
    }
    for (const size of o.sizes) {
      console.log(`\nfan-out: ${n0(size)} subscribers on one topic`);
      for (const system of order) {
        await sleep(SETTLE_MS);
        await attempt(system, `fan-out ${size}`, async () => {
          const r = await fanout(load, serverOf(system), size, round, o);
          fanouts.push(r);
          if (r.slow !== null) slows.push(r.slow);
        });
      }
    }
    if (o.slowSubscribers > 0 && !o.sizes.includes(o.slowSubscribers)) {
      console.log(`\nslow consumer: 1 of ${n0(o.slowSubscribers)} subscribers stops reading`);
      for (const system of order) {
        await attempt(system, 'slow consumer', async () => {
          const server = serverOf(system);
          const topic = `bench.slow.r${round}`;
          await connectSubscribers(
            load,
            server,
            o.slowSubscribers,
            { shared: topic, groups: 0, groupPrefix: '' },
            o,
            true,
          );
          await load.publisher.request({ type: 'publisher-connect', target: server.target });
          slows.push(
            await slowConsumer(
              load,
              server,
              o.slowSubscribers,
              topic,
              o.slowRate ?? DEFAULT_SLOW_RATE,
              round,
              o,
            ),
          );
          await disconnectAll(load);
        });
      }
    }
    for (const s of servers.values()) {
      warnings[`${s.system}-round-${round}`] = s.warnings();
      await s.stop();
    }
  }

  // ---- summary
  const of = <T extends { system: System }>(rows: T[], system: System) =>
    rows.filter((r) => r.system === system);
  const kneeOf = (system: System, size: number) =>
    meanOf(
      of(fanouts, system)
        .filter((f) => f.subscribers === size)
        .map((f) => f.kneeDeliveriesPerSecond),
    );
  const halfOf = (system: System, size: number, k: 'p50' | 'p99') =>
    meanOf(
      of(fanouts, system)
        .filter((f) => f.subscribers === size)
        .map((f) => f.halfKnee?.latencyMs?.[k]),
    );
  const cpuOf = (system: System, size: number) =>
    meanOf(
      of(fanouts, system)
        .filter((f) => f.subscribers === size)
        .map((f) => f.kneeServerCpuUsPerDelivery),
    );
  const fanoutSummary = o.sizes.map((size) => {
    const perSystem = Object.fromEntries(
      o.systems.map((s) => [
        s,
        {
          kneeDeliveriesPerSecond: kneeOf(s, size),
          kneeIsLowerBound: of(fanouts, s).some(
            (f) => f.subscribers === size && f.kneeIsLowerBound,
          ),
          kneeLoadBound: of(fanouts, s).some((f) => f.subscribers === size && f.kneeLoadBound),
          serverCpuUsPerDeliveryAtKnee: cpuOf(s, size),
          halfKneeP50Ms: halfOf(s, size, 'p50'),
          halfKneeP99Ms: halfOf(s, size, 'p99'),
        },
      ]),
    );
    return {
      subscribers: size,
      systems: perSystem,
      ratios: {
        orchestraToWs: ratio(kneeOf('orchestra', size), kneeOf('ws', size)),
        orchestraToSocketIo: ratio(kneeOf('orchestra', size), kneeOf('socketio', size)),
      },
    };
  });
  const densitySummary = Object.fromEntries(
    o.systems.map((s) => [
      s,
      { bytesPerConnection: meanOf(of(densities, s).map((d) => d.bytesPerConnection)) },
    ]),
  );
  const slowSummary = Object.fromEntries(
    o.systems.map((s) => {
      const rows = of(slows, s);
      return [
        s,
        {
          othersP99ChangePercent: meanOf(rows.map((r) => r.othersP99ChangePercent)),
          cut: rows.length === 0 ? null : rows.every((r) => r.cut),
          closeCodes: rows.map((r) => r.closeCode),
          cutAfterPauseMs: meanOf(rows.map((r) => r.cutAfterPauseMs)),
          peakRssOverBaselineBytes: meanOf(rows.map((r) => r.peakRssOverBaselineBytes)),
        },
      ];
    }),
  );

  const orchestraMeasured = o.systems.includes('orchestra');
  const targets = orchestraMeasured
    ? {
        fanout: fanoutSummary.map((f) => ({
          subscribers: f.subscribers,
          atLeast80PercentOfWs:
            f.ratios.orchestraToWs === null ? null : f.ratios.orchestraToWs >= 0.8,
          atLeast150PercentOfSocketIo:
            f.ratios.orchestraToSocketIo === null ? null : f.ratios.orchestraToSocketIo >= 1.5,
          p99Under50MsAtHalfKnee: (() => {
            const p99 = f.systems.orchestra?.halfKneeP99Ms;
            return p99 === null || p99 === undefined ? null : p99 < 50;
          })(),
        })),
        densityAtMost15KiBPerConnection: (() => {
          const b = densitySummary.orchestra?.bytesPerConnection;
          return b === null || b === undefined ? null : b <= 15 * 1024;
        })(),
        slowConsumer: (() => {
          const s = slowSummary.orchestra;
          if (s === undefined || s.cut === null) return null;
          return {
            othersP99ChangeUnder10Percent:
              s.othersP99ChangePercent === null ? null : s.othersP99ChangePercent < 10,
            cut: s.cut,
            closeCode4507SeenByTheClient: s.closeCodes.every((c) => c === SLOW_CLOSE_CODE),
            rssBounded:
              s.peakRssOverBaselineBytes === null
                ? null
                : s.peakRssOverBaselineBytes <= SLOW_RSS_BOUND_BYTES,
          };
        })(),
      }
    : null;

  const cols = o.systems.map((s) => SYSTEM_NAMES[s]);
  const hasRatios = orchestraMeasured && o.systems.length > 1;
  const ratioCols = hasRatios
    ? [
        ...(o.systems.includes('ws') ? ['Orchestra / ws'] : []),
        ...(o.systems.includes('socketio') ? ['Orchestra / Socket.IO'] : []),
      ]
    : [];
  const ratioCells = (values: (number | null)[]) => {
    if (!hasRatios) return [];
    const byName = Object.fromEntries(o.systems.map((s, i) => [s, values[i] ?? null]));
    const cells: string[] = [];
    if (o.systems.includes('ws')) cells.push(f2(ratio(byName.orchestra, byName.ws)));
    if (o.systems.includes('socketio')) cells.push(f2(ratio(byName.orchestra, byName.socketio)));
    return cells;
  };
  const rows: (string | number)[][] = [];
  for (const f of fanoutSummary) {
    rows.push([
      `fan-out, ${n0(f.subscribers)} subscribers`,
      ...cols.map(() => ''),
      ...ratioCols.map(() => ''),
    ]);
    const knees = o.systems.map((s) => f.systems[s]?.kneeDeliveriesPerSecond ?? null);
    rows.push([
      '  knee (deliveries/s)',
      ...o.systems.map(
        (s, i) =>
          `${n0(knees[i])}${f.systems[s]?.kneeIsLowerBound ? '+' : ''}` +
          `${f.systems[s]?.kneeLoadBound ? '*' : ''}`,
      ),
      ...ratioCells(knees),
    ]);
    const cpu = o.systems.map((s) => f.systems[s]?.serverCpuUsPerDeliveryAtKnee ?? null);
    rows.push(['  server CPU per delivery at the knee (µs)', ...cpu.map(f2), ...ratioCells(cpu)]);
    const p50 = o.systems.map((s) => f.systems[s]?.halfKneeP50Ms ?? null);
    rows.push(['  latency at half the knee, p50 (ms)', ...p50.map(f2), ...ratioCells(p50)]);
    const p99 = o.systems.map((s) => f.systems[s]?.halfKneeP99Ms ?? null);
    rows.push(['  latency at half the knee, p99 (ms)', ...p99.map(f2), ...ratioCells(p99)]);
  }
  if (o.densityConnections > 0) {
    rows.push([
      `density, ${n0(o.densityConnections)} idle connections x 2 topics`,
      ...cols.map(() => ''),
      ...ratioCols.map(() => ''),
    ]);
    const per = o.systems.map((s) => densitySummary[s]?.bytesPerConnection ?? null);
    rows.push([
      '  RSS per connection (KiB)',
      ...per.map((b) => f2(b === null ? null : b / 1024)),
      ...ratioCells(per),
    ]);
  }
  if (slows.length > 0) {
    rows.push([
      `slow consumer, 1 of ${n0(o.slowSubscribers)}`,
      ...cols.map(() => ''),
      ...ratioCols.map(() => ''),
    ]);
    const first = (s: System) => of(slows, s)[0];
    rows.push([
      '  rate (msg/s), payload (bytes)',
      ...o.systems.map((s) => `${first(s)?.rate ?? '?'}, ${first(s)?.payloadBytes ?? '?'}`),
      ...ratioCols.map(() => ''),
    ]);
    rows.push([
      "  others' p99 without → with (ms)",
      ...o.systems.map(
        (s) =>
          `${f2(first(s)?.baseline.latencyMs?.p99)} → ${f2(first(s)?.withSlow.latencyMs?.p99)}`,
      ),
      ...ratioCols.map(() => ''),
    ]);
    rows.push([
      "  others' p99 change (%)",
      ...o.systems.map((s) => String(slowSummary[s]?.othersP99ChangePercent ?? '?')),
      ...ratioCols.map(() => ''),
    ]);
    rows.push([
      '  cut (close code, s after the pause)',
      ...o.systems.map((s) => {
        const r = first(s);
        if (r === undefined) return '?';
        if (!r.cut) return 'no';
        const after =
          r.cutAfterPauseMs === null
            ? '?'
            : `${r.cutTimeSource === 'ss' ? '' : '>= '}${(r.cutAfterPauseMs / 1000).toFixed(1)}`;
        return `${r.closeCode ?? '?'}, ${after}`;
      }),
      ...ratioCols.map(() => ''),
    ]);
    rows.push([
      '  peak RSS over the run without (MiB)',
      ...o.systems.map((s) => mib(slowSummary[s]?.peakRssOverBaselineBytes)),
      ...ratioCols.map(() => ''),
    ]);
  }
  console.log(
    `\nsummary (${o.rounds} round(s); the knee is the highest step that kept up, "+" when no ` +
      'step failed, "*" when the load processes were busy (>= 90 % of their CPUs) at the ' +
      "knee or just above it, so that the knee is partly the load generators' limit):",
  );
  console.log(table(['', ...cols, ...ratioCols], rows));
  if (targets !== null) {
    const yes = (b: boolean | null | undefined) =>
      b === null || b === undefined ? '?' : b ? 'met' : 'NOT met';
    const parts = targets.fanout.map(
      (t) =>
        `${n0(t.subscribers)} subscribers: >= 0.8 of ws ${yes(t.atLeast80PercentOfWs)}, ` +
        `>= 1.5 of Socket.IO ${yes(t.atLeast150PercentOfSocketIo)}, p99 < 50 ms at half the ` +
        `knee ${yes(t.p99Under50MsAtHalfKnee)}`,
    );
    parts.push(`density <= 15 KiB per connection ${yes(targets.densityAtMost15KiBPerConnection)}`);
    if (targets.slowConsumer !== null) {
      parts.push(
        `slow consumer: others' p99 change < 10 % ${yes(targets.slowConsumer.othersP99ChangeUnder10Percent)}, ` +
          `cut ${yes(targets.slowConsumer.cut)} (close code seen by the client: ` +
          `${slowSummary.orchestra?.closeCodes.join(', ') ?? '?'}), RSS bounded ` +
          `${yes(targets.slowConsumer.rssBounded)}`,
      );
    }
    console.log(`\ntargets:\n  ${parts.join('\n  ')}`);
  }
  const orchestraWarnings = Object.entries(warnings).filter(([k]) => k.startsWith('orchestra'));
  for (const [key, w] of orchestraWarnings) {
    if (w.count === 0) continue;
    console.log(`\nOrchestra (${key}) logged ${w.count} warnings or errors; the last:`);
    for (const line of w.last) console.log(`  ${line}`);
  }

  const file = run.write(o, {
    parameters: {
      host: HOST,
      systems: o.systems,
      sizes: o.sizes,
      stepSeconds: o.durationSeconds,
      startRate: o.startRate,
      stepFactor: o.stepFactor,
      refine: o.refine,
      maxSteps: o.maxSteps,
      maxRate: o.maxRate,
      passCriteria: {
        minDeliveredPercent: o.minDelivered,
        maxP99Ms: o.maxP99Ms,
        runaway: 'median of the last quarter > 2 x median of the first quarter + 10 ms',
        publishedAtLeastPercent: 95,
      },
      latencySeconds: o.latencySeconds,
      warmupSeconds: o.warmupSeconds,
      payloadBytes: o.payloadBytes,
      ackWindow: o.ackWindow,
      densityConnections: o.densityConnections,
      densityTopics: o.densityTopics,
      slowSubscribers: o.slowSubscribers,
      slowSeconds: o.slowSeconds,
      slowRate: o.slowRate ?? `${DEFAULT_SLOW_RATE} msg/s, or half the knee if lower`,
      slowPayloadBytes: o.slowPayloadBytes,
      slowPauseAfterSeconds: o.slowPauseAfterSeconds,
      rounds: o.rounds,
      roundOrder: 'ws, Socket.IO, Orchestra in odd rounds, reversed in even rounds',
      profiled: o.profile,
      orchestraExtraEnv: o.orchestraEnv,
      layout: {
        ...layout,
        benchmarkProcessPinned: selfPinned,
        loadProcessesPinned: loadPinned,
        generators: o.generators,
        publisherProcesses: 1,
        connectParallelPerGenerator: o.connectParallel,
        sourceAddresses,
        openFiles: { benchmark: openFilesLimit('self'), generators: generatorFiles },
      },
      tcp: tcpSettings(),
      versions: {
        ws: packageVersion('ws'),
        'socket.io': packageVersion('socket.io'),
        'socket.io-client': packageVersion('socket.io-client'),
      },
      orchestra:
        'node packages/server/src/cli/main.ts start (fresh data dir per round), ' +
        'ORCHESTRA_LOG_LEVEL=warn, ORCHESTRA_RATE_LIMIT_PER_SECOND=0, ' +
        'ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS=0; subscribers and the publisher authenticate with ' +
        'the admin key (Authorization: Bearer) on /v1/realtime',
      anchors:
        'bench/realtime/anchor-server.ts: ws WebSocketServer (a Map of topic → Set of clients, ' +
        'the message serialised once and sent to each with client.send) and Socket.IO ' +
        '(websocket transport, socket.join, io.to(topic).emit); no authentication, no storage',
      timestamps: 'performance.timeOrigin + performance.now() in each process',
    },
    servers: serverInfo,
    results: { fanout: fanoutSummary, density: densitySummary, slowConsumer: slowSummary },
    targets,
    fanout: fanouts,
    density: densities,
    slowConsumer: slows,
    warnings,
    phaseErrors,
  });
  console.log(`\nresult: ${file}`);
  if (o.profile) console.log(`CPU profiles: ${PROFILE_DIR}`);
  if (phaseErrors.length > 0) {
    console.log(`\n${phaseErrors.length} phase(s) failed:`);
    for (const e of phaseErrors) {
      console.log(`  round ${e.round}, ${SYSTEM_NAMES[e.system]}, ${e.phase}: ${e.error}`);
    }
    return 1;
  }
  return 0;
}

await runBenchmark({ script: SELF, processes, stopping: 'every process', readOptions, main });
