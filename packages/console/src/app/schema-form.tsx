import { type ReactNode, useId } from 'react';

// A form for a JSON Schema of an object (a template's input, a tool's arguments): one control
// per property (text, number, checkbox, choice), a fieldset for a nested object, a line per
// item for a list of scalars, JSON for other values. Anything the form cannot show as
// controls is edited as JSON instead (formable says when; the pages offer that switch).
// Controls are keyed by their property path, `parent/child` for nested properties.

export type JsonSchema = {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema | JsonSchema[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  oneOf?: unknown[];
  anyOf?: unknown[];
  allOf?: unknown[];
  $ref?: string;
};

export type FieldKind =
  | 'string'
  | 'number'
  | 'integer'
  | 'boolean'
  | 'enum'
  | 'object'
  | 'list'
  | 'json';

type Scalar = string | number | boolean;
const isScalar = (v: unknown): v is Scalar =>
  typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';

function typeOf(schema: JsonSchema): string | undefined {
  return Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
}

/** Combinators and references: the form does not lay them out. */
function composite(schema: JsonSchema): boolean {
  return (
    schema.oneOf !== undefined ||
    schema.anyOf !== undefined ||
    schema.allOf !== undefined ||
    schema.$ref !== undefined
  );
}

function kindOf(schema: JsonSchema): FieldKind {
  if (composite(schema)) return 'json';
  if (Array.isArray(schema.enum) && schema.enum.length > 0 && schema.enum.every(isScalar)) {
    return 'enum';
  }
  const type = typeOf(schema);
  if (type === 'string' || type === 'number' || type === 'integer' || type === 'boolean') {
    return type;
  }
  if (type === 'object' && formable(schema)) return 'object';
  if (type === 'array' && schema.items !== undefined && !Array.isArray(schema.items)) {
    const item = kindOf(schema.items);
    if (item === 'string' || item === 'number' || item === 'integer') return 'list';
  }
  return 'json';
}

/** Whether the schema is an object whose properties the form can lay out. */
export function formable(schema: JsonSchema | null | undefined): schema is JsonSchema {
  return (
    schema != null &&
    !composite(schema) &&
    (schema.type === 'object' || schema.type === undefined) &&
    schema.properties !== undefined &&
    Object.keys(schema.properties).length > 0
  );
}

const pathOf = (prefix: string, name: string) => (prefix ? `${prefix}/${name}` : name);

/** How an enum value sits in a select: strings as they are, other scalars as JSON. */
const optionValue = (v: Scalar) => (typeof v === 'string' ? v : JSON.stringify(v));

function textOf(kind: FieldKind, value: unknown): string {
  if (kind === 'enum' && isScalar(value)) return optionValue(value);
  if (kind === 'list' && Array.isArray(value)) return value.map(String).join('\n');
  if (kind === 'json' || typeof value !== 'string') return JSON.stringify(value);
  return value;
}

/** The text each control starts with: the default, if any (a parent's default counts). */
export function initialValues(
  schema: JsonSchema,
  prefix = '',
  defaults: unknown = schema.default,
): Record<string, string> {
  let values: Record<string, string> = {};
  const given =
    defaults !== null && typeof defaults === 'object' ? (defaults as Record<string, unknown>) : {};
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const kind = kindOf(property);
    const path = pathOf(prefix, name);
    const value = given[name] ?? property.default;
    if (kind === 'object') {
      values = { ...values, ...initialValues(property, path, value) };
      continue;
    }
    if (value === undefined) values[path] = kind === 'boolean' ? 'false' : '';
    else values[path] = textOf(kind, value);
  }
  return values;
}

type Built = { value: unknown; touched: boolean } | { errors: Record<string, string> };

