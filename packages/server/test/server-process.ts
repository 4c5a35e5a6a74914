import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { basename } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { closedPort, tempDir } from './helpers.ts';

/**
 * A real server binary (etcd, nats-server, redis-server from Debian's packages) on free
 * loopback ports in a temporary directory, which a test may kill and start again with its
 * data kept. `.ci/run` installs the binaries; a machine without one fails the suite with a
 * message saying so, never skips it.
 */
export abstract class ServerProcess {
  readonly dir: { path: string; remove: () => void };
  #child: ChildProcess | undefined;
  #output = '';

  readonly binary: string;
  readonly debianPackage: string;

  protected constructor(binary: string, debianPackage: string) {
    this.binary = binary;
    this.debianPackage = debianPackage;
    this.dir = tempDir(`orchestra-${basename(binary)}-`);
  }

  /** Picks the server's ports, once, with `free` giving a free loopback port. */
  protected abstract assignPorts(free: () => Promise<number>): Promise<void>;
  /** The command line of one start; called again on every restart. */
  protected abstract args(): string[];
  /** Resolves true once the server answers. */
  protected abstract ready(): Promise<boolean>;
  /** Extra spawn options (PostgreSQL runs as its own user when the tests run as root). */
  protected spawnOptions(): SpawnOptions {
    return {};
  }
  /** How `kill` ends the server: a crash, without a clean shutdown. */
  protected readonly killSignal: NodeJS.Signals = 'SIGKILL';

  /** Checks the binary, picks ports, starts the server and waits until it answers. */
  protected static async launch<T extends ServerProcess>(server: T): Promise<T> {
    const found = spawnSync(server.binary, ['--version'], { encoding: 'utf8' });
    if (found.error) {
      throw new Error(
        `${server.binary} is not installed: \`apt-get install ${server.debianPackage}\` (.ci/run does it)`,
      );
    }
    await server.assignPorts(closedPort);
    running.add(server);
    await server.resume();
    return server;
  }

  /** Starts the server (again) on the same ports and data, and waits until it answers. */
  async resume(): Promise<void> {
    this.#output = '';
    const child = spawn(this.binary, this.args(), {
      ...this.spawnOptions(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d) => {
      this.#output += String(d);
    });
    child.stderr?.on('data', (d) => {
      this.#output += String(d);
    });
    this.#child = child;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null)
        throw new Error(`${this.binary} exited: ${this.#output.slice(-2000)}`);
      if (await this.ready().catch(() => false)) return;
      await delay(100);
    }
    throw new Error(`${this.binary} did not start in time: ${this.#output.slice(-2000)}`);
  }

  /** Kills the server (SIGKILL unless it says otherwise) and waits for it to be gone; its data stays. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill(this.killSignal);
    await gone;
  }

  /** Synchronous kill, for the process's exit handler. */
  killNow(): void {
    this.#child?.kill(this.killSignal);
  }

  async stop(): Promise<void> {
    await this.kill();
    running.delete(this);
    this.dir.remove();
  }
}

/** A server that listens on one loopback port and answers a line protocol on it. */
export abstract class OnePortServer extends ServerProcess {
  port = 0;

  protected async assignPorts(free: () => Promise<number>): Promise<void> {
    this.port = await free();
  }

  /** Connects, sends `request` (if any), and tells whether the answer starts with `expect`. */
  protected answers(expect: string, request?: string): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = connect(this.port, '127.0.0.1');
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(1000, () => done(false));
      if (request !== undefined) socket.once('connect', () => socket.write(request));
      socket.once('data', (d) => done(String(d).startsWith(expect)));
      socket.once('error', () => done(false));
    });
  }
}

const running = new Set<ServerProcess>();
process.on('exit', () => {
  // Last resort when a test fails half-way: no server outlives the test process.
  for (const server of running) server.killNow();
});
