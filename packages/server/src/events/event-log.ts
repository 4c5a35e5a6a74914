import type { Transaction } from 'kysely';
import type { Bus } from '../bus/bus.ts';
import { type Job, Jobs } from '../platform/jobs.ts';
import { bytesOf, countWithinBudget } from '../platform/pagination.ts';
import type { Database } from '../store/database.ts';
import { MultiRowInsert, Statement } from '../store/statement.ts';
import type { RelationalStore, StoreKind, TransactionOptions } from '../store/store.ts';

/** One event of a stream, as stored and as sent to clients. */
export interface StreamEvent {
  offset: number;
  type: string;
  time: string;
  data: unknown;
}

/** Said instead of events that are no longer retained, so a reader knows it missed some. */
export interface StreamGap {
  type: 'stream.gap';
  /** The offset the reader asked to continue after. */
  after: number;
  /** The oldest offset still retained; reading continues from there. */
  first_offset: number;
}

export type StreamItem = StreamEvent | StreamGap;

/** What one read of a stream gives; `truncated` when it stopped at its byte budget. */
export interface ReadPage<E> {
  events: E[];
  lastOffset: number;
  gap?: StreamGap;
  truncated?: true;
}

/** A stream event with its data as stored: JSON text. */
export interface StoredEvent {
  offset: number;
  type: string;
  time: string;
  json: string;
}

export interface NewEvent {
  type: string;
  data: unknown;
}

/**
 * Appends events within a transaction; `EventLog.transaction` publishes wake-ups after it
 * commits. `options.isNew` hints that the stream does not exist yet (a new task's), which
 * saves a statement; a wrong hint costs one more statement, never a wrong offset.
 */
export type Emit = (
  stream: string,
  tenantId: string,
  events: NewEvent[],
  options?: { isNew?: boolean },
) => Promise<StreamEvent[]>;

interface WatchedStream {
  /** The head seen at the last check; undefined before the first. */
  lastOffset: number | undefined;
  wakers: Set<() => void>;
  unsubscribe: () => void;
}

const READ_BATCH = 500;
/** Added to an event's data length to estimate its JSON (offset, type, time). */
const EVENT_OVERHEAD_BYTES = 80;
/** Watched streams are checked this often even without a wake-up (a lost message, another node). */
const FOLLOW_POLL_MS = 2_000;

/** Bus subject of the appends to one stream; messages are `StreamAppend`s. */
export const streamSubject = (stream: string) => `events.${stream}`;
/** Bus subject of the appends to every stream of a tenant; messages are `StreamAppend`s. */
export const tenantStreamsSubject = (tenantId: string) => `tenant-events.${tenantId}`;

/** Published on the bus after a commit: what was appended to a stream. */
export interface StreamAppend {
  stream: string;
  tenantId: string;
  events: StreamEvent[];
}

/** A reader's view of retention: all but the newest `maxCount`, and those older than `notBefore`, are gone. */
export interface RetentionFloor {
  maxCount?: number;
  /** ISO time. */
  notBefore?: string;
}

/**
 * The event-log primitive: ordered, replayable streams with offsets, stored in the
 * relational store. Every task, session or topic keeps its history in one stream; readers
 * replay from any retained offset and follow live. Appends happen inside the caller's
 * transaction, so an event exists exactly when the state change it reports does.
 */
export class EventLog {
  readonly #store: RelationalStore;
  readonly #bus: Bus;
  readonly #exported: boolean;
  readonly #maxReadBytes: number | undefined;
  readonly #watched = new Map<string, WatchedStream>();
  readonly #jobs: Jobs;
  /** Checks the heads of followed streams while anyone follows one on this node. */
  #poll: Job | undefined;

  /**
   * `exported`: every append also marks its stream for the JetStream export (in the same
   * transaction, so no committed event escapes it). `maxReadBytes`: each read of a
   * follower stops at about this much event data (ORCHESTRA_RESPONSE_MAX_BYTES), so that
   * replaying large events holds a bounded amount in memory.
   */
  constructor(deps: {
    store: RelationalStore;
    bus: Bus;
    exported?: boolean;
    maxReadBytes?: number;
    jobs?: Jobs;
  }) {
    this.#jobs = deps.jobs ?? Jobs.detached();
    this.#store = deps.store;
    this.#bus = deps.bus;
    this.#exported = deps.exported === true;
    this.#maxReadBytes = deps.maxReadBytes;
  }

