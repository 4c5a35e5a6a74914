import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { migrations } from '../src/modules.ts';
import { isUniqueViolation, openStore, type RelationalStore } from '../src/store/store.ts';
import { createTestDatabase, STORE_VARIANTS, type StoreVariant, tempDir } from './helpers.ts';

const run = promisify(execFile);
const MIGRATE_SCRIPT = fileURLToPath(new URL('./fixtures/migrate.ts', import.meta.url));

/** One contract, every adapter: what modules may rely on from the relational store. */
for (const variant of STORE_VARIANTS) {
  describe(`relational store contract: ${variant}`, () => {
    let open: () => Promise<RelationalStore>;
    let store: RelationalStore;
    let cleanup: () => Promise<void>;
    let migrateInChild: () => Promise<string[]>;

    before(async () => {
      const dir = tempDir();
      const database = variant === 'postgres' ? await createTestDatabase() : undefined;
      open = () => openStore({ databaseUrl: database?.url, dataDir: dir.path, poolSize: 5 });
      migrateInChild = async () => {
        const { stdout } = await run(process.execPath, [
          MIGRATE_SCRIPT,
          dir.path,
          database?.url ?? '',
        ]);
        return JSON.parse(stdout) as string[];
      };
      store = await open();
      cleanup = async () => {
        await store.close();
        await database?.drop();
        dir.remove();
      };
    });
    after(() => cleanup());

    test('reports its kind', () => {
      assert.equal(store.kind, variant satisfies StoreVariant);
      assert.doesNotMatch(store.location, /:[^/@]*@/, 'no password in the location');
    });

    test('applies migrations once, even when two nodes migrate at the same time', async () => {
      const runs = await Promise.all([migrateInChild(), migrateInChild()]);
      assert.deepEqual(runs.flat().sort(), Object.keys(migrations).sort());
      assert.deepEqual(await store.migrate(migrations), []);
    });

    test('migration 0013 accepts the stats indexes built beforehand (README, "Upgrades")', async () => {
      const dir = tempDir();
      const database = variant === 'postgres' ? await createTestDatabase() : undefined;
      const fresh = await openStore({ databaseUrl: database?.url, dataDir: dir.path });
      try {
        const before = Object.fromEntries(
          Object.entries(migrations).filter(([name]) => name < '0013'),
        );
        await fresh.migrate(before);
        await sql`create index tasks_created_idx on tasks (tenant_id, created_at)`.execute(
          fresh.db,
        );
        await sql`create index tasks_finished_idx on tasks (tenant_id, finished_at) where finished_at is not null`.execute(
          fresh.db,
        );
        assert.ok((await fresh.migrate(migrations)).includes('0013_task_stats'));
      } finally {
        await fresh.close();
        await database?.drop();
        dir.remove();
      }
    });

    test('round-trips rows, including nulls and unicode', async () => {
      const now = new Date().toISOString();
      await store.db
        .insertInto('tenants')
        .values({ id: 'rt-tenant', name: 'Zoë — 東京', kind: 'standard', created_at: now })
        .execute();
      await store.db
        .insertInto('api_keys')
        .values({
          id: 'key_rt',
          tenant_id: 'rt-tenant',
          name: 'k',
          role: 'viewer',
          prefix: 'ork_x',
          secret_hash: 'hash-rt',
          created_at: now,
          created_by: null,
          expires_at: null,
          revoked_at: null,
          last_used_at: null,
        })
        .execute();
      const tenant = await store.db
        .selectFrom('tenants')
        .selectAll()
        .where('id', '=', 'rt-tenant')
        .executeTakeFirstOrThrow();
      assert.deepEqual(tenant, {
        id: 'rt-tenant',
        name: 'Zoë — 東京',
        kind: 'standard',
        created_at: now,
        limits: '{}', // the column's default: no limits of its own
      });
      const key = await store.db
        .selectFrom('api_keys')
        .selectAll()
        .where('id', '=', 'key_rt')
        .executeTakeFirstOrThrow();
      assert.equal(key.expires_at, null);
      assert.equal(key.tenant_id, 'rt-tenant');
    });

    test('reports unique violations as such, and nothing else', async () => {
      const row = {
        id: 'dup-tenant',
        name: 'a',
        kind: 'standard' as const,
        created_at: new Date().toISOString(),
      };
      await store.db.insertInto('tenants').values(row).execute();
      const err = await store.db
        .insertInto('tenants')
        .values(row)
        .execute()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err, 'a duplicate primary key must be refused');
      assert.equal(isUniqueViolation(err), true);
      const other = await sql`select * from no_such_table`.execute(store.db).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(other);
      assert.equal(isUniqueViolation(other), false);
    });

    test('enforces foreign keys', async () => {
      const err = await store.db
        .insertInto('api_keys')
        .values({
          id: 'key_orphan',
          tenant_id: 'no-such-tenant',
          name: 'k',
          role: 'viewer',
          prefix: 'p',
          secret_hash: 'hash-orphan',
          created_at: new Date().toISOString(),
          created_by: null,
          expires_at: null,
          revoked_at: null,
          last_used_at: null,
        })
        .execute()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err, 'a key of a missing tenant must be refused');
    });

    test('rolls back a transaction that throws, as a whole', async () => {
      await assert.rejects(
        store.db.transaction().execute(async (trx) => {
          await trx
            .insertInto('tenants')
            .values({
              id: 'rollback-1',
              name: 'a',
              kind: 'standard',
              created_at: new Date().toISOString(),
            })
            .execute();
          throw new Error('boom');
        }),
        /boom/,
      );
      const rows = await store.db
        .selectFrom('tenants')
        .select('id')
        .where('id', '=', 'rollback-1')
        .execute();
      assert.deepEqual(rows, []);
    });

    test('runs concurrent transactions without losing or mixing writes', async () => {
      const count = 25;
      const results = await Promise.allSettled(
        Array.from({ length: count }, (_, i) =>
          store.db.transaction().execute(async (trx) => {
            await trx
              .insertInto('tenants')
              .values({
                id: `conc-${i}`,
                name: `n${i}`,
                kind: 'standard',
                created_at: new Date().toISOString(),
              })
              .execute();
            if (i % 5 === 0) throw new Error(`abort ${i}`);
            await trx
              .updateTable('tenants')
              .set({ name: `done-${i}` })
              .where('id', '=', `conc-${i}`)
              .execute();
          }),
        ),
      );
      assert.equal(results.filter((r) => r.status === 'rejected').length, 5);
      const rows = await store.db
        .selectFrom('tenants')
        .select(['id', 'name'])
        .where('id', 'like', 'conc-%')
        .execute();
      assert.equal(rows.length, count - 5);
      for (const row of rows) assert.equal(row.name, `done-${row.id.slice(5)}`);
    });

    test('keeps committed data across close and reopen', async () => {
      await store.db
        .insertInto('tenants')
        .values({
          id: 'durable',
          name: 'd',
          kind: 'standard',
          created_at: new Date().toISOString(),
        })
        .execute();
      await store.close();
      store = await open();
      const row = await store.db
        .selectFrom('tenants')
        .select('id')
        .where('id', '=', 'durable')
        .executeTakeFirst();
      assert.deepEqual(row, { id: 'durable' });
    });

    test("a sync: 'later' transaction commits like any other, also in a group with waiting ones", async () => {
      const tenant = (id: string) => ({
        id,
        name: id,
        kind: 'standard' as const,
        created_at: new Date().toISOString(),
      });
      const settled = await Promise.allSettled([
        store.transaction((trx) => trx.insertInto('tenants').values(tenant('later-1')).execute(), {
          sync: 'later',
        }),
        store.transaction(
          async (trx) => {
            await trx.insertInto('tenants').values(tenant('later-bad')).execute();
            throw new Error('abort');
          },
          { sync: 'later' },
        ),
        store.transaction((trx) => trx.insertInto('tenants').values(tenant('now-1')).execute()),
        store
          .transaction(
            async (trx) => {
              const shown = await sql<{
                synchronous_commit: string;
              }>`show synchronous_commit`.execute(trx);
              return shown.rows[0]?.synchronous_commit;
            },
            { sync: 'later' },
          )
          .catch(() => 'no such setting'),
      ]);
      assert.deepEqual(
        settled.map((s) => s.status),
        ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
      );
      const setting = settled[3]?.status === 'fulfilled' ? settled[3].value : undefined;
      // PostgreSQL skips the WAL flush at commit for this transaction only; SQLite has no
      // such setting (its store syncs the WAL itself, without the caller waiting).
      assert.equal(setting, variant === 'postgres' ? 'off' : 'no such setting');
      if (variant === 'postgres') {
        const outside = await sql<{ synchronous_commit: string }>`show synchronous_commit`.execute(
          store.db,
        );
        assert.equal(outside.rows[0]?.synchronous_commit, 'on');
      }
      await store.close();
      store = await open();
      const ids = await store.db
        .selectFrom('tenants')
        .select('id')
        .where('id', 'in', ['later-1', 'later-bad', 'now-1'])
        .orderBy('id')
        .execute();
      assert.deepEqual(
        ids.map((r) => r.id),
        ['later-1', 'now-1'],
      );
    });

    test('answers ping, and fails ping once closed', async () => {
      await store.ping(2000);
      const closedStore = await open();
      await closedStore.close();
      await closedStore.close(); // idempotent
      await assert.rejects(closedStore.ping(2000));
    });

    if (variant === 'sqlite') {
      test('uses WAL with synchronous=NORMAL: the store syncs the WAL itself (decision 0005)', async () => {
        const mode = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(store.db);
        assert.equal(mode.rows[0]?.journal_mode, 'wal');
        const sync = await sql<{ synchronous: number }>`pragma synchronous`.execute(store.db);
        assert.equal(sync.rows[0]?.synchronous, 1);
        const temp = await sql<{ temp_store: number }>`pragma temp_store`.execute(store.db);
        assert.equal(temp.rows[0]?.temp_store, 2);
      });
    }
  });
}
