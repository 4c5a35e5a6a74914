import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Duplex, PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { ApiError, fieldError } from '../platform/errors.ts';
import type { AppliedLimits, LimitedResource, ProcessUsage } from './limits.ts';
import {
  type DriverInstance,
  type ExecExit,
  type ExecRequest,
  endOnTimeoutOrCancel,
  type FilledSpec,
  type InstanceDriverPort,
  type InstancePaths,
  portEnv,
  type ServiceExit,
  sandboxEnv,
  signalName,
  type TerminalProcess,
  type TerminalRequest,
} from './process-driver.ts';
import { connectLoopback, PortRelays } from './relays.ts';

/** What the docker driver borrows from the process driver: the same directory layout. */
export interface WorkspaceLayout {
  paths(instanceId: string): InstancePaths;
  checkBase(base: FilledSpec['base']): Promise<void>;
  /** Lays out the instance's directories and its base content. */
  create(instance: DriverInstance): Promise<void>;
}

/** Most bytes of the service's output kept in `logs/service.log` per start. */
const SERVICE_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** What keeps a container without a startup command running (the image must have `sleep`). */
const IDLE_COMMAND = ['sleep', 'infinity'];
const LABEL_INSTANCE = 'orchestra.instance';
const LABEL_OWNER = 'orchestra.owner';

/**
 * The `docker` driver: an instance is the same directory on this node as with the process
 * driver (so files, search, checkpoints and tar work unchanged), bind-mounted at the same
 * path into a container of the template's image, made at each start and removed at each
 * stop. The container has no network (`none`: loopback only) unless the template asks for
 * the host's, a read-only root file system, no capabilities, `no-new-privileges`, and
 * Docker's limits for the template's resources. Commands and terminals are Docker execs
 * in it; ports are reached through a relay in its network namespace.
 *
 * The engine must be this machine's (a Unix socket): the bind mount, the relay's nsenter
 * and the kill of an exec's processes all rely on that.
 */
export class DockerDriver implements InstanceDriverPort {
  readonly name = 'docker';
  readonly #docker: Docker;
  readonly #layout: WorkspaceLayout;
  readonly #relays: PortRelays;
  /** Labels this server's containers, so that a restart finds the ones left behind. */
  readonly #owner: string;
  readonly #containers = new Map<string, { container: Docker.Container; ended: Promise<void> }>();
  #limits: Promise<AppliedLimits> | undefined;

  constructor(options: { socketPath: string; dataDir: string; layout: WorkspaceLayout }) {
    this.#docker = new Docker({ socketPath: options.socketPath });
    this.#layout = options.layout;
    this.#relays = new PortRelays(options.dataDir, 'docker');
    this.#owner = createHash('sha256')
      .update(`${hostname()}\0${options.dataDir}`)
      .digest('hex')
      .slice(0, 16);
  }

  paths(instanceId: string): InstancePaths {
    return this.#layout.paths(instanceId);
  }

  async checkBase(base: FilledSpec['base']): Promise<void> {
    await this.#layout.checkBase(base);
  }

  /** The template's image must be on the engine (Orchestra never pulls). */
  async checkImage(image: string | null): Promise<void> {
    if (image === null) {
      throw fieldError('body.image', 'is required with the docker driver');
    }
    try {
      await this.#docker.getImage(image).inspect();
    } catch (err) {
      if (statusOf(err) === 404) {
        throw fieldError(
          'body.image',
          `"${image}" is not on this node's Docker engine (load, import or pull it there first)`,
        );
      }
      throw unavailable('check the image', err);
    }
  }

  async create(instance: DriverInstance): Promise<void> {
    await this.#layout.create(instance);
  }

