import { type PutSecret, SECRET_VALUE_MAX_BYTES, type Secret } from '@orchestra/protocol';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { type SecretBox, SecretKeyMismatchError } from '../platform/secret-box.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import { countRows, isUniqueViolation, type RelationalStore } from '../store/store.ts';
import { replaceReferences, secretReferences } from './references.ts';
import type { SecretsTable } from './tables.ts';

const SECRET_ID_PREFIX = 'sec_';
/** Rows re-sealed per query of a rotation pass. */
const RESEAL_BATCH = 100;
/** Tries of a put that races another put or delete of the same name. */
const PUT_ATTEMPTS = 5;

/** What a secret's sealed value is bound to: its row. */
const valueContext = (id: string) => `secrets.value:${id}`;

export interface ListSecretsOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  name_prefix?: string | undefined;
  /** About the most bytes of JSON the page may carry (ORCHESTRA_RESPONSE_MAX_BYTES). */
  maxBytes: number;
}

/** What a rotation pass did: counts only, never names of values. */
export interface ResealReport {
  resealed: number;
  unreadable: number;
}

/** The error for a name with no secret in the tenant: it names the secret, nothing else. */
export function secretNotFound(name: string): ApiError {
  return new ApiError('SECRET_NOT_FOUND', `No secret named ${name} exists in this tenant`, {
    details: { name },
  });
}

