import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { EtcdServer } from './etcd-server.ts';
import {
  closedPort,
  expectError,
  healthCheckTarget,
  startTestServer,
  type TestServer,
} from './helpers.ts';
import { RealtimeTestClient } from './realtime-client.ts';
import { SseReader } from './sse.ts';

// Leases, the service registry with health checks and resolution, and the cluster's node
// list, through the API, on the embedded KV (SQLite, PostgreSQL) and on a real etcd.

const VARIANTS = ['sqlite', 'postgres', 'etcd'] as const;

async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

for (const variant of VARIANTS) {
  describe(`service registry (${variant})`, () => {
    let server: TestServer;
    let etcd: EtcdServer | undefined;

    before(async () => {
      if (variant === 'etcd') {
        etcd = await EtcdServer.start();
        server = await startTestServer({
          env: {
            ORCHESTRA_ETCD_ENDPOINTS: etcd.endpoint,
            ORCHESTRA_ETCD_PREFIX: `/t-${randomUUID()}/`,
          },
        });
      } else {
        server = await startTestServer({ store: variant });
      }
    });
    after(async () => {
      await server.stop();
      await etcd?.stop();
    });

    const register = (service: string, id: string, body: Record<string, unknown>, key?: string) =>
      server.call('PUT', `/v1/services/${service}/instances/${id}`, {
        body,
        ...(key ? { key } : {}),
      });

    test('leases: grant, keep alive, revoke; an instance goes when its lease is not kept alive', async () => {
      const granted = await server.call('POST', '/v1/leases', { body: { ttl_seconds: 60 } });
      assert.equal(granted.status, 201);
      assert.equal(granted.body.ttl_seconds, 60);
      const lease = granted.body.id as string;
      const kept = await server.call('POST', `/v1/leases/${lease}/keepalive`);
      assert.equal(kept.status, 200);
      assert.ok(kept.body.remaining_ms > 55_000);
      assert.equal((await server.call('GET', `/v1/leases/${lease}`)).status, 200);
      assert.equal((await server.call('DELETE', `/v1/leases/${lease}`)).status, 204);
      expectError(await server.call('GET', `/v1/leases/${lease}`), 404, 'LEASE_NOT_FOUND');
      expectError(
        await server.call('POST', `/v1/leases/${lease}/keepalive`),
        404,
        'LEASE_NOT_FOUND',
      );
      expectError(await server.call('DELETE', `/v1/leases/${lease}`), 404, 'LEASE_NOT_FOUND');
      expectError(
        await server.call('POST', '/v1/leases', { body: { ttl_seconds: 0 } }),
        400,
        'VALIDATION_FAILED',
      );

      // Registered with its own short lease, kept alive for a while, then left alone.
      const created = await register('ttl-svc', 'a', {
        address: '127.0.0.1',
        port: 9,
        ttl_seconds: 2,
      });
      assert.equal(created.status, 201);
      const own = created.body.lease as string;
      const ttlMs = (await server.call('GET', `/v1/leases/${own}`)).body.ttl_seconds * 1000;
      const keepUntil = Date.now() + ttlMs * 2;
      while (Date.now() < keepUntil) {
        assert.equal((await server.call('POST', `/v1/leases/${own}/keepalive`)).status, 200);
        await new Promise((resolve) => setTimeout(resolve, ttlMs / 4));
      }
      assert.equal((await server.call('GET', '/v1/services/ttl-svc/instances/a')).status, 200);
      const lastKeepAlive = Date.now();
      await eventually('the instance goes with its lease', async () => {
        const res = await server.call('GET', '/v1/services/ttl-svc/instances/a');
        return res.status === 404 ? true : undefined;
      });
      const gone = Date.now() - lastKeepAlive;
      // The poll adds up to 100 ms to what the server took.
      assert.ok(
        gone <= ttlMs + 1000 + 150,
        `gone ${gone} ms after the last keep-alive (TTL ${ttlMs} ms)`,
      );
    });

    test('register, list, deregister; bad registrations are refused with 400', async () => {
      const lease = (await server.call('POST', '/v1/leases', { body: { ttl_seconds: 60 } })).body
        .id;
      const a = await register('api', 'api-1', {
        address: '127.0.0.1',
        port: 8001,
        metadata: { version: '1.2.0', zone: 'eu-1', weight: 2, labels: { tier: 'gold' } },
        lease,
      });
      assert.equal(a.status, 201);
      assert.equal(a.body.status, 'passing', 'no health check: passing');
      assert.equal(a.body.lease, lease);
      assert.deepEqual(a.body.metadata, {
        version: '1.2.0',
        zone: 'eu-1',
        weight: 2,
        labels: { tier: 'gold' },
      });
      assert.equal(
        (await register('api', 'api-2', { address: 'localhost', port: 8002, lease })).status,
        201,
      );
      const again = await register('api', 'api-2', { address: 'localhost', port: 8003, lease });
      assert.equal(again.status, 200, 're-registration replaces');
      assert.equal(again.body.port, 8003);
      const listed = await server.call('GET', '/v1/services/api');
      assert.deepEqual(
        listed.body.instances.map((i: { id: string }) => i.id),
        ['api-1', 'api-2'],
      );
      const services = await server.call('GET', '/v1/services');
      assert.deepEqual(
        services.body.items.find((s: { name: string }) => s.name === 'api'),
        { name: 'api', instances: 2, passing: 2 },
      );
      assert.equal((await server.call('DELETE', '/v1/services/api/instances/api-2')).status, 204);
      expectError(
        await server.call('GET', '/v1/services/api/instances/api-2'),
        404,
        'INSTANCE_NOT_FOUND',
      );
      expectError(
        await server.call('DELETE', '/v1/services/api/instances/api-2'),
        404,
        'INSTANCE_NOT_FOUND',
      );
      // Revoking the lease takes every instance bound to it.
      await server.call('DELETE', `/v1/leases/${lease}`);
      expectError(await server.call('GET', '/v1/services/api/resolve'), 404, 'SERVICE_NOT_FOUND');

      for (const [path, body, field] of [
        ['/v1/services/Bad_Name/instances/x', { address: 'h', port: 1 }, 'params.name'],
        ['/v1/services/ok/instances/x', { address: 'h', port: 70_000 }, 'body.port'],
        ['/v1/services/ok/instances/x', { address: 'has space', port: 1 }, 'body.address'],
        [
          '/v1/services/ok/instances/x',
          { address: 'h', port: 1, lease: 'x', ttl_seconds: 5 },
          'body.ttl_seconds',
        ],
        [
          '/v1/services/ok/instances/x',
          {
            address: 'h',
            port: 1,
            health_check: { type: 'http', interval_ms: 1000, timeout_ms: 1000 },
          },
          'body.health_check.timeout_ms',
        ],
        [
          '/v1/services/ok/instances/x',
          { address: 'h', port: 1, health_check: { type: 'tcp', path: '/x' } },
          'body.health_check.path',
        ],
      ] as const) {
        const res = await server.call('PUT', path, { body });
        const error = expectError(res, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, field, JSON.stringify(body));
      }
      expectError(
        await register('ok', 'x', { address: 'h', port: 1, lease: 'lease_unknown' }),
        404,
        'LEASE_NOT_FOUND',
      );
    });

    test('a failing health check takes an instance out of resolve; a passing one brings it back', async () => {
      const target = await healthCheckTarget('/health', 500);
      const dead = await closedPort();
      try {
        const check = {
          type: 'http',
          path: '/health',
          interval_ms: 500,
          timeout_ms: 400,
          unhealthy_threshold: 1,
        };
        await register('web', 'up', {
          address: '127.0.0.1',
          port: target.port,
          health_check: check,
        });
        await register('web', 'down', {
          address: '127.0.0.1',
          port: dead,
          health_check: { type: 'tcp', interval_ms: 500, timeout_ms: 400, unhealthy_threshold: 1 },
        });
        const statuses = async () =>
          Object.fromEntries(
            (await server.call('GET', '/v1/services/web?all=true')).body.instances.map(
              (i: { id: string; status: string }) => [i.id, i.status],
            ),
          );
        await eventually('both checked', async () => {
          const s = await statuses();
          return s.up === 'passing' && s.down === 'failing' ? s : undefined;
        });
        const down = (await server.call('GET', '/v1/services/web/instances/down')).body;
        assert.match(down.last_error, /TCP connect failed/);
        assert.deepEqual(
          (await server.call('GET', '/v1/services/web')).body.instances.map(
            (i: { id: string }) => i.id,
          ),
          ['up'],
          'healthy only by default',
        );
        for (let i = 0; i < 4; i++)
          assert.equal((await server.call('GET', '/v1/services/web/resolve')).body.id, 'up');

        target.healthy(false);
        const none = await eventually('no healthy instance', async () => {
          const res = await server.call('GET', '/v1/services/web/resolve');
          return res.status === 503 ? res : undefined;
        });
        assert.equal(expectError(none, 503, 'NO_HEALTHY_INSTANCE').details.instances, 2);
        assert.equal(none.headers.get('retry-after'), '1');
        assert.match(
          (await server.call('GET', '/v1/services/web/instances/up')).body.last_error,
          /HTTP 500/,
        );

        target.healthy(true);
        const back = await eventually('healthy again', async () => {
          const res = await server.call('GET', '/v1/services/web/resolve');
          return res.status === 200 ? res : undefined;
        });
        assert.equal(back.body.id, 'up');
        assert.ok(back.body.check_latency_ms >= 0);
      } finally {
        await target.close();
      }
    });

    test('resolve spreads by strategy: round robin, consistent hash, weights, reported load', async () => {
      for (const [id, weight] of [
        ['r1', 1],
        ['r2', 1],
        ['r3', 8],
      ] as const)
        await register('pool', id, { address: '127.0.0.1', port: 9000, metadata: { weight } });
      const pick = async (query: string) =>
        (await server.call('GET', `/v1/services/pool/resolve${query}`)).body.id as string;
      const rr = [];
      for (let i = 0; i < 6; i++) rr.push(await pick(''));
      assert.deepEqual(new Set(rr), new Set(['r1', 'r2', 'r3']));
      assert.notEqual(rr[0], rr[1]);
      const hashed = await pick('?strategy=consistent_hash&key=user-42');
      for (let i = 0; i < 5; i++)
        assert.equal(await pick('?strategy=consistent_hash&key=user-42'), hashed);
      expectError(
        await server.call('GET', '/v1/services/pool/resolve?strategy=consistent_hash'),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', '/v1/services/pool/resolve?strategy=fastest'),
        400,
        'VALIDATION_FAILED',
      );
      const weighted: Record<string, number> = {};
      for (let i = 0; i < 50; i++) {
        const id = await pick('?strategy=weighted');
        weighted[id] = (weighted[id] ?? 0) + 1;
      }
      assert.ok(
        (weighted.r3 ?? 0) > (weighted.r1 ?? 0) && (weighted.r3 ?? 0) > (weighted.r2 ?? 0),
        JSON.stringify(weighted),
      );
      for (const [id, connections] of [
        ['r1', 7],
        ['r2', 1],
        ['r3', 9],
      ] as const) {
        const res = await server.call('PATCH', `/v1/services/pool/instances/${id}`, {
          body: { load: { connections, cpu: connections / 10 } },
        });
        assert.equal(res.status, 200);
      }
      assert.equal(await pick('?strategy=least_connections'), 'r2');
      assert.equal(await pick('?strategy=resource'), 'r2');
    });

    test('watch: registrations, health and departures as they happen, resumable', async () => {
      const headers = { authorization: `Bearer ${server.adminKey}` };
      const watch = await SseReader.open(`${server.url}/v1/services/watched/watch`, headers);
      assert.equal(watch.status, 200);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const first = await register('watched', 'w1', { address: '127.0.0.1', port: 1 });
      await register('other', 'o1', { address: '127.0.0.1', port: 1 });
      await server.call('DELETE', '/v1/services/watched/instances/w1');
      const events = await watch.waitFor((e) => e.length >= 2);
      watch.close();
      assert.deepEqual(
        events.map((e) => [e.event, e.data.instance?.id ?? e.data.id]),
        [
          ['put', 'w1'],
          ['delete', 'w1'],
        ],
      );
      const resumed = await SseReader.open(`${server.url}/v1/services/watched/watch`, {
        ...headers,
        'last-event-id': String(first.body.revision),
      });
      assert.deepEqual(
        (await resumed.waitFor((e) => e.length >= 1)).map((e) => e.event),
        ['delete'],
      );
      resumed.close();
    });

    test('realtime topic services.<name>: joins, departures and lease expiry, in order', async () => {
      const agent = await (async () => {
        const created = await server.call('POST', '/v1/api-keys', {
          body: { name: 'topic-agent', role: 'agent' },
        });
        return created.body.secret as string;
      })();
      const ws = await RealtimeTestClient.open(server.url, agent);
      const all = await RealtimeTestClient.open(server.url, agent);
      try {
        assert.equal(
          (await ws.request({ kind: 'subscribe', topic: 'services.topic.api' })).kind,
          'subscribed',
        );
        // Dots are allowed in service names; a pattern covers every service.
        assert.equal(
          (await all.request({ kind: 'subscribe', topic: 'services.topic.>' })).kind,
          'subscribed',
        );
        const lease = await server.call('POST', '/v1/leases', { body: { ttl_seconds: 1 } });
        await register('topic.api', 'a1', { address: '127.0.0.1', port: 1, lease: lease.body.id });
        await register('topic.api', 'a2', { address: '127.0.0.1', port: 2 });
        await register('topic.other', 'o1', { address: '127.0.0.1', port: 3 });
        await server.call('DELETE', '/v1/services/topic.api/instances/a2');
        // a1 goes when its lease runs out, without any request.
        const messages = await ws.waitForMessages('services.topic.api', 4);
        assert.deepEqual(
          messages.map((m) => [m.event, m.data.instance?.id ?? m.data.id]),
          [
            ['put', 'a1'],
            ['put', 'a2'],
            ['delete', 'a2'],
            ['delete', 'a1'],
          ],
        );
        assert.deepEqual(
          messages.map((m) => m.offset),
          [1, 2, 3, 4],
        );
        const other = await all.waitForMessages('services.topic.other', 1);
        assert.equal(other[0]?.data.instance.port, 3);
        assert.equal((await all.waitForMessages('services.topic.api', 4)).length, 4);
        // Names that are not service names are not service topics.
        const admin = await RealtimeTestClient.open(server.url, server.adminKey);
        const bad = await admin.request({ kind: 'subscribe', topic: 'services.Upper' });
        admin.close();
        assert.equal(bad.code, 'TOPIC_NOT_FOUND');
      } finally {
        ws.close();
        all.close();
      }
    });

    test('the cluster’s nodes: this one, renewing its lease and running the health checks', async () => {
      const nodes = await server.call('GET', '/v1/cluster/nodes');
      assert.equal(nodes.status, 200);
      assert.equal(nodes.body.items.length, 1);
      const [node] = nodes.body.items;
      assert.equal(node.url, server.url);
      assert.equal(node.kv, variant === 'etcd' ? 'etcd' : 'embedded');
      assert.ok(node.load.rss_bytes > 0);
      await eventually('a health checker', async () => {
        const res = await server.call('GET', '/v1/cluster/nodes');
        return res.body.items[0]?.health_checker === true ? true : undefined;
      });
      const tenant = await server.call('POST', '/v1/tenants', {
        body: { id: `reg-${variant}`, name: 'R' },
      });
      const other = tenant.body.admin_key.secret as string;
      expectError(
        await server.call('GET', '/v1/cluster/nodes', { key: other }),
        403,
        'PERMISSION_DENIED',
      );

      // Tenants: the other one sees no service, lease or instance of this one.
      const lease = (await server.call('POST', '/v1/leases', { body: { ttl_seconds: 60 } })).body
        .id;
      await register('mine', 'm1', { address: '127.0.0.1', port: 1, lease });
      assert.deepEqual((await server.call('GET', '/v1/services', { key: other })).body.items, []);
      expectError(
        await server.call('GET', '/v1/services/mine/resolve', { key: other }),
        404,
        'SERVICE_NOT_FOUND',
      );
      expectError(
        await server.call('GET', `/v1/leases/${lease}`, { key: other }),
        404,
        'LEASE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `/v1/leases/${lease}/keepalive`, { key: other }),
        404,
        'LEASE_NOT_FOUND',
      );
      expectError(
        await register('theirs', 't1', { address: '127.0.0.1', port: 1, lease }, other),
        404,
        'LEASE_NOT_FOUND',
      );
    });
  });
}
