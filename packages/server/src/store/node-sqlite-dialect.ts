import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import {
  CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import type { FileSync } from './file-sync.ts';

/**
 * Kysely dialect for Node's built-in `node:sqlite`, so the embedded store needs no native
 * addon. SQLite allows one writer at a time, so the driver hands out its single
 * connection to one transaction at a time; other callers wait in line.
 *
 * Durability: node:sqlite runs on the event loop, so a commit that waits for the disk
 * (`synchronous=FULL`) stops the whole server meanwhile. With `wal`, the database runs
 * with `synchronous=NORMAL` (commits only write the WAL) and every write that ends a
 * transaction (a commit, or a write outside a transaction) resolves only after `wal`
 * synced the WAL file off the event loop: callers hear "done" exactly when they would
 * with FULL, and the server keeps working while the disk catches up.
 * docs/decisions/0005 says why.
 */
export class NodeSqliteDialect implements Dialect {
  readonly #db: DatabaseSync;
  readonly #connection: NodeSqliteConnection;

  constructor(db: DatabaseSync, wal?: FileSync) {
    this.#db = db;
    this.#connection = new NodeSqliteConnection(db, wal);
  }

  /**
   * Called inside a transaction: its commit returns without waiting for the WAL sync, so
   * the next transaction can start meanwhile. The caller must then wait for `durable()`
   * before it reports the transaction done.
   */
  deferSyncOfThisTransaction(): void {
    this.#connection.deferSync();
  }

  /**
   * After a transaction whose sync was deferred: resolves once what it wrote is on disk,
   * or, if it wrote nothing, once the syncs under way are done, so that nothing it read
   * is less durable than what its caller is told.
   */
  durable(): Promise<void> {
    return this.#connection.durable();
  }

  createAdapter(): DialectAdapter {
    return new NodeSqliteAdapter();
  }

  createDriver(): Driver {
    return new NodeSqliteDriver(this.#db, this.#connection);
  }

  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

/**
 * SQLite runs DDL inside transactions; saying so makes Kysely's migrator wrap each run in
 * one. With BEGIN IMMEDIATE that transaction is also the migration lock between processes
 * sharing the file, and a failed migration leaves no half-made schema behind.
 */
class NodeSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class NodeSqliteDriver implements Driver {
  readonly #db: DatabaseSync;
  readonly #connection: NodeSqliteConnection;
  #tail: Promise<void> = Promise.resolve();
  #release: (() => void) | undefined;

  constructor(db: DatabaseSync, connection: NodeSqliteConnection) {
    this.#db = db;
    this.#connection = connection;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    this.#release = release;
    return this.#connection;
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    // IMMEDIATE takes the write lock up front, so a read-then-write transaction cannot
    // fail half-way with SQLITE_BUSY when another process holds the file.
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async destroy(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}

/** Prepared statements kept per connection; Kysely emits the same SQL text for a query. */
const STATEMENT_CACHE_SIZE = 256;

interface CachedStatement {
  statement: StatementSync;
  /** Whether it returns rows (SELECT, RETURNING, PRAGMA) rather than a change count. */
  returnsRows: boolean;
}

/** Statements that change no data themselves: reads, and transaction control. */
const CHANGES_NOTHING =
  /^\s*(select|pragma|explain|begin|savepoint|release|rollback|commit|end)\b/i;

class NodeSqliteConnection implements DatabaseConnection {
  readonly #db: DatabaseSync;
  readonly #wal: FileSync | undefined;
  readonly #statements = new Map<string, CachedStatement>();

  constructor(db: DatabaseSync, wal: FileSync | undefined) {
    this.#db = db;
    this.#wal = wal;
  }

  /** Preparing costs more than running a simple query, so statements are reused (LRU). */
  #prepare(sql: string): CachedStatement {
    const cached = this.#statements.get(sql);
    if (cached !== undefined) {
      this.#statements.delete(sql);
      this.#statements.set(sql, cached);
      return cached;
    }
    const statement = this.#db.prepare(sql);
    const entry = { statement, returnsRows: statement.columns().length > 0 };
    this.#statements.set(sql, entry);
    if (this.#statements.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.#statements.keys().next().value;
      if (oldest !== undefined) this.#statements.delete(oldest);
    }
    return entry;
  }

  /** Whether the current transaction (or lone statement) changed anything so far. */
  #wrote = false;
  #deferSync = false;
  /** Whether the last transaction whose sync was deferred changed anything. */
  #deferredWrote = false;

  deferSync(): void {
    this.#deferSync = true;
  }

  /** See `NodeSqliteDialect.durable`. */
  durable(): Promise<void> {
    if (this.#wal === undefined) return Promise.resolve();
    return this.#deferredWrote ? this.#wal.sync() : this.#wal.flushed();
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    let result: QueryResult<R>;
    try {
      result = this.#run<R>(compiledQuery);
      if (!CHANGES_NOTHING.test(compiledQuery.sql)) this.#wrote = true;
    } finally {
      if (!this.#db.isTransaction) {
        // The transaction ended here (or there was none); a rolled-back one left nothing.
        const wrote = this.#wrote && !/^\s*rollback\b/i.test(compiledQuery.sql);
        const deferred = this.#deferSync;
        this.#wrote = false;
        this.#deferSync = false;
        if (deferred) this.#deferredWrote = wrote;
        else if (wrote) await this.#wal?.sync();
      }
    }
    return result;
  }

  #run<R>(compiledQuery: CompiledQuery): QueryResult<R> {
    const { statement, returnsRows } = this.#prepare(compiledQuery.sql);
    const parameters = compiledQuery.parameters as SQLInputValue[];
    if (returnsRows) {
      // node:sqlite rows have a null prototype; copy them into plain objects so rows look
      // the same on both adapters.
      return { rows: statement.all(...parameters).map((row) => ({ ...row })) as R[] };
    }
    const { changes, lastInsertRowid } = statement.run(...parameters);
    return {
      rows: [],
      numAffectedRows: BigInt(changes),
      insertId: BigInt(lastInsertRowid),
    };
  }

  async *streamQuery<R>(
    compiledQuery: CompiledQuery,
    chunkSize = 100,
  ): AsyncIterableIterator<QueryResult<R>> {
    const { statement } = this.#prepare(compiledQuery.sql);
    let rows: R[] = [];
    for (const row of statement.iterate(...(compiledQuery.parameters as SQLInputValue[]))) {
      rows.push({ ...row } as R);
      if (rows.length >= chunkSize) {
        yield { rows };
        rows = [];
      }
    }
    if (rows.length > 0) yield { rows };
  }
}
