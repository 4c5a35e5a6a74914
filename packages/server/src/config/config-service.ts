import type {
  ConfigActor,
  ConfigDeleted,
  ConfigEnvironment,
  ConfigHistoryEntry,
  ConfigItem,
  ConfigSchema,
  ConfigWatchEvent,
} from '@orchestra/protocol';
import type { ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import type { RelayRoute } from '../kv/index.ts';
import {
  type KvChange,
  type KvChangeBatch,
  KvCompactedError,
  type KvEntry,
  KvLeaseNotFoundError,
  type KvStore,
} from '../kv/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { describeSchemaError, invalidField } from '../platform/envelope.ts';
import { ApiError } from '../platform/errors.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import { UserSchemaCompiler } from '../platform/user-schema.ts';
import { jsonWithinLimit } from '../platform/value-limits.ts';
import { configStream } from '../realtime/index.ts';
import { type JsonChange, jsonDiff } from './diff.ts';
import {
  counterKey,
  historyKey,
  historyPrefix,
  keyOfValueKey,
  SCHEMA_PREFIX,
  schemaKey,
  VALUE_PREFIX,
  valueKey,
  valuePrefix,
  versionOfHistoryKey,
} from './keys.ts';

// What the service answers is the wire contract's (@orchestra/protocol), under the names
// this module has always used.
export type { ConfigEnvironment, ConfigItem };
/** Who changed something, as kept in history. */
export type Actor = ConfigActor;
export type DeletedItem = ConfigDeleted;
export type HistoryEntry = ConfigHistoryEntry;
export type ConfigSchemaItem = ConfigSchema;

/** What the KV holds for a config value. */
interface ValueRecord {
  value: unknown;
  version: number;
  at: string;
  by: Actor;
}

interface HistoryRecord {
  type: 'put' | 'delete';
  value?: unknown;
  at: string;
  by: Actor;
  reason?: string;
}

interface SchemaRecord {
  schema: Record<string, unknown>;
  at: string;
  by: Actor;
}

/** A change a watch sends, or a page of a resync. */
export type WatchEvent = ConfigWatchEvent;

export interface ConfigSettings {
  defaultEnv: string;
  /** Changes kept per key (ORCHESTRA_CONFIG_HISTORY_MAX_VERSIONS). */
  historyMaxVersions: number;
}

/** Writes race on the per-key counter; a writer that loses retries this many times. */
const WRITE_ATTEMPTS = 8;
const SNAPSHOT_PAGE = 500;

export function actorOf(principal: Principal): Actor {
  return {
    type: principal.type,
    id: credentialId(principal),
    name: principal.type === 'api_key' ? principal.keyName : principal.subject,
  };
}

function parse<T>(entry: KvEntry): T {
  return JSON.parse(entry.value) as T;
}

function itemOf(env: string, entry: KvEntry): ConfigItem {
  const record = parse<ValueRecord>(entry);
  return {
    key: keyOfValueKey(env, entry.key),
    env,
    value: record.value,
    version: record.version,
    revision: entry.modRevision,
    updated_at: record.at,
    updated_by: record.by,
    lease: entry.lease ?? null,
  };
}

const notFound = (env: string, key: string) =>
  new ApiError('CONFIG_KEY_NOT_FOUND', `No key ${key} in environment ${env}`, {
    details: { key, env },
  });

/**
 * The config center: hierarchical JSON values per tenant and environment, kept in the KV
 * port (embedded or etcd) with a version per key, a revision per change, a history with
 * actor and reason, JSON Schemas per key prefix, and a watch that resumes from a revision
 * or resyncs with a snapshot when that revision is gone.
 */
export class ConfigService {
  readonly kv: KvStore;
  readonly settings: ConfigSettings;
  readonly #log: Logger;
  readonly #compiler = new UserSchemaCompiler();
  readonly #keyLimit: TenantLimit;
  /** Compiled schemas by tenant and prefix, with the revision they were compiled at. */
  readonly #validators = new Map<string, { revision: number; validate: ValidateFunction }>();

  readonly #limits: TenantLimitSource;

  constructor(deps: {
    kv: KvStore;
    settings: ConfigSettings;
    log: Logger;
    /** Each tenant's largest value and most keys (all environments together). */
    limits: TenantLimitSource;
  }) {
    this.kv = deps.kv;
    this.settings = deps.settings;
    this.#log = deps.log;
    this.#limits = deps.limits;
    this.#keyLimit = new TenantLimit({
      name: 'max_config_keys',
      limits: deps.limits,
      what: 'config keys',
      count: (tenantId) => this.kv.count(tenantId, VALUE_PREFIX),
    });
  }

  async get(tenantId: string, env: string, key: string): Promise<ConfigItem> {
    const entry = await this.kv.get(tenantId, valueKey(env, key));
    if (entry === undefined) throw notFound(env, key);
    return itemOf(env, entry);
  }

  async list(
    tenantId: string,
    env: string,
    query: { prefix: string; after?: string; limit: number; revision?: number },
  ): Promise<{ items: ConfigItem[]; revision: number; more: boolean }> {
    try {
      const page = await this.kv.range(tenantId, {
        prefix: valuePrefix(env, query.prefix),
        limit: query.limit,
        ...(query.after !== undefined ? { after: valueKey(env, query.after) } : {}),
        ...(query.revision !== undefined ? { revision: query.revision } : {}),
      });
      return {
        items: page.entries.map((e) => itemOf(env, e)),
        revision: page.revision,
        more: page.more,
      };
    } catch (err) {
      if (err instanceof KvCompactedError) throw compacted(err, query.revision ?? 0);
      throw err;
    }
  }

  /**
   * The environments that hold at least one key, with how many keys each holds, in the
   * order of their keys (`prod-eu` before `prod`), after `after`, at most `limit`. An
   * environment exists only through its keys: the last one deleted, it is gone.
   */
  async environments(
    tenantId: string,
    query: { after?: string; limit: number },
  ): Promise<{ items: ConfigEnvironment[]; more: boolean }> {
    const page = await this.kv.folders(tenantId, {
      prefix: VALUE_PREFIX,
      limit: query.limit,
      ...(query.after !== undefined ? { after: query.after } : {}),
    });
    return { items: page.folders.map((f) => ({ env: f.name, keys: f.keys })), more: page.more };
  }

  /** Puts a value: create or update; `ifMatch` (a version) or `ifNoneMatch` (create only) guard it. */
  async put(
    principal: Principal,
    env: string,
    key: string,
    input: {
      value: unknown;
      reason?: string | undefined;
      lease?: string | undefined;
      ifMatch?: number | undefined;
      ifNoneMatch?: boolean | undefined;
    },
  ): Promise<{ item: ConfigItem; created: boolean }> {
    const tenantId = principal.tenant.id;
    jsonWithinLimit(
      input.value,
      'body.value',
      await this.#limits.get(tenantId, 'config_value_max_bytes'),
    );
    await this.#validate(tenantId, key, input.value);
    const done = await this.#change(principal, env, key, {
      type: 'put',
      value: input.value,
      reason: input.reason,
      lease: input.lease,
      ifMatch: input.ifMatch,
      ifNoneMatch: input.ifNoneMatch,
    });
    return {
      item: {
        key,
        env,
        value: input.value,
        version: done.version,
        revision: done.revision,
        updated_at: done.at,
        updated_by: done.by,
        lease: input.lease ?? null,
      },
      created: !done.existed,
    };
  }

  async delete(
    principal: Principal,
    env: string,
    key: string,
    input: { reason?: string | undefined; ifMatch?: number | undefined },
  ): Promise<DeletedItem> {
    const done = await this.#change(principal, env, key, {
      type: 'delete',
      reason: input.reason,
      ifMatch: input.ifMatch,
    });
    return { key, env, deleted: true, version: done.version, revision: done.revision };
  }

  /** One change through the key's counter, retried when another writer got there first. */
  async #change(
    principal: Principal,
    env: string,
    key: string,
    change: {
      type: 'put' | 'delete';
      value?: unknown;
      reason?: string | undefined;
      lease?: string | undefined;
      ifMatch?: number | undefined;
      ifNoneMatch?: boolean | undefined;
    },
  ): Promise<{ version: number; revision: number; at: string; by: Actor; existed: boolean }> {
    const tenantId = principal.tenant.id;
    const by = actorOf(principal);
    for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
      const [counter, current] = await Promise.all([
        this.kv.get(tenantId, counterKey(env, key)),
        this.kv.get(tenantId, valueKey(env, key)),
      ]);
      const version = counter?.version ?? 0;
      const exists = current !== undefined;
      const currentVersion = exists ? parse<ValueRecord>(current).version : undefined;
      if (change.ifMatch !== undefined && currentVersion !== change.ifMatch)
        throw preconditionFailed(key, env, currentVersion);
      if (change.ifNoneMatch && exists) throw preconditionFailed(key, env, currentVersion);
      if (change.type === 'delete' && !exists) throw notFound(env, key);
      if (change.type === 'put' && !exists) await this.#keyLimit.check(tenantId);
      const next = version + 1;
      const at = new Date().toISOString();
      const history: HistoryRecord = {
        type: change.type,
        ...(change.type === 'put' ? { value: change.value } : {}),
        at,
        by,
        ...(change.reason !== undefined ? { reason: change.reason } : {}),
      };
      const record: ValueRecord = { value: change.value, version: next, at, by };
      let result: Awaited<ReturnType<KvStore['txn']>>;
      try {
        result = await this.kv.txn(tenantId, {
          // Both keys, because the two reads above are not one snapshot: a value read
          // before another writer's commit and a counter read after it must not pass.
          compare: [
            { key: counterKey(env, key), version },
            { key: valueKey(env, key), version: current?.version ?? 0 },
          ],
          ops: [
            change.type === 'put'
              ? {
                  type: 'put',
                  key: valueKey(env, key),
                  value: JSON.stringify(record),
                  ...(change.lease !== undefined ? { lease: change.lease } : {}),
                }
              : { type: 'delete', key: valueKey(env, key) },
            { type: 'put', key: counterKey(env, key), value: String(next) },
            { type: 'put', key: historyKey(env, key, next), value: JSON.stringify(history) },
            // Retention by count: each write drops the one change that falls out.
            ...(next > this.settings.historyMaxVersions
              ? [
                  {
                    type: 'delete' as const,
                    key: historyKey(env, key, next - this.settings.historyMaxVersions),
                  },
                ]
              : []),
          ],
        });
      } catch (err) {
        if (err instanceof KvLeaseNotFoundError)
          throw new ApiError(
            'LEASE_NOT_FOUND',
            `Lease ${err.leaseId} does not exist or has expired`,
            {
              details: { lease: err.leaseId },
            },
          );
        throw err;
      }
      if (!result.succeeded) continue; // another writer changed the key: look again
      return { version: next, revision: result.revision, at, by, existed: exists };
    }
    throw new ApiError('WRITE_CONFLICT', `Key ${key} kept changing; try again`, {
      details: { key, env },
    });
  }

  /** History entries, newest first; `before` continues from an earlier page. */
  async history(
    tenantId: string,
    env: string,
    key: string,
    query: { limit: number; before?: number },
  ): Promise<{ items: HistoryEntry[]; next_before: number | null }> {
    const counter = await this.kv.get(tenantId, counterKey(env, key));
    const newest = Math.min(counter?.version ?? 0, (query.before ?? Number.MAX_SAFE_INTEGER) - 1);
    if (newest < 1) {
      if (counter === undefined) throw notFound(env, key);
      return { items: [], next_before: null };
    }
    const oldest = Math.max(1, newest - query.limit + 1);
    const page = await this.kv.range(tenantId, {
      prefix: historyPrefix(env, key),
      ...(oldest > 1 ? { after: historyKey(env, key, oldest - 1) } : {}),
      limit: newest - oldest + 1,
    });
    const items = page.entries
      .filter((e) => versionOfHistoryKey(e.key) <= newest)
      .map((e) => historyEntryOf(e))
      .reverse();
    return { items, next_before: oldest > 1 ? oldest : null };
  }

  async version(
    tenantId: string,
    env: string,
    key: string,
    version: number,
  ): Promise<HistoryEntry> {
    const entry = await this.kv.get(tenantId, historyKey(env, key, version));
    if (entry === undefined)
      throw new ApiError(
        'CONFIG_VERSION_NOT_FOUND',
        `Key ${key} in ${env} has no version ${version} (never written, or past the history retention)`,
        { details: { key, env, version } },
      );
    return historyEntryOf(entry);
  }

  async diff(
    tenantId: string,
    env: string,
    key: string,
    from: number,
    to: number | undefined,
  ): Promise<{
    key: string;
    env: string;
    from: HistoryEntry;
    to: HistoryEntry;
    changes: JsonChange[];
  }> {
    let target = to;
    if (target === undefined) {
      const counter = await this.kv.get(tenantId, counterKey(env, key));
      if (counter === undefined) throw notFound(env, key);
      target = counter.version;
    }
    const [a, b] = await Promise.all([
      this.version(tenantId, env, key, from),
      this.version(tenantId, env, key, target),
    ]);
    return { key, env, from: a, to: b, changes: jsonDiff(a.value, b.value) };
  }

  /** Writes what `version` held as a new change (a delete if it was one). */
  async revert(
    principal: Principal,
    env: string,
    key: string,
    input: { version: number; reason?: string | undefined; ifMatch?: number | undefined },
  ): Promise<ConfigItem | DeletedItem> {
    const old = await this.version(principal.tenant.id, env, key, input.version);
    const reason = input.reason ?? `revert to version ${input.version}`;
    if (old.type === 'delete') {
      return this.delete(principal, env, key, { reason, ifMatch: input.ifMatch });
    }
    return (
      await this.put(principal, env, key, { value: old.value, reason, ifMatch: input.ifMatch })
    ).item;
  }

  // Schemas.

  async putSchema(
    principal: Principal,
    prefix: string,
    schema: unknown,
  ): Promise<ConfigSchemaItem> {
    const check = this.#compiler.check(schema);
    if (!check.ok) {
      const at = check.field === undefined ? '' : `.${check.field}`;
      throw invalidField(`body.schema${at}`, check.message);
    }
    const record: SchemaRecord = {
      schema: schema as Record<string, unknown>,
      at: new Date().toISOString(),
      by: actorOf(principal),
    };
    await this.kv.txn(principal.tenant.id, {
      compare: [],
      ops: [{ type: 'put', key: schemaKey(prefix), value: JSON.stringify(record) }],
    });
    return { prefix, schema: record.schema, updated_at: record.at, updated_by: record.by };
  }

  async getSchema(tenantId: string, prefix: string): Promise<ConfigSchemaItem> {
    const entry = await this.kv.get(tenantId, schemaKey(prefix));
    if (entry === undefined) throw schemaNotFound(prefix);
    return schemaItemOf(entry);
  }

  async listSchemas(tenantId: string): Promise<ConfigSchemaItem[]> {
    const out: ConfigSchemaItem[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.kv.range(tenantId, {
        prefix: SCHEMA_PREFIX,
        limit: SNAPSHOT_PAGE,
        ...(after !== undefined ? { after } : {}),
      });
      out.push(...page.entries.map(schemaItemOf));
      if (!page.more) return out;
      after = page.entries[page.entries.length - 1]?.key;
    }
  }

  async deleteSchema(tenantId: string, prefix: string): Promise<void> {
    const existing = await this.kv.get(tenantId, schemaKey(prefix));
    if (existing === undefined) throw schemaNotFound(prefix);
    await this.kv.txn(tenantId, { compare: [], ops: [{ type: 'delete', key: schemaKey(prefix) }] });
  }

  /**
   * Checks a value against every schema whose prefix the key starts with. The schemas are
   * read on every write (another node may have changed them); compiled validators are
   * kept per schema revision.
   */
  async #validate(tenantId: string, key: string, value: unknown): Promise<void> {
    const schemas = await this.kv.range(tenantId, { prefix: SCHEMA_PREFIX, limit: 1000 });
    for (const entry of schemas.entries) {
      const prefix = entry.key.slice(SCHEMA_PREFIX.length);
      if (!key.startsWith(prefix)) continue;
      const cacheKey = `${tenantId}\u0000${prefix}`;
      let cached = this.#validators.get(cacheKey);
      if (cached?.revision !== entry.modRevision) {
        const check = this.#compiler.check(schemaItemOf(entry).schema);
        if (!check.ok) {
          this.#log.warn({ prefix }, 'a stored config schema no longer compiles; skipped');
          continue;
        }
        cached = { revision: entry.modRevision, validate: check.validate };
        this.#validators.set(cacheKey, cached);
      }
      if (!cached.validate(value)) {
        const error = describeSchemaError('body.value', cached.validate.errors);
        throw new ApiError('VALIDATION_FAILED', `${error.message} (schema of prefix "${prefix}")`, {
          details: { ...(error.details ?? {}), schema_prefix: prefix },
        });
      }
    }
  }

  // Watch.

  /**
   * Changes under `prefix` after `afterRevision`: puts and deletes as they happen. When
   * that revision is no longer retained, a `resync` snapshot (in pages) comes first, then
   * the changes after it.
   */
  async *watch(
    tenantId: string,
    env: string,
    prefix: string,
    afterRevision: number | undefined,
    signal: AbortSignal,
  ): AsyncIterable<WatchEvent> {
    let from =
      afterRevision === undefined ? (await this.kv.revision(tenantId)) + 1 : afterRevision + 1;
    for (;;) {
      try {
        for await (const batch of this.kv.watch(tenantId, valuePrefix(env, prefix), from, signal)) {
          yield* eventsOf(env, batch);
          from = batch.revision + 1;
        }
        return;
      } catch (err) {
        if (!(err instanceof KvCompactedError)) throw err;
      }
      // Too far behind: a snapshot, then the changes after it.
      let after: string | undefined;
      let revision: number | undefined;
      for (;;) {
        const page = await this.list(tenantId, env, {
          prefix,
          limit: SNAPSHOT_PAGE,
          ...(after !== undefined ? { after } : {}),
          ...(revision !== undefined ? { revision } : {}),
        });
        revision = page.revision;
        yield { type: 'resync', revision, items: page.items, more: page.more };
        if (!page.more) break;
        after = page.items[page.items.length - 1]?.key;
      }
      from = revision + 1;
    }
  }
}

