import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Random base62 string; rejection sampling keeps every character equally likely. */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += BASE62[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

let lastMs = 0;
let sequence = 0;

/**
 * A time-ordered id: 12 hex digits of milliseconds, 4 of a per-process sequence, then 12
 * random hex digits, with a prefix naming the resource (`key_…`). Ids from one process
 * sort in creation order even within a millisecond, which is what cursor pagination and
 * first-in-first-out dispatch rely on; ids from different nodes sort by millisecond.
 */
export function newId(prefix: string, nowMs: number = Date.now()): string {
  let ms = nowMs;
  if (ms <= lastMs) {
    ms = lastMs;
    sequence += 1;
    if (sequence > 0xffff) {
      ms += 1; // 65,536 ids in one millisecond: borrow the next one rather than repeat
      sequence = 0;
    }
  } else {
    sequence = 0;
  }
  lastMs = ms;
  return `${prefix}_${ms.toString(16).padStart(12, '0')}${sequence.toString(16).padStart(4, '0')}${randomBytes(6).toString('hex')}`;
}
