import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Orchestra } from '@orchestra/sdk';
import { ADMIN_KEY_FILE } from '../version.ts';

// What every CLI command shares: flags, the client, output and argument checks.

/** A usage mistake: printed with the command's help hint, exit code 2. */
export class UsageError extends Error {}

export const CLIENT_OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean', default: false },
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
      options: { ...CLIENT_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function client(values: {
  url?: string | undefined;
  'api-key'?: string | undefined;
}): Orchestra {
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
  try {
    return new Orchestra({ url: urls, apiKey });
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

export function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
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

/** A stream offset: 0 or more. */
export function offsetFlag(flag: string, text: string): number {
  if (!/^\d{1,15}$/.test(text))
    throw new UsageError(`${flag} must be an offset (0 or more), got "${text}"`);
  return Number(text);
}
