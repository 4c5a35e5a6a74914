/**
 * Benchmark: workspace instances with the process driver. Anchor, in the same run: a bare
 * `bwrap` invocation with the sandbox's own arguments running `true`, the physical limit of
 * the process driver (every instance start and every exec is at least one).
 *
 * Measures, through the API as a client sees it:
 * - create→running (`POST /v1/instances` answers once the instance runs its service) at
 *   p50/p95/p99, one at a time, 10 at once and 100 at once (a batch), from an empty base and
 *   from a 10,000-file git repository;
 * - exec round trip (`POST …/exec` of `true`) against the bare bwrap;
 * - file write and read of 4 KiB through the files API;
 * - checkpoint save (first, and after 10 files changed) and restore of that repository,
 *   against plain `git add -A && git commit` of the same tree;
 * - 100 idle instances running at once, and memory per idle instance (Orchestra's RSS
 *   growth plus what their cgroups or processes hold).
 *
 *   node bench/instances.ts [--samples 100] [--files 10000]
 *   node bench/instances.ts --smoke     a small run that checks the setup, not a measurement
 *
 * The docker driver has its own: bench/instances-docker.ts (`docker run` and `docker exec`).
 * Writes bench/results/instances-<store>-<date>.json. See bench/README.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandboxCommand } from '../packages/server/src/platform/sandbox.ts';
import {
  AdminApi,
  type CommonOptions,
  commonOptions,
  createInstancesAtOnce,
  deleteInstances,
  f2,
  intOption,
  type LatencySummary,
  latencySummary,
  makeGitRepository,
  Processes,
  parseOptions,
  RunRecord,
  ratio,
  round1,
  runBenchmark,
  startOrchestraNode,
  startWatchdog,
  table,
  vmRssBytes,
} from './common.ts';

const SELF = import.meta.filename;
const HELP = `Usage: node bench/instances.ts [options]

  --samples N          samples of each one-at-a-time measure (default 100)
  --files N            files of the repository base (default 10000)
  --smoke              a small, quick run (checks the setup; not a measurement)
  --postgres           Orchestra on PostgreSQL (BENCH_POSTGRES_URL) instead of SQLite
  --out-dir DIR        where to write the result (default bench/results)
  --orchestra-env K=V  extra setting for the Orchestra node (repeatable)`;

interface Options extends CommonOptions {
  samples: number;
  files: number;
  smoke: boolean;
}

type Summary = LatencySummary;
const summary = latencySummary;

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await work();
  return { ms: performance.now() - started, value };
}

/** Runs a command to its end; resolves to its wall time. */
function runOnce(command: string, args: string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd, stdio: 'ignore', env: { PATH: '/usr/bin:/bin' } });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(performance.now() - started) : reject(new Error(`${command}: ${code}`)),
    );
  });
}

/** The anchor: bwrap with the sandbox's own arguments, running `true`. */
async function bareBwrap(dir: string, samples: number): Promise<number[]> {
  const wrapped = sandboxCommand({
    command: 'true',
    args: [],
    workDir: dir,
    network: false,
    readOnlyPaths: [],
    path: '/usr/bin:/bin',
    mountCommandPaths: false,
  });
  const out: number[] = [];
  for (let i = 0; i < samples; i++) out.push(await runOnce(wrapped.command, wrapped.args, dir));
  return out;
}

