import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { type ExecEvent, Orchestra } from '../src/index.ts';
import { rejection } from './support.ts';

// Workspaces through the SDK: templates, the lifecycle, commands and their resumable
// output, and the errors a caller sees.

let server: TestServer;
let client: Orchestra;

before(async () => {
  server = await startTestServer();
  client = new Orchestra({ url: server.url, apiKey: server.adminKey });
});

after(async () => {
  await server.stop();
});

test('workspace templates and instances: create, list by label and state, stop, start, rename, delete; errors name their code', async () => {
  const template = await client.workspaceTemplates.create({
    name: 'sdk-ws',
    startup: { command: ['sleep', '600'] },
  });
  assert.equal(template.version, 1);
  const updated = await client.workspaceTemplates.update('sdk-ws', {
    startup: { command: ['sleep', '600'] },
    env: { LEVEL: '2' },
  });
  assert.equal(updated.version, 2);
  assert.equal((await client.workspaceTemplates.get(template.id)).name, 'sdk-ws');
  assert.ok((await client.workspaceTemplates.list()).items.some((t) => t.name === 'sdk-ws'));

  const one = await client.instances.create({ template: 'sdk-ws', labels: { sdk: 'yes' } });
  assert.equal(one.state, 'running');
  const [two, bad] = await client.instances.createMany([
    { template: 'sdk-ws', labels: { sdk: 'yes' }, start: false },
    { template: 'missing' },
  ]);
  assert.equal(two?.status, 201);
  assert.equal(bad?.status, 400);
  const labelled = await client.instances.list({ labels: { sdk: 'yes' } });
  assert.equal(labelled.items.length, 2);
  const stoppedOnes: string[] = [];
  for await (const i of client.instances.listAll({ state: ['stopped'], template: 'sdk-ws' })) {
    stoppedOnes.push(i.id);
  }
  assert.equal(stoppedOnes.length, 1);

  assert.equal((await client.instances.stop(one.id)).state, 'stopped');
  assert.equal((await client.instances.start(one.id)).state, 'running');
  assert.equal((await client.instances.restart(one.id)).state, 'running');
  assert.equal((await client.instances.update(one.id, { name: 'renamed' })).name, 'renamed');
  const events = [];
  for await (const e of client.instances.events(one.id, { follow: false })) events.push(e);
  assert.deepEqual(events.map((e) => e.type).slice(0, 3), [
    'instance.creating',
    'instance.starting',
    'instance.running',
  ]);

  const inUse = await rejection(() => client.workspaceTemplates.delete('sdk-ws'));
  assert.deepEqual([inUse.status, inUse.code], [409, 'WORKSPACE_TEMPLATE_IN_USE']);
  const notRunning = await rejection(() =>
    client.instances.exec(two && 'instance' in two ? two.instance.id : '', { command: ['true'] }),
  );
  assert.deepEqual([notRunning.status, notRunning.code], [409, 'WORKSPACE_INSTANCE_STATE']);
  for (const i of labelled.items) await client.instances.delete(i.id);
  const gone = await rejection(() => client.instances.get(one.id));
  assert.deepEqual([gone.status, gone.code], [404, 'WORKSPACE_INSTANCE_NOT_FOUND']);
  await client.workspaceTemplates.delete('sdk-ws');
});

