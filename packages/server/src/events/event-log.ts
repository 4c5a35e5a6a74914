import type { Transaction } from 'kysely';
import type { Bus } from '../bus/bus.ts';
import type { Database } from '../store/database.ts';
import type { RelationalStore } from '../store/store.ts';

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

export interface NewEvent {
  type: string;
  data: unknown;
}

/** Appends events within a transaction; `EventLog.transaction` publishes wake-ups after it commits. */
export type Emit = (stream: string, tenantId: string, events: NewEvent[]) => Promise<StreamEvent[]>;

const READ_BATCH = 500;
/** A follower re-reads the store this often even without a wake-up (a lost message, another node). */
const FOLLOW_POLL_MS = 2_000;

const wakeSubject = (stream: string) => `events.${stream}`;

/**
 * The event-log primitive: ordered, replayable streams with offsets, stored in the
 * relational store. Every task, session or topic keeps its history in one stream; readers
 * replay from any retained offset and follow live. Appends happen inside the caller's
 * transaction, so an event exists exactly when the state change it reports does.
 */
export class EventLog {
  readonly #store: RelationalStore;
  readonly #bus: Bus;

  constructor(deps: { store: RelationalStore; bus: Bus }) {
    this.#store = deps.store;
    this.#bus = deps.bus;
  }

  /**
   * Runs `work` in a store transaction with an `emit` that appends events to streams;
   * after the commit, followers of those streams are woken. Nothing is published if the
   * transaction fails.
   */
  async transaction<T>(work: (trx: Transaction<Database>, emit: Emit) => Promise<T>): Promise<T> {
    const touched = new Set<string>();
    const result = await this.#store.db.transaction().execute(async (trx) =>
      work(trx, async (stream, tenantId, events) => {
        touched.add(stream);
        return append(trx, stream, tenantId, events);
      }),
    );
    for (const stream of touched) this.#bus.publish(wakeSubject(stream), null);
    return result;
  }

  /**
   * Events after `after`, oldest first, at most `limit`. Resolves to undefined when the
   * stream does not exist in this tenant. `gap` is set when events after `after` are no
   * longer retained.
   */
  async read(
    tenantId: string,
    stream: string,
    after: number,
    limit = READ_BATCH,
  ): Promise<{ events: StreamEvent[]; lastOffset: number; gap?: StreamGap } | undefined> {
    const head = await this.#store.db
      .selectFrom('event_streams')
      .select('last_offset')
      .where('id', '=', stream)
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    if (head === undefined) return undefined;
    if (after >= head.last_offset) return { events: [], lastOffset: head.last_offset };
    const rows = await this.#store.db
      .selectFrom('events')
      .select(['offset', 'type', 'data', 'created_at'])
      .where('stream_id', '=', stream)
      .where('offset', '>', after)
      .orderBy('offset')
      .limit(limit)
      .execute();
    const events = rows.map((r) => ({
      offset: r.offset,
      type: r.type,
      time: r.created_at,
      data: JSON.parse(r.data) as unknown,
    }));
    const first = events[0]?.offset ?? head.last_offset + 1;
    const gap: StreamGap | undefined =
      first > after + 1 ? { type: 'stream.gap', after, first_offset: first } : undefined;
    return { events, lastOffset: head.last_offset, ...(gap ? { gap } : {}) };
  }

  /**
   * Replays a stream after `after` and then follows it live, until an event for which
   * `isLast` is true is also the newest in the stream, or `signal` aborts. Yields a `stream.gap` first when events after
   * `after` have been trimmed. Throws nothing when aborted: it just ends.
   */
  async *follow(
    tenantId: string,
    stream: string,
    after: number,
    options: { signal: AbortSignal; isLast?: (event: StreamEvent) => boolean },
  ): AsyncIterable<StreamItem> {
    let wake: (() => void) | undefined;
    let dirty = true;
    const unsubscribe = this.#bus.subscribe(wakeSubject(stream), () => {
      dirty = true;
      wake?.();
    });
    const onAbort = () => wake?.();
    options.signal.addEventListener('abort', onAbort);
    try {
      let cursor = after;
      while (!options.signal.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, FOLLOW_POLL_MS);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = undefined;
          if (options.signal.aborted) return;
        }
        dirty = false;
        const page = await this.read(tenantId, stream, cursor);
        if (page === undefined) return;
        if (page.gap) yield page.gap;
        for (const event of page.events) {
          yield event;
          cursor = event.offset;
          // A "last" event ends the stream only if nothing came after it: a retried task
          // goes on past its earlier terminal event.
          if (options.isLast?.(event) && event.offset >= page.lastOffset) return;
        }
        if (page.events.length === READ_BATCH) dirty = true; // more to read at once
      }
    } finally {
      unsubscribe();
      options.signal.removeEventListener('abort', onAbort);
    }
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

async function append(
  trx: Transaction<Database>,
  stream: string,
  tenantId: string,
  events: NewEvent[],
): Promise<StreamEvent[]> {
  if (events.length === 0) return [];
  const now = new Date().toISOString();
  await trx
    .insertInto('event_streams')
    .values({ id: stream, tenant_id: tenantId, last_offset: 0, created_at: now })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
  // Reserving the offsets with one UPDATE serialises appends to a stream on every store.
  const head = await trx
    .updateTable('event_streams')
    .set((eb) => ({ last_offset: eb('last_offset', '+', events.length) }))
    .where('id', '=', stream)
    .where('tenant_id', '=', tenantId)
    .returning('last_offset')
    .executeTakeFirstOrThrow();
  const first = head.last_offset - events.length + 1;
  const stored = events.map((e, i) => ({
    offset: first + i,
    type: e.type,
    time: now,
    data: e.data,
  }));
  await trx
    .insertInto('events')
    .values(
      stored.map((e) => ({
        stream_id: stream,
        offset: e.offset,
        type: e.type,
        data: JSON.stringify(e.data ?? null),
        created_at: now,
      })),
    )
    .execute();
  return stored;
}
