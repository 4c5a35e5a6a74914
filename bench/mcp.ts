/**
 * Benchmark: Orchestra's MCP gateway. The same client (the MCP TypeScript SDK 1.x `Client`
 * over `StreamableHTTPClientTransport`) calls a trivial tool (`echo`) two ways in one run:
 * through Orchestra's `/mcp/{view}`, and directly against the same upstream MCP server.
 * Reports the added latency (p50, p99 of calls one at a time, the two paths alternating
 * call by call), the throughput ratio (Orchestra / direct, calls in flight), and 100
 * concurrent sessions (initialize + N calls each) both ways.
 *
 *   node bench/mcp.ts [--calls 1000] [--duration 5] [--sessions 100] [--rounds 3]
 *   node bench/mcp.ts --smoke     a small run that checks the setup, not a measurement
 *
 * Everything is on 127.0.0.1, each in its own process: the upstream (bench/mcp/upstream.ts),
 * Orchestra (SQLite in a temporary directory) and the clients (bench/mcp/load.ts). Writes
 * bench/results/mcp-<store>-<date>.json. See bench/README.md for how to read it.
 */
import os from 'node:os';
import { join } from 'node:path';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  envFlag,
  f2,
  freePort,
  HOST,
  intOption,
  machineCpuTicks,
  n0,
  type OrchestraNode,
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
  sleep,
  startOrchestraNode,
  startWatchdog,
  table,
  throwawayDatabase,
} from './common.ts';
import {
  type Failures,
  type LatencyReport,
  type LoadRequest,
  PATH_NAMES,
  PATHS,
  type Path,
  type SessionsReport,
  type Target,
  type ThroughputReport,
  TOOL_NAME,
  type UpstreamRequest,
  type UpstreamStats,
} from './mcp/shared.ts';
import {
  type HistogramData,
  type LatencySummary,
  merged,
  newHistogram,
  summary,
} from './realtime/shared.ts';

const SELF = import.meta.filename;
const LOAD_SCRIPT = join(REPO_ROOT, 'bench/mcp/load.ts');
const UPSTREAM_SCRIPT = join(REPO_ROOT, 'bench/mcp/upstream.ts');
const RELAY_SCRIPT = join(REPO_ROOT, 'bench/mcp/sdk-relay.ts');
const MIDDLES = ['orchestra', 'sdk-relay'] as const;
type Middle = (typeof MIDDLES)[number];
const STOP_TIMEOUT_MS = 10_000;
/** The upstream must be `ready` with its tool in Orchestra's registry within this. */
const REGISTER_TIMEOUT_MS = 60_000;
/** A latency phase or a sessions phase stops issuing calls after this long. */
const PHASE_MAX_MS = 120_000;
/** A process at this % of one core or more is marked: it may have set the pace. */
const BOUND_PERCENT = 90;
/** The server's name in Orchestra's hub and the view's name (`/mcp/bench`). */
const NAME = 'bench';

const HELP = `Usage: node bench/mcp.ts [options]

Calls a trivial MCP tool (echo) with the MCP TypeScript SDK 1.x Client over Streamable HTTP,
two ways in one run: through Orchestra's /mcp/${NAME} (a view of the upstream registered in
its MCP hub) and directly against the same upstream server (1.x SDK, stateful). Reports the
latency Orchestra adds (p50, p99 of calls one at a time, the paths alternating call by
call), the throughput ratio Orchestra / direct (calls in flight), and concurrent sessions
(each: initialize, N calls, end) both ways. Aims, reported and not asserted: added p50 under
1 ms, added p99 under 5 ms, throughput at least 0.8 of direct. Everything on 127.0.0.1; the
upstream, Orchestra and the clients each in their own process. Every option also has an
environment variable.

Options:
  --paths LIST            direct, orchestra, or both (env BENCH_PATHS; default both)
  --calls N               Calls per path and round of the latency phase, one at a time
                          (env BENCH_CALLS; default 1000)
  --warmup N              Calls per path before the first round, not measured
                          (env BENCH_WARMUP; default 300)
  --duration S            Seconds per path and round of the throughput phase
                          (env BENCH_DURATION; default 5)
  --clients N             Clients (sessions) of the throughput phase (env BENCH_CLIENTS;
                          default 4)
  --in-flight N           Calls each of them keeps outstanding (env BENCH_IN_FLIGHT;
                          default 4)
  --sessions N            Concurrent sessions of the sessions phase (env BENCH_SESSIONS;
                          default 100)
  --session-calls N       Calls each session makes after initialize (env BENCH_SESSION_CALLS;
                          default 10)
  --rounds N              Rounds; the order of the paths is reversed every other round
                          (env BENCH_ROUNDS; default 3)
  --middle NAME           What the second path goes through (env BENCH_MIDDLE): orchestra
                          (default), or sdk-relay, the floor: bench/mcp/sdk-relay.ts, a
                          relay on the same MCP SDKs and HTTP plumbing as Orchestra's gateway
                          with none of Orchestra (no auth, registry, policy, record);
                          the result is then mcp-<store>-sdk-relay-<date>.json
  --postgres              Orchestra on PostgreSQL instead of SQLite (env BENCH_POSTGRES=1)
  --postgres-url URL      Admin URL used to create and drop a throwaway database
                          (env BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres)
  --out-dir DIR           Where the JSON result goes (env BENCH_OUT_DIR; default
                          bench/results, with --smoke bench/.scratch)
  --smoke                 A small run to check the setup, not to measure (env BENCH_SMOKE=1):
                          200 calls, 1 s of throughput, 20 sessions of 5 calls, 1 round,
                          unless given otherwise; the result goes to bench/.scratch

Diagnostics (the result is then not the standard measurement; use --out-dir elsewhere):
  --profile               Run Orchestra, the upstream and the clients under --cpu-prof; the
                          .cpuprofile files go to bench/.scratch/profiles
  --orchestra-env K=V     Extra environment for Orchestra, repeatable
  -h, --help              Show this help`;

