import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import type { AnyModule } from '../src/module.ts';
import { loadSettings } from '../src/modules.ts';
import type { Settings } from '../src/platform/settings.ts';
import { createLogger, type RunningServer, startServer } from '../src/server.ts';

/** PostgreSQL server the tests use; each suite gets a database of its own on it. */
export const TEST_POSTGRES_URL =
  process.env.ORCHESTRA_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Creates an empty database for one suite; `drop` removes it. */
export async function createTestDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `orchestra_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: TEST_POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: TEST_POSTGRES_URL });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

export function tempDir(prefix = 'orchestra-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TestServer extends RunningServer {
  /** The system tenant's first admin key. */
  adminKey: string;
  /** The node's data directory (removed by `stop`). */
  dataDir: string;
  /** Sends a request with the admin key unless `key` says otherwise (`null`: no credential). */
  call(
    method: string,
    path: string,
    options?: { key?: string | null; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Headers; body: any }>;
  stop(): Promise<void>;
}

export type StoreVariant = 'sqlite' | 'postgres';

/** The stores every API suite runs against. */
export const STORE_VARIANTS: StoreVariant[] = ['sqlite', 'postgres'];

/**
 * The key that encrypts stored secrets in tests: fixed, so that servers started on one
 * database (a cluster) can open each other's secrets. The key-file default is tested on its own.
 */
export const TEST_SECRET_KEY = Buffer.alloc(32, 7).toString('base64');

/** A test server's settings: a free loopback port, no rate limit, no load shedding. */
export function testSettings(dataDir: string, env: Record<string, string> = {}): Settings {
  return loadSettings({
    ORCHESTRA_PORT: '0',
    ORCHESTRA_HOST: '127.0.0.1',
    ORCHESTRA_DATA_DIR: dataDir,
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
    // Suites run in parallel on small machines: shedding is tested where a test asks for it.
    ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS: '0',
    ORCHESTRA_SECRETS_KEY: TEST_SECRET_KEY,
    ...env,
  });
}

/**
 * Starts a real server on a free port in a temporary data directory, on SQLite or on a
 * fresh PostgreSQL database. `env` holds extra ORCHESTRA_* settings.
 */
export async function startTestServer(
  options: {
    store?: StoreVariant;
    env?: Record<string, string>;
    /** Collects the server's JSON log lines (at ORCHESTRA_LOG_LEVEL, default info). */
    logTo?: Record<string, unknown>[];
    /** The modules to run instead of all of them. */
    modules?: readonly AnyModule[];
  } = {},
): Promise<TestServer> {
  const dir = tempDir();
  const database = options.store === 'postgres' ? await createTestDatabase() : undefined;
  const settings = testSettings(dir.path, {
    ORCHESTRA_LOG_LEVEL: options.logTo ? 'info' : 'silent',
    ...(database ? { ORCHESTRA_DATABASE_URL: database.url } : {}),
    ...options.env,
  });
  let adminKey: string | undefined;
  const logTo = options.logTo;
  const log = logTo
    ? createLogger(settings, {
        write(line: string) {
          logTo.push(JSON.parse(line));
        },
      })
    : pino({ level: 'silent' });
  const server = await startServer(settings, {
    log,
    ...(options.modules ? { modules: options.modules } : {}),
    onAdminKey: (key) => {
      adminKey = key.secret;
    },
  });
  if (adminKey === undefined) throw new Error('the test server did not create an admin key');
  const key = adminKey;
  return {
    ...server,
    adminKey: key,
    dataDir: settings.dataDir,
    async call(method, path, callOptions = {}) {
      const headers: Record<string, string> = { ...callOptions.headers };
      const credential = callOptions.key === undefined ? key : callOptions.key;
      if (credential !== null) headers.authorization = `Bearer ${credential}`;
      let body: string | undefined;
      if (callOptions.body !== undefined) {
        body =
          typeof callOptions.body === 'string'
            ? callOptions.body
            : JSON.stringify(callOptions.body);
        headers['content-type'] ??= 'application/json';
      }
      const response = await fetch(server.url + path, { method, headers, body });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: response.status, headers: response.headers, body: parsed };
    },
    async stop() {
      await server.close();
      await database?.drop();
      dir.remove();
    },
  };
}

/** Asserts the unified error format and returns the error object. */
export function expectError(
  response: { status: number; body: any },
  status: number,
  code: string,
): { code: string; message: string; details?: any; request_id: string } {
  const { body } = response;
  if (response.status !== status || body?.success !== false || body?.error?.code !== code) {
    throw new Error(`expected ${status} ${code}, got ${response.status} ${JSON.stringify(body)}`);
  }
  for (const field of ['message', 'timestamp', 'request_id', 'service']) {
    if (typeof body.error[field] !== 'string' || body.error[field] === '') {
      throw new Error(`error.${field} is missing in ${JSON.stringify(body)}`);
    }
  }
  return body.error;
}

/** The `orchestra` CLI entry, as `npx orchestra` runs it. */
/**
 * What a spawned Node process inherits: PATH, and NODE_OPTIONS, which through npm carries
 * the `@orchestra/source` condition, so that the child runs the SDK's sources as the test
 * does rather than its last build (decision 0012).
 */
export function childEnv(): Record<string, string> {
  const { PATH = '', NODE_OPTIONS } = process.env;
  return NODE_OPTIONS === undefined ? { PATH } : { PATH, NODE_OPTIONS };
}

export const ORCHESTRA_BIN = fileURLToPath(new URL('../bin/orchestra.js', import.meta.url));

/** Bounds every wait on a spawned process, so that a hang fails the test instead of CI. */
export const SPAWN_DEADLINE_MS = 60_000;

/**
 * Resolves with the exit code once `child` has exited and its output pipes closed. A
 * grandchild that inherited the pipes can keep them open after the child is gone, which
 * would hang a teardown that waits for 'close': the pipes get 5 s after the exit, then are
 * destroyed.
 */
export function processGone(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    const closed = () => resolve(child.exitCode);
    child.once('close', closed);
    const exited = () => {
      const timer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        child.stdin?.destroy();
        child.off('close', closed);
        resolve(child.exitCode);
      }, 5000);
      timer.unref();
      child.once('close', () => clearTimeout(timer));
    };
    if (child.exitCode !== null || child.signalCode !== null) exited();
    else child.once('exit', exited);
  });
}

const spawned = new Set<ChildProcess>();
// A test that fails half-way must not leave servers running after the test process.
process.on('exit', () => {
  for (const child of spawned) child.kill('SIGKILL');
});

/** Kills every process `spawnOrchestra` started that is still running. */
export function killSpawned(): void {
  for (const child of spawned) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  spawned.clear();
}

export interface SpawnedOrchestra {
  child: ChildProcess;
  /** From the "orchestra listening" log line. */
  url: string;
  stdout: () => string;
  stderr: () => string;
  /** Resolves once a JSON log line with this `msg` was written; rejects if the process exits first. */
  logged: (msg: string) => Promise<void>;
  /**
   * Resolves to standard error once it matches `pattern`; rejects if the process exits
   * first. Standard error is another pipe: what it says may arrive after later log lines.
   */
  printed: (pattern: RegExp) => Promise<string>;
  /** Resolves to the exit code once the process ends (SIGKILL after the deadline). */
  exited: () => Promise<number | null>;
  /** Sends `signal` (default SIGTERM) unless already ended, then waits for the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** The JSON log lines in a process's output; other and incomplete lines are skipped. */
export function logLines(stdout: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const line of stdout.split('\n')) {
    try {
      lines.push(JSON.parse(line));
    } catch {
      // not a complete JSON line (yet)
    }
  }
  return lines;
}

/**
 * Spawns `orchestra start` as a user would, on a free loopback port, with only `childEnv()`
 * and the given variables in its environment, and waits until it logs "orchestra listening".
 */
export async function spawnOrchestra(options: {
  cwd: string;
  dataDir: string;
  env?: Record<string, string>;
  /** Starts the process under `ulimit -n` of this many open files. */
  maxOpenFiles?: number;
  /** `runner` starts `orchestra runner` instead of `orchestra start`. */
  command?: 'start' | 'runner';
}): Promise<SpawnedOrchestra> {
  const verb = options.command ?? 'start';
  const command: [string, string[]] =
    options.maxOpenFiles === undefined
      ? [process.execPath, [ORCHESTRA_BIN, verb]]
      : [
          '/bin/sh',
          [
            '-c',
            `ulimit -n ${options.maxOpenFiles} && exec "$0" "$@"`,
            process.execPath,
            ORCHESTRA_BIN,
            verb,
          ],
        ];
  const child = spawn(command[0], command[1], {
    cwd: options.cwd,
    env: {
      ...childEnv(),
      ORCHESTRA_PORT: '0',
      ORCHESTRA_HOST: '127.0.0.1',
      ORCHESTRA_DATA_DIR: options.dataDir,
      // Suites run in parallel on small machines: shedding is tested where a test asks for it.
      ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS: '0',
      ORCHESTRA_SECRETS_KEY: TEST_SECRET_KEY,
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.add(child);
  let stdout = '';
  let stderr = '';
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    wake();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    wake();
  });
  const exit = processGone(child).then((code) => {
    wake();
    return code;
  });
  const ended = () => child.exitCode !== null || child.signalCode !== null;

  /** Resolves once `seen()` holds; rejects when the process exits first or in time. */
  const until = (what: string, seen: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no ${what} in time\nstdout: ${stdout}\nstderr: ${stderr}`));
      }, SPAWN_DEADLINE_MS);
      const check = () => {
        if (seen()) {
          clearTimeout(timer);
          resolve();
        } else if (ended()) {
          clearTimeout(timer);
          reject(
            new Error(
              `exited with ${child.exitCode} before ${what}\nstdout: ${stdout}\nstderr: ${stderr}`,
            ),
          );
        } else {
          waiters.push(check);
        }
      };
      check();
    });
  const logged = (msg: string) =>
    until(`"${msg}" log line`, () => logLines(stdout).some((line) => line.msg === msg));
  const printed = async (pattern: RegExp) => {
    await until(`${pattern} on stderr`, () => pattern.test(stderr));
    return stderr;
  };

  const exited = async () => {
    const timer = setTimeout(() => child.kill('SIGKILL'), SPAWN_DEADLINE_MS);
    const code = await exit;
    clearTimeout(timer);
    spawned.delete(child);
    return code;
  };

  try {
    await logged('orchestra listening');
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const listening = logLines(stdout).find((line) => line.msg === 'orchestra listening');
  return {
    child,
    url: String(listening?.url),
    stdout: () => stdout,
    stderr: () => stderr,
    logged,
    printed,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (!ended()) child.kill(signal);
      return exited();
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs one `orchestra` command to completion as a user would: a spawned
 * `node bin/orchestra.js` in `cwd`, with nothing but PATH and `env` in its environment and
 * `input` (when given) on its standard input. Killed after SPAWN_DEADLINE_MS, and by
 * `killSpawned`.
 */
export function runCli(
  args: string[],
  options: { cwd: string; env?: Record<string, string>; input?: string },
): Promise<CliResult> {
  return runCommand(process.execPath, [ORCHESTRA_BIN, ...args], {
    ...options,
    env: { ...childEnv(), ...options.env },
  });
}

/**
 * Runs a command to completion with only `env` in its environment and `input` (when given)
 * on its standard input, collecting what it prints. Killed after `timeoutMs` (default
 * SPAWN_DEADLINE_MS), and by `killSpawned`.
 */
export async function runCommand(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; input?: string; timeoutMs?: number },
): Promise<CliResult> {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  spawned.add(child);
  if (child.stdin !== null) {
    // A command that exits without reading its input must not fail the test with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input);
  }
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? SPAWN_DEADLINE_MS);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (exitCode) => resolve(exitCode));
    });
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
    spawned.delete(child);
  }
}

