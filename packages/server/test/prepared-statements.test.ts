import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { openStore, type RelationalStore } from '../src/store/store.ts';
import { createTestDatabase, tempDir } from './helpers.ts';

// Named (prepared) statements on a real PostgreSQL: which statements get a name, that the
// setting turns them off, and what happens when a migration changes a table that a named
// `select *` reads (a rolling upgrade).

/** The statements prepared on the connection that runs this, by their text. */
async function prepared(db: RelationalStore['db']): Promise<string[]> {
  const { rows } = await sql<{ statement: string }>`
    select statement from pg_prepared_statements`.execute(db);
  return rows.map((r) => r.statement);
}

describe('PostgreSQL named statements', () => {
  let database: { url: string; drop: () => Promise<void> };
  const dir = tempDir();
  const stores: RelationalStore[] = [];
  /** One connection, so that every statement runs on the connection the test inspects. */
  const open = async (preparedStatements: boolean) => {
    const store = await openStore({
      databaseUrl: database.url,
      dataDir: dir.path,
      poolSize: 1,
      preparedStatements,
    });
    stores.push(store);
    return store;
  };

  before(async () => {
    database = await createTestDatabase();
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    await admin.query('create table items (id integer primary key, label text)');
    await admin.query("insert into items values (1, 'one'), (2, 'two')");
    await admin.end();
  });
  after(async () => {
    for (const store of stores) await store.close();
    await database.drop();
    dir.remove();
  });

  test('a statement run twice is prepared once per connection; one run once, DDL and the setting off are not', async () => {
    const store = await open(true);
    const byId = (id: number) => sql`select label from items where id = ${id}`.execute(store.db);
    assert.deepEqual((await byId(1)).rows, [{ label: 'one' }]);
    assert.ok(!(await prepared(store.db)).some((s) => s.includes('from items where id')));
    assert.deepEqual((await byId(2)).rows, [{ label: 'two' }]);
    assert.deepEqual((await byId(1)).rows, [{ label: 'one' }]);
    const names = await prepared(store.db);
    assert.equal(names.filter((s) => s === 'select label from items where id = $1').length, 1);
    await sql`create temporary table scratch (x int)`.execute(store.db);
    await sql`create temporary table scratch2 (x int)`.execute(store.db);
    assert.ok(!(await prepared(store.db)).some((s) => s.startsWith('create')));

    const off = await open(false);
    for (let i = 0; i < 3; i += 1)
      await sql`select label from items where id = ${1}`.execute(off.db);
    assert.deepEqual(await prepared(off.db), []);
  });

  test('a named select * survives a column added by another node: retried unnamed outside a transaction', async () => {
    const store = await open(true);
    const all = () =>
      sql<Record<string, unknown>>`select * from items where id = ${1}`.execute(store.db);
    await all();
    await all();
    assert.ok((await prepared(store.db)).includes('select * from items where id = $1'));

    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    await other.query('alter table items add column weight integer');
    await other.end();

    // PostgreSQL refuses the named statement (its result type changed); the store runs it
    // unnamed instead, and keeps doing so.
    assert.deepEqual((await all()).rows, [{ id: 1, label: 'one', weight: null }]);
    assert.deepEqual((await all()).rows, [{ id: 1, label: 'one', weight: null }]);
  });

  test('inside a transaction the refusal fails that transaction once; the next one runs unnamed', async () => {
    const store = await open(true);
    const read = (db: RelationalStore['db']) =>
      sql<Record<string, unknown>>`select * from items where id = ${2}`.execute(db);
    await store.transaction(async (trx) => {
      await read(trx);
      await read(trx);
    });
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    await other.query('alter table items add column colour text');
    await other.end();

    await assert.rejects(
      store.transaction(async (trx) => read(trx)),
      /cached plan must not change result type/,
    );
    const rows = await store.transaction(async (trx) => (await read(trx)).rows);
    assert.equal(rows[0]?.colour, null);
    assert.equal(rows[0]?.label, 'two');
  });
});
