/**
 * Benchmark: an authenticated GET on Orchestra against a bare Fastify hello-world, in one run.
 *
 *   node bench/http-auth.ts [--postgres] [--duration S] [--connections N] [--help]
 *
 * Measures start-up time and idle RSS of both servers, then loads them alternately with
 * autocannon on loopback and reports requests/s, latency and the ratio
 * orchestra_rps / anchor_rps. Writes bench/results/http-auth-<store>-<date>.json.
 * See bench/README.md for how to read the numbers.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  HOST,
  intOption,
  machineCpuTicks,
  mean,
  meanOrNull,
  ORCHESTRA_MAIN,
  orchestraEnv,
  PROFILE_DIR,
  Processes,
  parseOptions,
  profileArgs,
  RunRecord,
  round1,
  round3,
  runBenchmark,
  SETTLE_MS,
  START_TIMEOUT_MS,
  sleep,
  startWatchdog,
  stderrTail,
  table,
  tempDir,
  throwawayDatabase,
} from './common.ts';

const ANCHOR_FLAG = '--serve-anchor';
const SELF = import.meta.filename;

const HELP = `Usage: node bench/http-auth.ts [options]

Loads Orchestra (GET /v1/whoami with the admin key) and a bare Fastify 5 hello-world
(GET /) alternately on 127.0.0.1 and reports requests/s, latency, start-up time, idle RSS
and the ratios Orchestra / anchor. Every option also has an environment variable.

Options:
  --postgres              Use PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop a throwaway database
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --duration S            Seconds per measured run (env BENCH_DURATION; default 10)
  --warmup S              Seconds of warm-up per server before the rounds (env BENCH_WARMUP; default 3)
  --connections N         Concurrent connections (env BENCH_CONNECTIONS; default 50)
  --pipelining N          Requests in flight per connection (env BENCH_PIPELINING; default 1)
  --rounds N              Measured runs per server, alternating (env BENCH_ROUNDS; default 2)
  --startup-samples N     Start-ups measured per server (env BENCH_STARTUP_SAMPLES; default 3)
  --idle-ms MS            Idle time before reading RSS (env BENCH_IDLE_MS; default 2000)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)

Diagnostics (the result is then not the standard measurement; use --out-dir elsewhere):
  --profile               Run the loaded Orchestra under --cpu-prof; the .cpuprofile goes to
                          bench/.scratch/profiles
  --orchestra-path PATH   Load this Orchestra path instead of /v1/whoami (such as /healthz)
  --orchestra-env K=V     Extra environment for Orchestra, repeatable
                          (such as ORCHESTRA_LOG_LEVEL=silent)
  -h, --help              Show this help`;

// ---------------------------------------------------------------------------------------
// The anchor: what `node bench/http-auth.ts --serve-anchor` runs in its child process.
// It is the hello-world of Fastify's own benchmarks: one route, a response schema, no logger.

async function serveAnchor(): Promise<void> {
  const { default: Fastify } = await import('fastify');
  const app = Fastify({ logger: false });
  const schema = {
    response: { 200: { type: 'object', properties: { hello: { type: 'string' } } } },
  };
  app.get('/', { schema }, async () => ({ hello: 'world' }));
  await app.listen({ port: 0, host: HOST });
  const { port } = app.server.address() as AddressInfo;
  process.stdout.write(
    `${JSON.stringify({ msg: 'anchor listening', url: `http://${HOST}:${port}` })}\n`,
  );
  const stop = () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---------------------------------------------------------------------------------------
// autocannon has no type declarations; this is the part of its programmatic API we use.

interface Percentiles {
  mean: number;
  stddev: number;
  min: number;
  max: number;
  total: number;
  p50: number;
  p90: number;
  p97_5: number;
  p99: number;
}

interface AutocannonResult {
  requests: Percentiles;
  latency: Percentiles;
  throughput: Percentiles;
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  statusCodeStats: Record<string, { count: number }>;
}

interface AutocannonOptions {
  url: string;
  connections: number;
  pipelining: number;
  duration: number;
  timeout: number;
  headers?: Record<string, string>;
}

type AutocannonInstance = PromiseLike<AutocannonResult> & { stop(): void };

type Autocannon = (options: AutocannonOptions) => AutocannonInstance;

/** Loaded on first use only, so that the anchor's child process does not carry it. */
let autocannonModule: Autocannon | undefined;
function autocannon(options: AutocannonOptions): AutocannonInstance {
  autocannonModule ??= createRequire(import.meta.url)('autocannon') as Autocannon;
  return autocannonModule(options);
}

