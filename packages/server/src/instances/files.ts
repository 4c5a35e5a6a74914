import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import {
  access,
  chmod,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type {
  FileEntry,
  FileType,
  PathInfo,
  PathTestResult,
  PathValidation,
  ProjectStructure,
  SearchResult,
  StructureNode,
} from '@orchestra/protocol';
import type { Logger } from 'pino';
import type { EventLog, StreamItem } from '../events/index.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { KeyedQueue } from '../platform/keyed-queue.ts';
import { detectSandbox, sandboxCommand } from '../platform/sandbox.ts';
import { type FileChange, kindOf, TEMP_NAME, WorkspaceWatcher } from './file-watch.ts';
import {
  checkOpened,
  fileNotFound,
  isInside,
  lexicalInside,
  linkTarget,
  makeDirectoryInside,
  relativePath,
  resolveEntry,
  resolveInside,
} from './paths.ts';
import type { InstancePaths } from './process-driver.ts';

/** An instance's files, as the file service needs them (looked up for the caller). */
export interface WorkspaceRef {
  id: string;
  tenantId: string;
  driver: string;
  paths: InstancePaths;
}

/** The event-log stream of an instance's file changes. */
export function filesStream(instanceId: string): string {
  return `files:${instanceId}`;
}

const DEFAULT_LIST_LIMIT = 100;
const DEFAULT_SEARCH_RESULTS = 1000;
const SEARCH_TIMEOUT_MS = 30_000;
const SEARCH_LINE_CHARS = 1000;
const DEFAULT_STRUCTURE_DEPTH = 8;
const DEFAULT_STRUCTURE_ENTRIES = 5000;
const STRUCTURE_TIMEOUT_MS = 30_000;
const ARCHIVE_TIMEOUT_MS = 600_000;
/** Directories watched per instance for the change feed. */
const MAX_WATCHED_DIRECTORIES = 10_000;

/** A byte range of a read, resolved against the file's size (inclusive end). */
export interface ByteRange {
  start: number;
  end: number;
}

export interface OpenedFile {
  stream: Readable;
  size: number;
  range: ByteRange | undefined;
  sha256: string;
  modifiedAt: string;
}

/**
 * The files of instances' workspaces (`/v1/instances/{id}/files…`) and the design's path
 * service (`…/paths…`). Files are handled on the node that holds them, in its process,
 * through the checks of `paths.ts`; archives are extracted inside the instance's sandbox,
 * so that whatever an archive holds can only land in the instance's own directory. Changes
 * become events of the instance's `files:` stream: seen by a watcher while the instance
 * runs (its processes change files too), recorded by the API call itself while it does not.
 */
export class FileService {
  readonly #events: EventLog;
  readonly #log: Logger;
  readonly #maxUploadBytes: number;
  readonly #onActivity: (instanceId: string) => void;
  readonly #watchers = new Map<string, WorkspaceWatcher>();
  /** Changes through the API, one at a time per instance (a hash check and its write). */
  readonly #locks = new KeyedQueue();

  constructor(deps: {
    events: EventLog;
    log: Logger;
    maxUploadBytes: number;
    /** Reading or changing files is activity: an idle instance is one without. */
    onActivity: (instanceId: string) => void;
  }) {
    this.#onActivity = deps.onActivity;
    this.#events = deps.events;
    this.#log = deps.log;
    this.#maxUploadBytes = deps.maxUploadBytes;
  }

  get maxUploadBytes(): number {
    return this.#maxUploadBytes;
  }

  // --- The change feed -----------------------------------------------------------------

  /** Starts watching a running instance's workspace (the walk runs in the background). */
  watch(ref: WorkspaceRef): void {
    if (this.#watchers.has(ref.id)) return;
    const watcher = new WorkspaceWatcher({
      root: ref.paths.workspace,
      maxDirectories: MAX_WATCHED_DIRECTORIES,
      onChanges: (changes) => this.#record(ref, changes),
      onLimited: () => {
        void this.#emit(ref, [
          {
            type: 'files.incomplete',
            data: {
              reason: `the workspace has more than ${MAX_WATCHED_DIRECTORIES} directories; changes deeper down are not reported`,
            },
          },
        ]);
      },
    });
    this.#watchers.set(ref.id, watcher);
    watcher.start().catch((err: unknown) => {
      this.#log.warn({ err, instance_id: ref.id }, 'workspace not watched');
    });
  }

  unwatch(instanceId: string): void {
    this.#watchers.get(instanceId)?.close();
    this.#watchers.delete(instanceId);
  }

  close(): void {
    for (const id of [...this.#watchers.keys()]) this.unwatch(id);
  }

  /** Changes the watcher saw. */
  #record(ref: WorkspaceRef, changes: FileChange[]): void {
    this.#onActivity(ref.id);
    void this.#emitChanges(ref, changes);
  }

  /** Changes made by the API: the watcher reports them when it runs, else they are. */
  #made(ref: WorkspaceRef, changes: FileChange[]): Promise<void> {
    return this.#watchers.has(ref.id) ? Promise.resolve() : this.#emitChanges(ref, changes);
  }

  #emitChanges(ref: WorkspaceRef, changes: FileChange[]): Promise<void> {
    return this.#emit(
      ref,
      changes.map((c) => ({ type: c.type, data: { path: c.path, kind: c.kind } })),
    );
  }

  async #emit(ref: WorkspaceRef, events: { type: string; data: unknown }[]): Promise<void> {
    if (events.length === 0) return;
    await this.#events
      .transaction(async (_trx, emit) => {
        await emit(filesStream(ref.id), ref.tenantId, events);
      })
      .catch((err: unknown) => this.#log.warn({ err, instance_id: ref.id }, 'file events lost'));
  }

  async openEvents(ref: WorkspaceRef, after: number): Promise<void> {
    const head = (await this.#events.head(ref.tenantId, filesStream(ref.id))) ?? 0;
    if (after > head) {
      throw fieldError('querystring.after', `is beyond the newest file event (${head})`);
    }
  }

  events(
    ref: WorkspaceRef,
    after: number,
    options: { signal: AbortSignal; follow: boolean },
  ): AsyncIterable<StreamItem> {
    return this.#events.follow(ref.tenantId, filesStream(ref.id), after, {
      signal: options.signal,
      ...(options.follow ? {} : { endWhenCaughtUp: async () => true }),
    });
  }

  /** The stream's events go with the instance. */
  streams(instanceId: string): string[] {
    return [filesStream(instanceId)];
  }

  // --- Reading -------------------------------------------------------------------------

  async list(
    ref: WorkspaceRef,
    options: { path?: string | undefined; limit?: number | undefined; cursor?: string | undefined },
  ): Promise<{ items: FileEntry[]; next_cursor: string | null }> {
    const root = await this.#root(ref);
    const dir = await resolveInside(root, options.path ?? '', 'querystring.path', 'not-found');
    if (!(await stat(dir)).isDirectory()) {
      throw fieldError('querystring.path', `"${options.path}" is not a directory`);
    }
    const after = decodeNameCursor(options.cursor);
    const limit = options.limit ?? DEFAULT_LIST_LIMIT;
    const names = (await readdir(dir))
      .filter((name) => !TEMP_NAME.test(name))
      .sort(compareNames)
      .filter((name) => after === undefined || compareNames(name, after) > 0);
    const page = names.slice(0, limit);
    const items: FileEntry[] = [];
    for (const name of page) {
      const entry = await this.#entry(root, join(dir, name), false).catch(() => undefined);
      if (entry !== undefined) items.push(entry); // gone meanwhile
    }
    const last = page[page.length - 1];
    return {
      items,
      next_cursor: names.length > limit && last !== undefined ? encodeNameCursor(last) : null,
    };
  }

  /** An entry itself (a link is described, not followed); its hash on request. */
  async stat(ref: WorkspaceRef, path: string, withHash: boolean): Promise<FileEntry> {
    const root = await this.#root(ref);
    const { abs } = await resolveEntry(root, path, 'querystring.path');
    return this.#entry(root, abs, withHash, path);
  }

  async #entry(root: string, abs: string, withHash: boolean, asked?: string): Promise<FileEntry> {
    const info = await lstat(abs).catch(() => undefined);
    if (info === undefined) throw fileNotFound(asked ?? relativePath(root, abs));
    const kind = kindOf(info);
    const rel = relativePath(root, abs);
    const entry: FileEntry = {
      path: rel,
      name: rel === '' ? '' : basename(abs),
      type: kind,
      size: info.size,
      mode: (info.mode & 0o7777).toString(8),
      modified_at: info.mtime.toISOString(),
    };
    if (kind === 'symlink') {
      const target = await linkTarget(abs);
      if (target !== undefined) entry.target = target;
    }
    if (withHash && kind === 'file') entry.sha256 = await hashFile(abs);
    return entry;
  }

  /**
   * Opens a file to read (links followed, inside only), with its SHA-256 (the ETag a
   * write's If-Match compares with) and the byte range asked for.
   */
  async read(
    ref: WorkspaceRef,
    path: string,
    rangeHeader: string | undefined,
  ): Promise<OpenedFile> {
    const root = await this.#root(ref);
    const abs = await resolveInside(root, path, 'querystring.path', 'not-found');
    let handle: FileHandle;
    try {
      handle = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      throw fileNotFound(path);
    }
    try {
      await checkOpened(root, handle.fd, 'querystring.path');
      const info = await handle.stat();
      if (!info.isFile()) {
        throw fieldError(
          'querystring.path',
          info.isDirectory() ? `"${path}" is a directory` : `"${path}" is not a regular file`,
        );
      }
      const sha256 = await hashHandle(handle);
      const range = parseRange(rangeHeader, info.size);
      const stream = handle.createReadStream({
        start: range?.start ?? 0,
        ...(range ? { end: range.end } : {}),
        autoClose: true,
      });
      return { stream, size: info.size, range, sha256, modifiedAt: info.mtime.toISOString() };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  // --- Writing -------------------------------------------------------------------------

  /**
   * Writes a file atomically: the body goes to a temporary file beside it, which replaces
   * the file by a rename only once complete, so a reader sees the old content or the new,
   * never a part. `ifMatch` (a SHA-256) must be the current content's, else 412;
   * `ifNoneMatch` `*` refuses to replace a file (409).
   */
  async write(
    ref: WorkspaceRef,
    path: string,
    body: Readable,
    options: { ifMatch?: string | undefined; ifNoneMatch?: string | undefined; parents: boolean },
  ): Promise<{ entry: FileEntry; created: boolean }> {
    const root = await this.#root(ref);
    lexicalInside(root, path, 'querystring.path');
    if (path === '' || path === '.' || path.endsWith('/')) {
      throw fieldError('querystring.path', 'must name a file');
    }
    return this.#locked(ref.id, async () => {
      const parents = options.parents
        ? (await makeDirectoryInside(root, dirname(path), 'querystring.path')).made
        : [];
      const target = await resolveEntry(root, path, 'querystring.path');
      let { abs, rel } = target;
      let current = await lstat(abs).catch(() => undefined);
      if (current?.isSymbolicLink()) {
        // Written through, as a shell would; only to a target inside the workspace.
        abs = await resolveInside(root, path, 'querystring.path');
        rel = relativePath(root, abs);
        current = await lstat(abs);
      }
      if (current?.isDirectory()) {
        throw new ApiError('WORKSPACE_FILE_EXISTS', `"${rel}" is a directory`, {
          details: { path: rel },
        });
      }
      if (current !== undefined && options.ifNoneMatch === '*') {
        throw new ApiError('WORKSPACE_FILE_EXISTS', `"${rel}" exists already`, {
          details: { path: rel },
        });
      }
      if (options.ifMatch !== undefined) {
        const expected = unquote(options.ifMatch);
        const actual = current?.isFile() ? await hashFile(abs) : undefined;
        if (expected !== '*' ? actual !== expected : actual === undefined) {
          throw new ApiError(
            'PRECONDITION_FAILED',
            actual === undefined
              ? `"${rel}" does not exist, so it cannot match If-Match`
              : `"${rel}" changed: its SHA-256 is not the one in If-Match`,
            { details: { path: rel, sha256: actual ?? null } },
          );
        }
      }
      const temp = join(dirname(abs), `.orchestra-${randomBytes(8).toString('hex')}.tmp`);
      const handle = await open(
        temp,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        current?.isFile() ? current.mode & 0o7777 : 0o644,
      );
      const hash = createHash('sha256');
      let written = 0;
      const input = refusableBody(body);
      try {
        await checkOpened(root, handle.fd, 'querystring.path');
        // The stream closes the file once written, after an fsync (`flush`).
        const out = handle.createWriteStream({ flush: true });
        const limit = this.#maxUploadBytes;
        await pipeline(
          input.chunks,
          atMost(limit, 'A file', (chunk) => {
            written += chunk.length;
            hash.update(chunk);
          }),
          out,
        );
        if (current?.isFile()) await chmod(temp, current.mode & 0o7777);
        await rename(temp, abs);
      } catch (err) {
        await handle.close().catch(() => {});
        await unlink(temp).catch(() => {});
        await input.drain();
        throw err;
      }
      const created = current === undefined;
      await this.#made(ref, [
        ...dirsMade(parents),
        { type: created ? 'file.created' : 'file.changed', path: rel, kind: 'file' },
      ]);
      const entry = await this.#entry(root, abs, false);
      return { entry: { ...entry, sha256: hash.digest('hex') }, created };
    });
  }

  async makeDirectory(ref: WorkspaceRef, path: string, parents: boolean): Promise<FileEntry> {
    const root = await this.#root(ref);
    return this.#locked(ref.id, async () => {
      if (parents) {
        // Like `mkdir -p`: missing parents are made, and a directory there already is fine.
        const { real, made } = await makeDirectoryInside(root, path, 'body.path');
        await this.#made(ref, dirsMade(made));
        return this.#entry(root, real, false);
      }
      const { abs, rel } = await resolveEntry(root, path, 'body.path');
      if ((await lstat(abs).catch(() => undefined)) !== undefined) {
        throw new ApiError('WORKSPACE_FILE_EXISTS', `"${rel}" exists already`, {
          details: { path: rel },
        });
      }
      await mkdir(abs);
      await this.#made(ref, dirsMade([rel]));
      return this.#entry(root, abs, false);
    });
  }

  /** Moves or renames a file or directory; a file at `to` is replaced only with `overwrite`. */
  async move(
    ref: WorkspaceRef,
    input: { from: string; to: string; overwrite?: boolean | undefined },
  ): Promise<FileEntry> {
    const root = await this.#root(ref);
    return this.#locked(ref.id, async () => {
      const from = await resolveEntry(root, input.from, 'body.from');
      const to = await resolveEntry(root, input.to, 'body.to');
      if (from.isRoot) throw fieldError('body.from', 'cannot be the workspace itself');
      if (to.isRoot) throw fieldError('body.to', 'cannot be the workspace itself');
      const source = await lstat(from.abs).catch(() => undefined);
      if (source === undefined) throw fileNotFound(input.from);
      if (source.isDirectory() && isInside(from.abs, to.abs)) {
        throw fieldError('body.to', 'cannot be inside the directory being moved');
      }
      const target = await lstat(to.abs).catch(() => undefined);
      if (target !== undefined && from.abs !== to.abs) {
        if (target.isDirectory() || input.overwrite !== true) {
          throw new ApiError(
            'WORKSPACE_FILE_EXISTS',
            target.isDirectory()
              ? `"${to.rel}" is a directory; a move never replaces one`
              : `"${to.rel}" exists; give overwrite: true to replace it`,
            { details: { path: to.rel } },
          );
        }
      }
      await rename(from.abs, to.abs);
      const kind = kindOf(source);
      await this.#made(ref, [
        { type: 'file.deleted', path: from.rel, kind: null },
        { type: target === undefined ? 'file.created' : 'file.changed', path: to.rel, kind },
      ]);
      return this.#entry(root, to.abs, false);
    });
  }

  /** Deletes a file, a link (not what it points to), or a directory (`recursive` if not empty). */
  async remove(ref: WorkspaceRef, path: string, recursive: boolean): Promise<void> {
    const root = await this.#root(ref);
    await this.#locked(ref.id, async () => {
      const { abs, rel, isRoot } = await resolveEntry(root, path, 'querystring.path');
      if (isRoot) throw fieldError('querystring.path', 'cannot be the workspace itself');
      const info = await lstat(abs).catch(() => undefined);
      if (info === undefined) throw fileNotFound(path);
      if (info.isDirectory()) {
        if (recursive) await rm(abs, { recursive: true, force: true });
        else {
          await rmdir(abs).catch((err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOTEMPTY' || err.code === 'EEXIST') {
              throw new ApiError(
                'WORKSPACE_DIRECTORY_NOT_EMPTY',
                `"${rel}" is not empty; give recursive=true to delete it and all it holds`,
                { details: { path: rel } },
              );
            }
            throw err;
          });
        }
      } else {
        await unlink(abs);
      }
      await this.#made(ref, [{ type: 'file.deleted', path: rel, kind: null }]);
    });
  }

  // --- Search, structure, archives ---------------------------------------------------------

  /** Searches file contents with ripgrep: `.gitignore` respected, hidden files included. */
  async search(
    ref: WorkspaceRef,
    options: {
      query: string;
      path?: string | undefined;
      regex?: boolean | undefined;
      case_sensitive?: boolean | undefined;
      glob?: string[] | undefined;
      max_results?: number | undefined;
    },
  ): Promise<SearchResult> {
    const root = await this.#root(ref);
    const target = await resolveInside(root, options.path ?? '', 'querystring.path', 'not-found');
    const max = options.max_results ?? DEFAULT_SEARCH_RESULTS;
    const args = ['--json', '--hidden', '--no-require-git', '--glob', '!.git'];
    if (options.regex !== true) args.push('--fixed-strings');
    if (options.case_sensitive === false) args.push('--ignore-case');
    for (const glob of options.glob ?? []) args.push('--glob', glob);
    args.push('--regexp', options.query, '--', relativePath(root, target) || '.');
    const matches: SearchResult['matches'] = [];
    let truncated = false;
    const { code, stderr } = await runLines('rg', args, root, SEARCH_TIMEOUT_MS, (line, stop) => {
      const record = parseJson(line) as RgRecord | undefined;
      if (record?.type !== 'match') return;
      if (matches.length >= max) {
        truncated = true;
        stop();
        return;
      }
      const data = record.data;
      const text = data.lines?.text ?? '';
      matches.push({
        path: cleanPath(data.path?.text ?? ''),
        line: data.line_number ?? 0,
        column: (data.submatches?.[0]?.start ?? 0) + 1,
        text: text.replace(/\r?\n$/, '').slice(0, SEARCH_LINE_CHARS),
      });
    });
    if (code === 'timeout') truncated = true;
    // rg: 0 found, 1 nothing found, 2 an error (a bad pattern).
    if (code === 2 && matches.length === 0) {
      throw fieldError('querystring.query', firstLine(stderr) || 'is not a valid search');
    }
    return { matches, truncated };
  }

  /** The design's project structure: a tree with sizes, `.gitignore` respected. */
  async structure(
    ref: WorkspaceRef,
    options: {
      path?: string | undefined;
      depth?: number | undefined;
      max_entries?: number | undefined;
      ignored?: boolean | undefined;
    },
  ): Promise<ProjectStructure> {
    const root = await this.#root(ref);
    const target = await resolveInside(root, options.path ?? '', 'querystring.path', 'not-found');
    if (!(await stat(target)).isDirectory()) {
      throw fieldError('querystring.path', `"${options.path}" is not a directory`);
    }
    const depth = options.depth ?? DEFAULT_STRUCTURE_DEPTH;
    const maxEntries = options.max_entries ?? DEFAULT_STRUCTURE_ENTRIES;
    const args = ['--files', '--hidden', '--no-require-git', '--glob', '!.git'];
    if (options.ignored === true) args.push('--no-ignore');
    const files: string[] = [];
    const { code } = await runLines('rg', args, target, STRUCTURE_TIMEOUT_MS, (line) => {
      files.push(cleanPath(line));
    });
    let truncated = code === 'timeout';
    const base = relativePath(root, target);
    const top: StructureNode = { name: basename(target), path: base, type: 'directory', size: 0 };
    top.children = [];
    let entries = 0;
    let directories = 0;
    let total = 0;
    const dirs = new Map<string, StructureNode>([['', top]]);
    files.sort(compareNames);
    for (const file of files) {
      const info = await lstat(join(target, file)).catch(() => undefined);
      if (info === undefined || !info.isFile()) continue;
      total += info.size;
      const parts = file.split('/');
      let parent = top;
      parent.size += info.size;
      let shown = true;
      for (let i = 0; i < parts.length - 1; i++) {
        const key = parts.slice(0, i + 1).join('/');
        let node = dirs.get(key);
        if (node === undefined) {
          if (i + 1 >= depth || entries >= maxEntries) {
            truncated = true;
            shown = false;
            break;
          }
          node = {
            name: parts[i] as string,
            path: join(base, key),
            type: 'directory',
            size: 0,
            children: [],
          };
          entries += 1;
          directories += 1;
          dirs.set(key, node);
          parent.children?.push(node);
        }
        node.size += info.size;
        parent = node;
      }
      if (!shown) continue;
      if (parts.length > depth || entries >= maxEntries) {
        truncated = true;
        continue;
      }
      entries += 1;
      parent.children?.push({
        name: parts[parts.length - 1] as string,
        path: join(base, file),
        type: 'file',
        size: info.size,
      });
    }
    return { root: top, files: files.length, directories, total_size: total, truncated };
  }

  /** A tar archive of a file or directory (links stored as links), streamed. */
  async archive(ref: WorkspaceRef, path: string): Promise<{ stream: Readable; name: string }> {
    const root = await this.#root(ref);
    const { abs, rel, isRoot } = await resolveEntry(root, path, 'querystring.path');
    if ((await lstat(abs).catch(() => undefined)) === undefined) throw fileNotFound(path);
    const child = spawn(
      'tar',
      [
        '--create',
        '--file=-',
        `--directory=${isRoot ? root : dirname(abs)}`,
        '--',
        isRoot ? '.' : basename(abs),
      ],
      { stdio: ['ignore', 'pipe', 'ignore'], timeout: ARCHIVE_TIMEOUT_MS },
    );
    child.on('error', (err) => child.stdout.destroy(err));
    return { stream: child.stdout, name: `${isRoot ? ref.id : basename(rel)}.tar` };
  }

  /**
   * Extracts a tar archive into a directory of the workspace (made if missing). tar runs in
   * the instance's sandbox, where only the instance's directory is writable: an archive's
   * absolute names, `..` members and links can land nowhere else.
   */
  async extract(
    ref: WorkspaceRef,
    path: string,
    body: Readable,
  ): Promise<{ path: string; bytes: number }> {
    const root = await this.#root(ref);
    lexicalInside(root, path, 'querystring.path');
    const sandbox = await detectSandbox();
    if (!sandbox.available) {
      throw new ApiError('SANDBOX_UNAVAILABLE', `Cannot extract the archive: ${sandbox.reason}`);
    }
    return this.#locked(ref.id, async () => {
      const { real: dir, made } = await makeDirectoryInside(root, path, 'querystring.path');
      const bytes = await extractArchive({
        body,
        dir,
        projectRoot: ref.paths.project_root,
        maxBytes: this.#maxUploadBytes,
      });
      const rel = relativePath(root, dir);
      await this.#made(ref, [
        ...dirsMade(made),
        { type: 'file.changed', path: rel, kind: 'directory' },
      ]);
      return { path: rel, bytes };
    });
  }

  // --- The path service ------------------------------------------------------------------

  pathInfo(ref: WorkspaceRef): PathInfo {
    return { instance_id: ref.id, driver: ref.driver, paths: { ...ref.paths } };
  }

  /** The layout's directories exist and can be used; and where the given paths lead. */
  async validate(ref: WorkspaceRef, paths: string[]): Promise<PathValidation> {
    const layout: PathValidation['layout'] = [];
    for (const [kind, abs] of Object.entries(ref.paths)) {
      const exists = (await stat(abs).catch(() => undefined))?.isDirectory() === true;
      const accessible =
        exists &&
        (await access(abs, constants.R_OK | constants.W_OK | constants.X_OK).then(
          () => true,
          () => false,
        ));
      layout.push({
        path_type: kind,
        path: abs,
        exists,
        accessible,
        status: exists && accessible ? 'valid' : 'invalid',
      });
    }
    const root = await realpath(ref.paths.workspace).catch(() => ref.paths.workspace);
    const checked: PathValidation['paths'] = [];
    for (const [i, path] of paths.entries()) {
      try {
        const { abs } = await resolveEntry(root, path, `body.paths.${i}`);
        const real = await realpath(abs).catch(() => abs);
        if (!isInside(root, real))
          throw fieldError(`body.paths.${i}`, 'leads out of the workspace through a symbolic link');
        checked.push({ path, valid: true, resolved: relativePath(root, real) });
      } catch (err) {
        if (err instanceof ApiError && err.code === 'WORKSPACE_FILE_NOT_FOUND') {
          // A missing parent is still a path inside: it would be made.
          checked.push({
            path,
            valid: true,
            resolved: relativePath(root, lexicalInside(root, path, 'path')),
          });
        } else {
          checked.push({ path, valid: false, reason: reasonOf(err) });
        }
      }
    }
    const valid = layout.every((l) => l.status === 'valid') && checked.every((c) => c.valid);
    return {
      overall_status: valid ? 'valid' : 'invalid',
      layout,
      paths: checked,
      checked_at: new Date().toISOString(),
    };
  }

  /** What each path is, and whether the server can read and write it. */
  async test(ref: WorkspaceRef, paths: string[]): Promise<PathTestResult> {
    const root = await this.#root(ref);
    const results: PathTestResult['results'] = [];
    for (const [i, path] of paths.entries()) {
      const outcome: PathTestResult['results'][number] = {
        path,
        inside: false,
        exists: false,
        type: null,
        readable: false,
        writable: false,
      };
      try {
        const abs = await resolveInside(root, path, `body.paths.${i}`, 'not-found');
        outcome.inside = true;
        const info = await stat(abs);
        outcome.exists = true;
        outcome.type = kindOf(info) as FileType;
        outcome.readable = await access(abs, constants.R_OK).then(
          () => true,
          () => false,
        );
        outcome.writable = await access(abs, constants.W_OK).then(
          () => true,
          () => false,
        );
      } catch (err) {
        if (err instanceof ApiError && err.code === 'WORKSPACE_FILE_NOT_FOUND') {
          outcome.inside = true;
          outcome.reason = 'does not exist';
        } else {
          outcome.reason = reasonOf(err);
        }
      }
      results.push(outcome);
    }
    return { results };
  }

  /** The workspace's real path; 404 when its files are gone (a failed creation). */
  async #root(ref: WorkspaceRef): Promise<string> {
    this.#onActivity(ref.id);
    return realpath(ref.paths.workspace).catch(() => {
      throw new ApiError(
        'WORKSPACE_INSTANCE_STATE',
        `Instance "${ref.id}" has no workspace on this node (it was never made, or was lost)`,
      );
    });
  }

  #locked<T>(id: string, work: () => Promise<T>): Promise<T> {
    return this.#locks.run(id, work);
  }
}

