import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { SettingsError } from './settings.ts';

/** The first format: no key id; opened by trying every key of the ring. */
const SEALED_V1 = 'sealed:v1:';
/** `sealed:v2:<key id>:<iv|tag|ciphertext as base64url>` (decision 0016). */
const SEALED_V2 = 'sealed:v2:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The key file in the data directory when ORCHESTRA_SECRETS_KEY is not set. */
export const NODE_KEY_FILE = 'node-key';
/** The setting that holds the node key, and its deprecated name. */
export const SECRETS_KEY_ENV = 'ORCHESTRA_SECRETS_KEY';
export const DEPRECATED_SECRET_KEY_ENV = 'ORCHESTRA_SECRET_KEY';
export const PREVIOUS_KEYS_ENV = 'ORCHESTRA_SECRETS_PREVIOUS_KEYS';

/** A secret was sealed with a key this node does not have. */
export class SecretKeyMismatchError extends Error {}

/**
 * The id of a key: 8 hex digits of a SHA-256 of it (with a label, so that the digest is of
 * no use for anything else). It names the key a value was sealed with; it is not secret.
 */
export function keyIdOf(key: Buffer): string {
  return createHash('sha256')
    .update('orchestra secret box key id\0')
    .update(key)
    .digest('hex')
    .slice(0, 8);
}

/**
 * Encrypts secrets that must be stored (tenants' named secrets, signing keys) with
 * AES-256-GCM under the node's key. Each sealed value is bound to a context (which row and
 * column it belongs to), so a value copied into another row does not open.
 *
 * A keyring: values are sealed with the current key and carry its id; values sealed with a
 * previous key (ORCHESTRA_SECRETS_PREVIOUS_KEYS) still open, and `reseal` moves them to the
 * current key. Values of the first format (`sealed:v1:`) carry no id and still open.
 */
export class SecretBox {
  readonly #current: { id: string; key: Buffer };
  readonly #keys = new Map<string, Buffer>();

  constructor(key: Buffer, previous: readonly Buffer[] = []) {
    for (const k of [key, ...previous]) {
      if (k.length !== 32) throw new Error('a secret key must be 32 bytes');
    }
    this.#current = { id: keyIdOf(key), key };
    for (const k of [key, ...previous]) {
      if (!this.#keys.has(keyIdOf(k))) this.#keys.set(keyIdOf(k), k);
    }
  }

  /** The id of the key new values are sealed with. */
  get keyId(): string {
    return this.#current.id;
  }

  /** True for a value `seal` produced; false for one stored in the clear by older versions. */
  static isSealed(value: string): boolean {
    return value.startsWith(SEALED_V1) || value.startsWith(SEALED_V2);
  }

  /** The id of the key `sealed` was sealed with; undefined for the first format (no id). */
  static keyIdOf(sealed: string): string | undefined {
    if (!sealed.startsWith(SEALED_V2)) return undefined;
    const end = sealed.indexOf(':', SEALED_V2.length);
    return end < 0 ? undefined : sealed.slice(SEALED_V2.length, end);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    const sealed = Buffer.concat([iv, cipher.getAuthTag(), body]);
    return `${SEALED_V2}${this.#current.id}:${sealed.toString('base64url')}`;
  }

  /** Throws `SecretKeyMismatchError` when no key of the ring opens the value in `context`. */
  open(sealed: string, context: string): string {
    if (sealed.startsWith(SEALED_V2)) {
      const id = SecretBox.keyIdOf(sealed);
      const key = id === undefined ? undefined : this.#keys.get(id);
      if (id === undefined || key === undefined) {
        throw new SecretKeyMismatchError(
          `${context} was encrypted with key ${id ?? '(none)'}, which is neither ${SECRETS_KEY_ENV} nor one of ${PREVIOUS_KEYS_ENV}: every node of a cluster needs the same keys`,
        );
      }
      const opened = decrypt(key, sealed.slice(SEALED_V2.length + id.length + 1), context);
      if (opened === undefined) {
        throw new SecretKeyMismatchError(
          `${context} does not open with key ${id}: it was damaged or copied from another row`,
        );
      }
      return opened;
    }
    if (!sealed.startsWith(SEALED_V1)) throw new Error('the value is not sealed');
    const body = sealed.slice(SEALED_V1.length);
    for (const key of this.#keys.values()) {
      const opened = decrypt(key, body, context);
      if (opened !== undefined) return opened;
    }
    throw new SecretKeyMismatchError(
      `${context} was encrypted with another key: every node of a cluster needs the same ${SECRETS_KEY_ENV}`,
    );
  }

  /** True when `sealed` is sealed with the current key: `reseal` would change nothing. */
  isCurrent(sealed: string): boolean {
    return SecretBox.keyIdOf(sealed) === this.#current.id;
  }

  /** `sealed` sealed again with the current key; throws as `open` does. */
  reseal(sealed: string, context: string): string {
    return this.seal(this.open(sealed, context), context);
  }
}

/** The plaintext of `body` (base64url of iv, tag, ciphertext) under `key`, or undefined. */
function decrypt(key: Buffer, body: string, context: string): string | undefined {
  const raw = Buffer.from(body, 'base64url');
  if (raw.length < IV_BYTES + TAG_BYTES) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(context));
  decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  try {
    return Buffer.concat([
      decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)),
      decipher.final(),
    ]).toString('utf8');
  } catch {
    return undefined;
  }
}

