import { type RawBuilder, sql } from 'kysely';
import { ApiError } from './errors.ts';
import { PLATFORM_SETTINGS } from './settings.ts';

// The page schemas are the wire contract's (@orchestra/protocol); cursors and byte budgets
// are the server's.
export { DEFAULT_PAGE_LIMIT, Page, PageQuery } from '@orchestra/protocol';

/** Cursors are opaque to clients: the id of the last item seen, encoded. */
export function encodeCursor(lastId: string): string {
  return Buffer.from(JSON.stringify({ after: lastId })).toString('base64url');
}

/**
 * The position a cursor encodes. `isValid` checks that it is one of this list's: a cursor
 * from another list (or a forged one) is refused rather than silently misread.
 */
export function decodeCursor(
  cursor: string | undefined,
  isValid: (after: string) => boolean,
): string | undefined {
  if (cursor === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (typeof parsed === 'object' && parsed !== null && 'after' in parsed) {
      const after = (parsed as { after: unknown }).after;
      if (typeof after === 'string' && isValid(after)) return after;
    }
  } catch {
    // fall through to the error below
  }
  throw new ApiError('INVALID_CURSOR', 'The cursor is not one this server returned');
}

/**
 * How many items of a page fit in `maxBytes`, given the size of each in page order: at
 * least one when there is one, so that an item larger than the budget still reaches its
 * reader (alone on its page) and a client following cursors never stalls.
 */
export function countWithinBudget(sizes: Iterable<number>, maxBytes: number): number {
  let count = 0;
  let total = 0;
  for (const size of sizes) {
    total += size;
    if (count > 0 && total > maxBytes) break;
    count += 1;
  }
  return count;
}

/** Bytes of a value as JSON text. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? '');
}

/**
 * Items to answer, at most `limit` and about `maxBytes` of JSON (at least one), and
 * whether more follow. Items are serialised one by one only until the budget is spent, so
 * the work is bounded by the budget, not by the rows fetched.
 */
function fitPage<R, T>(
  rows: R[],
  limit: number,
  map: (row: R) => T,
  maxBytes: number,
): { items: T[]; taken: R[]; more: boolean } {
  const items: T[] = [];
  let total = 0;
  for (const row of rows) {
    if (items.length >= limit) break;
    const item = map(row);
    total += jsonBytes(item) + 1;
    if (items.length > 0 && total > maxBytes) break;
    items.push(item);
  }
  return { items, taken: rows.slice(0, items.length), more: rows.length > items.length };
}

/** The first of `items` that fit in about `maxBytes` of JSON: at least one when there is one. */
export function withinBudget<T>(items: T[], maxBytes: number): T[] {
  return fitPage(items, items.length, (item) => item, maxBytes).items;
}

/**
 * Takes `limit + 1` rows fetched in id order and splits them into a page of at most
 * `limit` items and about `maxBytes` of JSON (ORCHESTRA_RESPONSE_MAX_BYTES); the cursor
 * continues after the last item answered, so every item comes exactly once.
 */
export function toPage<R extends { id: string }, T>(
  rows: R[],
  limit: number,
  map: (row: R) => T,
  maxBytes: number,
): { items: T[]; next_cursor: string | null } {
  const { items, taken, more } = fitPage(rows, limit, map, maxBytes);
  const last = taken[taken.length - 1];
  return { items, next_cursor: more && last ? encodeCursor(last.id) : null };
}

/**
 * A page of a list whose rows may be large, without reading more of them than the budget:
 * `sizes(n)` gives the estimated bytes of the first `n` rows of the page (a query of their
 * column lengths only), `rows(n)` the first `n` rows themselves, in the same order.
 */
export async function fetchPage<R extends { id: string }, T>(options: {
  limit: number;
  maxBytes: number;
  sizes: (n: number) => Promise<number[]>;
  rows: (n: number) => Promise<R[]>;
  map: (row: R) => T;
}): Promise<{ items: T[]; next_cursor: string | null }> {
  const { limit, maxBytes } = options;
  for (let attempt = 1; ; attempt++) {
    const sizes = await options.sizes(limit + 1);
    const count = Math.min(limit, countWithinBudget(sizes, maxBytes));
    if (count === 0) return { items: [], next_cursor: null };
    // Estimates can be short (the fixed fields): the serialised page is checked as well.
    const rows = await options.rows(count);
    // Every sized row was deleted in between (retention, a delete): size again rather than
    // end a list that goes on.
    if (rows.length === 0 && attempt < 3) continue;
    const { items, taken, more } = fitPage(rows, count, options.map, maxBytes);
    const last = taken[taken.length - 1];
    return {
      items,
      next_cursor: (more || sizes.length > count) && last ? encodeCursor(last.id) : null,
    };
  }
}

/**
 * The summed length in bytes of text columns (null counts 0), computed by the store
 * without sending them: `octet_length` in PostgreSQL and in SQLite (3.43 and later).
 */
export function bytesOf(...columns: string[]): RawBuilder<number> {
  return sql<number>`${sql.join(
    columns.map((c) => sql`coalesce(octet_length(${sql.ref(c)}), 0)`),
    sql` + `,
  )}`;
}

/** Added to the column lengths of a row to estimate its JSON (ids, states, times…). */
export const ROW_OVERHEAD_BYTES = 600;

declare module 'fastify' {
  interface FastifyInstance {
    /** ORCHESTRA_RESPONSE_MAX_BYTES, decorated on the root instance by the app. */
    responseMaxBytes?: number;
  }
}

/** The response budget of the server that received a request. */
export function responseBudget(request: { server: { responseMaxBytes?: number } }): number {
  return request.server.responseMaxBytes ?? PLATFORM_SETTINGS.responseMaxBytes.default;
}
