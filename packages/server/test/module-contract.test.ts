import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { type AnyModule, buildModules, dependencyOrder, type Platform } from '../src/module.ts';
import { MODULES, PLATFORM_ERRORS, SETTINGS } from '../src/modules.ts';
import { ERROR_CATALOGUE } from '../src/platform/errors.ts';
import { Lifecycle } from '../src/platform/lifecycle.ts';
import { PLATFORM_SETTINGS } from '../src/platform/settings.ts';
import { notesModule, notesRuns } from './fixtures/notes/index.ts';
import { expectError, startTestServer } from './helpers.ts';

// Issue 19, module contract: every module declares what it owns and needs, the server builds
// them from one list, and adding one is a folder plus a line in that list.

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

test('a module added as one folder and one line in the list runs: migration, routes, start and stop', async () => {
  const server = await startTestServer({ modules: [...MODULES, notesModule] });
  let stopped = false;
  try {
    const created = await server.call('POST', '/v1/notes', { body: { text: 'hello' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const listed = await server.call('GET', '/v1/notes');
    assert.deepEqual(
      (listed.body as { items: { text: string }[] }).items.map((n) => n.text),
      ['hello'],
    );
    // Through the platform's pipeline like every route: authentication, validation.
    expectError(await server.call('GET', '/v1/notes', { key: null }), 401, 'UNAUTHENTICATED');
    expectError(
      await server.call('POST', '/v1/notes', { body: { text: '' } }),
      400,
      'VALIDATION_FAILED',
    );
    // Its topic namespace is the server's: clients read, never publish.
    expectError(
      await server.call('POST', '/v1/topics/notes.x/messages', { body: { data: 1 } }),
      403,
      'PERMISSION_DENIED',
    );
    const openapi = (await server.call('GET', '/openapi.json')).body as {
      paths: Record<string, { get?: { security?: unknown[] } }>;
    };
    assert.ok(openapi.paths['/v1/notes']?.get?.security?.length, 'listed, with its security');
    const calls = notesRuns.at(-1)?.calls;
    assert.deepEqual(calls, ['create', 'start http:']);
    await server.stop();
    stopped = true;
    assert.deepEqual(calls, ['create', 'start http:', 'stop']);
  } finally {
    if (!stopped) await server.stop();
  }
});

test('a start that fails in a module stops the modules started before it, and the store', async () => {
  let calls: string[] | undefined;
  const failing = {
    name: 'stats',
    needs: ['notes'],
    create: ({ need }: { need: (name: 'notes') => { calls: string[] } }) => {
      calls = need('notes').calls;
      return {};
    },
    start: () => {
      throw new Error('this module cannot start');
    },
  } as unknown as AnyModule;
  const others = MODULES.filter((m) => m.name !== 'stats');
  await assert.rejects(
    startTestServer({ modules: [...others, notesModule, failing] }),
    /this module cannot start/,
  );
  assert.deepEqual(calls, ['create', 'start http:', 'stop']);
});

test('modules are built in dependency order; a cycle, an unknown name or an undeclared use is refused', async () => {
  const order = dependencyOrder(MODULES).map((m) => m.name);
  for (const m of MODULES) {
    for (const n of m.needs ?? []) {
      assert.ok(order.indexOf(n) < order.indexOf(m.name), `${n} is built before ${m.name}`);
    }
  }
  const fake = (name: string, needs: string[], create: AnyModule['create'] = () => ({})) =>
    ({ name, needs, create }) as unknown as AnyModule;
  // Deliberate violations.
  assert.throws(
    () => dependencyOrder([fake('tasks', ['agents']), fake('agents', ['tasks'])]),
    /cycle: tasks → agents → tasks/,
  );
  assert.throws(() => dependencyOrder([fake('tasks', ['nowhere'])]), /needs nowhere/);
  assert.throws(() => dependencyOrder([fake('tasks', []), fake('tasks', [])]), /declared twice/);
  const sneaky = fake('stats', [], ((ctx: { need(n: string): unknown }) =>
    ctx.need('templates')) as unknown as AnyModule['create']);
  const lifecycle = new Lifecycle(pino({ level: 'silent' }));
  await assert.rejects(
    buildModules([fake('templates', []), sneaky], {} as Platform, lifecycle),
    /stats uses templates without declaring it in needs/,
  );
});

test('every catalogued error code belongs to the platform or to exactly one module', () => {
  const owners = new Map<string, string[]>();
  const claim = (code: string, owner: string) =>
    owners.set(code, [...(owners.get(code) ?? []), owner]);
  for (const code of PLATFORM_ERRORS) claim(code, 'platform');
  for (const m of MODULES) for (const code of m.errors ?? []) claim(code, m.name);
  for (const code of Object.keys(ERROR_CATALOGUE)) {
    assert.equal(owners.get(code)?.length, 1, `${code}: owned by ${owners.get(code) ?? 'nobody'}`);
  }
});

test('each module declares the tables of its tables.ts and the jobs its sources make', () => {
  for (const m of MODULES) {
    const dir = join(SRC, m.name);
    let tables: string[] = [];
    try {
      const text = readFileSync(join(dir, 'tables.ts'), 'utf8');
      for (const block of text.matchAll(/^export interface \w+Tables \{([^}]*)\}/gms)) {
        tables = [...(block[1] ?? '').matchAll(/^\s+([a-z_]+):/gm)].map((t) => t[1] ?? '');
      }
    } catch {
      // no tables
    }
    assert.deepEqual([...(m.tables ?? [])].sort(), tables.sort(), `${m.name}: tables`);
    const jobs = readdirSync(dir)
      .filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [
        ...readFileSync(join(dir, f), 'utf8').matchAll(/\.job\(\{\s*name: '([a-z-]+)'/g),
      ])
      .map((j) => j[1] ?? '');
    assert.deepEqual([...(m.jobs ?? [])].sort(), jobs.sort(), `${m.name}: jobs`);
  }
});

test('settings: each slice is its module’s alone, and topic namespaces are declared once', () => {
  const slices = [PLATFORM_SETTINGS, ...MODULES.map((m) => m.settings ?? {})];
  const total = slices.reduce((n, s) => n + Object.keys(s).length, 0);
  assert.equal(Object.keys(SETTINGS).length, total, 'no setting is in two slices');
  const names = MODULES.flatMap((m) => (m.topics ?? []).map((t) => t.name));
  assert.equal(new Set(names).size, names.length, 'no namespace is declared twice');
  for (const served of ['tasks', 'sessions', 'agents', 'config', 'services']) {
    assert.ok(names.includes(served), `${served} is declared by the module that publishes it`);
  }
});