  async limits(): Promise<AppliedLimits> {
    this.#limits ??= (async () => {
      try {
        const info = (await this.#docker.info()) as {
          MemoryLimit?: boolean;
          CpuCfsQuota?: boolean;
          PidsLimit?: boolean;
        };
        const enforced: LimitedResource[] = [];
        if (info.CpuCfsQuota) enforced.push('cpu');
        if (info.MemoryLimit) enforced.push('memory');
        if (info.PidsLimit) enforced.push('processes');
        const missing = enforced.length < 3 ? 'the engine cannot enforce every limit' : null;
        return { mechanism: 'docker' as const, enforced, note: missing };
      } catch (err) {
        this.#limits = undefined;
        return {
          mechanism: 'docker' as const,
          enforced: [],
          note: `the Docker engine did not answer: ${messageOf(err)}`,
        };
      }
    })();
    return this.#limits;
  }

  /** Removes the containers and relay sockets a previous run of this server left (it was killed). */
  async recover(): Promise<void> {
    await this.#relays.close();
    const left = await this.#docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_OWNER}=${this.#owner}`] },
    });
    await Promise.all(
      left
        .filter((c) => !this.#containers.has(c.Labels[LABEL_INSTANCE] ?? ''))
        .map((c) =>
          this.#docker
            .getContainer(c.Id)
            .remove({ force: true })
            .catch(() => {}),
        ),
    );
  }

  async start(
    instance: DriverInstance,
    onExit: (exit: ServiceExit) => void,
  ): Promise<{ pid: number | null }> {
    const { id, spec } = instance;
    if (spec.image === null) throw new ApiError('SANDBOX_UNAVAILABLE', 'The template has no image');
    const paths = this.paths(id);
    await this.#remove(id); // left from a run of the server that was killed
    const argv = spec.startup?.command ?? IDLE_COMMAND;
    let container: Docker.Container;
    try {
      container = await this.#docker.createContainer({
        name: containerName(id),
        Image: spec.image,
        Entrypoint: argv.slice(0, 1),
        Cmd: argv.slice(1),
        Env: envList(sandboxEnv(paths, { ...portEnv(instance.ports), ...spec.env })),
        WorkingDir: paths.workspace,
        User: serverUser(),
        Labels: { [LABEL_INSTANCE]: id, [LABEL_OWNER]: this.#owner },
        HostConfig: {
          Binds: [`${paths.project_root}:${paths.project_root}`],
          NetworkMode: spec.network === 'host' ? 'host' : 'none',
          // Reaps zombies and passes on signals, as a service under bwrap has its own init.
          Init: true,
          ReadonlyRootfs: true,
          Tmpfs: { '/tmp': 'rw,nosuid,nodev,size=64m' },
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges'],
          Memory: spec.resources.memory_bytes,
          MemorySwap: spec.resources.memory_bytes,
          NanoCpus: Math.round(spec.resources.cpus * 1e9),
          PidsLimit: spec.resources.processes,
        },
      });
    } catch (err) {
      throw unavailable('make the container', err);
    }
    const log = createWriteStream(join(paths.logs, 'service.log'), { flags: 'a' });
    let logged = 0;
    const keep = new PassThrough();
    keep.on('data', (chunk: Buffer) => {
      if (logged >= SERVICE_LOG_MAX_BYTES) return;
      logged += chunk.length;
      log.write(chunk);
    });
    const output = (await container.attach({
      stream: true,
      stdout: true,
      stderr: true,
    })) as NodeJS.ReadableStream;
    this.#docker.modem.demuxStream(output, keep, keep);
    // Asked before the start: a service that ends at once is not missed.
    const waited = container.wait({ condition: 'next-exit' }) as Promise<{ StatusCode: number }>;
    const ended = waited.then(
      (result) => exitOf(result.StatusCode),
      (): ServiceExit => ({ code: null, signal: 'SIGKILL' }),
    );
    const done = ended.then((exit) => {
      log.end();
      if (this.#containers.get(id)?.container === container) this.#containers.delete(id);
      onExit(exit);
    });
    this.#containers.set(id, { container, ended: done });
    try {
      await container.start();
      const info = await container.inspect();
      return { pid: info.State.Pid || null };
    } catch (err) {
      this.#containers.delete(id);
      await container.remove({ force: true }).catch(() => {});
      log.end();
      throw unavailable('start the container', err);
    }
  }

  async stop(instanceId: string, graceMs: number): Promise<void> {
    const running = this.#containers.get(instanceId);
    await this.#relays.drop(instanceId);
    if (running !== undefined) {
      // SIGTERM, then SIGKILL after the grace period (whole seconds for Docker).
      await running.container
        .stop({ t: Math.ceil(graceMs / 1000) })
        .catch((err: unknown) => {
          // 304: it had stopped already; 404: it is gone.
          if (statusOf(err) !== 304 && statusOf(err) !== 404) throw err;
        })
        .catch(() => running.container.kill().catch(() => {}));
      await running.ended;
    }
    await this.#remove(instanceId);
  }

  async destroy(instanceId: string): Promise<void> {
    await this.stop(instanceId, 0);
    await rm(this.paths(instanceId).project_root, { recursive: true, force: true });
  }

  async stopAll(graceMs: number): Promise<void> {
    await Promise.all([...this.#containers.keys()].map((id) => this.stop(id, graceMs)));
    await this.#relays.close();
  }

  async exec(instance: DriverInstance, request: ExecRequest): Promise<ExecExit> {
    const started = performance.now();
    const container = this.#running(instance.id, 'run the command');
    const withStdin = request.stdin !== undefined;
    let stream: Duplex;
    let exec: Docker.Exec;
    try {
      exec = await container.exec({
        Cmd: request.command,
        AttachStdin: withStdin,
        AttachStdout: true,
        AttachStderr: true,
        Env: envList(this.#env(instance, request.env)),
        WorkingDir: request.cwd,
        User: serverUser(),
      });
      stream = (await exec.start({ hijack: true, stdin: withStdin })) as Duplex;
    } catch (err) {
      throw unavailable('run the command', err);
    }
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.on('data', (chunk: Buffer) => request.onOutput('stdout', chunk));
    stderr.on('data', (chunk: Buffer) => request.onOutput('stderr', chunk));
    this.#docker.modem.demuxStream(stream, stdout, stderr);
    if (withStdin) {
      stream.on('error', () => {}); // a command that does not read its input
      stream.end(request.stdin);
    }
    const kill = () => {
      void exec
        .inspect()
        .then((info) => (info.Pid ? killTree(info.Pid, 'SIGKILL') : undefined))
        .catch(() => {});
    };
    const ending = endOnTimeoutOrCancel(request, kill);
    try {
      await new Promise<void>((resolve) => {
        stream.once('end', resolve);
        stream.once('close', resolve);
        stream.once('error', () => resolve());
      });
      const info = await exec.inspect().catch(() => undefined);
      const code = info?.ExitCode ?? null;
      const killed = ending.timedOut || ending.cancelled;
      const exit = killed ? { code: null, signal: 'SIGKILL' as const } : exitOf(code);
      return {
        exit_code: exit.code,
        signal: exit.signal,
        timed_out: ending.timedOut,
        cancelled: ending.cancelled,
        duration_ms: Math.round(performance.now() - started),
      };
    } finally {
      ending.clear();
    }
  }

  async openTerminal(instance: DriverInstance, request: TerminalRequest): Promise<TerminalProcess> {
    const container = this.#running(instance.id, 'open the terminal');
    let exec: Docker.Exec;
    let stream: Duplex;
    let pid: number;
    try {
      exec = await container.exec({
        Cmd: request.command,
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: true,
        Env: envList(this.#env(instance, { TERM: 'xterm-256color', ...request.env })),
        WorkingDir: request.cwd,
        User: serverUser(),
      });
      stream = (await exec.start({ hijack: true, stdin: true, Tty: true })) as Duplex;
      await exec.resize({ h: request.rows, w: request.cols }).catch(() => {});
      pid = (await exec.inspect()).Pid;
    } catch (err) {
      throw unavailable('open the terminal', err);
    }
    let ended = false;
    let killer: NodeJS.Timeout | undefined;
    const exitListeners: ((exit: ServiceExit) => void)[] = [];
    const finish = async () => {
      if (ended) return;
      ended = true;
      clearTimeout(killer);
      const info = await exec.inspect().catch(() => undefined);
      const exit = exitOf(info?.ExitCode ?? null);
      for (const listener of exitListeners) listener(exit);
    };
    stream.once('end', () => void finish());
    stream.once('close', () => void finish());
    stream.on('error', () => void finish());
    return {
      pid,
      onData: (listener) => {
        stream.on('data', (chunk: Buffer) => listener(chunk));
      },
      onExit: (listener) => {
        exitListeners.push(listener);
      },
      write: (data) => {
        if (!ended) stream.write(data);
      },
      resize: (cols, rows) => {
        if (!ended) void exec.resize({ h: rows, w: cols }).catch(() => {});
      },
      pause: () => stream.pause(),
      resume: () => stream.resume(),
      close: (graceMs) => {
        if (ended || killer !== undefined) return;
        void killTree(pid, 'SIGHUP');
        killer = setTimeout(() => void killTree(pid, 'SIGKILL'), graceMs);
        killer.unref();
      },
    };
  }

  async connectPort(instance: DriverInstance, port: number): Promise<import('node:net').Socket> {
    if (instance.spec.network === 'host') return connectLoopback(instance.id, port);
    const container = this.#running(instance.id, 'reach the port');
    return this.#relays.connect(instance.id, port, async () => {
      const pid = (await container.inspect()).State.Pid;
      if (!pid) throw new Error('the container does not run');
      return [`--net=/proc/${pid}/ns/net`];
    });
  }

  async usage(instanceId: string): Promise<ProcessUsage> {
    const running = this.#containers.get(instanceId);
    if (running === undefined) return { cpu_seconds: 0, memory_bytes: 0, processes: 0 };
    try {
      const stats = (await running.container.stats({
        stream: false,
        // One sample: without it Docker waits a second for a second one.
        'one-shot': true,
      } as { stream: false })) as unknown as DockerStats;
      const memory = stats.memory_stats ?? {};
      const cache = memory.stats?.inactive_file ?? memory.stats?.total_inactive_file ?? 0;
      return {
        cpu_seconds: (stats.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e9,
        memory_bytes: Math.max(0, (memory.usage ?? 0) - cache),
        processes: stats.pids_stats?.current ?? 0,
      };
    } catch {
      return { cpu_seconds: 0, memory_bytes: 0, processes: 0 };
    }
  }

  localIds(): string[] {
    return [...this.#containers.keys()];
  }

  /** Whether this node runs the instance's container. */
  running(instanceId: string): boolean {
    return this.#containers.has(instanceId);
  }

  #running(instanceId: string, what: string): Docker.Container {
    const running = this.#containers.get(instanceId);
    if (running === undefined) {
      throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot ${what}: its container does not run`);
    }
    return running.container;
  }

  #env(instance: DriverInstance, extra: Record<string, string>): NodeJS.ProcessEnv {
    return sandboxEnv(this.paths(instance.id), {
      ...portEnv(instance.ports),
      ...instance.spec.env,
      ...extra,
    });
  }

  async #remove(instanceId: string): Promise<void> {
    await this.#docker
      .getContainer(containerName(instanceId))
      .remove({ force: true })
      .catch((err: unknown) => {
        if (statusOf(err) !== 404 && statusOf(err) !== 409)
          throw unavailable('remove the container', err);
      });
  }
}

interface DockerStats {
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: {
    usage?: number;
    stats?: { inactive_file?: number; total_inactive_file?: number };
  };
  pids_stats?: { current?: number };
}

function containerName(instanceId: string): string {
  return `orchestra-${instanceId}`;
}

/** Files the container writes in the workspace belong to the server's user, as with bwrap. */
function serverUser(): string {
  return `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`;
}

function envList(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([name, value]) => `${name}=${value}`);
}

/** docker-init (and a shell) report a death by signal N as 128 + N. */
function exitOf(code: number | null): ServiceExit {
  if (code !== null && code > 128 && code < 128 + 32) {
    const name = signalName(code - 128);
    if (name !== null) return { code: null, signal: name };
  }
  return { code, signal: null };
}

/**
 * Sends a signal to a process of this machine and all its descendants: Docker has no way
 * to signal an exec, and the engine is local (the pid is in this machine's namespace).
 */
async function killTree(pid: number, signal: NodeJS.Signals): Promise<void> {
  const children = new Map<number, number[]>();
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The command may hold spaces and parentheses: the parent follows the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (!Number.isInteger(ppid)) continue;
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const all: number[] = [];
  const walk = (p: number) => {
    all.push(p);
    for (const child of children.get(p) ?? []) walk(child);
  };
  walk(pid);
  for (const p of all) {
    try {
      process.kill(p, signal);
    } catch {
      // gone meanwhile
    }
  }
}

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number } | undefined)?.statusCode;
}

function messageOf(err: unknown): string {
  const json = (err as { json?: { message?: string } } | undefined)?.json;
  if (json?.message) return json.message;
  return err instanceof Error ? err.message : String(err);
}

function unavailable(what: string, err: unknown): ApiError {
  return new ApiError('SANDBOX_UNAVAILABLE', `Cannot ${what} (Docker): ${messageOf(err)}`);
}
