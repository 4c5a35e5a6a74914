import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

const SEALED_PREFIX = 'sealed:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The key file in the data directory when ORCHESTRA_SECRET_KEY is not set. */
export const NODE_KEY_FILE = 'node-key';

/** A secret was sealed with another key than this node's. */
export class SecretKeyMismatchError extends Error {}

/**
 * Encrypts secrets that must be stored (signing keys, later tool credentials) with
 * AES-256-GCM under the node's key. Each sealed value is bound to a context (which row and
 * column it belongs to), so a value copied into another row does not open.
 */
export class SecretBox {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error('the secret key must be 32 bytes');
    this.#key = key;
  }

  /** True for a value `seal` produced; false for one stored in the clear by older versions. */
  static isSealed(value: string): boolean {
    return value.startsWith(SEALED_PREFIX);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    const sealed = Buffer.concat([iv, cipher.getAuthTag(), body]);
    return `${SEALED_PREFIX}${sealed.toString('base64url')}`;
  }

  /** Throws `SecretKeyMismatchError` when the value was sealed under another key or context. */
  open(sealed: string, context: string): string {
    if (!SecretBox.isSealed(sealed)) throw new Error('the value is not sealed');
    const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8');
    } catch (err) {
      throw new SecretKeyMismatchError(
        `${context} was encrypted with another key: every node of a cluster needs the same ORCHESTRA_SECRET_KEY`,
        { cause: err },
      );
    }
  }
}

/** Parses ORCHESTRA_SECRET_KEY: 32 bytes as base64 (standard or URL-safe) or 64 hex digits. */
export function parseSecretKey(text: string): Buffer | undefined {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) return undefined;
  const key = Buffer.from(trimmed.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return key.length === 32 ? key : undefined;
}

/**
 * The node's key: ORCHESTRA_SECRET_KEY when set (a cluster's nodes must share it), otherwise
 * the key file in the data directory, created (mode 0600) on first start.
 */
export function loadNodeKey(configured: string | undefined, dataDir: string, log: Logger): Buffer {
  if (configured !== undefined) {
    const key = parseSecretKey(configured);
    if (key === undefined)
      throw new Error('ORCHESTRA_SECRET_KEY must be 32 bytes in base64 or hex');
    return key;
  }
  const file = join(dataDir, NODE_KEY_FILE);
  if (existsSync(file)) return readKeyFile(file);
  const key = randomBytes(32);
  try {
    writeFileSync(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process sharing the data directory created it first: use that one.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readKeyFile(file);
    throw err;
  }
  log.info({ file }, 'created the node key that encrypts stored secrets');
  return key;
}

/** Reads a key file another process may still be writing (it appears before its content). */
function readKeyFile(file: string): Buffer {
  for (let attempt = 0; ; attempt++) {
    const key = parseSecretKey(readFileSync(file, 'utf8'));
    if (key !== undefined) return key;
    if (attempt === 50) throw new Error(`${file} does not hold a 32-byte key in base64`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}
