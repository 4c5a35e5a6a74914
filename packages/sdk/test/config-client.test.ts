import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { EtcdServer } from '../../server/test/etcd-server.ts';
import { tempDir } from '../../server/test/helpers.ts';
import { ConfigClient, type ConfigUpdate, Orchestra } from '../src/index.ts';
import { type RestartableServer, rejection, startRestartableServer } from './support.ts';

// ConfigClient against a real `orchestra start` on a real etcd, both killed and restarted
// under it: the client keeps serving what it has, says when it is stale, and catches up
// without missing a change.

async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('SDK ConfigClient on etcd', () => {
  let etcd: EtcdServer;
  let server: RestartableServer;
  let api: Orchestra;
  const clients: ConfigClient[] = [];
  const dir = tempDir('orchestra-config-client-');

  before(async () => {
    etcd = await EtcdServer.start();
    server = await startRestartableServer('sqlite', {
      ORCHESTRA_ETCD_ENDPOINTS: etcd.endpoint,
      ORCHESTRA_ETCD_PREFIX: `/t-${randomUUID()}/`,
    });
    api = new Orchestra({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    for (const c of clients) await c.close();
    await server.remove();
    await etcd.stop();
    dir.remove();
  });

  const open = async (options: { prefix: string; snapshotFile?: string; stale?: boolean[] }) => {
    const client = new ConfigClient({
      url: server.url,
      apiKey: server.adminKey,
      env: 'prod',
      prefix: options.prefix,
      timeoutMs: 3000,
      ...(options.snapshotFile ? { snapshotFile: options.snapshotFile } : {}),
      onStaleChange: (stale) => options.stale?.push(stale),
    });
    clients.push(client);
    await client.start();
    return client;
  };

  test('loads, follows changes, and writes a snapshot file', async () => {
    await api.config.set('svc/a/pool', { size: 5 }, { env: 'prod' });
    await api.config.set('svc/a/mode', 'fast', { env: 'prod' });
    await api.config.set('svc/b/other', 1, { env: 'prod' });
    const snapshotFile = join(dir.path, 'a.json');
    const client = await open({ prefix: 'svc/a/', snapshotFile });
    assert.equal(client.stale, false);
    assert.deepEqual(client.get('svc/a/pool'), { size: 5 });
    assert.equal(client.get('svc/b/other'), undefined, 'outside the prefix');
    assert.equal(client.get('svc/a/missing', 'fallback'), 'fallback');
    const updates: ConfigUpdate[] = [];
    client.watch('svc/a/', (u) => updates.push(u));
    await api.config.set('svc/a/pool', { size: 6 }, { env: 'prod' });
    await api.config.delete('svc/a/mode', { env: 'prod' });
    await until('both changes', () => updates.length >= 2);
    assert.deepEqual(
      updates.map((u) => [u.type, u.key, u.value, u.previous]),
      [
        ['put', 'svc/a/pool', { size: 6 }, { size: 5 }],
        ['delete', 'svc/a/mode', undefined, 'fast'],
      ],
    );
    assert.deepEqual(client.get('svc/a/pool'), { size: 6 });
    await until('the snapshot file', () => {
      if (!existsSync(snapshotFile)) return undefined;
      const saved = JSON.parse(readFileSync(snapshotFile, 'utf8'));
      return (
        saved.items['svc/a/pool']?.value?.size === 6 && saved.items['svc/a/mode'] === undefined
      );
    });
    // Its own writes go through the center.
    const written = await client.set('svc/a/new', true);
    assert.equal(written.version, 1);
    assert.equal((await api.config.get('svc/a/new', { env: 'prod' })).value, true);
  });

  test('etcd down: values keep being served, writes get 503; etcd back: the watch resumes without missing a change', async () => {
    await api.config.set('etcd/x', 0, { env: 'prod' });
    const client = await open({ prefix: 'etcd/' });
    const seen: unknown[] = [];
    client.watch('etcd/', (u) => seen.push(u.value));
    await etcd.kill();
    try {
      assert.equal(client.get('etcd/x'), 0, 'served from memory while etcd is down');
      const refused = await rejection(() => api.config.set('etcd/x', 1, { env: 'prod' }));
      assert.equal(refused.status, 503);
      assert.equal(refused.code, 'STORAGE_UNAVAILABLE');
      assert.equal(refused.details?.backend, 'etcd');
      assert.ok((refused.retryAfterSeconds ?? 0) > 0);
      const read = await rejection(() => api.config.get('etcd/x', { env: 'prod' }));
      assert.equal(read.status, 503);
    } finally {
      await etcd.resume();
    }
    // Writes right after the restart, in order: every one reaches the client.
    await until('etcd answers through the API', async () => {
      try {
        await api.config.get('etcd/x', { env: 'prod' });
        return true;
      } catch {
        return undefined;
      }
    });
    for (let i = 1; i <= 5; i++) await api.config.set('etcd/x', i, { env: 'prod' });
    await until('all five changes', () => seen.length >= 5);
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    assert.equal(client.get('etcd/x'), 5);
  });

  test('server down: stale, served from memory and from the snapshot file; back: catches up, or resyncs', async () => {
    await api.config.set('down/a', 'a1', { env: 'prod' });
    await api.config.set('down/b', 'b1', { env: 'prod' });
    const snapshotFile = join(dir.path, 'down.json');
    const stale: boolean[] = [];
    const client = await open({ prefix: 'down/', snapshotFile, stale });
    const updates: ConfigUpdate[] = [];
    client.watch('down/', (u) => updates.push(u));
    await until('the snapshot file', () => existsSync(snapshotFile) || undefined);
    await server.crash();
    await until('stale', () => client.stale || undefined);
    assert.equal(client.get('down/a'), 'a1');
    // A new process starting while the center is down serves the snapshot.
    const cold = await open({ prefix: 'down/', snapshotFile });
    assert.equal(cold.stale, true);
    assert.equal(cold.get('down/b'), 'b1');

    // Changes while the client cannot see them: made straight in etcd is not possible
    // through the API, so the server comes back first and changes happen right away.
    await server.restart();
    await api.config.set('down/a', 'a2', { env: 'prod' });
    await api.config.delete('down/b', { env: 'prod' });
    await until(
      'caught up',
      () => client.get('down/a') === 'a2' && client.get('down/b') === undefined,
    );
    await until('fresh', () => !client.stale || undefined);
    await until('the cold client catches up too', () => cold.get('down/a') === 'a2' && !cold.stale);
    assert.deepEqual(stale, [true, false]);
    assert.deepEqual(
      updates.map((u) => [u.type, u.key, u.value]),
      [
        ['put', 'down/a', 'a2'],
        ['delete', 'down/b', undefined],
      ],
    );

    // Away while etcd forgets the history: the client gets the whole state instead.
    const gate = { offline: false };
    const away = new ConfigClient({
      url: server.url,
      apiKey: server.adminKey,
      env: 'prod',
      prefix: 'down/',
      timeoutMs: 3000,
      fetch: (input, init) =>
        gate.offline ? Promise.reject(new TypeError('network is down')) : fetch(input, init),
    });
    clients.push(away);
    await away.start();
    const awayUpdates: ConfigUpdate[] = [];
    away.watch('down/', (u) => awayUpdates.push(u));
    gate.offline = true;
    await server.crash(); // breaks its open watch; it cannot reconnect while offline
    await server.restart();
    const c1 = await api.config.set('down/c', 'c1', { env: 'prod' });
    await api.config.delete('down/a', { env: 'prod' });
    const raw = new Etcd3({ hosts: etcd.endpoint });
    try {
      const head = await raw.kv.range({ key: Buffer.from('/'), limit: 1 });
      assert.ok(Number(head.header.revision) > c1.revision);
      await raw.kv.compact({ revision: head.header.revision, physical: true });
    } finally {
      raw.close();
    }
    await until('stale while offline', () => away.stale || undefined);
    gate.offline = false;
    await until('resynced', () => away.get('down/c') === 'c1' && away.get('down/a') === undefined);
    assert.deepEqual(away.entries(), [['down/c', 'c1']]);
    assert.deepEqual(awayUpdates.map((u) => [u.type, u.key]).sort(), [
      ['delete', 'down/a'],
      ['put', 'down/c'],
    ]);
  });
});
