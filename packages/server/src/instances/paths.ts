import { lstat, mkdir, readlink, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ApiError, fieldError } from '../platform/errors.ts';

// Path safety for everything that touches an instance's files: a path a client gives is
// relative to the workspace, and whatever it resolves to (through `..` and symbolic links)
// must stay inside it. Checks resolve the real path first, so a link planted inside by a
// process of the instance cannot lead an API call out.

/** True when `path` is `root` or lies under it (both resolved). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** `abs` relative to `root`, with "/" separators ("" for the root itself). */
export function relativePath(root: string, abs: string): string {
  return relative(root, abs).split(sep).join('/');
}

/** The lexical checks: no NUL byte, not absolute, no `..` that climbs out. */
export function lexicalInside(root: string, path: string, field: string): string {
  if (path.includes('\u0000')) throw fieldError(field, 'must not hold a NUL byte');
  if (isAbsolute(path)) throw fieldError(field, 'must be relative to the workspace');
  const lexical = resolve(root, path);
  if (!isInside(root, lexical)) throw fieldError(field, 'must stay inside the workspace');
  return lexical;
}

export function fileNotFound(path: string): ApiError {
  return new ApiError('WORKSPACE_FILE_NOT_FOUND', `Nothing is at "${path}" in the workspace`, {
    details: { path },
  });
}

function ledOut(field: string): ApiError {
  return fieldError(field, 'leads out of the workspace through a symbolic link');
}

/**
 * Resolves a path a client gave, relative to `root` (itself resolved), to an existing
 * path inside it, following every symbolic link, or refuses it: 400 naming `field` for
 * absolute paths, `..` that climbs out, NUL bytes and links that lead out; for a path
 * that does not exist, 404 WORKSPACE_FILE_NOT_FOUND, or 400 when `missing` is 'field'.
 */
export async function resolveInside(
  root: string,
  path: string,
  field: string,
  missing: 'field' | 'not-found' = 'field',
): Promise<string> {
  const lexical = lexicalInside(root, path, field);
  let real: string;
  try {
    real = await realpath(lexical);
  } catch {
    if (missing === 'not-found') throw fileNotFound(path);
    throw fieldError(field, `"${path}" does not exist in the workspace`);
  }
  if (!isInside(await realpath(root), real)) throw ledOut(field);
  return real;
}

/**
 * An entry of the workspace by name, without following a link it may itself be: its
 * parent directory resolved (which must exist and stay inside), and its name. The
 * workspace itself is `{ parent: root, name: '' }`.
 */
export async function resolveEntry(
  root: string,
  path: string,
  field: string,
): Promise<{ abs: string; rel: string; isRoot: boolean }> {
  const realRoot = await realpath(root);
  const lexical = lexicalInside(realRoot, path, field);
  if (lexical === realRoot) return { abs: realRoot, rel: '', isRoot: true };
  let parent: string;
  try {
    parent = await realpath(dirname(lexical));
  } catch {
    throw fileNotFound(relativePath(realRoot, dirname(lexical)));
  }
  if (!isInside(realRoot, parent)) throw ledOut(field);
  const abs = join(parent, basename(lexical));
  return { abs, rel: relativePath(realRoot, abs), isRoot: false };
}

/**
 * Makes the directory `path` (relative to `root`) and its missing parents, one level at a
 * time, so that a symbolic link on the way is followed only when it stays inside (a plain
 * `mkdir -p` would create directories wherever a link points). Resolves to its real path
 * and the directories it made (relative to the root).
 */
export async function makeDirectoryInside(
  root: string,
  path: string,
  field: string,
): Promise<{ real: string; made: string[] }> {
  const made: string[] = [];
  const realRoot = await realpath(root);
  const lexical = lexicalInside(realRoot, path, field);
  let current = realRoot;
  for (const part of relative(realRoot, lexical).split(sep)) {
    if (part === '') continue;
    const next = join(current, part);
    const info = await lstat(next).catch(() => undefined);
    if (info === undefined) {
      const fresh = await mkdir(next).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          return false;
        },
      );
      current = await realpath(next);
      if (fresh) made.push(relativePath(realRoot, current));
    } else if (info.isSymbolicLink()) {
      const target = await realpath(next).catch(() => undefined);
      if (target === undefined) {
        throw fieldError(field, `"${relativePath(realRoot, next)}" is a dangling symbolic link`);
      }
      current = target;
    } else if (info.isDirectory()) {
      current = next;
    } else {
      throw new ApiError(
        'WORKSPACE_FILE_EXISTS',
        `"${relativePath(realRoot, next)}" is a file, not a directory`,
        { details: { path: relativePath(realRoot, next) } },
      );
    }
    if (!isInside(realRoot, current)) throw ledOut(field);
  }
  return { real: current, made };
}

/** A link's target as stored, or undefined for anything else. */
export async function linkTarget(abs: string): Promise<string | undefined> {
  return readlink(abs).catch(() => undefined);
}

/**
 * Checks that an open file is where the checks said: a process of the instance could
 * have swapped a directory on the way for a link between the check and the open.
 */
export async function checkOpened(root: string, fd: number, field: string): Promise<void> {
  const real = await realpath(`/proc/self/fd/${fd}`).catch(() => undefined);
  if (real !== undefined && !isInside(await realpath(root), real)) throw ledOut(field);
}
