/**
 * Benchmark: workspace instances with the docker driver. Anchors, in the same run and on
 * the same engine (a dockerd of the benchmark's own, on a private socket, with a busybox
 * image made by `docker import`), through the Engine API as the docker CLI uses it:
 * `docker run -d --network none --init IMAGE sleep infinity` (create and start a container,
 * until it runs), as many at once as Orchestra is asked for; the same with a bind mount of a
 * copy of the repository base (made before, not timed); `git clone` of that repository
 * followed by that `docker run` (what one would do by hand); and `docker exec CONTAINER
 * true` (create and start an exec, until it ended). Anchor and Orchestra take turns.
 *
 * Measures, through Orchestra's API as a client sees it:
 * - create→running of a docker instance (`POST /v1/instances` answers once its container
 *   runs) at p50/p95/p99, one at a time, 10 at once and 100 at once, from an empty base;
 *   one at a time, 10 at once and 100 at once from a 10,000-file git repository;
 * - exec round trip (`POST …/exec` of `true`) against the `docker exec` anchor;
 * - 100 instances running at once and the memory each costs: the containers' cgroups, the
 *   engine's (a containerd-shim per container, dockerd's and containerd's growth) and
 *   Orchestra's RSS growth, against the same for 100 bare `docker run -d` containers.
 *
 *   node bench/instances-docker.ts [--samples 50] [--files 10000]
 *   node bench/instances-docker.ts --smoke     a small run that checks the setup
 *
 * Needs root (dockerd) and Debian's docker.io and busybox-static.
 * Writes bench/results/instances-docker-<store>-<date>.json. See bench/README.md.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { DockerDaemon } from '../packages/server/test/docker-daemon.ts';
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
  runBenchmark,
  SETTLE_MS,
  sleep,
  startOrchestraNode,
  startWatchdog,
  table,
  tempDir,
  vmRssBytes,
} from './common.ts';

const SELF = import.meta.filename;
const IMAGE = 'orchestra-bench/busybox:1';
const HELP = `Usage: node bench/instances-docker.ts [options]

  --samples N          samples of each one-at-a-time measure of an empty base (default 50;
                       the repository base gets a fifth of them, at least 5)
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

const summary = latencySummary;
type Concurrency = 'one' | 'ten' | 'hundred';

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

/** What the engine holds for its containers, outside their cgroups. */
interface EngineMemory {
  dockerd_rss_bytes: number;
  containerd_rss_bytes: number;
  shims: number;
  /** Resident memory of the containerd-shim processes, counting shared pages in each. */
  shims_rss_bytes: number;
  /** Their proportional set size: shared pages split between the processes sharing them. */
  shims_pss_bytes: number;
}

function pssBytes(pid: number): number {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** The benchmark's dockerd, its containerd and the shims of its containers (by their paths). */
function engineMemory(dockerd: DockerDaemon): EngineMemory {
  const dir = dockerd.dir.path;
  const dockerdPid = Number(readFileSync(join(dir, 'docker.pid'), 'utf8').trim());
  const memory: EngineMemory = {
    dockerd_rss_bytes: vmRssBytes(dockerdPid) ?? 0,
    containerd_rss_bytes: 0,
    shims: 0,
    shims_rss_bytes: 0,
    shims_pss_bytes: 0,
  };
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (!argv.some((arg) => arg.startsWith(dir))) continue;
    const pid = Number(entry);
    const program = argv[0] ?? '';
    if (program.includes('containerd-shim')) {
      memory.shims += 1;
      memory.shims_rss_bytes += vmRssBytes(pid) ?? 0;
      memory.shims_pss_bytes += pssBytes(pid);
    } else if (/(^|\/)containerd$/.test(program)) {
      memory.containerd_rss_bytes += vmRssBytes(pid) ?? 0;
    }
  }
  return memory;
}

interface DockerStats {
  memory_stats?: {
    usage?: number;
    stats?: { inactive_file?: number; total_inactive_file?: number };
  };
}

