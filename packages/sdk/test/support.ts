import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  childEnv,
  closedPort,
  createTestDatabase,
  processGone,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from '../../server/test/helpers.ts';
import { OrchestraError } from '../src/index.ts';

/** Runs `fn`, expecting it to reject with an `OrchestraError`, and returns that error. */
export async function rejection(fn: () => Promise<unknown>): Promise<OrchestraError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof OrchestraError, `expected an OrchestraError, got ${err}`);
    return err;
  }
  assert.fail('expected the call to reject');
}

/** Every item of an async iterable. */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

/** Polls `check` every 25 ms until it returns a value other than undefined; fails after 10 s. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + 10_000;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) assert.fail(`${what} did not happen within 10 s`);
    await sleep(25);
  }
}

/** Bounds every wait on a spawned script, so that a hang fails the test instead of CI. */
export const SCRIPT_DEADLINE_MS = 60_000;

const scripts = new Set<ChildProcess>();
// A test that fails half-way must not leave agents running after the test process.
process.on('exit', () => {
  for (const child of scripts) child.kill('SIGKILL');
});

/** A TypeScript file run by a child Node process, whose JSON output lines a test follows. */
export interface SpawnedScript {
  child: ChildProcess;
  /** The JSON lines printed so far; other lines are skipped. */
  lines(): Record<string, any>[];
  stdout(): string;
  stderr(): string;
  /**
   * Resolves to the first line (at or after `from`) that matches; rejects when the process
   * exits first or after SCRIPT_DEADLINE_MS, showing what it printed.
   */
  waitFor(
    what: string,
    match: (line: Record<string, any>) => boolean,
    from?: number,
  ): Promise<Record<string, any>>;
  /** Like `waitFor`, for a pattern in the whole standard output. */
  waitForText(what: string, pattern: RegExp): Promise<void>;
  /** Resolves to the exit code (null after a signal) once the process ended. */
  exited(): Promise<number | null>;
  /** Sends `signal` (default SIGKILL) unless ended, then waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs `node <script> ...args` with only PATH, NODE_OPTIONS and `env` in its environment. Stopped by
 * `killScripts` (and when the test process exits).
 */
export function spawnScript(
  script: string,
  options: { args?: string[]; env?: Record<string, string>; cwd?: string } = {},
): SpawnedScript {
  const child = spawn(process.execPath, [script, ...(options.args ?? [])], {
    cwd: options.cwd,
    env: { ...childEnv(), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  scripts.add(child);
  let stdout = '';
  let stderr = '';
  const parsed: Record<string, any>[] = [];
  let partial = '';
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    const pieces = (partial + chunk).split('\n');
    partial = pieces.pop() ?? '';
    for (const piece of pieces) {
      try {
        const value = JSON.parse(piece);
        if (typeof value === 'object' && value !== null) parsed.push(value);
      } catch {
        // not a JSON line
      }
    }
    wake();
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exit = processGone(child).then((code) => {
    scripts.delete(child);
    wake();
    return code;
  });
  const ended = () => child.exitCode !== null || child.signalCode !== null;
  const output = () => `\nstdout: ${stdout}\nstderr: ${stderr}`;
  /** Resolves to what `find` finds once it finds something; bounded, and ends with the process. */
  const waitUntil = <T>(what: string, find: () => T | undefined) =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        const found = find();
        if (found !== undefined || ended()) {
          clearTimeout(timer);
          waiters.delete(check);
          if (found !== undefined) resolve(found);
          else reject(new Error(`${script} exited before printing ${what}${output()}`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${script} printed no ${what} in time${output()}`));
      }, SCRIPT_DEADLINE_MS);
      waiters.add(check);
      check();
    });
  return {
    child,
    lines: () => [...parsed],
    stdout: () => stdout,
    stderr: () => stderr,
    waitFor: (what, match, from = 0) => waitUntil(what, () => parsed.slice(from).find(match)),
    waitForText: async (what, pattern) => {
      await waitUntil(what, () => (pattern.test(stdout) ? true : undefined));
    },
    exited: async () => {
      const timer = setTimeout(() => child.kill('SIGKILL'), SCRIPT_DEADLINE_MS);
      try {
        return await exit;
      } finally {
        clearTimeout(timer);
      }
    },
    kill: async (signal = 'SIGKILL') => {
      if (!ended()) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), SCRIPT_DEADLINE_MS);
      try {
        return await exit;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** SIGKILLs every script `spawnScript` started that still runs, and waits for them. */
export async function killScripts(): Promise<void> {
  await Promise.all(
    [...scripts].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          processGone(child).then(() => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  scripts.clear();
}

/**
 * A spawned `orchestra start` on a fixed port and data directory (and, for PostgreSQL, its
 * own database), so that a test can SIGKILL it and start it again where agents and clients
 * find it. `env` adds ORCHESTRA_* settings.
 */
export interface RestartableServer {
  url: string;
  adminKey: string;
  dataDir: string;
  /** The running process, for a test that kills it itself. */
  current(): SpawnedOrchestra;
  /** SIGKILL, and wait until the process is gone. */
  crash(): Promise<void>;
  /** Starts it again on the same port, data directory and database. */
  restart(): Promise<void>;
  /** Kills it and removes its data directory and database. */
  remove(): Promise<void>;
}

export async function startRestartableServer(
  store: 'sqlite' | 'postgres',
  env: Record<string, string>,
): Promise<RestartableServer> {
  const dir = tempDir('orchestra-restartable-');
  const database = store === 'postgres' ? await createTestDatabase() : undefined;
  const settings = {
    ORCHESTRA_PORT: String(await closedPort()),
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
    ...(database ? { ORCHESTRA_DATABASE_URL: database.url } : {}),
    ...env,
  };
  const spawnIt = () => spawnOrchestra({ cwd: dir.path, dataDir: dir.path, env: settings });
  let server: SpawnedOrchestra | undefined;
  try {
    server = await spawnIt();
  } catch (err) {
    await database?.drop();
    dir.remove();
    throw err;
  }
  const url = server.url;
  return {
    url,
    adminKey: readFileSync(join(dir.path, 'admin-key'), 'utf8').trim(),
    dataDir: dir.path,
    current: () => server as SpawnedOrchestra,
    async crash() {
      await server?.stop('SIGKILL');
    },
    async restart() {
      server = await spawnIt();
      assert.equal(server.url, url, 'the restarted server listens where the first one did');
    },
    async remove() {
      await server?.stop('SIGKILL');
      await database?.drop();
      dir.remove();
    },
  };
}
