import type { KvFolderPage, KvFoldersQuery } from './kv.ts';

/**
 * `KvStore.folders` for both adapters: a skip scan that reads one key per folder, then
 * jumps past the folder's keys, so that a folder of ten thousand keys costs no more than a
 * folder of one. `<prefix><name>0` is the first key after every `<prefix><name>/…` ('0'
 * follows '/' in byte order).
 */
export async function scanFolders(
  query: KvFoldersQuery,
  reads: {
    /** The first key at or after `from` that starts with the prefix and has a `/` after it. */
    firstFolderKey(from: string): Promise<string | undefined>;
    /** How many keys start with `prefix`. */
    count(prefix: string): Promise<number>;
  },
): Promise<KvFolderPage> {
  const { prefix, limit } = query;
  const names: string[] = [];
  let from = query.after !== undefined ? `${prefix}${query.after}0` : prefix;
  // One folder more than asked for says whether more follow.
  while (names.length <= limit) {
    const key = await reads.firstFolderKey(from);
    if (key === undefined) break;
    const rest = key.slice(prefix.length);
    const name = rest.slice(0, rest.indexOf('/'));
    names.push(name);
    from = `${prefix}${name}0`;
  }
  const shown = names.slice(0, limit);
  const counts = await Promise.all(shown.map((name) => reads.count(`${prefix}${name}/`)));
  return {
    folders: shown.map((name, i) => ({ name, keys: counts[i] ?? 0 })),
    more: names.length > limit,
  };
}
