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
