import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Bus } from '../bus/bus.ts';
import {
  type EventLog,
  type StreamAppend,
  type StreamEvent,
  streamSubject,
} from '../events/index.ts';
import { newId } from '../platform/ids.ts';
import { type Job, Jobs } from '../platform/jobs.ts';
import type { Database } from '../store/database.ts';
import type { RelationalStore } from '../store/store.ts';
import { scanFolders } from './folders.ts';
import {
  type KvChangeBatch,
  KvCompactedError,
  type KvEntry,
  type KvFolderPage,
  type KvFoldersQuery,
  type KvLease,
  KvLeaseNotFoundError,
  type KvPage,
  type KvRangeQuery,
  type KvStore,
  type KvTxn,
  type KvTxnResult,
} from './kv.ts';
import { Wakeup } from './wakeup.ts';

/** The change feed of a tenant's keys: one event per revision. */
export const kvStream = (tenantId: string) => `kv:${tenantId}`;
const TXN_EVENT = 'kv.txn';
const READ_PAGE = 500;
/** A watcher that got no wake-up checks the head this often (a lost bus message, another node). */
const HEAD_POLL_MS = 2_000;
/** Expired leases are looked for this often, so that keys go within TTL + this. */
const LEASE_SWEEP_MS = 250;
const LEASE_SWEEP_BATCH = 100;
/** Tenants written to are compacted down to their retained revisions this often. */
const COMPACT_INTERVAL_MS = 1_000;

/** What the feed stores of a change: enough to replay it and to rewind it. */
interface StoredChange {
  type: 'put' | 'delete';
  key: string;
  value?: string;
  version?: number;
  /** The entry before the change, when the key existed. */
  prev?: StoredEntry;
}

interface StoredEntry {
  value: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease?: string;
}

interface EntryRow {
  key: string;
  value: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease_id: string | null;
}

function entryOf(row: EntryRow): KvEntry {
  return {
    key: row.key,
    value: row.value,
    createRevision: Number(row.create_revision),
    modRevision: Number(row.mod_revision),
    version: Number(row.version),
    ...(row.lease_id !== null ? { lease: row.lease_id } : {}),
  };
}

function changesOf(event: StreamEvent): KvChangeBatch {
  const stored = (event.data as { changes: StoredChange[] }).changes;
  return {
    revision: event.offset,
    changes: stored.map((c) => ({
      type: c.type,
      key: c.key,
      ...(c.value !== undefined ? { value: c.value } : {}),
      ...(c.prev !== undefined ? { prevValue: c.prev.value } : {}),
      ...(c.version !== undefined ? { version: c.version } : {}),
      revision: event.offset,
    })),
  };
}

const inPrefix = (key: string, prefix: string) => key.startsWith(prefix);

/**
 * The least key above every key that starts with `prefix`, so that a prefix read is an
 * index range rather than a scan of the tenant's keys; undefined when there is none to
 * give (an empty prefix, or one ending in a character that cannot be incremented simply).
 */
