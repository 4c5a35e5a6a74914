/**
 * Benchmark: workspace instances with the docker driver. Anchors, in the same run and on
 * the same engine (a dockerd of the benchmark's own, on a private socket, with a busybox
 * image made by `docker import`): what `docker run -d --network none IMAGE sleep infinity`
 * does through the Engine API (create and start a container, until it runs), and what
 * `docker exec CONTAINER true` does (create and start an exec, until it ended).
 *
 * Measures, through Orchestra's API as a client sees it:
 * - create→running of a docker instance (`POST /v1/instances` answers once its container
 *   runs), one at a time, p50/p95/p99, against the `docker run` anchor;
 * - exec round trip (`POST …/exec` of `true`) against the `docker exec` anchor.
 *
 *   node bench/instances-docker.ts [--samples 50]
 *   node bench/instances-docker.ts --smoke     a small run that checks the setup
 *
 * Needs root (dockerd) and Debian's docker.io and busybox-static.
 * Writes bench/results/instances-docker-<store>-<date>.json. See bench/README.md.
 */
import Docker from 'dockerode';
import { DockerDaemon } from '../packages/server/test/docker-daemon.ts';
import {
  adminKeyOf,
  type CommonOptions,
  commonOptions,
  f2,
  intOption,
  latencySummary,
  Processes,
  parseOptions,
  RunRecord,
  ratio,
  runBenchmark,
  startOrchestraNode,
  startWatchdog,
  table,
} from './common.ts';

const SELF = import.meta.filename;
const IMAGE = 'orchestra-bench/busybox:1';
const HELP = `Usage: node bench/instances-docker.ts [options]

  --samples N          samples of each measure (default 50)
  --smoke              a small, quick run (checks the setup; not a measurement)
  --postgres           Orchestra on PostgreSQL (BENCH_POSTGRES_URL) instead of SQLite
  --out-dir DIR        where to write the result (default bench/results)
  --orchestra-env K=V  extra setting for the Orchestra node (repeatable)`;

interface Options extends CommonOptions {
  samples: number;
  smoke: boolean;
}

const summary = latencySummary;

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

async function main(o: Options): Promise<number> {
  const record = new RunRecord('instances-docker', SELF);
  process.stdout.write(record.machineLine());
  const dockerd = await DockerDaemon.start();
  processes.onCleanup(() => dockerd.stop());
  await dockerd.importBusybox(IMAGE);
  const docker = new Docker({ socketPath: dockerd.socketPath });
  const node = await startOrchestraNode(processes, {
    name: 'instances-docker',
    settings: {
      ORCHESTRA_DOCKER_HOST: dockerd.socketPath,
      ORCHESTRA_TENANT_MAX_INSTANCES: '0',
      ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES: '0',
      ORCHESTRA_INSTANCE_STOP_GRACE_MS: '0',
    },
    orchestraEnv: o.orchestraEnv,
  });
  const key = adminKeyOf(node);
  const call = async (
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ id: string } | undefined> => {
    const response = await fetch(`${node.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text === '' ? undefined : (JSON.parse(text) as { id: string });
  };
  await call('POST', '/v1/workspace-templates', { name: 'box', driver: 'docker', image: IMAGE });

  // The anchors: the Engine API alone, as `docker run -d` and `docker exec` use it.
  const dockerRun = async () => {
    const container = await docker.createContainer({
      Image: IMAGE,
      Cmd: ['sleep', 'infinity'],
      HostConfig: { NetworkMode: 'none', Init: true },
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

  // Warm up both paths.
  for (let i = 0; i < 3; i++) {
    const container = await dockerRun();
    await dockerExec(container);
    await container.remove({ force: true });
    const made = await call('POST', '/v1/instances', { template: 'box' });
    await call('DELETE', `/v1/instances/${made?.id}`);
  }

  const runs: number[] = [];
  const execAnchor: number[] = [];
  for (let i = 0; i < o.samples; i++) {
    let container: Docker.Container | undefined;
    runs.push(
      await timed(async () => {
        container = await dockerRun();
      }),
    );
    const running = container as unknown as Docker.Container;
    execAnchor.push(await timed(() => dockerExec(running)));
    await running.remove({ force: true });
  }
  const creates: number[] = [];
  const execs: number[] = [];
  for (let i = 0; i < o.samples; i++) {
    let id = '';
    creates.push(
      await timed(async () => {
        id = (await call('POST', '/v1/instances', { template: 'box' }))?.id ?? '';
      }),
    );
    execs.push(await timed(() => call('POST', `/v1/instances/${id}/exec`, { command: ['true'] })));
    await call('DELETE', `/v1/instances/${id}`);
  }

  const anchorRun = summary(runs);
  const anchorExec = summary(execAnchor);
  const create = summary(creates);
  const exec = summary(execs);
  const result = {
    options: { samples: o.samples, smoke: o.smoke },
    anchor_docker_run_ms: anchorRun,
    anchor_docker_exec_ms: anchorExec,
    create_to_running_ms: create,
    exec_round_trip_ms: exec,
    ratio_p95_create_to_docker_run: ratio(create.p95, anchorRun.p95),
    ratio_p95_exec_to_docker_exec: ratio(exec.p95, anchorExec.p95),
  };
  process.stdout.write(
    `\n${table(
      ['measure', 'p50 ms', 'p95 ms', 'p99 ms', 'p95 / anchor'],
      [
        ['docker run -d (anchor)', f2(anchorRun.p50), f2(anchorRun.p95), f2(anchorRun.p99), '1.00'],
        [
          'create→running (docker driver)',
          f2(create.p50),
          f2(create.p95),
          f2(create.p99),
          f2(result.ratio_p95_create_to_docker_run),
        ],
        [
          'docker exec true (anchor)',
          f2(anchorExec.p50),
          f2(anchorExec.p95),
          f2(anchorExec.p99),
          '1.00',
        ],
        [
          'exec round trip (docker driver)',
          f2(exec.p50),
          f2(exec.p95),
          f2(exec.p99),
          f2(result.ratio_p95_exec_to_docker_exec),
        ],
      ],
    )}\n`,
  );
  const file = record.write(o, result, o.smoke ? 'smoke' : undefined);
  process.stdout.write(`\nwrote ${file}\n`);
  return 0;
}

const processes = new Processes({ stopTimeoutMs: 15_000, childrenFirst: false });
await runBenchmark<Options>({
  script: SELF,
  processes,
  stopping: 'Orchestra, its containers and the benchmark’s dockerd',
  readOptions(argv) {
    const values = parseOptions(argv, HELP, {
      samples: { type: 'string' },
      smoke: { type: 'boolean' },
    });
    if (values === undefined) return undefined;
    const smoke = values.smoke ?? false;
    return {
      ...commonOptions(values),
      samples: intOption('samples', values.samples, smoke ? 5 : 50, 1),
      smoke,
    };
  },
  async main(o) {
    startWatchdog(processes, 20 * 60_000);
    return main(o);
  },
});