/** The containers' cgroups' memory, less inactive file cache (as the driver reports it). */
async function cgroupMemoryBytes(containers: Docker.Container[]): Promise<number> {
  let sum = 0;
  for (let i = 0; i < containers.length; i += 10) {
    const stats = await Promise.all(
      containers
        .slice(i, i + 10)
        .map(
          (c) =>
            c.stats({ stream: false, 'one-shot': true } as { stream: false }) as Promise<unknown>,
        ),
    );
    for (const s of stats as DockerStats[]) {
      const memory = s.memory_stats ?? {};
      const cache = memory.stats?.inactive_file ?? memory.stats?.total_inactive_file ?? 0;
      sum += Math.max(0, (memory.usage ?? 0) - cache);
    }
  }
  return sum;
}

async function removeContainers(containers: Docker.Container[]): Promise<void> {
  for (let i = 0; i < containers.length; i += 10) {
    await Promise.all(containers.slice(i, i + 10).map((c) => c.remove({ force: true })));
  }
}

async function main(o: Options): Promise<number> {
  const record = new RunRecord('instances-docker', SELF);
  process.stdout.write(record.machineLine());
  const sources = tempDir(processes, 'orchestra-bench-sources-');
  const repo = join(sources, 'repo');
  makeGitRepository(repo, o.files);
  // The bind-mount anchor's copy of the repository, and the clones of the by-hand anchor.
  const scratch = tempDir(processes, 'orchestra-bench-docker-anchor-');
  const copy = join(scratch, 'copy');
  execFileSync('cp', ['-a', repo, copy]);

  const dockerd = await DockerDaemon.start();
  processes.onCleanup(() => dockerd.stop());
  await dockerd.importBusybox(IMAGE);
  const docker = new Docker({ socketPath: dockerd.socketPath });
  const engineVersion = (await docker.version()).Version;
  // Runs before dockerd stops (steps run last first): no anchor container is left behind.
  processes.onCleanup(async () => {
    const left = await docker.listContainers({ all: true }).catch(() => []);
    await removeContainers(left.map((c) => docker.getContainer(c.Id))).catch(() => {});
  });
  const node = await startOrchestraNode(processes, {
    name: 'instances-docker',
    settings: {
      ORCHESTRA_DOCKER_HOST: dockerd.socketPath,
      ORCHESTRA_INSTANCE_SOURCE_ROOTS: sources,
      // No quota may refuse the 100: each instance holds 1 CPU and 2 GiB by default.
      ORCHESTRA_TENANT_MAX_INSTANCES: '0',
      ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES: '0',
      ORCHESTRA_TENANT_MAX_RUNNING_CPUS: '0',
      ORCHESTRA_TENANT_MAX_RUNNING_MEMORY_BYTES: '0',
      ORCHESTRA_TENANT_MAX_STORAGE_BYTES: '0',
      ORCHESTRA_INSTANCE_STOP_GRACE_MS: '0',
    },
    orchestraEnv: o.orchestraEnv,
  });
  const api = new AdminApi(node);
  await api.call('POST', '/v1/workspace-templates', {
    name: 'box',
    driver: 'docker',
    image: IMAGE,
  });
  await api.call('POST', '/v1/workspace-templates', {
    name: 'repo',
    driver: 'docker',
    image: IMAGE,
    base: { type: 'git', path: repo },
  });

  // The anchors: the Engine API alone, as `docker run -d` and `docker exec` use it.
  const dockerRun = async (bind?: string) => {
    const container = await docker.createContainer({
      Image: IMAGE,
      Cmd: ['sleep', 'infinity'],
      HostConfig: {
        NetworkMode: 'none',
        Init: true,
        ...(bind === undefined ? {} : { Binds: [`${bind}:${bind}`] }),
      },
      ...(bind === undefined ? {} : { WorkingDir: bind }),
    });
    await container.start();
    return container;
  };
  const dockerExec = async (container: Docker.Container) => {
    const exec = await container.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    await new Promise<void>((resolve) => {
      stream.once('end', resolve);
      stream.once('close', resolve);
      stream.resume();
    });
    await exec.inspect();
  };
  /** `count` anchors at once, each timed from its own start. */
  const runAtOnce = async (count: number, bind?: () => string) => {
    const results = await Promise.all(
      Array.from({ length: count }, async () => {
        let container: Docker.Container | undefined;
        const ms = await timed(async () => {
          container = await dockerRun(bind?.());
        });
        return { ms, container: container as unknown as Docker.Container };
      }),
    );
    return { ms: results.map((r) => r.ms), containers: results.map((r) => r.container) };
  };
  // By hand: the clone Orchestra makes (same arguments), then `docker run` with it mounted.
  let clones = 0;
  const cloneAndRunAtOnce = async (count: number) => {
    const results = await Promise.all(
      Array.from({ length: count }, async () => {
        const dir = join(scratch, `clone${clones++}`);
        let cloneMs = 0;
        let container: Docker.Container | undefined;
        const ms = await timed(async () => {
          cloneMs = await timed(async () => {
            await gitClone(repo, dir);
          });
          container = await dockerRun(dir);
        });
        return { ms, cloneMs, dir, container: container as unknown as Docker.Container };
      }),
    );
    await removeContainers(results.map((r) => r.container));
    for (const r of results) rmSync(r.dir, { recursive: true, force: true });
    return { ms: results.map((r) => r.ms), cloneMs: results.map((r) => r.cloneMs) };
  };

  // Warm up every path.
  for (let i = 0; i < 3; i++) {
    const container = await dockerRun();
    await dockerExec(container);
    await container.remove({ force: true });
    const made = await createInstancesAtOnce(api, 'box', 1);
    await api.call('POST', `/v1/instances/${made.ids[0]}/exec`, { command: ['true'] });
    await deleteInstances(api, made.ids);
  }
  await removeContainers((await runAtOnce(1, () => copy)).containers);
  await cloneAndRunAtOnce(1);
  await deleteInstances(api, (await createInstancesAtOnce(api, 'repo', 1)).ids);

  const anchorRun: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const creates: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const execAnchor: number[] = [];
  const execs: number[] = [];

  // One at a time, in turns: a `docker run` and an exec, then an instance and an exec.
  for (let i = 0; i < o.samples; i++) {
    const { ms, containers } = await runAtOnce(1);
    anchorRun.one.push(...ms);
    const running = containers[0] as Docker.Container;
    execAnchor.push(await timed(() => dockerExec(running)));
    await running.remove({ force: true });
    const made = await createInstancesAtOnce(api, 'box', 1);
    creates.one.push(...made.ms);
    execs.push(
      await timed(() =>
        api.call('POST', `/v1/instances/${made.ids[0]}/exec`, { command: ['true'] }),
      ),
    );
    await deleteInstances(api, made.ids);
  }
  process.stdout.write(
    `one at a time: docker run p95 ${summary(anchorRun.one).p95} ms, create p95 ${summary(creates.one).p95} ms\n`,
  );

  // Ten at once, in turns.
  for (let round = 0; round < (o.smoke ? 1 : 5); round++) {
    const anchor = await runAtOnce(10);
    anchorRun.ten.push(...anchor.ms);
    await removeContainers(anchor.containers);
    const made = await createInstancesAtOnce(api, 'box', 10);
    creates.ten.push(...made.ms);
    await deleteInstances(api, made.ids);
  }
  process.stdout.write(
    `10 at once: docker run p95 ${summary(anchorRun.ten).p95} ms, create p95 ${summary(creates.ten).p95} ms\n`,
  );

  // A hundred at once, each side left running for a moment to measure what it holds.
  const hundred = o.smoke ? 20 : 100;
  const idleMs = 2 * SETTLE_MS;
  const engineBefore = engineMemory(dockerd);
  const anchorHundred = await runAtOnce(hundred);
  anchorRun.hundred = anchorHundred.ms;
  await sleep(idleMs);
  const anchorRunning = (await docker.listContainers({ filters: { status: ['running'] } })).length;
  const anchorEngine = engineMemory(dockerd);
  const anchorCgroups = await cgroupMemoryBytes(anchorHundred.containers);
  await removeContainers(anchorHundred.containers);
  await sleep(idleMs);

  const engineBetween = engineMemory(dockerd);
  const orchestraBefore = vmRssBytes(node.pid) ?? 0;
  const made = await createInstancesAtOnce(api, 'box', hundred);
  creates.hundred = made.ms;
  await sleep(idleMs);
  const listed = await api.call<{ items: { state: string }[] }>(
    'GET',
    '/v1/instances?state=running&limit=200',
  );
  const ours = await docker.listContainers({
    filters: { status: ['running'], label: ['orchestra.instance'] },
  });
  const orchestraEngine = engineMemory(dockerd);
  const orchestraAfter = vmRssBytes(node.pid) ?? 0;
  const orchestraCgroups = await cgroupMemoryBytes(ours.map((c) => docker.getContainer(c.Id)));
  await deleteInstances(api, made.ids);
  process.stdout.write(
    `${hundred} at once: docker run p95 ${summary(anchorRun.hundred).p95} ms, create p95 ${summary(creates.hundred).p95} ms; ${listed.items.length} instances running at once\n`,
  );

  // The 10,000-file repository: one at a time, then 10 and 100 at once, in turns.
  const repoAnchor: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const repoByHand: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const repoClone: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const repoCreates: Record<Concurrency, number[]> = { one: [], ten: [], hundred: [] };
  const repoSamples = o.smoke ? 2 : Math.max(5, Math.floor(o.samples / 5));
  const measureRepo = async (key: Concurrency, count: number) => {
    const anchor = await runAtOnce(count, () => copy);
    repoAnchor[key].push(...anchor.ms);
    await removeContainers(anchor.containers);
    const byHand = await cloneAndRunAtOnce(count);
    repoByHand[key].push(...byHand.ms);
    repoClone[key].push(...byHand.cloneMs);
    const instances = await createInstancesAtOnce(api, 'repo', count);
    repoCreates[key].push(...instances.ms);
    await deleteInstances(api, instances.ids);
  };
  for (let i = 0; i < repoSamples; i++) await measureRepo('one', 1);
  process.stdout.write(
    `repository, one at a time: clone + docker run p95 ${summary(repoByHand.one).p95} ms, create p95 ${summary(repoCreates.one).p95} ms\n`,
  );
  for (let round = 0; round < (o.smoke ? 1 : 2); round++) await measureRepo('ten', 10);
  process.stdout.write(
    `repository, 10 at once: clone + docker run p95 ${summary(repoByHand.ten).p95} ms, create p95 ${summary(repoCreates.ten).p95} ms\n`,
  );
  await measureRepo('hundred', hundred);
  process.stdout.write(
    `repository, ${hundred} at once: clone + docker run p95 ${summary(repoByHand.hundred).p95} ms, create p95 ${summary(repoCreates.hundred).p95} ms\n`,
  );

  const anchorSummary = {
    one: summary(anchorRun.one),
    ten: summary(anchorRun.ten),
    hundred: summary(anchorRun.hundred),
  };
  const createSummary = {
    empty: {
      one: summary(creates.one),
      ten: summary(creates.ten),
      hundred: summary(creates.hundred),
    },
    repo: {
      one: summary(repoCreates.one),
      ten: summary(repoCreates.ten),
      hundred: summary(repoCreates.hundred),
    },
  };
  const byConcurrency = (samples: Record<Concurrency, number[]>) => ({
    one: summary(samples.one),
    ten: summary(samples.ten),
    hundred: summary(samples.hundred),
  });
  const repoAnchorSummary = {
    docker_run_bind_mount: byConcurrency(repoAnchor),
    git_clone_then_docker_run: byConcurrency(repoByHand),
    git_clone_alone: byConcurrency(repoClone),
  };
  const anchorExec = summary(execAnchor);
  const exec = summary(execs);
  const orchestraGrowth = orchestraAfter - orchestraBefore;
  const anchorHeld = heldMemory(engineBefore, anchorEngine, anchorCgroups, anchorRunning, 0);
  const orchestraHeld = heldMemory(
    engineBetween,
    orchestraEngine,
    orchestraCgroups,
    listed.items.length,
    orchestraGrowth,
  );
  const result = {
    options: { samples: o.samples, files: o.files, repo_samples: repoSamples, smoke: o.smoke },
    engine: { version: engineVersion },
    anchor_docker_run_ms: anchorSummary,
    create_to_running_ms: createSummary,
    ratio_p95_create_to_docker_run: {
      one: ratio(createSummary.empty.one.p95, anchorSummary.one.p95),
      ten: ratio(createSummary.empty.ten.p95, anchorSummary.ten.p95),
      hundred: ratio(createSummary.empty.hundred.p95, anchorSummary.hundred.p95),
    },
    anchor_repo_ms: repoAnchorSummary,
    ratio_p95_create_repo_to_docker_run_bind_mount: {
      one: ratio(createSummary.repo.one.p95, repoAnchorSummary.docker_run_bind_mount.one.p95),
      ten: ratio(createSummary.repo.ten.p95, repoAnchorSummary.docker_run_bind_mount.ten.p95),
      hundred: ratio(
        createSummary.repo.hundred.p95,
        repoAnchorSummary.docker_run_bind_mount.hundred.p95,
      ),
    },
    ratio_p95_create_repo_to_git_clone_then_docker_run: {
      one: ratio(createSummary.repo.one.p95, repoAnchorSummary.git_clone_then_docker_run.one.p95),
      ten: ratio(createSummary.repo.ten.p95, repoAnchorSummary.git_clone_then_docker_run.ten.p95),
      hundred: ratio(
        createSummary.repo.hundred.p95,
        repoAnchorSummary.git_clone_then_docker_run.hundred.p95,
      ),
    },
    anchor_docker_exec_ms: anchorExec,
    exec_round_trip_ms: exec,
    ratio_p95_exec_to_docker_exec: ratio(exec.p95, anchorExec.p95),
    running_at_once: {
      idle_ms_before_measuring: idleMs,
      anchor: { containers_running: anchorRunning, ...anchorHeld },
      orchestra: {
        instances_running: listed.items.length,
        containers_running: ours.length,
        orchestra_rss_before_bytes: orchestraBefore,
        orchestra_rss_during_bytes: orchestraAfter,
        orchestra_rss_growth_bytes: orchestraGrowth,
        ...orchestraHeld,
      },
      note:
        'per instance total = (cgroups + containerd-shims PSS + Orchestra RSS growth) / count; ' +
        'dockerd and containerd RSS growth is apart (whichever side runs first grows their heaps)',
    },
    orchestra_warnings: node.warnings(),
  };

  const row = (name: string, s: LatencySummary, ...ratios: (number | null | string)[]) => [
    name,
    f2(s.p50),
    f2(s.p95),
    f2(s.p99),
    ...ratios.map((r) => (typeof r === 'string' ? r : f2(r))),
  ];
  const r = result;
  const repoRatio = (key: Concurrency) => [
    r.ratio_p95_create_repo_to_docker_run_bind_mount[key],
    r.ratio_p95_create_repo_to_git_clone_then_docker_run[key],
  ];
  process.stdout.write(
    `\n${table(
      ['measure', 'p50 ms', 'p95 ms', 'p99 ms', 'p95 / docker run', 'p95 / clone + run'],
      [
        row('docker run -d ×1 (anchor)', anchorSummary.one, '1.00', '-'),
        row(
          'create→running empty ×1',
          createSummary.empty.one,
          r.ratio_p95_create_to_docker_run.one,
          '-',
        ),
        row('docker run -d ×10 (anchor)', anchorSummary.ten, '1.00', '-'),
        row(
          'create→running empty ×10',
          createSummary.empty.ten,
          r.ratio_p95_create_to_docker_run.ten,
          '-',
        ),
        row(`docker run -d ×${hundred} (anchor)`, anchorSummary.hundred, '1.00', '-'),
        row(
          `create→running empty ×${hundred}`,
          createSummary.empty.hundred,
          r.ratio_p95_create_to_docker_run.hundred,
          '-',
        ),
        row(
          'docker run -d -v copy ×1 (anchor)',
          repoAnchorSummary.docker_run_bind_mount.one,
          '1.00',
          '-',
        ),
        row('git clone alone ×1', repoAnchorSummary.git_clone_alone.one, '-', '-'),
        row(
          'git clone + docker run ×1',
          repoAnchorSummary.git_clone_then_docker_run.one,
          '-',
          '1.00',
        ),
        row('create→running repo ×1', createSummary.repo.one, ...repoRatio('one')),
        row(
          'docker run -d -v copy ×10 (anchor)',
          repoAnchorSummary.docker_run_bind_mount.ten,
          '1.00',
          '-',
        ),
        row('git clone alone ×10', repoAnchorSummary.git_clone_alone.ten, '-', '-'),
        row(
          'git clone + docker run ×10',
          repoAnchorSummary.git_clone_then_docker_run.ten,
          '-',
          '1.00',
        ),
        row('create→running repo ×10', createSummary.repo.ten, ...repoRatio('ten')),
        row(
          `docker run -d -v copy ×${hundred} (anchor)`,
          repoAnchorSummary.docker_run_bind_mount.hundred,
          '1.00',
          '-',
        ),
        row(`git clone alone ×${hundred}`, repoAnchorSummary.git_clone_alone.hundred, '-', '-'),
        row(
          `git clone + docker run ×${hundred}`,
          repoAnchorSummary.git_clone_then_docker_run.hundred,
          '-',
          '1.00',
        ),
        row(`create→running repo ×${hundred}`, createSummary.repo.hundred, ...repoRatio('hundred')),
        row('docker exec true (anchor)', anchorExec, '1.00', '-'),
        row('exec round trip', exec, r.ratio_p95_exec_to_docker_exec, '-'),
      ],
    )}\n`,
  );
  const kib = (bytes: number) => `${Math.round(bytes / 1024)} KiB`;
  const held = (what: string, h: HeldMemory) =>
    `${what}: ${kib(h.per_instance_bytes.total)} each (cgroups ${kib(h.per_instance_bytes.cgroups)}, ` +
    `containerd-shim PSS ${kib(h.per_instance_bytes.shim_pss)} (RSS ${kib(h.per_instance_bytes.shim_rss)}), ` +
    `Orchestra RSS growth ${kib(h.per_instance_bytes.orchestra_rss_growth)}; ` +
    `dockerd + containerd RSS growth ${kib(h.per_instance_bytes.daemons_rss_growth)} apart)\n`;
  process.stdout.write(
    `\n${held(`${anchorRunning} bare containers running at once`, anchorHeld)}` +
      held(
        `${listed.items.length} instances running at once (${ours.length} containers)`,
        orchestraHeld,
      ),
  );
  const file = record.write(o, result, o.smoke ? 'smoke' : undefined);
  process.stdout.write(`\nwrote ${file}\n`);
  return 0;
}

