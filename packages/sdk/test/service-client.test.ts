import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { healthCheckTarget } from '../../server/test/helpers.ts';
import {
  type LiveInstances,
  Orchestra,
  OrchestraError,
  type RegisterOptions,
  type Registration,
  ServiceClient,
  type ServiceInstance,
} from '../src/index.ts';
import { type RestartableServer, rejection, startRestartableServer } from './support.ts';

// ServiceClient the way a service uses it: an agent-role key registers instances and keeps
// their leases alive, others discover and follow them, against a real `orchestra start`
// (embedded SQLite) that a lease is revoked on behind the client's back and that is
// killed and restarted under it.

async function until<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await delay(50);
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const idsOf = (instances: readonly ServiceInstance[]) => instances.map((i) => i.id);

/** The lists a live list's listener saw, without repeats of the same list in a row. */
function changesOf(seen: readonly string[][]): string[][] {
  return seen.filter((ids, i) => i === 0 || ids.join() !== seen[i - 1]?.join());
}

describe('SDK ServiceClient', () => {
  let server: RestartableServer;
  let admin: Orchestra;
  let agentKey: string;
  const registrations: Registration[] = [];
  const lives: LiveInstances[] = [];

  before(async () => {
    server = await startRestartableServer('sqlite', {});
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
    agentKey = (await admin.apiKeys.create({ name: 'services', role: 'agent' })).secret;
  });
  after(async () => {
    for (const live of lives) await live.close();
    for (const registration of registrations) await registration.stop().catch(() => {});
    await server.remove();
  });

  /** A ServiceClient on an agent-role key, collecting what it reports to `onError`. */
  const open = (errors: unknown[] = []) =>
    new ServiceClient({
      url: server.url,
      apiKey: agentKey,
      timeoutMs: 3000,
      onError: (err) => errors.push(err),
    });

  const register = async (client: ServiceClient, options: RegisterOptions) => {
    const registration = await client.register(options);
    registrations.push(registration);
    return registration;
  };

  const follow = async (client: ServiceClient, service: string) => {
    const live = await client.live(service);
    lives.push(live);
    const seen: string[][] = [];
    live.onChange((instances) => seen.push(idsOf(instances)));
    return { live, seen };
  };

  /** The instance as the REST API lists it, or undefined when it is not registered. */
  const listed = async (service: string, id: string) => {
    try {
      return await admin.services.get(service, id);
    } catch (err) {
      if (err instanceof OrchestraError && err.code === 'INSTANCE_NOT_FOUND') return undefined;
      throw err;
    }
  };

  test('register keeps the instance alive well past its TTL; stop takes it out at once, for good', async () => {
    const errors: unknown[] = [];
    const client = open(errors);
    const ttlSeconds = 2;
    const registration = await register(client, {
      service: 'billing',
      id: 'billing-1',
      address: '127.0.0.1',
      port: 9001,
      metadata: { version: '2.1.0', zone: 'eu-1' },
      ttlSeconds,
    });
    const lease = registration.lease;
    assert.equal((await admin.leases.get(lease)).ttl_seconds, ttlSeconds);
    const first = await listed('billing', 'billing-1');
    assert.equal(first?.lease, lease);
    assert.equal(first?.status, 'passing', 'no health check: passing');
    assert.deepEqual(first?.metadata, { version: '2.1.0', zone: 'eu-1' });

    // Three TTLs: without keep-alive it would be gone after the first. It never leaves,
    // and stays the same registration on the same lease.
    const keepWatchingUntil = Date.now() + 3 * ttlSeconds * 1000;
    let looks = 0;
    while (Date.now() < keepWatchingUntil) {
      const now = await listed('billing', 'billing-1');
      assert.ok(now, `billing-1 left the registry after ${looks} looks`);
      assert.equal(now.lease, lease, 'kept alive, not registered again');
      assert.equal(now.revision, first?.revision);
      looks++;
      await delay(100);
    }
    assert.deepEqual(idsOf(await client.discover('billing')), ['billing-1']);
    assert.deepEqual(errors, [], 'no keep-alive failed');

    await registration.stop();
    assert.equal(await listed('billing', 'billing-1'), undefined, 'gone right after stop');
    assert.equal((await rejection(() => admin.leases.get(lease))).code, 'LEASE_NOT_FOUND');
    assert.deepEqual(await client.discover('billing'), []);
    // Stopped is final: nothing registers it again once its keep-alive would have run.
    const quietUntil = Date.now() + ttlSeconds * 1000;
    while (Date.now() < quietUntil) {
      assert.equal(await listed('billing', 'billing-1'), undefined, 'registered again after stop');
      await delay(100);
    }
    await registration.stop(); // a second stop is harmless
  });

  test('a lease revoked behind its back: the client registers the instance again, on a new lease it keeps alive', async () => {
    const errors: unknown[] = [];
    const client = open(errors);
    const ttlSeconds = 2;
    const again: { lease: string; lostLease: string }[] = [];
    const registration = await register(client, {
      service: 'orders',
      id: 'orders-1',
      address: '127.0.0.1',
      port: 9002,
      metadata: { version: '1.0.0', labels: { tier: 'gold' } },
      ttlSeconds,
      onRegisteredAgain: (instance, lostLease) => again.push({ lease: instance.lease, lostLease }),
    });
    const lost = registration.lease;
    const revoked = await fetch(`${server.url}/v1/leases/${encodeURIComponent(lost)}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    assert.equal(revoked.status, 204);
    assert.equal((await rejection(() => admin.leases.get(lost))).code, 'LEASE_NOT_FOUND');

    const back = await until('orders-1 registered again on a new lease', async () => {
      const now = await listed('orders', 'orders-1');
      return now !== undefined && now.lease !== lost ? now : undefined;
    });
    await until('onRegisteredAgain called', () => again.length > 0);
    assert.deepEqual(again, [{ lease: back.lease, lostLease: lost }]);
    assert.equal(registration.lease, back.lease, 'the registration follows its new lease');
    assert.equal((await admin.leases.get(back.lease)).ttl_seconds, ttlSeconds);
    assert.equal(back.address, '127.0.0.1');
    assert.equal(back.port, 9002);
    assert.deepEqual(back.metadata, { version: '1.0.0', labels: { tier: 'gold' } });

    // The new lease is kept alive like the first one.
    const keepWatchingUntil = Date.now() + 2 * ttlSeconds * 1000;
    while (Date.now() < keepWatchingUntil) {
      const now = await listed('orders', 'orders-1');
      assert.equal(now?.lease, back.lease, 'the new lease is kept alive');
      await delay(100);
    }
    assert.deepEqual(errors, [], 'a lost lease is handled, not reported');
    assert.equal(again.length, 1, 'registered again once');

    await registration.stop();
    assert.equal(await listed('orders', 'orders-1'), undefined);
    assert.equal((await rejection(() => admin.leases.get(back.lease))).code, 'LEASE_NOT_FOUND');
  });

  test('discover lists the passing instances; resolve picks one with a strategy', async () => {
    const client = open();
    const reader = new ServiceClient({ url: server.url, apiKey: agentKey, timeoutMs: 3000 });
    const byId = new Map<string, Registration>();
    for (const n of [1, 2, 3]) {
      const id = `pricing-${n}`;
      byId.set(
        id,
        await register(client, {
          service: 'pricing',
          id,
          address: '127.0.0.1',
          port: 9100 + n,
          ttlSeconds: 5,
        }),
      );
    }
    const found = await reader.discover('pricing');
    assert.deepEqual(idsOf(found), ['pricing-1', 'pricing-2', 'pricing-3']);
    assert.deepEqual(
      found.map((i) => i.port),
      [9101, 9102, 9103],
    );

    // consistent_hash: one key keeps going to one instance, and keys spread over all.
    const owner = await reader.resolve('pricing', { strategy: 'consistent_hash', key: 'cust-42' });
    const again = await reader.resolve('pricing', { strategy: 'consistent_hash', key: 'cust-42' });
    assert.equal(again.id, owner.id);
    const keys = Array.from({ length: 30 }, (_, i) => `cust-${i}`);
    const before = new Map<string, string>();
    for (const key of keys) {
      before.set(key, (await reader.resolve('pricing', { strategy: 'consistent_hash', key })).id);
    }
    assert.equal(new Set(before.values()).size, 3, 'thirty keys land on all three instances');

    // round_robin: each instance in turn.
    const turns: string[] = [];
    for (let i = 0; i < 6; i++) {
      turns.push((await reader.resolve('pricing', { strategy: 'round_robin' })).id);
    }
    assert.deepEqual(turns.slice(0, 3).sort(), ['pricing-1', 'pricing-2', 'pricing-3']);
    assert.deepEqual(turns.slice(3), turns.slice(0, 3), 'the same turn again');
    const defaultPicks = new Set<string>();
    for (let i = 0; i < 3; i++) defaultPicks.add((await reader.resolve('pricing')).id);
    assert.equal(defaultPicks.size, 3, 'round robin by default');

    // One leaves: only the keys it had move, to the others; the rest stay put.
    await byId.get(owner.id)?.stop();
    assert.deepEqual(
      idsOf(await reader.discover('pricing')),
      ['pricing-1', 'pricing-2', 'pricing-3'].filter((id) => id !== owner.id),
    );
    for (const key of keys) {
      const now = (await reader.resolve('pricing', { strategy: 'consistent_hash', key })).id;
      if (before.get(key) === owner.id) assert.notEqual(now, owner.id, `${key} moved`);
      else assert.equal(now, before.get(key), `${key} stayed`);
    }

    const noKey = await rejection(() => reader.resolve('pricing', { strategy: 'consistent_hash' }));
    assert.equal(noKey.status, 400);
    const unknown = await rejection(() => reader.resolve('nobody-here'));
    assert.equal(unknown.status, 404);
    assert.equal(unknown.code, 'SERVICE_NOT_FOUND');
    assert.deepEqual(await reader.discover('nobody-here'), []);
  });

  test('live follows registrations, deregistrations and lease expiry as they happen', async () => {
    const client = open();
    const { live, seen } = await follow(client, 'search');
    assert.equal(live.service, 'search');
    assert.deepEqual(live.instances, []);
    assert.equal(live.next(), undefined, 'nothing to pick yet');

    const a = await register(client, {
      service: 'search',
      id: 'search-a',
      address: '127.0.0.1',
      port: 9201,
      ttlSeconds: 5,
    });
    await until('search-a in the live list', () => idsOf(live.instances).join() === 'search-a');
    await register(open(), {
      service: 'search',
      id: 'search-b',
      address: '127.0.0.1',
      port: 9202,
      ttlSeconds: 5,
    });
    await until(
      'both in the live list',
      () => idsOf(live.instances).join() === 'search-a,search-b',
    );
    const picks = [live.next()?.id, live.next()?.id, live.next()?.id, live.next()?.id];
    assert.deepEqual(picks.slice(0, 2).sort(), ['search-a', 'search-b'], 'next takes each in turn');
    assert.deepEqual(picks.slice(2), picks.slice(0, 2));

    await a.stop();
    await until(
      'search-a gone from the live list',
      () => idsOf(live.instances).join() === 'search-b',
    );

    // Registered by hand on a one-second lease that nobody keeps alive: it comes, then goes.
    await admin.services.register('search', 'search-c', {
      address: '127.0.0.1',
      port: 9203,
      ttl_seconds: 1,
    });
    await until('search-c seen', () => seen.some((ids) => ids.join() === 'search-b,search-c'));
    await until('search-c gone with its lease', async () =>
      (await listed('search', 'search-c')) === undefined &&
      idsOf(live.instances).join() === 'search-b'
        ? true
        : undefined,
    );
    assert.deepEqual(changesOf(seen), [
      ['search-a'],
      ['search-a', 'search-b'],
      ['search-b'],
      ['search-b', 'search-c'],
      ['search-b'],
    ]);
  });

  test('a live-list listener that throws is reported to onError and stalls neither the list nor the other listeners', async () => {
    const errors: unknown[] = [];
    const client = open(errors);
    const { live, seen } = await follow(client, 'fragile');
    live.onChange(() => {
      throw new Error('the listener broke');
    });
    const after: string[][] = [];
    live.onChange((instances) => after.push(idsOf(instances)));
    for (const id of ['fragile-1', 'fragile-2', 'fragile-3']) {
      await register(client, { service: 'fragile', id, address: '127.0.0.1', port: 9401 });
      await until(`${id} in the live list`, () => live.instances.some((i) => i.id === id));
    }
    const expected = [
      ['fragile-1'],
      ['fragile-1', 'fragile-2'],
      ['fragile-1', 'fragile-2', 'fragile-3'],
    ];
    assert.deepEqual(changesOf(seen), expected);
    assert.deepEqual(changesOf(after), expected, 'the listener after the broken one is called too');
    assert.deepEqual(
      errors.map((e) => (e as Error).message),
      ['the listener broke', 'the listener broke', 'the listener broke'],
      'each throw reported once',
    );
  });

  test('live and discover leave out an instance whose health check fails, until it passes again', async () => {
    const target = await healthCheckTarget('/healthz');
    try {
      const client = open();
      const { live } = await follow(client, 'checked');
      const registration = await register(client, {
        service: 'checked',
        id: 'checked-1',
        address: '127.0.0.1',
        port: target.port,
        ttlSeconds: 5,
        health_check: {
          type: 'http',
          path: '/healthz',
          interval_ms: 500,
          timeout_ms: 400,
          unhealthy_threshold: 1,
        },
      });
      assert.equal((await listed('checked', 'checked-1'))?.status, 'unknown');
      await until('passing in the live list', () => idsOf(live.instances).join() === 'checked-1');
      assert.deepEqual(idsOf(await client.discover('checked')), ['checked-1']);

      target.healthy(false);
      await until('out of the live list', () => live.instances.length === 0);
      assert.equal((await listed('checked', 'checked-1'))?.status, 'failing');
      assert.deepEqual(await client.discover('checked'), []);
      const none = await rejection(() => client.resolve('checked'));
      assert.equal(none.status, 503);
      assert.equal(none.code, 'NO_HEALTHY_INSTANCE');
      assert.equal(live.next(), undefined);

      target.healthy(true);
      await until('back in the live list', () => idsOf(live.instances).join() === 'checked-1');
      assert.equal((await client.resolve('checked')).id, 'checked-1');
      await registration.stop();
      await until('gone from the live list', () => live.instances.length === 0);
    } finally {
      await target.close();
    }
  });

  test('after a server restart on the same data directory, registrations and live lists carry on', async () => {
    const errors: unknown[] = [];
    const client = open(errors);
    const ttlSeconds = 2;
    const lostLeases: string[] = [];
    const kept = await register(client, {
      service: 'mail',
      id: 'mail-1',
      address: '127.0.0.1',
      port: 9301,
      ttlSeconds,
      onRegisteredAgain: (_, lostLease) => lostLeases.push(lostLease),
    });
    const keptLease = kept.lease;
    // An instance whose owner goes down with the server: nobody keeps its lease alive.
    const orphanLease = await admin.leases.grant(ttlSeconds);
    await admin.services.register('mail', 'mail-2', {
      address: '127.0.0.1',
      port: 9302,
      lease: orphanLease.id,
    });
    const { live, seen } = await follow(client, 'mail');
    assert.deepEqual(idsOf(live.instances), ['mail-1', 'mail-2']);

    await server.crash();
    await until('a failed keep-alive reported', () =>
      errors.some((e) => e instanceof OrchestraError && e.status === 0),
    );
    assert.deepEqual(idsOf(live.instances), ['mail-1', 'mail-2'], 'the last known list is kept');
    // Down for longer than both leases' TTL, so that both have run out when it is back.
    await delay(ttlSeconds * 1000 + 500);
    await server.restart();

    // The restarted server ends both leases; the client registers mail-1 again on its own.
    const back = await until('mail-1 registered again on a new lease', async () => {
      const now = await listed('mail', 'mail-1');
      return now !== undefined && now.lease !== keptLease ? now : undefined;
    });
    await until('onRegisteredAgain called', () => lostLeases.length > 0);
    assert.deepEqual(lostLeases, [keptLease]);
    assert.equal(kept.lease, back.lease);
    await until('mail-2 gone with its lease', async () =>
      (await listed('mail', 'mail-2')) === undefined ? true : undefined,
    );
    // The live list resumed its watch and saw all of it.
    await until(
      'the live list shows mail-1 on its new lease, without mail-2',
      () => idsOf(live.instances).join() === 'mail-1' && live.instances[0]?.lease === back.lease,
    );
    assert.ok(
      seen.some((ids) => ids.join() === 'mail-1'),
      'the listener was told mail-2 went',
    );

    // And it keeps following: a registration after the restart shows up.
    await register(open(), {
      service: 'mail',
      id: 'mail-3',
      address: '127.0.0.1',
      port: 9303,
      ttlSeconds: 5,
    });
    await until('mail-3 in the live list', () => idsOf(live.instances).join() === 'mail-1,mail-3');
    await kept.stop();
    await until('mail-1 gone from the live list', () => idsOf(live.instances).join() === 'mail-3');
  });
});
