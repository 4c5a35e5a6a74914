import { Backoff, sleep } from './backoff.ts';
import { Orchestra, type OrchestraOptions, restTransport } from './client.ts';
import type { ConfigChange, ConfigItem } from './config-api.ts';
import { isTransient, type Transport } from './transport.ts';

export interface ConfigClientOptions
  extends Pick<OrchestraOptions, 'url' | 'apiKey' | 'fetch' | 'headers' | 'timeoutMs'> {
  /**
   * Backoff between attempts to reach the center again, while the values are served from
   * memory or the snapshot: half a step to a step, from `initialDelayMs` doubling up to
   * `maxDelayMs`. Default 2,000 and 2,000 (every 1 to 2 s, not growing): catching up soon
   * matters more than sparing the center.
   */
  reconnect?: OrchestraOptions['reconnect'];
  /**
   * Called when the client reaches the center and follows it (`connected`), loses it
   * (`reconnecting`, or `connecting` when it never reached it, with `retryInMs`), and on
   * `close` (`closed`). While not `connected`, `stale` is true.
   */
  onStatus?: OrchestraOptions['onStatus'];
  /** The environment to follow; the server's default when omitted. */
  env?: string;
  /** Only keys under this prefix are loaded and watched; default all. */
  prefix?: string;
  /**
   * Node only: a file the client keeps a copy of the configuration in. It is written after
   * the first load and after changes, and read at start when the center cannot be reached.
   */
  snapshotFile?: string;
  /**
   * Called when the client loses or regains the center (`stale` changes).
   * @deprecated Since 0.2: use `onStatus`; `stale` is `status.state !== 'connected'`. Goes
   * in 0.3.
   */
  onStaleChange?: (stale: boolean) => void;
  /** Called for errors it keeps going after (a failed snapshot write, a retried connection). */
  onError?: (error: unknown) => void;
}

/** A config change as a `watch` handler gets it: a put or a delete of one key. */
export interface ConfigUpdate<T = unknown> {
  type: 'put' | 'delete';
  key: string;
  value: T | undefined;
  previous: T | undefined;
  revision: number;
}

interface Cached {
  value: unknown;
  version: number;
  revision: number;
}

interface SnapshotFile {
  format: 'orchestra-config-snapshot/1';
  env: string | null;
  prefix: string;
  revision: number;
  saved_at: string;
  items: Record<string, Cached>;
}

const SNAPSHOT_DEBOUNCE_MS = 200;
const RECONNECT_DEFAULTS = { initialDelayMs: 2_000, maxDelayMs: 2_000 };

/**
 * Configuration that keeps working when the config center does not: on `start` it reads
 * every key under its prefix (and writes a snapshot file), then follows changes; reads are
 * served from memory. When the center cannot be reached it serves the last snapshot,
 * marked `stale`, and keeps retrying; once back, it resumes the watch after the last
 * revision it applied, or takes the server's full resync when that revision is gone.
 */
export class ConfigClient {
  /** The REST client this one is built on. */
  readonly api: Orchestra;
  readonly #options: ConfigClientOptions;
  /** Its connection state is the center's as this client follows it, not per request. */
  readonly #transport: Transport;
  readonly #prefix: string;
  #values = new Map<string, Cached>();
  /** The newest revision applied, from the watch or from this client's own writes. */
  #revision = 0;
  /** How far the watch (or a load) has brought the client: where a reconnection resumes. */
  #followed = 0;
  #stale = true;
  #loaded = false;
  readonly #handlers = new Set<{ prefix: string; handler: (update: ConfigUpdate) => void }>();
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #saveTimer: ReturnType<typeof setTimeout> | undefined;
  #saving: Promise<void> = Promise.resolve();
  /** Pages of a resync in progress. */
  #resync: Map<string, Cached> | undefined;

