// What the paged lists of every API share.

import type { Page } from './types.ts';

/** Every item of a paged list: `fetchPage` is called with each page's cursor in turn. */
export async function* paginate<T>(
  fetchPage: (cursor: { cursor?: string }) => Promise<Page<T>>,
): AsyncIterable<T> {
  let cursor: string | null = null;
  do {
    const page: Page<T> = await fetchPage(cursor === null ? {} : { cursor });
    yield* page.items;
    cursor = page.next_cursor;
  } while (cursor !== null);
}

/** `?label=key=value` parameters, one per label. */
export function labelQuery(labels: Record<string, string> | undefined): string[] {
  return Object.entries(labels ?? {}).map(([key, value]) => `${key}=${value}`);
}
