import Type, { type TSchema } from 'typebox';
import { ApiError } from './errors.ts';

export const DEFAULT_PAGE_LIMIT = 50;

/** Query parameters of every list route. */
export const PageQuery = {
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 200,
      default: DEFAULT_PAGE_LIMIT,
      description: 'Items per page, 1 to 200.',
    }),
  ),
  cursor: Type.Optional(
    Type.String({
      maxLength: 512,
      description: 'The `next_cursor` of the previous page; omit for the first page.',
    }),
  ),
};

/** A page of items in id order; `next_cursor` is null on the last page. */
export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    next_cursor: Type.Union([Type.String(), Type.Null()]),
  });
}

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

/** Takes `limit + 1` rows fetched in id order and splits them into a page. */
export function toPage<R extends { id: string }, T>(
  rows: R[],
  limit: number,
  map: (row: R) => T,
): { items: T[]; next_cursor: string | null } {
  const more = rows.length > limit;
  const pageRows = more ? rows.slice(0, limit) : rows;
  const last = pageRows[pageRows.length - 1];
  return {
    items: pageRows.map(map),
    next_cursor: more && last ? encodeCursor(last.id) : null,
  };
}
