import {
  CompiledQuery,
  type Expression,
  type Kysely,
  type RawBuilder,
  type SqlBool,
  sql,
  type Transaction,
} from 'kysely';
import type { Database } from './database.ts';
import type { StoreKind } from './store.ts';

type Executor = Kysely<Database> | Transaction<Database>;

/**
 * A hand-written statement for a hot path. Its text is fixed once, so running it builds
 * and compiles nothing (the SQLite adapter also reuses its prepared form), where a Kysely
 * query would be built and compiled again on every call. Write portable SQL with `?`
 * placeholders; the PostgreSQL text with `$1…$n` is derived once. Keep to SQL both stores
 * share (`returning`, `on conflict`), and write values that partial indexes depend on as
 * literals, since neither planner matches a bound parameter against an index's predicate.
 */
export class Statement {
  readonly #text: Record<StoreKind, string>;

  constructor(text: string) {
    // Every "?" outside quotes is a placeholder; one inside a string literal would be miscounted.
    if (text.split("'").some((part, i) => i % 2 === 1 && part.includes('?'))) {
      throw new Error('a statement may not quote a "?"');
    }
    let n = 0;
    this.#text = { sqlite: text, postgres: text.replace(/\?/g, () => `$${++n}`) };
  }

  /** Runs the statement and resolves to the rows it returns (`select`, `returning`). */
  async rows<R>(db: Executor, kind: StoreKind, parameters: readonly unknown[]): Promise<R[]> {
    const result = await db.executeQuery<R>(CompiledQuery.raw(this.#text[kind], [...parameters]));
    return result.rows;
  }

  /** Runs the statement and resolves to the number of rows it changed. */
  async run(db: Executor, kind: StoreKind, parameters: readonly unknown[]): Promise<number> {
    const result = await db.executeQuery(CompiledQuery.raw(this.#text[kind], [...parameters]));
    return Number(result.numAffectedRows ?? 0n);
  }
}

/**
 * Statements that differ only in how many rows they insert (`values (…), (…)`), made once
 * per row count and kept.
 */
export class MultiRowInsert {
  readonly #head: string;
  readonly #row: string;
  readonly #byCount = new Map<number, Statement>();
  /** Most rows per statement; more are inserted in several. */
  readonly maxRows: number;

  /** `head` ends before `values`; `columns` is the number of `?` in a row. */
  constructor(head: string, columns: number, maxRows = 200) {
    this.#head = head;
    this.#row = `(${Array.from({ length: columns }, () => '?').join(', ')})`;
    this.maxRows = maxRows;
  }

  /** Inserts `rows` (each an array of `columns` values). */
  async insert(
    db: Executor,
    kind: StoreKind,
    rows: readonly (readonly unknown[])[],
  ): Promise<void> {
    for (let i = 0; i < rows.length; i += this.maxRows) {
      const chunk = rows.slice(i, i + this.maxRows);
      let statement = this.#byCount.get(chunk.length);
      if (statement === undefined) {
        statement = new Statement(
          `${this.#head} values ${Array.from({ length: chunk.length }, () => this.#row).join(', ')}`,
        );
        this.#byCount.set(chunk.length, statement);
      }
      await statement.run(db, kind, chunk.flat());
    }
  }
}

/**
 * A condition checked on the rows an index already found, never used to pick the index.
 * Wrap the extra conditions of a lookup by primary key in it: as plain conditions,
 * PostgreSQL may serve `id = ? and state = 'queued'` from an index on `state` whenever its
 * statistics say that state is rare (queued and assigned tasks are, next to finished
 * ones), and then read every entry of that index, dead ones included. The hand-written
 * statements say the same in SQL: `… where id = ? and (…) is true`.
 */
export function filterOnly(condition: Expression<SqlBool>): RawBuilder<SqlBool> {
  return sql<SqlBool>`(${condition}) is true`;
}