/** tar's flag for a compressed archive, from its first bytes (gzip, bzip2, xz, zstd). */
/**
 * Extracts a tar archive (plain, gzip, bzip2, xz or zstd) into `dir` with tar run in a
 * sandbox where only `projectRoot` (an instance's directory) is writable, so that nothing in
 * the archive (`../`, absolute names, links) lands outside it. Resolves to the bytes read;
 * 413 past `maxBytes`, 400 with tar's words for a broken archive.
 */
export async function extractArchive(options: {
  body: AsyncIterable<Buffer>;
  dir: string;
  projectRoot: string;
  maxBytes: number;
}): Promise<number> {
  const { dir } = options;
  // tar cannot tell a compressed archive on a pipe by itself: its first bytes can.
  const input = refusableBody(options.body);
  const chunks = input.chunks[Symbol.asyncIterator]();
  const first = await chunks.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : first.value;
  const source = (async function* () {
    if (!first.done) yield first.value;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield next.value;
    }
  })();
  const compression = compressionOf(head);
  const wrapped = sandboxCommand({
    command: 'tar',
    args: [
      '--extract',
      '--file=-',
      ...(compression ? [compression] : []),
      '--no-same-owner',
      '--no-overwrite-dir',
      `--directory=${dir}`,
    ],
    workDir: options.projectRoot,
    cwd: dir,
    network: false,
    readOnlyPaths: [],
    path: '/usr/bin:/bin',
    mountCommandPaths: false,
  });
  const child = spawn(wrapped.command, wrapped.args, {
    stdio: ['pipe', 'ignore', 'pipe'],
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
    timeout: ARCHIVE_TIMEOUT_MS,
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < 2000) stderr += chunk;
  });
  const ended = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  let bytes = 0;
  try {
    await pipeline(
      source,
      atMost(options.maxBytes, 'An archive', (chunk) => {
        bytes += chunk.length;
      }),
      child.stdin,
    );
  } catch (err) {
    child.kill('SIGKILL');
    await ended.catch(() => {});
    if (err instanceof ApiError) {
      await input.drain();
      throw err;
    }
    // tar stopped reading (a broken archive): its own words say why, below.
  }
  const code = await ended;
  if (code !== 0) {
    throw new ApiError(
      'BAD_REQUEST',
      `The archive could not be extracted: ${firstLine(stderr) || `tar exited with ${code}`}`,
    );
  }
  return bytes;
}

