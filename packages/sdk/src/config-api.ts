import type {
  ConfigDeleted,
  ConfigDiff,
  ConfigEnvironment,
  ConfigSchema,
  ConfigSchemaList,
  ConfigWatchEvent,
  ConfigHistoryEntry as WireConfigHistoryEntry,
  ConfigHistoryPage as WireConfigHistoryPage,
  ConfigItem as WireConfigItem,
  ConfigPage as WireConfigPage,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import type { Page, PageOptions } from './types.ts';

// The config center's wire types are @orchestra/protocol's (decision 0014). Those that carry
// a key's value take its type as `T`, `unknown` by default, which is the wire type itself.

/** A wire type with the key's value typed: `value` is a `T`, `prev_value` a `T` or null. */
type Valued<W, T> = {
  [K in keyof W]: K extends 'value'
    ? T
    : K extends 'prev_value'
      ? T | null
      : K extends 'items'
        ? W[K] extends readonly (infer I)[]
          ? Valued<I, T>[]
          : W[K]
        : W[K];
};

export type {
  ConfigActor,
  ConfigDeleted,
  ConfigDiff,
  ConfigEnvironment,
  ConfigSchema,
} from '@orchestra/protocol';

/** A key with its value, version (also its ETag) and revision. */
export type ConfigItem<T = unknown> = Valued<WireConfigItem, T>;

/** A page of `list`, every page at the revision of the first. */
export type ConfigPage<T = unknown> = Valued<WireConfigPage, T>;

/** One change of a key: a put (with the value it wrote) or a delete. */
export type ConfigHistoryEntry<T = unknown> = Valued<WireConfigHistoryEntry, T>;

/** A page of `history`, newest first; pass `next_before` as `before` for older changes. */
export type ConfigHistoryPage<T = unknown> = Valued<WireConfigHistoryPage, T>;

/**
 * What a config watch yields: a `put` or `delete` of a key, or, when the revision asked for
 * is gone, `resync` pages with the whole state under the prefix until `more` is false.
 */
export type ConfigChange<T = unknown> = Valued<ConfigWatchEvent, T>;

export interface ConfigWatchOptions {
  env?: string;
  prefix?: string;
  /** Changes after this revision; default: from now on. */
  afterRevision?: number;
  signal?: AbortSignal;
  /** Failed reconnections in a row before the iterator gives up; default 8 (Infinity: never). */
  maxReconnects?: number;
  /** Called each time the watch is (re)connected. */
  onConnect?: () => void;
}

interface EnvOption {
  env?: string;
}

/** `a/b c` → `a/b%20c`: each segment encoded, the slashes kept. */
export const keyPath = (key: string) =>
  key
    .replace(/^\/+/, '')
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');

const DEFAULT_MAX_RECONNECTS = 8;

/** `Orchestra.config`: the config center's REST API. */
export class ConfigApi {
  readonly #client: Orchestra;

  constructor(client: Orchestra) {
    this.#client = client;
  }

  get<T = unknown>(key: string, options: EnvOption = {}): Promise<ConfigItem<T>> {
    return this.#client.request('GET', `/v1/config/${keyPath(key)}`, {
      query: { env: options.env },
    });
  }

  /**
   * Creates or updates a key. `ifVersion` writes only over that version and `ifAbsent`
   * only when the key does not exist: otherwise `PRECONDITION_FAILED` (412).
   */
  set<T = unknown>(
    key: string,
    value: T,
    options: EnvOption & {
      reason?: string;
      ifVersion?: number;
      ifAbsent?: boolean;
      lease?: string;
    } = {},
  ): Promise<ConfigItem<T>> {
    const headers: Record<string, string> = {};
    if (options.ifVersion !== undefined) headers['if-match'] = `"${options.ifVersion}"`;
    if (options.ifAbsent) headers['if-none-match'] = '*';
    return this.#client.request('PUT', `/v1/config/${keyPath(key)}`, {
      query: { env: options.env },
      headers,
      body: {
        value,
        ...(options.reason !== undefined ? { reason: options.reason } : {}),
        ...(options.lease !== undefined ? { lease: options.lease } : {}),
      },
    });
  }

  delete(
    key: string,
    options: EnvOption & { reason?: string; ifVersion?: number } = {},
  ): Promise<ConfigDeleted> {
    return this.#client.request('DELETE', `/v1/config/${keyPath(key)}`, {
      query: { env: options.env, reason: options.reason },
      ...(options.ifVersion !== undefined
        ? { headers: { 'if-match': `"${options.ifVersion}"` } }
        : {}),
    });
  }

  list<T = unknown>(
    options: EnvOption & {
      prefix?: string;
      limit?: number;
      cursor?: string;
      revision?: number;
    } = {},
  ): Promise<ConfigPage<T>> {
    return this.#client.request('GET', '/v1/config', { query: { ...options } });
  }

  /**
   * The environments that hold at least one key, with how many keys each, a page at a
   * time (`limit` 1 to 200, default 50; pass `next_cursor` as `cursor` for the next). They
   * come in the byte order of `<env>/`, so `prod-eu` before `prod`. An environment whose
   * last key is deleted is no longer listed.
   */
  environments(options: PageOptions = {}): Promise<Page<ConfigEnvironment>> {
    return this.#client.request('GET', '/v1/config-environments', { query: { ...options } });
  }

  /** Every key under `prefix`, all at one revision (that of the first page). */
  async snapshot<T = unknown>(
    options: EnvOption & { prefix?: string; signal?: AbortSignal } = {},
  ): Promise<{ items: ConfigItem<T>[]; revision: number }> {
    const { signal, ...query } = options;
    const items: ConfigItem<T>[] = [];
    let cursor: string | undefined;
    let revision = 0;
    do {
      const page: ConfigPage<T> = await this.#client.request('GET', '/v1/config', {
        query: { ...query, limit: 200, cursor },
        signal,
      });
      items.push(...page.items);
      revision = page.revision;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
    return { items, revision };
  }

  /** Changes newest first; pass `next_before` as `before` for older ones. */
  history<T = unknown>(
    key: string,
    options: EnvOption & { limit?: number; before?: number } = {},
  ): Promise<ConfigHistoryPage<T>> {
    return this.#client.request('GET', `/v1/config/${keyPath(key)}/history`, {
      query: { ...options },
    });
  }

  diff(key: string, from: number, to?: number, options: EnvOption = {}): Promise<ConfigDiff> {
    return this.#client.request('GET', `/v1/config/${keyPath(key)}/diff`, {
      query: { env: options.env, from, to },
    });
  }

  /** Writes what `version` held as a new change (or deletes, if that version was a delete). */
  revert<T = unknown>(
    key: string,
    version: number,
    options: EnvOption & { reason?: string; ifVersion?: number } = {},
  ): Promise<ConfigItem<T> | ConfigDeleted> {
    return this.#client.request('POST', `/v1/config/${keyPath(key)}/revert`, {
      query: { env: options.env },
      body: { version, ...(options.reason !== undefined ? { reason: options.reason } : {}) },
      ...(options.ifVersion !== undefined
        ? { headers: { 'if-match': `"${options.ifVersion}"` } }
        : {}),
    });
  }

  readonly schemas = {
    list: async (): Promise<ConfigSchema[]> =>
      (await this.#client.request<ConfigSchemaList>('GET', '/v1/config-schemas')).items,
    get: (prefix: string): Promise<ConfigSchema> =>
      this.#client.request('GET', `/v1/config-schemas/${keyPath(prefix)}`),
    set: (prefix: string, schema: Record<string, unknown>): Promise<ConfigSchema> =>
      this.#client.request('PUT', `/v1/config-schemas/${keyPath(prefix)}`, { body: { schema } }),
    delete: async (prefix: string): Promise<void> => {
      await this.#client.request('DELETE', `/v1/config-schemas/${keyPath(prefix)}`);
    },
  };

  /**
   * Changes under a prefix, as they happen. After a dropped connection it reconnects
   * with backoff and resumes after the last revision it yielded; when the server no
   * longer has that revision, `resync` items carry the whole state first.
   */
  watch<T = unknown>(options: ConfigWatchOptions = {}): AsyncIterable<ConfigChange<T>> {
    const query = { env: options.env, prefix: options.prefix };
    return resumingWatch<ConfigChange<T>>(
      this.#client,
      '/v1/config/watch',
      options,
      query,
      async () =>
        (
          await this.#client.request<ConfigPage>('GET', '/v1/config', {
            query: { ...query, limit: 1 },
            signal: options.signal,
          })
        ).revision,
    );
  }
}