function checkNumber(property: JsonSchema, kind: FieldKind, text: string): number | string {
  const n = Number(text);
  if (!Number.isFinite(n)) return 'Enter a number.';
  if (kind === 'integer' && !Number.isInteger(n)) return 'Enter a whole number.';
  if (property.minimum !== undefined && n < property.minimum)
    return `Must be at least ${property.minimum}.`;
  if (property.maximum !== undefined && n > property.maximum)
    return `Must be at most ${property.maximum}.`;
  return n;
}

function checkString(property: JsonSchema, text: string): string | undefined {
  if (property.minLength !== undefined && text.length < property.minLength)
    return `At least ${property.minLength} characters.`;
  if (property.maxLength !== undefined && text.length > property.maxLength)
    return `At most ${property.maxLength} characters.`;
  if (property.pattern !== undefined && !safeTest(property.pattern, text))
    return `Must match ${property.pattern}.`;
  return undefined;
}

/** One property's value from its control's text (not empty); throws a FieldError. */
function buildValue(property: JsonSchema, kind: FieldKind, text: string): unknown {
  if (kind === 'number' || kind === 'integer') {
    const n = checkNumber(property, kind, text);
    if (typeof n === 'string') throw new FieldError(n);
    return n;
  }
  if (kind === 'json') {
    try {
      return JSON.parse(text);
    } catch {
      throw new FieldError('Enter valid JSON.');
    }
  }
  if (kind === 'enum') {
    const chosen = (property.enum ?? []).filter(isScalar).find((v) => optionValue(v) === text);
    if (chosen === undefined) throw new FieldError('Choose one of the options.');
    return chosen;
  }
  if (kind === 'list') {
    const item = (property.items ?? {}) as JsonSchema;
    const itemKind = kindOf(item);
    return text
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '')
      .map((line, index) => {
        try {
          return buildValue(item, itemKind, line);
        } catch (err) {
          throw new FieldError(`Line ${index + 1}: ${(err as Error).message}`);
        }
      });
  }
  const problem = checkString(property, text);
  if (problem) throw new FieldError(problem);
  return text;
}

class FieldError extends Error {}

/** `needed`: the object must be there (the root, a required property), even left empty. */
function buildObject(
  schema: JsonSchema,
  values: Record<string, string>,
  prefix: string,
  needed: boolean,
): Built {
  const out: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  const required = new Set(schema.required ?? []);
  let touched = false;
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const path = pathOf(prefix, name);
    const kind = kindOf(property);
    if (kind === 'object') {
      const nested = buildObject(property, values, path, required.has(name));
      if ('errors' in nested) {
        Object.assign(errors, nested.errors);
        touched = true;
      } else if (nested.touched || required.has(name)) {
        out[name] = nested.value;
        touched = true;
      }
      continue;
    }
    const text = values[path] ?? '';
    if (kind === 'boolean') {
      out[name] = text === 'true';
      touched ||= text === 'true';
      continue;
    }
    if (text.trim() === '') {
      if (kind === 'list' && required.has(name)) out[name] = [];
      else if (required.has(name)) errors[path] = 'Required.';
      continue;
    }
    try {
      out[name] = buildValue(property, kind, text);
      touched = true;
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      errors[path] = err.message;
      touched = true;
    }
  }
  // An optional nested object left empty is left out, required fields and all.
  if (Object.keys(errors).length > 0 && (touched || needed)) return { errors };
  if (Object.keys(errors).length > 0) return { value: undefined, touched: false };
  return { value: out, touched };
}

/**
 * Turns the controls' text into the input object, checking what the browser can check
 * (required, types, bounds, patterns). Returns the errors by property path instead when any.
 */
export function buildInput(
  schema: JsonSchema,
  values: Record<string, string>,
): { input: Record<string, unknown> } | { errors: Record<string, string> } {
  const built = buildObject(schema, values, '', true);
  if ('errors' in built) return built;
  return { input: built.value as Record<string, unknown> };
}

function safeTest(pattern: string, text: string): boolean {
  try {
    return new RegExp(pattern, 'u').test(text);
  } catch {
    return true; // the server decides
  }
}

