import {
  createRemoteJWKSet,
  errors,
  type JWSHeaderParameters,
  type JWTPayload,
  jwtVerify,
  type KeyObject,
} from 'jose';
import { ROLES, type Role } from './auth.ts';
import { ApiError } from './errors.ts';

export interface JwtSettings {
  jwtSecret?: string | undefined;
  jwtJwksUrl?: string | undefined;
  jwtIssuer?: string | undefined;
  jwtAudience?: string | undefined;
  jwtTenantClaim: string;
  jwtRoleClaim: string;
}

/** What a verified bearer token says about its holder. The tenant is not yet checked. */
export interface VerifiedToken {
  subject: string;
  tenantId: string;
  role: Role;
  issuer: string | null;
  expiresAt: string | null;
}

const HMAC_ALGORITHMS = ['HS256'];
const ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

/**
 * Verifies bearer tokens: HS256 with the shared secret, or an asymmetric algorithm with a
 * key from the JWKS URL (cached and refreshed by jose). Throws an `ApiError`, never
 * anything else.
 */
export class JwtVerifier {
  readonly #settings: JwtSettings;
  readonly #secret: Uint8Array | undefined;
  readonly #jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

  constructor(settings: JwtSettings) {
    this.#settings = settings;
    this.#secret = settings.jwtSecret ? new TextEncoder().encode(settings.jwtSecret) : undefined;
    this.#jwks = settings.jwtJwksUrl
      ? createRemoteJWKSet(new URL(settings.jwtJwksUrl), { timeoutDuration: 5000 })
      : undefined;
  }

  get enabled(): boolean {
    return this.#secret !== undefined || this.#jwks !== undefined;
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (!this.enabled) {
      throw new ApiError('INVALID_TOKEN', 'Bearer tokens are not accepted: JWT is not configured');
    }
    const algorithms = [
      ...(this.#secret ? HMAC_ALGORITHMS : []),
      ...(this.#jwks ? ASYMMETRIC_ALGORITHMS : []),
    ];
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, (header) => this.#key(header), {
        algorithms,
        // A token without an expiry could never be withdrawn: refuse it.
        requiredClaims: ['exp'],
        ...(this.#settings.jwtIssuer ? { issuer: this.#settings.jwtIssuer } : {}),
        ...(this.#settings.jwtAudience ? { audience: this.#settings.jwtAudience } : {}),
      }));
    } catch (err) {
      throw mapJoseError(err);
    }
    return this.#claims(payload);
  }

  #key(header: JWSHeaderParameters): Uint8Array | KeyObject | CryptoKey | Promise<CryptoKey> {
    if (header.alg && HMAC_ALGORITHMS.includes(header.alg)) {
      if (!this.#secret) throw new ApiError('INVALID_TOKEN', 'HS256 tokens are not accepted');
      return this.#secret;
    }
    if (!this.#jwks) {
      throw new ApiError('INVALID_TOKEN', `${header.alg} tokens are not accepted`);
    }
    return this.#jwks(header);
  }

  #claims(payload: JWTPayload): VerifiedToken {
    // `exp` is required and numeric (jose checks), but 1e15 seconds is no date: refuse it
    // rather than fail on it later. 8.64e12 s is the last instant a Date can hold.
    if (payload.exp !== undefined && !(payload.exp <= 8.64e12)) {
      throw new ApiError('INVALID_TOKEN', 'The token\'s "exp" claim is not a representable time');
    }
    const tenantClaim = this.#settings.jwtTenantClaim;
    const roleClaim = this.#settings.jwtRoleClaim;
    if (typeof payload.sub !== 'string' || payload.sub === '') {
      throw new ApiError('INVALID_TOKEN', 'The token has no "sub" claim');
    }
    const tenantId = payload[tenantClaim];
    if (typeof tenantId !== 'string' || tenantId === '') {
      throw new ApiError('INVALID_TOKEN', `The token has no "${tenantClaim}" claim`);
    }
    const role = payload[roleClaim];
    if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
      throw new ApiError(
        'INVALID_TOKEN',
        `The token's "${roleClaim}" claim must be one of ${ROLES.join(', ')}`,
      );
    }
    return {
      subject: payload.sub,
      tenantId,
      role: role as Role,
      issuer: payload.iss ?? null,
      expiresAt: payload.exp !== undefined ? new Date(payload.exp * 1000).toISOString() : null,
    };
  }
}

function mapJoseError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof errors.JWTExpired)
    return new ApiError('TOKEN_EXPIRED', undefined, { cause: err });
  if (isKeySourceFailure(err)) {
    // The token may be fine; the JWKS endpoint is not. Tell the client to come back.
    return new ApiError('AUTH_PROVIDER_UNAVAILABLE', undefined, {
      cause: err,
      headers: { 'retry-after': '5' },
    });
  }
  if (err instanceof errors.JOSEError) {
    return new ApiError('INVALID_TOKEN', `The bearer token is not valid: ${err.message}`, {
      cause: err,
    });
  }
  return new ApiError('INVALID_TOKEN', undefined, { cause: err });
}

function isKeySourceFailure(err: unknown): boolean {
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return true;
  // jose reports a non-200 JWKS response as a generic error; fetch failures are TypeErrors.
  if (err instanceof errors.JOSEError) return /JSON Web Key Set HTTP response/.test(err.message);
  return err instanceof Error;
}
