import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiError } from '../platform/errors.ts';

/** The relay script, run by the server's own Node in an instance's network namespace. */
const RELAY_SCRIPT = fileURLToPath(new URL('./port-relay.ts', import.meta.url));
const RELAY_START_MS = 30_000;

interface Relay {
  child: ChildProcess;
  path: string;
}

function notListening(instanceId: string, port: number, why: string): ApiError {
  return new ApiError(
    'PORT_NOT_LISTENING',
    `Nothing in instance "${instanceId}" answers on port ${port} (${why})`,
    { details: { port } },
  );
}

/** A connection to a port on this machine's loopback (an instance on the host's network). */
export function connectLoopback(instanceId: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      reject(notListening(instanceId, port, err.code ?? err.message)),
    );
  });
}

/**
 * Port relays (port-relay.ts) in instances' own network namespaces, one per instance,
 * started on demand with nsenter and reached over a Unix socket: the server cannot connect
 * to an instance's loopback from its own namespace. Any driver whose instances have a
 * network namespace on this machine uses them (the process driver's holder, a container's
 * first process).
 */
export class PortRelays {
  readonly #dir: string;
  readonly #relays = new Map<string, Promise<Relay>>();

  constructor(dataDir: string, driver: string) {
    // Unix socket paths are short (108 bytes): a directory of this server's under /tmp.
    const tag = createHash('sha256').update(`${dataDir}\0${driver}`).digest('hex').slice(0, 12);
    this.#dir = join(tmpdir(), `orchestra-relays-${tag}`);
  }

  /**
   * A connection to `port` on the instance's loopback; `enter` gives nsenter's options
   * into its network namespace, asked when its relay must start.
   */
  async connect(instanceId: string, port: number, enter: () => Promise<string[]>): Promise<Socket> {
    const relay = await this.#relay(instanceId, enter);
    const socket = connect(relay.path);
    socket.write(`${port}\n`);
    return new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const newline = head.indexOf(10);
        if (newline === -1) return;
        socket.off('data', onData);
        socket.pause();
        const answer = head.subarray(0, newline).toString('utf8');
        const rest = head.subarray(newline + 1);
        if (answer !== 'OK') {
          socket.destroy();
          reject(notListening(instanceId, port, answer.replace(/^ERR /, '')));
          return;
        }
        if (rest.length > 0) socket.unshift(rest);
        // Flowing again for whoever takes it (an HTTP client attaches its parser at once;
        // the app speaks only once asked, so nothing is lost meanwhile).
        socket.resume();
        resolve(socket);
      };
      socket.on('data', onData);
      socket.once('error', (err) => reject(notListening(instanceId, port, err.message)));
      socket.once('close', () => reject(notListening(instanceId, port, 'the relay closed')));
    });
  }

  /** Ends the instance's relay (its network is going). */
  async drop(instanceId: string): Promise<void> {
    const relay = await this.#relays.get(instanceId)?.catch(() => undefined);
    this.#relays.delete(instanceId);
    relay?.child.kill('SIGKILL');
  }

  /** Ends every relay and removes their sockets' directory. */
  async close(): Promise<void> {
    await Promise.all([...this.#relays.keys()].map((id) => this.drop(id)));
    await rm(this.#dir, { recursive: true, force: true });
  }

  async #relay(instanceId: string, enter: () => Promise<string[]>): Promise<Relay> {
    const running = this.#relays.get(instanceId);
    if (running !== undefined) {
      const relay = await running.catch(() => undefined);
      if (relay !== undefined && relay.child.exitCode === null && relay.child.signalCode === null) {
        return relay;
      }
      if (this.#relays.get(instanceId) === running) this.#relays.delete(instanceId);
    }
    const starting = (async () => {
      const options = await enter();
      await mkdir(this.#dir, { recursive: true, mode: 0o700 });
      const path = join(this.#dir, `${instanceId}.sock`);
      await rm(path, { force: true });
      const child = spawn('nsenter', [...options, '--', process.execPath, RELAY_SCRIPT, path], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let output = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('the port relay did not start')),
          RELAY_START_MS,
        );
        const onOutput = (chunk: Buffer) => {
          output += chunk.toString('utf8');
          if (output.includes('ready\n')) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout?.on('data', onOutput);
        child.stderr?.on('data', onOutput);
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`the port relay exited (${code}): ${output.trim()}`));
        });
      });
      child.once('exit', () => {
        if (this.#relays.get(instanceId) === starting) this.#relays.delete(instanceId);
      });
      return { child, path };
    })();
    this.#relays.set(instanceId, starting);
    starting.catch(() => {
      if (this.#relays.get(instanceId) === starting) this.#relays.delete(instanceId);
    });
    return starting.catch((err: unknown) => {
      throw new ApiError(
        'SANDBOX_UNAVAILABLE',
        `Cannot reach the instance's network: ${err instanceof Error ? err.message : String(err)}`,
      );
    });
  }
}
