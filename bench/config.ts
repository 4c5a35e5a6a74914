/**
 * Benchmark: the config center's watch. N watchers on a key prefix, then puts under it;
 * put → notify latency and sustained writes/s with the watchers attached, for Orchestra on
 * its embedded KV, Orchestra on etcd (ORCHESTRA_ETCD_ENDPOINTS), and the anchor: the
 * `etcd3` package's watches and puts straight against the same etcd, in one run.
 *
 *   node bench/config.ts [--watchers 1000] [--systems embedded,orchestra-etcd,raw-etcd]
 *   node bench/config.ts --smoke     a small run that checks the setup, not a measurement
 *
 * Everything is on 127.0.0.1: an etcd of its own (free ports, a temporary data directory),
 * the Orchestra servers and the load in separate processes. Writes
 * bench/results/config-<store>-<date>.json. See bench/README.md for how to read it.
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
  f2,
  HOST,
  intOption,
  machineCpuTicks,
  mean,
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
  startOrchestraNode,
  startWatchdog,
  table,
  throwawayDatabase,
} from './common.ts';
import { type EtcdServer, startEtcd } from './config/etcd.ts';
import {
  clock,
  type LoadRequest,
  type PutReport,
  SYSTEM_NAMES,
  SYSTEMS,
  type System,
  type Target,
  type WatchCollect,
  type WatchCount,
  type WatchReport,
} from './config/shared.ts';
import {
  type HistogramData,
  type LatencySummary,
  merged,
  quantile,
  sleep,
  summary,
} from './realtime/shared.ts';

const SELF = import.meta.filename;
const LOAD_SCRIPT = join(REPO_ROOT, 'bench/config/load.ts');
const STOP_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** The drain ends early once nothing has arrived for this long. */
const QUIET_MS = 2_000;
const POLL_MS = 100;
/** The server side's CPU with the watchers open and no puts is read over this long. */
const IDLE_MS = 2_000;
/** A load process at this % of one core or more is marked: it may have set the pace. */
const LOAD_BOUND_PERCENT = 90;
const CONFIG_ENV = 'bench';
const WATCH_PREFIX = 'bench/';

const HELP = `Usage: node bench/config.ts [options]

Opens N watchers on a key prefix of the config center, then puts under that prefix: put →
notify latency (p50, p99 over every delivery) at a paced rate, then writes/s of a closed-loop
burst with the watchers attached. For Orchestra on its embedded KV (SQLite, or PostgreSQL
with --postgres), Orchestra on etcd (ORCHESTRA_ETCD_ENDPOINTS) and the anchor, the etcd3
package straight against the same etcd; reports the ratios Orchestra (etcd) / etcd3 and
Orchestra (embedded) / etcd3. Everything on 127.0.0.1; an etcd of its own is started on
free ports with a temporary data directory. Every option also has an environment variable.

Options:
  --systems LIST          Which systems, comma-separated: embedded, orchestra-etcd, raw-etcd
                          (env BENCH_SYSTEMS; default all three)
  --watchers N            Watchers of the prefix (env BENCH_WATCHERS; default 1000)
  --rate R                Puts/s of the latency run (env BENCH_RATE; default 50)
  --duration S            Seconds of the latency run: rate x S puts (env BENCH_DURATION;
                          default 10)
  --warmup S              Seconds at the rate before it, not measured (env BENCH_WARMUP;
                          default 2)
  --max-in-flight N       The paced putter holds a due put back while N are unanswered
                          (env BENCH_MAX_IN_FLIGHT; default 64)
  --burst-puts N          Puts of the burst; 0 skips it (env BENCH_BURST_PUTS; default 1000)
  --burst-concurrency N   Puts in flight during the burst (env BENCH_BURST_CONCURRENCY;
                          default 16)
  --burst-max S           The burst stops issuing after S seconds (env BENCH_BURST_MAX;
                          default 30)
  --drain S               After the last put, deliveries may arrive for up to S seconds
                          (env BENCH_DRAIN; default 15; ends early after 2 s without any)
  --keys N                Distinct keys the puts cycle through (env BENCH_KEYS; default 100)
  --payload-bytes N       Padding in each value (env BENCH_PAYLOAD_BYTES; default 64)
  --generators N          Watcher processes; the putter has one of its own
                          (env BENCH_GENERATORS; default 2)
  --connect-parallel N    Watchers each process opens at once (env BENCH_CONNECT_PARALLEL;
                          default 50)
  --connect-timeout S     Time to open all watchers (env BENCH_CONNECT_TIMEOUT; default 120)
  --etcd-bin PATH         The etcd binary (env BENCH_ETCD_BIN; default etcd, from PATH)
  --etcd-dir DIR          Where etcd's temporary data directory goes (env BENCH_ETCD_DIR;
                          default the system's temporary directory). /dev/shm takes the
                          disk's fsync out of etcd's numbers; the JSON records it.
  --rounds N              Rounds; the order of the systems is reversed every other round
                          (env BENCH_ROUNDS; default 2)
  --postgres              Orchestra on PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop throwaway databases
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default
                          bench/results, with --smoke bench/.scratch)
  --smoke                 A small run to check the setup, not to measure (env BENCH_SMOKE=1):
                          50 watchers, 3 s at 50 puts/s, a burst of 300, 1 round, unless
                          given otherwise; the result goes to bench/.scratch

Diagnostics (the result is then not the standard measurement; use --out-dir elsewhere):
  --profile               Run the Orchestra servers, the first watcher process and the putter
                          under --cpu-prof; the .cpuprofile files go to bench/.scratch/profiles
  --orchestra-env K=V     Extra environment for the Orchestra servers, repeatable
  -h, --help              Show this help`;

// ---------------------------------------------------------------------------------------
// Options

