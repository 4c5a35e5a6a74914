import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { closedPort, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { type CreateApiKeyInput, Orchestra, type Role } from '../src/index.ts';
import { rejection } from './support.ts';

// The SDK against a real server: every call goes over HTTP to the routes users reach.

describe('Orchestra client', () => {
  let server: TestServer;
  let admin: Orchestra;

  before(async () => {
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    await server.stop();
  });

  test('whoami names the tenant, role and key', async () => {
    const me = await admin.whoami();
    assert.equal(me.tenant.id, 'default');
    assert.equal(me.tenant.kind, 'system');
    assert.equal(me.role, 'admin');
    assert.equal(me.credential.type, 'api_key');
    if (me.credential.type === 'api_key') {
      assert.ok(server.adminKey.startsWith(me.credential.prefix));
      assert.equal(me.credential.expires_at, null);
    }
  });

  test('ready describes the node and its dependencies; cluster.nodes lists this node for system admins', async () => {
    const ready = await admin.ready();
    assert.equal(ready.status, 'ready');
    assert.equal(ready.store, 'sqlite');
    assert.equal(ready.checks.store.status, 'ok');
    assert.deepEqual(
      [ready.checks.kv.backend, ready.checks.bus.backend],
      ['embedded', 'in-process'],
    );
    assert.equal(ready.checks.rate_limit.status, 'ok');

    const nodes = await admin.cluster.nodes();
    assert.equal(nodes.length, 1);
    const [node] = nodes;
    assert.equal(node?.id, ready.instance_id);
    assert.equal(node?.version, ready.version);
    assert.equal(node?.store, 'sqlite');
    assert.equal(typeof node?.health_checker, 'boolean');
    assert.ok((node?.load.rss_bytes ?? 0) > 0);

    const { admin_key } = await admin.tenants.create({ id: 'sdk-not-system' });
    const other = new Orchestra({ url: server.url, apiKey: admin_key.secret });
    const denied = await rejection(() => other.cluster.nodes());
    assert.equal(denied.status, 403);
    assert.equal(denied.code, 'PERMISSION_DENIED');
  });

  test('apiKeys.create returns the secret once; get, list and revoke follow it', async () => {
    const expiresAt = new Date(Date.now() + 3_600_000);
    const created = await admin.apiKeys.create({
      name: 'sdk-key',
      role: 'operator',
      expires_at: expiresAt,
    });
    assert.match(created.secret, /^ork_[A-Za-z0-9]+$/);
    assert.equal(created.name, 'sdk-key');
    assert.equal(created.role, 'operator');
    assert.equal(created.status, 'active');
    assert.equal(Date.parse(String(created.expires_at)), expiresAt.getTime());

    const operator = new Orchestra({ url: server.url, apiKey: created.secret });
    assert.equal((await operator.whoami()).role, 'operator');

    const got = await admin.apiKeys.get(created.id);
    assert.equal(got.id, created.id);
    assert.equal(got.name, 'sdk-key');
    assert.equal((got as { secret?: string }).secret, undefined);

    const page = await admin.apiKeys.list({ role: 'operator' });
    assert.deepEqual(
      page.items.map((k) => k.id),
      [created.id],
    );

    const revoked = await admin.apiKeys.revoke(created.id);
    assert.equal(revoked.status, 'revoked');
    assert.notEqual(revoked.revoked_at, null);
    assert.equal((await admin.apiKeys.get(created.id)).status, 'revoked');

    const err = await rejection(() => operator.whoami());
    assert.equal(err.code, 'API_KEY_REVOKED');
    assert.equal(err.status, 401);

    const active = await admin.apiKeys.list();
    assert.ok(!active.items.some((k) => k.id === created.id));
    const all = await admin.apiKeys.list({ include_revoked: true });
    assert.ok(all.items.some((k) => k.id === created.id));
  });

  test('apiKeys.get of an unknown id rejects with API_KEY_NOT_FOUND', async () => {
    const err = await rejection(() => admin.apiKeys.get('key_doesnotexist'));
    assert.equal(err.code, 'API_KEY_NOT_FOUND');
    assert.equal(err.status, 404);
  });

  test('apiKeys.listAll walks every page exactly once', async () => {
    // A tenant of its own, so that the expected set of keys is known exactly.
    const { tenant, admin_key } = await admin.tenants.create({ id: 'sdk-pages' });
    const client = new Orchestra({ url: server.url, apiKey: admin_key.secret });
    const expected = new Set([admin_key.id]);
    for (let i = 0; i < 7; i += 1) {
      expected.add((await client.apiKeys.create({ name: `page-${i}`, role: 'agent' })).id);
    }

    const first = await client.apiKeys.list({ limit: 3 });
    assert.equal(first.items.length, 3);
    assert.notEqual(first.next_cursor, null, 'eight keys in pages of three need a cursor');

    const seen: string[] = [];
    for await (const key of client.apiKeys.listAll({ limit: 3 })) {
      assert.equal(key.tenant_id, tenant.id);
      seen.push(key.id);
    }
    assert.equal(seen.length, 8);
    assert.deepEqual(new Set(seen), expected);
  });

  test('tenants.create, get and list', async () => {
    const created = await admin.tenants.create({ id: 'sdk-acme', name: 'Acme' });
    assert.equal(created.tenant.id, 'sdk-acme');
    assert.equal(created.tenant.name, 'Acme');
    assert.equal(created.tenant.kind, 'standard');
    assert.equal(created.admin_key.role, 'admin');
    assert.equal(created.admin_key.tenant_id, 'sdk-acme');
    assert.match(created.admin_key.secret, /^ork_/);

    const acme = new Orchestra({ url: server.url, apiKey: created.admin_key.secret });
    assert.equal((await acme.whoami()).tenant.id, 'sdk-acme');

    assert.deepEqual(await admin.tenants.get('sdk-acme'), created.tenant);
    const ids = [];
    for await (const tenant of admin.tenants.listAll({ limit: 1 })) ids.push(tenant.id);
    assert.ok(ids.includes('default') && ids.includes('sdk-acme'), ids.join(', '));
    // A standard tenant's admin sees only its own tenant.
    assert.deepEqual(
      (await acme.tenants.list()).items.map((t) => t.id),
      ['sdk-acme'],
    );

    const missing = await rejection(() => admin.tenants.get('no-such-tenant'));
    assert.equal(missing.code, 'TENANT_NOT_FOUND');
    assert.equal(missing.status, 404);
    const twice = await rejection(() => admin.tenants.create({ id: 'sdk-acme' }));
    assert.equal(twice.code, 'TENANT_ALREADY_EXISTS');
    assert.equal(twice.status, 409);
  });

  test('tenants.update sets and removes a tenant’s own limits; only a system admin may', async () => {
    const created = await admin.tenants.create({ id: 'sdk-limited' });
    assert.deepEqual(created.tenant.limit_overrides, {});
    const updated = await admin.tenants.update('sdk-limited', {
      name: 'Limited',
      limits: { max_topics: 7, task_input_max_bytes: 2_097_152 },
    });
    assert.equal(updated.name, 'Limited');
    assert.deepEqual(updated.limit_overrides, { max_topics: 7, task_input_max_bytes: 2_097_152 });
    assert.equal(updated.limits.max_topics, 7);
    assert.equal(updated.limits.task_output_max_bytes, 1_048_576);
    assert.deepEqual(await admin.tenants.get('sdk-limited'), updated);

    const own = new Orchestra({ url: server.url, apiKey: created.admin_key.secret });
    const denied = await rejection(() =>
      own.tenants.update('sdk-limited', { limits: { max_topics: 100 } }),
    );
    assert.equal(denied.code, 'PERMISSION_DENIED');
    const bad = await rejection(() =>
      admin.tenants.update('sdk-limited', { limits: { max_topics: -1 } }),
    );
    assert.equal(bad.code, 'VALIDATION_FAILED');
    assert.match(bad.message, /body\.limits\.max_topics/);

    const removed = await admin.tenants.update('sdk-limited', { limits: { max_topics: null } });
    assert.deepEqual(removed.limit_overrides, { task_input_max_bytes: 2_097_152 });
    assert.equal(removed.limits.max_topics, 10_000);
  });

  test('config.environments lists the environments that hold keys, with how many, page by page', async () => {
    const tenant = await admin.tenants.create({ id: 'sdk-envs', name: 'SDK environments' });
    const client = new Orchestra({ url: server.url, apiKey: tenant.admin_key.secret });
    assert.deepEqual(await client.config.environments(), { items: [], next_cursor: null });
    await client.config.set('app/name', 'a', { env: 'prod' });
    await client.config.set('app/db/pool', { size: 5 }, { env: 'prod' });
    await client.config.set('app/name', 'b', { env: 'dev' });
    await client.config.set('app/name', 'c');
    const first = await client.config.environments({ limit: 2 });
    assert.deepEqual(first.items, [
      { env: 'default', keys: 1 },
      { env: 'dev', keys: 1 },
    ]);
    assert.ok(first.next_cursor);
    const second = await client.config.environments({ limit: 2, cursor: first.next_cursor });
    assert.deepEqual(second, { items: [{ env: 'prod', keys: 2 }], next_cursor: null });
    const err = await rejection(() => client.config.environments({ cursor: 'not-a-cursor' }));
    assert.equal(err.code, 'INVALID_CURSOR');
  });

  test('a schema violation rejects with VALIDATION_FAILED naming the field', async () => {
    const client = new Orchestra({
      url: server.url,
      apiKey: server.adminKey,
      headers: { 'x-request-id': 'sdk-validation-1' },
    });
    const err = await rejection(() =>
      client.apiKeys.create({ name: 'bad-role', role: 'boss' as Role }),
    );
    assert.equal(err.code, 'VALIDATION_FAILED');
    assert.equal(err.status, 400);
    assert.equal(err.requestId, 'sdk-validation-1');
    const fields = err.details?.fields as { field: string; message: string }[];
    assert.ok(Array.isArray(fields), JSON.stringify(err.details));
    assert.ok(
      fields.some((f) => f.field === 'body.role'),
      JSON.stringify(fields),
    );

    const missing = await rejection(() =>
      admin.apiKeys.create({ name: 'no-role' } as unknown as CreateApiKeyInput),
    );
    assert.equal(missing.code, 'VALIDATION_FAILED');
    assert.deepEqual(missing.details?.fields, [{ field: 'body.role', message: 'is required' }]);
    assert.match(String(missing.requestId), /\S/);
  });

  test('a wrong key rejects with INVALID_API_KEY (401)', async () => {
    const client = new Orchestra({
      url: server.url,
      apiKey: 'ork_notarealkey00000000000000000000000000',
    });
    const err = await rejection(() => client.whoami());
    assert.equal(err.code, 'INVALID_API_KEY');
    assert.equal(err.status, 401);
    assert.equal(err.name, 'OrchestraError');
    assert.match(err.message, /\S/);
    assert.match(String(err.requestId), /\S/);
  });

  test('a viewer key rejects admin operations with PERMISSION_DENIED (403)', async () => {
    const viewerKey = await admin.apiKeys.create({ name: 'sdk-viewer', role: 'viewer' });
    const viewer = new Orchestra({ url: server.url, apiKey: viewerKey.secret });
    assert.equal((await viewer.whoami()).role, 'viewer');
    const err = await rejection(() => viewer.apiKeys.list());
    assert.equal(err.code, 'PERMISSION_DENIED');
    assert.equal(err.status, 403);
    assert.match(err.message, /viewer/);
    assert.match(String(err.requestId), /\S/);
  });

  test('with several URLs, a node that refuses connections is passed over, for every method, and the next one kept', async () => {
    const down = `http://127.0.0.1:${await closedPort()}`;
    const client = new Orchestra({ url: [down, server.url], apiKey: server.adminKey });
    assert.equal(client.url, down);
    // A POST that never reached the first node is safe to send to the next.
    const key = await client.apiKeys.create({ name: 'failover', role: 'viewer' });
    assert.equal(client.url, server.url);
    assert.equal((await client.apiKeys.get(key.id)).name, 'failover');
    assert.deepEqual(client.urls, [down, server.url]);
  });

  test('with several URLs, all of them down rejects once with CONNECTION_FAILED naming the last', async () => {
    const ports = [await closedPort(), await closedPort()];
    const client = new Orchestra({
      url: ports.map((p) => `http://127.0.0.1:${p}`),
      apiKey: 'ork_x',
    });
    const err = await rejection(() => client.whoami());
    assert.equal(err.code, 'CONNECTION_FAILED');
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${ports[1]}`));
  });

  test('a POST that may have reached a node is not repeated on another', async () => {
    // A node that takes the request and drops the connection without an answer.
    const dropping = createHttpServer((req) => req.socket.destroy());
    await new Promise<void>((resolve) => dropping.listen(0, '127.0.0.1', resolve));
    const address = dropping.address();
    assert.ok(address !== null && typeof address === 'object');
    try {
      const client = new Orchestra({
        url: [`http://127.0.0.1:${address.port}`, server.url],
        apiKey: server.adminKey,
      });
      const before = (await admin.apiKeys.list({ limit: 200 })).items.length;
      const err = await rejection(() => client.apiKeys.create({ name: 'once', role: 'viewer' }));
      assert.equal(err.code, 'CONNECTION_FAILED');
      assert.equal((await admin.apiKeys.list({ limit: 200 })).items.length, before);
      // A GET is repeatable: it moves on.
      assert.equal((await client.whoami()).role, 'admin');
      assert.equal(client.url, server.url);
    } finally {
      dropping.close();
    }
  });
});

