import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CompiledQuery, Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import { type Migration, Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Database } from './database.ts';
import { FileSync } from './file-sync.ts';
import { NodeSqliteDialect } from './node-sqlite-dialect.ts';
import { StatementNames } from './prepared-statements.ts';

export type StoreKind = 'sqlite' | 'postgres';

const PG_CONNECT_TIMEOUT_MS = 5_000;
const PG_QUERY_TIMEOUT_MS = 30_000;

/**
 * The relational store port: a Kysely handle on SQLite (embedded) or PostgreSQL.
 *
 * Modules write portable Kysely queries; where the dialects differ (row locks, upserts)
 * they branch on `kind`. It deliberately leaves out connection details, schema
 * introspection and raw driver access: nothing outside this folder may depend on which
 * adapter is in use beyond `kind`.
 */
export interface RelationalStore {
  readonly kind: StoreKind;
  readonly db: Kysely<Database>;
  /** Where the data lives, safe to log (no password). */
  readonly location: string;
  /**
   * True when transactions run one after another in the order `transaction` was called
   * (SQLite's group commit): work asked for after another transaction sees its changes.
   * False on PostgreSQL, where concurrent transactions run at once.
   */
  readonly ordersTransactions: boolean;
  /**
   * Applies pending migrations in name order and returns the names applied. Several nodes
   * may call it at once: the migrator holds a lock, so each migration runs once.
   */
  migrate(migrations: Record<string, Migration>): Promise<string[]>;
  /**
   * Runs `work` in a transaction and resolves once it is committed durably. On SQLite,
   * transactions that arrive together share one commit (group commit): each runs in a
   * savepoint of its own, so one that fails is rolled back alone, and none resolves before
   * the shared commit. `work` must use only `trx`, never `db`, or it waits for itself.
   *
   * With `sync: 'later'` it resolves once committed (every later read sees it) without
   * waiting for the disk: a crash in the next few milliseconds may lose it. Only for a
   * record that acknowledges nothing to anyone, such as the audit of a tool call that has
   * already happened (docs/decisions/0017); everything a client is told was stored waits.
   */
  transaction<T>(
    work: (trx: Transaction<Database>) => Promise<T>,
    options?: TransactionOptions,
  ): Promise<T>;
  /** Resolves when the store answers a trivial query within `timeoutMs`; rejects otherwise. */
  ping(timeoutMs: number): Promise<void>;
  /** Closes connections; the store is unusable afterwards. Safe to call twice. */
  close(): Promise<void>;
}

export interface TransactionOptions {
  /** `now` (the default): resolve once on disk. `later`: once committed; see `transaction`. */
  sync?: 'now' | 'later';
}

export interface StoreOptions {
  /** `postgres://…` selects PostgreSQL; unset selects SQLite in `dataDir`. */
  databaseUrl?: string | undefined;
  dataDir: string;
  poolSize?: number;
  /** PostgreSQL: run the statements used again and again as named (prepared) ones; default true. */
  preparedStatements?: boolean;
}

/**
 * How many rows of `table` match every column = value of `where`: for a module counting
 * its own rows (a tenant's limit), with an index on those columns.
 */
export async function countRows<T extends keyof Database & string>(
  db: Kysely<Database>,
  table: T,
  where: Partial<Record<keyof Database[T] & string, string>>,
): Promise<number> {
  let query = sql<{
    n: number | string;
  }>`select count(*) as n from ${sql.table(table)} where 1 = 1`;
  for (const [column, value] of Object.entries(where)) {
    query = sql<{ n: number | string }>`${query} and ${sql.ref(column)} = ${value}`;
  }
  const { rows } = await query.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** True for a unique or primary-key constraint violation, on either adapter. */
export function isUniqueViolation(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; errcode?: unknown };
  if (e.code === '23505') return true; // PostgreSQL unique_violation
  // SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555)
  return e.code === 'ERR_SQLITE_ERROR' && (e.errcode === 2067 || e.errcode === 1555);
}

/**
 * True when a query failed because the store cannot be reached or is going away (not
 * because the query was wrong): connection refused or lost, server shutting down, SQLite
 * file locked or closed. Callers answer 503 and the client retries.
 */
