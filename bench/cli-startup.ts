/**
 * Benchmark: how long the `orchestra` CLI takes from spawn to exit, against `node -e 0`.
 *
 *   node bench/cli-startup.ts [--runs N] [--compare DIR] [--help]
 *
 * Spawns, in turns and in a rotating order, `node -e 0` (the anchor: Node's own start),
 * `orchestra version` and `orchestra whoami` against an Orchestra server the benchmark
 * starts on a free loopback port. With --compare, the CLI of another checkout (the code
 * before a change, with its own `npm ci`) takes its turns in the same run. Reports medians
 * and their ratios to the anchor; writes bench/results/cli-startup-<store>-<date>.json.
 * See bench/README.md.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  intOption,
  median,
  Processes,
  parseOptions,
  REPO_ROOT,
  RunRecord,
  round1,
  round3,
  runBenchmark,
  startOrchestraNode,
  startWatchdog,
  table,
  tempDir,
} from './common.ts';

const SELF = import.meta.filename;
const BIN = 'packages/server/bin/orchestra.js';
/** A command that does not exit in this time fails the run. */
const COMMAND_TIMEOUT_MS = 60_000;

const HELP = `Usage: node bench/cli-startup.ts [options]

Measures the start-up of the orchestra CLI: the time from spawning "orchestra version" and
"orchestra whoami" (against a server the benchmark starts on 127.0.0.1) to their exit,
against "node -e 0" in the same run, in turns. Every option also has an environment
variable.

Options:
  --runs N              Runs of each command (env BENCH_RUNS; default 20)
  --compare DIR         Another checkout of Orchestra, with its own npm ci, whose CLI takes
                        its turns in the same run: the code before a change (env BENCH_COMPARE)
  --compare-label NAME  What to call it in the report (default before)
  --out-dir DIR         Where the JSON result goes (env BENCH_OUT_DIR; default bench/results)
  --orchestra-env K=V   Extra environment for the Orchestra server, repeatable
  -h, --help            Show this help`;

interface Options extends CommonOptions {
  runs: number;
  compare: string | undefined;
  compareLabel: string;
}

function readOptions(argv: string[]): Options | undefined {
  const values = parseOptions(argv, HELP, {
    runs: { type: 'string' },
    compare: { type: 'string' },
    'compare-label': { type: 'string' },
  });
  if (values === undefined) return undefined;
  const compare = values.compare ?? process.env.BENCH_COMPARE;
  if (compare !== undefined && !existsSync(join(compare, BIN))) {
    throw new Error(`--compare: no ${BIN} in ${compare}`);
  }
  return {
    ...commonOptions(values),
    runs: intOption('runs', values.runs ?? process.env.BENCH_RUNS, 20, 1),
    compare: compare === undefined ? undefined : resolve(compare),
    compareLabel: values['compare-label'] ?? 'before',
  };
}

const processes = new Processes({ stopTimeoutMs: 10_000, childrenFirst: false });

/** One command line the benchmark times. */
interface Subject {
  name: string;
  args: string[];
  /** Checks what a run printed; throws if it did not do what it should. */
  check: (stdout: string) => void;
}

/** Spawns `node args` in `cwd` and resolves to the ms from spawn to exit, and its stdout. */
function timeRun(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ ms: number; stdout: string }> {
  return new Promise((done, fail) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      const ms = performance.now() - started;
      clearTimeout(timer);
      if (code !== 0) {
        fail(new Error(`node ${args.join(' ')} exited ${signal ?? code}: ${stderr.trim()}`));
      } else {
        done({ ms, stdout });
      }
    });
  });
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0;
}

async function main(o: Options): Promise<number> {
  startWatchdog(processes, 15 * 60_000);
  const run = new RunRecord('cli-startup', SELF);
  console.log(`cli-startup benchmark: ${o.runs} runs of each command`);
  console.log(run.machineLine());

  const node = await startOrchestraNode(processes, {
    name: 'cli-startup',
    settings: {},
    orchestraEnv: o.orchestraEnv,
  });
  // The CLI's environment: no ORCHESTRA_* and a directory without .orchestra, so that the
  // credential comes from the flags alone.
  const cwd = tempDir(processes, 'orchestra-bench-cli-');
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '' };
  const whoamiArgs = ['whoami', '--url', node.url, '--api-key', adminKeyOf(node), '--json'];

  const cli = (label: string, root: string): Subject[] => [
    {
      name: `${label}: orchestra version`,
      args: [join(root, BIN), 'version'],
      check: (out) => {
        if (!out.startsWith('orchestra ')) throw new Error(`version printed "${out}"`);
      },
    },
    {
      name: `${label}: orchestra whoami`,
      args: [join(root, BIN), ...whoamiArgs],
      check: (out) => {
        if ((JSON.parse(out) as { role?: string }).role !== 'admin') {
          throw new Error(`whoami printed ${out}`);
        }
      },
    },
  ];
  const subjects: Subject[] = [
    { name: 'node -e 0 (anchor)', args: ['-e', '0'], check: () => undefined },
    ...cli('after', REPO_ROOT),
    ...(o.compare !== undefined ? cli(o.compareLabel, o.compare) : []),
  ];

  // Each once, checked, before anything is measured: a wrong setup measures nothing.
  for (const subject of subjects) subject.check((await timeRun(subject.args, cwd, env)).stdout);

  const samples = new Map<string, number[]>(subjects.map((s) => [s.name, []]));
  for (let i = 0; i < o.runs; i += 1) {
    // A rotating order, so that a change in the machine's load hits every command.
    for (let j = 0; j < subjects.length; j += 1) {
      const subject = subjects[(i + j) % subjects.length];
      if (subject === undefined) continue;
      const { ms, stdout } = await timeRun(subject.args, cwd, env);
      subject.check(stdout);
      samples.get(subject.name)?.push(round3(ms));
    }
  }

  const anchor = median(samples.get(subjects[0]?.name ?? '') ?? []);
  const results = subjects.map((s) => {
    const ms = samples.get(s.name) ?? [];
    return {
      name: s.name,
      command: ['node', ...s.args.map((a) => (a.startsWith('ork_') ? 'ork_…' : a))].join(' '),
      medianMs: round1(median(ms)),
      p90Ms: round1(quantile(ms, 0.9)),
      minMs: round1(Math.min(...ms)),
      ratioToAnchor: round1(median(ms) / anchor),
      samplesMs: ms,
    };
  });
  console.log(`\nspawn → exit, ms (${o.runs} runs each, in turns)\n`);
  console.log(
    table(
      ['command', 'median', 'p90', 'min', '× node -e 0'],
      results.map((r) => [r.name, r.medianMs, r.p90Ms, r.minMs, r.ratioToAnchor]),
    ),
  );
  const file = run.write(o, {
    parameters: {
      runs: o.runs,
      compare: o.compare ?? null,
      compareLabel: o.compare !== undefined ? o.compareLabel : null,
      node: process.execPath,
    },
    serverWarnings: node.warnings(),
    results,
  });
  console.log(`\nwrote ${file}`);
  return 0;
}

await runBenchmark({ script: SELF, processes, stopping: 'the server', readOptions, main });
