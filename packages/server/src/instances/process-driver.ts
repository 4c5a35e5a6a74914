import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { cp, mkdir, readFile, readlink, realpath, rm, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pty from '@lydell/node-pty';
import type { InstanceResources, WorkspaceTemplateSpec } from '@orchestra/protocol';
import { ApiError, fieldError } from '../platform/errors.ts';
import { detectSandbox, sandboxCommand } from '../platform/sandbox.ts';
import { extractArchive } from './files.ts';
import type { AppliedLimits, ProcessUsage, ResourceLimiter } from './limits.ts';
import { isInside } from './paths.ts';
import { connectLoopback, PortRelays } from './relays.ts';

/** An instance as a driver sees it: its id and the spec it was created from. */
/** Uploaded bases, as the driver reads them to lay out a workspace. */
export interface BaseUploads {
  open(tenantId: string, id: string): Promise<{ format: 'tar' | 'git_bundle'; body: Readable }>;
}

export interface DriverInstance {
  id: string;
  /** Its tenant: an uploaded base is the tenant's. */
  tenantId: string;
  spec: FilledSpec;
  /** The numbers its declared ports got: its processes get them as `PORT_<NAME>`. */
  ports?: readonly InstancePort[];
}

export interface InstancePort {
  name: string;
  port: number;
}

/** `PORT_<NAME>` for each port, and `PORT` for the first. */
export function portEnv(ports: readonly InstancePort[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { name, port } of ports) {
    env[`PORT_${name.toUpperCase().replaceAll('-', '_')}`] = String(port);
  }
  if (ports[0] !== undefined) env.PORT = String(ports[0].port);
  return env;
}

/** A template spec with every default filled in. */
export type FilledSpec = Required<
  Omit<WorkspaceTemplateSpec, 'startup' | 'resources' | 'image'>
> & {
  image: string | null;
  startup: { command: string[] } | null;
  resources: Required<InstanceResources>;
};

/** How an instance's service ended. */
export interface ServiceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * The port every driver sits behind (process and docker; Kubernetes later).
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
  /** Starts a program on a terminal of its own (a PTY) in the instance's sandbox. */
  openTerminal(instance: DriverInstance, request: TerminalRequest): Promise<TerminalProcess>;
  /**
   * A connection to `port` on the instance's loopback (PORT_NOT_LISTENING when nothing
   * listens there).
   */
  connectPort(instance: DriverInstance, port: number): Promise<Socket>;
  /** The instance's directory layout (the design's path service). */
  paths(instanceId: string): InstancePaths;
  /** How this node limits instances' resources. */
  limits(): Promise<AppliedLimits>;
  /** What the instance's processes use now. */
  usage(instanceId: string): Promise<ProcessUsage>;
  /** At the node's start: removes what a killed run of it left behind (not all drivers need it). */
  recover?(): Promise<void>;
  /** The instances something runs for on this node (a service, a command, a sandbox). */
  localIds(): string[];
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

/**
 * Kills a command (`kill`) when its timeout passes or its request is cancelled, and says
 * which happened; `clear` once it ended.
 */
export function endOnTimeoutOrCancel(
  request: Pick<ExecRequest, 'timeoutMs' | 'signal'>,
  kill: () => void,
): { readonly timedOut: boolean; readonly cancelled: boolean; clear(): void } {
  const state = { timedOut: false, cancelled: false };
  const timer = setTimeout(() => {
    state.timedOut = true;
    kill();
  }, request.timeoutMs);
  const onAbort = () => {
    state.cancelled = true;
    kill();
  };
  request.signal.addEventListener('abort', onAbort, { once: true });
  return {
    get timedOut() {
      return state.timedOut;
    },
    get cancelled() {
      return state.cancelled;
    },
    clear() {
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onAbort);
    },
  };
}

/** A program to run on a terminal of its own. */
export interface TerminalRequest {
  command: string[];
  /** Inside the workspace, already checked. */
  cwd: string;
  env: Record<string, string>;
  cols: number;
  rows: number;
}

