import { type FSWatcher, watch } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileType } from '@orchestra/protocol';

/** One change seen in a workspace. */
export interface FileChange {
  type: 'file.created' | 'file.changed' | 'file.deleted';
  path: string;
  /** What is there now (null once deleted). */
  kind: FileType | null;
}

/** Paths the feed leaves out: git's own files, and the API's temporary files. */
export function unwatched(rel: string): boolean {
  if (
    rel === '.git' ||
    rel.startsWith('.git/') ||
    rel.includes('/.git/') ||
    rel.endsWith('/.git')
  ) {
    return true;
  }
  const name = rel.slice(rel.lastIndexOf('/') + 1);
  return TEMP_NAME.test(name);
}

/** The name of a file being written by the files API, before it is renamed into place. */
export const TEMP_NAME = /^\.orchestra-[0-9a-f]{16}\.tmp$/;

export function kindOf(info: {
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}): FileType {
  if (info.isSymbolicLink()) return 'symlink';
  if (info.isFile()) return 'file';
  if (info.isDirectory()) return 'directory';
  return 'other';
}

/** Changes are gathered this long, then reported together (an editor's save is several). */
const SETTLE_MS = 150;

/**
 * Watches a workspace for the change feed: one inotify watch per directory (Linux has no
 * recursive one), added as directories appear. It knows every path it has seen, so that a
 * file replaced by a rename (how editors and the files API save) is `changed`, not
 * `created`. Past `maxDirectories`, deeper directories are not watched and `onLimited` is
 * called once.
 */
export class WorkspaceWatcher {
  readonly #root: string;
  readonly #onChanges: (changes: FileChange[]) => void;
  readonly #onLimited: () => void;
  readonly #maxDirectories: number;
  readonly #watchers = new Map<string, FSWatcher>();
  /** Every path seen (relative), with its kind. */
  readonly #known = new Map<string, FileType>();
  readonly #pending = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #limited = false;

  constructor(options: {
    root: string;
    onChanges: (changes: FileChange[]) => void;
    onLimited: () => void;
    maxDirectories: number;
  }) {
    this.#root = options.root;
    this.#onChanges = options.onChanges;
    this.#onLimited = options.onLimited;
    this.#maxDirectories = options.maxDirectories;
  }

  /** Walks the workspace and watches its directories; what it finds is not reported. */
  async start(): Promise<void> {
    await this.#walk('', false);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const watcher of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
    this.#known.clear();
    this.#pending.clear();
  }

  /** Watches a directory and what it holds; with `report`, what it finds is `created`. */
  async #walk(rel: string, report: boolean): Promise<FileChange[]> {
    const found: FileChange[] = [];
    const dirs = [rel];
    while (dirs.length > 0 && !this.#closed) {
      const dir = dirs.pop() as string;
      if (!this.#watch(dir)) break;
      const entries = await readdir(join(this.#root, dir), { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        const child = dir === '' ? entry.name : `${dir}/${entry.name}`;
        if (unwatched(child) || this.#known.has(child)) continue;
        const kind = kindOf(entry);
        this.#known.set(child, kind);
        if (report) found.push({ type: 'file.created', path: child, kind });
        if (kind === 'directory') dirs.push(child);
      }
    }
    return found;
  }

  #watch(dir: string): boolean {
    if (this.#watchers.has(dir) || this.#closed) return true;
    if (this.#watchers.size >= this.#maxDirectories) {
      if (!this.#limited) {
        this.#limited = true;
        this.#onLimited();
      }
      return false;
    }
    try {
      const watcher = watch(join(this.#root, dir), { persistent: false }, (_event, name) => {
        if (name === null) return;
        this.#noticed(dir === '' ? name : `${dir}/${name}`);
      });
      watcher.on('error', () => this.#unwatch(dir));
      this.#watchers.set(dir, watcher);
      return true;
    } catch {
      return true; // gone already: its deletion is reported by its parent's watch
    }
  }

  #unwatch(dir: string): void {
    for (const [path, watcher] of this.#watchers) {
      if (path === dir || path.startsWith(`${dir}/`)) {
        watcher.close();
        this.#watchers.delete(path);
      }
    }
  }

  #noticed(rel: string): void {
    if (this.#closed || unwatched(rel)) return;
    this.#pending.add(rel);
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.#settle();
    }, SETTLE_MS);
  }

  async #settle(): Promise<void> {
    const paths = [...this.#pending].sort();
    this.#pending.clear();
    const changes: FileChange[] = [];
    for (const rel of paths) {
      if (this.#closed) return;
      const info = await lstat(join(this.#root, rel)).catch(() => undefined);
      const before = this.#known.get(rel);
      if (info === undefined) {
        if (before === undefined) continue; // came and went within the window
        for (const path of [...this.#known.keys()]) {
          if (path.startsWith(`${rel}/`)) this.#known.delete(path);
        }
        this.#known.delete(rel);
        if (before === 'directory') this.#unwatch(rel);
        changes.push({ type: 'file.deleted', path: rel, kind: null });
        continue;
      }
      const kind = kindOf(info);
      this.#known.set(rel, kind);
      if (before === undefined) {
        changes.push({ type: 'file.created', path: rel, kind });
        // A new directory may hold files already (mkdir -p, tar, mv): report them too.
        if (kind === 'directory') changes.push(...(await this.#walk(rel, true)));
      } else if (kind !== 'directory') {
        changes.push({ type: 'file.changed', path: rel, kind });
      }
    }
    if (changes.length > 0 && !this.#closed) this.#onChanges(changes);
  }
}