export function isStoreUnavailable(err: unknown, depth = 0): boolean {
  if (typeof err !== 'object' || err === null || depth > 3) return false;
  const e = err as { code?: unknown; errcode?: unknown; message?: unknown };
  if (typeof e.code === 'string') {
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE'].includes(e.code))
      return true;
    // PostgreSQL classes 08 (connection exception) and 57P (operator intervention).
    // 57014: statement_timeout (the server is overloaded); 53300: too many connections.
    if (
      /^08...$/.test(e.code) ||
      /^57P0[1-3]$/.test(e.code) ||
      ['57014', '53300'].includes(e.code)
    ) {
      return true;
    }
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6) outlasting busy_timeout.
    if (e.code === 'ERR_SQLITE_ERROR' && (e.errcode === 5 || e.errcode === 6)) return true;
  }
  const message = typeof e.message === 'string' ? e.message : '';
  // node-postgres: a client whose connection broke mid-transaction says "not queryable".
  if (
    /Connection terminated|database is not open|driver has already been destroyed|Cannot use a pool after calling end|timeout exceeded when trying to connect|Query read timeout|is not queryable|timeout expired/.test(
      message,
    )
  ) {
    return true;
  }
  // A driver error wrapped by the code that met it.
  return isStoreUnavailable((err as { cause?: unknown }).cause, depth + 1);
}

/** Opens the store the options select. Does not migrate. */
export async function openStore(options: StoreOptions): Promise<RelationalStore> {
  if (options.databaseUrl) {
    return openPostgres(
      options.databaseUrl,
      options.poolSize ?? 10,
      options.preparedStatements ?? true,
    );
  }
  mkdirSync(options.dataDir, { recursive: true });
  return openSqlite(join(options.dataDir, 'orchestra.db'));
}

function openSqlite(path: string): RelationalStore {
  const file = new DatabaseSync(path);
  // Another process waits up to 5 s for the lock instead of failing; set first, because
  // switching a new file to WAL takes the lock too (two nodes starting at once).
  file.exec('pragma busy_timeout = 5000');
  // WAL: readers never block the writer. synchronous=NORMAL because the dialect syncs the
  // WAL itself, off the event loop, before any write is reported done: a committed write
  // survives power loss as with FULL (docs/decisions/0005).
  file.exec('pragma journal_mode = wal');
  file.exec('pragma synchronous = normal');
  file.exec('pragma foreign_keys = on');
  // Group commit runs each transaction in a savepoint, and SQLite journals every page a
  // savepoint changes; in memory rather than in a temporary file, that costs half as much.
  file.exec('pragma temp_store = memory');
  const wal = new FileSync(`${path}-wal`);
  const dialect = new NodeSqliteDialect(file, wal);
  const db = new Kysely<Database>({ dialect });
  const group = new GroupCommit(db, dialect);
  return makeStore(
    'sqlite',
    db,
    path,
    (work, options) => group.run(work, options?.sync === 'later'),
    async () => {
      await wal.close();
      if (file.isOpen) file.close();
    },
  );
}