/**
 * A pipeline stage that passes chunks on (each seen by `seen`) and fails with 413 once more
 * than `max` bytes went through.
 */
function atMost(
  max: number,
  what: string,
  seen: (chunk: Buffer) => void,
): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    let bytes = 0;
    for await (const chunk of source) {
      bytes += chunk.length;
      if (bytes > max) {
        throw new ApiError(
          'PAYLOAD_TOO_LARGE',
          `${what} may hold ${max} bytes at most (ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES)`,
        );
      }
      seen(chunk);
      yield chunk;
    }
  };
}

/** How long a refused body is read and dropped before its connection is cut. */
const DRAIN_MS = 30_000;

/**
 * A request body read so that a refusal halfway (too large, not an archive) does not reset
 * the connection: stopping `chunks` leaves the request alone (its iterator has no
 * `return`), and `drain` reads and drops what is left, so that the client, still sending,
 * reads the 4xx. A client that goes on sending for more than 30 s has its connection cut.
 */
export function refusableBody(body: AsyncIterable<Buffer>): {
  chunks: AsyncIterable<Buffer>;
  drain(): Promise<void>;
} {
  const iterator = body[Symbol.asyncIterator]();
  return {
    chunks: { [Symbol.asyncIterator]: () => ({ next: () => iterator.next() }) },
    async drain() {
      const deadline = Date.now() + DRAIN_MS;
      while (Date.now() < deadline) {
        const next = await iterator.next().catch(() => ({ done: true as const, value: undefined }));
        if (next.done) return;
      }
      (body as { destroy?: () => void }).destroy?.();
    },
  };
}

