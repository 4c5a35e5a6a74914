import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { TokenKind, VerifiedToken } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { SecretBox } from '../platform/secret-box.ts';
import type { RelationalStore } from '../store/store.ts';

/** Realtime tokens start with this, so that they are told apart from API keys and JWTs. */
export const REALTIME_TOKEN_PREFIX = 'ort_';

/** What a realtime token grants: a few topics or patterns of one tenant, until it expires. */
export interface RealtimeGrant {
  id: string;
  tenantId: string;
  topics: string[];
  publish: boolean;
  clientId: string | undefined;
  info: Record<string, unknown> | undefined;
  /** Seconds since the epoch. */
  expiresAt: number;
}

/**
 * Realtime tokens as a credential of the request pipeline: the realtime routes name it in
 * `config.token`, and the platform checks and rate-limits it like a key.
 */
export function realtimeTokenKind(tokens: RealtimeTokens): TokenKind {
  return {
    name: 'a realtime token (ort_…)',
    scheme: 'realtimeToken',
    query: { parameter: 'token', scheme: 'realtimeTokenQuery' },
    recognizes: (token) => token.startsWith(REALTIME_TOKEN_PREFIX),
    verify: async (token) => {
      const grant = await tokens.verify(token);
      return {
        id: `token:${grant.id}`,
        tenantId: grant.tenantId,
        expiresAtMs: grant.expiresAt * 1000,
        grant,
      };
    },
  };
}

/** The grant of a token that `realtimeTokenKind` verified. */
export function grantOf(token: VerifiedToken): RealtimeGrant {
  return token.grant as RealtimeGrant;
}

interface Claims {
  v: 1;
  kid: string;
  jti: string;
  ten: string;
  top: string[];
  pub: boolean;
  cid?: string;
  inf?: Record<string, unknown>;
  exp: number;
}

const b64 = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** What a signing key's sealed secret is bound to. */
const keyContext = (id: string) => `realtime_keys.secret:${id}`;

/**
 * Issues and checks realtime tokens: `ort_<claims>.<HMAC-SHA256>`. The signing key lives in
 * the store, so every node checks what any node issued; the key id in the claims leaves
 * room for rotation.
 */
export class RealtimeTokens {
  readonly #store: RelationalStore;
  #key: { id: string; secret: Buffer } | undefined;
  readonly #keys = new Map<string, Buffer>();

  readonly #box: SecretBox;

  constructor(deps: { store: RelationalStore; secrets: SecretBox }) {
    this.#store = deps.store;
    this.#box = deps.secrets;
  }

  /** Loads the signing keys, creating the first one if there is none (any node may). */
  async start(): Promise<void> {
    const id = `rk_${randomUUID()}`;
    // Two nodes starting at once may both insert; the oldest key then signs on every node.
    const existing = await this.#store.db
      .selectFrom('realtime_keys')
      .select('id')
      .executeTakeFirst();
    if (existing === undefined) {
      await this.#store.db
        .insertInto('realtime_keys')
        .values({
          id,
          secret: this.#box.seal(b64(randomBytes(32)), keyContext(id)),
          created_at: new Date().toISOString(),
        })
        .onConflict((oc) => oc.doNothing())
        .execute();
    }
    await this.#load();
  }

  async #load(): Promise<void> {
    const rows = await this.#store.db
      .selectFrom('realtime_keys')
      .selectAll()
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    for (const row of rows) {
      let secret = row.secret;
      if (SecretBox.isSealed(secret)) {
        secret = this.#box.open(secret, keyContext(row.id));
        if (!this.#box.isCurrent(row.secret)) {
          // Sealed with a previous key (a rotation, decision 0016): seal it with the current one.
          await this.#store.db
            .updateTable('realtime_keys')
            .set({ secret: this.#box.seal(secret, keyContext(row.id)) })
            .where('id', '=', row.id)
            .where('secret', '=', row.secret)
            .execute();
        }
      } else {
        // Stored in the clear by a version before encryption at rest: seal it now.
        await this.#store.db
          .updateTable('realtime_keys')
          .set({ secret: this.#box.seal(secret, keyContext(row.id)) })
          .where('id', '=', row.id)
          .where('secret', '=', secret)
          .execute();
      }
      this.#keys.set(row.id, Buffer.from(secret, 'base64url'));
    }
    const first = rows[0];
    const firstSecret = first && this.#keys.get(first.id);
    if (first && firstSecret) this.#key = { id: first.id, secret: firstSecret };
  }

  issue(grant: Omit<RealtimeGrant, 'id'>): { token: string; id: string } {
    const key = this.#key;
    if (key === undefined) throw new Error('realtime tokens used before start()');
    const id = randomUUID();
    const claims: Claims = {
      v: 1,
      kid: key.id,
      jti: id,
      ten: grant.tenantId,
      top: grant.topics,
      pub: grant.publish,
      exp: grant.expiresAt,
      ...(grant.clientId !== undefined ? { cid: grant.clientId } : {}),
      ...(grant.info !== undefined ? { inf: grant.info } : {}),
    };
    const body = b64(JSON.stringify(claims));
    const signature = b64(createHmac('sha256', key.secret).update(body).digest());
    return { token: `${REALTIME_TOKEN_PREFIX}${body}.${signature}`, id };
  }

  /** Checks a token; throws INVALID_TOKEN or TOKEN_EXPIRED. */
  async verify(token: string, now = Date.now()): Promise<RealtimeGrant> {
    const bad = () => new ApiError('INVALID_TOKEN', 'The realtime token is not valid');
    if (!token.startsWith(REALTIME_TOKEN_PREFIX) || token.length > 8192) throw bad();
    const [body, signature, extra] = token.slice(REALTIME_TOKEN_PREFIX.length).split('.');
    if (body === undefined || signature === undefined || extra !== undefined) throw bad();
    let claims: Claims;
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Claims;
    } catch {
      throw bad();
    }
    if (typeof claims !== 'object' || claims === null || claims.v !== 1) throw bad();
    let secret = this.#keys.get(claims.kid);
    if (secret === undefined) {
      await this.#load(); // issued by a node that created a key this one has not seen
      secret = this.#keys.get(claims.kid);
      if (secret === undefined) throw bad();
    }
    const expected = createHmac('sha256', secret).update(body).digest();
    const given = Buffer.from(signature, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw bad();
    if (claims.exp * 1000 <= now) {
      throw new ApiError('TOKEN_EXPIRED', 'The realtime token has expired');
    }
    return {
      id: claims.jti,
      tenantId: claims.ten,
      topics: claims.top,
      publish: claims.pub,
      clientId: claims.cid,
      info: claims.inf,
      expiresAt: claims.exp,
    };
  }
}
