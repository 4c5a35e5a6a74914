import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Orchestra } from '@orchestra/sdk';
import {
  type DurationFormat,
  durationUnitsText,
  formatDuration,
  parseDuration,
} from '../platform/duration.ts';
import { ADMIN_KEY_FILE } from '../version.ts';
import { type OptionSpec, type OptionSpecs, oneOf, print, UsageError } from './spec.ts';

// What the commands that talk to a server share: flags, the client, output and argument
// checks.

export { print, UsageError };

/** The options of every command that talks to a server. */
export const CLIENT_OPTIONS = {
  url: {
    type: 'string',
    value: 'URL[,URL…]',
    description:
      'Server URL, or the nodes of a cluster to fail over between (env ORCHESTRA_URL; default http://localhost:8080)',
  },
  'api-key': {
    type: 'string',
    value: 'KEY',
    description:
      'API key or JWT (env ORCHESTRA_API_KEY; default for a server on this machine: the admin-key file in ORCHESTRA_DATA_DIR or ./.orchestra, if present)',
  },
  json: { type: 'boolean', default: false, description: 'Print JSON instead of tables' },
} as const satisfies OptionSpecs;

/** For the commands not yet declared with a spec (config, services). */
const LEGACY_OPTIONS = {
  ...CLIENT_OPTIONS,
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export function parse<
  O extends Record<
    string,
    {
      type: 'string' | 'boolean';
      short?: string;
      multiple?: boolean;
      default?: string | boolean | string[];
    }
  >,
>(args: string[], options: O) {
  try {
    return parseArgs({
      args,
      options: { ...LEGACY_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The client flags: where the server is and the credential. */
interface ClientFlags {
  url?: string | undefined;
  'api-key'?: string | undefined;
}

/**
 * The server's URLs and the credential, from the flags, the environment or (for a server on
 * this machine) the admin-key file: what every client of the SDK is constructed with.
 */
export function connection(values: ClientFlags): { url: string[]; apiKey: string } {
  // Several nodes of a cluster, comma-separated: the client moves on when one is down.
  const urls = (values.url ?? process.env.ORCHESTRA_URL ?? 'http://localhost:8080')
    .split(',')
    .map((u) => u.trim());
  const apiKey =
    values['api-key'] ??
    process.env.ORCHESTRA_API_KEY ??
    // The local admin key goes only to a server on this machine, never to a remote --url.
    (urls.every(isLoopback) ? adminKeyFromDataDir() : undefined);
  if (apiKey === undefined) {
    throw new UsageError('No credential: pass --api-key or set ORCHESTRA_API_KEY');
  }
  return { url: urls, apiKey };
}

export function client(values: ClientFlags): Orchestra {
  const options = connection(values);
  try {
    return new Orchestra(options);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function isLoopback(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return false;
  }
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The first-start admin key, for the common case of a CLI next to a local server. */
export function adminKeyFromDataDir(): string | undefined {
  const dir = resolve(process.env.ORCHESTRA_DATA_DIR || '.orchestra');
  try {
    return readFileSync(join(dir, ADMIN_KEY_FILE), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The text of `file` (`-`: standard input) and its name for messages. */
export function readText(file: string): { source: string; text: string } {
  const source = file === '-' ? 'standard input' : file;
  try {
    return { source, text: readFileSync(file === '-' ? 0 : file, 'utf8') };
  } catch (err) {
    throw new UsageError(`cannot read ${source}: ${(err as Error).message}`);
  }
}

/** The JSON value in `file` (`-`: standard input); usage errors name the file. */
export function readJson(file: string): unknown {
  const { source, text } = readText(file);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The JSON object in `file` (`-`: standard input); usage errors name the file, and `example`
 * shows what it should hold.
 */
export function readJsonObject(file: string, example: string): Record<string, unknown> {
  const parsed = readJson(file);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(
      `${file === '-' ? 'standard input' : file} must hold a JSON object, such as ${example}`,
    );
  }
  return parsed as Record<string, unknown>;
}

/** A copy of `document` without `fields` (what the server sets, in a `get --json` output). */
export function without(
  document: Record<string, unknown>,
  fields: readonly string[],
): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...document };
  for (const field of fields) delete copy[field];
  return copy;
}

/** `a=1,b=2`, or `-` for no labels: a table cell. */
export function labelsText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

/**
 * Asks `question` on standard error and reads the answer from standard input (a terminal,
 * or a pipe: `echo y | orchestra …`). Resolves to true for y or yes; an input that ends
 * without an answer is a no.
 */
export async function confirm(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  const ended = new Promise<string>((resolve) => prompt.once('close', () => resolve('')));
  // Ctrl-C at the question is a no, not a prompt left paused.
  prompt.once('SIGINT', () => prompt.close());
  try {
    const answer = await Promise.race([prompt.question(`${question} [y/N] `), ended]);
    return /^\s*y(es)?\s*$/i.test(answer);
  } finally {
    prompt.close();
  }
}

/** `--file FILE` of the commands that create or replace something from a JSON file. */
export const JSON_FILE_OPTION = {
  type: 'string',
  value: 'FILE',
  required: '- for stdin',
  description: 'The JSON file (- reads standard input)',
} as const satisfies OptionSpecs[string];

/** A flag whose value is one of `allowed`, or a usage error naming them. */
export function choice<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`${flag} must be ${oneOf(allowed)}, got "${value}"`);
  }
  return value as T;
}

/** A positive integer flag, such as `--version 3`. */
export function positiveInteger(flag: string, text: string): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) {
    throw new UsageError(`${flag} must be a version number (1 or more), got "${text}"`);
  }
  return Number(text);
}

/** A count flag, such as `--limit 20`: a whole number from 1 to `max`. */
export function countFlag(flag: string, text: string, max: number): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${flag} must be a number from 1 to ${max}, got "${text}"`);
  }
  return Number(text);
}

/** A repeatable `--label KEY=VALUE` flag; `description` says what it does. */
export const LABEL = {
  type: 'string',
  value: 'KEY=VALUE',
  multiple: true,
  description: 'A label',
} as const satisfies OptionSpec;

/** The `--label KEY=VALUE` flags as an object. */
export function labelFlags(flags: string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const selector of flags ?? []) {
    const at = selector.indexOf('=');
    if (at < 1) throw new UsageError(`--label must be KEY=VALUE, got "${selector}"`);
    labels[selector.slice(0, at)] = selector.slice(at + 1);
  }
  return labels;
}

/** A repeatable `--env NAME=VALUE` flag: a variable for a command or terminal. */
export const ENV = {
  type: 'string',
  value: 'NAME=VALUE',
  multiple: true,
  description: 'An environment variable',
} as const satisfies OptionSpec;

/** The `--env NAME=VALUE` flags as an object. */
export function envFlags(flags: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of flags ?? []) {
    const at = pair.indexOf('=');
    if (at < 1) throw new UsageError(`--env must be NAME=VALUE, got "${pair}"`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return env;
}

/** A duration flag such as `--wait 30s`, in ms; `example` shows a valid one in messages. */
export function durationFlag(
  flag: string,
  text: string,
  format: DurationFormat,
  example: string,
): number {
  const parsed = parseDuration(text, format);
  if (parsed.ok) return parsed.ms;
  if (parsed.reason === 'too_long') {
    throw new UsageError(`${flag} must be at most ${formatDuration(parsed.maxMs, format)}`);
  }
  throw new UsageError(
    `${flag} must be a number followed by ${durationUnitsText(format)} (like ${example}), got "${text}"`,
  );
}

/** What a command's run gets, for the argument checks below. */
interface Arguments {
  positionals: string[];
  path: string;
}

/** The one argument of a command such as `task get ID`; `noun` names it ("task id"). */
export function oneArgument({ positionals, path }: Arguments, noun: string): string {
  const value = positionals[0];
  if (value === undefined) {
    throw new UsageError(`${path} needs ${/^[aeiou]/.test(noun) ? 'an' : 'a'} ${noun}`);
  }
  if (positionals.length > 1) {
    throw new UsageError(`${path} takes one ${noun}, got "${positionals.join(' ')}"`);
  }
  return value;
}

/** Refuses arguments to a command that takes none. */
export function noArguments({ positionals, path }: Arguments): void {
  if (positionals.length > 0) {
    throw new UsageError(`${path} takes no arguments, got "${positionals.join(' ')}"`);
  }
}

/** A value that may be missing, for a table cell. */
export const dash = (v: string | null) => v ?? '-';

/** What a command that made a credential prints: what it made, and the secret, shown once. */
export function shownOnce(headline: string, secret: string): string {
  return [headline, '', `  ${secret}`, '', 'Store it now: it is not shown again.'].join('\n');
}

/** A stream offset: 0 or more. */
export function offsetFlag(flag: string, text: string): number {
  if (!/^\d{1,15}$/.test(text))
    throw new UsageError(`${flag} must be an offset (0 or more), got "${text}"`);
  return Number(text);
}

/**
 * Refuses `--file` together with the flags that would say the same (`flags`: the command's
 * own options, besides `file`); `what` names what the flags describe ("the settings").
 */
export function fileOrFlags(
  values: Record<string, unknown>,
  flags: OptionSpecs,
  path: string,
  what: string,
): void {
  if (values.file === undefined) return;
  const given = Object.keys(flags).filter(
    (flag) => flag !== 'file' && values[flag] !== undefined && values[flag] !== false,
  );
  if (given.length > 0) {
    throw new UsageError(
      `${path} takes --file or ${what} as flags, not both (got --${given.join(', --')})`,
    );
  }
}

/**
 * The name of what `create` makes: its argument, or the file's "name" (`fromFile`); both
 * given, they must agree. `noun` names it in messages ("view").
 */
export function nameFromArgumentOrFile(
  { positionals, path }: Arguments,
  fromFile: unknown,
  noun: string,
): string {
  if (positionals.length > 1) {
    throw new UsageError(`${path} takes one ${noun} name, got "${positionals.join(' ')}"`);
  }
  const name = positionals[0] ?? fromFile;
  if (typeof name !== 'string') {
    throw new UsageError(`${path} needs a ${noun} name (an argument, or "name" in the file)`);
  }
  if (positionals[0] !== undefined && fromFile !== undefined && fromFile !== name) {
    throw new UsageError(`the file names ${noun} "${String(fromFile)}", not "${name}"`);
  }
  return name;
}