/** Asserts a CLI exit code; the message shows what the command printed. */
export function expectExit(result: CliResult, code: number): void {
  assert.equal(
    result.code,
    code,
    `expected exit ${code}, got ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
  );
}

/** The JSON a CLI command printed, after checking that it exited 0. */
export function jsonOf(result: CliResult): any {
  expectExit(result, 0);
  return JSON.parse(result.stdout);
}

/** A loopback port nothing listens on: connections to it are refused. */
export async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A spawned `orchestra start` for suites that drive the CLI against it. */
/** A CLI command that runs until stopped (`--follow`), read as it prints. */
export interface FollowingCli {
  stdout(): string;
  stderr(): string;
  /** The exit code, or null while it runs. */
  exitCode(): number | null;
  /** Waits until `ready` holds; fails if the command exits first, or after 60 s. */
  until(what: string, ready: () => boolean): Promise<void>;
  /** Stops it (SIGTERM) and waits until it has exited. */
  stop(): Promise<void>;
}

/** Spawns `orchestra <args>` against the fixture's server, to read its output as it comes. */
export function followCli(fixture: CliServer, args: string[]): FollowingCli {
  const child = spawn(
    process.execPath,
    [ORCHESTRA_BIN, ...args, '--url', fixture.server.url, '--api-key', fixture.adminKey],
    { cwd: fixture.workDir, env: childEnv(), stdio: 'pipe' },
  );
  spawned.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const closed = processGone(child);
  const output = () => `\nstdout: ${stdout}\nstderr: ${stderr}`;
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    exitCode: () => child.exitCode,
    async until(what, ready) {
      const deadline = Date.now() + SPAWN_DEADLINE_MS;
      while (!ready()) {
        if (child.exitCode !== null)
          assert.fail(`exited ${child.exitCode} before ${what}${output()}`);
        if (Date.now() > deadline) assert.fail(`no ${what} in time${output()}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    async stop() {
      child.kill('SIGTERM');
      await closed;
      spawned.delete(child);
    },
  };
}

