/**
 * Runs the benchmarks in bench/, one after the other, each in its own process.
 *
 *   npm run bench                         every benchmark, default options
 *   npm run bench -- http-auth --postgres one benchmark; the options go to it
 *   npm run bench:dispatch                the task dispatch benchmark (SQLite)
 *   npm run bench -- backlog              a task behind 0 to 100,000 that nobody can take
 *   npm run bench:realtime                the realtime fan-out benchmark
 *   npm run bench:config                  the config center's watch against etcd
 *   npm run bench:cluster                 1 node against 3 nodes on PostgreSQL, NATS, etcd, Redis
 *   npm run bench:noisy-neighbour         another tenant's latency while one reads huge histories
 *   npm run bench:cli-startup             the CLI's start-up against node -e 0
 *   npm run bench:mcp                     tool calls through /mcp/{view} against the upstream directly
 *   npm run bench:agents                  hosted agents: model calls against the client directly; 1,000 runs at once
 *   npm run bench:instances               workspace instances: create→running, exec, files, checkpoints against bare bwrap
 *   npm run bench:instances-docker        docker-driver instances: create→running and exec against docker run and docker exec
 *   npm run bench -- --duration 5         every benchmark, options passed through
 *
 * See bench/README.md.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

/** Every benchmark: a script bench/<name>.ts that accepts --help. */
const BENCHMARKS = [
  'http-auth',
  'dispatch',
  'backlog',
  'realtime',
  'config',
  'cluster',
  'noisy-neighbour',
  'cli-startup',
  'mcp',
  'agents',
  'instances',
  'instances-docker',
] as const;

const HELP = `Usage: node bench/run.ts [benchmark] [options]

Benchmarks: ${BENCHMARKS.join(', ')}
Without a benchmark name every benchmark runs. Options go to the benchmark(s); run
"node bench/run.ts <benchmark> --help" for them.`;

const args = process.argv.slice(2);
if (args[0] === '--help' || args[0] === '-h') {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const named = BENCHMARKS.find((b) => b === args[0]);
if (named === undefined && args[0] !== undefined && !args[0].startsWith('-')) {
  process.stderr.write(`unknown benchmark "${args[0]}"\n\n${HELP}\n`);
  process.exit(2);
}
const selected = named ? [named] : [...BENCHMARKS];
const passThrough = named ? args.slice(1) : args;

let current: ChildProcess | undefined;
// The benchmark cleans up its own servers on a signal; wait for it instead of dying first.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    current?.kill(signal);
  });
}

function run(name: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, `${name}.ts`), ...passThrough],
      {
        stdio: 'inherit',
      },
    );
    current = child;
    child.once('error', (err) => {
      process.stderr.write(`${name}: ${err.message}\n`);
      resolve(1);
    });
    child.once('exit', (code, signal) => {
      current = undefined;
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

let failed = 0;
for (const name of selected) {
  if (selected.length > 1) process.stdout.write(`\n=== ${name}\n`);
  const code = await run(name);
  if (code !== 0) {
    failed = code;
    process.stderr.write(`${name} failed (exit code ${code})\n`);
    break;
  }
}
process.exit(failed);