// ---------------------------------------------------------------------------------------
// Options

interface Options extends CommonOptions {
  warmupSeconds: number;
  connections: number;
  pipelining: number;
  startupSamples: number;
  idleMs: number;
  orchestraPath: string;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    warmup: { type: 'string' },
    connections: { type: 'string' },
    pipelining: { type: 'string' },
    'startup-samples': { type: 'string' },
    'idle-ms': { type: 'string' },
    'orchestra-path': { type: 'string' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  return {
    ...commonOptions(values),
    warmupSeconds: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, 3, 0),
    connections: intOption('connections', values.connections ?? env.BENCH_CONNECTIONS, 50, 1),
    pipelining: intOption('pipelining', values.pipelining ?? env.BENCH_PIPELINING, 1, 1),
    startupSamples: intOption(
      'startup-samples',
      values['startup-samples'] ?? env.BENCH_STARTUP_SAMPLES,
      3,
      1,
    ),
    idleMs: intOption('idle-ms', values['idle-ms'] ?? env.BENCH_IDLE_MS, 2000, 0),
    orchestraPath: values['orchestra-path'] ?? '/v1/whoami',
  };
}

// ---------------------------------------------------------------------------------------
// Child processes

interface Server {
  name: string;
  proc: ChildProcess;
  pid: number;
  url: string;
  /** ms from spawn to the "listening" log line. */
  listeningMs: number;
  /** Bytes written to stdout so far (Orchestra's JSON log). */
  stdoutBytes(): number;
}

let currentLoad: AutocannonInstance | undefined;
// The load stops first, then the servers, before their data dirs and databases go.
const processes = new Processes({
  stopTimeoutMs: 5_000,
  childrenFirst: true,
  first: () => currentLoad?.stop(),
});

function spawnServer(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  listeningMsg: string,
): Promise<Server> {
  const spawnedAt = performance.now();
  const { proc } = processes.spawn(args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let bytes = 0;
  let pending = '';
  let listening = false;
  const tail = stderrTail(proc);

  return new Promise<Server>((resolveStart, rejectStart) => {
    const timer = setTimeout(() => {
      rejectStart(new Error(`${name} did not log "${listeningMsg}" within ${START_TIMEOUT_MS} ms`));
    }, START_TIMEOUT_MS);
    proc.once('error', (err) => {
      clearTimeout(timer);
      rejectStart(err);
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!listening) {
        rejectStart(
          new Error(
            `${name} exited (${signal ?? code}) before listening:\n${tail() || '(no stderr)'}`,
          ),
        );
      }
    });
    proc.stdout?.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (listening) return; // drained, not kept: only its size is of interest
      pending += chunk.toString('utf8');
      let newline = pending.indexOf('\n');
      while (newline !== -1 && !listening) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        newline = pending.indexOf('\n');
        let entry: { msg?: unknown; url?: unknown };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          continue;
        }
        if (entry.msg === listeningMsg && typeof entry.url === 'string') {
          listening = true;
          pending = '';
          clearTimeout(timer);
          resolveStart({
            name,
            proc,
            pid: proc.pid ?? -1,
            url: entry.url,
            listeningMs: performance.now() - spawnedAt,
            stdoutBytes: () => bytes,
          });
        }
      }
    });
  }).then(
    (server) => server,
    async (err: unknown) => {
      await processes.stop(proc);
      throw err;
    },
  );
}

// ---------------------------------------------------------------------------------------
// Measurements

const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2;
}

/** VmRSS and VmHWM (peak) of a process in MiB, from /proc (Linux only). */
function memoryOf(pid: number): { rssMiB: number; peakRssMiB: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
    const rss = field('VmRSS');
    const hwm = field('VmHWM');
    return Number.isFinite(rss) ? { rssMiB: mib(rss), peakRssMiB: mib(hwm) } : null;
  } catch {
    return null;
  }
}

/**
 * CPU time used so far by every local process named `postgres` (the server and its
 * backends), in ms; null when there is none, such as a PostgreSQL on another host. Backends
 * that exit between two readings drop out, so only compare readings around one load run.
 */
