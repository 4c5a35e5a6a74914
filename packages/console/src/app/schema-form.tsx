import { useId } from 'react';

// A form for a template's input schema: one control per property of an object schema
// (text, number, checkbox, choice), JSON for nested values. Anything the form cannot show
// as controls is edited as JSON instead (SubmitTask offers that switch).

export type JsonSchema = {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
};

export type FieldKind = 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'json';

function kindOf(schema: JsonSchema): FieldKind {
  if (Array.isArray(schema.enum) && schema.enum.every((v) => typeof v === 'string')) return 'enum';
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  if (type === 'string' || type === 'number' || type === 'integer' || type === 'boolean') {
    return type;
  }
  return 'json';
}

/** Whether the schema is an object whose properties the form can lay out. */
export function formable(schema: JsonSchema | null | undefined): schema is JsonSchema {
  return (
    schema != null &&
    (schema.type === 'object' || schema.type === undefined) &&
    schema.properties !== undefined &&
    Object.keys(schema.properties).length > 0
  );
}

/** The text each control starts with: the default, if any. */
export function initialValues(schema: JsonSchema): Record<string, string> {
  const values: Record<string, string> = {};
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const kind = kindOf(property);
    const value = property.default;
    if (value === undefined) values[name] = kind === 'boolean' ? 'false' : '';
    else
      values[name] = kind === 'json' || typeof value !== 'string' ? JSON.stringify(value) : value;
  }
  return values;
}

/**
 * Turns the controls' text into the input object, checking what the browser can check
 * (required, types, bounds, patterns). Returns the errors by property name instead when any.
 */
export function buildInput(
  schema: JsonSchema,
  values: Record<string, string>,
): { input: Record<string, unknown> } | { errors: Record<string, string> } {
  const input: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  const required = new Set(schema.required ?? []);
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const text = values[name] ?? '';
    const kind = kindOf(property);
    if (kind === 'boolean') {
      input[name] = text === 'true';
      continue;
    }
    if (text.trim() === '') {
      if (required.has(name)) errors[name] = 'Required.';
      continue;
    }
    if (kind === 'number' || kind === 'integer') {
      const n = Number(text);
      if (!Number.isFinite(n)) errors[name] = 'Enter a number.';
      else if (kind === 'integer' && !Number.isInteger(n)) errors[name] = 'Enter a whole number.';
      else if (property.minimum !== undefined && n < property.minimum)
        errors[name] = `Must be at least ${property.minimum}.`;
      else if (property.maximum !== undefined && n > property.maximum)
        errors[name] = `Must be at most ${property.maximum}.`;
      else input[name] = n;
      continue;
    }
    if (kind === 'json') {
      try {
        input[name] = JSON.parse(text);
      } catch {
        errors[name] = 'Enter valid JSON.';
      }
      continue;
    }
    if (property.minLength !== undefined && text.length < property.minLength)
      errors[name] = `At least ${property.minLength} characters.`;
    else if (property.maxLength !== undefined && text.length > property.maxLength)
      errors[name] = `At most ${property.maxLength} characters.`;
    else if (property.pattern !== undefined && !safeTest(property.pattern, text))
      errors[name] = `Must match ${property.pattern}.`;
    else input[name] = text;
  }
  return Object.keys(errors).length > 0 ? { errors } : { input };
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
  const { schema, values, errors } = props;
  const base = useId();
  const required = new Set(schema.required ?? []);
  return (
    <div className="schema-form">
      {Object.entries(schema.properties ?? {}).map(([name, property]) => {
        const id = `${base}-${name}`;
        const kind = kindOf(property);
        const error = errors[name];
        const help = property.description;
        const describedBy = [help && `${id}-help`, error && `${id}-error`]
          .filter(Boolean)
          .join(' ');
        const common = {
          id,
          name,
          'aria-invalid': error ? true : undefined,
          'aria-describedby': describedBy || undefined,
        } as const;
        const label = (
          <label htmlFor={id}>
            {property.title ?? name}
            {required.has(name) && (
              <span className="required" aria-hidden="true">
                {' '}
                *
              </span>
            )}
          </label>
        );
        let control: React.ReactNode;
        if (kind === 'boolean') {
          control = (
            <input
              {...common}
              type="checkbox"
              checked={values[name] === 'true'}
              onChange={(e) => props.onChange(name, String(e.target.checked))}
            />
          );
        } else if (kind === 'enum') {
          control = (
            <select
              {...common}
              required={required.has(name)}
              value={values[name] ?? ''}
              onChange={(e) => props.onChange(name, e.target.value)}
            >
              <option value="">–</option>
              {(property.enum as string[]).map((v) => (
                <option key={v} value={v}>
                  {v}
                </option>
              ))}
            </select>
          );
        } else if (kind === 'json') {
          control = (
            <textarea
              {...common}
              rows={3}
              spellCheck={false}
              value={values[name] ?? ''}
              placeholder="JSON"
              onChange={(e) => props.onChange(name, e.target.value)}
            />
          );
        } else {
          control = (
            <input
              {...common}
              type={kind === 'string' ? 'text' : 'number'}
              step={kind === 'integer' ? 1 : 'any'}
              required={required.has(name)}
              value={values[name] ?? ''}
              onChange={(e) => props.onChange(name, e.target.value)}
            />
          );
        }
        return (
          <div className={`field${kind === 'boolean' ? ' field-inline' : ''}`} key={name}>
            {label}
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
      })}
    </div>
  );
}
