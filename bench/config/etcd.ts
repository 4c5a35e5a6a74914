/**
 * The config benchmark's own etcd: Debian's `etcd-server` binary on free loopback ports,
 * with a data directory of its own that goes at cleanup. The same start as
 * packages/server/test/etcd-server.ts, tied to the benchmark's `Processes` so that every
 * exit path stops it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, HOST, type Processes, START_TIMEOUT_MS, sleep } from '../common.ts';

export interface EtcdServer {
  /** http://127.0.0.1:<client port> */
  endpoint: string;
  pid: number;
  proc: ChildProcess;
  dataDir: string;
  version: string | null;
  stop(): Promise<void>;
}

/**
 * Starts `bin` with its data under a new directory in `parentDir` and waits until
 * `/health` says so. Stopped (SIGTERM, then SIGKILL) and its directory removed at cleanup.
 */
export async function startEtcd(
  processes: Processes,
  options: { bin: string; parentDir: string },
): Promise<EtcdServer> {
  const found = spawnSync(options.bin, ['--version'], { encoding: 'utf8' });
  if (found.error || found.status !== 0) {
    throw new Error(
      `etcd is not installed as "${options.bin}": apt-get install etcd-server, or give ` +
        '--etcd-bin',
    );
  }
  const version = /etcd Version:\s*(\S+)/.exec(found.stdout)?.[1] ?? null;
  const dir = mkdtempSync(join(options.parentDir, 'orchestra-bench-etcd-'));
  processes.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const client = `http://${HOST}:${await freePort()}`;
  const peer = `http://${HOST}:${await freePort()}`;
  const proc = spawn(
    options.bin,
    [
      '--name',
      'bench',
      '--data-dir',
      join(dir, 'data'),
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `bench=${peer}`,
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Stopped before its directory goes (the cleanup steps run last first).
  processes.onCleanup(() => processes.stop(proc));
  // Not one of Processes' node children: the last resort is ours.
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  proc.once('exit', () => process.off('exit', killOnExit));
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`etcd exited (${proc.signalCode ?? proc.exitCode}): ${output.trim()}`);
    }
    if (performance.now() > deadline) throw new Error(`etcd did not start in time: ${output}`);
    const healthy = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1_000) }).then(
      async (res) => res.ok && ((await res.json()) as { health?: string }).health === 'true',
      () => false,
    );
    if (healthy) break;
    await sleep(100);
  }
  return {
    endpoint: client,
    pid: proc.pid ?? -1,
    proc,
    dataDir: dir,
    version,
    stop: () => processes.stop(proc),
  };
}