interface Options extends CommonOptions {
  systems: System[];
  watchers: number;
  rate: number;
  warmupSeconds: number;
  maxInFlight: number;
  burstPuts: number;
  burstConcurrency: number;
  burstMaxSeconds: number;
  drainSeconds: number;
  keys: number;
  payloadBytes: number;
  generators: number;
  connectParallel: number;
  connectTimeoutSeconds: number;
  etcdBin: string;
  etcdDir: string;
  smoke: boolean;
}

function floatOption(flag: string, raw: string | undefined, fallback: number, min: number) {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${flag} must be a number >= ${min}`);
  return n;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    systems: { type: 'string' },
    watchers: { type: 'string' },
    rate: { type: 'string' },
    warmup: { type: 'string' },
    'max-in-flight': { type: 'string' },
    'burst-puts': { type: 'string' },
    'burst-concurrency': { type: 'string' },
    'burst-max': { type: 'string' },
    drain: { type: 'string' },
    keys: { type: 'string' },
    'payload-bytes': { type: 'string' },
    generators: { type: 'string' },
    'connect-parallel': { type: 'string' },
    'connect-timeout': { type: 'string' },
    'etcd-bin': { type: 'string' },
    'etcd-dir': { type: 'string' },
    smoke: { type: 'boolean' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const smoke = values.smoke ?? envFlag(env.BENCH_SMOKE);
  // --smoke only changes the defaults; what is given explicitly still wins.
  const d = smoke
    ? { watchers: 50, duration: 3, warmup: 1, burstPuts: 300, drain: 5, rounds: 1 }
    : { watchers: 1_000, duration: 10, warmup: 2, burstPuts: 1_000, drain: 15, rounds: 2 };
  const common = commonOptions({
    ...values,
    'out-dir':
      values['out-dir'] ??
      env.BENCH_OUT_DIR ??
      (smoke ? join(REPO_ROOT, 'bench/.scratch') : undefined),
  });
  const systemsRaw = values.systems ?? env.BENCH_SYSTEMS ?? SYSTEMS.join(',');
  const systems = systemsRaw.split(',').map((s) => s.trim());
  for (const s of systems) {
    if (!SYSTEMS.includes(s as System)) {
      throw new Error(`--systems: unknown system "${s}" (use ${SYSTEMS.join(', ')})`);
    }
  }
  const opts: Options = {
    ...common,
    durationSeconds: intOption('duration', values.duration ?? env.BENCH_DURATION, d.duration, 1),
    rounds: intOption('rounds', values.rounds ?? env.BENCH_ROUNDS, d.rounds, 1),
    systems: SYSTEMS.filter((s) => systems.includes(s)),
    watchers: intOption('watchers', values.watchers ?? env.BENCH_WATCHERS, d.watchers, 1),
    rate: floatOption('rate', values.rate ?? env.BENCH_RATE, 50, 0.1),
    warmupSeconds: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, d.warmup, 0),
    maxInFlight: intOption(
      'max-in-flight',
      values['max-in-flight'] ?? env.BENCH_MAX_IN_FLIGHT,
      64,
      1,
    ),
    burstPuts: intOption(
      'burst-puts',
      values['burst-puts'] ?? env.BENCH_BURST_PUTS,
      d.burstPuts,
      0,
    ),
    burstConcurrency: intOption(
      'burst-concurrency',
      values['burst-concurrency'] ?? env.BENCH_BURST_CONCURRENCY,
      16,
      1,
    ),
    burstMaxSeconds: intOption('burst-max', values['burst-max'] ?? env.BENCH_BURST_MAX, 30, 1),
    drainSeconds: intOption('drain', values.drain ?? env.BENCH_DRAIN, d.drain, 1),
    keys: intOption('keys', values.keys ?? env.BENCH_KEYS, 100, 1),
    payloadBytes: intOption(
      'payload-bytes',
      values['payload-bytes'] ?? env.BENCH_PAYLOAD_BYTES,
      64,
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
      120,
      1,
    ),
    etcdBin: values['etcd-bin'] ?? env.BENCH_ETCD_BIN ?? 'etcd',
    etcdDir: values['etcd-dir'] ?? env.BENCH_ETCD_DIR ?? os.tmpdir(),
    smoke,
  };
  if (opts.systems.length === 0) throw new Error('--systems: name at least one system');
  return opts;
}

// ---------------------------------------------------------------------------------------
// Process management

// The cleanup steps stop the load processes, then the servers, then etcd, then remove the
// data directories and the databases; whatever still runs is stopped last.
const processes = new Processes({ stopTimeoutMs: STOP_TIMEOUT_MS, childrenFirst: false });

/** A load process (bench/config/load.ts). */
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

function openFilesSoftLimit(pid: number | 'self'): number | null {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = (line ?? '').slice('Max open files'.length).trim().split(/\s+/)[0];
    return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft) || null;
  } catch {
    return null;
  }
}

/** Fails early, with the fix, when `pid` may not open the sockets it will need. */
function checkOpenFiles(what: string, pid: number, needed: number): number | null {
  const soft = openFilesSoftLimit(pid);
  if (soft !== null && soft < needed) {
    throw new Error(`${what} may open ${soft} files and needs ${needed}; raise "ulimit -n"`);
  }
  return soft;
}

function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// The servers

interface OrchestraServer {
  system: 'embedded' | 'orchestra-etcd';
  proc: ChildProcess;
  pid: number;
  baseUrl: string;
  apiKey: string;
  warnings(): { count: number; last: string[] };
}

/** Orchestra as it is deployed, on a free port with a fresh data dir (and database). */
async function startOrchestra(
  o: Options,
  system: 'embedded' | 'orchestra-etcd',
  etcd: EtcdServer | null,
): Promise<OrchestraServer> {
  const settings: Record<string, string> = {};
  if (system === 'orchestra-etcd') {
    if (etcd === null) throw new Error('Orchestra (etcd) needs the etcd');
    settings.ORCHESTRA_ETCD_ENDPOINTS = etcd.endpoint;
    settings.ORCHESTRA_ETCD_PREFIX = `/orchestra-bench-${process.pid}/`;
  }
  if (o.store === 'postgres') {
    const name = `orchestra_bench_config_${system.replace('-', '_')}_${process.pid}_${Date.now().toString(36)}`;
    settings.ORCHESTRA_DATABASE_URL = await throwawayDatabase(processes, o.postgresUrl, name);
  }
  const node = await startOrchestraNode(processes, {
    name: `config-${system}`,
    settings,
    orchestraEnv: o.orchestraEnv,
    profileName: o.profile ? `orchestra-${system}` : undefined,
  });
  const { proc, url: baseUrl } = node;
  const apiKey = adminKeyOf(node);
  // The config center answers a put (outside the watched prefix) with the admin key.
  const probe = await fetch(`${baseUrl}/v1/config/probe/ready?env=${CONFIG_ENV}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ value: { ready: true }, reason: 'bench/config.ts probe' }),
  });
  const probeText = await probe.text();
  if (probe.status !== 200 && probe.status !== 201) {
    throw new Error(
      `${SYSTEM_NAMES[system]}: PUT /v1/config/probe/ready answered ${probe.status}: ` +
        redactKeys(probeText).slice(0, 300),
    );
  }
  return {
    system,
    proc,
    pid: proc.pid ?? -1,
    baseUrl,
    apiKey,
    warnings: node.warnings,
  };
}

