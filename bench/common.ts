/**
 * What the benchmarks in bench/ share: the common options, child processes and their
 * cleanup, readings from /proc, statistics, the throwaway PostgreSQL database and the result
 * file. The benchmarks' child processes load it too (the anchor's start-up is measured), so
 * at import time it does no more than define things and read CLK_TCK once.
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';
import type { Client } from 'pg';
import { requestText } from '../packages/server/src/platform/http-request.ts';

export const HOST = '127.0.0.1';
export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const ORCHESTRA_MAIN = join(REPO_ROOT, 'packages/server/src/cli/main.ts');
export const PROFILE_DIR = join(REPO_ROOT, 'bench/.scratch/profiles');
export const START_TIMEOUT_MS = 60_000;
export const SETTLE_MS = 1_000;

export const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));
export const round1 = (n: number) => Math.round(n * 10) / 10;
export const round3 = (n: number) => Math.round(n * 1000) / 1000;
export const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

/** The middle value (the mean of the two middle ones for an even count); 0 for none. */
/** The nearest-rank percentile `p` of ascending `sorted` values; null for none. */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? null;
}

/** Latencies as the instance benchmarks report them: count, p50/p95/p99 and max (ms, 0.1). */
export interface LatencySummary {
  samples: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

export function latencySummary(values: number[]): LatencySummary {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => {
    const value = percentile(sorted, p);
    return value === null ? null : round1(value);
  };
  return { samples: sorted.length, p50: at(50), p95: at(95), p99: at(99), max: at(100) };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The mean, or null if any value is unknown. */
export function meanOrNull(values: (number | null)[]): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === values.length && known.length > 0 ? round1(mean(known)) : null;
}

// ---------------------------------------------------------------------------------------
// Options every benchmark takes (each HELP describes them)

const COMMON_ARGS = {
  postgres: { type: 'boolean' },
  'postgres-url': { type: 'string' },
  duration: { type: 'string' },
  rounds: { type: 'string' },
  'out-dir': { type: 'string' },
  profile: { type: 'boolean' },
  'orchestra-env': { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * The command line with these options and the common ones; undefined after printing `help`
 * for --help.
 */
export function parseOptions<T extends ParseArgsOptionsConfig>(
  argv: string[],
  help: string,
  options: T,
) {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON_ARGS, ...options },
    strict: true,
    allowPositionals: false,
  });
  // COMMON_ARGS has --help; with `options` still generic, TypeScript cannot see that here.
  if ((values as { help?: boolean }).help) {
    process.stdout.write(`${help}\n`);
    return undefined;
  }
  return values;
}

export interface CommonOptions {
  store: 'sqlite' | 'postgres';
  postgresUrl: string;
  /** Seconds of each measured run (of the fixed-rate ones in dispatch). */
  durationSeconds: number;
  /** Measured rounds, alternating between Orchestra and the anchor. */
  rounds: number;
  outDir: string;
  profile: boolean;
  orchestraEnv: Record<string, string>;
}

export function commonOptions(values: {
  postgres?: boolean | undefined;
  'postgres-url'?: string | undefined;
  duration?: string | undefined;
  rounds?: string | undefined;
  'out-dir'?: string | undefined;
  profile?: boolean | undefined;
  'orchestra-env'?: string[] | undefined;
}): CommonOptions {
  const env = process.env;
  return {
    store: (values.postgres ?? envFlag(env.BENCH_POSTGRES)) ? 'postgres' : 'sqlite',
    postgresUrl:
      values['postgres-url'] ??
      env.BENCH_POSTGRES_URL ??
      `postgres://postgres@${HOST}:5432/postgres`,
    durationSeconds: intOption('duration', values.duration ?? env.BENCH_DURATION, 10, 1),
    rounds: intOption('rounds', values.rounds ?? env.BENCH_ROUNDS, 2, 1),
    outDir: resolve(values['out-dir'] ?? env.BENCH_OUT_DIR ?? join(REPO_ROOT, 'bench/results')),
    profile: values.profile ?? false,
    orchestraEnv: Object.fromEntries(
      (values['orchestra-env'] ?? []).map((pair) => {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new Error(`--orchestra-env must be NAME=VALUE, got "${pair}"`);
        return [pair.slice(0, eq), pair.slice(eq + 1)];
      }),
    ),
  };
}

