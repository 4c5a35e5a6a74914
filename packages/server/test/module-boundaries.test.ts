import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cycles, deepImports, moduleGraph } from '../scripts/check-modules.ts';

// Issue 19, module contract: no module runs SQL on a table that another module owns; it
// calls the owner's interface instead. A module owns the tables its `tables.ts` declares
// (the `…Tables` interface). This reads every source file of the server and finds the
// tables each one names in a Kysely call or in SQL text.

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

/** Which module owns each table, from the modules' `tables.ts`. */
function tableOwners(): Map<string, string> {
  const owners = new Map<string, string>();
  for (const module of readdirSync(SRC)) {
    const file = join(SRC, module, 'tables.ts');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const block of text.matchAll(/^export interface \w+Tables \{([^}]*)\}/gms)) {
      for (const [, table] of (block[1] ?? '').matchAll(/^\s+([a-z_]+):/gm)) {
        if (table !== undefined) owners.set(table, module);
      }
    }
  }
  return owners;
}

/** The tables `source` reads or writes: Kysely builders, and SQL in statements. */
export function tablesUsed(source: string, known: ReadonlySet<string>): Set<string> {
  const used = new Set<string>();
  const builder =
    /\b(?:selectFrom|updateTable|insertInto|deleteFrom|innerJoin|leftJoin|rightJoin|fullJoin)\(\s*'([a-z_]+)/g;
  for (const [, table] of source.matchAll(builder)) if (table) used.add(table);
  // SQL text: `sql` templates and the strings of `new Statement(…)` (raw statements).
  const sqlText = [
    ...[...source.matchAll(/\bsql(?:<[^>]*>)?`([^`]*)`/g)].map((m) => m[1] ?? ''),
    ...[...source.matchAll(/new (?:Statement|MultiRowInsert)\(([\s\S]*?)\);/g)].map(
      (m) => m[1] ?? '',
    ),
  ];
  for (const text of sqlText) {
    for (const [, table] of text.matchAll(/\b(?:from|join|update|into)\s+([a-z_]+)/gi)) {
      if (table && known.has(table)) used.add(table);
    }
  }
  return used;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

/** Crossings allowed on purpose: none. Add one only with the reason, and an issue to remove it. */
const KNOWN: Record<string, string[]> = {};

test('no module runs SQL on another module’s tables', () => {
  const owners = tableOwners();
  assert.ok(owners.size >= 20, `found the tables of the modules (${owners.size})`);
  const known = new Set(owners.keys());
  const crossings: Record<string, string[]> = {};
  for (const file of sourceFiles(SRC)) {
    const path = relative(SRC, file).split('\\').join('/');
    const [first] = path.split('/');
    // Files at the top (server.ts, app.ts) belong to no module: they may run no SQL at all.
    const module = path.includes('/') ? first : undefined;
    if (module === 'store') continue; // the store itself: migrations runner, contract
    if (path.endsWith('/migrations.ts') || path === 'migrations.ts') continue;
    const foreign = [...tablesUsed(readFileSync(file, 'utf8'), known)]
      .filter((t) => owners.get(t) !== module)
      .sort();
    if (foreign.length > 0) crossings[path] = foreign;
  }
  assert.deepEqual(
    crossings,
    KNOWN,
    'a module ran SQL on a table another module owns: call the owner’s interface instead (or, if a known crossing is gone, remove it from KNOWN)',
  );
});

test('the check sees a deliberate violation, in a builder and in SQL text', () => {
  const known = new Set(['tasks', 'agents']);
  const builder = "await db.selectFrom('tasks').innerJoin('agents', (j) => j).execute();";
  assert.deepEqual([...tablesUsed(builder, known)].sort(), ['agents', 'tasks']);
  const raw =
    "const S = new Statement('select 1 from tasks t join agents a on a.id = t.agent_id');";
  assert.deepEqual([...tablesUsed(raw, known)].sort(), ['agents', 'tasks']);
  const template = 'await sql`update agents set status = $' + '{x}`.execute(db);';
  assert.deepEqual([...tablesUsed(template, known)], ['agents']);
  // Prose that names a table is not SQL.
  assert.deepEqual([...tablesUsed("log.info('forgot agents from tasks')", known)], []);
});

test('module folders import each other in no cycle, and the check that npm run lint runs sees one', () => {
  const files = new Map<string, string>();
  for (const file of sourceFiles(SRC)) {
    files.set(relative(SRC, file).split('\\').join('/'), readFileSync(file, 'utf8'));
  }
  const graph = moduleGraph(files);
  // The graph is real: tasks use sessions' types, sessions do not import tasks.
  assert.ok(graph.get('tasks')?.has('sessions'));
  assert.equal(graph.get('sessions')?.has('tasks'), false);
  assert.deepEqual(cycles(graph), []);

  // A deliberate cycle, two modules deep and three: both are reported, each once.
  const fixture = new Map([
    ['config/a.ts', "import { x } from '../realtime/b.ts';"],
    ['realtime/b.ts', "import type { y } from '../config/c.ts';"],
    ['kv/d.ts', "import { z } from '../registry/e.ts';"],
    ['registry/e.ts', "export { w } from '../events/f.ts';"],
    ['events/f.ts', "const g = await import('../kv/d.ts');"],
  ]);
  assert.deepEqual(cycles(moduleGraph(fixture)), [
    ['config', 'realtime', 'config'],
    ['events', 'kv', 'registry', 'events'],
  ]);
  const lint = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'))
    .scripts.lint as string;
  assert.match(lint, /check-modules\.ts/);
});

test('outside a module, only its index.ts is imported; the check sees a deep import', () => {
  const files = new Map<string, string>();
  for (const file of sourceFiles(SRC)) {
    files.set(relative(SRC, file).split('\\').join('/'), readFileSync(file, 'utf8'));
  }
  assert.deepEqual(deepImports(files), []);
  const fixture = new Map([
    ['tasks/index.ts', "export * from './task-service.ts';"],
    ['tasks/task-service.ts', "import { x } from './runtime.ts';"],
    ['agents/index.ts', "export * from './pool.ts';"],
    ['agents/pool.ts', "import { TaskRuntime } from '../tasks/runtime.ts';"],
    ['agents/ok.ts', "import { TaskService } from '../tasks/index.ts';"],
    ['platform/p.ts', "import { y } from '../platform/q.ts';"],
    ['server.ts', "const { z } = await import('./agents/pool.ts');"],
    ['cli/commands/task.ts', "import { TASK_STATES } from '../../tasks/states.ts';"],
    ['cli/commands/agents.ts', "import { AGENT_STATUSES } from '../../agents/statuses.ts';"],
  ]);
  assert.deepEqual(deepImports(fixture), [
    'agents/pool.ts imports tasks/runtime.ts',
    'server.ts imports agents/pool.ts',
    'cli/commands/task.ts imports tasks/states.ts',
    'cli/commands/agents.ts imports agents/statuses.ts',
  ]);
});
