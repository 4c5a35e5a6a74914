import { Ajv, type Options } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

const common: Options = {
  // Unknown fields are errors, not silently dropped: a typo should not be ignored.
  removeAdditional: false,
  useDefaults: true,
  allErrors: false,
};

function createAjv(options: Options, sharedSchemas: unknown[]): Ajv {
  const ajv = new Ajv({ ...common, ...options });
  addFormats.default(ajv);
  for (const schema of sharedSchemas) ajv.addSchema(schema as object);
  return ajv;
}

/**
 * Builds the request validator of a Fastify context (pass as
 * `schemaController.compilersFactory.buildValidator`). Bodies are validated strictly and
 * everything else with type coercion: query strings, path parameters and headers arrive as
 * text, so `?limit=5` must become 5; a JSON body already has types, and `{"name": 123}` for
 * a string field is the client's mistake, refused with a 400 rather than turned into "123".
 */
export function buildRequestValidator(
  sharedSchemas: Record<string, unknown> = {},
): FastifySchemaCompiler<unknown> {
  const shared = Object.values(sharedSchemas);
  const body = createAjv({ coerceTypes: false }, shared);
  const text = createAjv({ coerceTypes: 'array' }, shared);
  return ({ schema, httpPart }) => (httpPart === 'body' ? body : text).compile(schema as object);
}

/** Deepest nesting of arrays and objects accepted in a request body. */
export const MAX_JSON_DEPTH = 64;

/** True when `value` nests arrays or objects deeper than `limit`; iterative, so it cannot overflow. */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const next = stack.pop();
    if (next === undefined) break;
    const [item, depth] = next;
    if (typeof item !== 'object' || item === null) continue;
    if (depth >= limit) return true;
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}
