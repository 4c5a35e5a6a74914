/**
 * Benchmark: hosted agents. The scripted model server (packages/server/src/providers) plays
 * the model; the same official `openai` client Orchestra uses calls it directly as the
 * anchor, in the same run.
 *
 * Part 1, one at a time: the model call alone through the client (the anchor), the same
 * call as Orchestra's provider layer made it inside a hosted run (its journaled
 * `duration_ms`: the provider record, the key, the gate, the breaker and the client), and
 * whole runs submitted with `POST /v1/tasks?wait=` — one model call, or model → tool →
 * model — with Orchestra's CPU per step.
 *
 * Part 2: `--runs` (1,000) hosted runs at once on one node, each streaming about 20 tokens a
 * second for `--stream-seconds`, and Orchestra's memory per run, CPU and event-loop delay.
 *
 *   node bench/agents.ts [--calls 300] [--runs 1000] [--stream-seconds 2]
 *   node bench/agents.ts --smoke     a small run that checks the setup, not a measurement
 *
 * Writes bench/results/agents-<store>-<date>.json. See bench/README.md.
 */
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { ScriptedModelServer } from '../packages/server/src/providers/index.ts';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  cpuMsOf,
  f2,
  intOption,
  n0,
  type OrchestraNode,
  Processes,
  packageVersion,
  parseOptions,
  percentile,
  RunRecord,
  ratio,
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

const SELF = import.meta.filename;
const HELP = `Usage: node bench/agents.ts [options]

  --calls N            model calls one at a time, each way, and runs of each kind (default 300)
  --runs N             hosted runs at once in part 2 (default 1000)
  --stream-seconds N   how long each of those streams, at about 20 tokens a second (default 2)
  --smoke              a small, quick run (checks the setup; not a measurement)
  --postgres           Orchestra on PostgreSQL (BENCH_POSTGRES_URL) instead of SQLite
  --out-dir DIR        where to write the result (default bench/results)
  --orchestra-env K=V  extra setting for the Orchestra node (repeatable)`;

interface Options extends CommonOptions {
  calls: number;
  runs: number;
  streamSeconds: number;
  smoke: boolean;
}

/** One token of the scripted stream: about 4 characters. */
const TOKEN_CHARS = 4;
const TOKENS_PER_SECOND = 20;
const WAIT = '60s';

function summary(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    samples: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? null,
  };
}
type Summary = ReturnType<typeof summary>;

function rssMiB(pid: number): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
    return Number.isFinite(kb) ? kb / 1024 : null;
  } catch {
    return null;
  }
}

/** The node's event-loop delay p99 (prom-client's default metric), in ms. */
async function eventLoopP99Ms(node: OrchestraNode, key: string): Promise<number | null> {
  const text = await fetch(`${node.url}/metrics`, {
    headers: { authorization: `Bearer ${key}` },
  }).then((r) => r.text());
  const match = /^nodejs_eventloop_lag_p99_seconds\s+([\d.e+-]+)/m.exec(text);
  return match ? Number(match[1]) * 1000 : null;
}

async function api<T>(
  node: OrchestraNode,
  key: string,
  method: string,
  path: string,
  body?: unknown,
) {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text.slice(0, 300)}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

interface TaskView {
  id: string;
  state: string;
  error: unknown;
}

/** The journaled `duration_ms` of each model call of a task. */
async function modelCallMs(node: OrchestraNode, key: string, taskId: string): Promise<number[]> {
  const text = await fetch(`${node.url}/v1/tasks/${taskId}/events`, {
    headers: { authorization: `Bearer ${key}`, accept: 'application/x-ndjson' },
  }).then((r) => r.text());
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const event = JSON.parse(line) as {
      type: string;
      data: { name?: string; data?: { duration_ms?: number } };
    };
    if (event.type === 'task.custom' && event.data.name === 'llm.model_call') {
      out.push(event.data.data?.duration_ms ?? 0);
    }
  }
  return out;
}