  /** About the most event data one read of a follower holds (undefined: no bound). */
  get maxReadBytes(): number | undefined {
    return this.#maxReadBytes;
  }

  /**
   * Runs `work` in a store transaction with an `emit` that appends events to streams;
   * after the commit, followers of those streams are woken. Nothing is published if the
   * transaction fails.
   */
  async transaction<T>(
    work: (trx: Transaction<Database>, emit: Emit) => Promise<T>,
    options?: TransactionOptions,
  ): Promise<T> {
    const appended: StreamAppend[] = [];
    const result = await this.#store.transaction(async (trx) => {
      appended.length = 0; // a retried transaction starts over
      return work(trx, async (stream, tenantId, events, options) => {
        const stored = await append(
          trx,
          this.#store.kind,
          stream,
          tenantId,
          events,
          options?.isNew === true,
        );
        const newest = stored[stored.length - 1];
        if (this.#exported && newest !== undefined && isExported(stream)) {
          await MARK_EXPORT.run(trx, this.#store.kind, [stream, newest.offset]);
        }
        if (stored.length > 0) appended.push({ stream, tenantId, events: stored });
        return stored;
      });
    }, options);
    // The appends themselves travel with the wake-up, so that live readers (realtime
    // subscribers) need no read of their own; one that sees a gap reads the store.
    for (const append of appended) {
      this.#bus.publish(streamSubject(append.stream), append);
      this.#bus.publish(tenantStreamsSubject(append.tenantId), append);
    }
    return result;
  }

  /** A stream's newest offset and creation time, or undefined if it does not exist in the tenant. */
  async info(
    tenantId: string,
    stream: string,
  ): Promise<{ lastOffset: number; createdAt: string } | undefined> {
    const row = await this.#store.db
      .selectFrom('event_streams')
      .select(['last_offset', 'created_at'])
      .where('id', '=', stream)
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    return row && { lastOffset: Number(row.last_offset), createdAt: row.created_at };
  }

  /** Creates an empty stream inside the caller's transaction, unless it exists. */
  async ensure(trx: Transaction<Database>, stream: string, tenantId: string): Promise<void> {
    await CREATE_STREAM.rows(trx, this.#store.kind, [
      stream,
      tenantId,
      0,
      new Date().toISOString(),
    ]);
  }

  /** The newest offset of a stream (0 before its first event), or undefined if it does not exist. */
  async head(tenantId: string, stream: string): Promise<number | undefined> {
    const row = await this.#store.db
      .selectFrom('event_streams')
      .select('last_offset')
      .where('id', '=', stream)
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    return row?.last_offset;
  }

  /** The newest offsets of the streams that exist among `streams` (any tenant's ids). */
  async heads(streams: readonly string[]): Promise<Map<string, number>> {
    const heads = new Map<string, number>();
    for (let i = 0; i < streams.length; i += 500) {
      const rows = await this.#store.db
        .selectFrom('event_streams')
        .select(['id', 'last_offset'])
        .where('id', 'in', streams.slice(i, i + 500))
        .execute();
      for (const row of rows) heads.set(row.id, Number(row.last_offset));
    }
    return heads;
  }

  /** The newest offset of a stream within a transaction, or undefined if it does not exist. */
  async headIn(trx: Transaction<Database>, stream: string): Promise<number | undefined> {
    const row = await trx
      .selectFrom('event_streams')
      .select('last_offset')
      .where('id', '=', stream)
      .executeTakeFirst();
    return row && Number(row.last_offset);
  }

  /**
   * Takes the stream's row lock before anything else is read in `trx`, so that on
   * PostgreSQL two transactions on the same stream run one after the other and each sees
   * the other's committed writes (READ COMMITTED reads anew per statement). SQLite has one
   * writer anyway.
   */
  async lock(trx: Transaction<Database>, stream: string): Promise<void> {
    await trx
      .updateTable('event_streams')
      .set((eb) => ({ last_offset: eb.ref('last_offset') }))
      .where('id', '=', stream)
      .execute();
  }

  /** The tenant's streams whose ids start with one of `prefixes`. */
  async streamsWithPrefix(tenantId: string, prefixes: readonly string[]): Promise<string[]> {
    if (prefixes.length === 0) return [];
    const rows = await this.#store.db
      .selectFrom('event_streams')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where((eb) => eb.or(prefixes.map((p) => eb('id', 'like', `${p}%`))))
      .execute();
    // `_` in a prefix is a LIKE wildcard: the query may over-match, this may not.
    return rows.map((r) => r.id).filter((id) => prefixes.some((p) => id.startsWith(p)));
  }

  /**
   * Events after `after`, oldest first, at most `limit`, up to the head read first (one
   * consistent view even while others append). Resolves to undefined when the stream does
   * not exist in this tenant. `gap` is set when events after `after` are no longer retained;
   * its `first_offset` is the first that can still be read (the next one if none is kept).
   * With `maxBytes`, it also stops at about that much event data (at least one event), sized
   * in the store before any is read, and sets `truncated` when it stopped there.
   */
  async read(
    ...args: Parameters<EventLog['readStored']>
  ): Promise<ReadPage<StreamEvent> | undefined> {
    const page = await this.readStored(...args);
    if (page === undefined) return undefined;
    const { events, ...rest } = page;
    return {
      ...rest,
      events: events.map(({ json, ...e }) => ({ ...e, data: JSON.parse(json) as unknown })),
    };
  }

  /**
   * `read`, with each event's data as the JSON text it is stored as: an answer can carry it
   * as it is, without parsing it and serialising it again.
   */
  async readStored(
    tenantId: string,
    stream: string,
    after: number,
    limit = READ_BATCH,
    floor: RetentionFloor = {},
    maxBytes?: number,
  ): Promise<ReadPage<StoredEvent> | undefined> {
    const lastOffset = await this.head(tenantId, stream);
    if (lastOffset === undefined) return undefined;
    if (after >= lastOffset) return { events: [], lastOffset };
    const inStream = this.#store.db
      .selectFrom('events')
      .where('stream_id', '=', stream)
      .where('offset', '<=', lastOffset)
      .orderBy('offset');
    const retained = (from: number) => {
      const query = inStream
        .select(['offset', 'type', 'data', 'created_at'])
        .where('offset', '>', from);
      return floor.notBefore === undefined
        ? query
        : query.where('created_at', '>=', floor.notBefore);
    };
    let from = Math.max(after, lastOffset - (floor.maxCount ?? lastOffset));
    let truncated = false;
    let rows: { offset: number; type: string; data: string; created_at: string }[];
    for (;;) {
      if (maxBytes === undefined) {
        rows = await retained(from).limit(limit).execute();
        break;
      }
      // Sized without the age floor: in SQLite, created_at is stored after the data, and
      // reading it would read the data (every overflow page) of each row sized.
      const sizes = await inStream
        .select(['offset', bytesOf('data', 'type').as('size')])
        .where('offset', '>', from)
        .limit(limit)
        .execute();
      const count = countWithinBudget(
        sizes.map((s) => Number(s.size) + EVENT_OVERHEAD_BYTES),
        maxBytes,
      );
      const cut = sizes[count - 1];
      if (count >= sizes.length || cut === undefined) {
        rows = await retained(from).limit(limit).execute();
        break;
      }
      rows = await retained(from).where('offset', '<=', cut.offset).limit(count).execute();
      // None retained up to the cut (past the age floor, or deleted by retention since they
      // were sized): size the next ones, rather than report a gap up to the newest event.
      if (rows.length > 0) {
        truncated = true;
        break;
      }
      from = cut.offset;
    }
    const events = rows.map((r) => ({
      offset: r.offset,
      type: r.type,
      time: r.created_at,
      json: r.data,
    }));
    const first = events[0]?.offset ?? lastOffset + 1;
    const gap: StreamGap | undefined =
      first > after + 1 ? { type: 'stream.gap', after, first_offset: first } : undefined;
    return { events, lastOffset, ...(gap ? { gap } : {}), ...(truncated ? { truncated } : {}) };
  }

  /**
   * The oldest offset up to `lastOffset` still retained for a reader with `floor`, without
   * reading any event's data; undefined when none is.
   */
  async firstOffset(
    tenantId: string,
    stream: string,
    lastOffset: number,
    floor: RetentionFloor = {},
  ): Promise<number | undefined> {
    if ((await this.head(tenantId, stream)) === undefined) return undefined;
    let query = this.#store.db
      .selectFrom('events')
      .select('offset')
      .where('stream_id', '=', stream)
      .where('offset', '>', Math.max(0, lastOffset - (floor.maxCount ?? lastOffset)))
      .where('offset', '<=', lastOffset);
    if (floor.notBefore !== undefined) query = query.where('created_at', '>=', floor.notBefore);
    const row = await query.orderBy('offset').limit(1).executeTakeFirst();
    return row?.offset;
  }

  /**
   * Replays a stream after `after`, then follows it live. Ends when `signal` aborts; when an
   * event for which `isLast` is true is also the newest; or, once everything up to the
   * newest event was delivered, when `endWhenCaughtUp` says nothing more will come (the
   * terminal event may have been trimmed). Yields a `stream.gap` where events were trimmed,
   * then goes on from the first retained one. Throws nothing when aborted: it just ends.
   */
  async *follow(
    tenantId: string,
    stream: string,
    after: number,
    options: {
      signal: AbortSignal;
      isLast?: (event: StreamEvent) => boolean;
      endWhenCaughtUp?: () => Promise<boolean>;
      /** What is retained for this reader, asked at each read. */
      floor?: () => RetentionFloor;
      /**
       * Wait for a stream that does not exist yet instead of ending at once; it still ends
       * when a stream that existed is deleted.
       */
      awaitCreation?: boolean;
    },
  ): AsyncIterable<StreamItem> {
    let wake: (() => void) | undefined;
    let dirty = true;
    const release = this.#watch(stream, () => {
      dirty = true;
      wake?.();
    });
    const onAbort = () => wake?.();
    options.signal.addEventListener('abort', onAbort);
    let existed = options.awaitCreation !== true;
    try {
      let cursor = after;
      while (!options.signal.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          if (options.signal.aborted) return;
        }
        dirty = false;
        const page = await this.read(
          tenantId,
          stream,
          cursor,
          READ_BATCH,
          options.floor?.(),
          this.#maxReadBytes,
        );
        if (page === undefined) {
          if (existed) return;
          continue;
        }
        existed = true;
        if (page.gap) {
          yield page.gap;
          cursor = page.gap.first_offset - 1;
        }
        for (const event of page.events) {
          yield event;
          cursor = event.offset;
          // A "last" event ends the stream only if nothing came after it: a retried task
          // goes on past its earlier terminal event.
          if (options.isLast?.(event) && event.offset >= page.lastOffset) return;
        }
        if (page.events.length === READ_BATCH || page.truncated)
          dirty = true; // more to read at once
        else if (cursor >= page.lastOffset && (await options.endWhenCaughtUp?.())) return;
      }
    } finally {
      release();
      options.signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Registers a follower's wake-up. Per stream and node there is one bus subscription, and
   * one periodic check of every watched stream's head in a single query, whatever the
   * number of followers: a lost wake-up or an append on another node costs latency, not a
   * query per follower.
   */
  #watch(stream: string, waker: () => void): () => void {
    let watched = this.#watched.get(stream);
    if (watched === undefined) {
      const entry: WatchedStream = {
        lastOffset: undefined,
        wakers: new Set(),
        unsubscribe: () => {},
      };
      entry.unsubscribe = this.#bus.subscribe(streamSubject(stream), () => {
        for (const w of entry.wakers) w();
      });
      this.#watched.set(stream, entry);
      watched = entry;
    }
    watched.wakers.add(waker);
    if (this.#poll === undefined) {
      this.#poll = this.#jobs.job({
        name: 'event-follow-poll',
        intervalMs: FOLLOW_POLL_MS,
        run: () => this.#pollHeads(),
        // Retried at the next tick; a store that does not answer is reported elsewhere.
        failureLevel: 'debug',
      });
      this.#poll.start();
    }
    const entry = watched;
    return () => {
      entry.wakers.delete(waker);
      if (entry.wakers.size === 0) {
        entry.unsubscribe();
        this.#watched.delete(stream);
      }
      if (this.#watched.size === 0 && this.#poll !== undefined) {
        void this.#poll.stop();
        this.#poll = undefined;
      }
    };
  }

  async #pollHeads(): Promise<void> {
    const ids = [...this.#watched.keys()];
    for (let i = 0; i < ids.length; i += 500) {
      const rows = await this.#store.db
        .selectFrom('event_streams')
        .select(['id', 'last_offset'])
        .where('id', 'in', ids.slice(i, i + 500))
        .execute();
      for (const row of rows) {
        const entry = this.#watched.get(row.id);
        if (entry === undefined) continue;
        // A stream first seen here may have been created since its follower last read.
        if (entry.lastOffset !== row.last_offset) {
          for (const w of entry.wakers) w();
        }
        entry.lastOffset = row.last_offset;
      }
    }
  }

  /** Deletes whole streams with their events, inside the caller's transaction. */
  async deleteStreams(trx: Transaction<Database>, tenantId: string, ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      await trx
        .deleteFrom('event_streams')
        .where('tenant_id', '=', tenantId)
        .where('id', 'in', ids.slice(i, i + 500))
        .execute();
    }
  }

  /** Deletes a stream's events up to `through` (inclusive), inside the caller's transaction. */
  async trimStream(trx: Transaction<Database>, stream: string, through: number): Promise<void> {
    let query = trx
      .deleteFrom('events')
      .where('stream_id', '=', stream)
      .where('offset', '<=', through);
    // With the JetStream export on, what it has not published yet stays for a later trim:
    // a count bound must not take events out of the export (only age-based retention does).
    if (this.#exported && isExported(stream)) {
      query = query.where((eb) =>
        eb(
          'offset',
          '<=',
          eb.fn.coalesce(
            eb
              .selectFrom('event_export_offsets')
              .select('exported_offset')
              .where('stream_id', '=', stream),
            eb.lit(0),
          ),
        ),
      );
    }
    await query.execute();
  }

  /** Deletes the events of `streams` created before `before`. Idempotent. */
  async trimStreamsBefore(streams: string[], before: Date): Promise<number> {
    let removed = 0;
    for (let i = 0; i < streams.length; i += 500) {
      const result = await this.#store.db
        .deleteFrom('events')
        .where('stream_id', 'in', streams.slice(i, i + 500))
        .where('created_at', '<', before.toISOString())
        .executeTakeFirst();
      removed += Number(result.numDeletedRows);
    }
    return removed;
  }

  /** Deletes events created before `before`; streams and their offsets stay. Idempotent. */
  async trim(before: Date): Promise<number> {
    const result = await this.#store.db
      .deleteFrom('events')
      .where('created_at', '<', before.toISOString())
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}