/**
 * The property a server message is about: input errors read `…: /path/to must be …`; the
 * first path segment is the control.
 */
export function fieldOfServerMessage(
  message: string,
): { field: string; message: string } | undefined {
  const found = /: \/([^/\s]+)\S* (.+)$/.exec(message);
  if (!found?.[1] || !found[2]) return undefined;
  return {
    field: decodeURIComponent(found[1].replace(/~1/g, '/').replace(/~0/g, '~')),
    message: found[2],
  };
}

export function SchemaForm(props: {
  schema: JsonSchema;
  values: Record<string, string>;
  errors: Record<string, string>;
  onChange: (name: string, value: string) => void;
}) {
  const base = useId();
  return (
    <div className="schema-form">
      <Fields {...props} base={base} prefix="" />
    </div>
  );
}

function Fields(props: {
  schema: JsonSchema;
  values: Record<string, string>;
  errors: Record<string, string>;
  onChange: (name: string, value: string) => void;
  base: string;
  prefix: string;
}) {
  const { schema, values, errors, base, prefix } = props;
  const required = new Set(schema.required ?? []);
  const marker = (name: string) =>
    required.has(name) && (
      <span className="required" aria-hidden="true">
        {' '}
        *
      </span>
    );
  return Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const path = pathOf(prefix, name);
    const id = `${base}-${path.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const kind = kindOf(property);
    const help = property.description;
    if (kind === 'object') {
      return (
        <fieldset key={path} aria-describedby={help ? `${id}-help` : undefined}>
          <legend>
            {property.title ?? name}
            {marker(name)}
          </legend>
          {help && (
            <small id={`${id}-help`} className="muted">
              {help}
            </small>
          )}
          <Fields {...props} schema={property} prefix={path} />
        </fieldset>
      );
    }
    const error = errors[path];
    const describedBy = [help && `${id}-help`, error && `${id}-error`].filter(Boolean).join(' ');
    const common = {
      id,
      name: path,
      'aria-invalid': error ? true : undefined,
      'aria-describedby': describedBy || undefined,
    } as const;
    const value = values[path] ?? '';
    const change = (next: string) => props.onChange(path, next);
    let control: ReactNode;
    if (kind === 'boolean') {
      control = (
        <input
          {...common}
          type="checkbox"
          checked={value === 'true'}
          onChange={(e) => change(String(e.target.checked))}
        />
      );
    } else if (kind === 'enum') {
      control = (
        <select
          {...common}
          required={required.has(name)}
          value={value}
          onChange={(e) => change(e.target.value)}
        >
          <option value="">–</option>
          {(property.enum ?? []).filter(isScalar).map((v) => (
            <option key={optionValue(v)} value={optionValue(v)}>
              {String(v)}
            </option>
          ))}
        </select>
      );
    } else if (kind === 'json' || kind === 'list') {
      control = (
        <textarea
          {...common}
          rows={3}
          spellCheck={false}
          value={value}
          placeholder={kind === 'list' ? 'One item a line' : 'JSON'}
          onChange={(e) => change(e.target.value)}
        />
      );
    } else {
      control = (
        <input
          {...common}
          type={kind === 'string' ? 'text' : 'number'}
          step={kind === 'integer' ? 1 : 'any'}
          required={required.has(name)}
          value={value}
          onChange={(e) => change(e.target.value)}
        />
      );
    }
    return (
      <div className={`field${kind === 'boolean' ? ' field-inline' : ''}`} key={path}>
        <label htmlFor={id}>
          {property.title ?? name}
          {marker(name)}
        </label>
        {control}
        {help && (
          <small id={`${id}-help`} className="muted">
            {help}
          </small>
        )}
        {error && (
          <small id={`${id}-error`} className="field-error">
            {error}
          </small>
        )}
      </div>
    );
  });
}
