import { ENV_PATTERN } from '@orchestra/protocol';
import { invalidField } from '../platform/envelope.ts';

export { ENV_PATTERN };

/**
 * Config keys are paths of segments, `client/flushInterval`, written with or without a
 * leading slash. Segments are ASCII letters, digits and `_ . -`, so that byte order (the
 * KV's) and JavaScript's string order agree, and `#` can separate a key from a history
 * version in the KV without ambiguity. Route suffixes (`/history`, `/diff`, `/revert`)
 * cannot end a key.
 */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
export const KEY_MAX_LENGTH = 512;
export const KEY_MAX_SEGMENTS = 32;
export const RESERVED_LAST_SEGMENTS = new Set(['history', 'diff', 'revert']);
const ENV = new RegExp(ENV_PATTERN);

/** The key in canonical form (no leading or trailing slash), or a 400 naming `field`. */
export function parseKey(raw: string, field: string): string {
  const key = raw.replace(/^\/+/, '');
  if (key === '') throw invalidField(field, 'must not be empty');
  if (key.length > KEY_MAX_LENGTH)
    throw invalidField(field, `must be at most ${KEY_MAX_LENGTH} characters`);
  const segments = key.split('/');
  if (segments.length > KEY_MAX_SEGMENTS)
    throw invalidField(field, `must have at most ${KEY_MAX_SEGMENTS} segments`);
  for (const segment of segments) {
    if (!SEGMENT.test(segment))
      throw invalidField(
        field,
        `segment ${JSON.stringify(segment)} must be 1 to 128 of A-Z a-z 0-9 _ . - and not start with . or -`,
      );
  }
  const last = segments[segments.length - 1] ?? '';
  if (RESERVED_LAST_SEGMENTS.has(last))
    throw invalidField(field, `must not end with "${last}": it names a route`);
  return key;
}

/** A key prefix: what keys start with, as plain text (`client/` or `client/fl`). */
export function parsePrefix(raw: string | undefined, field: string): string {
  const prefix = (raw ?? '').replace(/^\/+/, '');
  if (prefix.length > KEY_MAX_LENGTH)
    throw invalidField(field, `must be at most ${KEY_MAX_LENGTH} characters`);
  if (!/^[A-Za-z0-9_./-]*$/.test(prefix))
    throw invalidField(field, 'may only hold A-Z a-z 0-9 _ . - and /');
  return prefix;
}

export function parseEnv(
  raw: string | undefined,
  fallback: string,
  field = 'querystring.env',
): string {
  const env = raw ?? fallback;
  if (!ENV.test(env))
    throw invalidField(field, 'must be 1 to 32 of a-z 0-9 _ - and start with a letter or digit');
  return env;
}

// Where things live in the tenant's KV.
/** Every value of every environment. */
export const VALUE_PREFIX = 'c/';
export const valueKey = (env: string, key: string) => `c/${env}/${key}`;
export const valuePrefix = (env: string, prefix: string) => `c/${env}/${prefix}`;
export const keyOfValueKey = (env: string, kvKey: string) => kvKey.slice(`c/${env}/`.length);
/** Its KV version is the config key's version: one put per change, deletes included. */
export const counterKey = (env: string, key: string) => `v/${env}/${key}`;
export const historyPrefix = (env: string, key: string) => `h/${env}/${key}#`;
export const historyKey = (env: string, key: string, version: number) =>
  `${historyPrefix(env, key)}${String(version).padStart(10, '0')}`;
export const versionOfHistoryKey = (kvKey: string) =>
  Number(kvKey.slice(kvKey.lastIndexOf('#') + 1));
export const schemaKey = (prefix: string) => `s/${prefix}`;
export const SCHEMA_PREFIX = 's/';