function postgresCpuMs(): number | null {
  let total = 0;
  let found = false;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return null;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue;
    } catch {
      continue;
    }
    const ms = cpuMsOf(Number(entry));
    if (ms !== null) {
      total += ms;
      found = true;
    }
  }
  return found ? total : null;
}

async function firstOk(url: string, startedAt: number): Promise<number> {
  const deadline = performance.now() + START_TIMEOUT_MS;
  let last = '';
  while (performance.now() < deadline) {
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.status === 200) return performance.now() - startedAt;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(5);
  }
  throw new Error(`${url} did not answer 200 within ${START_TIMEOUT_MS} ms (last: ${last})`);
}

interface StartupSample {
  listeningMs: number;
  readyMs: number;
  idleRssMiB: number | null;
}

interface Started {
  server: Server;
  sample: StartupSample;
  /** Authorization header value, for Orchestra. */
  authorization?: string;
}

/** Starts Orchestra on a fresh data dir (and database), timed from spawn. */
async function startOrchestra(options: Options, sample: number, profile: boolean) {
  const dataDir = tempDir(processes, 'orchestra-bench-');
  const env = orchestraEnv(
    {
      ORCHESTRA_PORT: '0',
      ORCHESTRA_HOST: HOST,
      ORCHESTRA_DATA_DIR: dataDir,
      ORCHESTRA_LOG_LEVEL: 'info',
      ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
    },
    options.orchestraEnv,
  );
  if (options.store === 'postgres') {
    const name = `orchestra_bench_${process.pid}_${sample}_${Date.now().toString(36)}`;
    env.ORCHESTRA_DATABASE_URL = await throwawayDatabase(processes, options.postgresUrl, name);
  }
  const nodeArgs = profile ? profileArgs() : [];
  const startedAt = performance.now();
  const server = await spawnServer(
    'orchestra',
    [...nodeArgs, ORCHESTRA_MAIN, 'start'],
    env,
    'orchestra listening',
  );
  const readyMs = await firstOk(`${server.url}/readyz`, startedAt);
  const key = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();
  return { server, readyMs, authorization: `Bearer ${key}` };
}

async function startAnchor() {
  const startedAt = performance.now();
  const server = await spawnServer('anchor', [SELF, ANCHOR_FLAG], process.env, 'anchor listening');
  const readyMs = await firstOk(`${server.url}/`, startedAt);
  return { server, readyMs };
}

/**
 * Starts a server `samples` times; every start but the last is stopped again. The last one
 * is returned, still running, for the load runs.
 */
async function measureStartups(
  label: string,
  samples: number,
  idleMs: number,
  start: (i: number) => Promise<{ server: Server; readyMs: number; authorization?: string }>,
): Promise<{ started: Started; samples: StartupSample[] }> {
  const results: StartupSample[] = [];
  for (let i = 0; i < samples; i++) {
    const { server, readyMs, authorization } = await start(i);
    await sleep(idleMs);
    const sample: StartupSample = {
      listeningMs: round1(server.listeningMs),
      readyMs: round1(readyMs),
      idleRssMiB: memoryOf(server.pid)?.rssMiB ?? null,
    };
    results.push(sample);
    console.log(
      `  ${label} start-up ${i + 1}/${samples}: listening ${sample.listeningMs} ms, ` +
        `ready ${sample.readyMs} ms, idle RSS ${sample.idleRssMiB ?? '?'} MiB`,
    );
    if (i === samples - 1) {
      return {
        started: { server, sample, ...(authorization ? { authorization } : {}) },
        samples: results,
      };
    }
    await processes.stop(server.proc);
  }
  throw new Error('unreachable: at least one start-up sample');
}

interface LoadStats {
  rpsMean: number;
  rpsStddev: number;
  requests: number;
  durationSeconds: number;
  latencyMeanMs: number;
  latencyP50Ms: number;
  latencyP90Ms: number;
  latencyP99Ms: number;
  latencyMaxMs: number;
  throughputMiBps: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** CPU time the server process used, in % of one core (100 = one core busy). */
  serverCpuPercent: number | null;
  /** Server CPU time per request in microseconds: the cost, independent of the client. */
  serverCpuUsPerRequest: number | null;
  /** CPU the benchmark process (autocannon) used, in % of one core. */
  clientCpuPercent: number;
  /**
   * CPU time of the local PostgreSQL server processes per request, in microseconds; null
   * unless the run measures a PostgreSQL-backed server.
   */
  databaseCpuUsPerRequest: number | null;
  /** CPU time the hypervisor gave to other guests, in % of this machine's CPU time. */
  stealPercent: number | null;
}