/** A program running on a PTY in an instance's sandbox. */
export interface TerminalProcess {
  readonly pid: number;
  /** What it prints, as bytes. */
  onData(listener: (data: Buffer) => void): void;
  /** Called once, when it ended. */
  onExit(listener: (exit: ServiceExit) => void): void;
  write(data: string | Buffer): void;
  resize(cols: number, rows: number): void;
  /** Stops reading its output (it blocks once the PTY's buffer is full), and reads again. */
  pause(): void;
  resume(): void;
  /** Hangs it up (SIGHUP), and kills what is left of it after `graceMs`. */
  close(graceMs: number): void;
}

/** The process that holds an instance's network namespace. */
interface NetworkHolder {
  child: ChildProcess;
  /** Its pid inside bwrap (in the host's PID namespace): where its namespaces are. */
  pid: number;
  /** nsenter's options that enter its network namespace. */
  enter: string[];
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
/**
 * How long a stop waits for the instance's commands and terminals, already told to end, to
 * be gone before its limits are released (which kills what is left in its cgroups).
 */
const DRAIN_MS = 2_000;
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
  /** The commands and terminals running per instance (their process groups count in its usage). */
  readonly #commands = new Map<string, Set<{ readonly pid?: number | undefined }>>();
  readonly #limiter: Promise<ResourceLimiter>;
  readonly #drainWaiters = new Map<string, (() => void)[]>();
  /** Per instance without the host's network: the process holding its network namespace. */
  readonly #holders = new Map<string, Promise<NetworkHolder>>();
  /** Port relays in instances' network namespaces, started on demand (`connectPort`). */
  readonly #relays: PortRelays;
  /** Instances whose limits are in place on this node. */
  readonly #prepared = new Set<string>();
  /** Where uploaded bases are read from (the store, so that any node can lay one out). */
  #uploads: BaseUploads | undefined;

  constructor(options: {
    dataDir: string;
    sourceRoots: readonly string[];
    limiter: Promise<ResourceLimiter>;
  }) {
    this.#root = join(options.dataDir, 'instances');
    this.#relays = new PortRelays(options.dataDir, 'process');
    this.#sourceRoots = options.sourceRoots;
    this.#limiter = options.limiter;
  }

