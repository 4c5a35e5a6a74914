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
  return ({ schema, httpPart }) => {
    if (httpPart === 'body') {
      return refusing(body.compile(schema as object), (data) =>
        nulInDeclaredString(schema as SchemaNode, data, ''),
      );
    }
    return refusing(text.compile(schema as object), unstorableText);
  };
}

type CompiledValidator = ReturnType<Ajv['compile']>;

/** A value the schema passed but the server must refuse: its JSON pointer and why. */
interface Refusal {
  instancePath: string;
  message: string;
}

/** A validator that, once `validate` passed the data, also refuses what `check` names. */
function refusing(
  validate: CompiledValidator,
  check: (data: unknown) => Refusal | undefined,
): CompiledValidator {
  const wrapped = ((data: unknown, context?: unknown) => {
    const valid = (validate as (data: unknown, context?: unknown) => boolean)(data, context);
    wrapped.errors = validate.errors;
    if (!valid) return false;
    const refusal = check(data);
    if (refusal === undefined) return true;
    wrapped.errors = [{ keyword: 'type', schemaPath: '#', params: {}, ...refusal }];
    return false;
  }) as CompiledValidator;
  wrapped.schema = validate.schema;
  wrapped.schemaEnv = validate.schemaEnv;
  return wrapped;
}

const NUL_MESSAGE = 'must not contain the character U+0000';

/** Coerced path, query and header values the schema passes but the server cannot use. */
function unstorableText(data: unknown): Refusal | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  for (const [key, value] of Object.entries(data)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      // Ajv coerces the text `Infinity` (and `1e400`) to a number that passes `integer` and
      // skips `minimum`/`maximum`, which only compare finite numbers; such a value reached
      // handlers as a limit of Infinity.
      if (typeof item === 'number' && !Number.isFinite(item)) {
        return { instancePath: `/${key}`, message: 'must be a finite number' };
      }
      // `%00` decodes to U+0000, which PostgreSQL cannot store or compare in text: a
      // lookup by such an id failed with 500.
      if (typeof item === 'string' && item.includes('\u0000')) {
        return { instancePath: `/${key}`, message: NUL_MESSAGE };
      }
    }
  }
  return undefined;
}

interface SchemaNode {
  type?: unknown;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  additionalProperties?: SchemaNode | boolean;
}

/**
 * The first string a body schema declares (names, ids, labels…) that holds U+0000:
 * PostgreSQL cannot store it in a text column, which answered 500. Free JSON (task
 * input, config values) is stored as JSON text, where the character is escaped: it stays.
 */
function nulInDeclaredString(schema: SchemaNode, data: unknown, at: string): Refusal | undefined {
  if (schema.type === 'string') {
    return typeof data === 'string' && data.includes('\u0000')
      ? { instancePath: at, message: NUL_MESSAGE }
      : undefined;
  }
  if (Array.isArray(data)) {
    if (schema.items === undefined) return undefined;
    for (let i = 0; i < data.length; i++) {
      const found = nulInDeclaredString(schema.items, data[i], `${at}/${i}`);
      if (found) return found;
    }
    return undefined;
  }
  if (typeof data !== 'object' || data === null) return undefined;
  const extra =
    typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
  for (const [key, value] of Object.entries(data)) {
    const child = schema.properties?.[key] ?? extra;
    const found =
      child &&
      nulInDeclaredString(child, value, `${at}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`);
    if (found) return found;
  }
  return undefined;
}

/** Deepest nesting of arrays and objects accepted in a request body. */
export const MAX_JSON_DEPTH = 64;

interface PathNode {
  parent: PathNode | undefined;
  key: string;
}

function pathOf(node: PathNode | undefined): string {
  const keys: string[] = [];
  for (let at = node; at !== undefined; at = at.parent) keys.push(at.key);
  return keys.reverse().join('.');
}

/** A problem with a parsed JSON value: where (a dotted path under `root`) and what. */
export interface JsonProblem {
  field: string;
  message: string;
}

/**
 * What makes a parsed JSON document unfit to accept, or `undefined`:
 * - arrays and objects nested deeper than `MAX_JSON_DEPTH` (they would overflow the stack later);
 * - a number JSON cannot carry back: `1e400` parses to Infinity, which would be stored as null;
 * - an integer literal beyond ±(2^53 − 1), which parsing has already rounded
 *   (9007199254740993 becomes …992): refused rather than silently changed; send such
 *   numbers as strings (docs/decisions/0010-numbers-in-json.md).
 * `text` is the source the value was parsed from. Iterative, so it cannot overflow.
 */
export function jsonValueProblem(
  value: unknown,
  text: string,
  root: string,
): JsonProblem | undefined {
  const notFinite = (item: unknown) => typeof item === 'number' && !Number.isFinite(item);
  const problem = (): JsonProblem => ({
    field: pathTo(value, notFinite, root),
    message: 'is a number too large for JSON (it is not finite)',
  });
  if (notFinite(value)) return problem();
  // Only containers go on the stack; their primitive members are checked in place, and a
  // path is built only for the problem found (this runs on every request body).
  const stack: [object, number][] = [];
  if (typeof value === 'object' && value !== null) stack.push([value, 0]);
  while (stack.length > 0) {
    const next = stack.pop();
    if (next === undefined) break;
    const [item, depth] = next;
    if (depth >= MAX_JSON_DEPTH) {
      return {
        field: root,
        message: `nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`,
      };
    }
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (typeof child === 'object') {
        if (child !== null) stack.push([child, depth + 1]);
      } else if (typeof child === 'number' && !Number.isFinite(child)) {
        return problem();
      }
    }
  }
  // Only a run of 16 or more digits can be an integer beyond 2^53: parse again, with the
  // source of each number, in that rare case alone.
  if (/\d{16}/.test(text)) return unsafeIntegerProblem(text, root);
  return undefined;
}

function unsafeIntegerProblem(text: string, root: string): JsonProblem | undefined {
  let source: string | undefined;
  // Node 24 passes the source text of primitives to a reviver (JSON.parse source access).
  const revive = (_key: string, value: unknown, context?: { source?: string }) => {
    if (
      source === undefined &&
      typeof value === 'number' &&
      !Number.isSafeInteger(value) &&
      context?.source !== undefined &&
      /^-?\d+$/.test(context.source)
    ) {
      source = context.source;
    }
    return value;
  };
  const value: unknown = JSON.parse(text, revive as (key: string, value: unknown) => unknown);
  if (source === undefined) return undefined;
  const rounded = Number(source);
  return {
    field: pathTo(value, (item) => item === rounded, root),
    message: `is the integer ${source}, beyond what a JSON number keeps exactly (±9007199254740991); send it as a string`,
  };
}

/** The dotted path of the first value `found` accepts (depth first), or `root`. */
function pathTo(value: unknown, found: (item: unknown) => boolean, root: string): string {
  const stack: [unknown, PathNode | undefined][] = [[value, undefined]];
  while (stack.length > 0) {
    const next = stack.pop();
    if (next === undefined) break;
    const [item, path] = next;
    if (found(item)) {
      const at = pathOf(path);
      return at === '' ? root : `${root}.${at}`;
    }
    if (typeof item !== 'object' || item === null) continue;
    for (const [key, child] of Object.entries(item)) stack.push([child, { parent: path, key }]);
  }
  return root;
}