async function load(
  label: string,
  url: string,
  headers: Record<string, string>,
  options: Options,
  seconds: number,
  serverPid: number,
  measureDatabase: boolean,
): Promise<LoadStats> {
  const databaseCpuBefore = measureDatabase ? postgresCpuMs() : null;
  const machineBefore = machineCpuTicks();
  const serverCpuBefore = cpuMsOf(serverPid);
  const clientCpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  currentLoad = autocannon({
    url,
    headers,
    connections: options.connections,
    pipelining: options.pipelining,
    duration: seconds,
    timeout: 10,
  });
  const r = await currentLoad;
  currentLoad = undefined;
  const wallMs = performance.now() - wallBefore;
  const serverCpuAfter = cpuMsOf(serverPid);
  const databaseCpuAfter = measureDatabase ? postgresCpuMs() : null;
  const machineAfter = machineCpuTicks();
  const clientCpu = process.cpuUsage(clientCpuBefore);
  const serverCpuMs =
    serverCpuBefore !== null && serverCpuAfter !== null ? serverCpuAfter - serverCpuBefore : null;
  const statusCodes = Object.fromEntries(
    Object.entries(r.statusCodeStats).map(([code, s]) => [code, s.count]),
  );
  const stats: LoadStats = {
    rpsMean: round1(r.requests.mean),
    rpsStddev: round1(r.requests.stddev),
    requests: r.requests.total,
    durationSeconds: r.duration,
    latencyMeanMs: round3(r.latency.mean),
    latencyP50Ms: r.latency.p50,
    latencyP90Ms: r.latency.p90,
    latencyP99Ms: r.latency.p99,
    latencyMaxMs: r.latency.max,
    throughputMiBps: round3(r.throughput.mean / 1024 / 1024),
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    statusCodes,
    serverCpuPercent: serverCpuMs === null ? null : round1((serverCpuMs / wallMs) * 100),
    serverCpuUsPerRequest:
      serverCpuMs === null || r.requests.total === 0
        ? null
        : round1((serverCpuMs * 1000) / r.requests.total),
    clientCpuPercent: round1(((clientCpu.user + clientCpu.system) / 1000 / wallMs) * 100),
    databaseCpuUsPerRequest:
      databaseCpuBefore === null || databaseCpuAfter === null || r.requests.total === 0
        ? null
        : round1(((databaseCpuAfter - databaseCpuBefore) * 1000) / r.requests.total),
    stealPercent:
      machineBefore === null || machineAfter === null
        ? null
        : round1(
            ((machineAfter.steal - machineBefore.steal) /
              Math.max(machineAfter.total - machineBefore.total, 1)) *
              100,
          ),
  };
  if (stats.non2xx !== 0 || stats.errors !== 0 || stats.timeouts !== 0 || stats.requests === 0) {
    throw new Error(
      `${label}: ${stats.non2xx} non-2xx responses, ${stats.errors} errors, ${stats.timeouts} ` +
        `timeouts in ${stats.requests} requests (status codes ${JSON.stringify(statusCodes)}). ` +
        'A run with failed requests measures the wrong thing; the benchmark stops here.',
    );
  }
  return stats;
}

async function sanityCheck(anchor: Started, orchestra: Started): Promise<void> {
  const hello = await fetch(`${anchor.server.url}/`).then((r) => r.json());
  if (JSON.stringify(hello) !== '{"hello":"world"}') {
    throw new Error(`anchor answered ${JSON.stringify(hello)}`);
  }
  const whoami = await fetch(`${orchestra.server.url}/v1/whoami`, {
    headers: { authorization: orchestra.authorization ?? '' },
  });
  const body = (await whoami.json()) as { role?: unknown };
  if (whoami.status !== 200 || body.role !== 'admin') {
    throw new Error(`GET /v1/whoami answered ${whoami.status} ${JSON.stringify(body)}`);
  }
  const anonymous = await fetch(`${orchestra.server.url}/v1/whoami`);
  await anonymous.arrayBuffer();
  if (anonymous.status !== 401) {
    throw new Error(`GET /v1/whoami without a key answered ${anonymous.status}, not 401`);
  }
}

