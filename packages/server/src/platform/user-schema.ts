import { createRequire } from 'node:module';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { linearRegExpEngine, patternProblem } from './user-regex.ts';

// Ajv's meta-schema that refuses keywords known to make validation slow or unbounded on
// untrusted schemas (unbounded uniqueItems, patterns without limits on the data…).
const secureMetaSchema: object = createRequire(import.meta.url)(
  'ajv/dist/refs/json-schema-secure.json',
);

const DRAFT_2020 = 'https://json-schema.org/draft/2020-12/schema';

/**
 * The outcome of checking a user-supplied JSON Schema. `field`, when set, is the dotted
 * path of the offending keyword inside the schema (`properties.name.pattern`).
 */
export type SchemaCheck =
  | { ok: true; validate: ValidateFunction }
  | { ok: false; message: string; field?: string };

function createAjv<T extends Ajv>(AjvClass: new (options: object) => T): T {
  // strict off: user schemas may carry annotations and vendor keywords we do not know.
  // allErrors off: validation stops at the first failure, so a failed maxLength does not
  // still run a pattern on the same long string.
  // code.regExp: user patterns run on RE2, in time linear in the input (see user-regex.ts).
  const ajv = new AjvClass({
    strict: false,
    allErrors: false,
    validateSchema: true,
    code: { regExp: linearRegExpEngine },
  });
  addFormats.default(ajv);
  return ajv;
}

/**
 * Compiles JSON Schemas written by users (template input, output and config schemas,
 * config-center key schemas; any module that validates data against a user's schema).
 * Draft 2020-12 when the schema says so in `$schema`, draft-07 otherwise. Nothing is
 * fetched: a `$ref` to anything outside the schema is an error. Patterns run on RE2, so
 * one that RE2 cannot run (backreferences, lookaround) is refused here, with its field.
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
    let valid: boolean;
    try {
      valid = ajv.validateSchema(schema) as boolean;
    } catch (err) {
      // Ajv throws, rather than answers, for a `$schema` it does not know: that was a 500.
      return {
        ok: false,
        field: '$schema',
        message: `is not a meta-schema this server knows (draft-07 or ${DRAFT_2020}): ${(err as Error).message}`,
      };
    }
    if (!valid) {
      return { ok: false, message: `is not a valid JSON Schema: ${describeErrors(ajv.errors)}` };
    }
    for (const { field, pattern } of patternsOf(schema)) {
      const problem = patternProblem(pattern);
      if (problem !== undefined) {
        return { ok: false, field, message: `${JSON.stringify(pattern)} ${problem}` };
      }
    }
    // The secure meta-schema is written for draft-07; its rules apply to 2020-12 keywords too.
    if (!this.#secure(schema)) {
      return {
        ok: false,
        message: `is not safe to evaluate: ${describeErrors(this.#secure.errors)}`,
      };
    }
    try {
      // No $id is registered: schemas of different templates must not see each other.
      const { $id: _ignored, ...anonymous } = schema as Record<string, unknown>;
      const validate = boundingRecursion(ajv.compile(anonymous));
      // Ajv caches every schema it compiled; user schemas would pile up without bound.
      ajv.removeSchema(anonymous);
      // `{"$ref": "#"}` refers to itself before looking at any data: refuse it now rather
      // than refuse every value later.
      for (const probe of [null, {}, []]) {
        if (!validate(probe) && validate.errors?.[0]?.keyword === ENDLESS) {
          return { ok: false, message: ENDLESS_MESSAGE };
        }
      }
      return { ok: true, validate };
    } catch (err) {
      return { ok: false, message: `cannot be compiled: ${(err as Error).message}` };
    }
  }
}

const ENDLESS = 'endlessRecursion';
const ENDLESS_MESSAGE = 'cannot be evaluated: it refers to itself without end ($ref, $dynamicRef)';

/**
 * A schema whose references loop without consuming data (`{"$ref": "#"}`, or a property
 * whose `$ref` names itself) overflows the stack while validating, which answered 500.
 * Here that overflow fails validation instead, with an error naming the cause.
 */
function boundingRecursion(compiled: ValidateFunction): ValidateFunction {
  const validate = ((data: unknown) => {
    try {
      const valid = compiled(data) as boolean;
      validate.errors = compiled.errors;
      return valid;
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      validate.errors = [
        {
          keyword: ENDLESS,
          instancePath: '',
          schemaPath: '#',
          params: {},
          message: ENDLESS_MESSAGE,
        },
      ];
      return false;
    }
  }) as ValidateFunction;
  validate.schema = compiled.schema;
  validate.schemaEnv = compiled.schemaEnv;
  return validate;
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

// Keywords whose value is a schema, an array of schemas, or a map of names to schemas.
const SCHEMA_KEYWORDS = new Set([
  'additionalItems',
  'additionalProperties',
  'contains',
  'contentSchema',
  'else',
  'if',
  'items',
  'not',
  'propertyNames',
  'then',
  'unevaluatedItems',
  'unevaluatedProperties',
  'allOf',
  'anyOf',
  'oneOf',
  'prefixItems',
]);
const SCHEMA_MAP_KEYWORDS = new Set([
  '$defs',
  'definitions',
  'dependencies',
  'dependentSchemas',
  'patternProperties',
  'properties',
]);

/**
 * Every `pattern` and `patternProperties` key of a schema with the dotted path that names
 * it. Walks schema positions only: a `pattern` inside `const`, `enum` or `default` is data.
 */
function patternsOf(root: object): { field: string; pattern: string }[] {
  const found: { field: string; pattern: string }[] = [];
  const stack: { schema: unknown; path: string }[] = [{ schema: root, path: '' }];
  const at = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);
  while (stack.length > 0) {
    const next = stack.pop();
    if (next === undefined) break;
    const { schema, path } = next;
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) continue;
    for (const [key, value] of Object.entries(schema)) {
      const here = at(path, key);
      if (key === 'pattern' && typeof value === 'string')
        found.push({ field: here, pattern: value });
      if (key === 'patternProperties' && typeof value === 'object' && value !== null) {
        for (const pattern of Object.keys(value)) found.push({ field: at(here, pattern), pattern });
      }
      if (SCHEMA_KEYWORDS.has(key)) {
        if (Array.isArray(value)) {
          value.forEach((item, index) => {
            stack.push({ schema: item, path: at(here, String(index)) });
          });
        } else stack.push({ schema: value, path: here });
      } else if (SCHEMA_MAP_KEYWORDS.has(key) && typeof value === 'object' && value !== null) {
        for (const [name, sub] of Object.entries(value)) {
          stack.push({ schema: sub, path: at(here, name) });
        }
      }
    }
  }
  return found;
}
