import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Builds a package for npm into its dist/ (JavaScript, .d.ts and their maps, by tsc with its
// tsconfig.build.json) when its sources changed since the last build, or with --force: this
// package, @orchestra/protocol, and the SDK through it (decisions 0012 and 0014). Inside the
// repository the server and the tests run the sources through the `@orchestra/source`
// export condition; dist/ is what npm users, and the console's Vite build, get. Sources are
// compared by content, as for the console (decision 0008), because a checkout or a copy
// changes file times.

const protocolDir = fileURLToPath(new URL('..', import.meta.url));

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
 * Builds `dir`'s dist/ unless it is up to date (always with `force`). Returns false when it
 * could not, because TypeScript (a dev dependency) is not installed.
 */
export function buildPackage(dir: string, options: { force?: boolean } = {}): boolean {
  const name = basename(dir);
  const dist = join(dir, 'dist');
  const stamp = join(dist, '.sources-hash');
  const hash = sourcesHash(dir, [
    join(dir, 'src'),
    join(dir, 'package.json'),
    join(dir, 'tsconfig.build.json'),
    join(dir, '..', '..', 'tsconfig.json'),
    fileURLToPath(import.meta.url),
  ]);
  const current =
    existsSync(join(dist, 'index.js')) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash;
  if (current && !options.force) {
    console.log(`${name}: up to date`);
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
    console.warn(`${name}: not built (TypeScript is not installed: install the dev dependencies)`);
    return false;
  }
  const started = Date.now();
  // A file removed from src/ must not live on in dist/.
  rmSync(dist, { recursive: true, force: true });
  const result = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.build.json')], {
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    throw new Error(`${name}: tsc failed (exit ${result.status ?? result.signal})`);
  }
  writeFileSync(stamp, hash);
  console.log(
    `${name}: built into ${relative(process.cwd(), dist) || dist} in ${Date.now() - started} ms`,
  );
  return true;
}

/** Builds @orchestra/protocol's dist/ unless it is up to date (see `buildPackage`). */
export function buildProtocol(options: { force?: boolean } = {}): boolean {
  return buildPackage(protocolDir, options);
}

/** Runs `build` as a package's build script: npm pack runs it (prepack). */
export function runBuildScript(build: (options: { force?: boolean }) => boolean): void {
  try {
    // A package without dist/ must not be made.
    if (!build({ force: process.argv.includes('--force') })) process.exitCode = 1;
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  }
}

if (import.meta.main) runBuildScript(buildProtocol);
