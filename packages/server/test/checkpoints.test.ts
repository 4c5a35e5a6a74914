import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  expectError,
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
  tempDir,
} from './helpers.ts';

// Checkpoints of a workspace through the API: a shadow repository that leaves the user's
// own .git alone, respects .gitignore and the size rule, diffs, and restores exactly (the
// tree of a checkpoint taken after a restore is the restored checkpoint's).

const MAX_FILE = 65_536;

const gitOf =
  (dir: string) =>
  (...args: string[]) =>
    execFileSync('git', ['-C', dir, ...args], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, HOME: dir, GIT_CONFIG_NOSYSTEM: '1' },
    }).trim();

for (const store of STORE_VARIANTS) {
  describe(`checkpoints on ${store}`, () => {
    let server: TestServer;
    const sources = tempDir('orchestra-checkpoint-sources-');
    let id: string;
    let workspace: string;
    let base: string;

    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_INSTANCE_SOURCE_ROOTS: sources.path,
          ORCHESTRA_CHECKPOINT_MAX_FILE_BYTES: String(MAX_FILE),
        },
      });
      // The user's own repository, cloned as the workspace.
      const repo = join(sources.path, 'app');
      mkdirSync(join(repo, 'src'), { recursive: true });
      writeFileSync(join(repo, 'a.txt'), 'alpha\n');
      writeFileSync(join(repo, 'b.txt'), 'beta\n');
      writeFileSync(join(repo, 'src', 'main.ts'), 'export {};\n');
      writeFileSync(join(repo, '.gitignore'), 'ignored/\n');
      const git = gitOf(repo);
      git('init', '-q', '-b', 'main');
      git('add', '-A');
      git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'first');
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'repo', base: { type: 'git', path: repo } },
      });
      const created = await server.call('POST', '/v1/instances', {
        body: { template: 'repo', start: false },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      id = created.body.id;
      workspace = join(server.dataDir, 'instances', id, 'workspace');
      base = `/v1/instances/${id}/checkpoints`;
    });

    after(async () => {
      await server.stop();
      sources.remove();
    });

    test('save, diff against the workspace and between checkpoints, restore exactly; the user’s .git is untouched', async () => {
      const userGit = gitOf(workspace);
      // Its HEAD, refs, stashes and index: a checkpoint or a restore changes none of them.
      const userState = () => [
        userGit('rev-parse', 'HEAD'),
        userGit('for-each-ref'),
        userGit('stash', 'list'),
        createHash('sha256')
          .update(readFileSync(join(workspace, '.git', 'index')))
          .digest('hex'),
      ];
      const a = await server.call('POST', base, { body: { message: 'start' } });
      assert.equal(a.status, 201, JSON.stringify(a.body));
      assert.match(a.body.id, /^chk_/);
      assert.equal(a.body.files, 4); // .gitignore, a.txt, b.txt, src/main.ts
      assert.deepEqual(a.body.skipped, []);
      const before = userState();

      writeFileSync(join(workspace, 'a.txt'), 'alpha, changed\n');
      execFileSync('rm', [join(workspace, 'b.txt')]);
      writeFileSync(join(workspace, 'c.txt'), 'gamma\n');
      mkdirSync(join(workspace, 'ignored'));
      writeFileSync(join(workspace, 'ignored', 'cache'), 'not saved');
      writeFileSync(join(workspace, 'big.bin'), Buffer.alloc(MAX_FILE + 1, 1));
      const changed = await server.call('GET', `${base}/${a.body.id}/diff`);
      assert.equal(changed.status, 200, JSON.stringify(changed.body));
      const statuses = (d: { files: { path: string; status: string }[] }) =>
        d.files.map((f) => `${f.status} ${f.path}`).sort();
      assert.deepEqual(statuses(changed.body), ['added c.txt', 'deleted b.txt', 'modified a.txt']);
      const modified = changed.body.files.find((f: { path: string }) => f.path === 'a.txt');
      assert.deepEqual([modified.additions, modified.deletions], [1, 1]);
      assert.match(changed.body.patch, /^-alpha$/m);
      assert.match(changed.body.patch, /^\+alpha, changed$/m);
      const narrowed = await server.call('GET', `${base}/${a.body.id}/diff?path=c.txt`);
      assert.deepEqual(statuses(narrowed.body), ['added c.txt']);

      const b = await server.call('POST', base, { body: { message: 'work', task_id: 'tsk_1' } });
      assert.deepEqual(b.body.skipped, ['big.bin']);
      assert.equal(b.body.task_id, 'tsk_1');
      const between = await server.call('GET', `${base}/${a.body.id}/diff?against=${b.body.id}`);
      assert.deepEqual(statuses(between.body), ['added c.txt', 'deleted b.txt', 'modified a.txt']);

      // Whole: exactly A's files again; what .gitignore and the size rule leave out stays.
      const restored = await server.call('POST', `${base}/${a.body.id}/restore`, { body: {} });
      assert.equal(restored.status, 200, JSON.stringify(restored.body));
      assert.equal(restored.body.before.tree, b.body.tree);
      assert.ok(restored.body.checkpoint.restored_at !== null);
      assert.equal(readFileSync(join(workspace, 'a.txt'), 'utf8'), 'alpha\n');
      assert.equal(readFileSync(join(workspace, 'b.txt'), 'utf8'), 'beta\n');
      assert.equal(existsSync(join(workspace, 'c.txt')), false);
      assert.equal(readFileSync(join(workspace, 'ignored', 'cache'), 'utf8'), 'not saved');
      assert.equal(existsSync(join(workspace, 'big.bin')), true);
      const again = await server.call('POST', base, { body: { message: 'after restore' } });
      assert.equal(again.body.tree, a.body.tree, 'a restored checkpoint is exact');
      assert.deepEqual(userState(), before, 'the user’s own repository is as it was');

      // Some paths only: c.txt comes back from B, a.txt stays as A has it.
      const partial = await server.call('POST', `${base}/${b.body.id}/restore`, {
        body: { paths: ['c.txt', 'b.txt'] },
      });
      assert.equal(partial.status, 200, JSON.stringify(partial.body));
      assert.equal(readFileSync(join(workspace, 'c.txt'), 'utf8'), 'gamma\n');
      assert.equal(existsSync(join(workspace, 'b.txt')), false, 'B does not hold b.txt');
      assert.equal(readFileSync(join(workspace, 'a.txt'), 'utf8'), 'alpha\n');

      const listed = await server.call('GET', `${base}?limit=2`);
      assert.equal(listed.body.items.length, 2);
      assert.ok(listed.body.next_cursor);
      const got = await server.call('GET', `${base}/${a.body.id}`);
      assert.equal(got.body.commit, a.body.commit);
    });

    test('the shadow repository is out of the sandbox’s reach; bad input is a 4xx; another tenant sees nothing', async () => {
      assert.equal((await server.call('POST', `/v1/instances/${id}/start`)).body.state, 'running');
      const shadow = join(server.dataDir, 'checkpoints');
      assert.ok(existsSync(shadow));
      const peek = await server.call('POST', `/v1/instances/${id}/exec`, {
        body: { command: ['ls', shadow] },
      });
      assert.notEqual(peek.body.exit_code, 0, JSON.stringify(peek.body));
      await server.call('POST', `/v1/instances/${id}/stop`);

      expectError(await server.call('GET', `${base}/chk_none`), 404, 'CHECKPOINT_NOT_FOUND');
      const one = (await server.call('GET', base)).body.items[0].id as string;
      expectError(
        await server.call('GET', `${base}/${one}/diff?against=chk_none`),
        404,
        'CHECKPOINT_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `${base}/${one}/restore`, { body: { paths: ['../x'] } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', `${base}/${one}/restore`, { body: { paths: [] } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', base, { body: { message: 1 } }),
        400,
        'VALIDATION_FAILED',
      );
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `chk-${store}` } });
      const key = tenant.body.admin_key.secret as string;
      expectError(await server.call('GET', base, { key }), 404, 'WORKSPACE_INSTANCE_NOT_FOUND');
      expectError(
        await server.call('POST', base, { key, body: {} }),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `${base}/${one}/restore`, { key, body: {} }),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );

      // Deleting the instance deletes its checkpoints.
      await server.call('DELETE', `/v1/instances/${id}`);
      assert.equal(existsSync(join(shadow, `${id}.git`)), false);
    });
  });
}