// ---------------------------------------------------------------------------------------
// Options

interface Options extends CommonOptions {
  paths: Path[];
  calls: number;
  warmup: number;
  clients: number;
  inFlight: number;
  sessions: number;
  sessionCalls: number;
  smoke: boolean;
  middle: Middle;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    paths: { type: 'string' },
    calls: { type: 'string' },
    warmup: { type: 'string' },
    clients: { type: 'string' },
    'in-flight': { type: 'string' },
    sessions: { type: 'string' },
    'session-calls': { type: 'string' },
    smoke: { type: 'boolean' },
    middle: { type: 'string' },
  });
  if (values === undefined) return undefined;
  const env = process.env;
  const smoke = values.smoke ?? envFlag(env.BENCH_SMOKE);
  // --smoke only changes the defaults; what is given explicitly still wins.
  const d = smoke
    ? { calls: 200, warmup: 50, duration: 1, sessions: 20, sessionCalls: 5, rounds: 1 }
    : { calls: 1_000, warmup: 300, duration: 5, sessions: 100, sessionCalls: 10, rounds: 3 };
  const common = commonOptions({
    ...values,
    'out-dir':
      values['out-dir'] ??
      env.BENCH_OUT_DIR ??
      (smoke ? join(REPO_ROOT, 'bench/.scratch') : undefined),
  });
  const named = (values.paths ?? env.BENCH_PATHS ?? PATHS.join(','))
    .split(',')
    .map((p) => p.trim());
  for (const p of named) {
    if (!PATHS.includes(p as Path)) {
      throw new Error(`--paths: unknown path "${p}" (use ${PATHS.join(', ')})`);
    }
  }
  const paths = PATHS.filter((p) => named.includes(p));
  if (paths.length === 0) throw new Error('--paths: name at least one path');
  const middle = values.middle ?? env.BENCH_MIDDLE ?? 'orchestra';
  if (!MIDDLES.includes(middle as Middle)) {
    throw new Error(`--middle: unknown "${middle}" (use ${MIDDLES.join(', ')})`);
  }
  return {
    ...common,
    durationSeconds: intOption('duration', values.duration ?? env.BENCH_DURATION, d.duration, 1),
    rounds: intOption('rounds', values.rounds ?? env.BENCH_ROUNDS, d.rounds, 1),
    paths,
    calls: intOption('calls', values.calls ?? env.BENCH_CALLS, d.calls, 1),
    warmup: intOption('warmup', values.warmup ?? env.BENCH_WARMUP, d.warmup, 0),
    clients: intOption('clients', values.clients ?? env.BENCH_CLIENTS, 4, 1),
    inFlight: intOption('in-flight', values['in-flight'] ?? env.BENCH_IN_FLIGHT, 4, 1),
    sessions: intOption('sessions', values.sessions ?? env.BENCH_SESSIONS, d.sessions, 1),
    sessionCalls: intOption(
      'session-calls',
      values['session-calls'] ?? env.BENCH_SESSION_CALLS,
      d.sessionCalls,
      1,
    ),
    smoke,
    middle: middle as Middle,
  };
}

// ---------------------------------------------------------------------------------------
// Processes

// The cleanup steps stop the clients, then Orchestra, then remove its data (and database);
// whatever still runs (the upstream) is stopped last.
const processes = new Processes({ stopTimeoutMs: STOP_TIMEOUT_MS, childrenFirst: false });

/** The upstream MCP server, started on a free loopback port. */
async function startUpstream(o: Options): Promise<{
  process: SharedLoadProcess<UpstreamRequest>;
  url: string;
}> {
  const port = await freePort();
  const upstream = new SharedLoadProcess<UpstreamRequest>({
    processes,
    script: UPSTREAM_SCRIPT,
    name: 'upstream',
    nodeArgs: o.profile ? profileArgs('upstream') : [],
    args: [String(port)],
    stopTimeoutMs: STOP_TIMEOUT_MS,
  });
  await upstream.ready;
  return { process: upstream, url: `http://${HOST}:${port}/mcp` };
}

