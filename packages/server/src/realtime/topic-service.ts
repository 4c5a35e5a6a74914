import { randomBytes } from 'node:crypto';
import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Bus } from '../bus/bus.ts';
import type {
  EventLog,
  RetentionFloor,
  StoredEvent,
  StreamEvent,
  StreamGap,
} from '../events/index.ts';
import { ApiError } from '../platform/errors.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import { jsonWithinLimit } from '../platform/value-limits.ts';
import type { Database } from '../store/database.ts';
import { countRows, type RelationalStore } from '../store/store.ts';
import type { HistoryRules } from './topics.ts';
import { parseTopic, TOPIC_PATTERN, type Topic, topicStream } from './topics.ts';

/** A topic message as clients see it. */
export interface TopicMessage {
  topic: string;
  offset: number;
  event: string;
  data: unknown;
  time: string;
}

/** What `history` reads: after an offset, or the last N; `maxBytes` of message data at most. */
export interface HistoryQuery {
  after?: number | undefined;
  last?: number | undefined;
  limit?: number | undefined;
  maxBytes: number;
}

export interface TopicHistory {
  topic: string;
  epoch: string;
  first_offset: number;
  last_offset: number;
  next_after: number | null;
  messages: TopicMessage[];
}

export interface TopicView {
  name: string;
  epoch: string;
  last_offset: number;
  created_at: string;
}

export interface Member {
  connection_id: string;
  client_id: string;
  info: Record<string, unknown>;
  joined_at: string;
}

/** On the bus after a presence change; subject `presenceSubject(tenant, topic)`. */
export interface PresenceChange {
  type: 'join' | 'leave';
  member: Member;
}

/** On the bus after a topic was deleted: nodes end its subscriptions. */
export interface TopicDeleted {
  tenantId: string;
  name: string;
}

export const presenceSubject = (tenantId: string, topic: string) => `presence.${tenantId}.${topic}`;
export const TOPIC_DELETED_SUBJECT = 'realtime.topic-deleted';

/** A member row lives this long unless its node renews it. */
export const PRESENCE_TTL_MS = 30_000;
const PRESENCE_RENEW_MS = 10_000;
const MAX_MEMBERS_LISTED = 1000;
/** Topics whose epoch each node remembers, so that a publish needs no extra read. */
const EPOCH_CACHE_SIZE = 10_000;

/** What `describe` says of a topic that has no stream yet. */
const NOT_YET_PUBLISHED = { epoch: '', lastOffset: 0 } as const;

const newEpoch = () => randomBytes(6).toString('base64url');
/** System streams are never re-created, so their creation time tells their epoch. */
const epochOfCreation = (createdAt: string) => Date.parse(createdAt).toString(36);

/** Records a user topic with a new epoch, unless it exists. */
async function insertTopic(trx: Transaction<Database>, tenantId: string, name: string) {
  await trx
    .insertInto('topics')
    .values({ tenant_id: tenantId, name, epoch: newEpoch(), created_at: new Date().toISOString() })
    .onConflict((oc) => oc.doNothing())
    .execute();
}

function toMessage(topic: string, e: StreamEvent): TopicMessage {
  return { topic, offset: e.offset, event: e.type, data: e.data, time: e.time };
}

/**
 * Topics of the realtime gateway: their history in the event log (bounded by count and
 * age), their epochs, and who is present. Stateless across nodes except for caches: the
 * store holds messages, topics and members.
 */
