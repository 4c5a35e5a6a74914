import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startTestServer, type TestServer, tempDir } from '../../server/test/helpers.ts';
import { Orchestra } from '../src/index.ts';

// @orchestra/sdk as an npm user gets it (decisions 0012 and 0014): `npm pack` of the SDK and
// of @orchestra/protocol (whose types the SDK's are), both tarballs installed into an empty
// project, the user's TypeScript checked by plain
// `tsc --strict --module nodenext`, and the emitted JavaScript run by plain `node` (24, the
// pinned one, and 22 from the npm registry) as an agent and a client against a real server.

const SDK_DIR = fileURLToPath(new URL('..', import.meta.url));
const PROTOCOL_DIR = fileURLToPath(new URL('../../protocol', import.meta.url));
const TSC = join(
  dirname(createRequire(import.meta.url).resolve('typescript/package.json')),
  'bin/tsc',
);
/** Bounds every command; npm may download Node 22 (about 30 MB) on a machine's first run. */
const COMMAND_DEADLINE_MS = 180_000;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

// What the user's shell has, without what npm or this repository add (NODE_OPTIONS carries
// the repository's `@orchestra/source` condition, npm_config_* the repository's npm config).
const userEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => name !== 'NODE_OPTIONS' && !/^npm_/i.test(name)),
);

