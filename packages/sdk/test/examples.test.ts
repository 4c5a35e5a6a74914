import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startTestServer, type TestServer, tempDir } from '../../server/test/helpers.ts';
import { Orchestra } from '../src/index.ts';
import { killScripts, spawnScript } from './support.ts';

// The examples run as a user runs them: each script in its own Node process, against a real
// server, with only ORCHESTRA_* variables to find it.

const EXAMPLE = (name: string) =>
  fileURLToPath(new URL(`../../../examples/code-stats/${name}`, import.meta.url));

describe('examples/code-stats', () => {
  let server: TestServer;
  let admin: Orchestra;
  let operatorKey: string;
  let tree: { path: string; remove: () => void };

  before(async () => {
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
    operatorKey = (await admin.apiKeys.create({ name: 'client', role: 'operator' })).secret;
    tree = tempDir('orchestra-code-stats-');
    const files: Record<string, string> = {
      'a.ts': 'one\ntwo\n',
      'b.ts': 'x',
      'sub/c.md': '# T\n\nbody\n',
      'sub/deeper/README': 'hello\nworld',
      'empty.txt': '',
      'node_modules/skipped.js': 'not\ncounted\n',
      '.git/config': 'not counted\n',
      'sub/node_modules/skipped.ts': 'not counted\n',
    };
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(tree.path, name, '..'), { recursive: true });
      writeFileSync(join(tree.path, name), content);
    }
    const agentKey = (await admin.apiKeys.create({ name: 'code-stats', role: 'agent' })).secret;
    const agent = spawnScript(EXAMPLE('agent.ts'), {
      env: {
        ORCHESTRA_URL: server.url,
        ORCHESTRA_API_KEY: agentKey,
        AGENT_ID: 'code-stats-test',
      },
    });
    await agent.waitForText('its registration', /agent code-stats-test registered/);
  });
  after(async () => {
    await killScripts();
    await server.stop();
    tree.remove();
  });

  const client = (args: string[]) =>
    spawnScript(EXAMPLE('client.ts'), {
      args,
      env: { ORCHESTRA_URL: server.url, ORCHESTRA_API_KEY: operatorKey },
    });

  test('the client prints the progress file by file, then the counts per extension', async () => {
    const run = client([tree.path, '--json']);
    assert.equal(await run.exited(), 0, run.stderr());
    const lines = run.stdout().trim().split('\n');
    assert.match(lines[0] ?? '', /^task tsk_\w+ submitted for /);
    assert.ok(lines.includes('assigned to code-stats-test'), run.stdout());
    for (const [n, file] of [
      'a.ts',
      'b.ts',
      'empty.txt',
      'sub/c.md',
      'sub/deeper/README',
    ].entries()) {
      assert.ok(lines.includes(`[${n + 1}/5] ${file}`), `progress for ${file} in\n${run.stdout()}`);
    }
    assert.doesNotMatch(run.stdout(), /skipped|config/);
    assert.deepEqual(JSON.parse(lines.at(-1) ?? ''), {
      path: tree.path,
      files: 5,
      lines: 8,
      bytes: 30,
      by_extension: {
        '(none)': { files: 1, lines: 2, bytes: 11 },
        '.md': { files: 1, lines: 3, bytes: 10 },
        '.ts': { files: 2, lines: 3, bytes: 9 },
        '.txt': { files: 1, lines: 0, bytes: 0 },
      },
    });
  });

  test('the README’s template file creates the template the example agent serves', async () => {
    const definition = JSON.parse(readFileSync(EXAMPLE('template.json'), 'utf8'));
    const template = await admin.templates.create(definition);
    assert.deepEqual(template.capabilities, ['code-stats']);
    const task = await admin.tasks.create({ template: 'code-stats', input: { path: tree.path } });
    assert.equal(task.waiting, null, 'the example agent offers what the template needs');
    const done = await admin.tasks.wait(task.id, { timeoutMs: 60_000 });
    assert.equal(done.state, 'succeeded');
    assert.equal((done.result as { files: number }).files, 5);
    // The schema refuses what the agent would fail on anyway, before any agent sees it.
    await assert.rejects(
      admin.tasks.create({ template: 'code-stats', input: { dir: '.' } }),
      /body\.input/,
    );
  });

  test('without --json the client prints a table', async () => {
    const run = client([join(tree.path, 'sub')]);
    assert.equal(await run.exited(), 0, run.stderr());
    assert.match(run.stdout(), /^extension +files +lines +bytes$/m);
    assert.match(run.stdout(), /^\.md +1 +3 +10$/m);
    assert.match(run.stdout(), /^total +2 +5 +21$/m);
  });

  test('a missing directory fails the task at once, without retries, and the client exits 1', async () => {
    const missing = join(tree.path, 'no-such-directory');
    const run = client([missing]);
    assert.equal(await run.exited(), 1);
    assert.match(run.stderr(), /task failed: PATH_NOT_FOUND .*no-such-directory does not exist/);
    const id = /task (tsk_\w+) submitted/.exec(run.stdout())?.[1];
    assert.ok(id, run.stdout());
    const task = await admin.tasks.get(id);
    assert.deepEqual(
      [task.state, task.attempt, task.error?.code, task.error?.retryable],
      ['failed', 1, 'PATH_NOT_FOUND', false],
    );
  });

  test('invalid input fails the task with INVALID_INPUT', async () => {
    const task = await admin.tasks.create({ capabilities: ['code-stats'], input: { path: 42 } });
    const done = await admin.tasks.wait(task.id, { timeoutMs: 60_000 });
    assert.deepEqual([done.state, done.error?.code], ['failed', 'INVALID_INPUT']);
  });
});