test('exec: the result of a command, and the output of another read again from any point, or cancelled', async () => {
  await client.workspaceTemplates.create({ name: 'sdk-shell' });
  const instance = await client.instances.create({ template: 'sdk-shell' });
  const ran = await client.instances.exec(instance.id, {
    command: ['sh', '-c', 'printf "a\\nb\\n"; echo oops >&2; exit 2'],
  });
  assert.deepEqual([ran.exit_code, ran.stdout, ran.stderr], [2, 'a\nb\n', 'oops\n']);

  // The output again, whole, then from after the first event.
  const all: ExecEvent[] = [];
  for await (const e of client.instances.execEvents(instance.id, ran.exec_id)) {
    if ('offset' in e) all.push(e as ExecEvent);
  }
  assert.equal(all[0]?.type, 'exec.started');
  assert.equal(all.at(-1)?.type, 'exec.exited');
  assert.equal(all.at(-1)?.data.exit_code, 2);
  const later: ExecEvent[] = [];
  for await (const e of client.instances.execEvents(instance.id, ran.exec_id, { after: 1 })) {
    if ('offset' in e) later.push(e as ExecEvent);
  }
  assert.deepEqual(
    later.map((e) => e.offset),
    all.slice(1).map((e) => e.offset),
  );

  // Streamed through the SDK: the output as it comes, the exit last.
  const streamed: ExecEvent[] = [];
  for await (const e of client.instances.execStream(instance.id, {
    command: ['sh', '-c', 'echo one; sleep 0.2; echo two'],
  })) {
    if ('offset' in e) streamed.push(e as ExecEvent);
  }
  assert.equal(streamed[0]?.type, 'exec.started');
  assert.equal(
    streamed
      .filter((e) => e.type === 'exec.output')
      .map((e) => e.data.data)
      .join(''),
    'one\ntwo\n',
  );
  assert.equal(streamed.at(-1)?.type, 'exec.exited');

  // A long command: the reader leaves after its first event, the command goes on until it
  // is cancelled; its output read again ends with the exit, cancelled.
  let execId = '';
  for await (const e of client.instances.execStream(instance.id, { command: ['sleep', '60'] })) {
    if ('offset' in e) execId = String((e as ExecEvent).data.exec_id);
    break;
  }
  await client.instances.cancelExec(instance.id, execId);
  let exit: ExecEvent | undefined;
  for await (const e of client.instances.execEvents(instance.id, execId)) {
    if ('offset' in e && e.type === 'exec.exited') exit = e as ExecEvent;
  }
  assert.deepEqual([exit?.data.cancelled, exit?.data.signal], [true, 'SIGKILL']);
  await client.instances.delete(instance.id);
});

test('files through the SDK: write and read (with ranges and a hash guard), list, move, delete, search, archives, paths, the change feed', async () => {
  await client.workspaceTemplates.create({ name: 'sdk-files' });
  const { id } = await client.instances.create({ template: 'sdk-files', start: false });
  const files = client.instances.files;

  const written = await files.write(id, 'src/app.ts', 'export const answer = 42;\n');
  assert.equal(written.type, 'file');
  const read = await files.read(id, 'src/app.ts');
  assert.equal(new TextDecoder().decode(read.content), 'export const answer = 42;\n');
  assert.equal(read.sha256, written.sha256);
  const part = await files.read(id, 'src/app.ts', { range: { start: 7, end: 11 } });
  assert.equal(new TextDecoder().decode(part.content), 'const');
  assert.equal(part.size, 26);
  const stale = await rejection(() =>
    files.write(id, 'src/app.ts', 'lost', { ifMatch: '0'.repeat(64) }),
  );
  assert.equal(stale.code, 'PRECONDITION_FAILED');
  await files.write(id, 'src/app.ts', 'export const answer = 43;\n', { ifMatch: read.sha256 });
  assert.equal(await files.readText(id, 'src/app.ts'), 'export const answer = 43;\n');
  assert.equal(
    (await rejection(() => files.write(id, 'src/app.ts', 'x', { create: true }))).code,
    'WORKSPACE_FILE_EXISTS',
  );
  const binary = new Uint8Array([0, 1, 2, 255]);
  await files.write(id, 'bin', binary);
  assert.deepEqual((await files.read(id, 'bin')).content, binary);

  await files.mkdir(id, 'docs/guides', { parents: true });
  await files.move(id, 'bin', 'docs/bin');
  assert.deepEqual(
    (await files.list(id, 'docs')).items.map((e) => e.name),
    ['bin', 'guides'],
  );
  assert.equal((await files.stat(id, 'docs/bin', { hash: true })).size, 4);
  await files.delete(id, 'docs', { recursive: true });
  assert.equal((await rejection(() => files.stat(id, 'docs'))).code, 'WORKSPACE_FILE_NOT_FOUND');
  assert.equal((await rejection(() => files.read(id, '../outside'))).code, 'VALIDATION_FAILED');

  const found = await files.search(id, 'answer', { glob: ['*.ts'] });
  assert.deepEqual(
    found.matches.map((m) => `${m.path}:${m.line}`),
    ['src/app.ts:1'],
  );
  const archive = await files.download(id, 'src');
  assert.deepEqual(await files.upload(id, archive, 'copy'), {
    path: 'copy',
    bytes: archive.length,
  });
  assert.equal(await files.readText(id, 'copy/src/app.ts'), 'export const answer = 43;\n');
  const tree = await files.structure(id);
  assert.equal(tree.files, 2);
  assert.equal((await files.paths(id)).instance_id, id);
  assert.equal((await files.validatePaths(id, ['a', '../b'])).overall_status, 'invalid');
  assert.equal((await files.testPaths(id, ['src'])).results[0]?.type, 'directory');

  const changes: string[] = [];
  for await (const e of files.events(id, { follow: false })) {
    if ('data' in e) changes.push(`${e.type} ${e.data.path}`);
  }
  assert.deepEqual(changes.slice(0, 3), [
    'file.created src',
    'file.created src/app.ts',
    'file.changed src/app.ts',
  ]);
  const checkpoints = client.instances.checkpoints;
  const saved = await checkpoints.create(id, { message: 'sdk', taskId: 'tsk_sdk' });
  await files.write(id, 'src/app.ts', 'changed\n');
  const diff = await checkpoints.diff(id, saved.id);
  assert.deepEqual(
    diff.files.map((f) => `${f.status} ${f.path}`),
    ['modified src/app.ts'],
  );
  const { before } = await checkpoints.restore(id, saved.id);
  assert.equal(await files.readText(id, 'src/app.ts'), 'export const answer = 43;\n');
  assert.equal((await checkpoints.create(id)).tree, saved.tree);
  assert.equal((await checkpoints.get(id, before.id)).message, `before restoring ${saved.id}`);
  const all: string[] = [];
  for await (const c of checkpoints.listAll(id)) all.push(c.id);
  assert.equal(all.length, 3);
  assert.equal(
    (await rejection(() => checkpoints.get(id, 'chk_none'))).code,
    'CHECKPOINT_NOT_FOUND',
  );

  const quotas = await client.instances.quotas();
  assert.deepEqual(
    quotas.quotas.map((q) => q.name),
    [
      'max_instances',
      'max_running_instances',
      'max_running_cpus',
      'max_running_memory_bytes',
      'max_storage_bytes',
      'max_terminals',
    ],
  );
  await client.instances.delete(id);
});

