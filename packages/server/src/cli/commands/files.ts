import { readFileSync, writeFileSync } from 'node:fs';
import type { FileEntry, StructureNode } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, countFlag, print, UsageError } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

// `orchestra files …`: an instance's files through /v1/instances/{id}/files.

interface Arguments {
  positionals: string[];
  path: string;
}

/** The instance id and the paths after it; `min`/`max` count the paths. */
function instanceAnd({ positionals, path }: Arguments, names: string[], min: number): string[] {
  const [id, ...rest] = positionals;
  if (id === undefined || rest.length < min) {
    throw new UsageError(
      `${path} needs an instance id and ${names.slice(0, Math.max(min, 1)).join(' and ')}`,
    );
  }
  if (rest.length > names.length) {
    throw new UsageError(
      `${path} takes an instance id and ${names.join(', ')}; got "${positionals.join(' ')}"`,
    );
  }
  return [id, ...rest];
}

/** The bytes of `file` (`-`: standard input). */
function readInput(file: string): Buffer {
  try {
    return readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    throw new UsageError(
      `cannot read ${file === '-' ? 'standard input' : file}: ${(err as Error).message}`,
    );
  }
}

const row = (e: FileEntry) => [
  e.type === 'directory'
    ? `${e.name}/`
    : e.type === 'symlink'
      ? `${e.name} -> ${e.target ?? '?'}`
      : e.name,
  e.type,
  String(e.size),
  e.mode,
  e.modified_at,
];

const list = command({
  name: 'ls',
  aliases: ['list'],
  args: 'INSTANCE [PATH]',
  description: 'Lists a directory of the instance’s workspace (the workspace itself by default).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path = ''] = instanceAnd(invocation, ['a path'], 0) as [string, string?];
    const files = client(values).instances.files;
    const items: FileEntry[] = [];
    let cursor: string | undefined;
    do {
      const page = await files.list(id, path, { limit: 1000, ...(cursor ? { cursor } : {}) });
      items.push(...page.items);
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
    print(values.json, items, () =>
      formatTable(['NAME', 'TYPE', 'SIZE', 'MODE', 'MODIFIED'], items.map(row)),
    );
    return 0;
  },
});

const cat = command({
  name: 'cat',
  args: 'INSTANCE PATH',
  description: 'Writes a file of the workspace to standard output, byte for byte.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path] = instanceAnd(invocation, ['a path'], 1) as [string, string];
    const file = await client(values).instances.files.read(id, path);
    process.stdout.write(file.content);
    return 0;
  },
});

const put = command({
  name: 'put',
  args: 'INSTANCE PATH [FILE]',
  description:
    'Writes FILE (standard input by default, or "-") to PATH in the workspace, atomically; missing directories are made.',
  options: {
    'if-match': {
      type: 'string',
      value: 'SHA256',
      description: 'Only if the file’s SHA-256 is this now (as `files stat --hash` shows)',
    },
    create: { type: 'boolean', description: 'Only if nothing is at PATH yet' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path, source = '-'] = instanceAnd(invocation, ['a path', 'a file'], 1) as [
      string,
      string,
      string?,
    ];
    const entry = await client(values).instances.files.write(id, path, readInput(source), {
      ...(values['if-match'] !== undefined ? { ifMatch: values['if-match'] } : {}),
      ...(values.create ? { create: true } : {}),
    });
    print(
      values.json,
      entry,
      () => `Wrote ${entry.path} (${entry.size} bytes, sha256 ${entry.sha256}).`,
    );
    return 0;
  },
});

const stat = command({
  name: 'stat',
  args: 'INSTANCE PATH',
  description: 'Describes a file, directory or link (a link is not followed).',
  options: { hash: { type: 'boolean', description: 'Also show a file’s SHA-256' } },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path] = instanceAnd(invocation, ['a path'], 1) as [string, string];
    const e = await client(values).instances.files.stat(id, path, { hash: values.hash === true });
    print(values.json, e, () =>
      [
        `Path:     ${e.path || '.'}`,
        `Type:     ${e.type}${e.target !== undefined ? ` -> ${e.target}` : ''}`,
        `Size:     ${e.size}`,
        `Mode:     ${e.mode}`,
        `Modified: ${e.modified_at}`,
        ...(e.sha256 !== undefined ? [`SHA-256:  ${e.sha256}`] : []),
      ].join('\n'),
    );
    return 0;
  },
});

const mkdir = command({
  name: 'mkdir',
  args: 'INSTANCE PATH',
  description: 'Makes a directory.',
  options: { parents: { type: 'boolean', short: 'p', description: 'Make missing parents too' } },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path] = instanceAnd(invocation, ['a path'], 1) as [string, string];
    const e = await client(values).instances.files.mkdir(id, path, {
      parents: values.parents === true,
    });
    print(values.json, e, () => `Made ${e.path}/.`);
    return 0;
  },
});

