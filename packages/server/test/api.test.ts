import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  expectError,
  STORE_VARIANTS,
  startTestServer,
  TEST_POSTGRES_URL,
  type TestServer,
} from './helpers.ts';

/** The identity API as a client sees it, on every store. */
for (const store of STORE_VARIANTS) {
  describe(`identity API on ${store}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store });
    });
    after(() => server.stop());

    async function createKey(role: string, name = `${role} key`, key?: string) {
      const res = await server.call('POST', '/v1/api-keys', {
        body: { name, role },
        ...(key ? { key } : {}),
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { id: string; secret: string; role: string };
    }

    test('whoami answers with the tenant and role of the admin key', async () => {
      const res = await server.call('GET', '/v1/whoami');
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.tenant, { id: 'default', name: 'Default', kind: 'system' });
      assert.equal(res.body.role, 'admin');
      assert.equal(res.body.credential.type, 'api_key');
      assert.ok(server.adminKey.startsWith(res.body.credential.prefix));
    });

    test('a wrong, missing or malformed credential gets 401 in the unified format', async () => {
      const wrong = await server.call('GET', '/v1/whoami', { key: 'ork_notarealkey' });
      const error = expectError(wrong, 401, 'INVALID_API_KEY');
      assert.equal(wrong.headers.get('x-request-id'), error.request_id);
      expectError(await server.call('GET', '/v1/whoami', { key: null }), 401, 'UNAUTHENTICATED');
      expectError(
        await server.call('GET', '/v1/whoami', {
          key: null,
          headers: { authorization: 'Basic abc' },
        }),
        401,
        'UNAUTHENTICATED',
      );
      // The X-API-Key header is accepted as well as Authorization.
      const viaHeader = await server.call('GET', '/v1/whoami', {
        key: null,
        headers: { 'x-api-key': server.adminKey },
      });
      assert.equal(viaHeader.status, 200);
    });

    test('X-API-Key is ignored when Authorization: Basic is present (issue 18)', async () => {
      // X-API-Key exists for exactly this case: Authorization is taken by a proxy's Basic auth.
      const both = await server.call('GET', '/v1/whoami', {
        key: null,
        headers: { authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': server.adminKey },
      });
      assert.equal(both.status, 200);
      assert.equal(both.body.role, 'admin');
      // A Bearer credential in Authorization still wins over X-API-Key.
      expectError(
        await server.call('GET', '/v1/whoami', {
          key: 'ork_notarealkey',
          headers: { 'x-api-key': server.adminKey },
        }),
        401,
        'INVALID_API_KEY',
      );
      // A bad X-API-Key behind Basic is judged as the key it is.
      expectError(
        await server.call('GET', '/v1/whoami', {
          key: null,
          headers: { authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': 'ork_notarealkey' },
        }),
        401,
        'INVALID_API_KEY',
      );
    });

    test('creates a key whose secret is shown once and never stored in the clear', async () => {
      const created = await createKey('operator', 'ci pipeline');
      assert.match(created.secret, /^ork_[0-9A-Za-z]{40}$/);
      const fetched = await server.call('GET', `/v1/api-keys/${created.id}`);
      assert.equal(fetched.status, 200);
      assert.equal(fetched.body.secret, undefined);
      assert.equal(fetched.body.status, 'active');
      assert.equal(
        fetched.body.created_by,
        (await server.call('GET', '/v1/whoami')).body.credential.id,
      );
      const rows = await server.store.db
        .selectFrom('api_keys')
        .selectAll()
        .where('id', '=', created.id)
        .execute();
      assert.ok(rows[0]);
      assert.ok(
        !JSON.stringify(rows[0]).includes(created.secret.slice(4)),
        'secret stored in the clear',
      );
      const me = await server.call('GET', '/v1/whoami', { key: created.secret });
      assert.equal(me.body.role, 'operator');
    });

    test('a revoked key stops working at once; revoking again is a no-op', async () => {
      const created = await createKey('viewer');
      assert.equal((await server.call('GET', '/v1/whoami', { key: created.secret })).status, 200);
      const revoked = await server.call('DELETE', `/v1/api-keys/${created.id}`);
      assert.equal(revoked.status, 200);
      assert.equal(revoked.body.status, 'revoked');
      expectError(
        await server.call('GET', '/v1/whoami', { key: created.secret }),
        401,
        'API_KEY_REVOKED',
      );
      const again = await server.call('DELETE', `/v1/api-keys/${created.id}`);
      assert.equal(again.status, 200);
      assert.equal(again.body.revoked_at, revoked.body.revoked_at);
    });

    test('an expired key is refused, and a key cannot be created already expired', async () => {
      const created = await createKey('viewer');
      await server.store.db
        .updateTable('api_keys')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('id', '=', created.id)
        .execute();
      expectError(
        await server.call('GET', '/v1/whoami', { key: created.secret }),
        401,
        'API_KEY_EXPIRED',
      );
      assert.equal((await server.call('GET', `/v1/api-keys/${created.id}`)).body.status, 'expired');
      const past = await server.call('POST', '/v1/api-keys', {
        body: { name: 'late', role: 'viewer', expires_at: '2001-01-01T00:00:00Z' },
      });
      assert.equal(
        expectError(past, 400, 'VALIDATION_FAILED').details.fields[0].field,
        'body.expires_at',
      );
      const future = new Date(Date.now() + 86_400_000).toISOString();
      const ok = await server.call('POST', '/v1/api-keys', {
        body: { name: 'soon', role: 'viewer', expires_at: future },
      });
      assert.equal(ok.status, 201);
      assert.equal(ok.body.expires_at, future);
    });

    test('roles: viewers and agents cannot manage keys; operators cannot either', async () => {
      for (const role of ['viewer', 'agent', 'operator']) {
        const key = await createKey(role);
        const denied = await server.call('POST', '/v1/api-keys', {
          key: key.secret,
          body: { name: 'x', role: 'admin' },
        });
        assert.match(expectError(denied, 403, 'PERMISSION_DENIED').message, /admin/);
        expectError(
          await server.call('GET', '/v1/api-keys', { key: key.secret }),
          403,
          'PERMISSION_DENIED',
        );
        expectError(
          await server.call('GET', '/v1/tenants', { key: key.secret }),
          403,
          'PERMISSION_DENIED',
        );
        assert.equal((await server.call('GET', '/v1/whoami', { key: key.secret })).body.role, role);
      }
    });

    test('the last active admin key of a tenant cannot be revoked', async () => {
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `solo-${store}` } });
      assert.equal(tenant.status, 201);
      const soloKey = tenant.body.admin_key;
      const refused = await server.call('DELETE', `/v1/api-keys/${soloKey.id}`, {
        key: soloKey.secret,
      });
      expectError(refused, 409, 'LAST_ADMIN_KEY');
      assert.equal((await server.call('GET', '/v1/whoami', { key: soloKey.secret })).status, 200);
      // With a second admin key, the first can go.
      const second = await createKey('admin', 'second admin', soloKey.secret);
      const revoked = await server.call('DELETE', `/v1/api-keys/${soloKey.id}`, {
        key: second.secret,
      });
      assert.equal(revoked.status, 200);
    });

    test('lists keys page by page, each exactly once, in creation order', async () => {
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `pages-${store}` } });
      const admin = tenant.body.admin_key.secret as string;
      const created = [tenant.body.admin_key.id as string];
      for (let i = 0; i < 6; i += 1) created.push((await createKey('viewer', `k${i}`, admin)).id);
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
        const res = await server.call('GET', `/v1/api-keys?limit=3${query}`, { key: admin });
        assert.equal(res.status, 200);
        assert.ok(res.body.items.length <= 3);
        seen.push(...res.body.items.map((k: { id: string }) => k.id));
        cursor = res.body.next_cursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      assert.equal(pages, 3);
      assert.deepEqual(seen, created);
      const viewers = await server.call('GET', '/v1/api-keys?role=admin', { key: admin });
      assert.deepEqual(
        viewers.body.items.map((k: { id: string }) => k.id),
        [tenant.body.admin_key.id],
      );
      expectError(
        await server.call('GET', '/v1/api-keys?cursor=garbage', { key: admin }),
        400,
        'INVALID_CURSOR',
      );
      expectError(
        await server.call('GET', '/v1/api-keys?limit=0', { key: admin }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', '/v1/api-keys?limit=201', { key: admin }),
        400,
        'VALIDATION_FAILED',
      );
    });

    test('revoked keys are listed only when asked for', async () => {
      const created = await createKey('viewer', 'to revoke');
      await server.call('DELETE', `/v1/api-keys/${created.id}`);
      const ids = async (query: string) => {
        const all: string[] = [];
        let cursor: string | null = null;
        do {
          const page: { status: number; body: any } = await server.call(
            'GET',
            `/v1/api-keys?limit=200${query}${cursor ? `&cursor=${cursor}` : ''}`,
          );
          all.push(...page.body.items.map((k: { id: string }) => k.id));
          cursor = page.body.next_cursor;
        } while (cursor);
        return all;
      };
      assert.ok(!(await ids('')).includes(created.id));
      assert.ok((await ids('&include_revoked=true')).includes(created.id));
    });

    test('tenant isolation: a key of tenant B never sees or touches tenant A', async () => {
      const aKey = await createKey('viewer', 'tenant A key');
      const created = await server.call('POST', '/v1/tenants', {
        body: { id: `tenant-b-${store}`, name: 'B' },
      });
      assert.equal(created.status, 201);
      assert.equal(created.body.tenant.kind, 'standard');
      const b = created.body.admin_key.secret as string;
      const bMe = await server.call('GET', '/v1/whoami', { key: b });
      assert.equal(bMe.body.tenant.id, `tenant-b-${store}`);

      const bKeys = await server.call('GET', '/v1/api-keys?limit=200&include_revoked=true', {
        key: b,
      });
      assert.deepEqual(
        bKeys.body.items.map((k: { tenant_id: string }) => k.tenant_id),
        [`tenant-b-${store}`],
      );
      expectError(
        await server.call('GET', `/v1/api-keys/${aKey.id}`, { key: b }),
        404,
        'API_KEY_NOT_FOUND',
      );
      expectError(
        await server.call('DELETE', `/v1/api-keys/${aKey.id}`, { key: b }),
        404,
        'API_KEY_NOT_FOUND',
      );
      assert.equal((await server.call('GET', '/v1/whoami', { key: aKey.secret })).status, 200);

      const bTenants = await server.call('GET', '/v1/tenants', { key: b });
      assert.deepEqual(
        bTenants.body.items.map((t: { id: string }) => t.id),
        [`tenant-b-${store}`],
      );
      expectError(
        await server.call('GET', '/v1/tenants/default', { key: b }),
        404,
        'TENANT_NOT_FOUND',
      );
      expectError(
        await server.call('POST', '/v1/tenants', { key: b, body: { id: 'sneaky' } }),
        403,
        'PERMISSION_DENIED',
      );
      // A key B creates belongs to B, whatever the body says.
      const smuggled = await server.call('POST', '/v1/api-keys', {
        key: b,
        body: { name: 'x', role: 'viewer', tenant_id: 'default' },
      });
      expectError(smuggled, 400, 'VALIDATION_FAILED');
      // The system admin sees both tenants.
      const all = await server.call('GET', '/v1/tenants?limit=200');
      const ids = all.body.items.map((t: { id: string }) => t.id);
      assert.ok(ids.includes('default') && ids.includes(`tenant-b-${store}`));
      assert.equal((await server.call('GET', `/v1/tenants/tenant-b-${store}`)).body.name, 'B');
    });

    test('tenant ids are validated and unique', async () => {
      const bad = await server.call('POST', '/v1/tenants', { body: { id: 'Not Valid!' } });
      assert.equal(expectError(bad, 400, 'VALIDATION_FAILED').details.fields[0].field, 'body.id');
      await server.call('POST', '/v1/tenants', { body: { id: `dup-${store}` } });
      expectError(
        await server.call('POST', '/v1/tenants', { body: { id: `dup-${store}` } }),
        409,
        'TENANT_ALREADY_EXISTS',
      );
      expectError(await server.call('GET', '/v1/tenants/nobody-here'), 404, 'TENANT_NOT_FOUND');
    });

    test('bad input gets a 4xx that names the problem', async () => {
      const missing = expectError(
        await server.call('POST', '/v1/api-keys', { body: { role: 'viewer' } }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(missing.details.fields[0].field, 'body.name');
      assert.match(missing.message, /body\.name/);
      const role = expectError(
        await server.call('POST', '/v1/api-keys', { body: { name: 'x', role: 'superuser' } }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(role.details.fields[0].field, 'body.role');
      assert.match(role.message, /admin, operator, agent, viewer/);
      const extra = expectError(
        await server.call('POST', '/v1/api-keys', {
          body: { name: 'x', role: 'viewer', color: 'red' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(extra.details.fields[0].field, 'body.color');
      expectError(
        await server.call('POST', '/v1/api-keys', { body: '{"name": ' }),
        400,
        'INVALID_JSON',
      );
      expectError(
        await server.call('POST', '/v1/api-keys', {
          body: 'name=x',
          headers: { 'content-type': 'text/plain' },
        }),
        415,
        'UNSUPPORTED_MEDIA_TYPE',
      );
      // An empty JSON body is no body: a route that needs one says so.
      const empty = expectError(
        await server.call('POST', '/v1/api-keys', {
          body: '',
          headers: { 'content-type': 'application/json' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(empty.details.fields[0].field, 'body');
      // Prototype poisoning is refused by the JSON parser, not passed on.
      expectError(
        await server.call('POST', '/v1/api-keys', {
          body: '{"name":"x","role":"viewer","__proto__":{"admin":true}}',
        }),
        400,
        'INVALID_JSON',
      );
      expectError(
        await server.call('POST', '/v1/api-keys', { body: [1, 2] }),
        400,
        'VALIDATION_FAILED',
      );
      const control = expectError(
        await server.call('POST', '/v1/api-keys', {
          body: { name: 'red\u001b[31m', role: 'viewer' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(control.details.fields[0].field, 'body.name');
      // JSON has types: a number where a string belongs is refused, not turned into "123".
      const typed = expectError(
        await server.call('POST', '/v1/api-keys', { body: { name: 123, role: 'viewer' } }),
        400,
        'VALIDATION_FAILED',
      );
      assert.deepEqual(typed.details.fields[0], { field: 'body.name', message: 'must be string' });
      const long = expectError(
        await server.call('POST', '/v1/api-keys', {
          body: { name: 'x'.repeat(101), role: 'viewer' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(long.details.fields[0].field, 'body.name');
    });

    test('auth bypass via encoded or absolute-form paths: they still need a credential', async () => {
      // `/%761/whoami` decodes to /v1/whoami in the router; the raw URL does not start with /v1.
      expectError(await server.call('GET', '/%761/whoami', { key: null }), 401, 'UNAUTHENTICATED');
      assert.equal((await server.call('GET', '/%761/whoami')).status, 200);
      const viewer = await createKey('viewer', 'encoded path viewer');
      expectError(
        await server.call('GET', '/%761/api-keys', { key: viewer.secret }),
        403,
        'PERMISSION_DENIED',
      );
      const absolute = await new Promise<{ status: number; body: any }>((resolve, reject) => {
        const url = new URL(server.url);
        const req = httpRequest(
          { host: url.hostname, port: url.port, path: 'http://elsewhere.invalid/v1/whoami' },
          (res) => {
            let text = '';
            res.setEncoding('utf8').on('data', (chunk: string) => {
              text += chunk;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
          },
        );
        req.on('error', reject);
        req.end();
      });
      expectError(absolute, 401, 'UNAUTHENTICATED');
    });

    test('malformed HTTP, URLs and headers get the unified format too', async () => {
      const raw = (head: string) => rawRequest(server.url, head);
      const host = `Host: ${new URL(server.url).host}\r\n`;
      expectError(await raw(`FOO /v1/whoami HTTP/1.1\r\n${host}\r\n`), 400, 'BAD_REQUEST');
      expectError(
        await raw(
          `POST /v1/api-keys HTTP/1.1\r\n${host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`,
        ),
        400,
        'BAD_REQUEST',
      );
      expectError(
        await raw(
          `GET /v1/whoami HTTP/1.1\r\n${host}Authorization: Bearer ${'x'.repeat(20_000)}\r\n\r\n`,
        ),
        431,
        'HEADERS_TOO_LARGE',
      );
      expectError(
        await raw(`GET /docs/static/../../../../etc/passwd HTTP/1.1\r\n${host}\r\n`),
        404,
        'ROUTE_NOT_FOUND',
      );
      expectError(await server.call('GET', '/v1/api-keys/%ff'), 400, 'BAD_REQUEST');
      const long = expectError(
        await server.call('GET', `/v1/api-keys/${'k'.repeat(200)}`),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(long.details.fields[0].field, 'params.id');
      expectError(await server.call('GET', `/v1/api-keys/${'k'.repeat(600)}`), 414, 'URI_TOO_LONG');
    });

    test('unknown routes get 404 ROUTE_NOT_FOUND', async () => {
      const res = await server.call('GET', '/v1/nothing-here');
      assert.match(expectError(res, 404, 'ROUTE_NOT_FOUND').message, /GET \/v1\/nothing-here/);
      expectError(await server.call('PATCH', '/v1/whoami'), 404, 'ROUTE_NOT_FOUND');
      expectError(
        await server.call('GET', '/definitely/not', { key: null }),
        404,
        'ROUTE_NOT_FOUND',
      );
    });

    test('a request id from the caller is kept; an unsafe one is replaced', async () => {
      const kept = await server.call('GET', '/v1/whoami', {
        key: 'ork_bad',
        headers: { 'x-request-id': 'abc-123' },
      });
      assert.equal(kept.headers.get('x-request-id'), 'abc-123');
      assert.equal(kept.body.error.request_id, 'abc-123');
      const replaced = await server.call('GET', '/v1/whoami', {
        headers: { 'x-request-id': 'bad id\twith tab' },
      });
      assert.match(replaced.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
      const traced = await server.call('GET', '/v1/whoami', {
        key: 'ork_bad',
        headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      });
      assert.equal(traced.body.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736');
    });
  });
}

describe('limits and failures', () => {
  test('oversized bodies get 413 PAYLOAD_TOO_LARGE', async () => {
    const server = await startTestServer({ env: { ORCHESTRA_BODY_LIMIT_BYTES: '1024' } });
    try {
      const res = await server.call('POST', '/v1/api-keys', {
        body: { name: 'x'.repeat(2000), role: 'viewer' },
      });
      expectError(res, 413, 'PAYLOAD_TOO_LARGE');
    } finally {
      await server.stop();
    }
  });

  test('rate limits per credential, and per IP without one, with RateLimit and Retry-After headers', async () => {
    const server = await startTestServer({
      env: { ORCHESTRA_RATE_LIMIT_PER_SECOND: '0.001', ORCHESTRA_RATE_LIMIT_BURST: '3' },
    });
    try {
      // The admin key uses 1 token to create the second key, leaving 2.
      const other = await server.call('POST', '/v1/api-keys', {
        body: { name: 'other', role: 'viewer' },
      });
      assert.equal(other.status, 201);
      const first = await server.call('GET', '/v1/whoami');
      assert.equal(first.status, 200);
      assert.equal(first.headers.get('ratelimit-limit'), '3');
      assert.equal(first.headers.get('ratelimit-remaining'), '1');
      assert.equal((await server.call('GET', '/v1/whoami')).status, 200);
      const limited = await server.call('GET', '/v1/whoami');
      expectError(limited, 429, 'RATE_LIMITED');
      assert.ok(Number(limited.headers.get('retry-after')) >= 1);
      assert.equal(limited.headers.get('ratelimit-remaining'), '0');
      // Another credential has its own bucket.
      assert.equal(
        (await server.call('GET', '/v1/whoami', { key: other.body.secret })).status,
        200,
      );
      // Probes are never limited.
      for (let i = 0; i < 5; i += 1)
        assert.equal((await server.call('GET', '/healthz', { key: null })).status, 200);
      // Without a valid credential, the caller's IP is limited: guessing keys runs dry.
      const statuses: number[] = [];
      for (let i = 0; i < 5; i += 1) {
        statuses.push((await server.call('GET', '/v1/whoami', { key: `ork_guess${i}` })).status);
      }
      assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
      const metrics = await server.call('GET', '/metrics', { key: null });
      assert.match(metrics.body, /orchestra_rate_limited_requests_total\{scope="credential"\} 1/);
      assert.match(metrics.body, /orchestra_rate_limited_requests_total\{scope="ip"\} 2/);
    } finally {
      await server.stop();
    }
  });

  test('a lagging event loop sheds requests with 503 SERVICE_OVERLOADED; probes still answer', async () => {
    const server = await startTestServer({ env: { ORCHESTRA_MAX_EVENT_LOOP_DELAY_MS: '20' } });
    try {
      let shed: { status: number; headers: Headers; body: any } | undefined;
      // Lag the loop for longer than a sample interval (1 s), in slices: the server shares
      // this process, and its monitor averages the delay of every tick.
      for (let attempt = 0; attempt < 5 && shed === undefined; attempt += 1) {
        const lagUntil = performance.now() + 1500;
        while (performance.now() < lagUntil) {
          const sliceEnd = performance.now() + 100;
          while (performance.now() < sliceEnd) {
            // busy: this is the overload
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
        const res = await server.call('GET', '/v1/whoami');
        if (res.status === 503) shed = res;
      }
      assert.ok(shed, 'no request was shed while the event loop lagged');
      expectError(shed, 503, 'SERVICE_OVERLOADED');
      assert.equal(shed.headers.get('retry-after'), '5');
      assert.equal((await server.call('GET', '/healthz', { key: null })).status, 200);
    } finally {
      await server.stop();
    }
  });

  test('another node revoking a key: honoured after the key cache TTL, at once with the cache off', async () => {
    for (const [ttl, expected] of [
      ['300000', 200],
      ['0', 401],
    ] as const) {
      const server = await startTestServer({ env: { ORCHESTRA_AUTH_CACHE_TTL_MS: ttl } });
      try {
        const key = await server.call('POST', '/v1/api-keys', {
          body: { name: 'k', role: 'viewer' },
        });
        assert.equal(
          (await server.call('GET', '/v1/whoami', { key: key.body.secret })).status,
          200,
        );
        // Another node revokes: the store changes, this node's cache does not hear of it.
        await server.store.db
          .updateTable('api_keys')
          .set({ revoked_at: new Date().toISOString() })
          .where('id', '=', key.body.id)
          .execute();
        const after = await server.call('GET', '/v1/whoami', { key: key.body.secret });
        assert.equal(after.status, expected, `cache TTL ${ttl} ms`);
      } finally {
        await server.stop();
      }
    }
  });

  test('an unexpected failure is a 500 without internals', async () => {
    const server = await startTestServer();
    try {
      // A schema broken under the server's feet: nothing a client did wrong.
      await server.store.db.schema.alterTable('tenants').renameTo('tenants_moved').execute();
      const res = await server.call('GET', '/v1/whoami');
      const error = expectError(res, 500, 'INTERNAL_ERROR');
      assert.equal(error.message, 'An internal error occurred');
      assert.doesNotMatch(JSON.stringify(res.body), /tenants|sqlite|no such|\.ts|at /i);
    } finally {
      await server.store.db.schema.alterTable('tenants_moved').renameTo('tenants').execute();
      await server.stop();
    }
  });

  test('a store that cannot be reached gives 503 STORAGE_UNAVAILABLE with Retry-After, and readiness fails', async () => {
    const server = await startTestServer();
    try {
      assert.equal((await server.call('GET', '/readyz', { key: null })).status, 200);
      await server.store.close();
      const res = await server.call('GET', '/v1/whoami');
      expectError(res, 503, 'STORAGE_UNAVAILABLE');
      assert.equal(res.headers.get('retry-after'), '5');
      const ready = await server.call('GET', '/readyz', { key: null });
      expectError(ready, 503, 'STORAGE_UNAVAILABLE');
      assert.equal(ready.body.error.details.checks.store.status, 'failed');
      assert.equal(
        (await server.call('GET', '/healthz', { key: null })).status,
        200,
        'liveness does not depend on the store',
      );
    } finally {
      await server.stop();
    }
  });

  test('PostgreSQL connections killed under the server are replaced; requests succeed again', async () => {
    const server = await startTestServer({ store: 'postgres' });
    try {
      assert.equal((await server.call('GET', '/v1/whoami')).status, 200);
      const { Client } = (await import('pg')).default;
      const admin = new Client({ connectionString: TEST_POSTGRES_URL });
      await admin.connect();
      try {
        const db = new URL(server.settings.databaseUrl ?? '').pathname.slice(1);
        const killed = await admin.query(
          'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
          [db],
        );
        assert.ok((killed.rowCount ?? 0) > 0, 'the server held connections');
      } finally {
        await admin.end();
      }
      // A request may meet a dead pooled connection once (503, retryable); it never gets a 500.
      const statuses: number[] = [];
      for (let i = 0; i < 5; i += 1) statuses.push((await server.call('GET', '/v1/whoami')).status);
      assert.ok(
        statuses.every((s) => s === 200 || s === 503),
        statuses.join(','),
      );
      assert.equal(statuses.at(-1), 200);
    } finally {
      await server.stop();
    }
  });
});

/** Sends raw bytes and parses the answer: for requests fetch() would refuse or rewrite. */
function rawRequest(baseUrl: string, head: string): Promise<{ status: number; body: any }> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(head));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer in 10 s')));
    const finish = () => {
      const [statusLine = '', ...rest] = text.split('\r\n');
      const body = rest.join('\r\n').split('\r\n\r\n').slice(1).join('\r\n\r\n');
      try {
        resolve({ status: Number(statusLine.split(' ')[1]), body: JSON.parse(body) });
      } catch {
        reject(new Error(`unexpected answer: ${text}`));
      }
    };
    // The server closes after an error; for a kept-alive answer, stop at the end of the body.
    socket.on('end', finish);
    socket.on('data', () => {
      const length = /content-length: (\d+)/i.exec(text)?.[1];
      const bodyStart = text.indexOf('\r\n\r\n');
      if (length && bodyStart >= 0 && text.length - bodyStart - 4 >= Number(length)) {
        socket.end();
      }
    });
  });
}
