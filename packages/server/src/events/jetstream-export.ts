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
import type { RelationalStore } from '../store/store.ts';

const LEADER_KEY = 'cluster/event-export';
/** How often the leader looks for streams with events to export (and a follower for a vacant leadership). */
const TICK_MS = 250;
/** Streams taken per look, and events per stream per look. */
const STREAMS_PER_TICK = 100;
const EVENTS_PER_STREAM = 500;
/** Streams published at once; within a stream, events go one after the other, in order. */
const PARALLEL_STREAMS = 16;
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
 * outbox. The append marks its stream in `event_export_pending` in the same transaction;
 * one node (the holder of `cluster/event-export`) publishes each marked stream's new events
 * in offset order, with the message id `<stream>:<offset>`, then records how far it got.
 * A publish repeated after a crash or a change of leader is dropped by JetStream's
 * duplicate window, so each event is in the stream once.
 */
export class JetStreamEventExport {
  readonly #store: RelationalStore;
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #prefix: string;
  readonly #claim: () => Promise<boolean>;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #leader = false;
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
  }) {
    this.#store = deps.store;
    this.#nc = deps.connection;
    this.#js = jetstream(deps.connection, { timeout: PUBLISH_TIMEOUT_MS });
    this.#prefix = deps.prefix;
    this.#claim = () => deps.claim(LEADER_KEY);
    this.#log = deps.log;
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
    return this.#leader;
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
    const tick = () => {
      this.#running ??= this.#tick()
        .catch((err: unknown) => this.#warn(err, 'event export: a pass failed; retrying'))
        .finally(() => {
          this.#running = undefined;
        });
    };
    this.#timer = setInterval(tick, TICK_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running;
  }

  async #tick(): Promise<void> {
    if (this.#stopped || this.#nc.isClosed()) return;
    const leader = await this.#claim();
    if (leader !== this.#leader) {
      this.#log.info(
        leader
          ? 'this node now exports the event log to JetStream'
          : 'event export: no longer the leader',
      );
    }
    this.#leader = leader;
    if (!leader) return;
    // Until a pass finds nothing: a backlog is worked off without waiting for the next tick.
    for (let more = true; more && !this.#stopped; ) {
      const streams = (
        await this.#store.db
          .selectFrom('event_export_pending')
          .select('stream_id')
          .limit(STREAMS_PER_TICK)
          .execute()
      ).map((r) => r.stream_id);
      if (streams.length === 0) return;
      let index = 0;
      let progress = false;
      // The first failure (NATS away, most likely) ends the pass once the others finish.
      let failure: unknown;
      const worker = async () => {
        while (failure === undefined && index < streams.length && !this.#stopped) {
          const stream = streams[index++] as string;
          try {
            if (await this.#exportStream(stream)) progress = true;
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL_STREAMS }, worker));
      if (failure !== undefined) throw failure;
      more = progress && streams.length === STREAMS_PER_TICK;
    }
  }

  /** Publishes a stream's events after its exported offset; true when it got anywhere. */
  async #exportStream(stream: string): Promise<boolean> {
    const db = this.#store.db;
    const [head, done] = await Promise.all([
      db
        .selectFrom('event_streams')
        .select(['tenant_id', 'last_offset'])
        .where('id', '=', stream)
        .executeTakeFirst(),
      db
        .selectFrom('event_export_offsets')
        .select('exported_offset')
        .where('stream_id', '=', stream)
        .executeTakeFirst(),
    ]);
    if (head === undefined) return false; // deleted meanwhile; its marker went with it
    const from = Number(done?.exported_offset ?? 0);
    const rows = await db
      .selectFrom('events')
      .select(['offset', 'type', 'data', 'created_at'])
      .where('stream_id', '=', stream)
      .where('offset', '>', from)
      .orderBy('offset')
      .limit(EVENTS_PER_STREAM)
      .execute();
    let reached = from;
    try {
      for (const row of rows) {
        const event: ExportedEvent = {
          tenant_id: head.tenant_id,
          stream,
          offset: Number(row.offset),
          type: row.type,
          time: row.created_at,
          data: JSON.parse(row.data) as unknown,
        };
        await this.#js.publish(
          exportSubject(this.#prefix, head.tenant_id, stream),
          JSON.stringify(event),
          { msgID: `${stream}:${event.offset}`, timeout: PUBLISH_TIMEOUT_MS },
        );
        reached = event.offset;
        this.#exported++;
      }
      // Events older than retention are gone: past the last row there is nothing to publish.
      if (rows.length < EVENTS_PER_STREAM) reached = Math.max(reached, Number(head.last_offset));
    } finally {
      if (reached > from) await this.#record(stream, reached);
    }
    return reached > from;
  }

  /**
   * Records the exported offset and, when it is the stream's head, clears the mark. The
   * stream's row is locked first: an append that has reserved offsets holds it until it
   * commits, so either its events count here, or its mark comes after this delete.
   */
  async #record(stream: string, reached: number): Promise<void> {
    const kind = this.#store.kind;
    await this.#store.transaction(async (trx) => {
      let head = trx.selectFrom('event_streams').select('last_offset').where('id', '=', stream);
      if (kind === 'postgres') head = head.forUpdate();
      const row = await head.executeTakeFirst();
      if (row === undefined) return;
      await trx
        .insertInto('event_export_offsets')
        .values({ stream_id: stream, exported_offset: reached })
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
      if (Number(row.last_offset) <= reached) {
        await trx.deleteFrom('event_export_pending').where('stream_id', '=', stream).execute();
      }
    });
  }

  #warn(err: unknown, message: string): void {
    const now = Date.now();
    if (now - this.#lastWarnAt < WARN_EVERY_MS) return;
    this.#lastWarnAt = now;
    this.#log.warn({ err }, message);
  }
}