describe('Orchestra client with rate limits', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      env: { ORCHESTRA_RATE_LIMIT_PER_SECOND: '0.001', ORCHESTRA_RATE_LIMIT_BURST: '2' },
    });
  });
  after(async () => {
    await server.stop();
  });

  test('RATE_LIMITED carries retryAfterSeconds from Retry-After', async () => {
    const client = new Orchestra({ url: server.url, apiKey: server.adminKey });
    await client.whoami();
    await client.whoami();
    const err = await rejection(() => client.whoami());
    assert.equal(err.code, 'RATE_LIMITED');
    assert.equal(err.status, 429);
    // One token per 1000 s: the wait is whole seconds, at least 1 and at most 1000.
    assert.equal(typeof err.retryAfterSeconds, 'number');
    assert.ok(
      Number.isInteger(err.retryAfterSeconds) &&
        Number(err.retryAfterSeconds) >= 1 &&
        Number(err.retryAfterSeconds) <= 1000,
      String(err.retryAfterSeconds),
    );
  });
});

describe('Orchestra client without a usable server', () => {
  const silent = createHttpServer(() => {
    // Never answers: the client has to give up on its own.
  });
  before(async () => {
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    silent.closeAllConnections();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  test('a closed port rejects with CONNECTION_FAILED and status 0', async () => {
    const port = await closedPort();
    const client = new Orchestra({ url: `http://127.0.0.1:${port}`, apiKey: 'ork_x' });
    const err = await rejection(() => client.whoami());
    assert.equal(err.code, 'CONNECTION_FAILED');
    assert.equal(err.status, 0);
    assert.equal(err.requestId, undefined);
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.ok(err.cause !== undefined);
  });

  test('a server that never answers rejects with TIMEOUT after timeoutMs', async () => {
    const address = silent.address();
    assert.ok(address !== null && typeof address === 'object');
    const client = new Orchestra({
      url: `http://127.0.0.1:${address.port}`,
      apiKey: 'ork_x',
      timeoutMs: 50,
    });
    const err = await rejection(() => client.whoami());
    assert.equal(err.code, 'TIMEOUT');
    assert.equal(err.status, 0);
    assert.match(err.message, /50 ms/);
  });

  test('the constructor rejects a url without http:// or https://', () => {
    for (const url of ['localhost:8080', 'ftp://example.com', '//example.com', '']) {
      assert.throws(() => new Orchestra({ url }), TypeError, url);
    }
    assert.throws(() => new Orchestra({ url: [] }), TypeError);
    assert.throws(() => new Orchestra({ url: ['http://a.example', 'a.example'] }), TypeError);
    assert.equal(new Orchestra({ url: 'https://example.com/' }).url, 'https://example.com');
  });
});