async function setup(node: OrchestraNode, key: string, model: ScriptedModelServer): Promise<void> {
  await api(node, key, 'POST', '/v1/model-providers', {
    name: 'bench',
    kind: 'openai',
    base_url: `${model.url}/v1`,
    models: [{ name: 'demo', price: { input: 1, output: 2 } }, { name: 'stream' }],
    max_retries: 0,
    max_concurrency: 10_000,
  });
  await api(node, key, 'POST', '/v1/tools', {
    name: 'node_health',
    description: 'The node’s health',
    annotations: { readOnlyHint: true },
    input_schema: { type: 'object' },
    source: { type: 'http', method: 'GET', url: `${node.url}/healthz` },
  });
  for (const [name, llm] of [
    ['single', { model: { provider: 'bench', model: 'demo' } }],
    ['with-tool', { model: { provider: 'bench', model: 'demo' }, tools: ['node_health'] }],
    ['streaming', { model: { provider: 'bench', model: 'stream' } }],
  ] as const) {
    await api(node, key, 'POST', '/v1/templates', {
      name,
      kind: 'llm',
      llm,
      default_max_attempts: 1,
    });
  }
}

async function partOne(o: Options, node: OrchestraNode, key: string, model: ScriptedModelServer) {
  const client = new OpenAI({ apiKey: 'bench', baseURL: `${model.url}/v1`, maxRetries: 0 });
  const direct = async () => {
    const started = performance.now();
    const stream = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'hello' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const _chunk of stream) {
      // to the end of the answer
    }
    return performance.now() - started;
  };
  const run = async (template: string, prompt: string) => {
    const started = performance.now();
    const task = await api<TaskView>(node, key, 'POST', `/v1/tasks?wait=${WAIT}`, {
      template,
      input: { prompt },
    });
    const ms = performance.now() - started;
    if (task.state !== 'succeeded')
      throw new Error(`task ${task.id} ${task.state}: ${JSON.stringify(task.error)}`);
    return { ms, id: task.id };
  };
  // Warm-up: connections, caches, JIT.
  for (let i = 0; i < Math.min(20, o.calls); i++) {
    await direct();
    await run('single', 'hello');
  }
  await sleep(SETTLE_MS);
  const directMs: number[] = [];
  for (let i = 0; i < o.calls; i++) directMs.push(await direct());

  const singleMs: number[] = [];
  const layerMs: number[] = [];
  const cpu0 = cpuMsOf(node.pid);
  const ids: string[] = [];
  for (let i = 0; i < o.calls; i++) {
    const { ms, id } = await run('single', 'hello');
    singleMs.push(ms);
    ids.push(id);
  }
  const cpu1 = cpuMsOf(node.pid);
  const toolMs: number[] = [];
  for (let i = 0; i < o.calls; i++) toolMs.push((await run('with-tool', 'call node_health')).ms);
  const cpu2 = cpuMsOf(node.pid);
  for (const id of ids) layerMs.push(...(await modelCallMs(node, key, id)));
  const cpuSingle = cpu0 !== null && cpu1 !== null ? (cpu1 - cpu0) / o.calls : null;
  // A run with a tool: model call, tool call, model call.
  const cpuTool = cpu1 !== null && cpu2 !== null ? (cpu2 - cpu1) / o.calls : null;
  return {
    direct: summary(directMs),
    providerLayer: summary(layerMs),
    singleRun: summary(singleMs),
    toolRun: summary(toolMs),
    cpuMsPerSingleRun: cpuSingle === null ? null : round3(cpuSingle),
    cpuMsPerStepOfToolRun: cpuTool === null ? null : round3(cpuTool / 3),
  };
}