/** The option that tells tar how an archive is compressed, from its first bytes. */
export function compressionOf(head: Buffer): string | undefined {
  if (head[0] === 0x1f && head[1] === 0x8b) return '--gzip';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return '--bzip2';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return '--xz';
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return '--zstd';
  return undefined;
}

function dirsMade(paths: string[]): FileChange[] {
  return paths.map((path) => ({ type: 'file.created', path, kind: 'directory' }));
}

interface RgRecord {
  type: string;
  data: {
    path?: { text?: string };
    lines?: { text?: string };
    line_number?: number;
    submatches?: { start: number }[];
  };
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

function cleanPath(path: string): string {
  return path.startsWith('./') ? path.slice(2) : path;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.trim() ?? '';
}

function reasonOf(err: unknown): string {
  if (err instanceof ApiError) {
    const fields = err.details?.fields as { message: string }[] | undefined;
    return fields?.[0]?.message ?? err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs a program (not sandboxed: ripgrep reads, follows no link and writes nothing),
 * handing each line of its output to `onLine` until it ends, is stopped or times out.
 */
function runLines(
  command: string,
  args: string[],
  cwd: string,
  timeoutMs: number,
  onLine: (line: string, stop: () => void) => void,
): Promise<{ code: number | 'stopped' | 'timeout'; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
    });
    let stopped: 'stopped' | 'timeout' | undefined;
    const stop = (why: 'stopped' | 'timeout') => {
      stopped ??= why;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    let stderr = '';
    let rest = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (stopped) return;
      const lines = (rest + chunk).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        if (stopped) return;
        if (line !== '') onLine(line, () => stop('stopped'));
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 2000) stderr += chunk;
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new ApiError('SEARCH_UNAVAILABLE', `${command} is not installed on this node`)
          : err,
      );
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (!stopped && rest !== '') onLine(rest, () => {});
      resolve({ code: stopped ?? code ?? 2, stderr });
    });
  });
}