/** The row of a CLI table whose first cell is `first`; fails showing the table without one. */
export function tableRow(table: string, first: string): string {
  const found = table.split('\n').find((line) => line.split(/\s+/)[0] === first);
  assert.ok(found, `no row for ${first} in\n${table}`);
  return found;
}

export interface CliServer {
  server: SpawnedOrchestra;
  adminKey: string;
  /** Where commands run: it holds no `.orchestra`, so no key is picked up by accident. */
  workDir: string;
  dataDir: string;
  /** Runs `orchestra <args>` against the server with the admin key. */
  cli(args: string[], options?: { input?: string }): Promise<CliResult>;
  /** Writes `content` as JSON to the file `name` in the work dir; returns the name. */
  writeJson(name: string, content: unknown): string;
  /** Stops the server and removes both directories. */
  stop(): Promise<void>;
}

export async function startCliServer(
  name: string,
  env: Record<string, string> = {},
): Promise<CliServer> {
  const workDir = tempDir(`orchestra-cli-${name}-`);
  const dataDir = tempDir(`orchestra-cli-${name}-data-`);
  const server = await spawnOrchestra({ cwd: workDir.path, dataDir: dataDir.path, env });
  const adminKey = readFileSync(join(dataDir.path, 'admin-key'), 'utf8').trim();
  return {
    server,
    adminKey,
    workDir: workDir.path,
    dataDir: dataDir.path,
    cli: (args, options = {}) =>
      runCli([...args, '--url', server.url, '--api-key', adminKey], {
        cwd: workDir.path,
        ...options,
      }),
    writeJson(fileName, content) {
      writeFileSync(join(workDir.path, fileName), JSON.stringify(content));
      return fileName;
    },
    async stop() {
      try {
        await server.stop();
      } finally {
        killSpawned();
        workDir.remove();
        dataDir.remove();
      }
    },
  };
}

/**
 * An HTTP endpoint for the registry's health checks whose answer a test switches: 200 on
 * `path` while healthy, `failStatus` otherwise (and on any other path).
 */
export async function healthCheckTarget(
  path: string,
  failStatus = 503,
): Promise<{ port: number; healthy: (ok: boolean) => void; close: () => Promise<void> }> {
  let ok = true;
  const server = createHttpServer((req, res) => {
    res.statusCode = req.url === path && ok ? 200 : failStatus;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    healthy: (value) => {
      ok = value;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Waits, polling, until `check` holds; fails after 60 s, a hang however busy the machine. */
export async function eventually(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * An upstream for HTTP tools on loopback: `/echo…` answers JSON `{"got": <the JSON body>}`,
 * any other path 404 with a text body (a tool-level error). `close` stops it.
 */
export async function echoUpstream(): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createHttpServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (chunk: string) => {
      body += chunk;
    });
    req.on('end', () => {
      if (req.url?.startsWith('/echo')) {
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ got: JSON.parse(body || 'null') }));
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such thing');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
