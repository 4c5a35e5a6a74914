import { createRequire } from 'node:module';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

// Ajv's meta-schema that refuses keywords known to make validation slow or unbounded on
// untrusted schemas (unbounded uniqueItems, patterns without limits on the data…).
const secureMetaSchema: object = createRequire(import.meta.url)(
  'ajv/dist/refs/json-schema-secure.json',
);

const DRAFT_2020 = 'https://json-schema.org/draft/2020-12/schema';

/** The outcome of checking a user-supplied JSON Schema. */
export type SchemaCheck = { ok: true; validate: ValidateFunction } | { ok: false; message: string };

function createAjv<T extends Ajv>(AjvClass: new (options: object) => T): T {
  // strict off: user schemas may carry annotations and vendor keywords we do not know.
  const ajv = new AjvClass({ strict: false, allErrors: true, validateSchema: true });
  addFormats.default(ajv);
  return ajv;
}

/**
 * Compiles JSON Schemas written by users (template input, output and config schemas).
 * Draft 2020-12 when the schema says so in `$schema`, draft-07 otherwise. Nothing is
 * fetched: a `$ref` to anything outside the schema is an error.
 */
export class UserSchemaCompiler {
  readonly #draft7 = createAjv(Ajv);
  readonly #draft2020 = createAjv(Ajv2020);
  readonly #secure = this.#draft7.compile(secureMetaSchema);

  check(schema: unknown): SchemaCheck {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      return { ok: false, message: 'must be a JSON Schema object' };
    }
    const is2020 = (schema as { $schema?: unknown }).$schema === DRAFT_2020;
    const ajv = is2020 ? this.#draft2020 : this.#draft7;
    if (!ajv.validateSchema(schema)) {
      return { ok: false, message: `is not a valid JSON Schema: ${describeErrors(ajv.errors)}` };
    }
    if (!is2020 && !this.#secure(schema)) {
      return {
        ok: false,
        message: `is not safe to evaluate: ${describeErrors(this.#secure.errors)}`,
      };
    }
    try {
      // No $id is registered: schemas of different templates must not see each other.
      const { $id: _ignored, ...anonymous } = schema as Record<string, unknown>;
      const validate = ajv.compile(anonymous);
      // Ajv caches every schema it compiled; user schemas would pile up without bound.
      ajv.removeSchema(anonymous);
      return { ok: true, validate };
    } catch (err) {
      return { ok: false, message: `cannot be compiled: ${(err as Error).message}` };
    }
  }
}

/** One line for people: the first few problems, each with where it is. */
export function describeErrors(errors: ErrorObject[] | null | undefined, limit = 3): string {
  if (!errors || errors.length === 0) return 'invalid';
  const parts = errors
    .slice(0, limit)
    .map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
  return errors.length > limit
    ? `${parts.join('; ')}; and ${errors.length - limit} more`
    : parts.join('; ');
}