test('ports: the address of a port through Orchestra, share links that work without a credential until revoked', async () => {
  await client.workspaceTemplates.create({
    name: 'sdk-web',
    ports: [{ name: 'web' }],
    startup: {
      command: [
        'node',
        '-e',
        "require('http').createServer((q, s) => s.end('sdk-app ' + q.url)).listen(Number(process.env.PORT_WEB), '127.0.0.1')",
      ],
    },
  });
  const instance = await client.instances.create({ template: 'sdk-web' });
  const [declared] = instance.ports;
  assert.equal(declared?.name, 'web');
  const port = declared?.port ?? 0;
  const address = client.instances.ports.url(instance.id, port, '/hello');
  let text = '';
  for (const deadline = Date.now() + 60_000; text !== 'sdk-app /hello' && Date.now() < deadline; ) {
    const res = await fetch(address, { headers: { authorization: `Bearer ${server.adminKey}` } });
    text = await res.text();
  }
  assert.equal(text, 'sdk-app /hello');
  const link = await client.instances.ports.share(instance.id, port, { expiresInSeconds: 300 });
  assert.match(link.url, /^http:\/\/127\.0\.0\.1:\d+\/share\/ors_/);
  assert.equal(await (await fetch(`${link.url}page`)).text(), 'sdk-app /page');
  const listed = await client.instances.ports.listShares(instance.id);
  assert.deepEqual(
    listed.items.map((s) => [s.id, s.url]),
    [[link.id, null]],
  );
  await client.instances.ports.revokeShare(instance.id, link.id);
  assert.equal((await fetch(`${link.url}page`)).status, 404);
  const missing = await rejection(() => client.instances.ports.revokeShare(instance.id, link.id));
  assert.equal(missing.code, 'PORT_SHARE_NOT_FOUND');
  await client.instances.delete(instance.id);
});