async function openPostgres(
  url: string,
  poolSize: number,
  preparedStatements: boolean,
): Promise<RelationalStore> {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    // A database that accepts connections but never answers must fail fast (503), not
    // hold requests forever.
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    query_timeout: PG_QUERY_TIMEOUT_MS,
    statement_timeout: PG_QUERY_TIMEOUT_MS,
    idleTimeoutMillis: 30_000,
  });
  // An idle client that loses its server emits 'error'; without a listener that would
  // crash the process. The next query reports the outage instead.
  pool.on('error', () => {});
  // The pool listens only to idle clients: one checked out (between two queries of a
  // transaction) that loses its server would crash the process the same way. Its query
  // fails instead, and the pool drops the broken client when it is released.
  const names = preparedStatements ? new StatementNames() : undefined;
  pool.on('connect', (client) => {
    client.on('error', () => {});
    names?.install(client);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const parsed = new URL(url);
  parsed.password = '';
  // PostgreSQL groups concurrent commits itself; each transaction has its own connection.
  return makeStore(
    'postgres',
    db,
    parsed.toString(),
    (work, options) =>
      db.transaction().execute(async (trx) => {
        // The commit returns before its WAL record is flushed; PostgreSQL flushes it within
        // wal_writer_delay, and a crash meanwhile loses it without corrupting anything.
        if (options?.sync === 'later') await trx.executeQuery(SYNC_LATER);
        return work(trx);
      }),
    async () => {
      if (!pool.ended) await pool.end();
    },
  );
}

/**
 * `releaseHandle` closes the file or pool even when Kysely never initialised its driver
 * (its `destroy()` is a no-op then), so a closed store cannot silently reopen.
 */
function makeStore(
  kind: StoreKind,
  db: Kysely<Database>,
  location: string,
  transaction: RelationalStore['transaction'],
  releaseHandle: () => Promise<void>,
): RelationalStore {
  let closed: Promise<void> | undefined;
  return {
    kind,
    db,
    location,
    ordersTransactions: kind === 'sqlite',
    transaction,
    async migrate(migrations) {
      const migrator = new Migrator({
        db,
        provider: { getMigrations: async () => migrations },
        migrationTableName: 'orchestra_migrations',
        migrationLockTableName: 'orchestra_migrations_lock',
      });
      const { error, results } = await migrator.migrateToLatest();
      if (error) {
        const failed = results?.find((r) => r.status === 'Error')?.migrationName;
        throw new Error(
          failed
            ? `migration ${failed} failed on the ${kind} store at ${location}`
            : `cannot migrate the ${kind} store at ${location}`,
          { cause: error },
        );
      }
      return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
    },
    async ping(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([sql`select 1`.execute(db), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    close() {
      closed ??= db.destroy().then(releaseHandle);
      return closed;
    },
  };
}

/** Most transactions that share one SQLite commit. */
const MAX_GROUP = 256;
// Run for every transaction of a group: written once, not compiled each time.
const SAVEPOINT = CompiledQuery.raw('savepoint group_item');
const RELEASE = CompiledQuery.raw('release group_item');
const ROLLBACK_TO = CompiledQuery.raw('rollback to group_item');
const SYNC_LATER = CompiledQuery.raw('set local synchronous_commit to off');

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface Pending {
  work: (trx: Transaction<Database>) => Promise<unknown>;
  /** Resolves at the commit, not once the commit is on disk. */
  later: boolean;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit for SQLite. The transactions that queue up while one group runs share the
 * next commit, each in a savepoint of its own, so a commit's fixed cost is paid once per
 * group. A group's commit only writes the WAL; the WAL is then synced off the event loop,
 * while the next group runs, and the group's callers hear "done" once it is on disk.
 * Syncs are cumulative and run in order, so a later group never resolves before an
 * earlier one. Durability is unchanged: nobody hears "done" before their data is synced.
 */
class GroupCommit {
  readonly #db: Kysely<Database>;
  readonly #dialect: NodeSqliteDialect;
  readonly #queue: Pending[] = [];
  #scheduled = false;

  constructor(db: Kysely<Database>, dialect: NodeSqliteDialect) {
    this.#db = db;
    this.#dialect = dialect;
  }

  run<T>(work: (trx: Transaction<Database>) => Promise<T>, later = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ work, later, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        // After the I/O callbacks of this turn, so that requests arriving together group.
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const group = this.#queue.splice(0, MAX_GROUP);
        const outcomes: Outcome[] = [];
        try {
          await this.#db.transaction().execute(async (trx) => {
            // The next group may start while the disk syncs this one's commit.
            this.#dialect.deferSyncOfThisTransaction();
            const only = group.length === 1 ? group[0] : undefined;
            if (only !== undefined) {
              outcomes.push({ ok: true, value: await only.work(trx) });
              return;
            }
            for (const item of group) {
              await trx.executeQuery(SAVEPOINT);
              try {
                const value = await item.work(trx);
                await trx.executeQuery(RELEASE);
                outcomes.push({ ok: true, value });
              } catch (error) {
                await trx.executeQuery(ROLLBACK_TO);
                await trx.executeQuery(RELEASE);
                outcomes.push({ ok: false, error });
              }
            }
          });
        } catch (error) {
          // The shared commit failed (or the only item did): nothing of the group was stored.
          for (const item of group) item.reject(error);
          continue;
        }
        const settle = (item: Pending, i: number) => {
          const outcome = outcomes[i];
          if (outcome?.ok) item.resolve(outcome.value);
          else item.reject(outcome?.error);
        };
        group.forEach((item, i) => {
          if (item.later) settle(item, i);
        });
        // Nobody else hears "done" before the commit is on disk; the sync runs regardless.
        this.#dialect.durable().then(
          () =>
            group.forEach((item, i) => {
              if (!item.later) settle(item, i);
            }),
          (error: unknown) => {
            for (const item of group) if (!item.later) item.reject(error);
          },
        );
      }
    } finally {
      this.#scheduled = false;
      if (this.#queue.length > 0) {
        this.#scheduled = true;
        setImmediate(() => void this.#flush());
      }
    }
  }
}