// ---------------------------------------------------------------------------------------
// One phase: puts (paced or a burst), wait for the deliveries, read what happened

type PhaseKind = 'warmup' | 'paced' | 'burst';

interface PhaseResult {
  kind: PhaseKind;
  system: System;
  round: number;
  phase: number;
  /** Watchers open when the phase started. */
  watchers: number;
  /** Paced: puts/s asked for; burst: puts in flight. */
  rate: number | null;
  concurrency: number | null;
  planned: number;
  issued: number;
  succeeded: number;
  putErrors: number;
  firstPutError: string | null;
  /** First put issued → last put answered, s. */
  putSeconds: number;
  /** Puts answered without error per second of `putSeconds`. */
  writesPerSecond: number;
  expected: number;
  delivered: number;
  deliveredPercent: number;
  repeats: number;
  stale: number;
  other: number;
  watchErrors: number;
  lastWatchError: string | null;
  watchersClosed: number;
  /** Put issued → event received, every delivery of the phase. */
  notifyMs: LatencySummary | null;
  /** Put issued → put answered. */
  roundTripMs: LatencySummary | null;
  /** Paced: how late the putter issued puts (p99), and how often it held one back. */
  putLagP99Ms: number | null;
  heldBack: number;
  /** First put issued → last delivery, s, and deliveries per second of it. */
  notifySeconds: number | null;
  deliveriesPerSecond: number | null;
  /** Last put answered → last delivery, ms. */
  lastDeliveryAfterLastPutMs: number | null;
  cpu: {
    orchestraMs: number | null;
    etcdMs: number | null;
    /** Orchestra + etcd CPU per put answered, ms (the server side of the system). */
    serverMsPerPut: number | null;
    generatorsPercent: (number | null)[];
    putterPercent: number | null;
    machineBusyPercent: number | null;
    stealPercent: number | null;
  };
  /** A load process used >= 90 % of one core: the load may have set the pace. */
  loadBound: boolean;
  orchestraRss: number | null;
  loadavgAtStart: number[];
  failures: string[];
}

interface Load {
  generators: LoadProcess[];
  putter: LoadProcess;
}

interface SystemUnderTest {
  system: System;
  target: Target;
  orchestraPid: number | null;
  etcdPid: number | null;
}

let phaseCounter = 0;

/** Watcher counts of each process for `total` watchers. */
function split(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

const delta = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);