async function hashFile(abs: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(abs), hash);
  return hash.digest('hex');
}

/** The SHA-256 of an open file, read from its start without moving its position. */
async function hashHandle(handle: FileHandle): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(256 * 1024);
  let position = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest('hex');
}

function unquote(tag: string): string {
  return tag
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
}

/** Names in byte order, so that a page cursor is stable. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function encodeNameCursor(name: string): string {
  return Buffer.from(name, 'utf8').toString('base64url');
}

function decodeNameCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const name = Buffer.from(cursor, 'base64url').toString('utf8');
  if (
    name === '' ||
    name.includes('/') ||
    name.includes('\u0000') ||
    encodeNameCursor(name) !== cursor
  ) {
    throw new ApiError('INVALID_CURSOR');
  }
  return name;
}

/**
 * A `Range: bytes=…` header against a file's size: one range (`a-b`, `a-`, `-n`), or
 * undefined for the whole file. 416 RANGE_NOT_SATISFIABLE for a range outside it; a
 * header that is not one range of bytes is ignored, as HTTP allows.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  let start: number;
  let end: number;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) throw unsatisfiable(size);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
    if (last !== '' && Number(last) < start) return undefined;
  }
  if (start >= size) throw unsatisfiable(size);
  return { start, end };
}

function unsatisfiable(size: number): ApiError {
  return new ApiError('RANGE_NOT_SATISFIABLE', `The file holds ${size} bytes`, {
    headers: { 'content-range': `bytes */${size}` },
    details: { size },
  });
}