async function api(
  node: OrchestraNode,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown; text: string }> {
  const res = await fetch(`${node.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: the text is in the error.
  }
  return { status: res.status, json, text: redactKeys(text).slice(0, 500) };
}

async function must(
  node: OrchestraNode,
  key: string,
  method: string,
  path: string,
  body: unknown,
): Promise<unknown> {
  const r = await api(node, key, method, path, body);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${method} ${path} answered ${r.status}: ${r.text}`);
  }
  return r.json;
}

/**
 * Orchestra with the upstream registered in its hub, a view `bench` of it (its tool keeps
 * the name `echo` at /mcp/bench) and a policy that allows its tools.
 */
async function startOrchestra(
  o: Options,
  upstreamUrl: string,
): Promise<{ node: OrchestraNode; target: Target; setup: Record<string, unknown> }> {
  const settings: Record<string, string> = {};
  if (o.store === 'postgres') {
    const name = `orchestra_bench_mcp_${process.pid}_${Date.now().toString(36)}`;
    settings.ORCHESTRA_DATABASE_URL = await throwawayDatabase(processes, o.postgresUrl, name);
  }
  const node = await startOrchestraNode(processes, {
    name: 'mcp',
    settings,
    orchestraEnv: o.orchestraEnv,
    profileName: o.profile ? 'orchestra' : undefined,
  });
  const key = adminKeyOf(node);
  await must(node, key, 'POST', '/v1/mcp/servers', {
    name: NAME,
    transport: 'streamable_http',
    url: upstreamUrl,
  });
  const deadline = performance.now() + REGISTER_TIMEOUT_MS;
  let server: { status?: { state?: string; reason?: string | null }; tools?: number } = {};
  for (;;) {
    server = (await must(node, key, 'GET', `/v1/mcp/servers/${NAME}`, undefined)) as typeof server;
    if (server.status?.state === 'ready' && (server.tools ?? 0) > 0) break;
    if (performance.now() > deadline) {
      throw new Error(
        `the upstream was not ready with its tools in Orchestra within ` +
          `${REGISTER_TIMEOUT_MS / 1000} s: ${JSON.stringify(server).slice(0, 500)}`,
      );
    }
    await sleep(100);
  }
  await must(node, key, 'POST', '/v1/mcp/views', { name: NAME, servers: [NAME] });
  await must(node, key, 'POST', '/v1/tool-policies', {
    name: NAME,
    effect: 'allow',
    tools: [`${NAME}__*`],
  });
  return {
    node,
    target: { path: 'orchestra', url: `${node.url}/mcp/${NAME}`, apiKey: key },
    setup: {
      server: { name: NAME, transport: 'streamable_http', url: upstreamUrl },
      view: { name: NAME, servers: [NAME] },
      policy: { name: NAME, effect: 'allow', tools: [`${NAME}__*`] },
      tool: `${TOOL_NAME} (registry: ${NAME}__${TOOL_NAME})`,
    },
  };
}

/** The floor: a bare relay on the same SDKs in place of Orchestra (`--middle sdk-relay`). */
async function startRelay(
  o: Options,
  upstreamUrl: string,
): Promise<{ pid: number; target: Target; setup: Record<string, unknown> }> {
  const port = await freePort();
  const relay = new SharedLoadProcess<UpstreamRequest>({
    processes,
    script: RELAY_SCRIPT,
    name: 'sdk-relay',
    nodeArgs: o.profile ? profileArgs('sdk-relay') : [],
    args: [String(port), upstreamUrl],
    stopTimeoutMs: STOP_TIMEOUT_MS,
  });
  await relay.ready;
  return {
    pid: relay.pid,
    target: { path: 'orchestra', url: `http://${HOST}:${port}/mcp` },
    setup: {
      command: `node bench/mcp/sdk-relay.ts <port> ${upstreamUrl}`,
      versions: {
        '@modelcontextprotocol/server': packageVersion('@modelcontextprotocol/server'),
        '@modelcontextprotocol/client': packageVersion('@modelcontextprotocol/client'),
      },
    },
  };
}

// ---------------------------------------------------------------------------------------
// Phases

interface CpuReading {
  /** ms of CPU per process during the phase. */
  orchestraMs: number | null;
  upstreamMs: number | null;
  loadMs: number | null;
  /** % of one core. */
  orchestraPercent: number | null;
  upstreamPercent: number | null;
  loadPercent: number | null;
  machineBusyPercent: number | null;
}

interface Pids {
  orchestra: number | null;
  upstream: number;
  load: number;
}