/** Parses a key: 32 bytes as base64 (standard or URL-safe) or 64 hex digits. */
export function parseSecretKey(text: string): Buffer | undefined {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) return undefined;
  const key = Buffer.from(trimmed.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return key.length === 32 ? key : undefined;
}

/** The key settings, as `loadKeyring` reads them. */
export interface KeySettings {
  secretsKey?: string | undefined;
  /** ORCHESTRA_SECRET_KEY, the deprecated name of ORCHESTRA_SECRETS_KEY. */
  secretKey?: string | undefined;
  secretsPreviousKeys?: string | undefined;
  dataDir: string;
}

/**
 * The node's keyring: the current key from ORCHESTRA_SECRETS_KEY (or its deprecated name
 * ORCHESTRA_SECRET_KEY; both set to different keys is refused), otherwise the key file in
 * the data directory, created (mode 0600) on first start; and the previous keys of
 * ORCHESTRA_SECRETS_PREVIOUS_KEYS, which still open what they sealed. Throws a
 * `SettingsError` that names the setting, never its value.
 */
export function loadKeyring(settings: KeySettings, log: Logger): SecretBox {
  const parse = (name: string, text: string): Buffer => {
    const key = parseSecretKey(text);
    if (key === undefined) throw new SettingsError(`${name} must be 32 bytes in base64 or hex`);
    return key;
  };
  const current = settings.secretsKey && parse(SECRETS_KEY_ENV, settings.secretsKey);
  const deprecated = settings.secretKey && parse(DEPRECATED_SECRET_KEY_ENV, settings.secretKey);
  if (current && deprecated && !current.equals(deprecated)) {
    throw new SettingsError(
      `${SECRETS_KEY_ENV} and ${DEPRECATED_SECRET_KEY_ENV} (its deprecated name) are both set, to different keys; set only ${SECRETS_KEY_ENV}`,
    );
  }
  if (deprecated && !current) {
    log.warn(`${DEPRECATED_SECRET_KEY_ENV} is deprecated; name it ${SECRETS_KEY_ENV}`);
  }
  const previous = (settings.secretsPreviousKeys ?? '')
    .split(',')
    .map((text) => text.trim())
    .filter((text) => text !== '')
    .map((text, i) => parse(`${PREVIOUS_KEYS_ENV} (key ${i + 1})`, text));
  const key = current || deprecated || loadKeyFile(settings.dataDir, log);
  return new SecretBox(key, previous);
}

/** The key file in the data directory, created (mode 0600) on first start. */
function loadKeyFile(dataDir: string, log: Logger): Buffer {
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
