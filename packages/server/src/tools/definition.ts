import { createHash } from 'node:crypto';
import type { ToolAnnotations } from '@orchestra/protocol';

/** What pinning compares: the parts of a tool a model reads. */
export interface ToolDefinition {
  name: string;
  description: string;
  input_schema: Record<string, unknown>;
  output_schema: Record<string, unknown> | null;
  annotations: ToolAnnotations;
}

/** JSON with object keys sorted, so that equal definitions hash alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** SHA-256 (hex) of a definition's name, description, schemas and annotations. */
export function definitionHash(definition: ToolDefinition): string {
  return createHash('sha256')
    .update(
      canonicalJson({
        name: definition.name,
        description: definition.description,
        input_schema: definition.input_schema,
        output_schema: definition.output_schema,
        annotations: definition.annotations,
      }),
    )
    .digest('hex');
}

const DIFF_VALUE_CHARS = 300;

function shown(value: unknown): string {
  const text = value === undefined ? '(none)' : canonicalJson(value);
  return text.length > DIFF_VALUE_CHARS ? `${text.slice(0, DIFF_VALUE_CHARS)}…` : text;
}

/**
 * What changed between two definitions, one line a changed field (and a line per changed
 * top-level property of the input schema), for an admin to review before approving.
 */
export function definitionDiff(before: ToolDefinition, after: ToolDefinition): string[] {
  const lines: string[] = [];
  if (before.description !== after.description) {
    lines.push(`description: ${shown(before.description)} → ${shown(after.description)}`);
  }
  const beforeProps = (before.input_schema.properties ?? {}) as Record<string, unknown>;
  const afterProps = (after.input_schema.properties ?? {}) as Record<string, unknown>;
  for (const key of new Set([...Object.keys(beforeProps), ...Object.keys(afterProps)])) {
    const a = beforeProps[key];
    const b = afterProps[key];
    if (canonicalJson(a) === canonicalJson(b)) continue;
    if (a === undefined) lines.push(`input_schema.properties.${key}: added ${shown(b)}`);
    else if (b === undefined) lines.push(`input_schema.properties.${key}: removed`);
    else lines.push(`input_schema.properties.${key}: ${shown(a)} → ${shown(b)}`);
  }
  const { properties: _a, ...beforeRest } = before.input_schema;
  const { properties: _b, ...afterRest } = after.input_schema;
  if (canonicalJson(beforeRest) !== canonicalJson(afterRest)) {
    lines.push(`input_schema: ${shown(beforeRest)} → ${shown(afterRest)}`);
  }
  if (canonicalJson(before.output_schema) !== canonicalJson(after.output_schema)) {
    lines.push(`output_schema: ${shown(before.output_schema)} → ${shown(after.output_schema)}`);
  }
  if (canonicalJson(before.annotations) !== canonicalJson(after.annotations)) {
    lines.push(`annotations: ${shown(before.annotations)} → ${shown(after.annotations)}`);
  }
  return lines;
}

/** A tool is destructive unless read-only or `destructiveHint: false` (MCP's defaults). */
export function isDestructive(annotations: ToolAnnotations): boolean {
  return annotations.readOnlyHint !== true && annotations.destructiveHint !== false;
}

/** Retrying is safe only for tools that change nothing or change it once. */
export function isRetrySafe(annotations: ToolAnnotations): boolean {
  return annotations.readOnlyHint === true || annotations.idempotentHint === true;
}

// Phrases by which a tool description addresses the model instead of describing the tool
// (the "tool poisoning" pattern). Each is a reason shown to the admin.
const INJECTION_PATTERNS: readonly [RegExp, string][] = [
  [
    /\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|other|system)\b[^.\n]{0,20}\b(instructions?|prompts?|rules?|messages?)\b/i,
    'asks to ignore other instructions',
  ],
  [/<\s*\/?\s*(important|system|instructions?|secret|hidden)\s*>/i, 'contains instruction tags'],
  [
    /\b(do not|don't|never)\b[^.\n]{0,40}\b(tell|inform|mention|reveal|show|notify)\b[^.\n]{0,30}\b(the )?(user|human)\b/i,
    'asks to hide something from the user',
  ],
  [
    /\b(before|after|instead of)\b[^.\n]{0,30}\b(using|calling|running)\b[^.\n]{0,30}\b(this|any|other)\b[^.\n]{0,10}\btools?\b[^.\n]{0,20}\b(you must|always|first)\b/i,
    'tells the model what to do around other tool calls',
  ],
  [
    /\b(system prompt|your instructions|you are now|act as)\b/i,
    'addresses the model’s instructions',
  ],
  [
    /(~\/\.ssh|id_rsa|\.aws\/credentials|\.env\b|\/etc\/passwd|api[_ ]?keys?\b[^.\n]{0,30}\b(send|include|pass))/i,
    'mentions credentials or private files',
  ],
  [
    /\b(send|forward|upload|exfiltrate|post)\b[^.\n]{0,40}\b(conversation|chat history|credentials|secrets?|tokens?)\b/i,
    'asks to send data elsewhere',
  ],
];

// Characters a human reviewer does not see: zero-width, bidi controls, Unicode tags.
const INVISIBLE = /[\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF]|[\u{E0000}-\u{E007F}]/u;

/** Texts of a schema a model reads: every `description` and `title`, depth-bounded. */
function schemaTexts(schema: unknown, out: string[], depth = 0): void {
  if (depth > 8 || schema === null || typeof schema !== 'object') return;
  for (const [key, value] of Object.entries(schema as Record<string, unknown>)) {
    if ((key === 'description' || key === 'title') && typeof value === 'string') out.push(value);
    else if (typeof value === 'object') schemaTexts(value, out, depth + 1);
  }
}

/**
 * Why a tool's description (or the descriptions in its input schema) looks like it tries
 * to instruct the model; empty when it does not. A heuristic: it flags for review, it
 * does not prove anything.
 */
export function injectionFlags(
  definition: Pick<ToolDefinition, 'description' | 'input_schema'>,
): string[] {
  const texts = [definition.description];
  schemaTexts(definition.input_schema, texts);
  const flags = new Set<string>();
  for (const text of texts) {
    if (INVISIBLE.test(text)) flags.add('contains invisible characters');
    for (const [pattern, reason] of INJECTION_PATTERNS) {
      if (pattern.test(text)) flags.add(reason);
    }
  }
  return [...flags];
}