/** Runs `fn` and reads the CPU each process used meanwhile. */
async function withCpu<T>(
  pids: Pids,
  fn: () => Promise<T>,
): Promise<{ value: T; cpu: CpuReading }> {
  const read = () => ({
    orchestra: pids.orchestra === null ? null : cpuMsOf(pids.orchestra),
    upstream: cpuMsOf(pids.upstream),
    load: cpuMsOf(pids.load),
    machine: machineCpuTicks(),
    wall: performance.now(),
  });
  const before = read();
  const value = await fn();
  const after = read();
  const wallMs = Math.max(after.wall - before.wall, 1);
  const delta = (a: number | null, b: number | null) =>
    a === null || b === null ? null : round1(b - a);
  const percent = (ms: number | null) => (ms === null ? null : round1((ms / wallMs) * 100));
  const orchestraMs = delta(before.orchestra, after.orchestra);
  const upstreamMs = delta(before.upstream, after.upstream);
  const loadMs = delta(before.load, after.load);
  const m =
    before.machine && after.machine
      ? {
          total: Math.max(after.machine.total - before.machine.total, 1),
          idle: after.machine.idle - before.machine.idle,
        }
      : null;
  return {
    value,
    cpu: {
      orchestraMs,
      upstreamMs,
      loadMs,
      orchestraPercent: percent(orchestraMs),
      upstreamPercent: percent(upstreamMs),
      loadPercent: percent(loadMs),
      machineBusyPercent: m ? round1((1 - m.idle / m.total) * 100) : null,
    },
  };
}

const perCall = (ms: number | null, calls: number) =>
  ms === null || calls === 0 ? null : round3(ms / calls);

type CpuPerCall = { orchestra: number | null; upstream: number | null; client: number | null };

function cpuPerCall(
  p: Path,
  cpu: { orchestraMs: number | null; upstreamMs: number | null; loadMs: number | null },
  calls: number,
): CpuPerCall {
  return {
    orchestra: p === 'orchestra' ? perCall(cpu.orchestraMs, calls) : null,
    upstream: perCall(cpu.upstreamMs, calls),
    client: perCall(cpu.loadMs, calls),
  };
}

/** What the throughput and sessions phases of one path in one round both report. */
interface MeasuredRun {
  path: Path;
  round: number;
  /** Calls that succeeded. */
  calls: number;
  errors: number;
  firstError: string | null;
  seconds: number;
  callsPerSecond: number;
  cpu: CpuReading;
  cpuMsPerCall: CpuPerCall;
  /** The clients' process used >= 90 % of a core: the load may have set the pace. */
  loadBound: boolean;
}

function measuredRun(
  p: Path,
  round: number,
  report: Failures & { calls: number; ms: number },
  cpu: CpuReading,
): MeasuredRun {
  const seconds = Math.max(report.ms / 1000, 1e-3);
  return {
    path: p,
    round,
    calls: report.calls,
    errors: report.errors,
    firstError: report.firstError,
    seconds: round3(seconds),
    callsPerSecond: round1(report.calls / seconds),
    cpu,
    cpuMsPerCall: cpuPerCall(p, cpu, report.calls),
    loadBound: (cpu.loadPercent ?? 0) >= BOUND_PERCENT,
  };
}

interface ThroughputRun extends MeasuredRun {
  connectFailures: number;
  latencyMs: LatencySummary | null;
}

interface SessionsRun extends MeasuredRun {
  sessions: number;
  completed: number;
  initializeMs: LatencySummary | null;
  callMs: LatencySummary | null;
  sessionMs: LatencySummary | null;
}

interface LatencyRun {
  round: number;
  order: Path[];
  perPath: Record<
    string,
    { calls: number; errors: number; firstError: string | null; latencyMs: LatencySummary | null }
  >;
}

const f3 = (n: number | null | undefined) => (n === null || n === undefined ? '?' : n.toFixed(3));
/** A difference with its sign, three decimals; "?" for none. */
const signed = (n: number | null) => (n === null ? '?' : `${n >= 0 ? '+' : ''}${n.toFixed(3)}`);
/** The same, for a number that does not apply to the direct path: "-". */
const f3n = (n: number | null | undefined) => (n === null || n === undefined ? '-' : n.toFixed(3));

function minus(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || b === null || b === undefined ? null : round3(a - b);
}

// ---------------------------------------------------------------------------------------