async function runPhase(
  load: Load,
  sut: SystemUnderTest,
  round: number,
  kind: PhaseKind,
  o: Options,
  histograms: { notify: HistogramData; roundTrip: HistogramData }[],
): Promise<PhaseResult> {
  const phase = ++phaseCounter;
  const loadavgAtStart = os.loadavg().map(round3);
  const planned =
    kind === 'burst'
      ? o.burstPuts
      : Math.max(1, Math.round(o.rate * (kind === 'warmup' ? o.warmupSeconds : o.durationSeconds)));
  await Promise.all(load.generators.map((g) => g.request({ type: 'reset', phase, planned })));
  const open = (
    await Promise.all(load.generators.map((g) => g.request<WatchCount>({ type: 'count' })))
  ).reduce((a, c) => a + c.open, 0);
  const pids = load.generators.map((g) => g.pid);
  const cpuOf = (pid: number | null) => (pid === null ? null : cpuMsOf(pid));
  const before = {
    orchestra: cpuOf(sut.orchestraPid),
    etcd: cpuOf(sut.etcdPid),
    generators: pids.map(cpuMsOf),
    putter: cpuMsOf(load.putter.pid),
    machine: machineCpuTicks(),
    wall: performance.now(),
  };
  const maxMs =
    kind === 'burst' ? o.burstMaxSeconds * 1000 : Math.round((planned / o.rate) * 1500) + 2_000;
  const report = await load.putter.request<PutReport>(
    kind === 'burst'
      ? {
          type: 'put-burst',
          phase,
          count: planned,
          concurrency: o.burstConcurrency,
          keys: o.keys,
          payloadBytes: o.payloadBytes,
          maxMs,
        }
      : {
          type: 'put-paced',
          phase,
          rate: o.rate,
          count: planned,
          keys: o.keys,
          payloadBytes: o.payloadBytes,
          maxInFlight: o.maxInFlight,
          maxMs,
        },
    maxMs + 60_000,
  );
  const expected = report.succeeded * open;
  // Until everything due arrived, or nothing more arrives, or the drain time is up.
  const drainDeadline = performance.now() + o.drainSeconds * 1000;
  let last = -1;
  let lastChange = performance.now();
  for (;;) {
    const counts = await Promise.all(
      load.generators.map((g) => g.request<WatchCount>({ type: 'count' })),
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
  const wallMs = performance.now() - before.wall;
  const after = {
    orchestra: cpuOf(sut.orchestraPid),
    etcd: cpuOf(sut.etcdPid),
    generators: pids.map(cpuMsOf),
    putter: cpuMsOf(load.putter.pid),
    machine: machineCpuTicks(),
  };
  const collected = await Promise.all(
    load.generators.map((g) => g.request<WatchCollect>({ type: 'collect' })),
  );
  const notify = merged(collected.map((c) => c.latency));
  histograms.push({ notify, roundTrip: report.roundTrip });
  const delivered = collected.reduce((a, c) => a + c.delivered, 0);
  const lastArrival = Math.max(...collected.map((c) => c.lastAt ?? 0));
  const percentOf = (ms: number | null) => (ms === null ? null : round1((ms / wallMs) * 100));
  const orchestraMs = delta(before.orchestra, after.orchestra);
  const etcdMs = delta(before.etcd, after.etcd);
  const serverMs =
    (sut.orchestraPid !== null && orchestraMs === null) || (sut.etcdPid !== null && etcdMs === null)
      ? null
      : (orchestraMs ?? 0) + (etcdMs ?? 0);
  const generatorsPercent = pids.map((_, i) =>
    percentOf(delta(before.generators[i] ?? null, after.generators[i] ?? null)),
  );
  const putterPercent = percentOf(delta(before.putter, after.putter));
  const machine =
    before.machine && after.machine
      ? {
          total: Math.max(after.machine.total - before.machine.total, 1),
          idle: after.machine.idle - before.machine.idle,
          steal: after.machine.steal - before.machine.steal,
        }
      : null;
  const putSeconds =
    report.issued > 0 ? Math.max((report.lastDoneAt - report.firstAt) / 1000, 1e-3) : 0;
  const notifySeconds =
    delivered > 0 && report.firstAt > 0
      ? Math.max((lastArrival - report.firstAt) / 1000, 1e-3)
      : null;
  const lagP99 = quantile(report.lag, 0.99);
  const result: PhaseResult = {
    kind,
    system: sut.system,
    round,
    phase,
    watchers: open,
    rate: kind === 'burst' ? null : o.rate,
    concurrency: kind === 'burst' ? o.burstConcurrency : null,
    planned,
    issued: report.issued,
    succeeded: report.succeeded,
    putErrors: report.errors,
    firstPutError: report.firstError,
    putSeconds: round3(putSeconds),
    writesPerSecond: putSeconds > 0 ? round1(report.succeeded / putSeconds) : 0,
    expected,
    delivered,
    deliveredPercent: expected > 0 ? round1((delivered / expected) * 100) : 0,
    repeats: collected.reduce((a, c) => a + c.repeats, 0),
    stale: collected.reduce((a, c) => a + c.stale, 0),
    other: collected.reduce((a, c) => a + c.other, 0),
    watchErrors: collected.reduce((a, c) => a + c.errors, 0),
    lastWatchError: collected.find((c) => c.lastError !== null)?.lastError ?? null,
    watchersClosed: collected.reduce((a, c) => a + c.closed, 0),
    notifyMs: summary(notify),
    roundTripMs: summary(report.roundTrip),
    putLagP99Ms: lagP99 === null ? null : round3(lagP99),
    heldBack: report.heldBack,
    notifySeconds: notifySeconds === null ? null : round3(notifySeconds),
    deliveriesPerSecond: notifySeconds === null ? null : Math.round(delivered / notifySeconds),
    lastDeliveryAfterLastPutMs:
      delivered > 0 && report.lastDoneAt > 0 ? round1(lastArrival - report.lastDoneAt) : null,
    cpu: {
      orchestraMs,
      etcdMs,
      serverMsPerPut:
        serverMs === null || report.succeeded === 0 ? null : round3(serverMs / report.succeeded),
      generatorsPercent,
      putterPercent,
      machineBusyPercent: machine ? round1((1 - machine.idle / machine.total) * 100) : null,
      stealPercent: machine ? round1((machine.steal / machine.total) * 100) : null,
    },
    loadBound: [...generatorsPercent, putterPercent].some(
      (p) => p !== null && p >= LOAD_BOUND_PERCENT,
    ),
    orchestraRss: sut.orchestraPid === null ? null : rssBytes(sut.orchestraPid),
    loadavgAtStart,
    failures: [],
  };
  result.failures = judge(result, o);
  return result;
}

/** What makes a phase's numbers doubtful; empty if nothing does. */
function judge(r: PhaseResult, o: Options): string[] {
  const failures: string[] = [];
  if (r.watchers < o.watchers) failures.push(`${o.watchers - r.watchers} watchers missing`);
  if (r.issued < r.planned) failures.push(`issued ${r.issued} of ${r.planned} puts in time`);
  if (r.putErrors > 0) failures.push(`${r.putErrors} put errors (${r.firstPutError})`);
  if (r.deliveredPercent < 100) failures.push(`${r.deliveredPercent}% delivered`);
  if (r.repeats > 0) failures.push(`${r.repeats} repeated deliveries`);
  if (r.watchersClosed > 0) failures.push(`${r.watchersClosed} watchers ended`);
  if (r.watchErrors > 0 && r.watchersClosed === 0) {
    failures.push(`${r.watchErrors} watch errors (${r.lastWatchError})`);
  }
  if (r.kind !== 'burst' && (r.putLagP99Ms ?? 0) > 100) {
    failures.push(`the putter fell behind its schedule (lag p99 ${r.putLagP99Ms} ms)`);
  }
  return failures;
}

const pct = (n: number | null | undefined) => (n === null || n === undefined ? '?' : `${n}%`);

function describe(r: PhaseResult): string {
  const what =
    r.kind === 'burst'
      ? `burst of ${n0(r.planned)} (${r.concurrency} in flight)`
      : `${r.kind} ${n0(r.planned)} at ${r.rate}/s`;
  return (
    `  ${SYSTEM_NAMES[r.system].padEnd(20)} ${what}: ${n0(r.succeeded)} puts in ` +
    `${r.putSeconds.toFixed(1)} s (${n0(r.writesPerSecond)}/s, PUT p50 ${f2(r.roundTripMs?.p50)} ` +
    `p99 ${f2(r.roundTripMs?.p99)} ms); ${r.deliveredPercent}% of ${n0(r.expected)} delivered, ` +
    `notify p50 ${f2(r.notifyMs?.p50)} p99 ${f2(r.notifyMs?.p99)} ms; server CPU ` +
    `${f2(r.cpu.serverMsPerPut)} ms/put; load CPU ${r.cpu.generatorsPercent.map(pct).join(' + ')}` +
    ` + ${pct(r.cpu.putterPercent)}${r.loadBound ? ' (load-bound)' : ''}, machine ` +
    `${pct(r.cpu.machineBusyPercent)} busy` +
    (r.failures.length > 0 ? `; ${r.failures.join(', ')}` : '')
  );
}

// ---------------------------------------------------------------------------------------
// One system in one round: watchers, warm-up, the paced run, the burst

interface SystemRun {
  system: System;
  round: number;
  connect: { ms: number; perSecond: number };
  /**
   * CPU of the server side (Orchestra + etcd, or etcd) with the watchers open and no puts,
   * % of one core: background work that the CPU per put of a paced run includes.
   */
  idleServerCpuPercent: number | null;
  warmup: PhaseResult | null;
  paced: PhaseResult;
  burst: PhaseResult | null;
}

async function runSystem(
  load: Load,
  sut: SystemUnderTest,
  round: number,
  o: Options,
  histograms: Map<System, { notify: HistogramData; roundTrip: HistogramData }[]>,
): Promise<SystemRun> {
  const counts = split(o.watchers, load.generators.length);
  const timeoutMs = o.connectTimeoutSeconds * 1000;
  const started = clock();
  try {
    const reports = await Promise.all(
      load.generators.map((g, i) =>
        (counts[i] ?? 0) === 0
          ? Promise.resolve<WatchReport>({ opened: 0, failed: 0, firstError: null, ms: 0 })
          : g.request<WatchReport>(
              {
                type: 'watch',
                target: sut.target,
                count: counts[i] ?? 0,
                parallel: o.connectParallel,
                timeoutMs,
              },
              timeoutMs + 30_000,
            ),
      ),
    );
    const failed = reports.reduce((a, r) => a + r.failed, 0);
    if (failed > 0) {
      const firstError = reports.find((r) => r.firstError !== null)?.firstError;
      throw new Error(
        `${SYSTEM_NAMES[sut.system]}: ${failed} of ${o.watchers} watchers failed (first: ` +
          `${firstError ?? 'timed out'})`,
      );
    }
    const ms = clock() - started;
    const connect = { ms: Math.round(ms), perSecond: round1((o.watchers / ms) * 1000) };
    console.log(
      `  ${SYSTEM_NAMES[sut.system]}: ${n0(o.watchers)} watchers in ` +
        `${(connect.ms / 1000).toFixed(1)} s`,
    );
    await load.putter.request({
      type: 'putter-connect',
      target: sut.target,
      maxInFlight: Math.max(o.maxInFlight, o.burstConcurrency),
    });
    await sleep(SETTLE_MS);
    const serverCpu = () => {
      const values = [sut.orchestraPid, sut.etcdPid]
        .filter((pid): pid is number => pid !== null)
        .map(cpuMsOf);
      return values.some((v) => v === null)
        ? null
        : values.reduce<number>((a, b) => a + (b ?? 0), 0);
    };
    const idleBefore = serverCpu();
    const idleStarted = performance.now();
    await sleep(IDLE_MS);
    const idleMs = delta(idleBefore, serverCpu());
    const idleServerCpuPercent =
      idleMs === null ? null : round1((idleMs / (performance.now() - idleStarted)) * 100);
    console.log(
      `  ${SYSTEM_NAMES[sut.system]}: server CPU with the watchers idle ` +
        `${pct(idleServerCpuPercent)} of a core`,
    );
    const own = histograms.get(sut.system) ?? [];
    histograms.set(sut.system, own);
    let warmup: PhaseResult | null = null;
    if (o.warmupSeconds > 0) {
      warmup = await runPhase(load, sut, round, 'warmup', o, []);
      console.log(describe(warmup));
      await sleep(SETTLE_MS);
    }
    const paced = await runPhase(load, sut, round, 'paced', o, own);
    console.log(describe(paced));
    let burst: PhaseResult | null = null;
    if (o.burstPuts > 0) {
      await sleep(SETTLE_MS);
      burst = await runPhase(load, sut, round, 'burst', o, []);
      console.log(describe(burst));
    }
    return { system: sut.system, round, connect, idleServerCpuPercent, warmup, paced, burst };
  } finally {
    await Promise.all(
      load.generators.map((g) =>
        g.request({ type: 'unwatch', timeoutMs: 10_000 }, 60_000).catch(() => undefined),
      ),
    );
  }
}

// ---------------------------------------------------------------------------------------

const meanOf = (values: (number | null | undefined)[]) => {
  const known = values.filter((v): v is number => v !== null && v !== undefined);
  return known.length === 0 ? null : round3(mean(known));
};

async function main(o: Options): Promise<number> {
  const perSystem =
    o.connectTimeoutSeconds +
    (o.warmupSeconds + o.durationSeconds) * 1.5 +
    (o.burstPuts > 0 ? o.burstMaxSeconds + o.drainSeconds : 0) +
    2 * o.drainSeconds +
    60;
  startWatchdog(processes, (o.rounds * o.systems.length * perSystem + 300) * 1000);

  const run = new RunRecord('config', SELF);
  console.log(
    `config benchmark: ${o.systems.map((s) => SYSTEM_NAMES[s]).join(', ')}; ` +
      `${n0(o.watchers)} watchers, ${o.rate} puts/s for ${o.durationSeconds} s, a burst of ` +
      `${n0(o.burstPuts)} (${o.burstConcurrency} in flight); ${o.rounds} round(s)` +
      (o.smoke ? ' (smoke run: checks the setup, does not measure)' : ''),
  );
  console.log(run.machineLine().trimEnd());

  const load: Load = {
    generators: Array.from(
      { length: o.generators },
      (_, i) =>
        new LoadProcess(
          `watchers ${i + 1}`,
          o.profile && i === 0 ? profileArgs('config-watchers') : [],
        ),
    ),
    putter: new LoadProcess('putter', o.profile ? profileArgs('config-putter') : []),
  };
  processes.onCleanup(async () => {
    await Promise.all([...load.generators, load.putter].map((g) => g.stop()));
  });
  await Promise.all([...load.generators, load.putter].map((g) => g.ready));
  const perGenerator = Math.ceil(o.watchers / o.generators) + 200;
  const generatorFiles = load.generators.map((g) =>
    checkOpenFiles(`watcher process ${g.pid}`, g.pid, perGenerator),
  );

  // etcd first: its stop is then registered before the servers' and runs after them.
  const needsEtcd = o.systems.some((s) => s !== 'embedded');
  const etcd = needsEtcd
    ? await startEtcd(processes, { bin: o.etcdBin, parentDir: o.etcdDir })
    : null;
  if (etcd !== null) console.log(`etcd ${etcd.version ?? '?'} at ${etcd.endpoint}`);
  const orchestras = new Map<System, OrchestraServer>();
  for (const system of o.systems) {
    if (system === 'raw-etcd') continue;
    const server = await startOrchestra(o, system, etcd);
    checkOpenFiles(SYSTEM_NAMES[system], server.pid, o.watchers + 500);
    orchestras.set(system, server);
  }
  const targetOf = (system: System): SystemUnderTest => {
    if (system === 'raw-etcd') {
      if (etcd === null) throw new Error('no etcd');
      return {
        system,
        target: { kind: 'etcd', endpoint: etcd.endpoint, prefix: `/bench-raw-${process.pid}/` },
        orchestraPid: null,
        etcdPid: etcd.pid,
      };
    }
    const server = orchestras.get(system);
    if (server === undefined) throw new Error(`no ${system} server`);
    return {
      system,
      target: {
        kind: 'orchestra',
        baseUrl: server.baseUrl,
        apiKey: server.apiKey,
        env: CONFIG_ENV,
        prefix: WATCH_PREFIX,
      },
      orchestraPid: server.pid,
      etcdPid: system === 'orchestra-etcd' ? (etcd?.pid ?? null) : null,
    };
  };
  await sleep(SETTLE_MS);

  const runs: SystemRun[] = [];
  const histograms = new Map<System, { notify: HistogramData; roundTrip: HistogramData }[]>();
  const phaseErrors: { round: number; system: System; error: string }[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? [...o.systems] : [...o.systems].reverse();
    console.log(`\nround ${round}: ${order.map((s) => SYSTEM_NAMES[s]).join(', ')}`);
    for (const system of order) {
      try {
        runs.push(await runSystem(load, targetOf(system), round, o, histograms));
      } catch (err) {
        // Recorded; the other systems still get measured, and the run ends with exit code 1.
        const message = redactKeys((err as Error).message).slice(0, 2000);
        console.log(`  ${SYSTEM_NAMES[system]}: FAILED: ${message}`);
        phaseErrors.push({ round, system, error: message });
      }
      await sleep(SETTLE_MS);
    }
  }

  // ---- summary
  const runsOf = (system: System) => runs.filter((r) => r.system === system);
  const results = Object.fromEntries(
    o.systems.map((system) => {
      const own = runsOf(system);
      const h = histograms.get(system) ?? [];
      const notify = summary(merged(h.map((x) => x.notify)));
      const roundTrip = summary(merged(h.map((x) => x.roundTrip)));
      const bursts = own.flatMap((r) => (r.burst === null ? [] : [r.burst]));
      const minOf = (values: number[]) => (values.length === 0 ? null : Math.min(...values));
      return [
        system,
        {
          rounds: own.length,
          paced: {
            notifyMs: notify,
            roundTripMs: roundTrip,
            deliveredPercentMin: minOf(own.map((r) => r.paced.deliveredPercent)),
            serverMsPerPut: meanOf(own.map((r) => r.paced.cpu.serverMsPerPut)),
            idleServerCpuPercent: meanOf(own.map((r) => r.idleServerCpuPercent)),
            loadBound: own.some((r) => r.paced.loadBound),
            failures: own.flatMap((r) => r.paced.failures),
          },
          burst:
            bursts.length === 0
              ? null
              : {
                  writesPerSecond: meanOf(bursts.map((b) => b.writesPerSecond)),
                  roundTripP99Ms: meanOf(bursts.map((b) => b.roundTripMs?.p99)),
                  deliveredPercentMin: minOf(bursts.map((b) => b.deliveredPercent)),
                  deliveriesPerSecond: meanOf(bursts.map((b) => b.deliveriesPerSecond)),
                  lastDeliveryAfterLastPutMs: meanOf(
                    bursts.map((b) => b.lastDeliveryAfterLastPutMs),
                  ),
                  serverMsPerPut: meanOf(bursts.map((b) => b.cpu.serverMsPerPut)),
                  loadBound: bursts.some((b) => b.loadBound),
                  failures: bursts.flatMap((b) => b.failures),
                },
        },
      ];
    }),
  ) as Record<
    System,
    {
      rounds: number;
      paced: {
        notifyMs: LatencySummary | null;
        roundTripMs: LatencySummary | null;
        deliveredPercentMin: number | null;
        serverMsPerPut: number | null;
        idleServerCpuPercent: number | null;
        loadBound: boolean;
        failures: string[];
      };
      burst: {
        writesPerSecond: number | null;
        roundTripP99Ms: number | null;
        deliveredPercentMin: number | null;
        deliveriesPerSecond: number | null;
        lastDeliveryAfterLastPutMs: number | null;
        serverMsPerPut: number | null;
        loadBound: boolean;
        failures: string[];
      } | null;
    }
  >;

  const has = (s: System) => o.systems.includes(s) && (results[s]?.rounds ?? 0) > 0;
  const ratioColumns: { name: string; of: System }[] = has('raw-etcd')
    ? [
        ...(has('orchestra-etcd')
          ? [{ name: 'Orchestra (etcd) / etcd3', of: 'orchestra-etcd' as const }]
          : []),
        ...(has('embedded') ? [{ name: 'embedded / etcd3', of: 'embedded' as const }] : []),
      ]
    : [];
  const row = (
    label: string,
    value: (s: System) => number | null | undefined,
    format: (n: number | null | undefined) => string,
    mark: (s: System) => string = () => '',
    withRatio = true,
  ): (string | number)[] => [
    label,
    ...o.systems.map((s) => `${format(value(s))}${mark(s)}`),
    ...ratioColumns.map((c) => (withRatio ? f2(ratio(value(c.of), value('raw-etcd'))) : '')),
  ];
  const incomplete = (percent: number | null | undefined) =>
    percent !== null && percent !== undefined && percent < 100 ? '!' : '';
  const pacedMark = (s: System) =>
    `${results[s]?.paced.loadBound ? '*' : ''}${incomplete(results[s]?.paced.deliveredPercentMin)}`;
  const burstMark = (s: System) => (results[s]?.burst?.loadBound ? '*' : '');
  const burstDeliveryMark = (s: System) =>
    `${burstMark(s)}${incomplete(results[s]?.burst?.deliveredPercentMin)}`;
  const rows: (string | number)[][] = [
    row(
      `notify latency p50 (ms), ${o.rate} puts/s`,
      (s) => results[s]?.paced.notifyMs?.p50,
      f2,
      pacedMark,
    ),
    row('notify latency p99 (ms)', (s) => results[s]?.paced.notifyMs?.p99, f2, pacedMark),
    row('PUT round trip p50 (ms)', (s) => results[s]?.paced.roundTripMs?.p50, f2),
    row('PUT round trip p99 (ms)', (s) => results[s]?.paced.roundTripMs?.p99, f2),
    row('server CPU per put (ms), paced', (s) => results[s]?.paced.serverMsPerPut, f2),
    row(
      'server CPU, watchers idle (% of a core)',
      (s) => results[s]?.paced.idleServerCpuPercent,
      (n) => (n === null || n === undefined ? '?' : n.toFixed(1)),
    ),
  ];
  if (o.burstPuts > 0) {
    rows.push(
      row(
        `writes/s, burst (${o.burstConcurrency} in flight)`,
        (s) => results[s]?.burst?.writesPerSecond,
        n0,
        burstMark,
      ),
      row('PUT round trip p99 (ms), burst', (s) => results[s]?.burst?.roundTripP99Ms, f2),
      row(
        'deliveries/s, burst (first put → last event)',
        (s) => results[s]?.burst?.deliveriesPerSecond,
        n0,
        burstDeliveryMark,
      ),
      row(
        'last event after the last put (ms), burst',
        (s) => results[s]?.burst?.lastDeliveryAfterLastPutMs,
        n0,
      ),
      row(
        'delivered (%), burst (lowest round)',
        (s) => results[s]?.burst?.deliveredPercentMin,
        (n) => (n === null || n === undefined ? '?' : String(n)),
        () => '',
        false,
      ),
    );
  }
  console.log(
    `\nsummary (${o.rounds} round(s), ${n0(o.watchers)} watchers; latencies over every ` +
      'delivery of the paced runs of all rounds, from the put being issued to the event ' +
      'arriving; "*": a load process used >= 90 % of one core, so the load may have set the ' +
      'pace; "!": not every event arrived within the drain, and the percentiles leave the ' +
      'missing ones out, so they are a lower bound):',
  );
  console.log(
    table(['', ...o.systems.map((s) => SYSTEM_NAMES[s]), ...ratioColumns.map((c) => c.name)], rows),
  );

  const embeddedP99 = results.embedded?.paced.notifyMs?.p99;
  const etcdP99 = results['orchestra-etcd']?.paced.notifyMs?.p99;
  const rawP99 = results['raw-etcd']?.paced.notifyMs?.p99;
  const p99Ratio = ratio(etcdP99, rawP99);
  const targets = {
    embeddedP99Under5Ms:
      has('embedded') && embeddedP99 !== undefined && embeddedP99 !== null ? embeddedP99 < 5 : null,
    orchestraEtcdP99AtMost1_5xRawEtcd: p99Ratio === null ? null : p99Ratio <= 1.5,
  };
  const yes = (b: boolean | null) => (b === null ? '?' : b ? 'met' : 'NOT met');
  console.log(
    `\ntargets:\n  embedded notify p99 < 5 ms: ${yes(targets.embeddedP99Under5Ms)} ` +
      `(${f2(embeddedP99)} ms)\n  Orchestra (etcd) notify p99 <= 1.5 x etcd3: ` +
      `${yes(targets.orchestraEtcdP99AtMost1_5xRawEtcd)} (${f2(p99Ratio)} x)`,
  );
  const doubtful = runs.flatMap((r) =>
    [r.paced, ...(r.burst === null ? [] : [r.burst])]
      .filter((p) => p.failures.length > 0)
      .map(
        (p) => `round ${r.round}, ${SYSTEM_NAMES[r.system]}, ${p.kind}: ${p.failures.join(', ')}`,
      ),
  );
  if (doubtful.length > 0) console.log(`\nread with care:\n  ${doubtful.join('\n  ')}`);
  const warnings: Record<string, { count: number; last: string[] }> = {};
  for (const server of orchestras.values()) {
    const w = server.warnings();
    warnings[server.system] = w;
    if (w.count === 0) continue;
    console.log(`\n${SYSTEM_NAMES[server.system]} logged ${w.count} warnings or errors; the last:`);
    for (const line of w.last) console.log(`  ${line}`);
  }

  const file = run.write(o, {
    parameters: {
      host: HOST,
      systems: o.systems,
      watchers: o.watchers,
      rate: o.rate,
      pacedSeconds: o.durationSeconds,
      warmupSeconds: o.warmupSeconds,
      maxInFlight: o.maxInFlight,
      burstPuts: o.burstPuts,
      burstConcurrency: o.burstConcurrency,
      burstMaxSeconds: o.burstMaxSeconds,
      drainSeconds: o.drainSeconds,
      keys: o.keys,
      payloadBytes: o.payloadBytes,
      rounds: o.rounds,
      roundOrder: 'the systems in the order above in odd rounds, reversed in even rounds',
      smoke: o.smoke,
      profiled: o.profile,
      orchestraExtraEnv: o.orchestraEnv,
      layout: {
        watcherProcesses: o.generators,
        putterProcesses: 1,
        connectParallelPerProcess: o.connectParallel,
        openFiles: { benchmark: openFilesSoftLimit('self'), watcherProcesses: generatorFiles },
        pinned: false,
      },
      etcd:
        etcd === null
          ? null
          : {
              version: etcd.version,
              bin: o.etcdBin,
              dataDirParent: o.etcdDir,
              note: 'one member on loopback; its WAL fsyncs on the file system of dataDirParent',
            },
      versions: { etcd3: packageVersion('etcd3') },
      orchestra:
        'node packages/server/src/cli/main.ts start (fresh data dir, started once for the run), ' +
        'ORCHESTRA_LOG_LEVEL=warn, ORCHESTRA_RATE_LIMIT_PER_SECOND=0, ' +
        'ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS=0; Orchestra (etcd) adds ORCHESTRA_ETCD_ENDPOINTS ' +
        '(the same etcd as the anchor) and a prefix of its own. Watchers: GET ' +
        `/v1/config/watch?env=${CONFIG_ENV}&prefix=${WATCH_PREFIX} (text/event-stream) with ` +
        'the admin key, over node:http with a keep-alive agent of one socket per watcher; ' +
        `puts: PUT /v1/config/${WATCH_PREFIX}k<i % keys>?env=${CONFIG_ENV} {"value":{…}}`,
      anchor:
        'the etcd3 package: per watcher process one Etcd3 client with a prefix watch per ' +
        'watcher (one gRPC stream, as in Orchestra), and a putter client doing put(key).value(…)',
      latency:
        'put issued (the putter clock, just before the request) → event read by the watcher ' +
        '(its clock), both process.hrtime (CLOCK_MONOTONIC, one clock for the machine); ' +
        '2 %-wide histogram buckets, percentiles at most 2 % high',
    },
    results,
    ratios: {
      orchestraEtcdToRawEtcd: {
        notifyP50: ratio(
          results['orchestra-etcd']?.paced.notifyMs?.p50,
          results['raw-etcd']?.paced.notifyMs?.p50,
        ),
        notifyP99: p99Ratio,
        writesPerSecond: ratio(
          results['orchestra-etcd']?.burst?.writesPerSecond,
          results['raw-etcd']?.burst?.writesPerSecond,
        ),
      },
      embeddedToRawEtcd: {
        notifyP50: ratio(
          results.embedded?.paced.notifyMs?.p50,
          results['raw-etcd']?.paced.notifyMs?.p50,
        ),
        notifyP99: ratio(embeddedP99, rawP99),
        writesPerSecond: ratio(
          results.embedded?.burst?.writesPerSecond,
          results['raw-etcd']?.burst?.writesPerSecond,
        ),
      },
    },
    targets,
    runs,
    warnings,
    phaseErrors,
  });
  console.log(`\nresult: ${file}`);
  if (o.profile) console.log(`CPU profiles: ${PROFILE_DIR}`);
  if (phaseErrors.length > 0) {
    console.log(`\n${phaseErrors.length} system run(s) failed:`);
    for (const e of phaseErrors) {
      console.log(`  round ${e.round}, ${SYSTEM_NAMES[e.system]}: ${e.error}`);
    }
    return 1;
  }
  return 0;
}

await runBenchmark({ script: SELF, processes, stopping: 'every process', readOptions, main });
