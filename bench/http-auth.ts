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
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ANCHOR_FLAG = '--serve-anchor';
const HOST = '127.0.0.1';
const REPO_ROOT = resolve(import.meta.dirname, '..');
const SELF = import.meta.filename;
const ORCHESTRA_MAIN = join(REPO_ROOT, 'packages/server/src/cli/main.ts');
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;
const SETTLE_MS = 1_000;

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

interface Options {
  store: 'sqlite' | 'postgres';
  postgresUrl: string;
  durationSeconds: number;
  warmupSeconds: number;
  connections: number;
  pipelining: number;
  rounds: number;
  startupSamples: number;
  idleMs: number;
  outDir: string;
  profile: boolean;
  orchestraPath: string;
  orchestraEnv: Record<string, string>;
}

function readOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      postgres: { type: 'boolean' },
      'postgres-url': { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      pipelining: { type: 'string' },
      rounds: { type: 'string' },
      'startup-samples': { type: 'string' },
      'idle-ms': { type: 'string' },
      'out-dir': { type: 'string' },
      profile: { type: 'boolean' },
      'orchestra-path': { type: 'string' },
      'orchestra-env': { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return undefined;
  }
  const env = process.env;
  const int = (flag: string, raw: string | undefined, fallback: number, min: number) => {
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${flag} must be an integer >= ${min}, got "${raw}"`);
    }
    return n;
  };
  const postgres = values.postgres ?? /^(1|true|yes|on)$/i.test(env.BENCH_POSTGRES ?? '');
  return {
    store: postgres ? 'postgres' : 'sqlite',
    postgresUrl:
      values['postgres-url'] ??
      env.BENCH_POSTGRES_URL ??
      `postgres://postgres@${HOST}:5432/postgres`,
    durationSeconds: int('duration', values.duration ?? env.BENCH_DURATION, 10, 1),
    warmupSeconds: int('warmup', values.warmup ?? env.BENCH_WARMUP, 3, 0),
    connections: int('connections', values.connections ?? env.BENCH_CONNECTIONS, 50, 1),
    pipelining: int('pipelining', values.pipelining ?? env.BENCH_PIPELINING, 1, 1),
    rounds: int('rounds', values.rounds ?? env.BENCH_ROUNDS, 2, 1),
    startupSamples: int(
      'startup-samples',
      values['startup-samples'] ?? env.BENCH_STARTUP_SAMPLES,
      3,
      1,
    ),
    idleMs: int('idle-ms', values['idle-ms'] ?? env.BENCH_IDLE_MS, 2000, 0),
    outDir: resolve(values['out-dir'] ?? env.BENCH_OUT_DIR ?? join(REPO_ROOT, 'bench/results')),
    profile: values.profile ?? false,
    orchestraPath: values['orchestra-path'] ?? '/v1/whoami',
    orchestraEnv: Object.fromEntries(
      (values['orchestra-env'] ?? []).map((pair) => {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new Error(`--orchestra-env must be NAME=VALUE, got "${pair}"`);
        return [pair.slice(0, eq), pair.slice(eq + 1)];
      }),
    ),
  };
}

// ---------------------------------------------------------------------------------------
// Child processes. Every child is tracked so that every exit path can kill it.

interface Server {
  name: string;
  proc: ChildProcess;
  pid: number;
  url: string;
  /** ms from spawn to the "listening" log line. */
  listeningMs: number;
  /** Bytes written to stdout so far (Orchestra's JSON log). */
  stdoutBytes(): number;
  exited: Promise<void>;
}

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void> | void)[] = [];
let currentLoad: AutocannonInstance | undefined;
let cleaning: Promise<void> | undefined;

function spawnServer(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  listeningMsg: string,
): Promise<Server> {
  if (cleaning) return Promise.reject(new Error('interrupted'));
  const spawnedAt = performance.now();
  const proc = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const exited = new Promise<void>((done) => {
    proc.once('exit', () => {
      children.delete(proc);
      done();
    });
  });
  let bytes = 0;
  let pending = '';
  let listening = false;
  let stderrTail = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
  });
  // The secret of a throwaway instance, but still: never print a key.
  const tail = () => stderrTail.replace(/ork_\w+/g, 'ork_…').trim();

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
            exited,
          });
        }
      }
    });
  }).then(
    (server) => server,
    async (err: unknown) => {
      await stopProcess(proc, exited);
      throw err;
    },
  );
}

async function stopProcess(proc: ChildProcess, exited: Promise<void>): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((done) => {
    timer = setTimeout(() => done('timeout'), STOP_TIMEOUT_MS);
  });
  if ((await Promise.race([exited, timeout])) === 'timeout') {
    proc.kill('SIGKILL');
    await exited;
  }
  clearTimeout(timer);
}

/** Stops the load, kills every child, drops databases, removes temp dirs. Idempotent. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    currentLoad?.stop();
    for (const proc of [...children]) {
      const exited = new Promise<void>((done) => proc.once('exit', () => done()));
      await stopProcess(proc, exited);
    }
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`bench: cleanup step failed: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

// ---------------------------------------------------------------------------------------
// Measurements

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));
const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;
const round1 = (n: number) => Math.round(n * 10) / 10;
const round3 = (n: number) => Math.round(n * 1000) / 1000;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2;
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

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

const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time a process has used so far, in ms, from /proc (Linux only). */
function cpuMsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses: state is field 3, utime 14.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? (ticks * 1000) / CLOCK_TICKS_PER_SECOND : null;
  } catch {
    return null;
  }
}

