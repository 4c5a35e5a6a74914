import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { cp, mkdir, realpath, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { InstanceResources, WorkspaceTemplateSpec } from '@orchestra/protocol';
import { ApiError, fieldError } from '../platform/errors.ts';
import { detectSandbox, sandboxCommand } from '../platform/sandbox.ts';
import type { AppliedLimits, ProcessUsage, ResourceLimiter } from './limits.ts';
import { isInside } from './paths.ts';

/** An instance as a driver sees it: its id and the spec it was created from. */
export interface DriverInstance {
  id: string;
  spec: FilledSpec;
}

/** A template spec with every default filled in. */
export type FilledSpec = Required<Omit<WorkspaceTemplateSpec, 'startup' | 'resources'>> & {
  startup: { command: string[] } | null;
  resources: Required<InstanceResources>;
};

/** How an instance's service ended. */
export interface ServiceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * The port every driver sits behind (the process driver now; docker and Kubernetes later).
 * The instance service owns states and events; a driver only does the work.
 */
export interface InstanceDriverPort {
  readonly name: string;
  /** Refuses (400 naming `body.base.path`) a base this driver cannot make a workspace from. */
  checkBase(base: FilledSpec['base']): Promise<void>;
  /** Lays out the instance's directories and its base content. */
  create(instance: DriverInstance): Promise<void>;
  /**
   * Starts the instance's service, if it has one, and resolves once it runs; `onExit` is
   * called once when it ends by itself or is stopped.
   */
  start(
    instance: DriverInstance,
    onExit: (exit: ServiceExit) => void,
  ): Promise<{ pid: number | null }>;
  /** Stops its service (SIGTERM, then SIGKILL after `graceMs`); resolves once it ended. */
  stop(instanceId: string, graceMs: number): Promise<void>;
  /** Stops what runs and deletes the instance's files. */
  destroy(instanceId: string): Promise<void>;
  /** Stops every service this node runs (the node is closing). */
  stopAll(graceMs: number): Promise<void>;
  /** Runs a command in the instance's sandbox, its output to `onOutput`, until it ends. */
  exec(instance: DriverInstance, request: ExecRequest): Promise<ExecExit>;
  /** The instance's directory layout (the design's path service). */
  paths(instanceId: string): InstancePaths;
  /** How this node limits instances' resources. */
  limits(): Promise<AppliedLimits>;
  /** What the instance's processes use now. */
  usage(instanceId: string): Promise<ProcessUsage>;
}

/** A command to run in an instance (`POST /v1/instances/{id}/exec`). */
export interface ExecRequest {
  command: string[];
  /** Inside the workspace, already checked. */
  cwd: string;
  env: Record<string, string>;
  stdin: string | undefined;
  timeoutMs: number;
  signal: AbortSignal;
  onOutput: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
}

export interface ExecExit {
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  cancelled: boolean;
  duration_ms: number;
}

/** The design's directory layout of an instance. */
export interface InstancePaths {
  project_root: string;
  workspace: string;
  user_data: string;
  extensions: string;
  logs: string;
  temp: string;
}

const GIT_TIMEOUT_MS = 120_000;
/** After the SIGKILL, how long the service's output pipes may stay open. */
const PIPE_GRACE_MS = 5_000;
/** Most bytes of the service's output kept in `logs/service.log` per start. */
const SERVICE_LOG_MAX_BYTES = 10 * 1024 * 1024;

/**
 * The `process` driver: an instance is a directory on this node (`<data>/instances/<id>`,
 * laid out as the design's path service says), and its service runs in a bubblewrap
 * sandbox where that directory is the only writable place, with its own PID, IPC and
 * (unless the template allows the host's) network namespaces, and the server's
 * environment left out. `--die-with-parent` ends the sandbox with the server, so a
 * `kill -9` of the server leaves no process behind.
 */
export class ProcessDriver implements InstanceDriverPort {
  readonly name = 'process';
  readonly #root: string;
  readonly #sourceRoots: readonly string[];
  readonly #services = new Map<string, { child: ChildProcess; ended: Promise<void> }>();
  /** The commands running per instance (their process groups count in its usage). */
  readonly #commands = new Map<string, Set<ChildProcess>>();
  readonly #limiter: Promise<ResourceLimiter>;
  /** Instances whose limits are in place on this node. */
  readonly #prepared = new Set<string>();

  constructor(options: {
    dataDir: string;
    sourceRoots: readonly string[];
    limiter: Promise<ResourceLimiter>;
  }) {
    this.#root = join(options.dataDir, 'instances');
    this.#sourceRoots = options.sourceRoots;
    this.#limiter = options.limiter;
  }

  async limits(): Promise<AppliedLimits> {
    return (await this.#limiter).applied;
  }

  async usage(instanceId: string): Promise<ProcessUsage> {
    const leaders: number[] = [];
    const service = this.#services.get(instanceId)?.child.pid;
    if (service !== undefined) leaders.push(service);
    for (const child of this.#commands.get(instanceId) ?? []) {
      if (child.pid !== undefined) leaders.push(child.pid);
    }
    return (await this.#limiter).usage(instanceId, leaders);
  }

  paths(instanceId: string): InstancePaths {
    const root = join(this.#root, instanceId);
    return {
      project_root: root,
      workspace: join(root, 'workspace'),
      user_data: join(root, 'user-data'),
      extensions: join(root, 'extensions'),
      logs: join(root, 'logs'),
      temp: join(root, 'temp'),
    };
  }

  async checkBase(base: FilledSpec['base']): Promise<void> {
    if (base.type !== 'empty') await this.#source(base.path, base.type);
  }

  async create(instance: DriverInstance): Promise<void> {
    const paths = this.paths(instance.id);
    await mkdir(paths.project_root, { recursive: true, mode: 0o700 });
    for (const dir of [paths.user_data, paths.extensions, paths.logs, paths.temp]) {
      await mkdir(dir, { recursive: true });
    }
    const base = instance.spec.base;
    switch (base.type) {
      case 'empty':
        await mkdir(paths.workspace, { recursive: true });
        return;
      case 'directory': {
        const source = await this.#source(base.path, 'directory');
        // Symbolic links are copied as links, never followed out of the source.
        await cp(source, paths.workspace, { recursive: true, verbatimSymlinks: true });
        return;
      }
      case 'git': {
        const source = await this.#source(base.path, 'git');
        const args = ['clone', '--quiet', '--no-hardlinks'];
        if (base.ref !== undefined) args.push('--branch', base.ref);
        args.push('--', source, paths.workspace);
        await run('git', args, GIT_TIMEOUT_MS);
        return;
      }
    }
  }

  async start(
    instance: DriverInstance,
    onExit: (exit: ServiceExit) => void,
  ): Promise<{ pid: number | null }> {
    const startup = instance.spec.startup;
    if (startup === null) return { pid: null };
    const paths = this.paths(instance.id);
    const child = await this.#spawn(instance, startup.command, {
      cwd: paths.workspace,
      env: instance.spec.env,
      stdin: false,
      what: 'start the instance',
    });
    const log = createWriteStream(join(paths.logs, 'service.log'), { flags: 'a' });
    let logged = 0;
    const keep = (chunk: Buffer) => {
      if (logged >= SERVICE_LOG_MAX_BYTES) return;
      logged += chunk.length;
      log.write(chunk);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const ended = new Promise<void>((resolve) => {
      child.once('close', (code, signal) => {
        log.end();
        if (this.#services.get(instance.id)?.child === child) this.#services.delete(instance.id);
        onExit({ code, signal });
        resolve();
      });
    });
    // Known before it may end: a service that ends at once is not left behind as running.
    this.#services.set(instance.id, { child, ended });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) =>
        reject(new ApiError('SANDBOX_UNAVAILABLE', `Cannot start the sandbox: ${err.message}`)),
      );
    });
    return { pid: child.pid ?? null };
  }

  async stop(instanceId: string, graceMs: number): Promise<void> {
    const service = this.#services.get(instanceId);
    if (service === undefined) {
      await this.#release(instanceId);
      return;
    }
    signal(service.child, 'SIGTERM');
    const killer = setTimeout(() => signal(service.child, 'SIGKILL'), graceMs);
    killer.unref();
    // 'close' waits for the output pipes too: should a process inside still hold them after
    // the kill, stop reading them rather than wait forever.
    const unpipe = setTimeout(() => {
      service.child.stdout?.destroy();
      service.child.stderr?.destroy();
    }, graceMs + PIPE_GRACE_MS);
    unpipe.unref();
    await service.ended;
    clearTimeout(killer);
    clearTimeout(unpipe);
    await this.#release(instanceId);
  }

  /** Removes the instance's limits once nothing of it runs any more. */
  async #release(instanceId: string): Promise<void> {
    if (this.#services.has(instanceId) || (this.#commands.get(instanceId)?.size ?? 0) > 0) return;
    if (!this.#prepared.delete(instanceId)) return;
    await (await this.#limiter).release(instanceId);
  }

  async destroy(instanceId: string): Promise<void> {
    await this.stop(instanceId, 0);
    await this.#release(instanceId);
    await rm(this.paths(instanceId).project_root, { recursive: true, force: true });
  }

  async exec(instance: DriverInstance, request: ExecRequest): Promise<ExecExit> {
    const started = performance.now();
    const child = await this.#spawn(instance, request.command, {
      cwd: request.cwd,
      env: { ...instance.spec.env, ...request.env },
      stdin: request.stdin !== undefined,
      what: 'run the command',
    });
    const running = this.#commands.get(instance.id) ?? new Set<ChildProcess>();
    this.#commands.set(instance.id, running);
    running.add(child);
    let timedOut = false;
    let cancelled = false;
    const kill = () => {
      signal(child, 'SIGKILL');
      // Output pipes a process inside may still hold: stop reading them.
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, PIPE_GRACE_MS).unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, request.timeoutMs);
    const onAbort = () => {
      cancelled = true;
      kill();
    };
    request.signal.addEventListener('abort', onAbort, { once: true });
    child.stdout?.on('data', (chunk: Buffer) => request.onOutput('stdout', chunk));
    child.stderr?.on('data', (chunk: Buffer) => request.onOutput('stderr', chunk));
    if (request.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => {}); // a command that does not read its input
      child.stdin.end(request.stdin);
    }
    try {
      return await new Promise<ExecExit>((resolve, reject) => {
        child.once('error', (err) =>
          reject(new ApiError('SANDBOX_UNAVAILABLE', `Cannot start the sandbox: ${err.message}`)),
        );
        child.once('close', (code, sig) =>
          resolve({
            exit_code: code,
            signal: sig,
            timed_out: timedOut,
            cancelled,
            duration_ms: Math.round(performance.now() - started),
          }),
        );
      });
    } finally {
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onAbort);
      running.delete(child);
      if (running.size === 0) this.#commands.delete(instance.id);
    }
  }

  /**
   * Spawns a command in the instance's sandbox, in its own process group (so that a kill
   * reaches bwrap and what it has not yet moved into its namespace).
   */
  async #spawn(
    instance: DriverInstance,
    argv: string[],
    options: { cwd: string; env: Record<string, string>; stdin: boolean; what: string },
  ): Promise<ChildProcess> {
    const sandbox = await detectSandbox();
    if (!sandbox.available) {
      throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot ${options.what}: ${sandbox.reason}`);
    }
    const paths = this.paths(instance.id);
    const [command = '', ...args] = argv;
    const limiter = await this.#limiter;
    if (!this.#prepared.has(instance.id)) {
      try {
        await limiter.prepare(instance.id, instance.spec.resources);
      } catch (err) {
        throw new ApiError(
          'SANDBOX_UNAVAILABLE',
          `Cannot ${options.what}: its resource limits could not be set (${(err as Error).message})`,
        );
      }
      this.#prepared.add(instance.id);
    }
    const wrapped = limiter.wrap(
      instance.id,
      instance.spec.resources,
      sandboxCommand({
        command,
        args,
        workDir: paths.project_root,
        cwd: options.cwd,
        network: instance.spec.network === 'host',
        readOnlyPaths: [],
        path: SANDBOX_PATH,
        mountCommandPaths: false,
      }),
    );
    return spawn(wrapped.command, wrapped.args, {
      cwd: paths.workspace,
      // The server's environment (keys, URLs) stays out of the sandbox.
      env: sandboxEnv(paths, options.env),
      stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
    });
  }

  /** Stops every service this process runs (the node is closing), without waiting long. */
  async stopAll(graceMs: number): Promise<void> {
    await Promise.all([...this.#services.keys()].map((id) => this.stop(id, graceMs)));
    // Commands were cancelled before: their groups go once they ended.
    for (const id of [...this.#prepared]) await this.#release(id);
    if (this.#prepared.size === 0) await (await this.#limiter).close();
  }

  /** Whether a service of the instance runs in this process. */
  running(instanceId: string): boolean {
    return this.#services.has(instanceId);
  }

  /** A base path, resolved, that lies under one of the allowed roots; else a 400. */
  async #source(path: string, kind: 'directory' | 'git'): Promise<string> {
    const refuse = (why: string) => fieldError('body.base.path', why);
    let resolved: string;
    try {
      resolved = await realpath(path);
      if (!(await stat(resolved)).isDirectory()) throw new Error('not a directory');
    } catch {
      throw refuse(
        `"${path}" is not a ${kind === 'git' ? 'git repository' : 'directory'} on the server`,
      );
    }
    const allowed = await Promise.all(
      this.#sourceRoots.map((root) => realpath(root).catch(() => undefined)),
    );
    const inside = allowed.some((root) => root !== undefined && isInside(root, resolved));
    if (!inside) {
      throw refuse(
        this.#sourceRoots.length === 0
          ? 'this server takes no base from its own disk (ORCHESTRA_INSTANCE_SOURCE_ROOTS is empty)'
          : `"${path}" is not under ORCHESTRA_INSTANCE_SOURCE_ROOTS`,
      );
    }
    return resolved;
  }
}

/** Where programs are looked up inside the sandbox. */
const SANDBOX_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin';

/** The whole environment of a sandboxed process: the layout's, then the template's. */
export function sandboxEnv(paths: InstancePaths, env: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: SANDBOX_PATH,
    HOME: paths.user_data,
    TMPDIR: paths.temp,
    LANG: 'C.UTF-8',
    ORCHESTRA_WORKSPACE: paths.workspace,
    ...env,
  };
}

function signal(child: ChildProcess, name: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    // The whole group: bwrap and whatever it has not handed to its namespace yet.
    process.kill(-child.pid, name);
  } catch {
    child.kill(name);
  }
}

/** Runs a program to its end; rejects with its stderr on failure or after `timeoutMs`. */
function run(command: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: timeoutMs,
      env: { PATH: SANDBOX_PATH, GIT_TERMINAL_PROMPT: '0', LANG: 'C.UTF-8' },
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 2000) stderr += chunk;
    });
    child.once('error', (err) => reject(new Error(`${command}: ${err.message}`)));
    child.once('close', (code, sig) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args[0]} failed (${code ?? sig}): ${stderr.trim()}`));
    });
  });
}
