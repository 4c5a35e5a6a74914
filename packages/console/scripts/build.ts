import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSdk, sourcesHash } from '../../sdk/scripts/build.ts';

// Builds the console into dist/ when its sources changed since the last build (or with
// --force). `npm install`, `npm start` and `npm test` run it (decision 0008): the build is
// not committed, and a checkout is never served a stale console. Sources are compared by
// content, not by time, because a checkout or a copy changes file times. The console
// bundles the SDK as npm users get it, from its built dist/ (decision 0012), so the SDK (and
// the protocol package it loads its constants from, decision 0014) is built first when its
// sources changed.

const consoleDir = fileURLToPath(new URL('..', import.meta.url));
const dist = join(consoleDir, 'dist');
const stamp = join(dist, '.sources-hash');

const force = process.argv.includes('--force');
if (!buildSdk()) {
  console.warn('console: not built (it needs the built SDK)');
  process.exit(0);
}
const hash = sourcesHash(consoleDir, [
  join(consoleDir, 'index.html'),
  join(consoleDir, 'vite.config.ts'),
  join(consoleDir, 'package.json'),
  join(consoleDir, 'src'),
  join(consoleDir, '..', 'sdk', 'dist'),
  join(consoleDir, '..', 'protocol', 'dist'),
]);
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