const RESERVE = new Statement(
  'update event_streams set last_offset = last_offset + ? where id = ? and tenant_id = ? returning last_offset',
);
const CREATE_STREAM = new Statement(
  'insert into event_streams (id, tenant_id, last_offset, created_at) values (?, ?, ?, ?) ' +
    'on conflict (id) do nothing returning last_offset',
);
/**
 * Tasks, sessions and topics are exported; the embedded KV's change log (`kv:<tenant>`) is
 * Orchestra's storage, not an event anyone subscribed to (its changes reach the export
 * through the topics `config.<env>` and `services.<name>`).
 */
const isExported = (stream: string) =>
  stream.startsWith('task:') || stream.startsWith('session:') || stream.startsWith('topic:');

// The exporter clears a mark only while it is at or below what it exported; raising it here
// keeps a concurrent clear from dropping this append (see jetstream-export.ts).
const MARK_EXPORT = new Statement(
  'insert into event_export_pending (stream_id, marked_offset) values (?, ?) ' +
    'on conflict (stream_id) do update set marked_offset = excluded.marked_offset',
);
const INSERT_EVENTS = new MultiRowInsert(
  'insert into events (stream_id, "offset", type, data, created_at)',
  5,
);

async function append(
  trx: Transaction<Database>,
  kind: StoreKind,
  stream: string,
  tenantId: string,
  events: NewEvent[],
  isNew: boolean,
): Promise<StreamEvent[]> {
  if (events.length === 0) return [];
  const now = new Date().toISOString();
  const count = events.length;
  // Reserving the offsets with one UPDATE serialises appends to a stream on every store.
  // A stream is created once and appended to many times: try the update first, unless
  // the caller knows the stream is new.
  const reserve = async () =>
    (await RESERVE.rows<{ last_offset: number }>(trx, kind, [count, stream, tenantId]))[0];
  const create = async () =>
    (
      await CREATE_STREAM.rows<{ last_offset: number }>(trx, kind, [stream, tenantId, count, now])
    )[0];
  // Created by a concurrent transaction meanwhile (PostgreSQL): reserve in it.
  const head = isNew
    ? ((await create()) ?? (await reserve()))
    : ((await reserve()) ?? (await create()) ?? (await reserve()));
  if (head === undefined) throw new Error(`event stream ${stream} belongs to another tenant`);
  const first = Number(head.last_offset) - count + 1;
  const stored = events.map((e, i) => ({
    offset: first + i,
    type: e.type,
    time: now,
    data: e.data,
  }));
  await INSERT_EVENTS.insert(
    trx,
    kind,
    stored.map((e) => [stream, e.offset, e.type, JSON.stringify(e.data ?? null), now]),
  );
  return stored;
}
