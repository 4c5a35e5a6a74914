import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closedPort, ORCHESTRA_BIN, SPAWN_DEADLINE_MS, tempDir } from './helpers.ts';

// Client commands load no server code: main.ts loads the one group it runs, and a group
// loads the SDK and the CLI's own files, never the store, Fastify or the settings schemas.
// Proven the way it runs: a spawned CLI with a module hook that records every file loaded.

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const HOOK = fileURLToPath(new URL('./fixtures/record-loads.ts', import.meta.url));

/** Server files a client command may load: constants with no imports of their own. */
const PURE_SERVER_FILES = new Set([
  'packages/server/package.json', // the version
  'packages/server/src/version.ts',
  'packages/server/src/platform/duration.ts',
]);

/**
 * The wire contract's constants (states, codes, bounds), without its schemas or TypeBox:
 * `@orchestra/protocol/constants`, as sources under npm or built otherwise (decision 0014).
 */
const PROTOCOL_CONSTANTS = /^packages\/protocol\/(src|dist)\/(constants|errors|states)\.(ts|js)$/;

const work = tempDir('orchestra-cli-startup-');
after(() => work.remove());

/** Runs `orchestra <args>`; resolves to its exit code and the repository files it loaded. */
async function loadsOf(args: string[]): Promise<{ code: number | null; files: string[] }> {
  const record = join(work.path, `loads-${args.join('-').replace(/\W+/g, '_')}.txt`);
  const child = spawn(process.execPath, ['--import', HOOK, ORCHESTRA_BIN, ...args], {
    cwd: work.path,
    env: { PATH: process.env.PATH ?? '', ORCHESTRA_TEST_LOADS_FILE: record },
    stdio: 'ignore',
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), SPAWN_DEADLINE_MS);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  const files = readFileSync(record, 'utf8')
    .split('\n')
    .filter((url) => url.startsWith('file:'))
    .map((url) => relative(REPO, fileURLToPath(url)));
  return { code, files };
}

/** The files that are neither the CLI's, the SDK's, nor a pure server constant. */
function serverCode(files: string[], sdk: boolean): string[] {
  return files.filter(
    (file) =>
      !file.startsWith('packages/server/src/cli/') &&
      file !== 'packages/server/bin/orchestra.js' &&
      !PURE_SERVER_FILES.has(file) &&
      !PROTOCOL_CONSTANTS.test(file) &&
      // The SDK's sources under npm (the @orchestra/source condition), its build otherwise.
      !(sdk && /^packages\/sdk\/(src|dist)\//.test(file)),
  );
}

describe('what a client command loads', { concurrency: 4 }, () => {
  test('orchestra version loads the CLI framework and the version alone', async () => {
    const { code, files } = await loadsOf(['version']);
    assert.equal(code, 0);
    assert.deepEqual(serverCode(files, false), []);
    assert.ok(files.includes('packages/server/src/cli/commands/version.ts'));
    // Not even another group, nor the SDK.
    assert.deepEqual(
      files.filter((f) => f.startsWith('packages/server/src/cli/commands/')),
      ['packages/server/src/cli/commands/version.ts'],
    );
  });

  test('orchestra whoami, talking to a server, loads the SDK and no server code', async () => {
    const port = await closedPort();
    const { code, files } = await loadsOf([
      'whoami',
      '--url',
      `http://127.0.0.1:${port}`,
      '--api-key',
      'ork_x',
    ]);
    assert.equal(code, 1, 'CONNECTION_FAILED: it ran as far as the request');
    assert.deepEqual(serverCode(files, true), []);
    assert.ok(
      files.includes('packages/sdk/src/client.ts') || files.includes('packages/sdk/dist/client.js'),
    );
  });

  for (const group of [
    'whoami',
    'keys',
    'tenants',
    'templates',
    'task',
    'agents',
    'sessions',
    'topics',
    'config',
    'services',
    'stats',
    'cluster',
  ]) {
    test(`orchestra ${group} --help loads no server code`, async () => {
      const { code, files } = await loadsOf([group, '--help']);
      assert.equal(code, 0);
      assert.deepEqual(serverCode(files, true), []);
    });
  }
});
