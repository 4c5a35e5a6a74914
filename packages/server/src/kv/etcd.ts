import type { EventEmitter } from 'node:events';
import {
  BrokenCircuitError,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
  IsolatedCircuitError,
  noop,
} from 'cockatiel';
import {
  Etcd3,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type IKeyValue,
  type IWatchResponse,
  isRecoverableError,
  type Watcher,
} from 'etcd3';
import { scanFolders } from './folders.ts';
import {
  type KvChange,
  type KvChangeBatch,
  KvCompactedError,
  type KvCompare,
  type KvEntry,
  type KvFolderPage,
  type KvFoldersQuery,
  type KvLease,
  KvLeaseNotFoundError,
  type KvOp,
  type KvPage,
  type KvRangeQuery,
  type KvStore,
  type KvTxn,
  type KvTxnResult,
  KvUnavailableError,
} from './kv.ts';
import { Wakeup } from './wakeup.ts';

/** Every unary call gives up after this; a dead etcd then answers fast with 503. */
const CALL_TIMEOUT_MS = 5_000;
const WATCH_RETRY_MIN_MS = 200;
const WATCH_RETRY_MAX_MS = 2_000;

export interface EtcdKvOptions {
  endpoints: string[];
  /** Every Orchestra key lives under this prefix (default `/orchestra/`). */
  prefix: string;
  /** Batches a tenant's shared watch keeps for watchers that join it late (default 1,024). */
  feedRing?: number;
  /** Unread batches after which a watcher leaves the shared watch (default 10,000). */
  feedMaxBehind?: number;
}

function unavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return (
    isRecoverableError(err) ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError ||
    // The breaker opened after repeated failures: etcd is down as far as we can tell.
    err instanceof BrokenCircuitError ||
    err instanceof IsolatedCircuitError
  );
}

const isCompaction = (err: unknown) =>
  err instanceof Error && /compacted|compact_revision/i.test(err.message);

/** The smallest key after every key that starts with `prefix`, byte-wise (etcd's range end). */
function rangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] !== 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * The KV on etcd v3. A tenant's keys live under `<prefix><tenant>/k/`; each lease it owns
 * has a marker key `<prefix><tenant>/l/<id>` bound to the lease, which is how a tenant
 * proves a lease is its own. Revisions are etcd's: shared by all tenants, so they skip.
 */
export class EtcdKv implements KvStore {
  readonly backend = 'etcd' as const;
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #feeds = new Map<string, WatchFeed>();
  /** etcd watches open now, so that close can cancel each one. */
  readonly #watchers = new Set<Watcher>();
  /** Watches asked of etcd and not yet created (`close` waits for them). */
  #creating = 0;
  readonly #watchManager: HardenedWatchManager | undefined;
  readonly #closing = new AbortController();
  readonly #feedLimits: FeedLimits;

