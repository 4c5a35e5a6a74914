import Type, { type Static } from 'typebox';
import { Role } from '../platform/auth.ts';
import { NullableTimestamp, Timestamp } from '../platform/schemas.ts';
import {
  TenantLimitOverridesSchema,
  TenantLimitsPatch,
  TenantLimitValues,
} from '../platform/tenant-limits.ts';

export const TenantId = Type.String({
  pattern: '^[a-z0-9][a-z0-9-]{1,62}$',
  description: 'Lowercase letters, digits and dashes; 2 to 63 characters.',
});

export const Tenant = Type.Object(
  {
    id: TenantId,
    name: Type.String(),
    kind: Type.Enum(['system', 'standard'], {
      description: '`system` is the tenant created at first start; its admins manage all tenants.',
    }),
    created_at: Timestamp,
    limits: TenantLimitValues,
    limit_overrides: TenantLimitOverridesSchema,
  },
  { $id: 'Tenant' },
);

export const ApiKey = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    role: Role,
    prefix: Type.String({ description: 'First characters of the secret, to tell keys apart.' }),
    status: Type.Enum(['active', 'revoked', 'expired']),
    created_at: Timestamp,
    created_by: Type.Union([Type.String(), Type.Null()]),
    expires_at: NullableTimestamp,
    revoked_at: NullableTimestamp,
    last_used_at: Type.Union([Timestamp, Type.Null()], {
      description: 'When the key last authenticated a request, to within a minute.',
    }),
  },
  { $id: 'ApiKey' },
);

export const ApiKeyWithSecret = Type.Object(
  {
    ...ApiKey.properties,
    secret: Type.String({ description: 'The key itself. Shown only in this response.' }),
  },
  { $id: 'ApiKeyWithSecret' },
);

/** Printable text: names end up in terminals and logs, where control characters misbehave. */
const DisplayName = (maxLength: number) =>
  Type.String({ minLength: 1, maxLength, pattern: '^[^\\u0000-\\u001f\\u007f]*$' });

export const CreateApiKey = Type.Object(
  {
    name: DisplayName(100),
    role: Role,
    expires_at: Type.Optional(
      Type.String({ format: 'date-time', description: 'When the key stops working. Omit: never.' }),
    ),
  },
  { additionalProperties: false },
);
export type CreateApiKey = Static<typeof CreateApiKey>;

export const CreateTenant = Type.Object(
  {
    id: TenantId,
    name: Type.Optional(DisplayName(200)),
  },
  { additionalProperties: false },
);
export type CreateTenant = Static<typeof CreateTenant>;

export const UpdateTenant = Type.Object(
  {
    name: Type.Optional(DisplayName(200)),
    limits: Type.Optional(TenantLimitsPatch),
  },
  { additionalProperties: false },
);
export type UpdateTenant = Static<typeof UpdateTenant>;

export const CreatedTenant = Type.Object({
  tenant: Type.Ref('Tenant'),
  admin_key: Type.Ref('ApiKeyWithSecret'),
});

export const WhoAmI = Type.Object({
  tenant: Type.Object({ id: Type.String(), name: Type.String(), kind: Type.String() }),
  role: Role,
  credential: Type.Union([
    Type.Object({
      type: Type.Literal('api_key'),
      id: Type.String(),
      name: Type.String(),
      prefix: Type.String(),
      expires_at: NullableTimestamp,
    }),
    Type.Object({
      type: Type.Literal('jwt'),
      subject: Type.String(),
      issuer: Type.Union([Type.String(), Type.Null()]),
      expires_at: NullableTimestamp,
    }),
  ]),
});