/**
 * Follows a watch route (config or services), reconnecting with backoff after the last
 * revision seen. A `resync` moves the position only once complete (`more` false).
 */
export async function* resumingWatch<E extends { type: string; revision: number }>(
  client: Orchestra,
  path: string,
  options: {
    afterRevision?: number;
    signal?: AbortSignal;
    maxReconnects?: number;
    onConnect?: () => void;
  },
  query: Record<string, string | number | undefined>,
  /** The current revision: where "from now on" starts, fixed before the first connection. */
  now: () => Promise<number>,
): AsyncIterable<E> {
  // Fixed before connecting, so that a connection dropped before any event resumes from
  // the same point instead of from a later "now".
  let after = options.afterRevision ?? (await now());
  yield* client.resume<E>({
    what: `the watch at ${path}`,
    signal: options.signal,
    maxReconnects: options.maxReconnects ?? DEFAULT_MAX_RECONNECTS,
    // A watch may stay quiet for long: a connection that opens is progress enough.
    openIsProgress: true,
    position: () => `revision ${after}`,
    connect: (onOpen) =>
      watchOnce<E>(
        client,
        path,
        { ...query, from_revision: after },
        options,
        (revision) => {
          after = revision;
        },
        (status) => {
          onOpen(status);
          options.onConnect?.();
        },
      ),
  });
}

/**
 * One connection to a watch. Several changes can share a revision (a lease ending takes
 * all its keys): the position moves past a revision only once a later one arrives, so that
 * a drop in the middle of one resends all of it. After a reconnection the changes of the
 * last revision seen may come again; none is missed.
 */
async function* watchOnce<E extends { type: string; revision: number }>(
  client: Orchestra,
  path: string,
  query: Record<string, string | number | undefined>,
  options: { signal?: AbortSignal },
  moveTo: (revision: number) => void,
  onOpen: (status: number) => void,
): AsyncIterable<E> {
  let current: number | undefined;
  for await (const raw of client.streamJson(path, query, { signal: options.signal, onOpen })) {
    const event = raw as E & { more?: boolean };
    if (event.type === 'resync') {
      current = undefined;
      if (event.more !== true) moveTo(event.revision);
    } else {
      if (current !== undefined && event.revision > current) moveTo(current);
      current = event.revision;
    }
    yield event;
  }
}
