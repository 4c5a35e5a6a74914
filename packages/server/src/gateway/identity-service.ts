import { createHash } from 'node:crypto';
import type { Selectable } from 'kysely';
import type { Logger } from 'pino';
import {
  credentialId,
  isSystemAdmin,
  type Principal,
  type Role,
  type TenantRef,
} from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId, randomBase62 } from '../platform/ids.ts';
import type { JwtVerifier } from '../platform/jwt.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import {
  effectiveLimits,
  type TenantLimitName,
  type TenantLimitOverrides,
} from '../platform/tenant-limits.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { ApiKeysTable, TenantsTable } from './tables.ts';

type Tenant = Selectable<TenantsTable>;

import { SYSTEM_TENANT_ID } from '@orchestra/protocol';
import { parseLimits, type TenantLimitStore } from './tenant-limit-store.ts';

export const API_KEY_PREFIX = 'ork_';
const SECRET_LENGTH = 40;
const DISPLAY_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;
/** `last_used_at` is a hint, not an audit log: write it at most this often per key. */
const LAST_USED_WRITE_INTERVAL_MS = 60_000;

export { SYSTEM_TENANT_ID };

/** Verified keys kept at most; the oldest are dropped first. */
const KEY_CACHE_MAX_ENTRIES = 10_000;

type ApiKeyPrincipal = Extract<Principal, { type: 'api_key' }>;

interface CachedKey {
  principal: ApiKeyPrincipal;
  /** performance.now() after which the store is asked again. */
  freshUntil: number;
}

export type ApiKeyStatus = 'active' | 'revoked' | 'expired';

/** An API key as clients see it: never the secret or its hash. */
export interface ApiKeyView {
  id: string;
  tenant_id: string;
  name: string;
  role: Role;
  prefix: string;
  status: ApiKeyStatus;
  created_at: string;
  created_by: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface TenantView {
  id: string;
  name: string;
  kind: 'system' | 'standard';
  created_at: string;
  /** Every limit's value for this tenant: its own where set, else the node's setting. */
  limits: Record<TenantLimitName, number>;
  /** The limits set for this tenant. */
  limit_overrides: TenantLimitOverrides;
}

/** A change to a tenant: its name, and limits to set (a number) or remove (`null`). */
export interface TenantChange {
  name?: string | undefined;
  limits?: Partial<Record<TenantLimitName, number | null>> | undefined;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

function keyStatus(row: ApiKeysTable, now: Date): ApiKeyStatus {
  if (row.revoked_at !== null) return 'revoked';
  if (row.expires_at !== null && Date.parse(row.expires_at) <= now.getTime()) return 'expired';
  return 'active';
}

function keyView(row: ApiKeysTable, now = new Date()): ApiKeyView {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    role: row.role,
    prefix: row.prefix,
    status: keyStatus(row, now),
    created_at: row.created_at,
    created_by: row.created_by,
    expires_at: row.expires_at,
    revoked_at: row.revoked_at,
    last_used_at: row.last_used_at,
  };
}

function tenantView(row: Tenant, defaults: Record<TenantLimitName, number>): TenantView {
  const overrides = parseLimits(row.limits);
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    created_at: row.created_at,
    limits: effectiveLimits(defaults, overrides),
    limit_overrides: overrides,
  };
}

/**
 * Tenants, API keys and credential resolution. Every method that takes a principal scopes
 * what it reads and writes to the principal's tenant; only system admins see other tenants.
 */
export class IdentityService {
  readonly #store: RelationalStore;
  readonly #jwt: JwtVerifier;
  readonly #log: Logger;
  readonly #lastUsedWrites = new Map<string, number>();
  readonly #keyCacheTtlMs: number;
  /** Verified keys by secret hash: most requests then need no store lookup. */
  readonly #keyCache = new Map<string, CachedKey>();
  readonly #limits: TenantLimitStore;