async function main(o: Options): Promise<number> {
  const record = new RunRecord('instances', SELF);
  process.stdout.write(record.machineLine());
  const sources = mkdtempSync(join(tmpdir(), 'orchestra-bench-sources-'));
  processes.onCleanup(() => rmSync(sources, { recursive: true, force: true }));
  const repo = join(sources, 'repo');
  makeGitRepository(repo, o.files);
  const node = await startOrchestraNode(processes, {
    name: 'instances',
    settings: {
      ORCHESTRA_INSTANCE_SOURCE_ROOTS: sources,
      ORCHESTRA_TENANT_MAX_INSTANCES: '0',
      ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES: '0',
      ORCHESTRA_INSTANCE_STOP_GRACE_MS: '1000',
    },
    orchestraEnv: o.orchestraEnv,
  });
  const api = new AdminApi(node);
  const service = { command: ['sleep', '100000'] };
  await api.call('POST', '/v1/workspace-templates', { name: 'empty', startup: service });
  await api.call('POST', '/v1/workspace-templates', {
    name: 'repo',
    startup: service,
    base: { type: 'git', path: repo },
  });
  const anchorDir = mkdtempSync(join(tmpdir(), 'orchestra-bench-bwrap-'));
  processes.onCleanup(() => rmSync(anchorDir, { recursive: true, force: true }));

  // Warm both up: the first sandbox and the first request pay for loading.
  await bareBwrap(anchorDir, 5);
  await deleteInstances(api, (await createInstancesAtOnce(api, 'empty', 3)).ids);

  const anchor = summary(await bareBwrap(anchorDir, o.samples));
  process.stdout.write(`bare bwrap: p50 ${anchor.p50} ms, p95 ${anchor.p95} ms\n`);

  const creates: Record<'empty' | 'repo', Record<string, Summary>> = { empty: {}, repo: {} };
  const repoSamples = Math.max(5, Math.floor(o.samples / 5));
  for (const template of ['empty', 'repo'] as const) {
    const one: number[] = [];
    const n = template === 'empty' ? o.samples : repoSamples;
    for (let i = 0; i < n; i++) {
      const { ms, ids } = await createInstancesAtOnce(api, template, 1);
      one.push(...ms);
      await deleteInstances(api, ids);
    }
    creates[template].one = summary(one);
    const ten: number[] = [];
    for (let round = 0; round < (template === 'empty' ? 5 : 2); round++) {
      const { ms, ids } = await createInstancesAtOnce(api, template, 10);
      ten.push(...ms);
      await deleteInstances(api, ids);
    }
    creates[template].ten = summary(ten);
    const hundred = await createInstancesAtOnce(api, template, o.smoke ? 20 : 100);
    creates[template].hundred = summary(hundred.ms);
    await deleteInstances(api, hundred.ids);
    process.stdout.write(
      `create→running (${template}): 1 p95 ${creates[template].one?.p95} ms, 10 p95 ${creates[template].ten?.p95} ms, 100 p95 ${creates[template].hundred?.p95} ms\n`,
    );
  }

  // Exec, files and checkpoints in one instance of the repository.
  const box = (await createInstancesAtOnce(api, 'repo', 1)).ids[0] as string;
  const execs: number[] = [];
  for (let i = 0; i < o.samples; i++) {
    execs.push(
      (await timed(() => api.call('POST', `/v1/instances/${box}/exec`, { command: ['true'] }))).ms,
    );
  }
  const payload = new Uint8Array(4096).fill(97);
  const writes: number[] = [];
  const reads: number[] = [];
  for (let i = 0; i < o.samples; i++) {
    writes.push(
      (
        await timed(() =>
          api.call(
            'PUT',
            `/v1/instances/${box}/files/content?path=bench/f${i % 10}.txt`,
            undefined,
            payload,
          ),
        )
      ).ms,
    );
    reads.push(
      (
        await timed(() =>
          api.call('GET', `/v1/instances/${box}/files/content?path=bench/f${i % 10}.txt`),
        )
      ).ms,
    );
  }
  const firstCheckpoint = await timed(() =>
    api.call<{ id: string }>('POST', `/v1/instances/${box}/checkpoints`, {}),
  );
  for (let i = 0; i < 10; i++) {
    await api.call(
      'PUT',
      `/v1/instances/${box}/files/content?path=pkg${i}/file${i * 100}.ts`,
      undefined,
      payload,
    );
  }
  const secondCheckpoint = await timed(() =>
    api.call('POST', `/v1/instances/${box}/checkpoints`, {}),
  );
  const restore = await timed(() =>
    api.call('POST', `/v1/instances/${box}/checkpoints/${firstCheckpoint.value.id}/restore`, {}),
  );
  // The anchor: git itself committing the same tree in a plain repository.
  const plain = mkdtempSync(join(tmpdir(), 'orchestra-bench-git-'));
  processes.onCleanup(() => rmSync(plain, { recursive: true, force: true }));
  execFileSync('cp', ['-r', `${repo}/.`, plain]);
  rmSync(join(plain, '.git'), { recursive: true, force: true });
  execFileSync('git', ['-C', plain, 'init', '-q']);
  const gitCommit = await timed(async () => {
    execFileSync('git', ['-C', plain, 'add', '-A']);
    execFileSync('git', [
      '-C',
      plain,
      '-c',
      'user.name=b',
      '-c',
      'user.email=b@b',
      'commit',
      '-q',
      '-m',
      'x',
    ]);
  });
  await deleteInstances(api, [box]);

  // 100 idle instances at once, and what each costs.
  const before = vmRssBytes(node.pid) ?? 0;
  const idle = await createInstancesAtOnce(api, 'empty', o.smoke ? 20 : 100);
  const listed = await api.call<{ items: { state: string }[] }>(
    'GET',
    '/v1/instances?state=running&limit=200',
  );
  const usage = await api.call<{
    instances: { usage: { memory_bytes: number } | null }[];
    node: { limits: { mechanism: string } };
  }>('GET', '/v1/resources/usage');
  const sandboxBytes = usage.instances.reduce((sum, i) => sum + (i.usage?.memory_bytes ?? 0), 0);
  const after = vmRssBytes(node.pid) ?? 0;
  const perInstance = (after - before + sandboxBytes) / idle.ids.length;
  await deleteInstances(api, idle.ids);

  const result = {
    options: { samples: o.samples, files: o.files, smoke: o.smoke },
    limits: usage.node.limits.mechanism,
    anchor_bare_bwrap_ms: anchor,
    create_to_running_ms: creates,
    ratio_p95_create_empty_one_to_bwrap: ratio(creates.empty.one?.p95, anchor.p95),
    exec_round_trip_ms: summary(execs),
    ratio_p95_exec_to_bwrap: ratio(summary(execs).p95, anchor.p95),
    file_write_4k_ms: summary(writes),
    file_read_4k_ms: summary(reads),
    checkpoint_ms: {
      first: round1(firstCheckpoint.ms),
      after_10_changes: round1(secondCheckpoint.ms),
      restore: round1(restore.ms),
      anchor_git_add_commit: round1(gitCommit.ms),
      ratio_first_to_git: ratio(firstCheckpoint.ms, gitCommit.ms),
    },
    idle_instances: {
      running_at_once: listed.items.length,
      orchestra_rss_growth_bytes: after - before,
      sandbox_memory_bytes: sandboxBytes,
      memory_per_instance_bytes: Math.round(perInstance),
    },
  };
  process.stdout.write(
    `\n${table(
      ['measure', 'p50 ms', 'p95 ms', 'p99 ms', 'p95 / bare bwrap'],
      [
        ['bare bwrap (anchor)', f2(anchor.p50), f2(anchor.p95), f2(anchor.p99), '1.00'],
        ...(['empty', 'repo'] as const).flatMap((t) =>
          (['one', 'ten', 'hundred'] as const).map((k) => {
            const s = creates[t][k] as Summary;
            return [
              `create→running ${t} ×${k}`,
              f2(s.p50),
              f2(s.p95),
              f2(s.p99),
              f2(ratio(s.p95, anchor.p95)),
            ];
          }),
        ),
        [
          'exec round trip',
          f2(result.exec_round_trip_ms.p50),
          f2(result.exec_round_trip_ms.p95),
          f2(result.exec_round_trip_ms.p99),
          f2(result.ratio_p95_exec_to_bwrap),
        ],
        [
          'file write 4 KiB',
          f2(result.file_write_4k_ms.p50),
          f2(result.file_write_4k_ms.p95),
          f2(result.file_write_4k_ms.p99),
          '-',
        ],
        [
          'file read 4 KiB',
          f2(result.file_read_4k_ms.p50),
          f2(result.file_read_4k_ms.p95),
          f2(result.file_read_4k_ms.p99),
          '-',
        ],
      ],
    )}\n`,
  );
  process.stdout.write(
    `checkpoint of ${o.files} files: first ${result.checkpoint_ms.first} ms (plain git add+commit ${result.checkpoint_ms.anchor_git_add_commit} ms), after 10 changes ${result.checkpoint_ms.after_10_changes} ms, restore ${result.checkpoint_ms.restore} ms\n` +
      `${result.idle_instances.running_at_once} idle instances running at once; ${Math.round(perInstance / 1024)} KiB each (limits: ${result.limits})\n`,
  );
  const file = record.write(o, result, o.smoke ? 'smoke' : undefined);
  process.stdout.write(`\nwrote ${file}\n`);
  return 0;
}

const processes = new Processes({ stopTimeoutMs: 15_000, childrenFirst: false });
await runBenchmark<Options>({
  script: SELF,
  processes,
  stopping: 'Orchestra and its instances',
  readOptions(argv) {
    const values = parseOptions(argv, HELP, {
      samples: { type: 'string' },
      files: { type: 'string' },
      smoke: { type: 'boolean' },
    });
    if (values === undefined) return undefined;
    const smoke = values.smoke ?? false;
    return {
      ...commonOptions(values),
      samples: intOption('samples', values.samples, smoke ? 10 : 100, 1),
      files: intOption('files', values.files, smoke ? 500 : 10_000, 1),
      smoke,
    };
  },
  async main(o) {
    startWatchdog(processes, 30 * 60_000);
    return main(o);
  },
});