/** A switch in the environment, such as BENCH_POSTGRES=1. */
export const envFlag = (raw: string | undefined) => /^(1|true|yes|on)$/i.test(raw ?? '');

/** `raw` (the flag's value, else its environment variable) as an integer >= `min`. */
export function intOption(flag: string, raw: string | undefined, fallback: number, min: number) {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`--${flag} must be an integer >= ${min}, got "${raw}"`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// Child processes. Every child is tracked so that every exit path can stop it.

type CleanupStep = () => Promise<void> | void;

export class Processes {
  readonly #children = new Set<ChildProcess>();
  readonly #steps: CleanupStep[] = [];
  readonly #stopTimeoutMs: number;
  readonly #childrenFirst: boolean;
  readonly #first: (() => void) | undefined;
  #cleaning: Promise<void> | undefined;

  /**
   * `stopTimeoutMs`: how long a child has after SIGTERM before SIGKILL. `childrenFirst`:
   * stop the children before the cleanup steps (servers before their data goes), instead of
   * leaving it to the steps to stop them in order. `first`: runs before anything else.
   */
  constructor(options: { stopTimeoutMs: number; childrenFirst: boolean; first?: () => void }) {
    this.#stopTimeoutMs = options.stopTimeoutMs;
    this.#childrenFirst = options.childrenFirst;
    this.#first = options.first;
  }

  /** `node args` in the repository root; refused once the cleanup has begun. */
  spawn(args: string[], options: SpawnOptions): { proc: ChildProcess; exited: Promise<void> } {
    if (this.#cleaning) throw new Error('interrupted');
    const proc = spawn(process.execPath, args, { cwd: REPO_ROOT, ...options });
    this.#children.add(proc);
    const exited = new Promise<void>((done) => {
      proc.once('exit', () => {
        this.#children.delete(proc);
        done();
      });
    });
    return { proc, exited };
  }

  /** SIGTERM, then SIGKILL if the process has not exited in time. */
  async stop(proc: ChildProcess): Promise<void> {
    const exited = exitOf(proc);
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((done) => {
      timer = setTimeout(() => done('timeout'), this.#stopTimeoutMs);
    });
    if ((await Promise.race([exited, timeout])) === 'timeout') {
      proc.kill('SIGKILL');
      await exited;
    }
    clearTimeout(timer);
  }

  /** A step of the cleanup (database, directory, keys); the steps run last first. */
  onCleanup(step: CleanupStep): void {
    this.#steps.push(step);
  }

  /** Stops every child and runs the cleanup steps. Idempotent. */
  cleanup(): Promise<void> {
    this.#cleaning ??= (async () => {
      this.#first?.();
      if (this.#childrenFirst) await this.#stopChildren();
      for (const fn of this.#steps.splice(0).reverse()) {
        try {
          await fn();
        } catch (err) {
          console.error(`bench: cleanup step failed: ${(err as Error).message}`);
        }
      }
      await this.#stopChildren();
    })();
    return this.#cleaning;
  }

  /** Last resort if something calls process.exit() before cleanup finished. */
  killAll(): void {
    for (const proc of this.#children) proc.kill('SIGKILL');
  }

  async #stopChildren(): Promise<void> {
    for (const proc of [...this.#children]) await this.stop(proc);
  }
}

export function exitOf(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise<void>((done) => proc.once('exit', () => done()));
}

/** The secret of a throwaway instance, but still: never print a key. */
export const redactKeys = (text: string) => text.replace(/ork_\w+/g, 'ork_…');

/** Keeps the end of a child's stderr, for the error when it fails; keys redacted. */
export function stderrTail(proc: ChildProcess): () => string {
  let tail = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-4000);
  });
  return () => redactKeys(tail).trim();
}

/** Node options that write a CPU profile (named after `name`, if given) when it exits. */
export function profileArgs(name?: string): string[] {
  return [
    '--cpu-prof',
    `--cpu-prof-dir=${PROFILE_DIR}`,
    ...(name === undefined ? [] : [`--cpu-prof-name=${name}-${process.pid}.cpuprofile`]),
  ];
}

/** A directory removed at cleanup. */
export function tempDir(processes: Processes, prefix: string): string {
  const dir = mkdtempSync(join(os.tmpdir(), prefix));
  processes.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Orchestra's environment: ours without ORCHESTRA_*, then `settings`, then --orchestra-env. */
export function orchestraEnv(
  settings: Record<string, string>,
  extra: Record<string, string>,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ORCHESTRA_')) env[k] = v;
  return Object.assign(env, settings, extra);
}

/**
 * Runs a benchmark: reads its options (exit code 2 if they are wrong, 0 after --help), then
 * `main`, and on every way out (the end, an error, a signal) stops what it started.
 */
export async function runBenchmark<O>(run: {
  script: string;
  processes: Processes;
  /** What a signal stops, for its message. */
  stopping: string;
  readOptions: (argv: string[]) => O | undefined;
  main: (options: O) => Promise<number>;
}): Promise<never> {
  const { processes } = run;
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${signal}; stopping ${run.stopping}`);
    void processes.cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => processes.killAll());
  const start = async (): Promise<number> => {
    let options: O | undefined;
    try {
      options = run.readOptions(process.argv.slice(2));
    } catch (err) {
      console.error(
        `error: ${(err as Error).message}\nRun "node ${relative(REPO_ROOT, run.script)} --help".`,
      );
      return 2;
    }
    return options === undefined ? 0 : run.main(options);
  };
  let code = 1;
  try {
    code = await start();
  } catch (err) {
    console.error(`\nbench failed: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await processes.cleanup();
  }
  process.exit(code);
}

/** A hard bound: whatever hangs, the run ends and its children die. */
export function startWatchdog(processes: Processes, budgetMs: number): void {
  const watchdog = setTimeout(() => {
    console.error(`bench: still running after ${budgetMs / 1000} s; giving up`);
    void processes.cleanup().finally(() => process.exit(1));
  }, budgetMs);
  watchdog.unref();
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/** `fn` on a connection of its own, closed afterwards. */
export async function withPostgres<T>(url: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates the database `name`, dropped at cleanup; returns its URL. */
export async function throwawayDatabase(
  processes: Processes,
  adminUrl: string,
  name: string,
): Promise<string> {
  await withPostgres(adminUrl, (client) => client.query(`create database "${name}"`));
  processes.onCleanup(() => dropDatabase(adminUrl, name));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops a throwaway database now (its cleanup step then finds nothing to do). */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withPostgres(adminUrl, (client) =>
    client.query(`drop database if exists "${name}" with (force)`),
  );
}

// ---------------------------------------------------------------------------------------
// CPU readings (Linux /proc)

const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time a process has used so far, in ms. */
export function cpuMsOf(pid: number): number | null {
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

/** Total, idle (+iowait) and steal CPU ticks of the machine. */
export function machineCpuTicks(): { total: number; idle: number; steal: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (ticks.length < 8 || ticks.some((t) => !Number.isFinite(t))) return null;
    return {
      total: ticks.reduce((a, b) => a + b, 0),
      idle: (ticks[3] ?? 0) + (ticks[4] ?? 0),
      steal: ticks[7] ?? 0,
    };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Reporting

/** A whole number with thousands separators; "?" for none. */
export const n0 = (n: number | null | undefined) =>
  n === null || n === undefined ? '?' : Math.round(n).toLocaleString('en-US');
/** Two decimals; "?" for none. */
export const f2 = (n: number | null | undefined) =>
  n === null || n === undefined ? '?' : n.toFixed(2);

/** a / b to three decimals; null when either is unknown or b is 0. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || b === null || b === undefined || b === 0
    ? null
    : round3(a / b);
}

/** The version of an installed package, from node_modules; null if it is not there. */
export function packageVersion(name: string): string | null {
  try {
    const pkg = readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8');
    return (JSON.parse(pkg) as { version?: string }).version ?? null;
  } catch {
    return null;
  }
}

export function table(header: string[], rows: (string | number)[][]): string {
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

/** What a result says about its run: when, which code, on what machine. Taken at the start. */
export class RunRecord {
  readonly startedAt = new Date();
  readonly git = gitInfo();
  readonly loadavgAtStart = os.loadavg().map(round3);
  readonly cpus = os.cpus();
  readonly #benchmark: string;
  readonly #script: string;

  constructor(benchmark: string, script: string) {
    this.#benchmark = benchmark;
    this.#script = script;
  }

  machineLine(): string {
    return (
      `machine: ${this.cpus.length} x ${this.cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}, load average ` +
      `${this.loadavgAtStart.join(' ')}\n`
    );
  }

  /**
   * Writes <out-dir>/<benchmark>-<store>[-<variant>]-<date>.json: this record, then `body`.
   * Returns the file's path relative to the working directory.
   */
  write(o: CommonOptions, body: Record<string, unknown>, variant?: string): string {
    const result = {
      benchmark: this.#benchmark,
      schemaVersion: 1,
      store: o.store,
      startedAt: this.startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      command: ['node', relative(REPO_ROOT, this.#script), ...process.argv.slice(2)].join(' '),
      git: this.git,
      machine: {
        cpuModel: this.cpus[0]?.model ?? null,
        cpuCount: this.cpus.length,
        totalMemoryMiB: Math.round(os.totalmem() / 2 ** 20),
        node: process.version,
        platform: `${os.platform()} ${os.release()} ${os.arch()}`,
        loadavgAtStart: this.loadavgAtStart,
        loadavgAtEnd: os.loadavg().map(round3),
      },
      ...body,
    };
    mkdirSync(o.outDir, { recursive: true });
    const date = this.startedAt.toISOString().slice(0, 10);
    const name = [this.#benchmark, o.store, ...(variant ? [variant] : []), date].join('-');
    const file = join(o.outDir, `${name}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    return relative(process.cwd(), file);
  }
}

/** What a load process answers on its IPC channel (id 0: ready). */
export interface LoadReply {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/**
 * A load process (a benchmark's `load.ts`), driven over IPC: each request gets the answer
 * with its id, or an error when the process exits or does not answer in time.
 */
export class LoadProcess<Request extends { type: string }> {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly stderr: () => string;
  readonly ready: Promise<void>;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  #nextId = 1;

  readonly #processes: Processes;
  readonly #requestTimeoutMs: number;
  readonly #stopTimeoutMs: number;

  constructor(options: {
    processes: Processes;
    script: string;
    name: string;
    nodeArgs?: string[];
    /** Arguments after the script. */
    args?: string[];
    /** Added to this process's environment. */
    env?: Record<string, string>;
    requestTimeoutMs?: number;
    stopTimeoutMs?: number;
  }) {
    const { processes, script, name, nodeArgs = [], args = [] } = options;
    this.#processes = processes;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
    this.name = name;
    this.proc = processes.spawn([...nodeArgs, script, ...args], {
      ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    }).proc;
    this.pid = this.proc.pid ?? -1;
    this.stderr = stderrTail(this.proc);
    this.ready = this.#reply(0, START_TIMEOUT_MS, `${name} was not ready in time`);
    this.ready.catch(() => undefined);
    this.proc.on('message', (reply: LoadReply) => {
      const waiter = this.#pending.get(reply.id);
      if (waiter === undefined) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(new Error(`${name}: ${reply.error}`));
    });
    this.proc.once('exit', (code, signal) => {
      for (const waiter of this.#pending.values()) {
        waiter.reject(
          new Error(`${name} exited (${signal ?? code}): ${this.stderr() || '(no stderr)'}`),
        );
      }
      this.#pending.clear();
    });
  }

  request<T>(request: Request, timeoutMs = this.#requestTimeoutMs): Promise<T> {
    const id = this.#nextId++;
    const reply = this.#reply<T>(id, timeoutMs, `${this.name}: no answer to ${request.type}`);
    this.proc.send({ id, request });
    return reply;
  }

  #reply<T>(id: number, timeoutMs: number, timeoutMessage: string): Promise<T> {
    return new Promise<T>((resolveReply, rejectReply) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        rejectReply(new Error(`${timeoutMessage} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolveReply(value as T);
        },
        reject: (err) => {
          clearTimeout(timer);
          rejectReply(err);
        },
      });
    });
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = exitOf(this.proc);
    await this.request({ type: 'stop' } as Request, this.#stopTimeoutMs).catch(() => undefined);
    await Promise.race([exited, new Promise((r) => setTimeout(r, this.#stopTimeoutMs))]);
    await this.#processes.stop(this.proc);
  }
}

/** A free TCP port on the loopback address. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, rejectPort) => {
    const server = createServer();
    server.once('error', rejectPort);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** An `orchestra start` process the benchmark started, ready to serve. */
export interface OrchestraNode {
  proc: ChildProcess;
  pid: number;
  port: number;
  url: string;
  dataDir: string;
  /** The admin key the node created, or null when it joined an existing database. */
  adminKey: string | null;
  /** Log lines at warn level or above (the node runs with ORCHESTRA_LOG_LEVEL=warn). */
  warnings(): { count: number; last: string[] };
}

/**
 * Starts Orchestra as it is deployed, on a free port and a fresh data directory, with
 * `settings` (then the user's --orchestra-env) in its environment, and waits for /readyz.
 * Stopped at cleanup before its data directory goes (cleanups run last first), so that its
 * CPU profile, with `profileName`, is written.
 */
export async function startOrchestraNode(
  processes: Processes,
  options: {
    name: string;
    settings: Record<string, string>;
    orchestraEnv: Record<string, string>;
    profileName?: string | undefined;
  },
): Promise<OrchestraNode> {
  const dataDir = tempDir(processes, `orchestra-bench-${options.name}-`);
  const port = await freePort();
  const env = orchestraEnv(
    {
      ORCHESTRA_PORT: String(port),
      ORCHESTRA_HOST: HOST,
      ORCHESTRA_DATA_DIR: dataDir,
      ORCHESTRA_LOG_LEVEL: 'warn',
      ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
      ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS: '0',
      ...options.settings,
    },
    options.orchestraEnv,
  );
  const nodeArgs = options.profileName ? profileArgs(options.profileName) : [];
  const { proc } = processes.spawn([...nodeArgs, ORCHESTRA_MAIN, 'start'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  processes.onCleanup(() => processes.stop(proc));
  let warnCount = 0;
  const lastWarnings: string[] = [];
  let pending = '';
  proc.stdout?.setEncoding('utf8');
  proc.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf('\n');
    while (newline !== -1) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
      if (line === '' || !line.startsWith('{')) continue;
      warnCount += 1;
      lastWarnings.push(redactKeys(line).slice(0, 600));
      if (lastWarnings.length > 5) lastWarnings.shift();
    }
  });
  const stderr = stderrTail(proc);
  const url = `http://${HOST}:${port}`;
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(
        `Orchestra (${options.name}) exited (${proc.signalCode ?? proc.exitCode}) before it ` +
          `was ready:\n${stderr() || '(no stderr)'}`,
      );
    }
    if (performance.now() > deadline) throw new Error(`${url}/readyz: no 200 within 60 s`);
    const status = await fetch(`${url}/readyz`).then(
      async (r) => {
        await r.arrayBuffer();
        return r.status;
      },
      () => 0,
    );
    if (status === 200) break;
    await sleep(50);
  }
  let adminKey: string | null = null;
  try {
    adminKey = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();
  } catch {
    // A node that joined a database another node set up has no key of its own.
  }
  return {
    proc,
    pid: proc.pid ?? -1,
    port,
    url,
    dataDir,
    adminKey,
    warnings: () => ({ count: warnCount, last: [...lastWarnings] }),
  };
}

/** A node's admin key, which only the node that created the database has. */
export function adminKeyOf(node: OrchestraNode): string {
  if (node.adminKey === null) throw new Error(`${node.url}: no admin-key file in its data dir`);
  return node.adminKey;
}

/**
 * The child side of `LoadProcess`: answers each request with `handle`, says it is ready,
 * and exits when the benchmark goes away, whatever happens to it.
 */
export function serveLoadRequests<Request>(handle: (request: Request) => Promise<unknown>): void {
  process.on('disconnect', () => process.exit(0));
  process.on('SIGINT', () => undefined); // the benchmark stops its children itself
  process.on('message', (message: { id: number; request: Request }) => {
    void (async () => {
      let reply: LoadReply;
      try {
        reply = { id: message.id, ok: true, value: await handle(message.request) };
      } catch (err) {
        reply = { id: message.id, ok: false, error: (err as Error).stack ?? String(err) };
      }
      process.send?.(reply);
    })();
  });
  process.send?.({ id: 0, ok: true, value: 'ready' } satisfies LoadReply);
}

// ---------------------------------------------------------------------------------------
// Workspace instances (bench/instances.ts, bench/instances-docker.ts)

/** VmRSS of a process in bytes, from /proc; null if it is gone. */
export function vmRssBytes(pid: number): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}

/**
 * The instance benchmarks' repository base: `files` small TypeScript files, 100 to a folder,
 * committed once on `main` in a new git repository at `dir`. Settled when it returns: the
 * automatic `git gc` that so many loose objects set off runs before, not behind, the caller.
 */
export function makeGitRepository(dir: string, files: number): void {
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `pkg${Math.floor(i / 100)}`);
    if (i % 100 === 0) mkdirSync(sub, { recursive: true });
    writeFileSync(
      join(sub, `file${i}.ts`),
      `export const value${i} = ${i};\n// ${'x'.repeat(i % 200)}\n`,
    );
  }
  const settings = ['user.name=b', 'user.email=b@b', 'gc.autoDetach=false'];
  const git = (...args: string[]) =>
    execFileSync('git', ['-C', dir, ...settings.flatMap((s) => ['-c', s]), ...args], {
      stdio: 'ignore',
    });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-q', '-m', 'base');
}

/** JSON calls to a node's API with its admin key; any non-2xx throws with the body's start. */
export class AdminApi {
  readonly #url: string;
  readonly #key: string;

  constructor(node: OrchestraNode) {
    this.#url = node.url;
    this.#key = adminKeyOf(node);
  }

  /**
   * Resolves to the parsed JSON body (the text if it is not JSON, undefined if empty).
   * `raw` is sent as the body instead of JSON (`application/octet-stream`).
   */
  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    raw?: Uint8Array,
  ): Promise<T> {
    const payload =
      raw !== undefined ? Buffer.from(raw) : body !== undefined ? JSON.stringify(body) : undefined;
    // Not fetch: a create that waits minutes (100 clones at once) must not hit fetch's
    // 300 s header deadline, which is the client's limit, not Orchestra's.
    const { status, text } = await requestText(`${this.#url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.#key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(raw === undefined ? {} : { 'content-type': 'application/octet-stream' }),
      },
      body: payload,
    });
    if (status < 200 || status >= 300) {
      throw new Error(`${method} ${path}: ${status} ${text.slice(0, 300)}`);
    }
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      return text as T;
    }
  }
}

/**
 * create→running of `count` instances of `template` at once, each timed from its own
 * `POST /v1/instances` to its answer; throws if one is not `running`.
 */
export async function createInstancesAtOnce(
  api: AdminApi,
  template: string,
  count: number,
): Promise<{ ms: number[]; ids: string[] }> {
  const results = await Promise.all(
    Array.from({ length: count }, async () => {
      const started = performance.now();
      const made = await api.call<{ id: string; state: string }>('POST', '/v1/instances', {
        template,
      });
      return { ms: performance.now() - started, made };
    }),
  );
  for (const { made } of results) {
    if (made.state !== 'running') throw new Error(`an instance is ${made.state}`);
  }
  return { ms: results.map((r) => r.ms), ids: results.map((r) => r.made.id) };
}

/** Deletes instances, 10 at a time. */
export async function deleteInstances(api: AdminApi, ids: string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 10) {
    await Promise.all(ids.slice(i, i + 10).map((id) => api.call('DELETE', `/v1/instances/${id}`)));
  }
}