  async limits(): Promise<AppliedLimits> {
    return (await this.#limiter).applied;
  }

  /** Set once the store is there: where `base.type: upload` is read from. */
  set uploads(uploads: BaseUploads) {
    this.#uploads = uploads;
  }

  async usage(instanceId: string): Promise<ProcessUsage> {
    const leaders: number[] = [];
    const service = this.#services.get(instanceId)?.child.pid;
    if (service !== undefined) leaders.push(service);
    for (const child of this.#commands.get(instanceId) ?? []) {
      if (child.pid !== undefined) leaders.push(child.pid);
    }
    const holder = await this.#holders.get(instanceId)?.catch(() => undefined);
    if (holder?.child.pid !== undefined) leaders.push(holder.child.pid);
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
    // An upload is checked against the tenant's uploads by the service.
    if (base.type === 'directory' || base.type === 'git') await this.#source(base.path, base.type);
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
      case 'upload': {
        if (this.#uploads === undefined) throw new Error('no store of uploads on this node');
        const upload = await this.#uploads.open(instance.tenantId, base.upload);
        if (upload.format === 'tar') {
          await mkdir(paths.workspace, { recursive: true });
          await extractArchive({
            body: upload.body,
            dir: paths.workspace,
            projectRoot: paths.project_root,
            maxBytes: Number.MAX_SAFE_INTEGER,
          });
          return;
        }
        // A bundle is a file git clones from; it goes once the clone is made.
        const bundle = join(paths.temp, 'base.bundle');
        await pipeline(upload.body, createWriteStream(bundle, { mode: 0o600 }));
        try {
          const args = ['clone', '--quiet'];
          if (base.ref !== undefined) args.push('--branch', base.ref);
          args.push('--', bundle, paths.workspace);
          await run('git', args, GIT_TIMEOUT_MS);
        } finally {
          await rm(bundle, { force: true });
        }
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
      await this.#drained(instanceId, DRAIN_MS);
      await this.#dropNetwork(instanceId);
      await this.#release(instanceId, true);
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
    await this.#drained(instanceId, DRAIN_MS);
    await this.#dropNetwork(instanceId);
    await this.#release(instanceId, true);
  }

  /** Removes the instance's limits once nothing of it runs any more. */
  async #release(instanceId: string, force = false): Promise<void> {
    if (this.#services.has(instanceId)) return;
    // Stopping (`force`): what still runs of its commands is killed with the cgroups.
    if (!force && (this.#commands.get(instanceId)?.size ?? 0) > 0) return;
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
    this.#track(instance.id, child);
    const kill = () => {
      signal(child, 'SIGKILL');
      // Output pipes a process inside may still hold: stop reading them.
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, PIPE_GRACE_MS).unref();
    };
    const ending = endOnTimeoutOrCancel(request, kill);
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
            timed_out: ending.timedOut,
            cancelled: ending.cancelled,
            duration_ms: Math.round(performance.now() - started),
          }),
        );
      });
    } finally {
      ending.clear();
      this.#untrack(instance.id, child);
    }
  }

  async openTerminal(instance: DriverInstance, request: TerminalRequest): Promise<TerminalProcess> {
    const sandboxed = await this.#sandboxed(instance, request.command, {
      cwd: request.cwd,
      env: { TERM: 'xterm-256color', ...instance.spec.env, ...request.env },
      what: 'open the terminal',
      ownTerminal: true,
    });
    let term: pty.IPty;
    try {
      term = pty.spawn(sandboxed.command, sandboxed.args, {
        name: 'xterm-256color',
        cols: request.cols,
        rows: request.rows,
        cwd: sandboxed.cwd,
        env: sandboxed.env as Record<string, string>,
        // Bytes, not strings: a UTF-8 sequence split between two reads stays intact.
        encoding: null,
      });
    } catch (err) {
      throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot open the terminal: ${messageOf(err)}`);
    }
    const handle = { pid: term.pid };
    this.#track(instance.id, handle);
    let ended = false;
    let killer: NodeJS.Timeout | undefined;
    const exitListeners: ((exit: ServiceExit) => void)[] = [];
    term.onExit(({ exitCode, signal: signalNumber }) => {
      ended = true;
      clearTimeout(killer);
      this.#untrack(instance.id, handle);
      const name = signalNumber ? signalName(signalNumber) : null;
      for (const listener of exitListeners)
        listener({ code: name ? null : exitCode, signal: name });
    });
    const group = (name: NodeJS.Signals) => {
      if (ended) return;
      try {
        // node-pty makes the program a session (and group) leader: the group is bwrap and
        // what it has not yet moved into its namespace; --die-with-parent ends the rest.
        process.kill(-term.pid, name);
      } catch {
        // gone already
      }
    };
    return {
      pid: term.pid,
      onData: (listener) => {
        term.onData((data) => listener(data as unknown as Buffer));
      },
      onExit: (listener) => {
        exitListeners.push(listener);
      },
      write: (data) => {
        if (!ended) term.write(data as string);
      },
      resize: (cols, rows) => {
        if (!ended) term.resize(cols, rows);
      },
      pause: () => term.pause(),
      resume: () => term.resume(),
      close: (graceMs) => {
        if (ended || killer !== undefined) return;
        group('SIGHUP');
        killer = setTimeout(() => group('SIGKILL'), graceMs);
        killer.unref();
      },
    };
  }

  async connectPort(instance: DriverInstance, port: number): Promise<Socket> {
    if (instance.spec.network === 'host') return connectLoopback(instance.id, port);
    return this.#relays.connect(instance.id, port, async () => {
      const holder = await this.#network(instance, await this.#limiter);
      if (holder === undefined) throw new Error('an instance on the host network has no relay');
      return holder.enter;
    });
  }

  /** Counts a command or terminal among what runs in the instance. */
  #track(instanceId: string, handle: { readonly pid?: number | undefined }): void {
    const running = this.#commands.get(instanceId) ?? new Set();
    this.#commands.set(instanceId, running);
    running.add(handle);
  }

  /** It ended. */
  #untrack(instanceId: string, handle: { readonly pid?: number | undefined }): void {
    const running = this.#commands.get(instanceId);
    running?.delete(handle);
    if (running?.size !== 0) return;
    this.#commands.delete(instanceId);
    for (const wake of this.#drainWaiters.get(instanceId) ?? []) wake();
    this.#drainWaiters.delete(instanceId);
  }

  /**
   * Resolves once no command or terminal of the instance runs, or after `ms`: they were
   * told to end before its service was stopped, and its limits go once they did.
   */
  async #drained(instanceId: string, ms: number): Promise<void> {
    if ((this.#commands.get(instanceId)?.size ?? 0) === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      const waiters = this.#drainWaiters.get(instanceId) ?? [];
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
      this.#drainWaiters.set(instanceId, waiters);
    });
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
    const sandboxed = await this.#sandboxed(instance, argv, options);
    return spawn(sandboxed.command, sandboxed.args, {
      cwd: sandboxed.cwd,
      env: sandboxed.env,
      stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
    });
  }

  /** The command line, environment and directory that run `argv` in the instance's sandbox. */
  async #sandboxed(
    instance: DriverInstance,
    argv: string[],
    options: { cwd: string; env: Record<string, string>; what: string; ownTerminal?: boolean },
  ): Promise<{ command: string; args: string[]; cwd: string; env: NodeJS.ProcessEnv }> {
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
    // Every process of the instance shares one network namespace (its service, commands
    // and terminals see each other's ports on loopback): the holder's, entered with nsenter.
    const holder = await this.#network(instance, limiter);
    const wrapped = limiter.wrap(
      instance.id,
      instance.spec.resources,
      sandboxCommand({
        command,
        args,
        workDir: paths.project_root,
        cwd: options.cwd,
        // In the holder's namespace already (or the host's, by the template's choice).
        network: true,
        readOnlyPaths: [],
        path: SANDBOX_PATH,
        mountCommandPaths: false,
        ownTerminal: options.ownTerminal === true,
      }),
    );
    const entered =
      holder === undefined
        ? wrapped
        : { command: 'nsenter', args: [...holder.enter, '--', wrapped.command, ...wrapped.args] };
    return {
      ...dieWithServer(entered),
      cwd: paths.workspace,
      // The server's environment (keys, URLs) stays out of the sandbox.
      env: sandboxEnv(paths, { ...portEnv(instance.ports), ...options.env }),
    };
  }

  /**
   * The network namespace of an instance without the host's network: made by a holder (bwrap
   * with `--unshare-net` around `sleep infinity`, in the instance's limits) the first time
   * one of its processes starts, and kept until it stops. Undefined with the host's network.
   */
  async #network(
    instance: DriverInstance,
    limiter: ResourceLimiter,
  ): Promise<NetworkHolder | undefined> {
    if (instance.spec.network === 'host') return undefined;
    for (;;) {
      // Checked and set in one turn: processes starting at once share one holder.
      const made = this.#holders.get(instance.id);
      if (made === undefined) {
        const making = this.#makeHolder(instance, limiter);
        this.#holders.set(instance.id, making);
        making.catch(() => {
          if (this.#holders.get(instance.id) === making) this.#holders.delete(instance.id);
        });
        return making;
      }
      const holder = await made.catch(() => undefined);
      if (holder === undefined) return made; // it could not be made: its error
      if (holder.child.exitCode === null && holder.child.signalCode === null) return holder;
      // It died (with its network): forget it, and make another.
      if (this.#holders.get(instance.id) === made) this.#holders.delete(instance.id);
    }
  }

  async #makeHolder(instance: DriverInstance, limiter: ResourceLimiter): Promise<NetworkHolder> {
    const paths = this.paths(instance.id);
    const wrapped = limiter.wrap(
      instance.id,
      instance.spec.resources,
      sandboxCommand({
        command: 'sleep',
        args: ['infinity'],
        workDir: paths.project_root,
        network: false,
        readOnlyPaths: [],
        path: SANDBOX_PATH,
        mountCommandPaths: false,
        infoFd: 3,
      }),
    );
    const guarded = dieWithServer(wrapped);
    const child = spawn(guarded.command, guarded.args, {
      cwd: paths.workspace,
      env: sandboxEnv(paths, {}),
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const fail = (why: string) => {
      if (child.pid !== undefined) killGroup(child.pid);
      return new ApiError('SANDBOX_UNAVAILABLE', `Cannot make the instance's network: ${why}`);
    };
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 2000) stderr += chunk;
    });
    // bwrap writes `{"child-pid": …}` to fd 3 once the namespaces exist, and closes it. It
    // is read to its end: a reader that left early would kill bwrap with SIGPIPE.
    const info = child.stdio[3] as Readable;
    let text = '';
    const pid = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(fail('bwrap said nothing in 30 s')), 30_000);
      info.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
      });
      info.once('end', () => {
        clearTimeout(timer);
        const found = /"child-pid"\s*:\s*(\d+)/.exec(text)?.[1];
        if (found !== undefined) resolve(Number(found));
        else reject(fail(`bwrap did not say where its sandbox is: ${stderr.trim()}`));
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(fail(err.message));
      });
    });
    // Its error output is of no more use; left open, it would keep the server's loop alive.
    child.stderr?.destroy();
    const enter = [`--net=/proc/${pid}/ns/net`];
    // Unprivileged, bwrap made a user namespace too: the network belongs to it.
    const [ours, theirs] = await Promise.all([
      readlink('/proc/self/ns/user'),
      readlink(`/proc/${pid}/ns/user`).catch(() => ''),
    ]);
    if (theirs !== '' && theirs !== ours) {
      enter.unshift(`--user=/proc/${pid}/ns/user`, '--preserve-credentials');
    }
    return { child, pid, enter };
  }

  /** Ends the holder of the instance's network namespace, if it has one. */
  async #dropNetwork(instanceId: string): Promise<void> {
    await this.#relays.drop(instanceId);
    const made = this.#holders.get(instanceId);
    if (made === undefined) return;
    this.#holders.delete(instanceId);
    const holder = await made.catch(() => undefined);
    if (holder === undefined) return;
    const { child, pid } = holder;
    const gone =
      child.exitCode !== null || child.signalCode !== null
        ? Promise.resolve()
        : new Promise<void>((resolve) => child.once('exit', () => resolve()));
    // The whole group, even once bwrap itself is gone: a sandbox killed while bwrap was
    // still setting it up waits for bwrap for ever, before --die-with-parent applies.
    if (child.pid !== undefined) killGroup(child.pid);
    // And the sandbox's own first process, if it is still that one.
    const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (/^(bwrap|sleep)\0/.test(command)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await gone;
  }

  /** Stops every service this process runs (the node is closing), without waiting long. */
  async stopAll(graceMs: number): Promise<void> {
    await Promise.all([...this.#services.keys()].map((id) => this.stop(id, graceMs)));
    await Promise.all([...this.#holders.keys()].map((id) => this.#dropNetwork(id)));
    // Commands were cancelled before: their groups go once they ended.
    for (const id of [...this.#prepared]) await this.#release(id);
    if (this.#prepared.size === 0) await (await this.#limiter).close();
    await this.#relays.close();
  }

  /** The port relays' sockets a killed run of this server left. */
  async recover(): Promise<void> {
    await this.#relays.close();
  }

  localIds(): string[] {
    return [
      ...new Set([...this.#services.keys(), ...this.#commands.keys(), ...this.#holders.keys()]),
    ];
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

/**
 * Runs `command` so that it is killed when the server dies, from its first instruction:
 * bwrap's own --die-with-parent is armed only once its setup is done, and a server killed
 * before that left the sandbox running (util-linux's setpriv; without it, bwrap's alone).
 */
function dieWithServer(command: { command: string; args: string[] }): {
  command: string;
  args: string[];
} {
  if (!HAS_SETPRIV) return command;
  return {
    command: 'setpriv',
    args: ['--pdeathsig', 'KILL', '--', command.command, ...command.args],
  };
}

const HAS_SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].some((path) => existsSync(path));

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

/** 15 → "SIGTERM". */
export function signalName(signalNumber: number): NodeJS.Signals | null {
  const found = Object.entries(constants.signals).find(([, n]) => n === signalNumber);
  return found ? (found[0] as NodeJS.Signals) : null;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** SIGKILL to a process group, whether or not its leader still runs. */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // no process left in it
  }
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