async function partTwo(o: Options, node: OrchestraNode, key: string, model: ScriptedModelServer) {
  const tokens = TOKENS_PER_SECOND * o.streamSeconds;
  const text = 'word'.repeat(tokens);
  for (let i = 0; i < o.runs; i++) {
    model.script('stream', {
      text,
      chunk_chars: TOKEN_CHARS,
      chunk_delay_ms: 1000 / TOKENS_PER_SECOND,
      usage: { input_tokens: 10, output_tokens: tokens },
    });
  }
  await sleep(SETTLE_MS);
  const rssIdle = rssMiB(node.pid);
  await eventLoopP99Ms(node, key); // the metric resets on read: start the window now
  const cpu0 = cpuMsOf(node.pid);
  const started = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < o.runs; i += 500) {
    const batch = Array.from({ length: Math.min(500, o.runs - i) }, () => ({
      template: 'streaming',
      input: { prompt: 'stream' },
    }));
    const answer = await api<{ items: { status: number; task?: TaskView }[] }>(
      node,
      key,
      'POST',
      '/v1/tasks/batch',
      { tasks: batch },
    );
    for (const item of answer.items) if (item.task) ids.push(item.task.id);
  }
  let rssPeak = rssIdle ?? 0;
  let loopPeak = 0;
  let sampling = Promise.resolve();
  const sampler = setInterval(() => {
    sampling = sampling.then(async () => {
      rssPeak = Math.max(rssPeak, rssMiB(node.pid) ?? 0);
      loopPeak = Math.max(loopPeak, (await eventLoopP99Ms(node, key).catch(() => null)) ?? 0);
    });
  }, 250);
  let done = 0;
  let failed = 0;
  let unfinished = 0;
  try {
    // All run at once at the server: waiting for them one after another takes as long as
    // the slowest.
    for (const id of ids) {
      const task = await api<TaskView>(node, key, 'GET', `/v1/tasks/${id}?wait=${WAIT}`);
      if (task.state === 'succeeded') done += 1;
      else if (['failed', 'dead', 'timed_out', 'cancelled'].includes(task.state)) failed += 1;
      else unfinished += 1;
    }
  } finally {
    clearInterval(sampler);
    await sampling;
  }
  const elapsedMs = performance.now() - started;
  const cpu1 = cpuMsOf(node.pid);
  return {
    runs: o.runs,
    streamSeconds: o.streamSeconds,
    tokensPerRun: tokens,
    succeeded: done,
    failed,
    unfinished,
    wallSeconds: round1(elapsedMs / 1000),
    rssIdleMiB: rssIdle === null ? null : round1(rssIdle),
    rssPeakMiB: round1(rssPeak),
    memoryPerRunKiB: rssIdle === null ? null : round1(((rssPeak - rssIdle) * 1024) / o.runs),
    cpuMsPerRun: cpu0 !== null && cpu1 !== null ? round1((cpu1 - cpu0) / o.runs) : null,
    cpuCoresUsed: cpu0 !== null && cpu1 !== null ? round3((cpu1 - cpu0) / elapsedMs) : null,
    eventLoopP99PeakMs: round1(loopPeak),
  };
}

function report(
  one: Awaited<ReturnType<typeof partOne>>,
  two: Awaited<ReturnType<typeof partTwo>>,
) {
  const added = (a: Summary, b: Summary, k: 'p50' | 'p99') =>
    a[k] !== null && b[k] !== null ? round3((a[k] as number) - (b[k] as number)) : null;
  const rows: (string | number)[][] = [
    ['model call, direct (anchor)', f2(one.direct.p50), f2(one.direct.p99), '-', '-'],
    [
      'model call, Orchestra’s provider layer',
      f2(one.providerLayer.p50),
      f2(one.providerLayer.p99),
      f2(added(one.providerLayer, one.direct, 'p50')),
      f2(added(one.providerLayer, one.direct, 'p99')),
    ],
    [
      'hosted run, 1 model call (submit → succeeded)',
      f2(one.singleRun.p50),
      f2(one.singleRun.p99),
      f2(added(one.singleRun, one.direct, 'p50')),
      f2(added(one.singleRun, one.direct, 'p99')),
    ],
    ['hosted run, model → tool → model', f2(one.toolRun.p50), f2(one.toolRun.p99), '-', '-'],
  ];
  return [
    table(['path (ms)', 'p50', 'p99', 'added p50', 'added p99'], rows),
    `CPU: ${f2(one.cpuMsPerSingleRun)} ms per single-call run; ${f2(one.cpuMsPerStepOfToolRun)} ms per step of a tool run`,
    '',
    table(
      [
        'runs at once',
        'succeeded',
        'wall s',
        'RSS idle MiB',
        'RSS peak MiB',
        'KiB per run',
        'CPU ms per run',
        'cores',
        'loop p99 peak ms',
      ],
      [
        [
          n0(two.runs),
          n0(two.succeeded),
          two.wallSeconds,
          two.rssIdleMiB ?? '-',
          two.rssPeakMiB,
          two.memoryPerRunKiB ?? '-',
          two.cpuMsPerRun ?? '-',
          two.cpuCoresUsed ?? '-',
          two.eventLoopP99PeakMs,
        ],
      ],
    ),
  ].join('\n');
}

