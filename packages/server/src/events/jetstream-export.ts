import {
  DiscardPolicy,
  type JetStreamClient,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { type NatsConnection, nanos } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { natsToken } from '../bus/nats.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { RelationalStore } from '../store/store.ts';

const LEADER_KEY = 'cluster/event-export';
/** How often the leader looks for streams with events to export (and a follower for a vacant leadership). */
const TICK_MS = 250;
/** Streams taken per pass, and events read per pass. */
const STREAMS_PER_PASS = 100;
const EVENTS_PER_PASS = 2_000;
/** Streams published at once, and publishes of one stream in flight at once. */
const PARALLEL_STREAMS = 16;
const PUBLISH_WINDOW = 128;
/** A message id seen again within this window is dropped by JetStream. */
const DUPLICATE_WINDOW_MS = 120_000;
const PUBLISH_TIMEOUT_MS = 5_000;
/** Failures are logged at most this often while they last. */
const WARN_EVERY_MS = 30_000;

/** One exported event, the JSON body of a JetStream message. */
export interface ExportedEvent {
  tenant_id: string;
  /** `<kind>:<resource id>`, such as `task:tsk_…` or `topic:…`. */
  stream: string;
  offset: number;
  type: string;
  time: string;
  data: unknown;
}

/** The subjects of the export: `<prefix>.export.<tenant>.<kind>.<resource id>`, each one token. */
export function exportSubject(prefix: string, tenantId: string, stream: string): string {
  const colon = stream.indexOf(':');
  const kind = colon === -1 ? stream : stream.slice(0, colon);
  const id = colon === -1 ? '' : stream.slice(colon + 1);
  return `${prefix}.export.${natsToken(tenantId)}.${natsToken(kind)}.${natsToken(id)}`;
}

/** The JetStream stream's name for a prefix. */
export const exportStreamName = (prefix: string) => `${prefix}-events`;

/**
 * Copies every event of the event log (task, session and topic streams) into a JetStream
 * stream, for consumers outside Orchestra that want all of it durably, with their own
 * durable consumers. PostgreSQL stays the source of truth (decision 0007); this is its
 * outbox. The append marks its stream in `event_export_pending` with its newest offset, in
 * the same transaction; one node (the holder of `cluster/event-export`) publishes each
 * marked stream's new events in offset order, with the message id `<stream>:<offset>`, then
 * records how far it got and clears the marks it caught up with.
 * A publish repeated after a crash or a change of leader is dropped by JetStream's
 * duplicate window, so each event is in the stream once.
 */
export class JetStreamEventExport {
  readonly #store: RelationalStore;
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #prefix: string;
  readonly #job: Job;
  readonly #log: Logger;
  #stopped = false;
  #exported = 0;
  #lastWarnAt = 0;

  constructor(deps: {
    store: RelationalStore;
    connection: NatsConnection;
    prefix: string;
    /** Claims (or confirms) the export's leadership; false when another node holds it. */
    claim: (key: string) => Promise<boolean>;
    log: Logger;
    jobs: Jobs;
  }) {
    this.#store = deps.store;
    this.#nc = deps.connection;
    this.#js = jetstream(deps.connection, { timeout: PUBLISH_TIMEOUT_MS });
    this.#prefix = deps.prefix;
    this.#log = deps.log;
    this.#job = deps.jobs.job({
      name: 'event-export',
      intervalMs: TICK_MS,
      run: () => this.#tick(),
      // While NATS is away every pass fails: say so now and then, not four times a second.
      logFailure: (err) => this.#warn(err, 'event export: a pass failed; retrying'),
      leader: {
        key: LEADER_KEY,
        claim: deps.claim,
        role: 'exports the event log to JetStream',
      },
    });
  }

  /**
   * Creates the stream, or brings its settings up to date; fails when the NATS server has
   * no JetStream.
   */
  static async ensureStream(
    connection: NatsConnection,
    options: { prefix: string; maxAgeMs: number; replicas: number },
  ): Promise<void> {
    const jsm = await jetstreamManager(connection, { timeout: PUBLISH_TIMEOUT_MS });
    const name = exportStreamName(options.prefix);
    const config: Partial<StreamConfig> = {
      subjects: [`${options.prefix}.export.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(options.maxAgeMs),
      duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, options.maxAgeMs)),
      num_replicas: options.replicas,
    };
    const existing = await jsm.streams.info(name).catch(() => undefined);
    if (existing === undefined) await jsm.streams.add({ name, ...config });
    else await jsm.streams.update(name, { ...existing.config, ...config });
  }

  /** Events published so far by this node. */
  get exported(): number {
    return this.#exported;
  }

  get leader(): boolean {
    return this.#job.leader;
  }

  /** Streams with events still to export (every node can tell). */
  async pendingStreams(): Promise<number> {
    const row = await this.#store.db
      .selectFrom('event_export_pending')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  start(): void {
    this.#job.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#job.stop();
  }

  /** As the leader: passes until one finds nothing, so a backlog is worked off at once. */
  async #tick(): Promise<void> {
    if (this.#nc.isClosed()) return;
    while (!this.#stopped && (await this.#pass())) {}
  }

  /**
   * Exports up to STREAMS_PER_PASS marked streams: reads them and their new events with two
   * queries, publishes, and records the progress of all of them in one transaction.
   * Resolves true when there may be more to do at once.
   */
  async #pass(): Promise<boolean> {
    const db = this.#store.db;
    const marked = await db
      .selectFrom('event_export_pending as p')
      .innerJoin('event_streams as s', 's.id', 'p.stream_id')
      .leftJoin('event_export_offsets as o', 'o.stream_id', 'p.stream_id')
      .select(['p.stream_id', 'p.marked_offset', 's.tenant_id', 'o.exported_offset'])
      .limit(STREAMS_PER_PASS)
      .execute();
    if (marked.length === 0) return false;
    const rows = await db
      .selectFrom('events as e')
      .leftJoin('event_export_offsets as o', 'o.stream_id', 'e.stream_id')
      .select(['e.stream_id', 'e.offset', 'e.type', 'e.data', 'e.created_at'])
      .where(
        'e.stream_id',
        'in',
        marked.map((m) => m.stream_id),
      )
      .where((eb) => eb('e.offset', '>', eb.fn.coalesce('o.exported_offset', eb.lit(0))))
      .orderBy('e.stream_id')
      .orderBy('e.offset')
      .limit(EVENTS_PER_PASS)
      .execute();
    // Cut short: the last stream read may have more, and those after it were not read.
    const cutAt = rows.length === EVENTS_PER_PASS ? rows[rows.length - 1]?.stream_id : undefined;
    const byStream = new Map<string, typeof rows>();
    for (const row of rows) {
      const list = byStream.get(row.stream_id);
      if (list === undefined) byStream.set(row.stream_id, [row]);
      else list.push(row);
    }
    const progress: { stream: string; reached: number; marked: number; from: number }[] = [];
    let index = 0;
    // The first failure (NATS away, most likely) ends the pass once the others finish.
    let failure: unknown;
    const worker = async () => {
      while (failure === undefined && index < marked.length && !this.#stopped) {
        const m = marked[index++] as (typeof marked)[number];
        const from = Number(m.exported_offset ?? 0);
        const entry = { stream: m.stream_id, reached: from, marked: Number(m.marked_offset), from };
        progress.push(entry);
        // Rows come grouped by stream: with the read cut short, a stream it did not reach
        // waits for the next pass (no string order is assumed: collations differ).
        if (cutAt !== undefined && !byStream.has(m.stream_id)) continue;
        try {
          const events = (byStream.get(m.stream_id) ?? []).map(
            (row): ExportedEvent => ({
              tenant_id: m.tenant_id,
              stream: m.stream_id,
              offset: Number(row.offset),
              type: row.type,
              time: row.created_at,
              data: JSON.parse(row.data) as unknown,
            }),
          );
          const subject = exportSubject(this.#prefix, m.tenant_id, m.stream_id);
          // A window of publishes in flight: one connection keeps them in order, and a
          // backlog is not one round trip per event.
          for (let i = 0; i < events.length; i += PUBLISH_WINDOW) {
            const window = events.slice(i, i + PUBLISH_WINDOW);
            const acks = await Promise.allSettled(
              window.map((event) =>
                this.#js.publish(subject, JSON.stringify(event), {
                  msgID: `${m.stream_id}:${event.offset}`,
                  timeout: PUBLISH_TIMEOUT_MS,
                }),
              ),
            );
            for (const [j, ack] of acks.entries()) {
              if (ack.status === 'rejected') throw ack.reason;
              entry.reached = (window[j] as ExportedEvent).offset;
              this.#exported++;
            }
          }
          // Read to its end: whatever is missing up to the mark is past retention, and gone.
          if (m.stream_id !== cutAt) entry.reached = Math.max(entry.reached, entry.marked);
        } catch (err) {
          failure ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_STREAMS }, worker));
    await this.#record(progress.filter((p) => p.reached > p.from || p.reached >= p.marked));
    if (failure !== undefined) throw failure;
    return marked.length === STREAMS_PER_PASS || cutAt !== undefined;
  }

  /**
   * Records the exported offsets and clears the marks the export has caught up with. A mark
   * goes only while it is at or below what was exported: an append that commits meanwhile
   * raises it (PostgreSQL re-checks the condition on the row the append wrote), so its
   * events are exported on the next pass.
   */
  async #record(
    done: { stream: string; reached: number; marked: number; from: number }[],
  ): Promise<void> {
    if (done.length === 0) return;
    const kind = this.#store.kind;
    await this.#store.transaction(async (trx) => {
      const moved = done.filter((d) => d.reached > d.from);
      if (moved.length > 0) {
        await trx
          .insertInto('event_export_offsets')
          .values(moved.map((d) => ({ stream_id: d.stream, exported_offset: d.reached })))
          .onConflict((oc) =>
            oc.column('stream_id').doUpdateSet((eb) => ({
              // Never backwards, should a former leader finish a pass late.
              exported_offset: eb.fn(kind === 'postgres' ? 'greatest' : 'max', [
                eb.ref('event_export_offsets.exported_offset'),
                eb.ref('excluded.exported_offset'),
              ]),
            })),
          )
          .execute();
      }
      await trx
        .deleteFrom('event_export_pending')
        .where((eb) =>
          eb.or(
            done.map((d) =>
              eb.and([eb('stream_id', '=', d.stream), eb('marked_offset', '<=', d.reached)]),
            ),
          ),
        )
        .execute();
    });
  }

  #warn(err: unknown, message: string): void {
    const now = Date.now();
    if (now - this.#lastWarnAt < WARN_EVERY_MS) return;
    this.#lastWarnAt = now;
    this.#log.warn({ err }, message);
  }
}