function prefixEnd(prefix: string): string | undefined {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (Number.isNaN(last) || last >= 0xd7ff) return undefined;
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

/** A compare did not hold: the transaction is rolled back and reported as not succeeded. */
class CompareFailed extends Error {}

/**
 * The embedded KV: entries and leases in the relational store (SQLite by default, or
 * PostgreSQL), changes in the event log's `kv:<tenant>` stream whose offsets are the
 * tenant's revisions. Works across nodes on PostgreSQL: every write locks the tenant's
 * stream row first, lease expiry is claimed by a conditional delete, and watchers catch up
 * from the store when the bus loses a wake-up.
 */
export class EmbeddedKv implements KvStore {
  readonly backend = 'embedded' as const;
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #bus: Bus;
  readonly #log: Logger;
  readonly #taps = new Map<string, Tap>();
  readonly #ensured = new Set<string>();
  readonly #retainedRevisions: number;
  /** Tenants this node wrote to since the last compaction. */
  readonly #written = new Set<string>();
  readonly #jobs: Jobs;
  #sweeper: Job | undefined;
  #compactor: Job | undefined;
  #closed = false;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    bus: Bus;
    log: Logger;
    /** How many of a tenant's newest revisions a watch or a range can go back to. */
    retainedRevisions: number;
    jobs?: Jobs;
  }) {
    this.#jobs = deps.jobs ?? Jobs.detached();
    this.#retainedRevisions = deps.retainedRevisions;
    this.#store = deps.store;
    this.#events = deps.events;
    this.#bus = deps.bus;
    this.#log = deps.log;
  }

  /** Starts expiring leases and compacting history. */
  start(): void {
    this.#sweeper = this.#jobs.job({
      name: 'kv-lease-expiry',
      intervalMs: LEASE_SWEEP_MS,
      run: () => this.sweepLeases(),
      logFailure: (err) => this.#log.warn({ err }, 'could not expire KV leases'),
    });
    this.#compactor = this.#jobs.job({
      name: 'kv-compaction',
      intervalMs: COMPACT_INTERVAL_MS,
      run: () => this.#compactWritten(),
      logFailure: (err) => this.#log.warn({ err }, 'could not compact KV history'),
    });
    this.#sweeper.start();
    this.#compactor.start();
  }

  /** Drops the changes older than the retained revisions of every tenant written to. */
  async #compactWritten(): Promise<void> {
    const tenants = [...this.#written];
    this.#written.clear();
    for (const tenantId of tenants) {
      const head = await this.revision(tenantId);
      if (head > this.#retainedRevisions)
        await this.compact(tenantId, head - this.#retainedRevisions + 1);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([this.#sweeper?.stop(), this.#compactor?.stop()]);
    for (const tap of this.#taps.values()) tap.dispose();
    this.#taps.clear();
  }

  async ping(timeoutMs: number): Promise<void> {
    await this.#store.ping(timeoutMs);
  }

  async get(tenantId: string, key: string): Promise<KvEntry | undefined> {
    const row = await this.#store.db
      .selectFrom('kv_entries')
      .select(['key', 'value', 'create_revision', 'mod_revision', 'version', 'lease_id'])
      .where('tenant_id', '=', tenantId)
      .where('key', '=', key)
      .executeTakeFirst();
    return row && entryOf(row);
  }

  async count(tenantId: string, prefix: string): Promise<number> {
    const end = prefixEnd(prefix);
    const row = await this.#store.db
      .selectFrom('kv_entries')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .where('tenant_id', '=', tenantId)
      // An exact prefix in every collation, which a range on `key` is not; the range is
      // there for the index.
      .where('key', '>=', prefix)
      .$if(end !== undefined, (q) => q.where('key', '<', end as string))
      .where(sql<string>`substr(${sql.ref('key')}, 1, ${prefix.length})`, '=', prefix)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async folders(tenantId: string, query: KvFoldersQuery): Promise<KvFolderPage> {
    const { prefix } = query;
    const end = prefixEnd(prefix);
    return scanFolders(query, {
      firstFolderKey: async (from) => {
        const row = await this.#store.db
          .selectFrom('kv_entries')
          .select('key')
          .where('tenant_id', '=', tenantId)
          .where('key', '>=', from)
          .$if(end !== undefined, (q) => q.where('key', '<', end as string))
          .where(sql<string>`substr(${sql.ref('key')}, 1, ${prefix.length})`, '=', prefix)
          // Keys in no folder are passed over here, not read one by one.
          .where(sql<string>`substr(${sql.ref('key')}, ${prefix.length + 1})`, 'like', '%/%')
          .orderBy('key')
          .limit(1)
          .executeTakeFirst();
        return row?.key;
      },
      count: (folder) => this.count(tenantId, folder),
    });
  }

  async revision(tenantId: string): Promise<number> {
    return (await this.#events.head(tenantId, kvStream(tenantId))) ?? 0;
  }

  async range(tenantId: string, query: KvRangeQuery): Promise<KvPage> {
    const head = await this.revision(tenantId);
    const at = query.revision ?? head;
    if (at > head) return this.range(tenantId, { ...query, revision: undefined });
    // The state at `at` is today's entries with every later change undone: for each key
    // changed since, its first later change says what it was at `at`.
    const then = new Map<string, StoredEntry | undefined>();
    let cursor = at;
    for (;;) {
      const page = await this.#events.read(
        tenantId,
        kvStream(tenantId),
        cursor,
        READ_PAGE,
        {},
        this.#events.maxReadBytes,
      );
      if (page === undefined) break;
      if (page.gap) throw new KvCompactedError(at, page.gap.first_offset - 1);
      for (const event of page.events) {
        for (const change of (event.data as { changes: StoredChange[] }).changes) {
          if (inPrefix(change.key, query.prefix) && !then.has(change.key))
            then.set(change.key, change.prev);
        }
        cursor = event.offset;
      }
      if (page.events.length < READ_PAGE && !page.truncated) break;
    }
    let q = this.#store.db
      .selectFrom('kv_entries')
      .select(['key', 'value', 'create_revision', 'mod_revision', 'version', 'lease_id'])
      .where('tenant_id', '=', tenantId)
      .where('key', '>=', query.prefix);
    if (query.after !== undefined) q = q.where('key', '>', query.after);
    // Keys created since `at` drop out of the page: fetch enough to fill it regardless.
    const fetch = query.limit + then.size + 1;
    const rows = (await q.orderBy('key').limit(fetch).execute()).filter((r) =>
      inPrefix(r.key, query.prefix),
    );
    const merged = new Map<string, KvEntry>();
    for (const row of rows) if (!then.has(row.key)) merged.set(row.key, entryOf(row));
    for (const [key, prev] of then) {
      if (prev === undefined) continue;
      if (query.after !== undefined && key <= query.after) continue;
      merged.set(key, {
        key,
        value: prev.value,
        createRevision: prev.create_revision,
        modRevision: prev.mod_revision,
        version: prev.version,
        ...(prev.lease !== undefined ? { lease: prev.lease } : {}),
      });
    }
    // Rows beyond the fetched window sort after all of them: only keys up to the last
    // fetched one are certain to be complete.
    const last = rows.length === fetch ? rows[rows.length - 1]?.key : undefined;
    const sorted = [...merged.values()]
      .filter((e) => last === undefined || e.key <= last)
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return {
      entries: sorted.slice(0, query.limit),
      revision: at,
      more: sorted.length > query.limit || last !== undefined,
    };
  }

  async txn(tenantId: string, txn: KvTxn): Promise<KvTxnResult> {
    const keys = new Set<string>();
    for (const op of txn.ops) {
      if (keys.has(op.key)) throw new Error(`key ${op.key} is changed twice in one transaction`);
      keys.add(op.key);
    }
    await this.#ensure(tenantId);
    try {
      return await this.#events.transaction(async (trx, emit) => {
        await this.#events.lock(trx, kvStream(tenantId));
        for (const compare of txn.compare) {
          const row = await trx
            .selectFrom('kv_entries')
            .select(['version', 'mod_revision'])
            .where('tenant_id', '=', tenantId)
            .where('key', '=', compare.key)
            .executeTakeFirst();
          const holds =
            'version' in compare
              ? Number(row?.version ?? 0) === compare.version
              : Number(row?.mod_revision ?? 0) === compare.modRevision;
          if (!holds) throw new CompareFailed();
        }
        const now = new Date().toISOString();
        const changes: StoredChange[] = [];
        const current = new Map<string, EntryRow>();
        if (keys.size > 0) {
          const rows = await trx
            .selectFrom('kv_entries')
            .select(['key', 'value', 'create_revision', 'mod_revision', 'version', 'lease_id'])
            .where('tenant_id', '=', tenantId)
            .where('key', 'in', [...keys])
            .execute();
          for (const row of rows) current.set(row.key, row);
        }
        for (const op of txn.ops) {
          const before = current.get(op.key);
          const prev = before && storedEntry(before);
          if (op.type === 'delete') {
            if (before !== undefined) changes.push({ type: 'delete', key: op.key, prev });
            continue;
          }
          if (op.lease !== undefined) {
            const lease = await trx
              .selectFrom('kv_leases')
              .select('id')
              .where('tenant_id', '=', tenantId)
              .where('id', '=', op.lease)
              .where('expires_at', '>', now)
              .executeTakeFirst();
            if (lease === undefined) throw new KvLeaseNotFoundError(op.lease);
          }
          changes.push({
            type: 'put',
            key: op.key,
            value: op.value,
            version: Number(before?.version ?? 0) + 1,
            ...(prev !== undefined ? { prev } : {}),
          });
        }
        if (changes.length === 0) {
          return {
            succeeded: true,
            revision: (await this.#events.headIn(trx, kvStream(tenantId))) ?? 0,
          };
        }
        const [event] = await emit(kvStream(tenantId), tenantId, [
          { type: TXN_EVENT, data: { changes } },
        ]);
        const revision = event?.offset ?? 0;
        await this.#apply(trx, tenantId, txn, changes, current, revision);
        this.#written.add(tenantId);
        return { succeeded: true, revision };
      });
    } catch (err) {
      if (err instanceof CompareFailed)
        return { succeeded: false, revision: await this.revision(tenantId) };
      throw err;
    }
  }

  async #apply(
    trx: Transaction<Database>,
    tenantId: string,
    txn: KvTxn,
    changes: StoredChange[],
    current: Map<string, EntryRow>,
    revision: number,
  ): Promise<void> {
    const leaseOf = new Map<string, string | undefined>();
    for (const op of txn.ops) if (op.type === 'put') leaseOf.set(op.key, op.lease);
    for (const change of changes) {
      if (change.type === 'delete') {
        await trx
          .deleteFrom('kv_entries')
          .where('tenant_id', '=', tenantId)
          .where('key', '=', change.key)
          .execute();
        continue;
      }
      const before = current.get(change.key);
      const lease = leaseOf.get(change.key) ?? null;
      if (before === undefined) {
        await trx
          .insertInto('kv_entries')
          .values({
            tenant_id: tenantId,
            key: change.key,
            value: change.value ?? '',
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease_id: lease,
          })
          .execute();
      } else {
        await trx
          .updateTable('kv_entries')
          .set({
            value: change.value ?? '',
            mod_revision: revision,
            version: change.version ?? 1,
            lease_id: lease,
          })
          .where('tenant_id', '=', tenantId)
          .where('key', '=', change.key)
          .execute();
      }
    }
  }

  async compact(tenantId: string, revision: number): Promise<void> {
    await this.#store.transaction((trx) =>
      this.#events.trimStream(trx, kvStream(tenantId), revision - 1),
    );
  }

  async *watch(
    tenantId: string,
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncIterable<KvChangeBatch> {
    await this.#ensure(tenantId);
    const watcher = new Watcher(Math.max(1, fromRevision) - 1);
    const tap = this.#tap(tenantId);
    tap.watchers.add(watcher);
    const onAbort = () => watcher.wake();
    signal.addEventListener('abort', onAbort);
    try {
      while (!signal.aborted && !this.#closed) {
        // Live batches that continue exactly where the watcher is go out as they came;
        // anything else (a gap, a start in the past) is read from the store.
        const batch = watcher.live.shift();
        if (batch !== undefined) {
          if (batch.revision <= watcher.delivered) continue;
          if (batch.revision === watcher.delivered + 1) {
            watcher.delivered = batch.revision;
            const mine = batch.changes.filter((c) => inPrefix(c.key, prefix));
            if (mine.length > 0) yield { revision: batch.revision, changes: mine };
            continue;
          }
          watcher.behind = true;
        }
        if (watcher.behind) {
          watcher.behind = false;
          const page = await this.#events.read(
            tenantId,
            kvStream(tenantId),
            watcher.delivered,
            READ_PAGE,
            {},
            this.#events.maxReadBytes,
          );
          if (page?.gap) throw new KvCompactedError(watcher.delivered + 1, page.gap.first_offset);
          for (const event of page?.events ?? []) {
            watcher.delivered = event.offset;
            const all = changesOf(event);
            const mine = all.changes.filter((c) => inPrefix(c.key, prefix));
            if (mine.length > 0) yield { revision: all.revision, changes: mine };
            if (signal.aborted) return;
          }
          if ((page?.events.length ?? 0) === READ_PAGE || page?.truncated) watcher.behind = true;
          continue;
        }
        await watcher.sleep();
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      tap.watchers.delete(watcher);
      if (tap.watchers.size === 0) {
        tap.dispose();
        this.#taps.delete(tenantId);
      }
    }
  }

  #tap(tenantId: string): Tap {
    let tap = this.#taps.get(tenantId);
    if (tap === undefined) {
      tap = new Tap(this.#bus, kvStream(tenantId), () => this.revision(tenantId), this.#jobs);
      this.#taps.set(tenantId, tap);
    }
    return tap;
  }

  async #ensure(tenantId: string): Promise<void> {
    if (this.#ensured.has(tenantId)) return;
    await this.#store.transaction((trx) => this.#events.ensure(trx, kvStream(tenantId), tenantId));
    this.#ensured.add(tenantId);
  }

  // Leases.

  async grantLease(tenantId: string, ttlMs: number): Promise<KvLease> {
    const id = newId('lease');
    const now = Date.now();
    await this.#store.transaction((trx) =>
      trx
        .insertInto('kv_leases')
        .values({
          tenant_id: tenantId,
          id,
          ttl_ms: ttlMs,
          expires_at: new Date(now + ttlMs).toISOString(),
          granted_at: new Date(now).toISOString(),
        })
        .execute(),
    );
    return { id, ttlMs, remainingMs: ttlMs };
  }

  async keepAlive(tenantId: string, leaseId: string): Promise<KvLease | undefined> {
    const now = Date.now();
    const row = await this.#store.transaction(async (trx) => {
      const lease = await trx
        .selectFrom('kv_leases')
        .select('ttl_ms')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', leaseId)
        .where('expires_at', '>', new Date(now).toISOString())
        .executeTakeFirst();
      if (lease === undefined) return undefined;
      await trx
        .updateTable('kv_leases')
        .set({ expires_at: new Date(now + Number(lease.ttl_ms)).toISOString() })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', leaseId)
        .execute();
      return lease;
    });
    if (row === undefined) return undefined;
    const ttlMs = Number(row.ttl_ms);
    return { id: leaseId, ttlMs, remainingMs: ttlMs };
  }

  async lease(tenantId: string, leaseId: string): Promise<KvLease | undefined> {
    const row = await this.#store.db
      .selectFrom('kv_leases')
      .select(['ttl_ms', 'expires_at'])
      .where('tenant_id', '=', tenantId)
      .where('id', '=', leaseId)
      .executeTakeFirst();
    if (row === undefined) return undefined;
    const remainingMs = Date.parse(row.expires_at) - Date.now();
    if (remainingMs <= 0) return undefined;
    return { id: leaseId, ttlMs: Number(row.ttl_ms), remainingMs };
  }

  async revokeLease(tenantId: string, leaseId: string): Promise<boolean> {
    return this.#endLease(tenantId, leaseId, false);
  }

  /** Ends every expired lease (any node may; each lease is ended once). Returns how many. */
  async sweepLeases(): Promise<number> {
    const due = await this.#store.db
      .selectFrom('kv_leases')
      .select(['tenant_id', 'id'])
      .where('expires_at', '<=', new Date().toISOString())
      .orderBy('expires_at')
      .limit(LEASE_SWEEP_BATCH)
      .execute();
    let ended = 0;
    for (const lease of due) {
      if (await this.#endLease(lease.tenant_id, lease.id, true)) ended++;
    }
    return ended;
  }

  async #endLease(tenantId: string, leaseId: string, onlyIfExpired: boolean): Promise<boolean> {
    await this.#ensure(tenantId);
    return this.#events.transaction(async (trx, emit) => {
      await this.#events.lock(trx, kvStream(tenantId));
      let del = trx
        .deleteFrom('kv_leases')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', leaseId);
      if (onlyIfExpired) del = del.where('expires_at', '<=', new Date().toISOString());
      const deleted = await del.executeTakeFirst();
      if (Number(deleted.numDeletedRows) === 0) return false;
      const rows = await trx
        .selectFrom('kv_entries')
        .select(['key', 'value', 'create_revision', 'mod_revision', 'version', 'lease_id'])
        .where('tenant_id', '=', tenantId)
        .where('lease_id', '=', leaseId)
        .orderBy('key')
        .execute();
      if (rows.length === 0) return true;
      await emit(kvStream(tenantId), tenantId, [
        {
          type: TXN_EVENT,
          data: {
            changes: rows.map(
              (r): StoredChange => ({ type: 'delete', key: r.key, prev: storedEntry(r) }),
            ),
          },
        },
      ]);
      await trx
        .deleteFrom('kv_entries')
        .where('tenant_id', '=', tenantId)
        .where('lease_id', '=', leaseId)
        .execute();
      return true;
    });
  }
}