interface HeldMemory {
  engine_before: EngineMemory;
  engine_during: EngineMemory;
  cgroups_memory_bytes: number;
  daemons_rss_growth_bytes: number;
  per_instance_bytes: {
    cgroups: number;
    shim_pss: number;
    shim_rss: number;
    daemons_rss_growth: number;
    orchestra_rss_growth: number;
    /** cgroups + shim PSS + Orchestra's RSS growth (if it grew). */
    total: number;
  };
}

/** What `count` running containers hold, from the engine's readings before and while they run. */
function heldMemory(
  before: EngineMemory,
  during: EngineMemory,
  cgroupsBytes: number,
  count: number,
  serverGrowthBytes: number,
): HeldMemory {
  const per = (bytes: number) => Math.round(bytes / Math.max(1, count));
  const daemons =
    Math.max(0, during.dockerd_rss_bytes - before.dockerd_rss_bytes) +
    Math.max(0, during.containerd_rss_bytes - before.containerd_rss_bytes);
  return {
    engine_before: before,
    engine_during: during,
    cgroups_memory_bytes: cgroupsBytes,
    daemons_rss_growth_bytes: daemons,
    per_instance_bytes: {
      cgroups: per(cgroupsBytes),
      shim_pss: per(during.shims_pss_bytes),
      shim_rss: per(during.shims_rss_bytes),
      daemons_rss_growth: per(daemons),
      orchestra_rss_growth: per(serverGrowthBytes),
      total: per(cgroupsBytes + during.shims_pss_bytes + Math.max(0, serverGrowthBytes)),
    },
  };
}

/** The clone the workspace layout makes of a git base, with the same arguments. */
function gitClone(source: string, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      ['clone', '--quiet', '--no-hardlinks', '--', source, dir],
      { timeout: 300_000 },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

const processes = new Processes({ stopTimeoutMs: 15_000, childrenFirst: false });
await runBenchmark<Options>({
  script: SELF,
  processes,
  stopping: 'Orchestra, its containers and the benchmark’s dockerd',
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
      samples: intOption('samples', values.samples, smoke ? 5 : 50, 1),
      files: intOption('files', values.files, smoke ? 500 : 10_000, 1),
      smoke,
    };
  },
  async main(o) {
    startWatchdog(processes, 45 * 60_000);
    return main(o);
  },
});