// ---------------------------------------------------------------------------------------
// Reporting

function summarize(runs: LoadStats[]) {
  return {
    rpsMean: round1(mean(runs.map((r) => r.rpsMean))),
    latencyMeanMs: round3(mean(runs.map((r) => r.latencyMeanMs))),
    latencyP50Ms: round1(mean(runs.map((r) => r.latencyP50Ms))),
    latencyP99Ms: round1(mean(runs.map((r) => r.latencyP99Ms))),
    latencyP99MaxMs: Math.max(...runs.map((r) => r.latencyP99Ms)),
    requests: runs.reduce((a, r) => a + r.requests, 0),
    non2xx: runs.reduce((a, r) => a + r.non2xx, 0),
    serverCpuPercent: meanOrNull(runs.map((r) => r.serverCpuPercent)),
    serverCpuUsPerRequest: meanOrNull(runs.map((r) => r.serverCpuUsPerRequest)),
    clientCpuPercent: round1(mean(runs.map((r) => r.clientCpuPercent))),
    databaseCpuUsPerRequest: meanOrNull(runs.map((r) => r.databaseCpuUsPerRequest)),
    stealPercent: meanOrNull(runs.map((r) => r.stealPercent)),
  };
}

function startupSummary(samples: StartupSample[]) {
  const rss = samples.map((s) => s.idleRssMiB).filter((v): v is number => v !== null);
  return {
    listeningMsMedian: round1(median(samples.map((s) => s.listeningMs))),
    readyMsMedian: round1(median(samples.map((s) => s.readyMs))),
    idleRssMiBMedian: rss.length > 0 ? round1(median(rss)) : null,
  };
}

// ---------------------------------------------------------------------------------------

