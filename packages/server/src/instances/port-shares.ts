import { createHash, randomBytes } from 'node:crypto';
import type { CreatePortShare, PortShare } from '@orchestra/protocol';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { RelationalStore } from '../store/store.ts';
import type { InstanceService } from './instance-service.ts';
import type { PortSharesTable } from './tables.ts';

/** A share link's token: `ors_` and 32 random bytes. Only its SHA-256 is stored. */
const TOKEN_PREFIX = 'ors_';
const DEFAULT_SHARE_SECONDS = 3600;
/** Most share links one instance keeps (expired ones are forgotten as new ones come). */
const MAX_SHARES_PER_INSTANCE = 100;

const hashOf = (token: string) => createHash('sha256').update(token).digest('hex');

function view(row: PortSharesTable, token?: string): PortShare {
  return {
    id: row.id,
    instance_id: row.instance_id,
    port: row.port,
    url: token === undefined ? null : `/share/${token}/`,
    created_by: row.created_by,
    created_at: row.created_at,
    expires_at: row.expires_at,
  };
}

function shareNotFound(): ApiError {
  return new ApiError(
    'PORT_SHARE_NOT_FOUND',
    'This share link does not exist, was revoked or has expired',
  );
}

/**
 * Share links of instances' ports: a URL with a token that reaches one port of one
 * instance without a credential, until it expires or is revoked.
 */
export class PortShares {
  readonly #store: RelationalStore;
  readonly #instances: InstanceService;

  constructor(deps: { store: RelationalStore; instances: InstanceService }) {
    this.#store = deps.store;
    this.#instances = deps.instances;
  }

  async create(
    principal: Principal,
    instanceId: string,
    port: number,
    input: CreatePortShare,
  ): Promise<PortShare> {
    const instance = await this.#instances.get(principal, instanceId);
    const now = Date.now();
    await this.#store.db
      .deleteFrom('port_shares')
      .where('instance_id', '=', instance.id)
      .where('expires_at', '<=', new Date(now).toISOString())
      .execute();
    const held = await this.#store.db
      .selectFrom('port_shares')
      .select(({ fn }) => fn.countAll<number>().as('n'))
      .where('instance_id', '=', instance.id)
      .executeTakeFirstOrThrow();
    if (Number(held.n) >= MAX_SHARES_PER_INSTANCE) {
      throw new ApiError(
        'TENANT_LIMIT_REACHED',
        `Instance "${instance.id}" has ${MAX_SHARES_PER_INSTANCE} share links; revoke one first`,
        { details: { quota: 'shares_per_instance', limit_value: MAX_SHARES_PER_INSTANCE } },
      );
    }
    const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const row: PortSharesTable = {
      id: newId('shr'),
      tenant_id: principal.tenant.id,
      instance_id: instance.id,
      port,
      token_hash: hashOf(token),
      created_by: credentialId(principal),
      created_at: new Date(now).toISOString(),
      expires_at: new Date(
        now + (input.expires_in_seconds ?? DEFAULT_SHARE_SECONDS) * 1000,
      ).toISOString(),
    };
    await this.#store.db.insertInto('port_shares').values(row).execute();
    return view(row, token);
  }

  async list(
    principal: Principal,
    instanceId: string,
    options: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: PortShare[]; next_cursor: string | null }> {
    await this.#instances.get(principal, instanceId);
    const after = decodeCursor(options.cursor, (id) => id.startsWith('shr_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('port_shares')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('instance_id', '=', instanceId)
      .where('expires_at', '>', new Date().toISOString())
      .orderBy('id', 'asc')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    return toPage(await query.execute(), limit, (row) => view(row), options.maxBytes);
  }

  async revoke(principal: Principal, instanceId: string, id: string): Promise<void> {
    await this.#instances.get(principal, instanceId);
    const { numDeletedRows } = await this.#store.db
      .deleteFrom('port_shares')
      .where('tenant_id', '=', principal.tenant.id)
      .where('instance_id', '=', instanceId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (numDeletedRows === 0n) {
      throw new ApiError('PORT_SHARE_NOT_FOUND', `Share link "${id}" does not exist`);
    }
  }

  /** What a share link's token opens; PORT_SHARE_NOT_FOUND when nothing, or no more. */
  async resolve(token: string): Promise<{ tenantId: string; instanceId: string; port: number }> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 100) throw shareNotFound();
    const row = await this.#store.db
      .selectFrom('port_shares')
      .selectAll()
      .where('token_hash', '=', hashOf(token))
      .executeTakeFirst();
    if (row === undefined || Date.parse(row.expires_at) <= Date.now()) throw shareNotFound();
    return { tenantId: row.tenant_id, instanceId: row.instance_id, port: row.port };
  }
}
