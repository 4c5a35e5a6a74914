import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';

// Secrets (`/v1/secrets`): named values of a tenant, encrypted at rest and write-only over
// the API: only names, versions and timestamps are ever returned.

/** Largest secret value, in bytes of UTF-8. */
export const SECRET_VALUE_MAX_BYTES = 65_536;

/** How configs refer to a secret. */
const SECRET_REFERENCE_EXAMPLE = `\${secret:NAME}`;

export const SecretName = Type.String({
  pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$',
  description:
    'Like an environment variable: a letter or "_", then letters, digits and "_"; 1 to 128 characters; unique in the tenant. Configs refer to it as ' +
    `${SECRET_REFERENCE_EXAMPLE}.`,
});

export const SecretRef = Type.Object({ name: SecretName }, { additionalProperties: false });
export type SecretRef = Static<typeof SecretRef>;

export const PutSecret = Type.Object(
  {
    /** The value: never returned by any route. Not empty, at most 64 KiB of UTF-8. */
    value: Type.String({
      minLength: 1,
      maxLength: SECRET_VALUE_MAX_BYTES,
      description:
        'The value; write-only: no route ever returns it. Not empty, at most 65536 bytes of UTF-8.',
    }),
    /** What the secret is for; up to 500 characters; default empty. */
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
export type PutSecret = Static<typeof PutSecret>;

/** A secret's metadata: everything about it except its value. */
export const Secret = Type.Object(
  {
    name: Type.String(),
    /** 1 on create; each replacement adds one. Only the current value is kept. */
    version: Type.Integer({
      description: '1 on create; each replacement adds one. Only the current value is kept.',
    }),
    description: Type.String(),
    created_at: Timestamp,
    /** When the current value was written. */
    updated_at: Timestamp,
  },
  { $id: 'Secret' },
);
export type Secret = Static<typeof Secret>;

export const ListSecretsQuery = {
  /** Only secrets whose name starts with this. */
  name_prefix: Type.Optional(Type.String({ maxLength: 128 })),
};