const move = command({
  name: 'mv',
  aliases: ['move'],
  args: 'INSTANCE FROM TO',
  description: 'Moves or renames a file or directory.',
  options: { overwrite: { type: 'boolean', description: 'Replace a file at TO' } },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, from, to] = instanceAnd(invocation, ['a source', 'a destination'], 2) as [
      string,
      string,
      string,
    ];
    const e = await client(values).instances.files.move(id, from, to, {
      overwrite: values.overwrite === true,
    });
    print(values.json, e, () => `Moved ${from} to ${e.path}.`);
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'INSTANCE PATH',
  description: 'Deletes a file or link; a directory must be empty unless --recursive.',
  options: {
    recursive: { type: 'boolean', short: 'r', description: 'Delete a directory and all it holds' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path] = instanceAnd(invocation, ['a path'], 1) as [string, string];
    await client(values).instances.files.delete(id, path, { recursive: values.recursive === true });
    print(values.json, { deleted: path }, () => `Deleted ${path}.`);
    return 0;
  },
});

const search = command({
  name: 'search',
  aliases: ['grep'],
  args: 'INSTANCE QUERY',
  description:
    'Searches the workspace’s files (ripgrep; .gitignore respected) and prints path:line:text; exits 1 when nothing matched.',
  options: {
    path: { type: 'string', value: 'PATH', description: 'Only under this directory' },
    regex: { type: 'boolean', short: 'e', description: 'QUERY is a regular expression' },
    'ignore-case': { type: 'boolean', short: 'i', description: 'Ignore case' },
    glob: {
      type: 'string',
      value: 'GLOB',
      multiple: true,
      description: 'Only files that match (! excludes); repeat for several',
    },
    max: { type: 'string', value: 'N', description: 'At most N matches (default 1000)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, query] = instanceAnd(invocation, ['a query'], 1) as [string, string];
    const found = await client(values).instances.files.search(id, query, {
      ...(values.path !== undefined ? { path: values.path } : {}),
      ...(values.regex ? { regex: true } : {}),
      ...(values['ignore-case'] ? { caseSensitive: false } : {}),
      ...(values.glob ? { glob: values.glob } : {}),
      ...(values.max !== undefined ? { maxResults: countFlag('--max', values.max, 10_000) } : {}),
    });
    print(values.json, found, () =>
      [
        ...found.matches.map((m) => `${m.path}:${m.line}:${m.text}`),
        ...(found.truncated ? ['(more matches were left out)'] : []),
      ].join('\n'),
    );
    return found.matches.length > 0 ? 0 : 1;
  },
});

function tree(node: StructureNode, prefix: string, out: string[]): void {
  const children = node.children ?? [];
  children.forEach((child, i) => {
    const last = i === children.length - 1;
    out.push(
      `${prefix}${last ? '└── ' : '├── '}${child.name}${child.type === 'directory' ? '/' : ''} (${child.size})`,
    );
    if (child.children) tree(child, `${prefix}${last ? '    ' : '│   '}`, out);
  });
}

const structure = command({
  name: 'tree',
  args: 'INSTANCE [PATH]',
  description: 'Shows the project’s structure with sizes in bytes (.gitignore respected).',
  options: {
    depth: { type: 'string', value: 'N', description: 'Levels shown (default 8)' },
    ignored: { type: 'boolean', description: 'Include what .gitignore excludes' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path = ''] = instanceAnd(invocation, ['a path'], 0) as [string, string?];
    const s = await client(values).instances.files.structure(id, {
      path,
      ...(values.depth !== undefined ? { depth: countFlag('--depth', values.depth, 32) } : {}),
      ...(values.ignored ? { ignored: true } : {}),
    });
    print(values.json, s, () => {
      const out = [`${s.root.name}/ (${s.root.size})`];
      tree(s.root, '', out);
      out.push(
        '',
        `${s.files} files, ${s.directories} directories, ${s.total_size} bytes${s.truncated ? ' (cut short)' : ''}`,
      );
      return out.join('\n');
    });
    return 0;
  },
});

const download = command({
  name: 'download',
  args: 'INSTANCE [PATH]',
  description: 'Downloads a file or directory (the whole workspace by default) as a tar archive.',
  options: {
    output: {
      type: 'string',
      short: 'o',
      value: 'FILE',
      description: 'Write it here (default: standard output)',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, path = ''] = instanceAnd(invocation, ['a path'], 0) as [string, string?];
    const archive = await client(values).instances.files.download(id, path);
    if (values.output !== undefined && values.output !== '-') writeFileSync(values.output, archive);
    else process.stdout.write(archive);
    return 0;
  },
});

const upload = command({
  name: 'upload',
  args: 'INSTANCE ARCHIVE',
  description:
    'Extracts a tar archive (plain, gzip, bzip2, xz or zstd; "-" reads standard input) into the workspace.',
  options: {
    path: { type: 'string', value: 'PATH', description: 'Into this directory (made if missing)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, source] = instanceAnd(invocation, ['an archive'], 1) as [string, string];
    const done = await client(values).instances.files.upload(
      id,
      readInput(source),
      values.path ?? '',
    );
    print(values.json, done, () => `Extracted ${done.bytes} bytes into ${done.path || '.'}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'files',
  summary: 'An instance’s files: ls, cat, put, stat, mkdir, mv, rm, search, tree, download, upload',
  notes:
    'Paths are relative to the instance’s workspace; one that leads out of it is refused. Writing needs an admin or operator credential.',
  subcommands: [list, cat, put, stat, mkdir, move, remove, search, structure, download, upload],
});