/** Relays config changes to the realtime topics `config.<env>`. */
export const configRelayRoute: RelayRoute = {
  events: (tenantId, batch) => {
    const byEnv = new Map<string, KvChange[]>();
    for (const change of batch.changes) {
      const match = /^c\/([^/]+)\//.exec(change.key);
      if (match?.[1] === undefined) continue;
      const list = byEnv.get(match[1]);
      if (list === undefined) byEnv.set(match[1], [change]);
      else list.push(change);
    }
    return [...byEnv].flatMap(([env, changes]) =>
      [...eventsOf(env, { revision: batch.revision, changes })].map((e) => ({
        stream: configStream(tenantId, env),
        event: { type: e.type, data: e },
      })),
    );
  },
  streamPrefix: (tenantId) => configStream(tenantId, ''),
};

/**
 * The watch event of each change, made once: a node's watchers of one tenant share the
 * change objects (one feed per tenant), so a thousand watchers parse a value once, and the
 * routes can encode the shared event once too. Events are never modified once made.
 */
const eventOfChange = new WeakMap<KvChange, WatchEvent>();

function* eventsOf(env: string, batch: KvChangeBatch): Iterable<WatchEvent> {
  for (const change of batch.changes) {
    let event = eventOfChange.get(change);
    if (event === undefined) {
      event = watchEventOf(env, change, batch.revision);
      eventOfChange.set(change, event);
    }
    yield event;
  }
}