export class TopicService {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #bus: Bus;
  readonly #rules: HistoryRules;
  readonly #log: Logger;
  readonly #limits: TenantLimitSource;
  readonly nodeId: string;
  readonly #epochs = new Map<string, string>();
  readonly #sweeper: Job;
  readonly #unsubscribe: () => void;
  readonly #limit: TenantLimit;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    bus: Bus;
    rules: HistoryRules;
    log: Logger;
    nodeId: string;
    /** Each tenant's largest message and most user topics. */
    limits: TenantLimitSource;
    jobs: Jobs;
  }) {
    this.#limits = deps.limits;
    this.#limit = new TenantLimit({
      name: 'max_topics',
      limits: deps.limits,
      what: 'topics',
      count: (tenantId) => countRows(this.#store.db, 'topics', { tenant_id: tenantId }),
    });
    this.#store = deps.store;
    this.#events = deps.events;
    this.#bus = deps.bus;
    this.#rules = deps.rules;
    this.#log = deps.log;
    this.#sweeper = deps.jobs.job({
      name: 'realtime-sweep',
      intervalMs: PRESENCE_RENEW_MS,
      run: () => this.#sweep(),
      logFailure: (err) =>
        this.#log.warn({ err }, 'realtime sweep failed; retried at the next one'),
    });
    this.nodeId = deps.nodeId;
    this.#unsubscribe = this.#bus.subscribe(TOPIC_DELETED_SUBJECT, (message) => {
      const { tenantId, name } = message as TopicDeleted;
      this.#epochs.delete(`${tenantId}\0${name}`);
    });
  }

  /** Parses a topic name; throws VALIDATION_FAILED naming `field`. */
  parse(name: string, field?: string): Topic {
    return parseTopic(name, field);
  }

  streamOf(tenantId: string, topic: Topic): string {
    return topicStream(tenantId, topic);
  }

  /**
   * A topic's epoch and newest offset. Nothing is stored: a topic nobody published to yet
   * is, with `missing: 'empty'`, an empty topic with epoch `""` (the first publish creates
   * it and gives it its epoch), and TOPIC_NOT_FOUND with `missing: 'not_found'`. A
   * reserved name that is no system topic (`config.Prod`) is TOPIC_NOT_FOUND either way.
   */
  async describe(
    tenantId: string,
    topic: Topic,
    options: { missing: 'empty' | 'not_found' },
  ): Promise<{ epoch: string; lastOffset: number }> {
    const stream = topicStream(tenantId, topic);
    if (topic.kind === 'user') {
      const row = await this.#topicRow(tenantId, topic.name);
      if (row === undefined) {
        if (options.missing === 'empty') return NOT_YET_PUBLISHED;
        throw notFound(topic.name);
      }
      const lastOffset = (await this.#events.head(tenantId, stream)) ?? 0;
      this.#remember(tenantId, topic.name, row.epoch);
      return { epoch: row.epoch, lastOffset };
    }
    const info = await this.#events.info(tenantId, stream);
    if (info === undefined) {
      // These exist in every tenant; their stream starts with the first change.
      if (topic.kind === 'tenant' || topic.kind === 'config' || topic.kind === 'service')
        return NOT_YET_PUBLISHED;
      throw notFound(topic.name);
    }
    return { epoch: epochOfCreation(info.createdAt), lastOffset: info.lastOffset };
  }

  async #topicRow(tenantId: string, name: string) {
    return this.#store.db
      .selectFrom('topics')
      .select(['epoch', 'created_at'])
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .executeTakeFirst();
  }

  #remember(tenantId: string, name: string, epoch: string): void {
    const key = `${tenantId}\0${name}`;
    if (this.#epochs.size >= EPOCH_CACHE_SIZE && !this.#epochs.has(key)) {
      const oldest = this.#epochs.keys().next().value;
      if (oldest !== undefined) this.#epochs.delete(oldest);
    }
    this.#epochs.set(key, epoch);
  }

  /** Stores a message durably and returns it with its offset; subscribers get it from the bus. */
  async publish(
    tenantId: string,
    topic: Topic,
    event: string,
    data: unknown,
  ): Promise<{ message: TopicMessage; epoch: string }> {
    if (topic.kind !== 'user') throw new ApiError('PERMISSION_DENIED');
    jsonWithinLimit(data, 'data', await this.#limits.get(tenantId, 'topic_message_max_bytes'));
    const stream = topicStream(tenantId, topic);
    const known = this.#epochs.get(`${tenantId}\0${topic.name}`);
    // Only the publish that creates a topic counts against the tenant's limit.
    if (known === undefined && (await this.#topicRow(tenantId, topic.name)) === undefined)
      await this.#limit.check(tenantId);
    const limit = this.#rules.limitOf(topic);
    const stored = await this.#events.transaction(async (trx, emit) => {
      if (known === undefined) {
        await insertTopic(trx, tenantId, topic.name);
      }
      const [e] = await emit(stream, tenantId, [{ type: event, data }]);
      if (e === undefined) throw new Error('append returned no event');
      // Readers already ignore what is past the count bound; deleting it is amortised.
      if (limit !== undefined && e.offset > limit.maxMessages) {
        const every = Math.max(1, Math.floor(limit.maxMessages / 10));
        if (e.offset % every === 0)
          await this.#events.trimStream(trx, stream, e.offset - limit.maxMessages);
      }
      return e;
    });
    let epoch = known;
    if (epoch === undefined) {
      const row = await this.#topicRow(tenantId, topic.name);
      epoch = row?.epoch ?? '';
      if (row) this.#remember(tenantId, topic.name, row.epoch);
    }
    return { message: toMessage(topic.name, stored), epoch };
  }

  /** What readers may still see of a topic. */
  floorOf(topic: Topic): RetentionFloor {
    const limit = this.#rules.limitOf(topic);
    const maxAgeMs = limit?.maxAgeMs ?? this.#rules.retentionMs;
    return {
      ...(limit ? { maxCount: limit.maxMessages } : {}),
      notBefore: new Date(Date.now() - maxAgeMs).toISOString(),
    };
  }

  /**
   * Messages after `after`, oldest first, within the history bounds. `gap` is set when
   * some after `after` are no longer retained. Undefined when the stream does not exist.
   * With `maxBytes`, stops at about that much message data (at least one message).
   */
  async read(
    tenantId: string,
    topic: Topic,
    after: number,
    limit: number,
    maxBytes?: number,
  ): Promise<{ messages: TopicMessage[]; lastOffset: number; gap?: StreamGap } | undefined> {
    const stream = topicStream(tenantId, topic);
    const page = await this.#events.read(
      tenantId,
      stream,
      after,
      limit,
      this.floorOf(topic),
      maxBytes,
    );
    if (page === undefined) return undefined;
    return {
      messages: page.events.map((e) => toMessage(topic.name, e)),
      lastOffset: page.lastOffset,
      ...(page.gap ? { gap: page.gap } : {}),
    };
  }

  /** Replays a topic after `after`, then follows it live, within its history bounds. */
  follow(
    tenantId: string,
    stream: string,
    after: number,
    options: { signal: AbortSignal; floor: () => RetentionFloor; awaitCreation?: boolean },
  ) {
    return this.#events.follow(tenantId, stream, after, options);
  }

  /**
   * The `history` answer: after an offset, or the last N, at most `limit` and about
   * `maxBytes` of message data (at least one message). `next_after` is where to go on
   * (`after=`) when messages up to `last_offset` were left out; null when none were.
   */
  async history(tenantId: string, topic: Topic, query: HistoryQuery): Promise<TopicHistory> {
    const { stored, ...answer } = await this.#history(tenantId, topic, query);
    return {
      ...answer,
      messages: stored.map((e) => ({
        topic: topic.name,
        offset: e.offset,
        event: e.type,
        data: JSON.parse(e.json) as unknown,
        time: e.time,
      })),
    };
  }

  /**
   * The `history` answer as JSON text, each message's data spliced in as it is stored:
   * large messages are neither parsed nor serialised again, which halves the work of a
   * large answer and so how long it holds the event loop.
   */
  async historyJson(tenantId: string, topic: Topic, query: HistoryQuery): Promise<string> {
    const { stored, ...answer } = await this.#history(tenantId, topic, query);
    const name = JSON.stringify(topic.name);
    const messages = stored.map(
      (e) =>
        `{"topic":${name},"offset":${e.offset},"event":${JSON.stringify(e.type)},"data":${e.json},"time":${JSON.stringify(e.time)}}`,
    );
    return `${JSON.stringify(answer).slice(0, -1)},"messages":[${messages.join(',')}]}`;
  }

  async #history(
    tenantId: string,
    topic: Topic,
    query: HistoryQuery,
  ): Promise<Omit<TopicHistory, 'messages'> & { stored: StoredEvent[] }> {
    const { epoch, lastOffset } = await this.describe(tenantId, topic, { missing: 'not_found' });
    const limit = query.limit ?? 100;
    const after =
      query.after ?? (query.last !== undefined ? Math.max(0, lastOffset - query.last) : 0);
    const page = await this.#events.readStored(
      tenantId,
      topicStream(tenantId, topic),
      after,
      Math.min(query.last ?? limit, limit),
      this.floorOf(topic),
      query.maxBytes,
    );
    const stored = page?.events ?? [];
    const last = page?.lastOffset ?? lastOffset;
    const first = await this.firstRetained(tenantId, topic, last);
    // Retained messages are a suffix of the stream: any after the last one sent are still there.
    const newest = stored[stored.length - 1]?.offset;
    return {
      topic: topic.name,
      epoch,
      first_offset: first,
      last_offset: last,
      next_after: newest !== undefined && newest < last ? newest : null,
      stored,
    };
  }

  /** The oldest offset a reader can still get (`lastOffset + 1` when none is retained). */
  async firstRetained(tenantId: string, topic: Topic, lastOffset: number): Promise<number> {
    const first = await this.#events.firstOffset(
      tenantId,
      topicStream(tenantId, topic),
      lastOffset,
      this.floorOf(topic),
    );
    return first ?? lastOffset + 1;
  }

  async list(
    tenantId: string,
    query: {
      limit?: number | undefined;
      cursor?: string | undefined;
      prefix?: string | undefined;
      maxBytes: number;
    },
  ): Promise<{ items: TopicView[]; next_cursor: string | null }> {
    const limit = query.limit ?? DEFAULT_PAGE_LIMIT;
    const after = decodeCursor(query.cursor, (a) => new RegExp(TOPIC_PATTERN).test(a));
    let q = this.#store.db
      .selectFrom('topics')
      .select(['name', 'epoch', 'created_at'])
      .where('tenant_id', '=', tenantId);
    if (after !== undefined) q = q.where('name', '>', after);
    if (query.prefix !== undefined) {
      q = q.where('name', '>=', query.prefix).where('name', '<', `${query.prefix}\u{10FFFF}`);
    }
    const rows = await q
      .orderBy('name')
      .limit(limit + 1)
      .execute();
    const streams = rows.map((r) => topicStream(tenantId, { kind: 'user', name: r.name }));
    const heads = await this.#events.heads(streams);
    return toPage(
      rows.map((r) => ({ ...r, id: r.name })),
      limit,
      (r) => ({
        name: r.name,
        epoch: r.epoch,
        last_offset: heads.get(topicStream(tenantId, { kind: 'user', name: r.name })) ?? 0,
        created_at: r.created_at,
      }),
      query.maxBytes,
    );
  }

  /** Deletes a user topic with its history; a new one of the same name gets a new epoch. */
  async delete(tenantId: string, topic: Topic): Promise<void> {
    if (topic.kind !== 'user')
      throw new ApiError(
        'PERMISSION_DENIED',
        `${topic.name} is a system topic and cannot be deleted`,
      );
    const stream = topicStream(tenantId, topic);
    const removed = await this.#store.transaction(async (trx) => {
      const result = await trx
        .deleteFrom('topics')
        .where('tenant_id', '=', tenantId)
        .where('name', '=', topic.name)
        .executeTakeFirst();
      await this.#events.deleteStreams(trx, tenantId, [stream]);
      await trx
        .deleteFrom('topic_presence')
        .where('tenant_id', '=', tenantId)
        .where('topic', '=', topic.name)
        .execute();
      return Number(result.numDeletedRows);
    });
    if (removed === 0) throw notFound(topic.name);
    this.#bus.publish(TOPIC_DELETED_SUBJECT, { tenantId, name: topic.name } satisfies TopicDeleted);
  }

  // Presence: rows in the store owned by the node that holds the connection.

  async join(tenantId: string, topic: string, member: Member): Promise<void> {
    await this.#store.db
      .insertInto('topic_presence')
      .values({
        tenant_id: tenantId,
        topic,
        connection_id: member.connection_id,
        client_id: member.client_id,
        info: JSON.stringify(member.info),
        node_id: this.nodeId,
        joined_at: member.joined_at,
        expires_at: new Date(Date.now() + PRESENCE_TTL_MS).toISOString(),
      })
      .onConflict((oc) => oc.doNothing())
      .execute();
    this.#bus.publish(presenceSubject(tenantId, topic), {
      type: 'join',
      member,
    } satisfies PresenceChange);
  }

  async leave(tenantId: string, topic: string, member: Member): Promise<void> {
    await this.#store.db
      .deleteFrom('topic_presence')
      .where('tenant_id', '=', tenantId)
      .where('topic', '=', topic)
      .where('connection_id', '=', member.connection_id)
      .execute();
    this.#bus.publish(presenceSubject(tenantId, topic), {
      type: 'leave',
      member,
    } satisfies PresenceChange);
  }

  async members(tenantId: string, topic: string): Promise<Member[]> {
    const rows = await this.#store.db
      .selectFrom('topic_presence')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('topic', '=', topic)
      .where('expires_at', '>=', new Date().toISOString())
      .orderBy('joined_at')
      .orderBy('connection_id')
      .limit(MAX_MEMBERS_LISTED)
      .execute();
    return rows.map(memberOf);
  }

  /**
   * Renews this node's members and removes those of nodes that stopped renewing (each
   * removal is announced as a leave); then trims topics by age. Every node runs it.
   */
  start(): void {
    this.#sweeper.start();
  }

  async #sweep(): Promise<void> {
    const now = Date.now();
    await this.#store.db
      .updateTable('topic_presence')
      .set({ expires_at: new Date(now + PRESENCE_TTL_MS).toISOString() })
      .where('node_id', '=', this.nodeId)
      .execute();
    const expired = await this.#store.db
      .deleteFrom('topic_presence')
      .where('expires_at', '<', new Date(now).toISOString())
      .returningAll()
      .execute();
    for (const row of expired) {
      this.#bus.publish(presenceSubject(row.tenant_id, row.topic), {
        type: 'leave',
        member: memberOf(row),
      } satisfies PresenceChange);
    }
    await this.#trimByAge();
  }

  /** Deletes messages past their topic's age bound (readers already ignore them). */
  async #trimByAge(): Promise<void> {
    let after: { tenant: string; name: string } | undefined;
    for (;;) {
      let q = this.#store.db.selectFrom('topics').select(['tenant_id', 'name']);
      if (after !== undefined) {
        const { tenant, name } = after;
        q = q.where((eb) =>
          eb.or([
            eb('tenant_id', '>', tenant),
            eb.and([eb('tenant_id', '=', tenant), eb('name', '>', name)]),
          ]),
        );
      }
      const rows = await q.orderBy('tenant_id').orderBy('name').limit(500).execute();
      const byAge = new Map<number, string[]>();
      for (const row of rows) {
        const topic = parseTopic(row.name);
        const maxAge = this.#rules.limitOf(topic)?.maxAgeMs ?? this.#rules.retentionMs;
        if (maxAge >= this.#rules.retentionMs) continue; // the event log's own sweep does it
        const streams = byAge.get(maxAge) ?? [];
        streams.push(topicStream(row.tenant_id, topic));
        byAge.set(maxAge, streams);
      }
      for (const [maxAge, streams] of byAge) {
        await this.#events.trimStreamsBefore(streams, new Date(Date.now() - maxAge));
      }
      const last = rows[rows.length - 1];
      if (last === undefined || rows.length < 500) return;
      after = { tenant: last.tenant_id, name: last.name };
    }
  }

  /** Stops the sweeps and removes this node's members, announcing that they left. */
  async stop(): Promise<void> {
    await this.#sweeper.stop();
    this.#unsubscribe();
    try {
      const rows = await this.#store.db
        .deleteFrom('topic_presence')
        .where('node_id', '=', this.nodeId)
        .returningAll()
        .execute();
      for (const row of rows) {
        this.#bus.publish(presenceSubject(row.tenant_id, row.topic), {
          type: 'leave',
          member: memberOf(row),
        } satisfies PresenceChange);
      }
    } catch (err) {
      this.#log.warn({ err }, 'could not remove this node’s presence; it expires by itself');
    }
  }
}

function memberOf(row: {
  connection_id: string;
  client_id: string;
  info: string;
  joined_at: string;
}): Member {
  return {
    connection_id: row.connection_id,
    client_id: row.client_id,
    info: JSON.parse(row.info) as Record<string, unknown>,
    joined_at: row.joined_at,
  };
}

export function notFound(name: string): ApiError {
  return new ApiError('TOPIC_NOT_FOUND', `The topic ${name} does not exist`);
}
