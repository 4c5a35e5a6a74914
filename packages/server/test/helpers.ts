import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { loadSettings, type Settings } from '../src/platform/settings.ts';
import { type RunningServer, startServer } from '../src/server.ts';

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
 * Starts a real server on a free port in a temporary data directory, on SQLite or on a
 * fresh PostgreSQL database. `env` holds extra ORCHESTRA_* settings.
 */
export async function startTestServer(
  options: { store?: StoreVariant; env?: Record<string, string> } = {},
): Promise<TestServer> {
  const dir = tempDir();
  const database = options.store === 'postgres' ? await createTestDatabase() : undefined;
  const settings: Settings = loadSettings({
    ORCHESTRA_PORT: '0',
    ORCHESTRA_HOST: '127.0.0.1',
    ORCHESTRA_DATA_DIR: dir.path,
    ORCHESTRA_LOG_LEVEL: 'silent',
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
    ...(database ? { ORCHESTRA_DATABASE_URL: database.url } : {}),
    ...options.env,
  });
  let adminKey: string | undefined;
  const server = await startServer(settings, {
    log: pino({ level: settings.logLevel }),
    onAdminKey: (key) => {
      adminKey = key.secret;
    },
  });
  if (adminKey === undefined) throw new Error('the test server did not create an admin key');
  const key = adminKey;
  return {
    ...server,
    adminKey: key,
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