async function main(o: Options): Promise<number> {
  const loads = 2 * (o.warmupSeconds + o.rounds * o.durationSeconds);
  const startups = 2 * o.startupSamples * (o.idleMs / 1000 + 2);
  const expectedSeconds = Math.round(loads + startups + 4 * o.rounds * (SETTLE_MS / 1000));
  startWatchdog(processes, (expectedSeconds + 120) * 1000);

  const run = new RunRecord('http-auth', SELF);
  console.log(
    `http-auth benchmark: store ${o.store}, ${o.connections} connections, pipelining ` +
      `${o.pipelining}, ${o.rounds} rounds x ${o.durationSeconds} s after ${o.warmupSeconds} s ` +
      `warm-up; about ${expectedSeconds} s`,
  );
  console.log(run.machineLine());

  console.log('start-up (spawn to "listening" log line, spawn to first 200, RSS after idle):');
  const anchorStart = await measureStartups('anchor', o.startupSamples, o.idleMs, () =>
    startAnchor(),
  );
  const orchestraStart = await measureStartups('orchestra', o.startupSamples, o.idleMs, (i) =>
    startOrchestra(o, i, o.profile && i === o.startupSamples - 1),
  );
  const anchor = anchorStart.started;
  const orchestra = orchestraStart.started;
  await sanityCheck(anchor, orchestra);

  const targets = {
    anchor: {
      url: `${anchor.server.url}/`,
      headers: {} as Record<string, string>,
      pid: anchor.server.pid,
      measureDatabase: false,
    },
    orchestra: {
      url: `${orchestra.server.url}${o.orchestraPath}`,
      headers: { authorization: orchestra.authorization ?? '' },
      pid: orchestra.server.pid,
      measureDatabase: o.store === 'postgres',
    },
  };
  type Target = keyof typeof targets;

  // Orchestra's access log: bytes written per request it served under load.
  const logBytesAtStart = orchestra.server.stdoutBytes();
  let orchestraRequests = 0;
  const warmup: Partial<Record<Target, LoadStats>> = {};
  if (o.warmupSeconds > 0) {
    console.log(`\nwarm-up: ${o.warmupSeconds} s each`);
    for (const t of ['anchor', 'orchestra'] as Target[]) {
      const { url, headers, pid, measureDatabase } = targets[t];
      warmup[t] = await load(
        `${t} warm-up`,
        url,
        headers,
        o,
        o.warmupSeconds,
        pid,
        measureDatabase,
      );
    }
    orchestraRequests += warmup.orchestra?.requests ?? 0;
  }

  console.log(`\nmeasured runs: ${o.durationSeconds} s each, alternating`);
  const rounds: {
    round: number;
    order: Target[];
    anchor?: LoadStats;
    orchestra?: LoadStats;
    rpsRatio?: number;
  }[] = [];
  for (let i = 0; i < o.rounds; i++) {
    // ABBA order, so that a drift in machine load hits both servers alike.
    const order: Target[] = i % 2 === 0 ? ['anchor', 'orchestra'] : ['orchestra', 'anchor'];
    const round: (typeof rounds)[number] = { round: i + 1, order };
    for (const t of order) {
      await sleep(SETTLE_MS);
      const stats = await load(
        `${t} round ${i + 1}`,
        targets[t].url,
        targets[t].headers,
        o,
        o.durationSeconds,
        targets[t].pid,
        targets[t].measureDatabase,
      );
      console.log(
        `  round ${i + 1} ${t.padEnd(9)} ${stats.rpsMean.toFixed(0).padStart(7)} req/s  ` +
          `p50 ${stats.latencyP50Ms} ms  p99 ${stats.latencyP99Ms} ms  ` +
          `server CPU ${stats.serverCpuPercent ?? '?'}% (${stats.serverCpuUsPerRequest ?? '?'} µs/req)  ` +
          `client CPU ${stats.clientCpuPercent}%  steal ${stats.stealPercent ?? '?'}%` +
          (stats.databaseCpuUsPerRequest === null
            ? ''
            : `  postgres CPU ${stats.databaseCpuUsPerRequest} µs/req`),
      );
      if (t === 'orchestra') {
        round.orchestra = stats;
        orchestraRequests += stats.requests;
      } else {
        round.anchor = stats;
      }
    }
    if (round.anchor && round.orchestra) {
      round.rpsRatio = round3(round.orchestra.rpsMean / round.anchor.rpsMean);
    }
    rounds.push(round);
  }
  await sleep(SETTLE_MS); // let the last log lines arrive through the pipe
  const logBytesPerRequest = round1(
    (orchestra.server.stdoutBytes() - logBytesAtStart) / Math.max(orchestraRequests, 1),
  );

  const memoryAfterLoad = {
    anchor: memoryOf(anchor.server.pid),
    orchestra: memoryOf(orchestra.server.pid),
  };
  const anchorRuns = rounds.flatMap((r) => (r.anchor ? [r.anchor] : []));
  const orchestraRuns = rounds.flatMap((r) => (r.orchestra ? [r.orchestra] : []));
  const anchorLoad = summarize(anchorRuns);
  const orchestraLoad = summarize(orchestraRuns);
  const anchorStartup = startupSummary(anchorStart.samples);
  const orchestraStartup = startupSummary(orchestraStart.samples);
  const roundRatios = rounds.flatMap((r) => (r.rpsRatio === undefined ? [] : [r.rpsRatio]));
  const ratios = {
    rps: round3(orchestraLoad.rpsMean / anchorLoad.rpsMean),
    rpsPerRound: roundRatios,
    serverCpuPerRequest:
      orchestraLoad.serverCpuUsPerRequest !== null && anchorLoad.serverCpuUsPerRequest !== null
        ? round3(orchestraLoad.serverCpuUsPerRequest / anchorLoad.serverCpuUsPerRequest)
        : null,
    latencyP99: round3(orchestraLoad.latencyP99Ms / Math.max(anchorLoad.latencyP99Ms, 1)),
    startupListening: round3(orchestraStartup.listeningMsMedian / anchorStartup.listeningMsMedian),
    idleRss:
      orchestraStartup.idleRssMiBMedian !== null && anchorStartup.idleRssMiBMedian !== null
        ? round3(orchestraStartup.idleRssMiBMedian / anchorStartup.idleRssMiBMedian)
        : null,
  };

  console.log(
    `\nsummary (${o.store}; medians of ${o.startupSamples} start-ups, means of ${o.rounds} runs):`,
  );
  console.log(
    table(
      [
        '',
        'anchor (Fastify GET /)',
        `orchestra (GET ${o.orchestraPath}, ${o.store})`,
        'orchestra / anchor',
      ],
      [
        [
          'start-up to "listening" (ms)',
          anchorStartup.listeningMsMedian,
          orchestraStartup.listeningMsMedian,
          ratios.startupListening,
        ],
        [
          'start-up to first 200 (ms)',
          anchorStartup.readyMsMedian,
          orchestraStartup.readyMsMedian,
          round3(orchestraStartup.readyMsMedian / anchorStartup.readyMsMedian),
        ],
        [
          'idle RSS (MiB)',
          anchorStartup.idleRssMiBMedian ?? '?',
          orchestraStartup.idleRssMiBMedian ?? '?',
          ratios.idleRss ?? '?',
        ],
        ['requests/s (mean)', anchorLoad.rpsMean, orchestraLoad.rpsMean, ratios.rps],
        ['latency p50 (ms)', anchorLoad.latencyP50Ms, orchestraLoad.latencyP50Ms, ''],
        ['latency p99 (ms)', anchorLoad.latencyP99Ms, orchestraLoad.latencyP99Ms, ''],
        [
          'server CPU per request (µs)',
          anchorLoad.serverCpuUsPerRequest ?? '?',
          orchestraLoad.serverCpuUsPerRequest ?? '?',
          ratios.serverCpuPerRequest ?? '?',
        ],
        [
          'server CPU (% of a core)',
          anchorLoad.serverCpuPercent ?? '?',
          orchestraLoad.serverCpuPercent ?? '?',
          '',
        ],
        [
          'client CPU (% of a core)',
          anchorLoad.clientCpuPercent,
          orchestraLoad.clientCpuPercent,
          '',
        ],
        ...(orchestraLoad.databaseCpuUsPerRequest === null
          ? []
          : [['PostgreSQL CPU per request (µs)', '', orchestraLoad.databaseCpuUsPerRequest, '']]),
        [
          'RSS after load (MiB)',
          memoryAfterLoad.anchor?.rssMiB ?? '?',
          memoryAfterLoad.orchestra?.rssMiB ?? '?',
          '',
        ],
        ['access log (bytes per request)', 0, logBytesPerRequest, ''],
        [
          'CPU steal during runs (%)',
          anchorLoad.stealPercent ?? '?',
          orchestraLoad.stealPercent ?? '?',
          '',
        ],
        ['non-2xx responses', anchorLoad.non2xx, orchestraLoad.non2xx, ''],
      ],
    ),
  );
  console.log(
    `\nratio orchestra_rps / anchor_rps = ${ratios.rps} (per round: ${roundRatios.join(', ')})`,
  );

  const file = run.write(o, {
    parameters: {
      host: HOST,
      durationSeconds: o.durationSeconds,
      warmupSeconds: o.warmupSeconds,
      connections: o.connections,
      pipelining: o.pipelining,
      rounds: o.rounds,
      roundOrder: 'ABBA (anchor first in odd rounds, Orchestra first in even rounds)',
      startupSamples: o.startupSamples,
      idleMs: o.idleMs,
      profiled: o.profile,
      orchestraPath: o.orchestraPath,
      orchestraExtraEnv: o.orchestraEnv,
      anchor: 'Fastify 5 hello-world in a child process: GET / -> {"hello":"world"}, logger off',
      orchestra:
        `node packages/server/src/cli/main.ts start; GET ${o.orchestraPath} with the admin key; ` +
        'ORCHESTRA_LOG_LEVEL=info (stdout drained), ORCHESTRA_RATE_LIMIT_PER_SECOND=0, fresh data dir',
      client: 'autocannon 9, programmatic API, in the benchmark process',
    },
    startup: {
      anchor: { ...anchorStartup, samples: anchorStart.samples },
      orchestra: { ...orchestraStartup, samples: orchestraStart.samples },
    },
    load: {
      anchor: anchorLoad,
      orchestra: { ...orchestraLoad, logBytesPerRequest },
      rounds,
      warmup,
    },
    memoryAfterLoad,
    ratios,
  });
  console.log(`result: ${file}`);
  if (o.profile) console.log(`CPU profile of Orchestra: ${PROFILE_DIR}`);
  return 0;
}

if (process.argv[2] === ANCHOR_FLAG) {
  await serveAnchor();
} else {
  await runBenchmark({ script: SELF, processes, stopping: 'the servers', readOptions, main });
}
