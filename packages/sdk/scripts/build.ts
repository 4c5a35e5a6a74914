import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Builds @orchestra/sdk into dist/ (JavaScript, .d.ts and their maps, by tsc with
// tsconfig.build.json) when its sources changed since the last build, or with --force.
// Inside the repository the server and the tests run the SDK's TypeScript through the
// `@orchestra/source` export condition; dist/ is what npm users, and the console's Vite
// build, get (decision 0012). Sources are compared by content, as for the console
// (decision 0008), because a checkout or a copy changes file times.

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const dist = join(sdkDir, 'dist');
const stamp = join(dist, '.sources-hash');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? files(path) : [path];
  });
}

/** A hash of the files under `inputs` (files or directories), named relative to `base`. */
export function sourcesHash(base: string, inputs: string[]): string {
  const paths = inputs.flatMap((path) => (statSync(path).isDirectory() ? files(path) : [path]));
  const hash = createHash('sha256');
  for (const path of paths.sort()) {
    hash.update(relative(base, path)).update('\0').update(readFileSync(path)).update('\0');
  }
  return hash.digest('hex');
}

/**
 * Builds dist/ unless it is up to date (always with `force`). Returns false when it could
 * not, because TypeScript (a dev dependency) is not installed.
 */
export function buildSdk(options: { force?: boolean } = {}): boolean {
  const hash = sourcesHash(sdkDir, [
    join(sdkDir, 'src'),
    join(sdkDir, 'package.json'),
    join(sdkDir, 'tsconfig.build.json'),
    join(sdkDir, '..', '..', 'tsconfig.json'),
    fileURLToPath(import.meta.url),
  ]);
  const current =
    existsSync(join(dist, 'index.js')) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash;
  if (current && !options.force) {
    console.log('sdk: up to date');
    return true;
  }
  let tsc: string;
  try {
    // TypeScript's exports do not list its command; find it next to its package.json.
    tsc = join(
      dirname(createRequire(import.meta.url).resolve('typescript/package.json')),
      'bin/tsc',
    );
  } catch {
    // An install without dev dependencies (npm ci --omit=dev) cannot build; the server
    // does not need dist/ (it runs the sources), only the console build and npm pack do.
    console.warn('sdk: not built (TypeScript is not installed: install the dev dependencies)');
    return false;
  }
  const started = Date.now();
  // A file removed from src/ must not live on in dist/.
  rmSync(dist, { recursive: true, force: true });
  const result = spawnSync(process.execPath, [tsc, '-p', join(sdkDir, 'tsconfig.build.json')], {
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    throw new Error(`sdk: tsc failed (exit ${result.status ?? result.signal})`);
  }
  writeFileSync(stamp, hash);
  console.log(
    `sdk: built into ${relative(process.cwd(), dist) || dist} in ${Date.now() - started} ms`,
  );
  return true;
}

if (import.meta.main) {
  try {
    // npm pack runs this (prepack): a package without dist/ must not be made.
    if (!buildSdk({ force: process.argv.includes('--force') })) process.exitCode = 1;
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  }
}