async function main(o: Options): Promise<number> {
  const run = new RunRecord('mcp', SELF);
  process.stdout.write(run.machineLine());
  const budgetMs =
    5 * 60_000 +
    o.rounds * (2 * PHASE_MAX_MS + o.paths.length * (o.durationSeconds * 1000 + 60_000));
  startWatchdog(processes, budgetMs);

  const upstream = await startUpstream(o);
  console.log(`upstream MCP server: ${upstream.url} (pid ${upstream.process.pid})`);
  const pathTargets = new Map<Path, Target>();
  pathTargets.set('direct', { path: 'direct', url: upstream.url });
  let orchestra: Awaited<ReturnType<typeof startOrchestra>> | null = null;
  let relay: Awaited<ReturnType<typeof startRelay>> | null = null;
  if (o.paths.includes('orchestra') && o.middle === 'sdk-relay') {
    // The second path's rows and CPU column then describe the relay.
    PATH_NAMES.orchestra = 'SDK relay (floor)';
    relay = await startRelay(o, upstream.url);
    pathTargets.set('orchestra', relay.target);
    console.log(`SDK relay: ${relay.target.url} (pid ${relay.pid})`);
  } else if (o.paths.includes('orchestra')) {
    orchestra = await startOrchestra(o, upstream.url);
    pathTargets.set('orchestra', orchestra.target);
    console.log(`Orchestra: ${orchestra.target.url} (pid ${orchestra.node.pid}, ${o.store})`);
  }
  const load = new SharedLoadProcess<LoadRequest>({
    processes,
    script: LOAD_SCRIPT,
    name: 'clients',
    nodeArgs: o.profile ? profileArgs('clients') : [],
    requestTimeoutMs: PHASE_MAX_MS + 60_000,
    stopTimeoutMs: STOP_TIMEOUT_MS,
  });
  processes.onCleanup(() => load.stop());
  await load.ready;
  const pids: Pids = {
    orchestra: orchestra?.node.pid ?? relay?.pid ?? null,
    upstream: upstream.process.pid,
    load: load.pid,
  };
  const targetOf = (p: Path): Target => {
    const t = pathTargets.get(p);
    if (t === undefined) throw new Error(`no target for ${p}`);
    return t;
  };
  const inOrder = o.paths.map(targetOf);

  // Warm-up: both paths, calls one at a time and a short burst in flight each, not measured.
  console.log(`\nwarm-up: ${o.warmup} calls per path, then 1 s of throughput per path`);
  await load.request<LatencyReport>({
    type: 'latency',
    targets: inOrder,
    calls: 0,
    warmup: o.warmup,
    maxMs: PHASE_MAX_MS,
  });
  for (const t of inOrder) {
    const w = await load.request<ThroughputReport>({
      type: 'throughput',
      target: t,
      clients: o.clients,
      inFlight: o.inFlight,
      durationMs: 1_000,
      maxCalls: 1_000_000,
    });
    if (w.calls === 0) {
      throw new Error(`${PATH_NAMES[t.path]}: no call succeeded in the warm-up: ${w.firstError}`);
    }
  }
  await sleep(SETTLE_MS);

  const latencyRuns: LatencyRun[] = [];
  const latencyHist = new Map<Path, HistogramData[]>(o.paths.map((p) => [p, []]));
  const throughputRuns: ThroughputRun[] = [];
  const throughputHist = new Map<Path, HistogramData[]>(o.paths.map((p) => [p, []]));
  const sessionsRuns: SessionsRun[] = [];
  const sessionsHist = new Map<
    Path,
    { init: HistogramData[]; call: HistogramData[]; session: HistogramData[] }
  >(o.paths.map((p) => [p, { init: [], call: [], session: [] }]));

  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? [...o.paths] : [...o.paths].reverse();
    console.log(
      `\nround ${round} of ${o.rounds} (${order.map((p) => PATH_NAMES[p]).join(', then ')})`,
    );

    // 1. Latency: calls one at a time, alternating between the paths call by call.
    const lat = await load.request<LatencyReport>({
      type: 'latency',
      targets: order.map(targetOf),
      calls: o.calls,
      warmup: 20,
      maxMs: PHASE_MAX_MS,
    });
    const latencyRun: LatencyRun = { round, order, perPath: {} };
    order.forEach((p, i) => {
      const r = lat.perTarget[i];
      if (r === undefined) return;
      latencyHist.get(p)?.push(r.latency);
      const s = summary(r.latency);
      latencyRun.perPath[p] = {
        calls: r.calls,
        errors: r.errors,
        firstError: r.firstError,
        latencyMs: s,
      };
      console.log(
        `  ${PATH_NAMES[p].padEnd(22)} latency, one at a time: ${n0(r.calls)} calls, p50 ` +
          `${f3(s?.p50)} ms, p99 ${f3(s?.p99)} ms${r.errors > 0 ? `; ${r.errors} errors (${r.firstError})` : ''}`,
      );
    });
    latencyRuns.push(latencyRun);

    // 2. Throughput: calls in flight, one path after the other.
    for (const p of order) {
      const { value: t, cpu } = await withCpu(pids, () =>
        load.request<ThroughputReport>({
          type: 'throughput',
          target: targetOf(p),
          clients: o.clients,
          inFlight: o.inFlight,
          durationMs: o.durationSeconds * 1000,
          maxCalls: 10_000_000,
        }),
      );
      throughputHist.get(p)?.push(t.latency);
      const r: ThroughputRun = {
        ...measuredRun(p, round, t, cpu),
        connectFailures: t.connectFailures,
        latencyMs: summary(t.latency),
      };
      throughputRuns.push(r);
      console.log(
        `  ${PATH_NAMES[p].padEnd(22)} throughput, ${o.clients * o.inFlight} in flight: ` +
          `${n0(r.callsPerSecond)} calls/s (p50 ${f2(r.latencyMs?.p50)} ms, p99 ` +
          `${f2(r.latencyMs?.p99)} ms); CPU % of a core: Orchestra ${cpu.orchestraPercent ?? '-'}, ` +
          `upstream ${cpu.upstreamPercent}, clients ${cpu.loadPercent}${r.loadBound ? ' (load-bound)' : ''}` +
          (t.errors > 0 ? `; ${t.errors} errors (${t.firstError})` : ''),
      );
      await sleep(SETTLE_MS);
    }

    // 3. Sessions: N clients at once, each initialize + calls + end.
    for (const p of order) {
      const { value: s, cpu } = await withCpu(pids, () =>
        load.request<SessionsReport>({
          type: 'sessions',
          target: targetOf(p),
          sessions: o.sessions,
          calls: o.sessionCalls,
          maxMs: PHASE_MAX_MS,
        }),
      );
      const h = sessionsHist.get(p);
      h?.init.push(s.initialize);
      h?.call.push(s.latency);
      h?.session.push(s.session);
      const r: SessionsRun = {
        ...measuredRun(p, round, s, cpu),
        sessions: s.sessions,
        completed: s.completed,
        initializeMs: summary(s.initialize),
        callMs: summary(s.latency),
        sessionMs: summary(s.session),
      };
      sessionsRuns.push(r);
      console.log(
        `  ${PATH_NAMES[p].padEnd(22)} ${s.sessions} sessions x ${o.sessionCalls} calls: ` +
          `${s.completed} completed in ${f2(r.seconds)} s (${n0(r.callsPerSecond)} calls/s); ` +
          `initialize p50 ${f2(r.initializeMs?.p50)} p99 ${f2(r.initializeMs?.p99)} ms, call p50 ` +
          `${f2(r.callMs?.p50)} p99 ${f2(r.callMs?.p99)} ms` +
          (s.errors > 0 ? `; ${s.errors} errors (${s.firstError})` : ''),
      );
      await sleep(SETTLE_MS);
    }
  }

  // ---- Summary
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const results = Object.fromEntries(
    o.paths.map((p) => {
      const tRuns = throughputRuns.filter((r) => r.path === p);
      const sRuns = sessionsRuns.filter((r) => r.path === p);
      const sh = sessionsHist.get(p);
      const tCalls = sum(tRuns.map((r) => r.calls));
      const sCalls = sum(sRuns.map((r) => r.calls));
      const cpuSum = (runs: { cpu: CpuReading }[], k: 'orchestraMs' | 'upstreamMs' | 'loadMs') =>
        runs.some((r) => r.cpu[k] === null) ? null : sum(runs.map((r) => r.cpu[k] ?? 0));
      const cpuOf = (runs: { cpu: CpuReading }[]) => ({
        orchestraMs: cpuSum(runs, 'orchestraMs'),
        upstreamMs: cpuSum(runs, 'upstreamMs'),
        loadMs: cpuSum(runs, 'loadMs'),
      });
      return [
        p,
        {
          latency: {
            calls: sum(latencyRuns.map((r) => r.perPath[p]?.calls ?? 0)),
            errors: sum(latencyRuns.map((r) => r.perPath[p]?.errors ?? 0)),
            ms: summary(merged(latencyHist.get(p) ?? [newHistogram()])),
          },
          throughput: {
            calls: tCalls,
            errors: sum(tRuns.map((r) => r.errors)),
            callsPerSecond: round1(tCalls / Math.max(sum(tRuns.map((r) => r.seconds)), 1e-3)),
            latencyMs: summary(merged(throughputHist.get(p) ?? [newHistogram()])),
            cpuMsPerCall: cpuPerCall(p, cpuOf(tRuns), tCalls),
            loadBound: tRuns.some((r) => r.loadBound),
          },
          sessions: {
            sessions: o.sessions,
            callsPerSession: o.sessionCalls,
            completed: sum(sRuns.map((r) => r.completed)),
            errors: sum(sRuns.map((r) => r.errors)),
            seconds: round3(sum(sRuns.map((r) => r.seconds)) / Math.max(sRuns.length, 1)),
            callsPerSecond: round1(sCalls / Math.max(sum(sRuns.map((r) => r.seconds)), 1e-3)),
            initializeMs: summary(merged(sh?.init ?? [])),
            callMs: summary(merged(sh?.call ?? [])),
            sessionMs: summary(merged(sh?.session ?? [])),
            cpuMsPerCall: cpuPerCall(p, cpuOf(sRuns), sCalls),
            loadBound: sRuns.some((r) => r.loadBound),
          },
        },
      ];
    }),
  ) as Record<
    Path,
    {
      latency: { calls: number; errors: number; ms: LatencySummary | null };
      throughput: {
        calls: number;
        errors: number;
        callsPerSecond: number;
        latencyMs: LatencySummary | null;
        cpuMsPerCall: CpuPerCall;
        loadBound: boolean;
      };
      sessions: {
        sessions: number;
        callsPerSession: number;
        completed: number;
        errors: number;
        seconds: number;
        callsPerSecond: number;
        initializeMs: LatencySummary | null;
        callMs: LatencySummary | null;
        sessionMs: LatencySummary | null;
        cpuMsPerCall: CpuPerCall;
        loadBound: boolean;
      };
    }
  >;
  const d = results.direct;
  const g = results.orchestra;
  const both = d !== undefined && g !== undefined;
  const comparisons = both
    ? {
        addedLatencyMs: {
          p50: minus(g.latency.ms?.p50, d.latency.ms?.p50),
          p90: minus(g.latency.ms?.p90, d.latency.ms?.p90),
          p99: minus(g.latency.ms?.p99, d.latency.ms?.p99),
        },
        throughputRatio: ratio(g.throughput.callsPerSecond, d.throughput.callsPerSecond),
        throughputRatioPerRound: Array.from({ length: o.rounds }, (_, i) =>
          ratio(
            throughputRuns.find((r) => r.round === i + 1 && r.path === 'orchestra')?.callsPerSecond,
            throughputRuns.find((r) => r.round === i + 1 && r.path === 'direct')?.callsPerSecond,
          ),
        ),
        sessions: {
          callsPerSecondRatio: ratio(g.sessions.callsPerSecond, d.sessions.callsPerSecond),
          addedInitializeMs: {
            p50: minus(g.sessions.initializeMs?.p50, d.sessions.initializeMs?.p50),
            p99: minus(g.sessions.initializeMs?.p99, d.sessions.initializeMs?.p99),
          },
          addedCallMs: {
            p50: minus(g.sessions.callMs?.p50, d.sessions.callMs?.p50),
            p99: minus(g.sessions.callMs?.p99, d.sessions.callMs?.p99),
          },
        },
      }
    : null;

  const col = (v: (r: (typeof results)[Path]) => number | null | undefined) =>
    o.paths.map((p) => v(results[p]));
  const middleLabel = o.middle === 'sdk-relay' ? 'relay' : 'Orchestra';
  const rowOf = (
    label: string,
    v: (r: (typeof results)[Path]) => number | null | undefined,
    format: (n: number | null | undefined) => string,
    compare: 'minus' | 'ratio' | 'both' | 'none',
    mark: (r: (typeof results)[Path]) => string = () => '',
  ): (string | number)[] => {
    const values = col(v);
    const cells = o.paths.map((p, i) => `${format(values[i])}${mark(results[p])}`);
    if (!both) return [label, ...cells];
    const dv = v(d);
    const gv = v(g);
    return [
      label,
      ...cells,
      compare === 'minus' || compare === 'both' ? signed(minus(gv, dv)) : '',
      compare === 'ratio' || compare === 'both' ? f2(ratio(gv, dv)) : '',
    ];
  };
  const tMark = (r: (typeof results)[Path]) => (r.throughput.loadBound ? '*' : '');
  const sMark = (r: (typeof results)[Path]) => (r.sessions.loadBound ? '*' : '');
  const inFlight = o.clients * o.inFlight;
  const rows: (string | number)[][] = [
    rowOf('call latency p50 (ms), one at a time', (r) => r.latency.ms?.p50, f3, 'both'),
    rowOf('call latency p90 (ms)', (r) => r.latency.ms?.p90, f3, 'both'),
    rowOf('call latency p99 (ms)', (r) => r.latency.ms?.p99, f3, 'both'),
    rowOf(
      `throughput (calls/s), ${inFlight} in flight`,
      (r) => r.throughput.callsPerSecond,
      n0,
      'ratio',
      tMark,
    ),
    rowOf('  call latency p50 (ms)', (r) => r.throughput.latencyMs?.p50, f2, 'both'),
    rowOf('  call latency p99 (ms)', (r) => r.throughput.latencyMs?.p99, f2, 'both'),
    rowOf(
      `  ${middleLabel} CPU per call (ms)`,
      (r) => r.throughput.cpuMsPerCall.orchestra,
      f3n,
      'none',
    ),
    rowOf('  upstream CPU per call (ms)', (r) => r.throughput.cpuMsPerCall.upstream, f3, 'ratio'),
    rowOf('  client CPU per call (ms)', (r) => r.throughput.cpuMsPerCall.client, f3, 'ratio'),
    rowOf(
      `${o.sessions} sessions x ${o.sessionCalls} calls: wall time (s)`,
      (r) => r.sessions.seconds,
      f2,
      'ratio',
      sMark,
    ),
    rowOf('  calls/s', (r) => r.sessions.callsPerSecond, n0, 'ratio', sMark),
    rowOf('  initialize p50 (ms)', (r) => r.sessions.initializeMs?.p50, f2, 'both'),
    rowOf('  initialize p99 (ms)', (r) => r.sessions.initializeMs?.p99, f2, 'both'),
    rowOf('  call latency p50 (ms)', (r) => r.sessions.callMs?.p50, f2, 'both'),
    rowOf('  call latency p99 (ms)', (r) => r.sessions.callMs?.p99, f2, 'both'),
    rowOf(
      `  ${middleLabel} CPU per call (ms)`,
      (r) => r.sessions.cpuMsPerCall.orchestra,
      f3n,
      'none',
    ),
    rowOf(
      '  sessions completed',
      (r) => r.sessions.completed,
      (n) => `${n0(n)}/${n0(o.sessions * o.rounds)}`,
      'none',
    ),
    rowOf(
      'failed calls (all phases)',
      (r) => r.latency.errors + r.throughput.errors + r.sessions.errors,
      n0,
      'none',
    ),
  ];
  console.log(
    `\nsummary (${o.rounds} round(s); latency over ${n0(o.calls)} calls per path and round, the ` +
      'paths alternating call by call; "*": the clients\' process used >= 90 % of a core, so ' +
      'the load may have set the pace):',
  );
  console.log(
    table(
      [
        '',
        ...o.paths.map((p) => PATH_NAMES[p]),
        ...(both ? ['added', `${middleLabel} / direct`] : []),
      ],
      rows,
    ),
  );
  const yes = (b: boolean | null) => (b === null ? '?' : b ? 'met' : 'NOT met');
  const targets = comparisons
    ? {
        addedP50Under1Ms:
          comparisons.addedLatencyMs.p50 === null ? null : comparisons.addedLatencyMs.p50 < 1,
        addedP99Under5Ms:
          comparisons.addedLatencyMs.p99 === null ? null : comparisons.addedLatencyMs.p99 < 5,
        throughputAtLeast0_8OfDirect:
          comparisons.throughputRatio === null ? null : comparisons.throughputRatio >= 0.8,
      }
    : null;
  if (comparisons && targets) {
    console.log(
      `\naims (reported, not asserted):\n` +
        `  added p50 < 1 ms: ${yes(targets.addedP50Under1Ms)} (${f3(comparisons.addedLatencyMs.p50)} ms)\n` +
        `  added p99 < 5 ms: ${yes(targets.addedP99Under5Ms)} (${f3(comparisons.addedLatencyMs.p99)} ms)\n` +
        `  throughput >= 0.8 x direct: ${yes(targets.throughputAtLeast0_8OfDirect)} ` +
        `(${f2(comparisons.throughputRatio)} x; per round ${comparisons.throughputRatioPerRound.map(f2).join(', ')})`,
    );
  }
  const warnings = orchestra?.node.warnings() ?? null;
  if (warnings && warnings.count > 0) {
    console.log(`\nOrchestra logged ${warnings.count} warnings or errors; the last:`);
    for (const line of warnings.last) console.log(`  ${line}`);
  }
  const upstreamStats = await upstream.process
    .request<UpstreamStats>({ type: 'stats' }, 5_000)
    .catch(() => null);
  const failed =
    latencyRuns.some((r) => Object.values(r.perPath).some((x) => x.errors > 0)) ||
    throughputRuns.some((r) => r.errors > 0) ||
    sessionsRuns.some((r) => r.errors > 0);

  const file = run.write(
    o,
    {
      parameters: {
        host: HOST,
        paths: o.paths,
        tool: TOOL_NAME,
        latencyCallsPerRound: o.calls,
        warmupCalls: o.warmup,
        throughputSeconds: o.durationSeconds,
        throughputClients: o.clients,
        throughputInFlightPerClient: o.inFlight,
        sessions: o.sessions,
        callsPerSession: o.sessionCalls,
        rounds: o.rounds,
        roundOrder:
          'latency: the paths alternate call by call (which goes first alternates too); ' +
          'throughput and sessions: the paths in the order above in odd rounds, reversed in even rounds',
        smoke: o.smoke,
        profiled: o.profile,
        orchestraExtraEnv: o.orchestraEnv,
        versions: {
          '@modelcontextprotocol/sdk': packageVersion('@modelcontextprotocol/sdk'),
        },
        client:
          'MCP TypeScript SDK 1.x Client + StreamableHTTPClientTransport (one process for all ' +
          'clients); Orchestra: Authorization: Bearer <admin key> through requestInit.headers',
        upstream:
          'bench/mcp/upstream.ts: 1.x SDK McpServer + StreamableHTTPServerTransport on node:http, ' +
          'stateful (a session per initialize), one tool echo {text} with readOnlyHint true',
        orchestra: orchestra
          ? {
              command:
                'node packages/server/src/cli/main.ts start (fresh data dir), ' +
                'ORCHESTRA_LOG_LEVEL=warn, ORCHESTRA_RATE_LIMIT_PER_SECOND=0, ' +
                'ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS=0',
              ...orchestra.setup,
            }
          : null,
        middle: o.middle,
        sdkRelay: relay?.setup ?? null,
        latency:
          'from before Client.callTool to its checked result (the echo of its text), ' +
          "performance.now() in the clients' process; 2 %-wide histogram buckets",
        cpuCount: os.cpus().length,
        dataDirParent: `${os.tmpdir()} (Orchestra's data directory, SQLite file included; TMPDIR moves it)`,
      },
      results,
      comparisons,
      targets,
      runs: { latency: latencyRuns, throughput: throughputRuns, sessions: sessionsRuns },
      upstreamStats,
      warnings,
    },
    o.middle === 'sdk-relay' ? 'sdk-relay' : undefined,
  );
  console.log(`\nresult: ${file}`);
  if (o.profile) console.log(`CPU profiles: ${PROFILE_DIR}`);
  if (failed) {
    console.log('\nsome calls failed: see the errors above and in the result file');
    return 1;
  }
  return 0;
}

await runBenchmark({ script: SELF, processes, stopping: 'every process', readOptions, main });