  constructor(deps: {
    store: RelationalStore;
    jwt: JwtVerifier;
    log: Logger;
    /** How long a verified key is reused without asking the store; 0 turns caching off. */
    keyCacheTtlMs?: number;
    /** Tenants' limits, to show with each tenant and to refresh when one changes. */
    limits: TenantLimitStore;
  }) {
    this.#limits = deps.limits;
    this.#store = deps.store;
    this.#jwt = deps.jwt;
    this.#log = deps.log;
    this.#keyCacheTtlMs = deps.keyCacheTtlMs ?? 0;
  }

  /**
   * Resolves a bearer credential: an `ork_` API key or a JWT. Throws a 401 `ApiError` for a
   * missing, unknown, revoked or expired credential.
   */
  async authenticate(headers: {
    authorization?: string | undefined;
    'x-api-key'?: string | string[] | undefined;
  }): Promise<Principal> {
    const token = bearerToken(headers);
    if (token === undefined) {
      throw new ApiError(
        'UNAUTHENTICATED',
        'Send an API key or token as "Authorization: Bearer <credential>"',
      );
    }
    return token.startsWith(API_KEY_PREFIX)
      ? this.#authenticateKey(token)
      : this.#authenticateJwt(token);
  }

  async #authenticateKey(secret: string): Promise<Principal> {
    const hash = hashSecret(secret);
    const cached = this.#keyCache.get(hash);
    if (cached !== undefined && cached.freshUntil > performance.now()) {
      const { principal } = cached;
      if (principal.expiresAt !== null && Date.parse(principal.expiresAt) <= Date.now()) {
        this.#keyCache.delete(hash);
        throw new ApiError('API_KEY_EXPIRED');
      }
      this.#touch(principal.keyId);
      return principal;
    }
    const row = await this.#store.db
      .selectFrom('api_keys')
      .innerJoin('tenants', 'tenants.id', 'api_keys.tenant_id')
      .select([
        'api_keys.id',
        'api_keys.name',
        'api_keys.role',
        'api_keys.prefix',
        'api_keys.expires_at',
        'api_keys.revoked_at',
        'tenants.id as tenant_id',
        'tenants.name as tenant_name',
        'tenants.kind as tenant_kind',
      ])
      .where('api_keys.secret_hash', '=', hash)
      .executeTakeFirst();
    if (row === undefined) throw new ApiError('INVALID_API_KEY');
    if (row.revoked_at !== null) throw new ApiError('API_KEY_REVOKED');
    if (row.expires_at !== null && Date.parse(row.expires_at) <= Date.now()) {
      throw new ApiError('API_KEY_EXPIRED');
    }
    this.#touch(row.id);
    const principal: ApiKeyPrincipal = {
      type: 'api_key',
      tenant: { id: row.tenant_id, name: row.tenant_name, kind: row.tenant_kind },
      role: row.role,
      keyId: row.id,
      keyName: row.name,
      prefix: row.prefix,
      expiresAt: row.expires_at,
    };
    this.#remember(hash, principal);
    return principal;
  }

  #remember(hash: string, principal: ApiKeyPrincipal): void {
    if (this.#keyCacheTtlMs === 0) return;
    if (this.#keyCache.size >= KEY_CACHE_MAX_ENTRIES) {
      const oldest = this.#keyCache.keys().next().value;
      if (oldest !== undefined) this.#keyCache.delete(oldest);
    }
    this.#keyCache.set(hash, { principal, freshUntil: performance.now() + this.#keyCacheTtlMs });
  }

  /** Drops a key from this node's cache, so that its revocation applies here at once. */
  #forget(keyId: string): void {
    for (const [hash, entry] of this.#keyCache) {
      if (entry.principal.keyId === keyId) this.#keyCache.delete(hash);
    }
  }

  async #authenticateJwt(token: string): Promise<Principal> {
    const claims = await this.#jwt.verify(token);
    const tenant = await this.#findTenant(claims.tenantId);
    if (tenant === undefined) {
      throw new ApiError(
        'INVALID_TOKEN',
        `The token names tenant "${claims.tenantId}", which does not exist`,
      );
    }
    return {
      type: 'jwt',
      tenant,
      role: claims.role,
      subject: claims.subject,
      issuer: claims.issuer,
      expiresAt: claims.expiresAt,
    };
  }

  #touch(keyId: string): void {
    const now = Date.now();
    const last = this.#lastUsedWrites.get(keyId);
    if (last !== undefined && now - last < LAST_USED_WRITE_INTERVAL_MS) return;
    this.#lastUsedWrites.set(keyId, now);
    this.#store.db
      .updateTable('api_keys')
      .set({ last_used_at: new Date(now).toISOString() })
      .where('id', '=', keyId)
      .execute()
      .catch((err: unknown) => this.#log.warn({ err, key_id: keyId }, 'could not record key use'));
  }

  async #findTenant(id: string): Promise<TenantRef | undefined> {
    return this.#store.db
      .selectFrom('tenants')
      .select(['id', 'name', 'kind'])
      .where('id', '=', id)
      .executeTakeFirst();
  }

  /**
   * Creates the system tenant and its first admin key if no system tenant exists yet.
   * Returns the key's secret when this call created it, `undefined` when another start
   * (or another node) already had. Safe to run concurrently: the tenant insert decides.
   */
  async bootstrap(): Promise<{ tenant: TenantView; adminKey?: ApiKeyView & { secret: string } }> {
    return this.#store.db.transaction().execute(async (trx) => {
      const now = new Date().toISOString();
      const inserted = await trx
        .insertInto('tenants')
        .values({
          id: SYSTEM_TENANT_ID,
          name: 'Default',
          kind: 'system',
          created_at: now,
          limits: '{}',
        })
        .onConflict((oc) => oc.column('id').doNothing())
        .executeTakeFirst();
      const tenant = await trx
        .selectFrom('tenants')
        .selectAll()
        .where('id', '=', SYSTEM_TENANT_ID)
        .executeTakeFirstOrThrow();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0)
        return { tenant: this.#view(tenant) };
      const { row, secret } = newKeyRow(SYSTEM_TENANT_ID, {
        name: 'bootstrap admin',
        role: 'admin',
        expiresAt: null,
        createdBy: 'bootstrap',
      });
      await trx.insertInto('api_keys').values(row).execute();
      return { tenant: this.#view(tenant), adminKey: { ...keyView(row), secret } };
    });
  }

  /**
   * Creates an admin key in a tenant without any credential: for operators with direct
   * access to the store (`orchestra recover-admin-key`) when every admin key is lost,
   * revoked or expired. Never reachable over HTTP.
   */
  async createRecoveryAdminKey(tenantId: string): Promise<ApiKeyView & { secret: string }> {
    const tenant = await this.#findTenant(tenantId);
    if (tenant === undefined) throw tenantNotFound(tenantId);
    const { row, secret } = newKeyRow(tenantId, {
      name: 'recovery admin',
      role: 'admin',
      expiresAt: null,
      createdBy: 'recovery',
    });
    await this.#store.db.insertInto('api_keys').values(row).execute();
    return { ...keyView(row), secret };
  }

  async createTenant(
    principal: Principal,
    input: { id: string; name?: string | undefined },
  ): Promise<{ tenant: TenantView; admin_key: ApiKeyView & { secret: string } }> {
    if (!isSystemAdmin(principal)) {
      throw new ApiError(
        'PERMISSION_DENIED',
        'Only admins of the system tenant can create tenants',
      );
    }
    const now = new Date().toISOString();
    const tenant: Tenant = {
      id: input.id,
      name: input.name ?? input.id,
      kind: 'standard',
      created_at: now,
      limits: '{}',
    };
    const { row, secret } = newKeyRow(input.id, {
      name: 'tenant admin',
      role: 'admin',
      expiresAt: null,
      createdBy: credentialId(principal),
    });
    try {
      await this.#store.db.transaction().execute(async (trx) => {
        await trx.insertInto('tenants').values(tenant).execute();
        await trx.insertInto('api_keys').values(row).execute();
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'TENANT_ALREADY_EXISTS',
          `A tenant with id "${input.id}" already exists`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    return { tenant: this.#view(tenant), admin_key: { ...keyView(row), secret } };
  }

  async listTenants(
    principal: Principal,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<Page<TenantView>> {
    const after = decodeCursor(page.cursor, (id) => /^[a-z0-9][a-z0-9-]{1,62}$/.test(id));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tenants')
      .selectAll()
      .orderBy('id')
      .limit(limit + 1);
    if (!isSystemAdmin(principal)) query = query.where('id', '=', principal.tenant.id);
    if (after !== undefined) query = query.where('id', '>', after);
    return toPage(await query.execute(), limit, (row) => this.#view(row), page.maxBytes);
  }

  /** Every tenant's id, in order: for the jobs that visit each tenant (health, relay). */
  async tenantIds(): Promise<string[]> {
    const rows = await this.#store.db.selectFrom('tenants').select('id').orderBy('id').execute();
    return rows.map((t) => t.id);
  }

  async getTenant(principal: Principal, id: string): Promise<TenantView> {
    // Other tenants are invisible, not forbidden: a 404 does not confirm they exist.
    if (!isSystemAdmin(principal) && id !== principal.tenant.id) throw tenantNotFound(id);
    const row = await this.#store.db
      .selectFrom('tenants')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw tenantNotFound(id);
    return this.#view(row);
  }

  /**
   * Renames a tenant and sets or removes its limits (system admins only). Limits not named
   * keep their value; `null` removes an override, so the node's setting applies again.
   * Other nodes apply a change within ORCHESTRA_AUTH_CACHE_TTL_MS.
   */
  async updateTenant(principal: Principal, id: string, change: TenantChange): Promise<TenantView> {
    if (!isSystemAdmin(principal)) {
      if (id !== principal.tenant.id) throw tenantNotFound(id);
      throw new ApiError(
        'PERMISSION_DENIED',
        'Only admins of the system tenant can change a tenant or its limits',
      );
    }
    const row = await this.#store.db.transaction().execute(async (trx) => {
      let query = trx.selectFrom('tenants').selectAll().where('id', '=', id);
      // Two concurrent changes of different limits must both land: read under a row lock.
      if (this.#store.kind === 'postgres') query = query.forUpdate();
      const current = await query.executeTakeFirst();
      if (current === undefined) throw tenantNotFound(id);
      const limits: Record<string, number> = parseLimits(current.limits);
      for (const [name, value] of Object.entries(change.limits ?? {})) {
        if (value === null) delete limits[name];
        else if (value !== undefined) limits[name] = value;
      }
      const next: Tenant = {
        ...current,
        name: change.name ?? current.name,
        limits: JSON.stringify(limits),
      };
      await trx
        .updateTable('tenants')
        .set({ name: next.name, limits: next.limits })
        .where('id', '=', id)
        .execute();
      return next;
    });
    this.#limits.forget(id);
    // Cached keys carry the tenant's name; the next request reads it again.
    for (const [hash, entry] of this.#keyCache) {
      if (entry.principal.tenant.id === id) this.#keyCache.delete(hash);
    }
    return this.#view(row);
  }

  #view(row: Tenant): TenantView {
    return tenantView(row, this.#limits.defaults);
  }

  async createApiKey(
    principal: Principal,
    input: { name: string; role: Role; expires_at?: string | undefined },
  ): Promise<ApiKeyView & { secret: string }> {
    let expiresAt: string | null = null;
    if (input.expires_at !== undefined) {
      const ms = Date.parse(input.expires_at);
      if (Number.isNaN(ms) || ms <= Date.now()) {
        throw new ApiError(
          'VALIDATION_FAILED',
          'body.expires_at: must be a date-time in the future',
          {
            details: {
              fields: [{ field: 'body.expires_at', message: 'must be a date-time in the future' }],
            },
          },
        );
      }
      expiresAt = new Date(ms).toISOString();
    }
    const { row, secret } = newKeyRow(principal.tenant.id, {
      name: input.name,
      role: input.role,
      expiresAt,
      createdBy: credentialId(principal),
    });
    await this.#store.db.insertInto('api_keys').values(row).execute();
    return { ...keyView(row), secret };
  }

  async listApiKeys(
    principal: Principal,
    options: {
      limit?: number | undefined;
      cursor?: string | undefined;
      role?: Role | undefined;
      include_revoked?: boolean | undefined;
      maxBytes: number;
    },
  ): Promise<Page<ApiKeyView>> {
    const after = decodeCursor(options.cursor, (id) => id.startsWith('key_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('api_keys')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    if (options.role !== undefined) query = query.where('role', '=', options.role);
    if (!options.include_revoked) query = query.where('revoked_at', 'is', null);
    const now = new Date();
    return toPage(await query.execute(), limit, (row) => keyView(row, now), options.maxBytes);
  }

  async getApiKey(principal: Principal, id: string): Promise<ApiKeyView> {
    const row = await this.#store.db
      .selectFrom('api_keys')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw keyNotFound(id);
    return keyView(row);
  }

  /**
   * Revokes a key of the principal's tenant. Revoking a revoked key returns it unchanged.
   * Refuses to revoke the tenant's last active admin key, which would lock the tenant out.
   */
  async revokeApiKey(principal: Principal, id: string): Promise<ApiKeyView> {
    const tenantId = principal.tenant.id;
    const revoked = await this.#store.db.transaction().execute(async (trx) => {
      // Lock the tenant row so two concurrent revocations cannot both pass the last-admin
      // check. SQLite transactions are already serial (BEGIN IMMEDIATE).
      let lock = trx.selectFrom('tenants').select('id').where('id', '=', tenantId);
      if (this.#store.kind === 'postgres') lock = lock.forUpdate();
      await lock.execute();

      const row = await trx
        .selectFrom('api_keys')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .executeTakeFirst();
      if (row === undefined) throw keyNotFound(id);
      if (row.revoked_at !== null) return keyView(row);

      const now = new Date();
      if (row.role === 'admin' && keyStatus(row, now) === 'active') {
        const admins = await trx
          .selectFrom('api_keys')
          .select(['id', 'expires_at'])
          .where('tenant_id', '=', tenantId)
          .where('role', '=', 'admin')
          .where('revoked_at', 'is', null)
          .execute();
        const activeAdmins = admins.filter(
          (k) => k.expires_at === null || Date.parse(k.expires_at) > now.getTime(),
        );
        if (activeAdmins.length <= 1) {
          throw new ApiError(
            'LAST_ADMIN_KEY',
            'This is the last active admin key of the tenant; create another admin key first',
          );
        }
      }
      const revokedAt = now.toISOString();
      await trx
        .updateTable('api_keys')
        .set({ revoked_at: revokedAt })
        .where('id', '=', id)
        .execute();
      return keyView({ ...row, revoked_at: revokedAt }, now);
    });
    this.#forget(id);
    return revoked;
  }
}

function newKeyRow(
  tenantId: string,
  input: { name: string; role: Role; expiresAt: string | null; createdBy: string },
): { row: ApiKeysTable; secret: string } {
  const secret = `${API_KEY_PREFIX}${randomBase62(SECRET_LENGTH)}`;
  const now = Date.now();
  return {
    secret,
    row: {
      id: newId('key', now),
      tenant_id: tenantId,
      name: input.name,
      role: input.role,
      prefix: secret.slice(0, DISPLAY_PREFIX_LENGTH),
      secret_hash: hashSecret(secret),
      created_at: new Date(now).toISOString(),
      created_by: input.createdBy,
      expires_at: input.expiresAt,
      revoked_at: null,
      last_used_at: null,
    },
  };
}

function bearerToken(headers: {
  authorization?: string | undefined;
  'x-api-key'?: string | string[] | undefined;
}): string | undefined {
  const authorization = headers.authorization;
  const bearer =
    authorization === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (bearer?.[1]) return bearer[1];
  // X-API-Key exists for clients whose Authorization header carries something else (Basic
  // for a proxy in front, say): then it is the credential, whatever Authorization says.
  const apiKey = headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.trim() !== '') return apiKey.trim();
  if (authorization !== undefined) {
    throw new ApiError(
      'UNAUTHENTICATED',
      'The Authorization header must be "Bearer <credential>" (or send the key as X-API-Key)',
    );
  }
  return undefined;
}

function tenantNotFound(id: string): ApiError {
  return new ApiError('TENANT_NOT_FOUND', `Tenant "${id}" does not exist`);
}

function keyNotFound(id: string): ApiError {
  return new ApiError('API_KEY_NOT_FOUND', `API key "${id}" does not exist`);
}
