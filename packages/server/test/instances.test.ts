import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { detectSandbox } from '../src/platform/sandbox.ts';
import {
  expectError,
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
  tempDir,
} from './helpers.ts';

// Workspace templates and instances through the API: the lifecycle with its reasons and
// events, bases copied or cloned from the server's disk, and the sandbox the process driver
// runs services in.

/** A service that runs until it is stopped. */
const FOREVER = ['sleep', '600'];

interface InstanceBody {
  id: string;
  state: string;
  state_reason: string;
  exit_code: number | null;
  labels: Record<string, string>;
  template: { name: string; version: number };
}

/** The types of an instance's events so far, with their reasons. */
async function eventsOf(
  server: TestServer,
  id: string,
): Promise<{ type: string; reason: string }[]> {
  const response = await fetch(`${server.url}/v1/instances/${id}/events?follow=false`, {
    headers: { authorization: `Bearer ${server.adminKey}` },
  });
  assert.equal(response.status, 200);
  return (await response.text())
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { type: string; data: { reason: string } })
    .map((e) => ({ type: e.type, reason: e.data.reason }));
}

/** Polls the instance until `done` holds (the service ends by itself). */
async function until(
  server: TestServer,
  id: string,
  done: (i: InstanceBody) => boolean,
): Promise<InstanceBody> {
  let last: unknown;
  for (let i = 0; i < 600; i++) {
    const got = await server.call('GET', `/v1/instances/${id}`);
    if (done(got.body)) return got.body;
    last = got.body;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`instance ${id} never got there: ${JSON.stringify(last)}`);
}

