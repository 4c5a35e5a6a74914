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
  // allErrors off: validation stops at the first failure, so a failed maxLength does not
  // still run an expensive pattern on the same long string.
  const ajv = new AjvClass({ strict: false, allErrors: false, validateSchema: true });
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
    // The secure meta-schema is written for draft-07; its rules apply to 2020-12 keywords too.
    if (!this.#secure(schema)) {
      return {
        ok: false,
        message: `is not safe to evaluate: ${describeErrors(this.#secure.errors)}`,
      };
    }
    const risky = findBacktrackingPattern(schema);
    if (risky !== undefined) {
      return {
        ok: false,
        message: `is not safe to evaluate: the pattern ${JSON.stringify(risky)} nests quantifiers, which can take exponential time`,
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

/** A group that contains a quantifier and is quantified itself: `(a+)+`, `(\w*x)*`, `(ab{2,})+`. */
const NESTED_QUANTIFIER = /\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)[*+{]/;

/**
 * The first `pattern` (or `patternProperties` key) in a schema whose regular expression
 * nests quantifiers, the classic shape of catastrophic backtracking. A heuristic: it finds
 * the common cases, not every slow expression.
 */
function findBacktrackingPattern(schema: object): string | undefined {
  const stack: unknown[] = [schema];
  while (stack.length > 0) {
    const node = stack.pop();
    if (typeof node !== 'object' || node === null) continue;
    if (Array.isArray(node)) {
      stack.push(...node);
      continue;
    }
    for (const [key, value] of Object.entries(node)) {
      if (key === 'pattern' && typeof value === 'string' && NESTED_QUANTIFIER.test(value))
        return value;
      if (key === 'patternProperties' && typeof value === 'object' && value !== null) {
        const risky = Object.keys(value).find((p) => NESTED_QUANTIFIER.test(p));
        if (risky !== undefined) return risky;
      }
      stack.push(value);
    }
  }
  return undefined;
}
