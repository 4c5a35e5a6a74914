import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import { expectError, runCli, startTestServer, type TestServer, tempDir } from './helpers.ts';

// Uploaded bases: a tar archive or a git bundle stored through the API, that a workspace
// template starts instances from (laid out in the instance's sandbox, or cloned), guarded
// while in use, scoped to the tenant.

const LIMIT = 4 * 1024 * 1024;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

const git = (dir: string, ...args: string[]) =>
  execFileSync('git', ['-C', dir, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: dir, GIT_CONFIG_NOSYSTEM: '1' },
  }).trim();

describe('workspace uploads', () => {
  let server: TestServer;
  let client: Orchestra;
  const scratch = tempDir('orchestra-uploads-');
  /** 1.5 MiB that do not compress: the upload is stored in more than one piece. */
  const big = randomBytes(1536 * 1024);
  let tarball: Buffer;
  let bundle: Buffer;

  before(async () => {
    server = await startTestServer({
      env: { ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES: String(LIMIT) },
    });
    client = new Orchestra({ url: server.url, apiKey: server.adminKey });
    // A project as a .tar.gz.
    const project = join(scratch.path, 'project');
    mkdirSync(join(project, 'src'), { recursive: true });
    writeFileSync(join(project, 'README.md'), '# uploaded\n');
    writeFileSync(join(project, 'src', 'main.ts'), 'export const x = 1;\n');
    writeFileSync(join(project, 'blob.bin'), big);
    execFileSync('tar', ['-czf', join(scratch.path, 'project.tar.gz'), '-C', project, '.']);
    tarball = readFileSync(join(scratch.path, 'project.tar.gz'));
    // A repository with two branches, as a bundle.
    const repo = join(scratch.path, 'repo');
    mkdirSync(repo);
    git(repo, 'init', '-q', '-b', 'main');
    writeFileSync(join(repo, 'app.txt'), 'on main\n');
    git(repo, 'add', '-A');
    git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'first');
    git(repo, 'checkout', '-q', '-b', 'feature');
    writeFileSync(join(repo, 'feature.txt'), 'on the feature branch\n');
    git(repo, 'add', '-A');
    git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'feature');
    git(repo, 'checkout', '-q', 'main');
    git(repo, 'bundle', 'create', join(scratch.path, 'repo.bundle'), '--all');
    bundle = readFileSync(join(scratch.path, 'repo.bundle'));
  });

  after(async () => {
    await server.stop();
    scratch.remove();
  });

  const workspaceOf = (id: string) => join(server.dataDir, 'instances', id, 'workspace');

  test('a tar archive becomes the workspace of every instance of a template, byte for byte', async () => {
    const upload = await client.workspaceUploads.create(tarball, { name: 'project' });
    assert.match(upload.id, /^wup_/);
    assert.deepEqual(
      [upload.name, upload.format, upload.size, upload.sha256],
      ['project', 'tar', tarball.length, sha256(tarball)],
    );
    assert.deepEqual(await client.workspaceUploads.get(upload.id), upload);
    await client.workspaceTemplates.create({
      name: 'from-tar',
      base: { type: 'upload', upload: upload.id },
    });
    const [one, two] = await Promise.all([
      client.instances.create({ template: 'from-tar' }),
      client.instances.create({ template: 'from-tar' }),
    ]);
    for (const instance of [one, two]) {
      assert.equal(instance?.state, 'running', JSON.stringify(instance));
      const dir = workspaceOf(instance?.id ?? '');
      assert.equal(readFileSync(join(dir, 'README.md'), 'utf8'), '# uploaded\n');
      assert.equal(readFileSync(join(dir, 'src', 'main.ts'), 'utf8'), 'export const x = 1;\n');
      assert.equal(sha256(readFileSync(join(dir, 'blob.bin'))), sha256(big));
    }

    // In use: by the template, then by the instances (a restart elsewhere lays it out again).
    const inUse = expectError(
      await server.call('DELETE', `/v1/workspace-uploads/${upload.id}`),
      409,
      'WORKSPACE_UPLOAD_IN_USE',
    );
    assert.match(inUse.message, /template from-tar/);
    for (const instance of [one, two]) await client.instances.delete(instance?.id ?? '');
    await client.workspaceTemplates.delete('from-tar');
    await client.workspaceUploads.delete(upload.id);
    expectError(
      await server.call('GET', `/v1/workspace-uploads/${upload.id}`),
      404,
      'WORKSPACE_UPLOAD_NOT_FOUND',
    );
  });

  test('a git bundle is cloned, at the branch the template names', async () => {
    const upload = await client.workspaceUploads.create(bundle);
    assert.equal(upload.format, 'git_bundle');
    assert.equal(upload.name, upload.id);
    await client.workspaceTemplates.create({
      name: 'from-bundle',
      base: { type: 'upload', upload: upload.id, ref: 'feature' },
    });
    const instance = await client.instances.create({ template: 'from-bundle' });
    assert.equal(instance.state, 'running', JSON.stringify(instance));
    const dir = workspaceOf(instance.id);
    assert.equal(readFileSync(join(dir, 'feature.txt'), 'utf8'), 'on the feature branch\n');
    assert.equal(git(dir, 'rev-parse', '--abbrev-ref', 'HEAD'), 'feature');
    assert.equal(git(dir, 'log', '--format=%s', '-n', '2'), 'feature\nfirst');
    // The bundle is gone once cloned; the instance's temp holds nothing of it.
    assert.equal(
      existsSync(join(server.dataDir, 'instances', instance.id, 'temp', 'base.bundle')),
      false,
    );
    // A branch the bundle lacks: the instance fails with git's reason.
    await client.workspaceTemplates.create({
      name: 'no-such-branch',
      base: { type: 'upload', upload: upload.id, ref: 'nope' },
    });
    const failed = await client.instances.create({ template: 'no-such-branch' });
    assert.equal(failed.state, 'failed');
    assert.match(failed.state_reason, /its workspace could not be made: .*nope/);
    const held = expectError(
      await server.call('DELETE', `/v1/workspace-uploads/${upload.id}`),
      409,
      'WORKSPACE_UPLOAD_IN_USE',
    );
    assert.match(held.message, /template (from-bundle|no-such-branch)/);
  });

  test('anything else, too much, or another tenant’s upload is refused, and nothing is kept of it', async () => {
    const before = (await client.workspaceUploads.list()).items.length;
    const garbage = expectError(
      await server.call('POST', '/v1/workspace-uploads', {
        body: 'just some text, not an archive',
        headers: { 'content-type': 'application/octet-stream' },
      }),
      400,
      'BAD_REQUEST',
    );
    assert.match(garbage.message, /tar archive .* or a git bundle/);
    const tooMuch = Buffer.concat([tarball, randomBytes(LIMIT)]);
    await assert.rejects(
      client.workspaceUploads.create(tooMuch),
      (err: { status?: number; code?: string }) => {
        assert.deepEqual([err.status, err.code], [413, 'PAYLOAD_TOO_LARGE']);
        return true;
      },
    );
    assert.equal((await client.workspaceUploads.list()).items.length, before);

    const missing = expectError(
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'nothing', base: { type: 'upload', upload: 'wup_0123' } },
      }),
      400,
      'VALIDATION_FAILED',
    );
    assert.match(missing.message, /body\.base\.upload: no workspace upload "wup_0123"/);
    const mine = await client.workspaceUploads.create(tarball);
    const tenant = await server.call('POST', '/v1/tenants', { body: { id: 'uploads-other' } });
    const other = tenant.body.admin_key.secret as string;
    expectError(
      await server.call('GET', `/v1/workspace-uploads/${mine.id}`, { key: other }),
      404,
      'WORKSPACE_UPLOAD_NOT_FOUND',
    );
    expectError(
      await server.call('POST', '/v1/workspace-templates', {
        key: other,
        body: { name: 'theirs', base: { type: 'upload', upload: mine.id } },
      }),
      400,
      'VALIDATION_FAILED',
    );
    assert.deepEqual(
      (await server.call('GET', '/v1/workspace-uploads', { key: other })).body.items,
      [],
    );
    await client.workspaceUploads.delete(mine.id);
  });

  test('an archive that reaches out of the workspace lands inside it, or nowhere', async () => {
    // Member names that climb out: tar in the sandbox can write only the instance's directory.
    const evil = join(scratch.path, 'evil');
    mkdirSync(evil);
    writeFileSync(join(evil, 'escape.txt'), 'out\n');
    const archive = join(scratch.path, 'evil.tar');
    execFileSync('tar', [
      '-cf',
      archive,
      '-C',
      evil,
      '--transform',
      's,^,../../../,',
      'escape.txt',
    ]);
    const upload = await client.workspaceUploads.create(readFileSync(archive));
    await client.workspaceTemplates.create({
      name: 'evil',
      base: { type: 'upload', upload: upload.id },
    });
    const instance = await client.instances.create({ template: 'evil' });
    const root = join(server.dataDir, 'instances', instance.id);
    for (const outside of [
      join(root, 'escape.txt'),
      join(server.dataDir, 'instances', 'escape.txt'),
      join(server.dataDir, 'escape.txt'),
    ]) {
      assert.equal(existsSync(outside), false, outside);
    }
  });

  test('the CLI uploads, lists and deletes bases', async () => {
    const work = tempDir('orchestra-uploads-cli-');
    const cli = (...args: string[]) =>
      runCli([...args, '--url', server.url, '--api-key', server.adminKey], { cwd: work.path });
    try {
      const added = await cli(
        'instances',
        'upload-base',
        join(scratch.path, 'repo.bundle'),
        '--name',
        'repo',
      );
      assert.equal(added.code, 0, added.stderr);
      const id = /Uploaded (wup_\w+) \(git_bundle, \d+ bytes/.exec(added.stdout)?.[1] ?? '';
      assert.match(added.stdout, new RegExp(`"base": \\{"type": "upload", "upload": "${id}"\\}`));
      const listed = await cli('instances', 'bases');
      assert.match(listed.stdout, new RegExp(`${id}\\s+repo\\s+git_bundle`));
      const removed = await cli('instances', 'rm-base', id);
      assert.equal(removed.code, 0, removed.stderr);
      assert.doesNotMatch((await cli('instances', 'bases')).stdout, new RegExp(id));
      const bad = await cli('instances', 'upload-base', join(work.path, 'missing.tar'));
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /cannot read .*missing\.tar/);
    } finally {
      work.remove();
    }
  });
});