const processes = new Processes({ stopTimeoutMs: 10_000, childrenFirst: false });
await runBenchmark<Options>({
  script: SELF,
  processes,
  stopping: 'Orchestra and the model server',
  readOptions(argv) {
    const values = parseOptions(argv, HELP, {
      calls: { type: 'string' },
      runs: { type: 'string' },
      'stream-seconds': { type: 'string' },
      smoke: { type: 'boolean' },
    });
    if (values === undefined) return undefined;
    const smoke = values.smoke ?? false;
    return {
      ...commonOptions(values),
      calls: intOption('calls', values.calls, smoke ? 10 : 300, 1),
      runs: intOption('runs', values.runs, smoke ? 20 : 1000, 1),
      streamSeconds: intOption('stream-seconds', values['stream-seconds'], smoke ? 1 : 2, 1),
      smoke,
    };
  },
  async main(o) {
    startWatchdog(processes, 30 * 60_000);
    const record = new RunRecord('agents', SELF);
    process.stdout.write(record.machineLine());
    const model = await new ScriptedModelServer({
      models: ['demo', 'stream'],
      maxRecordedRequests: 10,
    }).listen();
    processes.onCleanup(() => model.close());
    const database =
      o.store === 'postgres'
        ? await throwawayDatabase(processes, o.postgresUrl, `bench_agents_${Date.now()}`)
        : undefined;
    const node = await startOrchestraNode(processes, {
      name: 'agents',
      settings: {
        ORCHESTRA_HOSTED_RUNS_PER_TENANT: String(Math.max(200, o.runs)),
        ORCHESTRA_TENANT_MAX_CONCURRENCY: '0',
        ...(database ? { ORCHESTRA_DATABASE_URL: database } : {}),
      },
      orchestraEnv: o.orchestraEnv,
      profileName: o.profile ? 'agents' : undefined,
    });
    const key = adminKeyOf(node);
    await setup(node, key, model);
    process.stdout.write(`part 1: ${o.calls} model calls one at a time, each way\n`);
    const one = await partOne(o, node, key, model);
    process.stdout.write(
      `part 2: ${o.runs} hosted runs at once, ${o.streamSeconds} s of streaming each\n`,
    );
    const two = await partTwo(o, node, key, model);
    const text = report(one, two);
    process.stdout.write(`\n${text}\n`);
    const file = record.write(
      o,
      {
        options: { calls: o.calls, runs: o.runs, streamSeconds: o.streamSeconds, smoke: o.smoke },
        versions: { openai: packageVersion('openai') },
        partOne: one,
        partTwo: two,
        addedLatencyPerModelCallMs: {
          p50:
            one.providerLayer.p50 !== null && one.direct.p50 !== null
              ? round3(one.providerLayer.p50 - one.direct.p50)
              : null,
          p99:
            one.providerLayer.p99 !== null && one.direct.p99 !== null
              ? round3(one.providerLayer.p99 - one.direct.p99)
              : null,
          ratioP50: ratio(one.providerLayer.p50, one.direct.p50),
        },
        warnings: node.warnings(),
        table: text,
      },
      o.smoke ? 'smoke' : undefined,
    );
    process.stdout.write(`wrote ${file}\n`);
    return 0;
  },
});
