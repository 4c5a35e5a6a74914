// `npm run lint` runs this (issue 19, module contract). In packages/server/src:
// - module folders must not import each other in a cycle: a cycle means neither module can
//   be understood, tested or started without the other; break it with an interface the
//   caller owns, or by moving what both need to `platform/`;
// - a module is a folder with an `index.ts`, its public surface: from outside the folder,
//   import only that file, never a file inside it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The module folder of a path relative to src, or undefined for the files at the top. */
function moduleOf(path: string): string | undefined {
  const parts = path.split('/');
  return parts.length > 1 ? parts[0] : undefined;
}

/** Module → modules it imports, from `files` (path relative to src → source text). */
export function moduleGraph(files: ReadonlyMap<string, string>): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const [path, source] of files) {
    const from = moduleOf(path);
    if (from === undefined) continue;
    const edges = graph.get(from) ?? new Set<string>();
    graph.set(from, edges);
    for (const [, spec] of source.matchAll(/(?:from|import)\s*\(?\s*'(\.\.\/[^']+)'/g)) {
      const to = moduleOf(
        join(path, '..', spec ?? '')
          .split(sep)
          .join('/'),
      );
      if (to !== undefined && to !== from) edges.add(to);
    }
  }
  return graph;
}

/**
 * Deep imports allowed on purpose: none. (The CLI's client commands take the wire contract's
 * constants from `@orchestra/protocol/constants`, not from the modules; the store's
 * `Database` type is filled by each module's `tables.ts`, by declaration merging.)
 */
const ALLOWED_DEEP: readonly [from: RegExp, to: RegExp][] = [];

/** Imports from outside a module folder of a file in it other than its `index.ts`. */
export function deepImports(files: ReadonlyMap<string, string>): string[] {
  const modules = new Set(
    [...files.keys()].filter((p) => /^[a-z-]+\/index\.ts$/.test(p)).map((p) => moduleOf(p)),
  );
  const found: string[] = [];
  for (const [path, source] of files) {
    const from = moduleOf(path);
    for (const [, spec] of source.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
      const target = join(path, '..', spec ?? '')
        .split(sep)
        .join('/');
      const to = moduleOf(target);
      if (to === undefined || to === from || !modules.has(to)) continue;
      if (target === `${to}/index.ts`) continue;
      if (ALLOWED_DEEP.some(([f, t]) => f.test(path) && t.test(target))) continue;
      found.push(`${path} imports ${target}`);
    }
  }
  return found;
}

/** Every cycle of the graph, each once, as the modules around it (first repeated at the end). */
export function cycles(graph: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  const found = new Map<string, string[]>();
  const visit = (start: string, node: string, path: string[]) => {
    for (const next of graph.get(node) ?? []) {
      if (next === start) {
        const cycle = [...path, start];
        // One entry per cycle, whichever module it was found from.
        const key = [...path].sort().join(' ');
        if (!found.has(key)) found.set(key, cycle);
      } else if (!path.includes(next) && next > start) {
        visit(start, next, [...path, next]);
      }
    }
  };
  for (const start of [...graph.keys()].sort()) visit(start, start, [start]);
  return [...found.values()];
}

function sources(dir: string, root: string, out: Map<string, string>): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) sources(path, root, out);
    else if (name.endsWith('.ts')) {
      out.set(relative(root, path).split(sep).join('/'), readFileSync(path, 'utf8'));
    }
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const src = fileURLToPath(new URL('../src/', import.meta.url));
  const files = sources(src, src, new Map());
  const found = cycles(moduleGraph(files));
  const deep = deepImports(files);
  const problems = [
    ...found.map((c) => `import cycle between module folders: ${c.join(' → ')}`),
    ...deep.map((d) => `deep import (use the module's index.ts): ${d}`),
  ];
  if (problems.length > 0) {
    process.stderr.write(
      `${problems.join('\n')}\nBreak a cycle with an interface the caller owns, or move what both need to platform/; export from a module's index.ts what others need.\n`,
    );
    process.exit(1);
  }
  process.stdout.write('modules: no import cycles between folders, no deep imports\n');
}
