import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { expectError, startTestServer, type TestServer } from './helpers.ts';
import { INITIALIZE } from './mcp-servers.ts';
import { RealtimeTestClient } from './realtime-client.ts';
import { SseReader } from './sse.ts';

// Issue 18, finding 3: a viewer of one tenant reading 4 MB pages in a loop took most of the
// node's CPU and another tenant's p99 rose a hundredfold, because each page cost one token,
// like a `whoami`. These servers refill one token in 1,000 s, so the counts below are exact.

const BURST = 20;
const BYTES_PER_TOKEN = 65_536;
const ITEM_BYTES = 131_072; // 2 tokens' worth
const ITEMS = 12;
const LIMITS = {
  ORCHESTRA_RATE_LIMIT_PER_SECOND: '0.001',
  ORCHESTRA_RATE_LIMIT_BURST: String(BURST),
  ORCHESTRA_RESPONSE_MAX_BYTES: '1048576',
  ORCHESTRA_BODY_LIMIT_BYTES: '4194304',
};
const TASKS = '/v1/tasks?limit=200';
const HISTORY = '/v1/topics/big/messages?last=1000&limit=1000';

/**
 * Two tenants: `noisy`, with 12 tasks and a topic of 12 messages of 128 KiB each (a page of
 * either is about 1 MB), and `quiet`. Returns their admin keys.
 */
async function twoTenants(server: TestServer) {
  const admin = async (id: string): Promise<string> =>
    (await server.call('POST', '/v1/tenants', { body: { id } })).body.admin_key.secret;
  const noisy = await admin('noisy');
  const quiet = await admin('quiet');
  const data = (i: number) => `${i}:`.padEnd(ITEM_BYTES, 'x');
  // Writing is charged too (the batch's answer holds every task): a key for each.
  const tasks = await server.call('POST', '/v1/tasks/batch', {
    key: await keyOf(server, noisy, 'operator'),
    body: {
      tasks: Array.from({ length: ITEMS }, (_, i) => ({
        capabilities: ['nobody'],
        input: { data: data(i) },
      })),
    },
  });
  assert.equal(tasks.status, 200);
  const publisher = await keyOf(server, noisy, 'operator');
  for (let i = 0; i < ITEMS; i += 1) {
    const message = await server.call('POST', '/v1/topics/big/messages', {
      key: publisher,
      body: { data: data(i) },
    });
    assert.equal(message.status, 201);
  }
  return { noisy, quiet };
}

/** A new key of the tenant whose admin key is `admin`: a bucket of its own. */
async function keyOf(server: TestServer, admin: string, role: string): Promise<string> {
  const created = await server.call('POST', '/v1/api-keys', {
    key: admin,
    body: { name: role, role },
  });
  assert.equal(created.status, 201);
  return created.body.secret;
}

const viewerOf = (server: TestServer, admin: string) => keyOf(server, admin, 'viewer');

/** What a bucket holds after a request answered with `bytes`: its token, and its bytes. */
const afterAnswer = (tokens: number, bytes: number) =>
  Math.max(-BURST, tokens - 1 - Math.floor(bytes / BYTES_PER_TOKEN));

