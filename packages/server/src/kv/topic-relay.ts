import type { Logger } from 'pino';
import type { EventLog, NewEvent } from '../events/index.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { RelationalStore } from '../store/store.ts';
import { type KvChangeBatch, KvCompactedError, type KvStore } from './kv.ts';

/** What one KV change becomes on a realtime topic: an event appended to its stream. */
export interface RelayedEvent {
  stream: string;
  event: NewEvent;
}

/**
 * Maps a tenant's KV changes to topic events (config keys to `config.<env>`, registry
 * instances to `services.<name>`). On a compaction the relay has missed changes, and asks
 * each route for a `resync` event on the streams it may have lost changes of.
 */
export interface RelayRoute {
  events(tenantId: string, batch: KvChangeBatch): RelayedEvent[];
  /** Streams prefixed like this get a `resync` event when changes were lost. */
  streamPrefix(tenantId: string): string;
}

const LEADER_KEY = 'cluster/topic-relay';
/** How often the leadership and the tenant list are checked. */
const TICK_MS = 1_000;

class LostCursorError extends Error {}

interface Follower {
  abort: AbortController;
  done: Promise<void>;
}

/**
 * Copies the KV's changes of every tenant into the event-log streams behind the realtime
 * topics `config.<env>` and `services.<name>`, so that those topics have offsets, history
 * and gap-free recovery like any other. One node relays (the holder of the
 * `cluster/topic-relay` key, bound to its node lease); its position per tenant is a row
 * in the relational store, advanced with a compare in the same transaction as the
 * appends, so each change is relayed exactly once even while leadership moves.
 */
export class KvTopicRelay {
  readonly #kv: KvStore;
  readonly #events: EventLog;
  readonly #store: RelationalStore;
  readonly #claim: (key: string) => Promise<boolean>;
  readonly #routes: RelayRoute[];
  readonly #tenants: () => Promise<string[]>;
  readonly #log: Logger;
  readonly #followers = new Map<string, Follower>();
  readonly #job: Job;
  #stopped = false;

  constructor(deps: {
    kv: KvStore;
    events: EventLog;
    store: RelationalStore;
    /** Claims the relay's leader key for this node (the registry's node claims). */
    claim: (key: string) => Promise<boolean>;
    routes: RelayRoute[];
    tenants: () => Promise<string[]>;
    log: Logger;
    jobs: Jobs;
  }) {
    this.#kv = deps.kv;
    this.#events = deps.events;
    this.#store = deps.store;
    this.#claim = deps.claim;
    this.#routes = deps.routes;
    this.#tenants = deps.tenants;
    this.#log = deps.log;
    this.#job = deps.jobs.job({
      name: 'topic-relay',
      intervalMs: TICK_MS,
      runAtStart: true,
      run: () => this.#tick(),
      leader: {
        key: LEADER_KEY,
        claim: this.#claim,
        role: 'relays config and registry changes to topics',
        onLost: () => this.#stopFollowers(),
      },
    });
  }

  get leader(): boolean {
    return this.#job.leader;
  }

  start(): void {
    this.#job.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#job.stop();
    await this.#stopFollowers();
  }

  /** One check, as the leader: a follower per tenant, started again where one stopped. */
  async #tick(): Promise<void> {
    const tenants = new Set(await this.#tenants());
    for (const [tenantId, follower] of this.#followers) {
      if (!tenants.has(tenantId)) {
        follower.abort.abort();
        this.#followers.delete(tenantId);
      }
    }
    for (const tenantId of tenants) {
      if (!this.#followers.has(tenantId) && !this.#stopped) this.#follow(tenantId);
    }
  }

  async #stopFollowers(): Promise<void> {
    const followers = [...this.#followers.values()];
    this.#followers.clear();
    for (const f of followers) f.abort.abort();
    await Promise.all(followers.map((f) => f.done));
  }

  #follow(tenantId: string): void {
    const abort = new AbortController();
    const done = this.#relay(tenantId, abort.signal)
      .catch((err: unknown) => {
        if (abort.signal.aborted) return;
        if (!(err instanceof LostCursorError))
          this.#log.warn({ err, tenantId }, 'topic relay stopped; restarting');
      })
      .finally(() => {
        // The next tick starts it again from the stored position, if this node still leads.
        if (this.#followers.get(tenantId)?.abort === abort) this.#followers.delete(tenantId);
      });
    this.#followers.set(tenantId, { abort, done });
  }

  async #relay(tenantId: string, signal: AbortSignal): Promise<void> {
    let cursor = await this.#cursor(tenantId);
    for (;;) {
      try {
        for await (const batch of this.#kv.watch(tenantId, '', cursor + 1, signal)) {
          const relayed = this.#routes.flatMap((r) => r.events(tenantId, batch));
          if (relayed.length === 0) continue;
          await this.#append(tenantId, cursor, batch.revision, relayed);
          cursor = batch.revision;
        }
        return;
      } catch (err) {
        if (!(err instanceof KvCompactedError) || signal.aborted) throw err;
      }
      // The relay was away longer than the KV keeps changes: tell every topic it feeds.
      const revision = await this.#kv.revision(tenantId);
      const streams = await this.#streams(tenantId);
      this.#log.warn(
        { tenantId, from: cursor, to: revision },
        'topic relay: changes were compacted before they were relayed; sending resync',
      );
      await this.#append(
        tenantId,
        cursor,
        revision,
        streams.map((stream) => ({
          stream,
          event: { type: 'resync', data: { type: 'resync', revision } },
        })),
      );
      cursor = revision;
    }
  }

  /**
   * The stored position; a tenant seen for the first time starts at its beginning, so that
   * the changes of a new tenant's first second are relayed too (and, after an upgrade, what
   * the KV still retains: a compacted start is a resync of no existing stream).
   */
  async #cursor(tenantId: string): Promise<number> {
    const row = await this.#store.db
      .selectFrom('kv_relay_cursors')
      .select('revision')
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    if (row !== undefined) return Number(row.revision);
    await this.#store.db
      .insertInto('kv_relay_cursors')
      .values({ tenant_id: tenantId, revision: 0, updated_at: new Date().toISOString() })
      .onConflict((oc) => oc.column('tenant_id').doNothing())
      .execute();
    return this.#cursor(tenantId);
  }

  async #append(
    tenantId: string,
    from: number,
    to: number,
    relayed: RelayedEvent[],
  ): Promise<void> {
    const byStream = new Map<string, NewEvent[]>();
    for (const { stream, event } of relayed) {
      const list = byStream.get(stream);
      if (list === undefined) byStream.set(stream, [event]);
      else list.push(event);
    }
    await this.#events.transaction(async (trx, emit) => {
      const moved = await trx
        .updateTable('kv_relay_cursors')
        .set({ revision: to, updated_at: new Date().toISOString() })
        .where('tenant_id', '=', tenantId)
        .where('revision', '=', from)
        .executeTakeFirst();
      // Another node relayed this meanwhile (leadership moved): it owns the stream now.
      if (Number(moved.numUpdatedRows) !== 1) throw new LostCursorError();
      for (const [stream, events] of byStream) await emit(stream, tenantId, events);
    });
  }

  /** The relayed streams of a tenant that exist. */
  #streams(tenantId: string): Promise<string[]> {
    return this.#events.streamsWithPrefix(
      tenantId,
      this.#routes.map((r) => r.streamPrefix(tenantId)),
    );
  }
}