function run(command: string, args: string[], cwd: string): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, env: userEnv, timeout: COMMAND_DEADLINE_MS, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function expectSuccess(what: string, result: RunResult): void {
  assert.equal(
    result.code,
    0,
    `${what} failed:\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
  );
}

/** The user's program: an agent and a client in one file, typed through the SDK's .d.ts. */
function userProgram(url: string, agentKey: string, apiKey: string): string {
  return `import {
  AgentWorker,
  isTerminalState,
  Orchestra,
  OrchestraError,
  type Task,
  type TaskContext,
} from '@orchestra/sdk';

const url = ${JSON.stringify(url)};

// @ts-expect-error: the types are real, and a task state is one of the documented ones
const impossible: Task['state'] = 'exploded';
// @ts-expect-error: an error code is one of the catalogue's
const uncatalogued: OrchestraError['code'] = 'NOT_A_CODE';

const worker = new AgentWorker({
  url,
  apiKey: ${JSON.stringify(agentKey)},
  agentId: 'package-test-agent',
  capabilities: ['echo'],
  handleSignals: false,
  handler: async (input: unknown, ctx: TaskContext) => {
    ctx.progress(1, 1, 'echoing');
    return { echoed: input };
  },
});
await worker.start();
const orchestra = new Orchestra({ url, apiKey: ${JSON.stringify(apiKey)} });
try {
  const task = await orchestra.tasks.create({ capabilities: ['echo'], input: { hello: 'world' } });
  const done: Task = await orchestra.tasks.wait(task.id, { timeoutMs: 60_000 });
  console.log(JSON.stringify({ state: done.state, ended: isTerminalState(done.state), result: done.result }));
} catch (err) {
  console.log(JSON.stringify({ error: err instanceof OrchestraError ? err.code : String(err) }));
} finally {
  await worker.stop();
}
`;
}

describe('the packed SDK installed into an empty project', () => {
  let server: TestServer;
  let project: { path: string; remove: () => void };
  let typeCheck: RunResult;
  let node22: string;

  before(async () => {
    server = await startTestServer();
    const admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
    const agentKey = (await admin.apiKeys.create({ name: 'package-agent', role: 'agent' })).secret;
    const clientKey = (await admin.apiKeys.create({ name: 'package-client', role: 'operator' }))
      .secret;
    project = tempDir('orchestra-sdk-package-');
    // The prepack scripts build dist/ if the sources changed.
    for (const dir of [PROTOCOL_DIR, SDK_DIR]) {
      expectSuccess(
        'npm pack',
        await run('npm', ['pack', '--pack-destination', project.path], dir),
      );
    }
    const tarballs = readdirSync(project.path).filter((name) => name.endsWith('.tgz'));
    assert.equal(tarballs.length, 2, 'npm pack made a tarball of each package');
    writeFileSync(
      join(project.path, 'package.json'),
      JSON.stringify({
        name: 'user-project',
        private: true,
        type: 'module',
        allowScripts: { node: true },
      }),
    );
    expectSuccess(
      'npm install',
      await run(
        'npm',
        ['install', '--no-audit', '--no-fund', ...tarballs.map((t) => `./${t}`), 'node@22'],
        project.path,
      ),
    );
    node22 = join(project.path, 'node_modules', '.bin', 'node');
    writeFileSync(join(project.path, 'user.ts'), userProgram(server.url, agentKey, clientKey));
    typeCheck = await run(
      process.execPath,
      [TSC, '--strict', '--module', 'nodenext', '--outDir', 'out', 'user.ts'],
      project.path,
    );
  });
  after(async () => {
    await server?.stop();
    project?.remove();
  });

  test('ships JavaScript, declarations, the sources they map to, a README and a license; no tests', () => {
    const installed = join(project.path, 'node_modules', '@orchestra', 'sdk');
    const entries = readdirSync(installed).sort();
    assert.deepEqual(entries, ['LICENSE', 'README.md', 'dist', 'package.json', 'src']);
    const dist = readdirSync(join(installed, 'dist'));
    for (const file of ['index.js', 'index.js.map', 'index.d.ts', 'index.d.ts.map']) {
      assert.ok(dist.includes(file), `dist/${file} is in the package`);
    }
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    assert.equal(manifest.exports['.'].types, './dist/index.d.ts');
    assert.equal(manifest.exports['.'].import, './dist/index.js');
  });

  test('the protocol package is the packed one, with JavaScript and declarations', () => {
    const installed = join(project.path, 'node_modules', '@orchestra', 'protocol');
    assert.deepEqual(readdirSync(installed).sort(), [
      'LICENSE',
      'README.md',
      'dist',
      'package.json',
      'src',
    ]);
    const dist = readdirSync(join(installed, 'dist'));
    for (const file of ['index.js', 'index.d.ts', 'constants.js', 'constants.d.ts']) {
      assert.ok(dist.includes(file), `dist/${file} is in the package`);
    }
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    const ours = JSON.parse(readFileSync(join(PROTOCOL_DIR, 'package.json'), 'utf8'));
    assert.equal(manifest.version, ours.version);
    assert.equal(manifest.description, ours.description);
  });

  test('at run time the SDK loads only the protocol’s constants, not its schemas or TypeBox', () => {
    const dist = join(project.path, 'node_modules', '@orchestra', 'sdk', 'dist');
    const imported = new Set<string>();
    for (const file of readdirSync(dist).filter((name) => name.endsWith('.js'))) {
      const code = readFileSync(join(dist, file), 'utf8');
      for (const [, spec] of code.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
        if (spec !== undefined && !spec.startsWith('.') && !spec.startsWith('node:')) {
          imported.add(spec);
        }
      }
    }
    assert.deepEqual([...imported], ['@orchestra/protocol/constants']);
  });

  test("tsc --strict --module nodenext accepts the user's code", () => {
    expectSuccess('tsc', typeCheck);
  });

  for (const [name, binary] of [
    ['24', () => process.execPath],
    ['22', () => node22],
  ] as const) {
    test(`plain node ${name} runs an agent and a client: a task completes`, async () => {
      const version = await run(binary(), ['--version'], project.path);
      assert.match(version.stdout, new RegExp(`^v${name}\\.`));
      const result = await run(binary(), ['out/user.js'], project.path);
      expectSuccess(`node ${name} out/user.js`, result);
      assert.deepEqual(JSON.parse(result.stdout.trim().split('\n').at(-1) ?? ''), {
        state: 'succeeded',
        ended: true,
        result: { echoed: { hello: 'world' } },
      });
    });
  }
});