function storedEntry(row: EntryRow): StoredEntry {
  return {
    value: row.value,
    create_revision: Number(row.create_revision),
    mod_revision: Number(row.mod_revision),
    version: Number(row.version),
    ...(row.lease_id !== null ? { lease: row.lease_id } : {}),
  };
}

/** Unread live batches a watcher may hold; past that it catches up from the store. */
const LIVE_MAX = 10_000;

/** One watch: what it has delivered, and live batches waiting for it. */
class Watcher extends Wakeup {
  delivered: number;
  behind = true;
  readonly live: KvChangeBatch[] = [];

  constructor(delivered: number) {
    super();
    this.delivered = delivered;
  }

  offer(batch: KvChangeBatch): void {
    // A watcher this far behind reads from the store instead of holding the batches.
    if (this.live.length >= LIVE_MAX) {
      this.live.length = 0;
      this.behind = true;
    }
    this.live.push(batch);
    this.wake();
  }

  nudge(head: number): void {
    if (head > this.delivered && this.live.length === 0) {
      this.behind = true;
      this.wake();
    }
  }
}

/** A node's one bus subscription and head check per tenant feed, shared by its watchers. */
class Tap {
  readonly watchers = new Set<Watcher>();
  readonly #unsubscribe: () => void;
  readonly #poll: Job;

  constructor(bus: Bus, stream: string, head: () => Promise<number>, jobs: Jobs) {
    this.#unsubscribe = bus.subscribe(streamSubject(stream), (message) => {
      for (const event of (message as StreamAppend).events) {
        const batch = changesOf(event);
        for (const watcher of this.watchers) watcher.offer(batch);
      }
    });
    this.#poll = jobs.job({
      name: 'kv-watch-poll',
      intervalMs: HEAD_POLL_MS,
      run: async () => {
        const h = await head();
        for (const watcher of this.watchers) watcher.nudge(h);
      },
      failureLevel: 'debug', // retried at the next tick
    });
    this.#poll.start();
  }

  dispose(): void {
    this.#unsubscribe();
    void this.#poll.stop();
  }
}
