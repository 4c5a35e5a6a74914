import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Builds the console into dist/ when its sources changed since the last build (or with
// --force). `npm install`, `npm start` and `npm test` run it (decision 0008): the build is
// not committed, and a checkout is never served a stale console. Sources are compared by
// content, not by time, because a checkout or a copy changes file times.

const consoleDir = fileURLToPath(new URL('..', import.meta.url));
const sdkSrc = fileURLToPath(new URL('../../sdk/src', import.meta.url));
const dist = join(consoleDir, 'dist');
const stamp = join(dist, '.sources-hash');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? files(path) : [path];
  });
}

function sourcesHash(): string {
  const inputs = [
    join(consoleDir, 'index.html'),
    join(consoleDir, 'vite.config.ts'),
    join(consoleDir, 'package.json'),
    ...files(join(consoleDir, 'src')),
    ...files(sdkSrc),
  ].sort();
  const hash = createHash('sha256');
  for (const path of inputs) {
    if (!statSync(path).isFile()) continue;
    hash.update(relative(consoleDir, path)).update('\0').update(readFileSync(path)).update('\0');
  }
  return hash.digest('hex');
}

const force = process.argv.includes('--force');
const hash = sourcesHash();
const current =
  existsSync(join(dist, 'index.html')) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash;
if (current && !force) {
  console.log('console: up to date');
} else {
  const started = Date.now();
  let vite: typeof import('vite');
  try {
    vite = await import('vite');
  } catch {
    // An install without dev dependencies (npm ci --omit=dev) cannot build: the server
    // then says so at `/` instead of failing the install. The container image builds the
    // console in a stage of its own (deploy/Dockerfile).
    console.warn('console: not built (Vite is not installed: install the dev dependencies)');
    process.exit(0);
  }
  await vite.build({ configFile: join(consoleDir, 'vite.config.ts'), logLevel: 'warn' });
  writeFileSync(stamp, hash);
  console.log(
    `console: built into ${relative(process.cwd(), dist) || dist} in ${Date.now() - started} ms`,
  );
}
