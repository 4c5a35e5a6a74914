/** Tables owned by the secrets module. */
export interface SecretsTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant; immutable. */
  name: string;
  /** 1 on create; each replacement adds one. */
  version: number;
  /** The current value, sealed (`platform/secret-box.ts`) in the context `secrets.value:<id>`. */
  value: string;
  /** The id of the key `value` is sealed with, so that a rotation finds what it must re-seal. */
  key_id: string;
  description: string;
  created_at: string;
  updated_at: string;
}

export interface SecretsTables {
  secrets: SecretsTable;
}

declare module '../store/database.ts' {
  interface Database extends SecretsTables {}
}
