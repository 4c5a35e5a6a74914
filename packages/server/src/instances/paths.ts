import { realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { fieldError } from '../platform/errors.ts';

/** True when `path` is `root` or lies under it (both resolved). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/**
 * Resolves a path a client gave, relative to `root`, to an existing path inside it, or
 * refuses it (400 naming `field`): absolute paths, `..` that climbs out, NUL bytes, and
 * symbolic links that lead out (the path is resolved through them before the check).
 */
export async function resolveInside(root: string, path: string, field: string): Promise<string> {
  if (path.includes('\u0000')) throw fieldError(field, 'must not hold a NUL byte');
  if (isAbsolute(path)) throw fieldError(field, 'must be relative to the workspace');
  const lexical = resolve(root, path);
  if (!isInside(root, lexical)) throw fieldError(field, 'must stay inside the workspace');
  let real: string;
  try {
    real = await realpath(lexical);
  } catch {
    throw fieldError(field, `"${path}" does not exist in the workspace`);
  }
  if (!isInside(await realpath(root), real)) {
    throw fieldError(field, 'leads out of the workspace through a symbolic link');
  }
  return real;
}