function toSecret(row: SecretsTable): Secret {
  return {
    name: row.name,
    version: row.version,
    description: row.description,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

/**
 * Named secrets of each tenant, sealed at rest with the node's keyring. The API is
 * write-only: nothing here returns a value except `resolve` and `expand`, which other
 * modules call to fill in configs, and which never reach a route.
 */
export class SecretService {
  readonly #store: RelationalStore;
  readonly #box: SecretBox;
  readonly #log: Logger;
  readonly #limit: TenantLimit | undefined;

  /** `limits`: each tenant's most secrets (none: no limit, for tools outside a server). */
  constructor(deps: {
    store: RelationalStore;
    box: SecretBox;
    log: Logger;
    limits?: TenantLimitSource;
  }) {
    this.#store = deps.store;
    this.#box = deps.box;
    this.#log = deps.log;
    this.#limit =
      deps.limits &&
      new TenantLimit({
        name: 'max_secrets',
        limits: deps.limits,
        what: 'secrets',
        count: (tenantId) => countRows(this.#store.db, 'secrets', { tenant_id: tenantId }),
      });
  }

  /** Creates the secret (version 1) or replaces its value (version n + 1). */
  async put(
    principal: Principal,
    name: string,
    body: PutSecret,
  ): Promise<{ secret: Secret; created: boolean }> {
    const bytes = Buffer.byteLength(body.value);
    if (bytes > SECRET_VALUE_MAX_BYTES) {
      throw new ApiError(
        'VALUE_TOO_LARGE',
        `value is ${bytes} bytes; the most is ${SECRET_VALUE_MAX_BYTES}`,
        {
          details: { field: 'value', max_bytes: SECRET_VALUE_MAX_BYTES, actual_bytes: bytes },
        },
      );
    }
    const tenantId = principal.tenant.id;
    const db = this.#store.db;
    for (let attempt = 1; attempt <= PUT_ATTEMPTS; attempt++) {
      const now = new Date().toISOString();
      const existing = await db
        .selectFrom('secrets')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .where('name', '=', name)
        .executeTakeFirst();
      if (existing !== undefined) {
        const row = await db
          .updateTable('secrets')
          .set({
            value: this.#box.seal(body.value, valueContext(existing.id)),
            key_id: this.#box.keyId,
            version: sql<number>`version + 1`,
            updated_at: now,
            ...(body.description !== undefined ? { description: body.description } : {}),
          })
          .where('id', '=', existing.id)
          .returningAll()
          .executeTakeFirst();
        // Deleted in between: create it.
        if (row !== undefined) return { secret: toSecret(row), created: false };
        continue;
      }
      await this.#limit?.check(tenantId);
      const id = newId(SECRET_ID_PREFIX);
      const row: SecretsTable = {
        id,
        tenant_id: tenantId,
        name,
        version: 1,
        value: this.#box.seal(body.value, valueContext(id)),
        key_id: this.#box.keyId,
        description: body.description ?? '',
        created_at: now,
        updated_at: now,
      };
      try {
        await db.insertInto('secrets').values(row).execute();
        return { secret: toSecret(row), created: true };
      } catch (err) {
        // Created in between: replace it.
        if (!isUniqueViolation(err)) throw err;
      }
    }
    throw new ApiError('WRITE_CONFLICT', `The secret ${name} kept changing; try again`);
  }

  async list(
    principal: Principal,
    options: ListSecretsOptions,
  ): Promise<{ items: Secret[]; next_cursor: string | null }> {
    const after = decodeCursor(options.cursor, (id) => id.startsWith(SECRET_ID_PREFIX));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('secrets')
      .select(['id', 'name', 'version', 'description', 'created_at', 'updated_at'])
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    if (options.name_prefix) {
      // An exact, case-sensitive prefix on both stores, whatever the collation.
      query = query.where(
        sql`substr(name, 1, ${options.name_prefix.length})`,
        '=',
        options.name_prefix,
      );
    }
    const rows = await query.execute();
    return toPage(rows, limit, (row) => toSecret(row as SecretsTable), options.maxBytes);
  }

  async get(principal: Principal, name: string): Promise<Secret> {
    return toSecret(await this.#row(principal.tenant.id, name));
  }

  async delete(principal: Principal, name: string): Promise<void> {
    const result = await this.#store.db
      .deleteFrom('secrets')
      .where('tenant_id', '=', principal.tenant.id)
      .where('name', '=', name)
      .executeTakeFirst();
    if (result.numDeletedRows === 0n) throw secretNotFound(name);
  }

  /** Value of the tenant's named secret. Throws SECRET_NOT_FOUND (or SECRET_UNREADABLE). */
  async resolve(tenantId: string, name: string): Promise<string> {
    const row = await this.#row(tenantId, name);
    try {
      return this.#box.open(row.value, valueContext(row.id));
    } catch (err) {
      if (!(err instanceof SecretKeyMismatchError)) throw err;
      throw new ApiError(
        'SECRET_UNREADABLE',
        `The secret ${name} was sealed with key ${row.key_id}, which this node does not have`,
        { details: { name, key_id: row.key_id } },
      );
    }
  }

  /**
   * Replaces every `${secret:NAME}` reference in `text`; returns the expanded text and the
   * values used, so that callers can redact them. An unknown name throws SECRET_NOT_FOUND
   * naming the secret (the name only).
   */
  async expand(tenantId: string, text: string): Promise<{ text: string; values: string[] }> {
    const values = new Map<string, string>();
    for (const name of secretReferences(text)) values.set(name, await this.resolve(tenantId, name));
    return {
      text: replaceReferences(text, (name) => values.get(name) as string),
      values: [...new Set(values.values())],
    };
  }

  /**
   * Seals every secret not sealed with the current key again with it (a rotation, decision
   * 0016). A value that no key of the ring opens is counted and left as it is: the secret
   * stays unreadable (SECRET_UNREADABLE) until the missing key is configured, and nothing
   * else stops working.
   */
  async resealAll(signal?: AbortSignal): Promise<ResealReport> {
    const report: ResealReport = { resealed: 0, unreadable: 0 };
    const current = this.#box.keyId;
    let after = '';
    for (;;) {
      if (signal?.aborted) break;
      const rows = await this.#store.db
        .selectFrom('secrets')
        .select(['id', 'tenant_id', 'name', 'value', 'key_id'])
        .where('key_id', '<>', current)
        .where('id', '>', after)
        .orderBy('id')
        .limit(RESEAL_BATCH)
        .execute();
      for (const row of rows) {
        let value: string;
        try {
          value = this.#box.reseal(row.value, valueContext(row.id));
        } catch (err) {
          if (!(err instanceof SecretKeyMismatchError)) throw err;
          report.unreadable += 1;
          this.#log.warn(
            { tenant_id: row.tenant_id, secret: row.name, key_id: row.key_id },
            'a secret does not open with any key of this node; set the key it was sealed with in ORCHESTRA_SECRETS_PREVIOUS_KEYS',
          );
          continue;
        }
        // Unless it was replaced meanwhile (then it is sealed with the current key already).
        const result = await this.#store.db
          .updateTable('secrets')
          .set({ value, key_id: current })
          .where('id', '=', row.id)
          .where('value', '=', row.value)
          .executeTakeFirst();
        if (result.numUpdatedRows > 0n) report.resealed += 1;
      }
      const last = rows[rows.length - 1];
      if (last === undefined || rows.length < RESEAL_BATCH) break;
      after = last.id;
    }
    return report;
  }

  async #row(tenantId: string, name: string): Promise<SecretsTable> {
    const row = await this.#store.db
      .selectFrom('secrets')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .executeTakeFirst();
    if (row === undefined) throw secretNotFound(name);
    return row;
  }
}