  constructor(options: EtcdKvOptions) {
    this.#prefix = options.prefix;
    this.#feedLimits = {
      ring: options.feedRing ?? FEED_RING,
      maxBehind: options.feedMaxBehind ?? FEED_MAX_BEHIND,
    };
    this.#client = new Etcd3({
      hosts: options.endpoints,
      dialTimeout: 2_000,
      defaultCallOptions: (context) =>
        context.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS },
      faultHandling: {
        // No blind retries: a transaction retried after a lost answer could apply twice.
        global: noop,
        // A host that keeps failing is skipped for a second, then tried again.
        host: () =>
          circuitBreaker(handleWhen(isRecoverableError), {
            halfOpenAfter: 1_000,
            breaker: new ConsecutiveBreaker(3),
          }),
      },
    });
    this.#watchManager = hardenWatchManager(this.#client);
  }

  #keyPrefix(tenantId: string): string {
    return `${this.#prefix}${tenantId}/k/`;
  }

  #leaseKey(tenantId: string, leaseId: string): string {
    return `${this.#prefix}${tenantId}/l/${leaseId}`;
  }

  async #call<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (unavailable(err)) throw new KvUnavailableError('etcd is unavailable', { cause: err });
      throw err;
    }
  }

  #entryOf(tenantId: string, kv: IKeyValue): KvEntry {
    const lease = kv.lease && kv.lease !== '0' ? { lease: kv.lease } : {};
    return {
      key: kv.key.toString().slice(this.#keyPrefix(tenantId).length),
      value: kv.value.toString(),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
      version: Number(kv.version),
      ...lease,
    };
  }

  async ping(timeoutMs: number): Promise<void> {
    await this.#call(() =>
      this.#client.kv.range(
        { key: Buffer.from(`${this.#prefix}ping`), limit: 1, keys_only: true },
        { deadline: Date.now() + timeoutMs },
      ),
    );
  }

  async close(): Promise<void> {
    this.#closing.abort();
    for (const feed of this.#feeds.values()) feed.close();
    // Every etcd watch is cancelled before the client closes: the client would otherwise
    // keep re-establishing the watch stream of a closed connection, on a timer, for ever.
    // Watches still being created count too: one that arrives after the client closed would
    // never be cancelled.
    const deadline = Date.now() + 2_000;
    while ((this.#watchers.size > 0 || this.#creating > 0) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const watcher of this.#watchers) void watcher.cancel().catch(() => {});
    this.#watchManager?.forget();
    this.#client.close();
  }

  async get(tenantId: string, key: string): Promise<KvEntry | undefined> {
    const res = await this.#call(() =>
      this.#client.kv.range({ key: Buffer.from(this.#keyPrefix(tenantId) + key) }),
    );
    const kv = res.kvs[0];
    return kv && this.#entryOf(tenantId, kv);
  }

  async revision(_tenantId: string): Promise<number> {
    const res = await this.#call(() =>
      this.#client.kv.range({ key: Buffer.from(`${this.#prefix}rev`), limit: 1, keys_only: true }),
    );
    return Number(res.header.revision);
  }

  async range(tenantId: string, query: KvRangeQuery): Promise<KvPage> {
    const full = Buffer.from(this.#keyPrefix(tenantId) + query.prefix);
    const start =
      query.after !== undefined
        ? Buffer.concat([Buffer.from(this.#keyPrefix(tenantId) + query.after), Buffer.from([0])])
        : full;
    try {
      const res = await this.#call(() =>
        this.#client.kv.range({
          key: Buffer.compare(start, full) > 0 ? start : full,
          range_end: rangeEnd(full),
          limit: query.limit,
          ...(query.revision !== undefined ? { revision: query.revision } : {}),
        }),
      );
      return {
        entries: res.kvs.map((kv) => this.#entryOf(tenantId, kv)),
        revision: query.revision ?? Number(res.header.revision),
        more: res.more,
      };
    } catch (err) {
      if (query.revision !== undefined && isCompaction(err))
        throw new KvCompactedError(query.revision, undefined);
      throw err;
    }
  }

  async count(tenantId: string, prefix: string): Promise<number> {
    const key = Buffer.from(this.#keyPrefix(tenantId) + prefix);
    const res = await this.#call(() =>
      this.#client.kv.range({ key, range_end: rangeEnd(key), count_only: true }),
    );
    return Number(res.count);
  }

  async folders(tenantId: string, query: KvFoldersQuery): Promise<KvFolderPage> {
    const tenantPrefix = this.#keyPrefix(tenantId);
    const end = rangeEnd(Buffer.from(tenantPrefix + query.prefix));
    return scanFolders(query, {
      firstFolderKey: async (from) => {
        let start = Buffer.from(tenantPrefix + from);
        for (;;) {
          const res = await this.#call(() =>
            this.#client.kv.range({ key: start, range_end: end, limit: 1, keys_only: true }),
          );
          const found = res.kvs[0];
          if (found === undefined) return undefined;
          const key = found.key.toString().slice(tenantPrefix.length);
          if (key.slice(query.prefix.length).includes('/')) return key;
          // A key in no folder: etcd cannot filter it out, so step over it.
          start = Buffer.concat([found.key, Buffer.from([0])]);
        }
      },
      count: (folder) => this.count(tenantId, folder),
    });
  }

  async txn(tenantId: string, txn: KvTxn): Promise<KvTxnResult> {
    const keys = new Set<string>();
    for (const op of txn.ops) {
      if (keys.has(op.key)) throw new Error(`key ${op.key} is changed twice in one transaction`);
      keys.add(op.key);
    }
    for (const op of txn.ops) {
      if (op.type === 'put' && op.lease !== undefined) {
        const marker = await this.#call(() =>
          this.#client.kv.range({
            key: Buffer.from(this.#leaseKey(tenantId, op.lease as string)),
            keys_only: true,
          }),
        );
        if (marker.kvs.length === 0) throw new KvLeaseNotFoundError(op.lease);
      }
    }
    const prefix = this.#keyPrefix(tenantId);
    try {
      const res = await this.#call(() =>
        this.#client.kv.txn({
          compare: txn.compare.map((c: KvCompare) =>
            'version' in c
              ? {
                  key: Buffer.from(prefix + c.key),
                  target: 'Version',
                  result: 'Equal',
                  version: String(c.version),
                }
              : {
                  key: Buffer.from(prefix + c.key),
                  target: 'Mod',
                  result: 'Equal',
                  mod_revision: String(c.modRevision),
                },
          ),
          success: txn.ops.map((op: KvOp) =>
            op.type === 'put'
              ? {
                  request_put: {
                    key: Buffer.from(prefix + op.key),
                    value: Buffer.from(op.value),
                    ...(op.lease !== undefined ? { lease: op.lease } : {}),
                  },
                }
              : { request_delete_range: { key: Buffer.from(prefix + op.key) } },
          ),
          failure: [],
        }),
      );
      return { succeeded: res.succeeded, revision: Number(res.header.revision) };
    } catch (err) {
      const lease = txn.ops.find((op) => op.type === 'put' && op.lease !== undefined);
      if (
        lease?.type === 'put' &&
        lease.lease !== undefined &&
        /lease not found/i.test(String(err))
      )
        throw new KvLeaseNotFoundError(lease.lease);
      throw err;
    }
  }

  async compact(_tenantId: string, revision: number): Promise<void> {
    try {
      await this.#call(() =>
        this.#client.kv.compact({ revision: String(revision), physical: true }),
      );
    } catch (err) {
      if (!isCompaction(err)) throw err; // compacted already: nothing to do
    }
  }

  /**
   * Watches share one etcd watch per tenant (a feed), so that a thousand watchers cost etcd
   * and this node one stream, not a thousand. A watch joins the feed when the feed has
   * everything from its start revision on; otherwise (a resume from further back, a feed
   * that is reconnecting, a watcher that fell too far behind) it follows etcd on its own.
   */
  async *watch(
    tenantId: string,
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncIterable<KvChangeBatch> {
    let next = Math.max(1, fromRevision);
    // etcd refuses a compacted start; a feed that saw those revisions must not hide that.
    if (await this.#compactedAt(next)) throw new KvCompactedError(next, undefined);
    let feed = this.#feeds.get(tenantId);
    if (feed === undefined || feed.over) {
      feed = new WatchFeed(next, this.#feedLimits, (start, feedSignal, connected) =>
        this.#watchAlone(tenantId, '', start, feedSignal, { failFast: true, connected }),
      );
      this.#feeds.set(tenantId, feed);
      const started = feed;
      feed.ended.then(() => {
        if (this.#feeds.get(tenantId) === started) this.#feeds.delete(tenantId);
      });
    }
    const sub = feed.join(next);
    let failFast = true;
    if (sub !== undefined) {
      const onAbort = () => sub.wake();
      signal.addEventListener('abort', onAbort);
      try {
        for (;;) {
          const batch = sub.live.shift();
          if (batch === undefined) {
            if (signal.aborted) return;
            if (sub.detached) break;
            await sub.sleep();
            continue;
          }
          if (batch.revision < next) continue;
          next = batch.revision + 1;
          const mine = batch.changes.filter((c) => c.key.startsWith(prefix));
          if (mine.length > 0) yield { revision: batch.revision, changes: mine };
        }
        // Detached: the feed ended or this watcher fell behind. A feed that never reached
        // etcd leaves the caller to learn that etcd is down, as an unshared watch would.
        failFast = !sub.connectedOnce;
      } finally {
        signal.removeEventListener('abort', onAbort);
        feed.leave(sub);
      }
    }
    yield* this.#watchAlone(tenantId, prefix, next, signal, { failFast });
  }

  /**
   * Follows etcd's watch, resuming after the last revision it delivered whenever the stream
   * breaks (the client library would resume from the last revision it was *told about*,
   * which may be past events not yet sent). With `failFast`, an etcd that cannot be reached
   * at the start is an error; otherwise the watch keeps trying.
   */
  async *#watchAlone(
    tenantId: string,
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
    options: { failFast: boolean; connected?: (up: boolean) => void },
  ): AsyncIterable<KvChangeBatch> {
    signal = AbortSignal.any([signal, this.#closing.signal]);
    const keyPrefix = this.#keyPrefix(tenantId);
    let next = Math.max(1, fromRevision);
    let retryMs = WATCH_RETRY_MIN_MS;
    let first = options.failFast;
    while (!signal.aborted) {
      const queue: (KvChangeBatch | { failed: unknown })[] = [];
      let wake: (() => void) | undefined;
      const push = (item: KvChangeBatch | { failed: unknown }) => {
        queue.push(item);
        const w = wake;
        wake = undefined;
        w?.();
      };
      const onAbort = () => push({ failed: undefined });
      signal.addEventListener('abort', onAbort);
      let watcher: Watcher | undefined;
      try {
        // Asked first: etcd's refusal of a compacted start can reach the watcher before
        // its listeners are attached, and would then be lost.
        if (await this.#compactedAt(next)) throw new KvCompactedError(next, undefined);
        this.#creating++;
        try {
          watcher = await this.#client
            .watch()
            .prefix(keyPrefix + prefix)
            .startRevision(String(next))
            .withPreviousKV()
            .create();
        } catch (err) {
          this.#creating--;
          if (await this.#compactedAt(next)) throw new KvCompactedError(next, undefined);
          // The first attempt answers the caller: etcd is down. Later ones keep trying.
          if (first) throw new KvUnavailableError('etcd is unavailable', { cause: err });
          await sleep(retryMs, signal);
          retryMs = Math.min(WATCH_RETRY_MAX_MS, retryMs * 2);
          continue;
        }
        this.#watchers.add(watcher);
        this.#creating--;
        // Closed while etcd created it: the finally below cancels it.
        if (signal.aborted) return;
        first = false;
        options.connected?.(true);
        watcher.on('data', (res: IWatchResponse) => {
          for (const batch of this.#batchesOf(tenantId, res)) push(batch);
        });
        watcher.on('disconnected', (err: unknown) =>
          push({ failed: err ?? new Error('disconnected') }),
        );
        watcher.on('error', (err: unknown) => push({ failed: err }));
        for (;;) {
          const item = queue.shift();
          if (item === undefined) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            continue;
          }
          if ('failed' in item) {
            if (signal.aborted) return;
            break;
          }
          if (item.revision < next) continue;
          next = item.revision + 1;
          retryMs = WATCH_RETRY_MIN_MS;
          yield item;
        }
        // The stream broke: start a fresh watch from the next revision after a pause.
        options.connected?.(false);
        if (await this.#compactedAt(next).catch(() => false))
          throw new KvCompactedError(next, undefined);
        await sleep(retryMs, signal);
        retryMs = Math.min(WATCH_RETRY_MAX_MS, retryMs * 2);
      } finally {
        signal.removeEventListener('abort', onAbort);
        if (watcher !== undefined) {
          watcher.removeAllListeners();
          watcher.on('error', () => {});
          await watcher.cancel().catch(() => {});
          this.#watchers.delete(watcher);
        }
      }
    }
  }

  /** True when etcd says `revision` is compacted; false when it is not or etcd cannot say. */
  async #compactedAt(revision: number): Promise<boolean> {
    try {
      await this.#client.kv.range({
        key: Buffer.from(`${this.#prefix}rev`),
        limit: 1,
        keys_only: true,
        revision: String(revision),
      });
      return false;
    } catch (err) {
      return isCompaction(err);
    }
  }

  #batchesOf(tenantId: string, res: IWatchResponse): KvChangeBatch[] {
    const batches: KvChangeBatch[] = [];
    for (const event of res.events) {
      const entry = this.#entryOf(tenantId, event.kv);
      const revision = entry.modRevision;
      const change: KvChange = {
        type: event.type === 'Put' ? 'put' : 'delete',
        key: entry.key,
        revision,
        ...(event.type === 'Put' ? { value: entry.value, version: entry.version } : {}),
        ...(event.prev_kv ? { prevValue: event.prev_kv.value.toString() } : {}),
      };
      const last = batches[batches.length - 1];
      if (last !== undefined && last.revision === revision) last.changes.push(change);
      else batches.push({ revision, changes: [change] });
    }
    return batches;
  }

  // Leases.

  async grantLease(tenantId: string, ttlMs: number): Promise<KvLease> {
    const ttl = Math.max(1, Math.ceil(ttlMs / 1000));
    const granted = await this.#call(() => this.#client.leaseClient.leaseGrant({ TTL: ttl }));
    const id = String(granted.ID);
    await this.#call(() =>
      this.#client.kv.put({
        key: Buffer.from(this.#leaseKey(tenantId, id)),
        value: Buffer.from(String(granted.TTL)),
        lease: id,
      }),
    );
    const grantedMs = Number(granted.TTL) * 1000;
    return { id, ttlMs: grantedMs, remainingMs: grantedMs };
  }

  async #owns(tenantId: string, leaseId: string): Promise<boolean> {
    if (!/^[0-9]+$/.test(leaseId)) return false;
    const marker = await this.#call(() =>
      this.#client.kv.range({
        key: Buffer.from(this.#leaseKey(tenantId, leaseId)),
        keys_only: true,
      }),
    );
    return marker.kvs.length > 0;
  }

  async keepAlive(tenantId: string, leaseId: string): Promise<KvLease | undefined> {
    if (!(await this.#owns(tenantId, leaseId))) return undefined;
    const res = await this.#call(async () => {
      const stream = await this.#client.leaseClient.leaseKeepAlive();
      try {
        const answer = new Promise<{ TTL: string }>((resolve, reject) => {
          stream.on('data', resolve);
          stream.on('error', reject);
          setTimeout(
            () => reject(new GRPCDeadlineExceededError('lease keep-alive timed out')),
            CALL_TIMEOUT_MS,
          ).unref();
        });
        stream.write({ ID: leaseId });
        return await answer;
      } finally {
        stream.end();
      }
    });
    const ttlMs = Number(res.TTL) * 1000;
    if (ttlMs <= 0) return undefined;
    return { id: leaseId, ttlMs, remainingMs: ttlMs };
  }

  async lease(tenantId: string, leaseId: string): Promise<KvLease | undefined> {
    if (!(await this.#owns(tenantId, leaseId))) return undefined;
    const res = await this.#call(() => this.#client.leaseClient.leaseTimeToLive({ ID: leaseId }));
    const remaining = Number(res.TTL);
    if (remaining <= 0) return undefined;
    return { id: leaseId, ttlMs: Number(res.grantedTTL) * 1000, remainingMs: remaining * 1000 };
  }

  async revokeLease(tenantId: string, leaseId: string): Promise<boolean> {
    if (!(await this.#owns(tenantId, leaseId))) return false;
    try {
      await this.#call(() => this.#client.leaseClient.leaseRevoke({ ID: leaseId }));
      return true;
    } catch (err) {
      if (/lease not found/i.test(String(err))) return false;
      throw err;
    }
  }
}

/** Batches a feed keeps for watchers that join it at an earlier revision than its newest. */
const FEED_RING = 1_024;
/** A watcher with this many batches unread leaves the feed and catches up on its own. */
const FEED_MAX_BEHIND = 10_000;

interface FeedLimits {
  ring: number;
  maxBehind: number;
}

type FeedSource = (
  start: number,
  signal: AbortSignal,
  connected: (up: boolean) => void,
) => AsyncIterable<KvChangeBatch>;

/** One tenant's shared watch: the batches it has seen recently, and the watchers it feeds. */
class WatchFeed {
  readonly ended: Promise<void>;
  readonly #subs = new Set<FeedSub>();
  readonly #ring: KvChangeBatch[] = [];
  readonly #abort = new AbortController();
  /** Every change from this revision on is in the ring or still to come. */
  #complete: number;
  #up = false;
  #connectedOnce = false;
  #over = false;
  readonly #limits: FeedLimits;

  constructor(start: number, limits: FeedLimits, source: FeedSource) {
    this.#complete = start;
    this.#limits = limits;
    this.ended = this.#run(source(start, this.#abort.signal, (up) => this.#connected(up)));
  }

  /** True once the feed has stopped, or is stopping: nobody joins it any more. */
  get over(): boolean {
    return this.#over;
  }

  /** A subscriber from `from` on, fed what the ring holds first; undefined if it cannot be. */
  join(from: number): FeedSub | undefined {
    if (this.#over || from < this.#complete) return undefined;
    // A feed that is reconnecting cannot say whether etcd is there: the watcher asks itself.
    if (this.#connectedOnce && !this.#up) return undefined;
    const sub = new FeedSub(this.#connectedOnce);
    for (const batch of this.#ring) if (batch.revision >= from) sub.live.push(batch);
    this.#subs.add(sub);
    return sub;
  }

  leave(sub: FeedSub): void {
    this.#subs.delete(sub);
    if (this.#subs.size === 0) this.close();
  }

  close(): void {
    this.#over = true;
    this.#abort.abort();
  }

  #connected(up: boolean): void {
    this.#up = up;
    if (!up) return;
    this.#connectedOnce = true;
    for (const sub of this.#subs) sub.connectedOnce = true;
  }

  async #run(batches: AsyncIterable<KvChangeBatch>): Promise<void> {
    try {
      for await (const batch of batches) {
        this.#ring.push(batch);
        if (this.#ring.length > this.#limits.ring) {
          const dropped = this.#ring.shift();
          if (dropped !== undefined) this.#complete = dropped.revision + 1;
        }
        for (const sub of this.#subs) {
          if (sub.live.length >= this.#limits.maxBehind) {
            this.#subs.delete(sub);
            sub.detach();
          } else sub.offer(batch);
        }
      }
    } catch {
      // Compacted under the feed, or etcd down from the start: each watcher finds out
      // for itself, from its own revision.
    } finally {
      this.#over = true;
      for (const sub of this.#subs) sub.detach();
      this.#subs.clear();
    }
  }
}

class FeedSub extends Wakeup {
  readonly live: KvChangeBatch[] = [];
  detached = false;
  connectedOnce: boolean;

  constructor(connectedOnce: boolean) {
    super();
    this.connectedOnce = connectedOnce;
  }

  offer(batch: KvChangeBatch): void {
    this.live.push(batch);
    this.wake();
  }

  detach(): void {
    this.detached = true;
    this.wake();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

interface HardenedWatchManager {
  /** Drops every watcher, so that nothing re-establishes the stream of a closed client. */
  forget(): void;
}

/**
 * etcd3 1.1 has one watch stream per client, run by an internal WatchManager, with two
 * behaviours a long-running server cannot have. (1) A response for a watch it no longer
 * holds (etcd keeps sending a cancelled watch's events until it handles the cancel, and a
 * cancel can race a reconnect) is thrown from the stream's data handler: an unhandled
 * rejection, which ends the process. (2) After the client is closed, a broken stream is
 * re-established on a timer for as long as a watcher is attached, which keeps the process
 * from exiting. Both are fixed on the manager instance; if a later etcd3 changes its shape,
 * nothing is patched and the behaviour is the library's own.
 */
function hardenWatchManager(client: Etcd3): HardenedWatchManager | undefined {
  const manager = (client as unknown as { watchManager?: unknown }).watchManager as
    | {
        state: number;
        stream?: { cancel(): void };
        queue?: { destroy(): void };
        watchers: EventEmitter[];
        expectedClosers: Set<EventEmitter>;
        handleResponse: (res: { watch_id: string }) => void;
      }
    | undefined;
  if (
    manager === undefined ||
    !Array.isArray(manager.watchers) ||
    !(manager.expectedClosers instanceof Set) ||
    typeof manager.handleResponse !== 'function' ||
    typeof manager.state !== 'number'
  ) {
    return undefined;
  }
  const handleResponse = manager.handleResponse.bind(manager);
  manager.handleResponse = (res) => {
    if (!manager.watchers.some((w) => (w as EventEmitter & { id: unknown }).id === res.watch_id))
      return;
    handleResponse(res);
  };
  return {
    forget() {
      const watchers = manager.watchers;
      const closing = [...manager.expectedClosers];
      manager.watchers = [];
      manager.expectedClosers.clear();
      // The open stream holds the connection (and the process) until it is cancelled.
      if (manager.state === 2) {
        manager.queue?.destroy();
        manager.stream?.cancel();
      }
      manager.state = 0; // idle: a pending reconnect finds no watcher and stops
      // Whoever waits on a cancel hears that it is over.
      for (const w of closing) w.emit('end');
      for (const w of watchers) w.emit('disconnected', new Error('the etcd client closed'));
    },
  };
}
