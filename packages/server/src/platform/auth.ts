import type { Role } from '@orchestra/protocol';

// Roles are the wire contract's (@orchestra/protocol).
export { ROLES, Role } from '@orchestra/protocol';

/** Routes that read tenant resources. */
export const READ_ROLES: readonly Role[] = ['admin', 'operator', 'viewer'];
/** Routes that change tenant resources. */
export const WRITE_ROLES: readonly Role[] = ['admin', 'operator'];

export const ADMIN_ROLES: readonly Role[] = ['admin'];

export interface TenantRef {
  id: string;
  name: string;
  kind: 'system' | 'standard';
}

/** Who is calling: resolved once per request from the credential, never from the body. */
export type Principal =
  | {
      type: 'api_key';
      tenant: TenantRef;
      role: Role;
      keyId: string;
      keyName: string;
      prefix: string;
      expiresAt: string | null;
    }
  | {
      type: 'jwt';
      tenant: TenantRef;
      role: Role;
      subject: string;
      issuer: string | null;
      expiresAt: string | null;
    };

/** A stable name for the credential, used to key rate limits and to record who did what. */
export function credentialId(principal: Principal): string {
  return principal.type === 'api_key'
    ? principal.keyId
    : `jwt:${principal.tenant.id}:${principal.subject}`;
}

/** True when the principal may administer every tenant, not only its own. */
export function isSystemAdmin(principal: Principal): boolean {
  return principal.role === 'admin' && principal.tenant.kind === 'system';
}

/**
 * A kind of credential, other than API keys and JWTs, that some routes also accept (the
 * realtime module's `ort_…` tokens). The module that issues it says how to recognise and
 * check it; a route takes it by naming it in `config.token`, and the request pipeline then
 * authenticates, rate-limits and documents it like any credential.
 */
export interface TokenKind {
  /** How messages name it: "a realtime token (ort_…)". */
  readonly name: string;
  /** Its OpenAPI security scheme as `Authorization: Bearer …`. */
  readonly scheme: string;
  /** The query parameter that may carry it on routes with `config.tokenInQuery`, and its scheme. */
  readonly query?: { readonly parameter: string; readonly scheme: string };
  /** True when a bearer token is of this kind (by its prefix): it is then never tried as a key or JWT. */
  recognizes(token: string): boolean;
  /** Resolves the token; throws a 401 `ApiError` when it is not valid (any more). */
  verify(token: string): Promise<VerifiedToken>;
}

/** A token of a `TokenKind` that checked out. */
export interface VerifiedToken {
  /** Keys its rate-limit bucket, as `credentialId` does for a principal. */
  readonly id: string;
  readonly tenantId: string;
  /** When it stops being valid, in ms since the epoch. */
  readonly expiresAtMs: number;
  /** What the issuing module needs to know of it (a realtime grant); opaque to the platform. */
  readonly grant: unknown;
}

/** Who is calling: a platform credential (key or JWT) or a token that the route accepts. */
export type Caller =
  | { readonly principal: Principal; readonly token?: undefined }
  | { readonly token: VerifiedToken; readonly principal?: undefined };

/** The caller's rate-limit identity: `credentialId` of a principal, the token's id otherwise. */
export function callerId(caller: Caller): string {
  return caller.principal !== undefined ? credentialId(caller.principal) : caller.token.id;
}

/** When the caller's credential expires (ms since the epoch), or `undefined` if it does not. */
export function callerExpiresAtMs(caller: Caller): number | undefined {
  if (caller.token !== undefined) return caller.token.expiresAtMs;
  const { expiresAt } = caller.principal;
  return expiresAt === null ? undefined : Date.parse(expiresAt);
}