/** Total and steal CPU ticks of the machine, from /proc/stat (Linux only). */
function machineCpuTicks(): { total: number; steal: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (ticks.length < 8 || ticks.some((t) => !Number.isFinite(t))) return null;
    return { total: ticks.reduce((a, b) => a + b, 0), steal: ticks[7] ?? 0 };
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

async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`create database "${name}"`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`drop database if exists "${name}" with (force)`);
  } finally {
    await client.end();
  }
}

/** Starts Orchestra on a fresh data dir (and database), timed from spawn. */
async function startOrchestra(options: Options, sample: number, profile: boolean) {
  const dataDir = mkdtempSync(join(os.tmpdir(), 'orchestra-bench-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ORCHESTRA_')) env[k] = v;
  Object.assign(env, {
    ORCHESTRA_PORT: '0',
    ORCHESTRA_HOST: HOST,
    ORCHESTRA_DATA_DIR: dataDir,
    ORCHESTRA_LOG_LEVEL: 'info',
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
  });
  Object.assign(env, options.orchestraEnv);
  if (options.store === 'postgres') {
    const name = `orchestra_bench_${process.pid}_${sample}_${Date.now().toString(36)}`;
    env.ORCHESTRA_DATABASE_URL = await createDatabase(options.postgresUrl, name);
    cleanups.push(() => dropDatabase(options.postgresUrl, name));
  }
  const nodeArgs = profile
    ? ['--cpu-prof', `--cpu-prof-dir=${join(REPO_ROOT, 'bench/.scratch/profiles')}`]
    : [];
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
    await stopProcess(server.proc, server.exited);
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

function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)]
    .map((l) => `  ${l}`)
    .join('\n');
}

/** The code under test: HEAD and the files that differ from it, when the run starts. */
function gitInfo(): { commit: string | null; dirty: boolean | null; changedFiles: string[] } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
    const changedFiles = status
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => l.slice(3));
    return { commit: commit.trim(), dirty: changedFiles.length > 0, changedFiles };
  } catch {
    return { commit: null, dirty: null, changedFiles: [] };
  }
}

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

function meanOrNull(values: (number | null)[]): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === values.length && known.length > 0 ? round1(mean(known)) : null;
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

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = readOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`error: ${(err as Error).message}\nRun "node bench/http-auth.ts --help".`);
    return 2;
  }
  if (options === undefined) return 0;
  const o = options;

  const loads = 2 * (o.warmupSeconds + o.rounds * o.durationSeconds);
  const startups = 2 * o.startupSamples * (o.idleMs / 1000 + 2);
  const expectedSeconds = Math.round(loads + startups + 4 * o.rounds * (SETTLE_MS / 1000));
  // A hard bound: whatever hangs, the run ends and its children die.
  const budgetMs = (expectedSeconds + 120) * 1000;
  const watchdog = setTimeout(() => {
    console.error(`bench: still running after ${budgetMs / 1000} s; giving up`);
    void cleanup().finally(() => process.exit(1));
  }, budgetMs);
  watchdog.unref();

  const startedAt = new Date();
  const git = gitInfo();
  const loadavgAtStart = os.loadavg().map(round3);
  const cpus = os.cpus();
  console.log(
    `http-auth benchmark: store ${o.store}, ${o.connections} connections, pipelining ` +
      `${o.pipelining}, ${o.rounds} rounds x ${o.durationSeconds} s after ${o.warmupSeconds} s ` +
      `warm-up; about ${expectedSeconds} s`,
  );
  console.log(
    `machine: ${cpus.length} x ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}, load average ` +
      `${loadavgAtStart.join(' ')}\n`,
  );

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

  const result = {
    benchmark: 'http-auth',
    schemaVersion: 1,
    store: o.store,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: ['node', relative(REPO_ROOT, SELF), ...process.argv.slice(2)].join(' '),
    git,
    machine: {
      cpuModel: cpus[0]?.model ?? null,
      cpuCount: cpus.length,
      totalMemoryMiB: Math.round(os.totalmem() / 2 ** 20),
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      loadavgAtStart,
      loadavgAtEnd: os.loadavg().map(round3),
    },
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
  };
  mkdirSync(o.outDir, { recursive: true });
  const file = join(o.outDir, `http-auth-${o.store}-${startedAt.toISOString().slice(0, 10)}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`result: ${relative(process.cwd(), file)}`);
  if (o.profile) {
    console.log(`CPU profile of Orchestra: ${join(REPO_ROOT, 'bench/.scratch/profiles')}`);
  }
  return 0;
}

if (process.argv[2] === ANCHOR_FLAG) {
  await serveAnchor();
} else {
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${signal}; stopping the servers`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Last resort if something calls process.exit() before cleanup finished.
  process.on('exit', () => {
    for (const proc of children) proc.kill('SIGKILL');
  });
  let code = 1;
  try {
    code = await main();
  } catch (err) {
    console.error(`\nbench failed: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await cleanup();
  }
  process.exit(code);
}
