// Issue 18, finding 5: a revoked key kept receiving on open HTTP streams (config watch and
// topic events for 97 s after the revocation), while WebSockets closed within about 5 s.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { type RunningServer, startServer } from '../src/server.ts';
import {
  createTestDatabase,
  startTestServer,
  type TestServer,
  tempDir,
  testSettings,
} from './helpers.ts';

const FAST_CHECKS = {
  ORCHESTRA_STREAM_CREDENTIAL_CHECK_MS: '200',
  ORCHESTRA_AUTH_CACHE_TTL_MS: '200',
};

async function createKey(
  server: { url: string },
  adminKey: string,
  body: Record<string, unknown>,
): Promise<{ id: string; secret: string }> {
  const response = await fetch(`${server.url}/v1/api-keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()) as { id: string; secret: string };
}

/** Opens a stream; `ended` resolves to its text once the server ends it (60 s: a hang). */
async function openStream(url: string, key: string, format: 'sse' | 'ndjson') {
  const response = await fetch(url, {
    headers: {
      authorization: `Bearer ${key}`,
      accept: format === 'sse' ? 'text/event-stream' : 'application/x-ndjson',
    },
    signal: AbortSignal.timeout(60_000),
  });
  // The body is read only on failure: a stream's body ends only when the stream does.
  if (response.status !== 200) assert.fail(`${url}: ${response.status} ${await response.text()}`);
  return { ended: response.text() };
}

/** The `stream.error` item a stream ended with (its last item), or a failure. */
function lastError(text: string, format: 'sse' | 'ndjson'): { code: string; message: string } {
  if (format === 'sse') {
    const events = text.trim().split('\n\n');
    const last = events.at(-1) ?? '';
    assert.match(last, /^event: stream\.error\ndata: /, `the stream ended with: ${last}`);
    return JSON.parse(last.slice(last.indexOf('data: ') + 6));
  }
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  const last = JSON.parse(lines.at(-1) ?? '{}');
  assert.equal(last.type, 'stream.error', `the stream ended with: ${lines.at(-1)}`);
  return last;
}

describe('a revoked key keeps receiving on open HTTP streams', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: FAST_CHECKS });
    await server.call('POST', '/v1/templates', { body: { name: 'held', capabilities: ['none'] } });
  });
  after(() => server.stop());

  /** The five kinds of stream, each opened in both formats. */
  async function streamUrls(): Promise<string[]> {
    const task = await server.call('POST', '/v1/tasks', { body: { template: 'held' } });
    assert.equal(task.status, 201);
    const session = await server.call('POST', '/v1/sessions', { body: {} });
    assert.equal(session.status, 201, JSON.stringify(session.body));
    const published = await server.call('POST', '/v1/topics/news.today/messages', {
      body: { event: 'hello', data: 1 },
    });
    assert.ok(published.status < 300, JSON.stringify(published.body));
    return [
      `${server.url}/v1/tasks/${task.body.id}/events`,
      `${server.url}/v1/sessions/${session.body.id}/events`,
      `${server.url}/v1/topics/news.today/events`,
      `${server.url}/v1/config/watch`,
      `${server.url}/v1/services/billing/watch`,
    ];
  }

  test('every stream ends with stream.error API_KEY_REVOKED once its key is revoked', async () => {
    const key = await createKey(server, server.adminKey, { name: 'streams', role: 'admin' });
    const urls = await streamUrls();
    const streams = [];
    for (const url of urls) {
      for (const format of ['sse', 'ndjson'] as const) {
        streams.push({ url, format, ...(await openStream(url, key.secret, format)) });
      }
    }
    const revoked = await server.call('DELETE', `/v1/api-keys/${key.id}`);
    assert.equal(revoked.status, 200);
    for (const stream of streams) {
      const error = lastError(await stream.ended, stream.format);
      assert.equal(error.code, 'API_KEY_REVOKED', `${stream.format} ${stream.url}`);
      assert.equal(typeof error.message, 'string');
    }
  });

  test('a stream ends with stream.error API_KEY_EXPIRED when its key expires', async () => {
    const [taskEvents] = await streamUrls();
    // Long enough to open the stream on a busy machine; the check then ends it at expiry.
    const key = await createKey(server, server.adminKey, {
      name: 'expiring',
      role: 'viewer',
      expires_at: new Date(Date.now() + 8_000).toISOString(),
    });
    const stream = await openStream(taskEvents ?? '', key.secret, 'ndjson');
    assert.equal(lastError(await stream.ended, 'ndjson').code, 'API_KEY_EXPIRED');
  });

  test('a stream whose key stays valid is not ended by the checks', async () => {
    const key = await createKey(server, server.adminKey, { name: 'valid', role: 'viewer' });
    const controller = new AbortController();
    const response = await fetch(`${server.url}/v1/config/watch`, {
      headers: { authorization: `Bearer ${key.secret}` },
      signal: controller.signal,
    });
    const reader = response.body?.getReader();
    assert.ok(reader);
    // Ten checks' worth of time: the stream is still open (a read is still pending).
    const outcome = await Promise.race([
      reader.read().then(() => 'ended or wrote'),
      new Promise((resolve) => setTimeout(() => resolve('open'), 2_000)),
    ]);
    controller.abort();
    assert.equal(outcome, 'open');
  });
});

describe('a key revoked on one node ends the streams it holds on another', () => {
  const dirs = [tempDir(), tempDir()];
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  const nodes: RunningServer[] = [];
  let adminKey = '';

  before(async () => {
    database = await createTestDatabase();
    for (const dir of dirs) {
      nodes.push(
        await startServer(
          testSettings(dir.path, { ORCHESTRA_DATABASE_URL: database.url, ...FAST_CHECKS }),
          {
            log: pino({ level: 'silent' }),
            onAdminKey: (key) => {
              adminKey = key.secret;
            },
          },
        ),
      );
    }
  });
  after(async () => {
    for (const node of nodes) await node.close();
    await database?.drop();
    for (const dir of dirs) dir.remove();
  });

  test('revoked through node A, the config watch on node B ends with API_KEY_REVOKED', async () => {
    const [a, b] = nodes;
    assert.ok(a && b && adminKey !== '');
    const key = await createKey(a, adminKey, { name: 'cross-node', role: 'viewer' });
    const stream = await openStream(`${b.url}/v1/config/watch`, key.secret, 'sse');
    const revoked = await fetch(`${a.url}/v1/api-keys/${key.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${adminKey}` },
    });
    assert.equal(revoked.status, 200);
    assert.equal(lastError(await stream.ended, 'sse').code, 'API_KEY_REVOKED');
  });
});