/** The pids of processes whose command line holds `text` (bwrap's holds the instance's path). */
function processesWith(text: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', text], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

for (const store of STORE_VARIANTS) {
  describe(`instances on ${store}`, () => {
    let server: TestServer;
    const sources = tempDir('orchestra-instance-sources-');

    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_INSTANCE_SOURCE_ROOTS: sources.path,
          ORCHESTRA_INSTANCE_STOP_GRACE_MS: '2000',
          ORCHESTRA_INSTANCE_SWEEP_MS: '200',
        },
      });
    });

    after(async () => {
      await server.stop();
      sources.remove();
    });

    test('workspace templates: create, read by name or id, list, replace (the version goes up), delete; bad input is a 400 naming the field', async () => {
      const created = await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'plain', description: 'an empty workspace' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.deepEqual(
        {
          version: created.body.version,
          driver: created.body.driver,
          base: created.body.base,
          env: created.body.env,
          startup: created.body.startup,
          network: created.body.network,
        },
        {
          version: 1,
          driver: 'process',
          base: { type: 'empty' },
          env: {},
          startup: null,
          network: 'none',
        },
      );
      assert.match(created.body.id, /^wst_/);
      const byId = await server.call('GET', `/v1/workspace-templates/${created.body.id}`);
      assert.equal(byId.body.name, 'plain');
      expectError(
        await server.call('POST', '/v1/workspace-templates', { body: { name: 'plain' } }),
        409,
        'WORKSPACE_TEMPLATE_ALREADY_EXISTS',
      );
      const replaced = await server.call('PUT', '/v1/workspace-templates/plain', {
        body: { env: { A: '1' }, startup: { command: FOREVER } },
      });
      assert.equal(replaced.status, 200, JSON.stringify(replaced.body));
      assert.equal(replaced.body.version, 2);
      assert.deepEqual(replaced.body.env, { A: '1' });
      const listed = await server.call('GET', '/v1/workspace-templates');
      assert.ok(listed.body.items.some((t: { name: string }) => t.name === 'plain'));
      assert.equal((await server.call('DELETE', '/v1/workspace-templates/plain')).status, 204);
      expectError(
        await server.call('GET', '/v1/workspace-templates/plain'),
        404,
        'WORKSPACE_TEMPLATE_NOT_FOUND',
      );

      for (const [body, field] of [
        [{ name: 'Bad Name' }, 'name'],
        [{ name: 'rel', base: { type: 'directory', path: 'relative/path' } }, 'base'],
        [{ name: 'drv', driver: 'vm' }, 'driver'],
        [{ name: 'cmd', startup: { command: [] } }, 'startup'],
        [{ name: 'env', env: { 'NOT-A-NAME': 'x' } }, 'env'],
        [{ name: 'net', network: 'internet' }, 'network'],
        [{ name: 'extra', surprise: true }, ''],
      ] as const) {
        const refused = await server.call('POST', '/v1/workspace-templates', { body });
        const error = expectError(refused, 400, 'VALIDATION_FAILED');
        assert.match(JSON.stringify(error), new RegExp(field), JSON.stringify(error));
      }
      // A base outside ORCHESTRA_INSTANCE_SOURCE_ROOTS, or missing, is refused at once.
      for (const path of ['/etc', join(sources.path, 'missing')]) {
        const refused = await server.call('POST', '/v1/workspace-templates', {
          body: { name: 'outside', base: { type: 'directory', path } },
        });
        const error = expectError(refused, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, 'body.base.path');
      }
    });

    test('lifecycle: every transition is an event with its reason; the service ending by itself stops or fails the instance', async () => {
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'service', startup: { command: FOREVER } },
      });
      const created = await server.call('POST', '/v1/instances', {
        body: { template: 'service', name: 'first', labels: { team: 'a' } },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id as string;
      assert.match(id, /^ins_/);
      assert.equal(created.body.state, 'running');
      assert.match(created.body.state_reason, /started on creation; its service runs/);
      assert.deepEqual(created.body.template, {
        id: created.body.template.id,
        name: 'service',
        version: 1,
      });

      const stopped = await server.call('POST', `/v1/instances/${id}/stop`);
      assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
      assert.equal(stopped.body.state, 'stopped');
      assert.match(stopped.body.state_reason, /^stopped by key_/);
      // Stopping a stopped instance changes nothing.
      assert.equal((await server.call('POST', `/v1/instances/${id}/stop`)).body.state, 'stopped');
      const started = await server.call('POST', `/v1/instances/${id}/start`);
      assert.equal(started.body.state, 'running');
      const restarted = await server.call('POST', `/v1/instances/${id}/restart`);
      assert.equal(restarted.body.state, 'running');
      assert.match(restarted.body.state_reason, /^restarted by key_/);
      assert.deepEqual(
        (await eventsOf(server, id)).map((e) => e.type),
        [
          'instance.creating',
          'instance.starting',
          'instance.running',
          'instance.stopping',
          'instance.stopped',
          'instance.starting',
          'instance.running',
          'instance.stopping',
          'instance.stopped',
          'instance.starting',
          'instance.running',
        ],
      );

      // A service that ends by itself: code 0 stops the instance, another code fails it.
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'short', startup: { command: ['sh', '-c', 'exit 0'] } },
      });
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'crashing', startup: { command: ['sh', '-c', 'exit 3'] } },
      });
      const short = await server.call('POST', '/v1/instances', { body: { template: 'short' } });
      const ended = await until(server, short.body.id, (i) => i.state === 'stopped');
      assert.equal(ended.exit_code, 0);
      assert.equal(ended.state_reason, 'its service exited with code 0');
      const crashing = await server.call('POST', '/v1/instances', {
        body: { template: 'crashing' },
      });
      const failed = await until(server, crashing.body.id, (i) => i.state === 'failed');
      assert.equal(failed.exit_code, 3);
      assert.equal(failed.state_reason, 'its service exited with code 3');
      expectError(
        await server.call('POST', `/v1/instances/${crashing.body.id}/stop`),
        409,
        'WORKSPACE_INSTANCE_STATE',
      );
      // A failed instance starts again.
      const again = await server.call('POST', `/v1/instances/${crashing.body.id}/start`);
      assert.equal(again.status, 200);

      // Created without starting; a program that does not exist fails the start, with why.
      const idle = await server.call('POST', '/v1/instances', {
        body: { template: 'service', start: false },
      });
      assert.equal(idle.body.state, 'stopped');
      assert.equal(idle.body.state_reason, 'created; not started');
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'missing-program', startup: { command: ['no-such-program-here'] } },
      });
      const missing = await server.call('POST', '/v1/instances', {
        body: { template: 'missing-program' },
      });
      const missingEnd = await until(server, missing.body.id, (i) => i.state === 'failed');
      assert.match(missingEnd.state_reason, /its service exited with code \d+/);

      // The template cannot go while instances use it; deleting an instance ends its service.
      expectError(
        await server.call('DELETE', '/v1/workspace-templates/service'),
        409,
        'WORKSPACE_TEMPLATE_IN_USE',
      );
      for (const gone of [id, idle.body.id]) {
        assert.equal((await server.call('DELETE', `/v1/instances/${gone}`)).status, 204);
        expectError(
          await server.call('GET', `/v1/instances/${gone}`),
          404,
          'WORKSPACE_INSTANCE_NOT_FOUND',
        );
      }
      assert.equal((await server.call('DELETE', '/v1/workspace-templates/service')).status, 204);
    });

    test('batch create, and lists by state, template and label, page by page', async () => {
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'batchy', startup: { command: FOREVER } },
      });
      const batch = await server.call('POST', '/v1/instances/batch', {
        body: {
          instances: [
            { template: 'batchy', labels: { run: `b-${store}` } },
            { template: 'nope', labels: { run: `b-${store}` } },
            { template: 'batchy', labels: { run: `b-${store}`, role: 'x' }, start: false },
          ],
        },
      });
      assert.equal(batch.status, 200, JSON.stringify(batch.body));
      const [one, two, three] = batch.body.items;
      assert.equal(one.status, 201);
      assert.equal(one.instance.state, 'running');
      assert.equal(two.status, 400);
      assert.equal(two.error.code, 'VALIDATION_FAILED');
      assert.equal(two.error.details.fields[0].field, 'body.instances.1.template');
      assert.equal(three.instance.state, 'stopped');

      const byLabel = await server.call('GET', `/v1/instances?label=run%3Db-${store}`);
      assert.deepEqual(
        byLabel.body.items.map((i: InstanceBody) => i.id),
        [three.instance.id, one.instance.id],
      );
      const both = await server.call(
        'GET',
        `/v1/instances?label=run%3Db-${store}&label=role%3Dx&state=stopped`,
      );
      assert.deepEqual(
        both.body.items.map((i: InstanceBody) => i.id),
        [three.instance.id],
      );
      const running = await server.call('GET', '/v1/instances?template=batchy&state=running');
      assert.deepEqual(
        running.body.items.map((i: InstanceBody) => i.id),
        [one.instance.id],
      );
      const page = await server.call('GET', `/v1/instances?label=run%3Db-${store}&limit=1`);
      assert.equal(page.body.items.length, 1);
      const next = await server.call(
        'GET',
        `/v1/instances?label=run%3Db-${store}&limit=1&cursor=${page.body.next_cursor}`,
      );
      assert.deepEqual(
        next.body.items.map((i: InstanceBody) => i.id),
        [one.instance.id],
      );
      const relabelled = await server.call('PATCH', `/v1/instances/${one.instance.id}`, {
        body: { name: 'renamed', labels: { run: 'other' } },
      });
      assert.equal(relabelled.body.name, 'renamed');
      const after = await server.call('GET', `/v1/instances?label=run%3Db-${store}`);
      assert.deepEqual(
        after.body.items.map((i: InstanceBody) => i.id),
        [three.instance.id],
      );
      for (const [query, field] of [
        ['state=bogus', 'state'],
        ['label=NoEquals', 'label'],
        ['limit=0', 'limit'],
      ] as const) {
        const refused = expectError(
          await server.call('GET', `/v1/instances?${query}`),
          400,
          'VALIDATION_FAILED',
        );
        assert.match(JSON.stringify(refused), new RegExp(field));
      }
      expectError(
        await server.call('PATCH', `/v1/instances/${one.instance.id}`, { body: {} }),
        400,
        'VALIDATION_FAILED',
      );
      for (const item of [one, three]) {
        await server.call('DELETE', `/v1/instances/${item.instance.id}`);
      }
    });

    test('bases: a directory copied, a git repository cloned at a branch; the user’s files only', async () => {
      const dir = join(sources.path, 'project');
      mkdirSync(join(dir, 'src'), { recursive: true });
      writeFileSync(join(dir, 'src', 'main.txt'), 'hello from the base');
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'from-dir', base: { type: 'directory', path: dir } },
      });
      const copied = await server.call('POST', '/v1/instances', { body: { template: 'from-dir' } });
      assert.equal(copied.body.state, 'running', JSON.stringify(copied.body));
      const workspace = (id: string) => join(server.dataDir, 'instances', id, 'workspace');
      assert.equal(
        readFileSync(join(workspace(copied.body.id), 'src', 'main.txt'), 'utf8'),
        'hello from the base',
      );

      const repo = join(sources.path, 'repo');
      mkdirSync(repo);
      const git = (...args: string[]) =>
        execFileSync('git', [
          '-C',
          repo,
          '-c',
          'user.name=t',
          '-c',
          'user.email=t@example.com',
          ...args,
        ]);
      git('init', '--quiet', '--initial-branch=main');
      writeFileSync(join(repo, 'README'), 'on main');
      git('add', 'README');
      git('commit', '--quiet', '-m', 'main');
      git('checkout', '--quiet', '-b', 'feature');
      writeFileSync(join(repo, 'README'), 'on feature');
      git('commit', '--quiet', '-am', 'feature');
      git('checkout', '--quiet', 'main');
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'from-git', base: { type: 'git', path: repo, ref: 'feature' } },
      });
      const cloned = await server.call('POST', '/v1/instances', { body: { template: 'from-git' } });
      assert.equal(cloned.body.state, 'running', JSON.stringify(cloned.body));
      assert.equal(readFileSync(join(workspace(cloned.body.id), 'README'), 'utf8'), 'on feature');
      for (const dirName of ['user-data', 'extensions', 'logs', 'temp']) {
        assert.ok(existsSync(join(server.dataDir, 'instances', cloned.body.id, dirName)));
      }

      // A ref that does not exist: the instance fails, saying why.
      await server.call('PUT', '/v1/workspace-templates/from-git', {
        body: { base: { type: 'git', path: repo, ref: 'no-such-branch' } },
      });
      const broken = await server.call('POST', '/v1/instances', { body: { template: 'from-git' } });
      assert.equal(broken.status, 201);
      assert.equal(broken.body.state, 'failed');
      assert.match(broken.body.state_reason, /its workspace could not be made: git clone failed/);
      assert.equal(broken.body.template.version, 2);
      for (const id of [copied.body.id, cloned.body.id, broken.body.id]) {
        await server.call('DELETE', `/v1/instances/${id}`);
      }
      assert.ok(!existsSync(join(server.dataDir, 'instances', copied.body.id)), 'files deleted');
    });

    test('exec: exit code and output, cwd kept inside the workspace, env and stdin, timeouts; streamed, resumed and cancelled', async () => {
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'shell', env: { FROM_TEMPLATE: 'yes' } },
      });
      const created = await server.call('POST', '/v1/instances', { body: { template: 'shell' } });
      const id = created.body.id as string;
      const exec = (body: Record<string, unknown>) =>
        server.call('POST', `/v1/instances/${id}/exec`, { body });
      const ran = await exec({ command: ['sh', '-c', 'echo out; echo err >&2; exit 4'] });
      assert.equal(ran.status, 200, JSON.stringify(ran.body));
      assert.deepEqual(
        [
          ran.body.exit_code,
          ran.body.stdout,
          ran.body.stderr,
          ran.body.timed_out,
          ran.body.truncated,
        ],
        [4, 'out\n', 'err\n', false, false],
      );
      assert.match(ran.body.exec_id, /^exe_/);

      await exec({ command: ['sh', '-c', 'mkdir -p sub/dir && ln -s /etc escape'] });
      const where = await exec({ command: ['pwd'], cwd: 'sub/dir' });
      assert.match(where.body.stdout, /\/workspace\/sub\/dir\n$/);
      for (const [cwd, why] of [
        ['..', /inside the workspace/],
        ['sub/../../logs', /inside the workspace/],
        ['/etc', /relative/],
        ['escape', /symbolic link/],
        ['missing', /does not exist/],
      ] as const) {
        const refused = expectError(
          await exec({ command: ['pwd'], cwd }),
          400,
          'VALIDATION_FAILED',
        );
        assert.equal(refused.details.fields[0].field, 'body.cwd');
        assert.match(refused.message, why);
      }
      const fed = await exec({
        command: ['sh', '-c', 'cat; echo "$X $FROM_TEMPLATE"'],
        stdin: 'in\n',
        env: { X: '1' },
      });
      assert.equal(fed.body.stdout, 'in\n1 yes\n');
      const slow = await exec({ command: ['sleep', '30'], timeout_ms: 300 });
      assert.deepEqual([slow.body.timed_out, slow.body.signal], [true, 'SIGKILL']);
      expectError(await exec({ command: [] }), 400, 'VALIDATION_FAILED');

      // Streamed: the events as they come, the exit last; readable again afterwards.
      const streamed = await fetch(`${server.url}/v1/instances/${id}/exec`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          command: ['sh', '-c', 'echo one; sleep 0.2; echo two'],
          stream: true,
        }),
      });
      assert.equal(streamed.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
      const lines = (await streamed.text())
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { offset: number; type: string; data: Record<string, any> });
      assert.equal(lines[0]?.type, 'exec.started');
      assert.equal(lines.at(-1)?.type, 'exec.exited');
      assert.equal(lines.at(-1)?.data.exit_code, 0);
      const output = lines
        .filter((l) => l.type === 'exec.output')
        .map((l) => l.data.data)
        .join('');
      assert.equal(output, 'one\ntwo\n');
      const execId = lines[0]?.data.exec_id as string;
      const again = await fetch(
        `${server.url}/v1/instances/${id}/execs/${execId}/events?after=1&follow=false`,
        { headers: { authorization: `Bearer ${server.adminKey}` } },
      );
      const rest = (await again.text()).split('\n').filter((l) => l !== '');
      assert.equal(rest.length, lines.length - 1, 'the events after the first, resumed');

      // Cancelled while it runs: the stream ends with the exit, cancelled.
      const long = await fetch(`${server.url}/v1/instances/${id}/exec`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ command: ['sleep', '60'], stream: true }),
      });
      const reader = long.body?.getReader();
      assert.ok(reader);
      let text = '';
      while (!text.includes('\n')) {
        const { value } = await reader.read();
        text += new TextDecoder().decode(value);
      }
      const longId = JSON.parse(text.split('\n')[0] ?? '{}').data.exec_id as string;
      const cancelled = await server.call('POST', `/v1/instances/${id}/execs/${longId}/cancel`);
      assert.equal(cancelled.status, 204);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      const last = JSON.parse(text.trim().split('\n').at(-1) ?? '{}');
      assert.deepEqual([last.type, last.data.cancelled], ['exec.exited', true]);

      // Another instance's command, or none: 404; a stopped instance runs nothing.
      const other = await server.call('POST', '/v1/instances', {
        body: { template: 'shell', start: false },
      });
      expectError(
        await server.call('GET', `/v1/instances/${other.body.id}/execs/${execId}/events`),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `/v1/instances/${id}/execs/exe_missing/cancel`),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `/v1/instances/${other.body.id}/exec`, {
          body: { command: ['true'] },
        }),
        409,
        'WORKSPACE_INSTANCE_STATE',
      );
      for (const gone of [id, other.body.id]) await server.call('DELETE', `/v1/instances/${gone}`);
    });

    test('idle stop: an instance without activity stops, with the reason; a running command, files and exec keep it alive', async () => {
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'idle', startup: { command: FOREVER }, idle_timeout_ms: 1000 },
      });
      const created = await server.call('POST', '/v1/instances', { body: { template: 'idle' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.idle_timeout_ms, 1000);
      assert.equal(created.body.expires_at, null);
      const id = created.body.id as string;
      // A command that runs for longer than the idle timeout is activity throughout: had the
      // instance been stopped meanwhile, the command would have been killed.
      const long = await server.call('POST', `/v1/instances/${id}/exec`, {
        body: { command: ['sleep', '3'] },
      });
      assert.equal(long.body.exit_code, 0, JSON.stringify(long.body));
      assert.equal(long.body.cancelled, false);
      const stopped = await until(server, id, (i) => i.state === 'stopped');
      assert.match(stopped.state_reason, /^stopped after 1s without activity$/);
      const types = (await eventsOf(server, id)).map((e) => e.type);
      assert.deepEqual(types.slice(-2), ['instance.stopping', 'instance.stopped']);
      // Started again, the idle clock starts again; PATCH turns it off.
      assert.equal((await server.call('POST', `/v1/instances/${id}/start`)).body.state, 'running');
      const patched = await server.call('PATCH', `/v1/instances/${id}`, {
        body: { idle_timeout_ms: null },
      });
      assert.equal(patched.body.idle_timeout_ms, null);
      assert.ok(patched.body.last_active_at !== null);
      expectError(
        await server.call('PATCH', `/v1/instances/${id}`, { body: { idle_timeout_ms: 5 } }),
        400,
        'VALIDATION_FAILED',
      );
      await server.call('DELETE', `/v1/instances/${id}`);
    });

    test('TTL: an instance is deleted once its time is up, stopped or not; stop and start do not reset it; PATCH expires_at moves it', async () => {
      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'short-lived', ttl_ms: 3_600_000 },
      });
      const kept = await server.call('POST', '/v1/instances', {
        body: { template: 'short-lived' },
      });
      const expiresAt = kept.body.expires_at as string;
      assert.equal(Date.parse(expiresAt) - Date.parse(kept.body.created_at), 3_600_000);
      await server.call('POST', `/v1/instances/${kept.body.id}/stop`);
      const restarted = await server.call('POST', `/v1/instances/${kept.body.id}/start`);
      assert.equal(restarted.body.expires_at, expiresAt);
      expectError(
        await server.call('PATCH', `/v1/instances/${kept.body.id}`, {
          body: { expires_at: '2001-01-01T00:00:00Z' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      const forever = await server.call('PATCH', `/v1/instances/${kept.body.id}`, {
        body: { expires_at: null },
      });
      assert.equal(forever.body.expires_at, null);

      // A TTL given at creation overrides the template's; stopped, it goes all the same.
      const brief = await server.call('POST', '/v1/instances', {
        body: { template: 'short-lived', ttl_ms: 1500, start: false },
      });
      assert.equal(brief.status, 201, JSON.stringify(brief.body));
      for (let i = 0; ; i++) {
        const got = await server.call('GET', `/v1/instances/${brief.body.id}`);
        if (got.status === 404) break;
        assert.ok(i < 600, 'the instance outlived its TTL');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(existsSync(join(server.dataDir, 'instances', brief.body.id)), false);
      const history = await server.call(
        'GET',
        '/v1/topics/instances/messages?last=1000&limit=1000',
      );
      assert.equal(history.status, 200, JSON.stringify(history.body));
      const deleted = (
        history.body.messages as {
          event: string;
          data: { instance_id?: string; reason?: string };
        }[]
      ).find((m) => m.event === 'instance.deleted' && m.data.instance_id === brief.body.id);
      assert.equal(deleted?.data.reason, 'its time to live (1.5s) ran out');
      await server.call('DELETE', `/v1/instances/${kept.body.id}`);
    });

    test('quotas: instances, running instances, CPUs, memory and storage are enforced at create and start with a 409 naming the quota; GET /v1/quotas', async () => {
      const tenantId = `quota-${store}`;
      const created = await server.call('POST', '/v1/tenants', { body: { id: tenantId } });
      const key = created.body.admin_key.secret as string;
      const limited = await server.call('PATCH', `/v1/tenants/${tenantId}`, {
        body: {
          limits: {
            max_instances: 3,
            max_running_instances: 2,
            max_running_cpus: 3,
            max_storage_bytes: 3 * 1024 ** 3,
          },
        },
      });
      assert.equal(limited.status, 200, JSON.stringify(limited.body));
      const as = (method: string, path: string, body?: unknown) =>
        server.call(method, path, { key, ...(body !== undefined ? { body } : {}) });
      await as('POST', '/v1/workspace-templates', {
        name: 'sized',
        startup: { command: FOREVER },
        resources: { cpus: 2, memory_bytes: 64 * 1024 ** 2, storage_bytes: 1024 ** 3 },
      });
      await as('POST', '/v1/workspace-templates', {
        name: 'small',
        resources: { cpus: 0.5, storage_bytes: 512 * 1024 ** 2 },
      });
      await as('POST', '/v1/workspace-templates', { name: 'huge' });
      const first = await as('POST', '/v1/instances', { template: 'sized' });
      assert.equal(first.status, 201, JSON.stringify(first.body));
      assert.deepEqual(first.body.resources, {
        cpus: 2,
        memory_bytes: 64 * 1024 ** 2,
        storage_bytes: 1024 ** 3,
        processes: 1024,
      });
      // A second running one would need 4 CPUs of 3.
      const cpus = expectError(
        await as('POST', '/v1/instances', { template: 'sized' }),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(cpus.details.quota, 'max_running_cpus');
      assert.equal(cpus.details.source, 'tenant');
      assert.match(cpus.message, /max_running_cpus is 3 CPUs/);
      const stopped = await as('POST', '/v1/instances', { template: 'sized', start: false });
      assert.equal(stopped.status, 201);
      expectError(
        await as('POST', `/v1/instances/${stopped.body.id}/start`),
        409,
        'TENANT_LIMIT_REACHED',
      );
      const refusedState = await as('GET', `/v1/instances/${stopped.body.id}`);
      assert.equal(refusedState.body.state, 'stopped');
      // Storage: 1 GiB + 1 GiB + 10 GiB (the default) would pass 3 GiB.
      const storage = expectError(
        await as('POST', '/v1/instances', { template: 'huge', start: false }),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(storage.details.quota, 'max_storage_bytes');
      const small = await as('POST', '/v1/instances', { template: 'small', start: false });
      assert.equal(small.status, 201, JSON.stringify(small.body));
      const count = expectError(
        await as('POST', '/v1/instances', { template: 'small', start: false }),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(count.details.quota, 'max_instances');

      const quotas = await as('GET', '/v1/quotas');
      assert.equal(quotas.status, 200, JSON.stringify(quotas.body));
      const byName = Object.fromEntries(
        (quotas.body.quotas as { name: string; limit: number; used: number; source: string }[]).map(
          (q) => [q.name, q],
        ),
      );
      assert.deepEqual(
        [byName.max_instances?.used, byName.max_instances?.limit, byName.max_instances?.source],
        [3, 3, 'tenant'],
      );
      assert.equal(byName.max_running_instances?.used, 1);
      assert.equal(byName.max_running_cpus?.used, 2);
      assert.equal(byName.max_running_memory_bytes?.used, 64 * 1024 ** 2);
      assert.equal(byName.max_running_memory_bytes?.source, 'setting');
      assert.equal(byName.max_storage_bytes?.used, 2.5 * 1024 ** 3);

      // Stopping the first frees its share: the other starts.
      await as('POST', `/v1/instances/${first.body.id}/stop`);
      const started = await as('POST', `/v1/instances/${stopped.body.id}/start`);
      assert.equal(started.body.state, 'running', JSON.stringify(started.body));
      expectError(
        await as('POST', `/v1/instances/${first.body.id}/restart`),
        409,
        'TENANT_LIMIT_REACHED',
      );
      // Running instances, by count: with a limit of 1, the small one may not start.
      await server.call('PATCH', `/v1/tenants/${tenantId}`, {
        body: { limits: { max_running_cpus: null, max_running_instances: 1 } },
      });
      const running = expectError(
        await as('POST', `/v1/instances/${small.body.id}/start`),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(running.details.quota, 'max_running_instances');
      const instances = await as('GET', '/v1/instances');
      for (const i of instances.body.items as { id: string }[]) {
        await as('DELETE', `/v1/instances/${i.id}`);
      }
      assert.equal((await as('GET', '/v1/quotas')).body.quotas[0].used, 0);
    });

    test('tenant isolation: another tenant sees none of the templates or instances', async () => {
      await server.call('POST', '/v1/workspace-templates', { body: { name: 'mine' } });
      const mine = await server.call('POST', '/v1/instances', { body: { template: 'mine' } });
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `ws-${store}` } });
      const key = tenant.body.admin_key.secret as string;
      expectError(
        await server.call('GET', '/v1/workspace-templates/mine', { key }),
        404,
        'WORKSPACE_TEMPLATE_NOT_FOUND',
      );
      expectError(
        await server.call('GET', `/v1/instances/${mine.body.id}`, { key }),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      for (const action of ['stop', 'start', 'restart']) {
        expectError(
          await server.call('POST', `/v1/instances/${mine.body.id}/${action}`, { key }),
          404,
          'WORKSPACE_INSTANCE_NOT_FOUND',
        );
      }
      expectError(
        await server.call('DELETE', `/v1/instances/${mine.body.id}`, { key }),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      assert.deepEqual((await server.call('GET', '/v1/instances', { key })).body.items, []);
      const theirs = await server.call('POST', '/v1/instances', {
        key,
        body: { template: 'mine' },
      });
      expectError(theirs, 400, 'VALIDATION_FAILED');
      await server.call('DELETE', `/v1/instances/${mine.body.id}`);
    });
  });
}

describe('the process driver’s sandbox', () => {
  let server: TestServer;
  let listener: Server;
  let port = 0;
  const outside = tempDir('orchestra-outside-');

  before(async () => {
    const sandbox = await detectSandbox();
    assert.ok(sandbox.available, `bubblewrap must work here: ${JSON.stringify(sandbox)}`);
    writeFileSync(join(outside.path, 'secret.txt'), 'not for the sandbox');
    // The server's own environment must not reach the sandbox.
    process.env.ORCHESTRA_TEST_SANDBOX_PROBE = 'leaked';
    server = await startTestServer();
    listener = createServer((socket) => socket.end('hi\n'));
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    port = (listener.address() as { port: number }).port;
  });

  after(async () => {
    delete process.env.ORCHESTRA_TEST_SANDBOX_PROBE;
    await server.stop();
    await new Promise((resolve) => listener.close(resolve));
    outside.remove();
  });

  /** Runs `script` as an instance's service; resolves to what it wrote to report.txt. */
  async function probe(name: string, script: string, network?: 'host'): Promise<string> {
    await server.call('POST', '/v1/workspace-templates', {
      body: {
        name,
        startup: { command: ['bash', '-c', `( ${script} ) > report.txt 2>&1`] },
        ...(network ? { network } : {}),
      },
    });
    const created = await server.call('POST', '/v1/instances', { body: { template: name } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const done = await until(server, created.body.id, (i) => i.state === 'stopped');
    assert.equal(done.exit_code, 0, done.state_reason);
    return readFileSync(
      join(server.dataDir, 'instances', created.body.id, 'workspace', 'report.txt'),
      'utf8',
    );
  }

  test('it cannot read or write outside its directory, nor see the server’s files or environment', async () => {
    const report = await probe(
      'confined',
      [
        `cat ${join(outside.path, 'secret.txt')} && echo READ-OUTSIDE || echo no-read-outside`,
        `echo x > ${join(outside.path, 'new.txt')} && echo WROTE-OUTSIDE || echo no-write-outside`,
        `ls ${server.dataDir} >/dev/null 2>&1 && ls ${server.dataDir} | grep -q orchestra.db && echo SAW-DATABASE || echo no-database`,
        '(printenv ORCHESTRA_TEST_SANDBOX_PROBE && echo PROBE-LEAKED) || echo probe-unset',
        'echo x > /usr/new.txt && echo WROTE-USR || echo no-write-usr',
        'echo mine > ../user-data/file && echo wrote-own-dir',
        'test -d /root && ls /root >/dev/null 2>&1 && echo SAW-ROOT || echo no-root',
      ].join('; '),
    );
    assert.match(report, /no-read-outside/);
    assert.match(report, /no-write-outside/);
    assert.match(report, /no-database/);
    assert.match(report, /probe-unset/);
    assert.doesNotMatch(report, /leaked/i);
    assert.match(report, /no-write-usr/);
    assert.match(report, /wrote-own-dir/);
    assert.match(report, /no-root/);
    assert.ok(!existsSync(join(outside.path, 'new.txt')));
  });

  test('a command naming a path outside does not get it mounted', async () => {
    await server.call('POST', '/v1/workspace-templates', { body: { name: 'argv' } });
    const created = await server.call('POST', '/v1/instances', { body: { template: 'argv' } });
    const secret = join(outside.path, 'secret.txt');
    for (const command of [
      ['cat', secret],
      ['ls', outside.path],
      ['cat', '/etc/shadow'],
      [join(outside.path, 'secret.txt')],
    ]) {
      const ran = await server.call('POST', `/v1/instances/${created.body.id}/exec`, {
        body: { command },
      });
      assert.notEqual(ran.body.exit_code, 0, `${command.join(' ')}: ${JSON.stringify(ran.body)}`);
      assert.ok(!ran.body.stdout.includes('not for the sandbox'));
    }
    await server.call('DELETE', `/v1/instances/${created.body.id}`);
  });

  test('its service and its commands share one loopback, and no other instance’s', async () => {
    const serve =
      "require('http').createServer((q, s) => s.end('from-the-service')).listen(18123, '127.0.0.1')";
    await server.call('POST', '/v1/workspace-templates', {
      body: { name: 'serving', startup: { command: ['node', '-e', serve] } },
    });
    const one = (await server.call('POST', '/v1/instances', { body: { template: 'serving' } }))
      .body;
    const other = (await server.call('POST', '/v1/instances', { body: { template: 'argv' } })).body;
    const fetchIt = [
      'node',
      '-e',
      "fetch('http://127.0.0.1:18123').then((r) => r.text()).then(console.log, () => console.log('no-answer'))",
    ];
    let answer = '';
    for (
      const deadline = Date.now() + 60_000;
      !answer.includes('from-the-service') && Date.now() < deadline;
    ) {
      const ran = await server.call('POST', `/v1/instances/${one.id}/exec`, {
        body: { command: fetchIt },
      });
      answer = String(ran.body.stdout);
    }
    assert.match(answer, /from-the-service/);
    // Commands starting at once share the one network of their instance.
    const [elsewhere] = await Promise.all(
      [fetchIt, ['true'], ['true']].map((command) =>
        server.call('POST', `/v1/instances/${other.id}/exec`, { body: { command } }),
      ),
    );
    assert.match(elsewhere?.body.stdout, /no-answer/);
    for (const id of [one.id, other.id]) await server.call('DELETE', `/v1/instances/${id}`);
    // Nothing of theirs is left: no service, command or network holder.
    for (const id of [one.id, other.id]) assert.deepEqual(processesWith(id), [], id);
  });

  test('no network unless the template allows the host’s; its own PID namespace', async () => {
    const connect = `(exec 3<>/dev/tcp/127.0.0.1/${port} && read -r line <&3 && echo "CONNECTED $line") || echo no-connect`;
    assert.match(await probe('offline', connect), /no-connect/);
    assert.match(await probe('online', connect, 'host'), /CONNECTED hi/);
    // Only its own processes: bwrap's init, bash and the subshells it runs.
    const pids = await probe('alone', 'ls /proc | grep -E "^[0-9]+$" | wc -l');
    assert.ok(Number(pids.trim()) < 10, `sees ${pids.trim()} processes`);
  });
});