function watchEventOf(env: string, change: KvChange, revision: number): WatchEvent {
  const key = keyOfValueKey(env, change.key);
  const prev =
    change.prevValue !== undefined ? (JSON.parse(change.prevValue) as ValueRecord).value : null;
  if (change.type === 'delete') return { type: 'delete', key, prev_value: prev, revision };
  const record = JSON.parse(change.value ?? 'null') as ValueRecord;
  return {
    type: 'put',
    key,
    value: record.value,
    prev_value: prev,
    version: record.version,
    revision,
  };
}

function historyEntryOf(entry: KvEntry): HistoryEntry {
  const record = parse<HistoryRecord>(entry);
  return {
    version: versionOfHistoryKey(entry.key),
    revision: entry.modRevision,
    type: record.type,
    ...(record.type === 'put' ? { value: record.value } : {}),
    at: record.at,
    by: record.by,
    reason: record.reason ?? null,
  };
}

function schemaItemOf(entry: KvEntry): ConfigSchemaItem {
  const record = parse<SchemaRecord>(entry);
  return {
    prefix: entry.key.slice(SCHEMA_PREFIX.length),
    schema: record.schema,
    updated_at: record.at,
    updated_by: record.by,
  };
}

function preconditionFailed(key: string, env: string, current: number | undefined): ApiError {
  return new ApiError(
    'PRECONDITION_FAILED',
    current === undefined
      ? `Key ${key} does not exist in ${env}`
      : `Key ${key} in ${env} is at version ${current}`,
    { details: { key, env, current_version: current ?? null } },
  );
}

function schemaNotFound(prefix: string): ApiError {
  return new ApiError('CONFIG_SCHEMA_NOT_FOUND', `No schema for prefix "${prefix}"`, {
    details: { prefix },
  });
}

function compacted(err: KvCompactedError, revision: number): ApiError {
  return new ApiError(
    'REVISION_COMPACTED',
    `Revision ${revision} is no longer retained; list without a revision`,
    { details: { revision, oldest_revision: err.oldestRevision ?? null } },
  );
}
