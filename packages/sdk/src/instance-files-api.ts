import type {
  FileEntry,
  PathInfo,
  PathTestResult,
  PathValidation,
  ProjectStructure,
  SearchResult,
  StreamGap,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { type FollowOptions, followEvents } from './instances-api.ts';
import type { Page } from './types.ts';

// An instance's files and the path service (`/v1/instances/{id}/files…`, `…/paths…`).
// Paths are relative to the instance's workspace.

export type {
  FileEntry,
  FileType,
  PathInfo,
  PathTestResult,
  PathValidation,
  ProjectStructure,
  SearchResult,
  StructureNode,
} from '@orchestra/protocol';

/** A change of the workspace, as its feed carries it. */
export interface FileEvent {
  offset: number;
  /** `file.created`, `file.changed`, `file.deleted`, or `files.incomplete`. */
  type: string;
  time: string;
  data: { path?: string; kind?: string | null; reason?: string };
}

/** A file as read: its bytes, its SHA-256 (give it as `ifMatch` to a write), its size. */
export interface ReadFile {
  content: Uint8Array;
  sha256: string;
  /** The whole file's size (a range reads less). */
  size: number;
}

export interface WriteFileOptions {
  /** The SHA-256 the file must have now (from a read), else `PRECONDITION_FAILED` (412). */
  ifMatch?: string;
  /** Refuse to replace a file that exists (`WORKSPACE_FILE_EXISTS`, 409). */
  create?: boolean;
  /** Make missing parent directories (default true). */
  parents?: boolean;
}

export interface SearchOptions {
  path?: string;
  regex?: boolean;
  caseSensitive?: boolean;
  glob?: string[];
  maxResults?: number;
}

const filesPath = (id: string) => `/v1/instances/${encodeURIComponent(id)}/files`;
const pathsPath = (id: string) => `/v1/instances/${encodeURIComponent(id)}/paths`;

/**
 * `Orchestra.instances.files`: read, write, list, move, delete, search and archive an
 * instance's files, and follow their changes. A path that leads out of the workspace
 * rejects with `VALIDATION_FAILED` (400); nothing there with `WORKSPACE_FILE_NOT_FOUND` (404).
 */
export class InstanceFilesApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** A directory's entries by name, a page at a time. */
  list(
    id: string,
    path = '',
    options: { limit?: number; cursor?: string } = {},
  ): Promise<Page<FileEntry>> {
    return this.#client.request('GET', filesPath(id), { query: { path, ...options } });
  }

  /** Describes an entry (a link is not followed); `hash` adds a file's SHA-256. */
  stat(id: string, path: string, options: { hash?: boolean } = {}): Promise<FileEntry> {
    return this.#client.request('GET', `${filesPath(id)}/stat`, {
      query: { path, ...(options.hash ? { hash: true } : {}) },
    });
  }

  /** Reads a file, or `range` of it (`start` to `end`, inclusive). */
  async read(
    id: string,
    path: string,
    options: { range?: { start: number; end?: number } } = {},
  ): Promise<ReadFile> {
    const range = options.range;
    const answer = await this.#client.exchange<Uint8Array>('GET', `${filesPath(id)}/content`, {
      query: { path },
      as: 'bytes',
      ...(range ? { headers: { range: `bytes=${range.start}-${range.end ?? ''}` } } : {}),
    });
    const total = /\/(\d+)$/.exec(answer.headers.get('content-range') ?? '')?.[1];
    return {
      content: answer.body,
      sha256: (answer.headers.get('etag') ?? '').replace(/"/g, ''),
      size: total !== undefined ? Number(total) : answer.body.length,
    };
  }

  /** Reads a file as UTF-8 text. */
  async readText(id: string, path: string): Promise<string> {
    return new TextDecoder().decode((await this.read(id, path)).content);
  }

  /** Writes a file atomically; resolves to its entry, with its new SHA-256. */
  write(
    id: string,
    path: string,
    content: Uint8Array | string,
    options: WriteFileOptions = {},
  ): Promise<FileEntry> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (options.ifMatch !== undefined) headers['if-match'] = `"${options.ifMatch}"`;
    if (options.create) headers['if-none-match'] = '*';
    return this.#client.request('PUT', `${filesPath(id)}/content`, {
      query: { path, ...(options.parents === false ? { parents: false } : {}) },
      rawBody: content,
      headers,
    });
  }

  /** Makes a directory; with `parents`, missing parents too (and one there is fine). */
  mkdir(id: string, path: string, options: { parents?: boolean } = {}): Promise<FileEntry> {
    return this.#client.request('POST', `${filesPath(id)}/directories`, {
      body: { path, ...options },
    });
  }

  /** Moves or renames; a file at `to` is replaced only with `overwrite`. */
  move(
    id: string,
    from: string,
    to: string,
    options: { overwrite?: boolean } = {},
  ): Promise<FileEntry> {
    return this.#client.request('POST', `${filesPath(id)}/move`, {
      body: { from, to, ...options },
    });
  }

  /** Deletes a file or link; a directory must be empty unless `recursive`. */
  async delete(id: string, path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#client.request('DELETE', filesPath(id), {
      query: { path, ...(options.recursive ? { recursive: true } : {}) },
    });
  }

  /** Searches file contents (ripgrep; `.gitignore` respected). */
  search(id: string, query: string, options: SearchOptions = {}): Promise<SearchResult> {
    return this.#client.request('GET', `${filesPath(id)}/search`, {
      query: {
        query,
        path: options.path,
        regex: options.regex,
        case_sensitive: options.caseSensitive,
        max_results: options.maxResults,
        glob: options.glob,
      },
    });
  }

  /** A tar archive of a file or directory (the whole workspace by default). */
  download(id: string, path = ''): Promise<Uint8Array> {
    return this.#client.request('GET', `${filesPath(id)}/archive`, {
      query: { path },
      as: 'bytes',
    });
  }

  /** Extracts a tar archive (plain or compressed) into a directory of the workspace. */
  upload(id: string, archive: Uint8Array, path = ''): Promise<{ path: string; bytes: number }> {
    return this.#client.request('PUT', `${filesPath(id)}/archive`, {
      query: { path },
      rawBody: archive,
      headers: { 'content-type': 'application/x-tar' },
    });
  }

  /** The workspace's changes, oldest first, resumed across dropped connections. */
  events(id: string, options: FollowOptions = {}): AsyncIterable<FileEvent | StreamGap> {
    return followEvents(
      this.#client,
      `${filesPath(id)}/events`,
      `the file changes of instance "${id}"`,
      options,
    );
  }

  /** The instance's directory layout (the path service). */
  paths(id: string): Promise<PathInfo> {
    return this.#client.request('GET', pathsPath(id));
  }

  /** Checks the layout, and where each of `paths` leads. */
  validatePaths(id: string, paths: string[] = []): Promise<PathValidation> {
    return this.#client.request('POST', `${pathsPath(id)}/validate`, { body: { paths } });
  }

  /** Whether each path is inside, exists, and can be read and written. */
  testPaths(id: string, paths: string[]): Promise<PathTestResult> {
    return this.#client.request('POST', `${pathsPath(id)}/test`, { body: { paths } });
  }

  /** The project's tree with sizes (`.gitignore` respected unless `ignored`). */
  structure(
    id: string,
    options: { path?: string; depth?: number; maxEntries?: number; ignored?: boolean } = {},
  ): Promise<ProjectStructure> {
    return this.#client.request('GET', `${pathsPath(id)}/structure`, {
      query: {
        path: options.path,
        depth: options.depth,
        max_entries: options.maxEntries,
        ignored: options.ignored,
      },
    });
  }
}
