import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/** Files of the data directory that hold data or secrets: readable by the owner only. */
const PRIVATE_FILES = [
  'orchestra.db',
  'orchestra.db-wal',
  'orchestra.db-shm',
  'orchestra.db-journal',
  'admin-key',
  'node-key',
];

/**
 * Makes the data directory private: creates it (and the SQLite file, so that SQLite's WAL
 * and shared-memory files, which take the database file's mode, are private too) readable
 * by the owner only, and tightens a directory or file that an older version or a user left
 * readable by others, with a log line each. On Windows modes mean little; nothing fails.
 */
export function secureDataDir(dir: string, log: Logger, options: { sqlite: boolean }): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  tighten(dir, 0o700, log);
  const database = join(dir, 'orchestra.db');
  if (options.sqlite && !existsSync(database)) closeSync(openSync(database, 'a', 0o600));
  for (const name of PRIVATE_FILES) {
    const file = join(dir, name);
    if (existsSync(file)) tighten(file, 0o600, log);
  }
}

function tighten(path: string, mode: number, log: Logger): void {
  if (process.platform === 'win32') return;
  const current = statSync(path).mode & 0o777;
  if ((current & ~mode) === 0) return;
  chmodSync(path, mode);
  log.warn(
    { path, mode: `0${current.toString(8)}`, now: `0${mode.toString(8)}` },
    'data directory permissions tightened: other users could read it',
  );
}