describe('rate limits charge the bytes served (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN)', () => {
  let server: TestServer;
  let noisy: string;
  let quiet: string;

  before(async () => {
    server = await startTestServer({ env: LIMITS });
    ({ noisy, quiet } = await twoTenants(server));
  });
  after(() => server.stop());

  test('a credential reading 1 MB pages is refused with 429 and Retry-After after a few, while a quiet tenant making small requests is not', async () => {
    const reader = await viewerOf(server, noisy);
    const calm = await viewerOf(server, quiet);
    let tokens = BURST;
    const statuses: number[] = [];
    for (let i = 0; i < BURST; i += 1) {
      const page = await server.call('GET', TASKS, { key: reader });
      statuses.push(page.status);
      if (page.status === 429) {
        expectError(page, 429, 'RATE_LIMITED');
        assert.ok(Number(page.headers.get('retry-after')) >= 1);
        assert.equal(page.headers.get('ratelimit-remaining'), '0');
        break;
      }
      assert.equal(page.status, 200);
      assert.ok(page.body.items.length >= 4);
      const bytes = Number(page.headers.get('content-length'));
      assert.ok(bytes > 800_000, `a page of ${bytes} B`);
      // The headers show the bucket after the answer's bytes, as the next request finds it.
      tokens = afterAnswer(tokens, bytes);
      assert.equal(page.headers.get('ratelimit-remaining'), String(Math.max(0, tokens)));
      // The quiet tenant's small requests in between: one token each, never refused.
      const whoami = await server.call('GET', '/v1/whoami', { key: calm });
      assert.equal(whoami.status, 200);
      assert.equal(whoami.headers.get('ratelimit-remaining'), String(BURST - 1 - i));
    }
    // About 15 tokens a page: the second puts the bucket in debt, the third waits.
    assert.deepEqual(statuses, [200, 200, 429]);
    assert.equal((await server.call('GET', '/v1/whoami', { key: calm })).status, 200);
    // The debt is the reader's own, not its tenant's.
    const other = await viewerOf(server, noisy);
    assert.equal((await server.call('GET', TASKS, { key: other })).status, 200);
  });

  test('what the MCP gateway streams is charged to the caller like any answer', async () => {
    // An HTTP tool whose answer is about 200 KB: 3 tokens' worth.
    const big = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ data: 'y'.repeat(200_000) }));
    });
    await new Promise<void>((resolve) => big.listen(0, '127.0.0.1', resolve));
    try {
      const admin = (await server.call('POST', '/v1/tenants', { body: { id: 'mcp-bytes' } })).body
        .admin_key.secret;
      const created = await server.call('POST', '/v1/tools', {
        key: admin,
        body: {
          name: 'big',
          description: 'A large answer',
          annotations: { readOnlyHint: true },
          source: {
            type: 'http',
            method: 'GET',
            url: `http://127.0.0.1:${(big.address() as AddressInfo).port}/`,
          },
        },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const caller = await keyOf(server, admin, 'operator');
      const mcp = (body: unknown, session?: string) =>
        fetch(`${server.url}/mcp`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${caller}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            ...(session ? { 'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25' } : {}),
          },
          body: JSON.stringify(body),
        });
      const init = await mcp(JSON.parse(INITIALIZE));
      const session = init.headers.get('mcp-session-id') ?? '';
      await init.text();
      assert.equal(init.status, 200);
      await (await mcp({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
      const call = await mcp(
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'big', arguments: {} } },
        session,
      );
      const streamed = await call.text();
      assert.equal(call.status, 200);
      assert.ok(streamed.length > 200_000, `streamed ${streamed.length} B`);
      // Four requests so far, one token each, plus the call's answer by its bytes.
      const next = await server.call('GET', '/v1/whoami', { key: caller });
      assert.equal(next.status, 200);
      const byBytes = Math.floor(streamed.length / BYTES_PER_TOKEN);
      assert.ok(byBytes >= 3);
      assert.equal(next.headers.get('ratelimit-remaining'), String(BURST - 4 - byBytes));
    } finally {
      big.closeAllConnections();
      await new Promise((resolve) => big.close(resolve));
    }
  });

  test('small answers cost one token each, as before byte charging', async () => {
    const calm = await viewerOf(server, quiet);
    for (let i = 1; i <= BURST; i += 1) {
      const answer = await server.call('GET', '/v1/tasks', { key: calm });
      assert.equal(answer.status, 200);
      assert.ok(Number(answer.headers.get('content-length')) < BYTES_PER_TOKEN);
      assert.equal(answer.headers.get('ratelimit-remaining'), String(BURST - i));
    }
    expectError(await server.call('GET', '/v1/whoami', { key: calm }), 429, 'RATE_LIMITED');
  });

  test('topic history over REST is charged to the credential, with its own bucket in the headers', async () => {
    const reader = await viewerOf(server, noisy);
    const first = await server.call('GET', HISTORY, { key: reader });
    assert.equal(first.status, 200);
    const tokens = afterAnswer(BURST, Number(first.headers.get('content-length')));
    assert.ok(tokens > 0 && tokens < BURST - 10);
    assert.equal(first.headers.get('ratelimit-remaining'), String(tokens));
    assert.equal((await server.call('GET', HISTORY, { key: reader })).status, 200);
    const refused = await server.call('GET', HISTORY, { key: reader });
    expectError(refused, 429, 'RATE_LIMITED');
    assert.equal(refused.headers.get('ratelimit-remaining'), '0');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
  });

  test('an event stream is charged as it is written but never cut: it delivers everything, and the next request waits', async () => {
    const reader = await viewerOf(server, noisy);
    const stream = await SseReader.open(`${server.url}/v1/topics/big/events?after=0`, {
      authorization: `Bearer ${reader}`,
    });
    try {
      assert.equal(stream.status, 200);
      // 12 messages of 128 KiB: 24 tokens and more, past the whole bucket of 20.
      const offsets = (await stream.waitFor((e) => e.filter((x) => x.id).length >= ITEMS))
        .filter((e) => e.id !== undefined)
        .map((e) => Number(e.id));
      assert.deepEqual(
        offsets,
        Array.from({ length: ITEMS }, (_, i) => i + 1),
      );
    } finally {
      stream.close();
    }
    const next = await server.call('GET', '/v1/whoami', { key: reader });
    expectError(next, 429, 'RATE_LIMITED');
    assert.ok(Number(next.headers.get('retry-after')) >= 1);
  });

  test('realtime history frames take a token and are charged for their bytes, from the same bucket as REST', async () => {
    const reader = await viewerOf(server, noisy);
    const client = await RealtimeTestClient.open(server.url, reader);
    try {
      const answers: string[] = [];
      for (let i = 0; i < 5; i += 1) {
        const answer = await client.request({
          kind: 'history',
          topic: 'big',
          last: 1000,
          limit: 1000,
        });
        answers.push(answer.kind === 'error' ? answer.code : answer.kind);
        if (answer.kind === 'error') {
          assert.ok(answer.details.retry_after_seconds >= 1);
          break;
        }
      }
      // The upgrade took a token; each answer of about 1 MB about 16 more.
      assert.deepEqual(answers, ['history', 'history', 'RATE_LIMITED']);
      expectError(await server.call('GET', '/v1/whoami', { key: reader }), 429, 'RATE_LIMITED');
    } finally {
      client.socket.close();
      await client.closed;
    }
  });
});

describe('byte charging off (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN=0)', () => {
  let server: TestServer;
  let noisy: string;

  before(async () => {
    server = await startTestServer({
      env: { ...LIMITS, ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN: '0' },
    });
    ({ noisy } = await twoTenants(server));
  });
  after(() => server.stop());

  test('a 1 MB page costs one token, like any request', async () => {
    const reader = await viewerOf(server, noisy);
    for (let i = 1; i <= BURST; i += 1) {
      const page = await server.call('GET', TASKS, { key: reader });
      assert.equal(page.status, 200);
      assert.ok(Number(page.headers.get('content-length')) > 800_000);
      assert.equal(page.headers.get('ratelimit-remaining'), String(BURST - i));
    }
    expectError(await server.call('GET', TASKS, { key: reader }), 429, 'RATE_LIMITED');
  });
});