  constructor(options: ConfigClientOptions) {
    this.#options = options;
    this.#prefix = (options.prefix ?? '').replace(/^\/+/, '');
    this.#transport = restTransport(options, { statusFromRequests: false });
    this.api = new Orchestra({ url: options.url, batchSubmits: false }, this.#transport);
  }

  /** True while the values come from a snapshot or the center cannot be reached. */
  get stale(): boolean {
    return this.#stale;
  }

  /** The revision of the newest change applied. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Loads the configuration: from the center, or, when it cannot be reached, from the
   * snapshot file (then `stale` is true and the client keeps trying). Rejects only when
   * neither works, or with a non-transient error of the center (a bad key, say).
   */
  async start(): Promise<void> {
    try {
      await this.#load();
    } catch (err) {
      if (!isTransient(err) || !(await this.#readSnapshot())) throw err;
      this.#options.onError?.(err);
    }
    this.#loaded = true;
    this.#loop = this.#follow();
  }

  /** The value of `key` (relative to nothing: the full key), or `fallback`. */
  get<T = unknown>(key: string, fallback?: T): T | undefined {
    const cached = this.#values.get(key.replace(/^\/+/, ''));
    return cached === undefined ? fallback : (cached.value as T);
  }

  /** Every key and value the client holds, in key order. */
  entries(): [string, unknown][] {
    return [...this.#values.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [k, v.value]);
  }

  /** Writes through the center (never only locally); the watch then brings it back. */
  async set<T = unknown>(
    key: string,
    value: T,
    options: { reason?: string; ifVersion?: number } = {},
  ): Promise<ConfigItem<T>> {
    const item = await this.api.config.set(key, value, {
      ...(this.#options.env !== undefined ? { env: this.#options.env } : {}),
      ...options,
    });
    // Seen at once by this client; the watch brings it again (and skips it) in order.
    this.#apply(
      {
        type: 'put',
        key: item.key,
        value: item.value,
        prev_value: null,
        version: item.version,
        revision: item.revision,
      },
      false,
    );
    return item;
  }

  /** Calls `handler` for each change of a key under `prefix`; returns the unsubscribe. */
  watch<T = unknown>(prefix: string, handler: (update: ConfigUpdate<T>) => void): () => void {
    const entry = {
      prefix: prefix.replace(/^\/+/, ''),
      handler: handler as (u: ConfigUpdate) => void,
    };
    this.#handlers.add(entry);
    return () => this.#handlers.delete(entry);
  }

  /** Stops following the center, and writes the snapshot file if a write is pending. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#loop?.catch(() => {});
    this.#transport.close();
    if (this.#saveTimer !== undefined) {
      clearTimeout(this.#saveTimer);
      this.#saveTimer = undefined;
      await this.#writeSnapshot();
    }
    await this.#saving;
  }

  async #load(): Promise<void> {
    const snapshot = await this.api.config.snapshot({
      ...(this.#options.env !== undefined ? { env: this.#options.env } : {}),
      prefix: this.#prefix,
      signal: this.#stop.signal,
    });
    const next = new Map<string, Cached>();
    for (const item of snapshot.items)
      next.set(item.key, { value: item.value, version: item.version, revision: item.revision });
    this.#replace(next, snapshot.revision);
    this.#setStale(false);
    await this.#writeSnapshot();
  }

  /** Follows the center until closed; reconnections and resyncs are handled inside. */
  async #follow(): Promise<void> {
    const signal = this.#stop.signal;
    const backoff = new Backoff(this.#options.reconnect, {
      ...RECONNECT_DEFAULTS,
      jitter: 'equal',
    });
    for (;;) {
      if (signal.aborted) return;
      try {
        if (this.#followed === 0 && this.#stale) await this.#load(); // never reached the center yet
        const changes = this.api.config.watch({
          ...(this.#options.env !== undefined ? { env: this.#options.env } : {}),
          prefix: this.#prefix,
          afterRevision: this.#followed,
          signal,
          maxReconnects: 0,
          onConnect: () => {
            backoff.reset();
            this.#setStale(false);
          },
        });
        for await (const change of changes) this.#apply(change);
      } catch (err) {
        if (signal.aborted) return;
        this.#setStale(true);
        if (!isTransient(err)) this.#options.onError?.(err);
        const delay = backoff.fail();
        this.#transport.reportLost({
          retryInMs: delay,
          ...(err instanceof Error ? { error: err } : {}),
        });
        await sleep(delay, signal).catch(() => {});
      }
    }
  }

  #apply(change: ConfigChange, fromWatch = true): void {
    // A reconnection resumes just before the newest revision seen: the changes of one
    // revision may be cut off in the middle, and those already applied are skipped below.
    // A resync counts only once complete (in #replace).
    if (fromWatch && change.type !== 'resync')
      this.#followed = Math.max(this.#followed, change.revision - 1);
    if (change.type === 'resync') {
      this.#resync ??= new Map();
      for (const item of change.items)
        this.#resync.set(item.key, {
          value: item.value,
          version: item.version,
          revision: item.revision,
        });
      if (!change.more) {
        const next = this.#resync;
        this.#resync = undefined;
        this.#replace(next, change.revision);
        this.#scheduleSave();
      }
      return;
    }
    const known = this.#values.get(change.key);
    if (known !== undefined && known.revision >= change.revision) return; // seen already
    if (change.type === 'put') {
      this.#values.set(change.key, {
        value: change.value,
        version: change.version,
        revision: change.revision,
      });
    } else {
      if (known === undefined) {
        this.#revision = Math.max(this.#revision, change.revision);
        return;
      }
      this.#values.delete(change.key);
    }
    this.#revision = Math.max(this.#revision, change.revision);
    this.#notify({
      type: change.type,
      key: change.key,
      value: change.type === 'put' ? change.value : undefined,
      previous: known?.value,
      revision: change.revision,
    });
    this.#scheduleSave();
  }

  /** Takes a whole new state, telling watchers what differs. */
  #replace(next: Map<string, Cached>, revision: number): void {
    const before = this.#values;
    this.#values = next;
    this.#revision = revision;
    this.#followed = revision;
    if (!this.#loaded) return;
    for (const [key, old] of before) {
      if (!next.has(key))
        this.#notify({ type: 'delete', key, value: undefined, previous: old.value, revision });
    }
    for (const [key, now] of next) {
      const old = before.get(key);
      if (old === undefined || old.version !== now.version)
        this.#notify({
          type: 'put',
          key,
          value: now.value,
          previous: old?.value,
          revision: now.revision,
        });
    }
  }

  #notify(update: ConfigUpdate): void {
    for (const { prefix, handler } of this.#handlers) {
      if (!update.key.startsWith(prefix)) continue;
      try {
        handler(update);
      } catch (err) {
        this.#options.onError?.(err);
      }
    }
  }

  #setStale(stale: boolean): void {
    if (!stale) this.#transport.report('connected');
    if (this.#stale === stale) return;
    this.#stale = stale;
    // Only changes after start are news: start's own first load is not "regaining" anything.
    if (this.#loaded) this.#options.onStaleChange?.(stale);
  }

  #scheduleSave(): void {
    if (this.#options.snapshotFile === undefined || this.#saveTimer !== undefined) return;
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = undefined;
      void this.#writeSnapshot();
    }, SNAPSHOT_DEBOUNCE_MS);
  }

  async #writeSnapshot(): Promise<void> {
    const file = this.#options.snapshotFile;
    if (file === undefined) return;
    const body: SnapshotFile = {
      format: 'orchestra-config-snapshot/1',
      env: this.#options.env ?? null,
      prefix: this.#prefix,
      revision: this.#revision,
      saved_at: new Date().toISOString(),
      items: Object.fromEntries(this.#values),
    };
    this.#saving = this.#saving.then(async () => {
      try {
        const fs = await import('node:fs/promises');
        // Written aside and renamed: a crash mid-write never leaves half a snapshot.
        const temp = `${file}.${process.pid}.tmp`;
        await fs.writeFile(temp, JSON.stringify(body), { mode: 0o600 });
        await fs.rename(temp, file);
      } catch (err) {
        this.#options.onError?.(err);
      }
    });
    await this.#saving;
  }

  /** Loads the snapshot file; false when there is none (or it is for another env or prefix). */
  async #readSnapshot(): Promise<boolean> {
    const file = this.#options.snapshotFile;
    if (file === undefined) return false;
    let parsed: SnapshotFile;
    try {
      const fs = await import('node:fs/promises');
      parsed = JSON.parse(await fs.readFile(file, 'utf8')) as SnapshotFile;
    } catch {
      return false;
    }
    if (
      parsed.format !== 'orchestra-config-snapshot/1' ||
      parsed.env !== (this.#options.env ?? null) ||
      parsed.prefix !== this.#prefix
    )
      return false;
    this.#replace(new Map(Object.entries(parsed.items)), parsed.revision);
    this.#stale = true;
    return true;
  }
}
