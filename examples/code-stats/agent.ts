import { readdir, readFile, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { extname, join, relative, resolve } from 'node:path';
import { AgentWorker, type TaskContext, TaskFailedError } from '@orchestra/sdk';

// An Orchestra agent with the `code-stats` capability: given `{"path": "<directory>"}`, it
// walks the directory (skipping node_modules and .git), reports progress file by file and
// returns the lines, files and bytes per file extension.
//
//   ORCHESTRA_URL      server URL (default http://localhost:8080)
//   ORCHESTRA_API_KEY  an agent (or admin) key: `npx orchestra keys create --role agent ...`
//   AGENT_ID           stable id of this agent (default code-stats-<host name>)
//   AGENT_CONCURRENCY  tasks run at once (default 2)
//
// SIGTERM or Ctrl-C drains: running tasks finish, no new ones are taken, then it exits.

const SKIPPED_DIRECTORIES = new Set(['node_modules', '.git']);

const url = process.env.ORCHESTRA_URL ?? 'http://localhost:8080';
const apiKey = process.env.ORCHESTRA_API_KEY;
const agentId = process.env.AGENT_ID ?? `code-stats-${hostname()}`;

/** Counts for a group of files. */
export interface Counts {
  files: number;
  lines: number;
  bytes: number;
}

/** What a `code-stats` task returns. */
export interface CodeStats extends Counts {
  path: string;
  /** By extension in lowercase, such as `.ts`; files without one count as `(none)`. */
  by_extension: Record<string, Counts>;
}

function invalidInput(message: string): TaskFailedError {
  // Running it again would fail the same way: no retry.
  return new TaskFailedError(message, { code: 'INVALID_INPUT', retryable: false });
}

/** The directory to walk, from the task input; throws a non-retryable failure if unusable. */
async function directoryOf(input: unknown): Promise<string> {
  const path = (input as { path?: unknown } | null)?.path;
  if (typeof path !== 'string' || path === '') {
    throw invalidInput('input.path must be a non-empty string naming a directory');
  }
  const absolute = resolve(path);
  const info = await stat(absolute).catch(() => undefined);
  if (info === undefined) {
    throw new TaskFailedError(`${absolute} does not exist on agent ${agentId}`, {
      code: 'PATH_NOT_FOUND',
      retryable: false,
    });
  }
  if (!info.isDirectory()) throw invalidInput(`${absolute} is not a directory`);
  return absolute;
}

/** Regular files under `root`, in a stable order; symbolic links are not followed. */
async function filesUnder(root: string, signal: AbortSignal): Promise<string[]> {
  const files: string[] = [];
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    signal.throwIfAborted();
    const entries = await readdir(dir, { withFileTypes: true });
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && !SKIPPED_DIRECTORIES.has(entry.name)) pending.push(path);
      else if (entry.isFile()) files.push(path);
    }
  }
  return files.sort();
}

function countLines(content: Buffer): number {
  let lines = 0;
  for (const byte of content) if (byte === 0x0a) lines += 1;
  // A last line without a newline counts too.
  if (content.length > 0 && content[content.length - 1] !== 0x0a) lines += 1;
  return lines;
}

async function codeStats(input: unknown, ctx: TaskContext): Promise<CodeStats> {
  const root = await directoryOf(input);
  const files = await filesUnder(root, ctx.signal);
  const stats: CodeStats = { path: root, files: 0, lines: 0, bytes: 0, by_extension: {} };
  ctx.progress(0, files.length, `${files.length} files to read`);
  for (const [index, file] of files.entries()) {
    ctx.signal.throwIfAborted();
    const content = await readFile(file, { signal: ctx.signal });
    const lines = countLines(content);
    const extension = extname(file).toLowerCase() || '(none)';
    const group = stats.by_extension[extension] ?? { files: 0, lines: 0, bytes: 0 };
    stats.by_extension[extension] = group;
    for (const counts of [stats, group]) {
      counts.files += 1;
      counts.lines += lines;
      counts.bytes += content.length;
    }
    ctx.progress(index + 1, files.length, relative(root, file));
  }
  stats.by_extension = Object.fromEntries(
    Object.entries(stats.by_extension).sort(([a], [b]) => a.localeCompare(b)),
  );
  return stats;
}

if (!apiKey) {
  console.error('Set ORCHESTRA_API_KEY to an agent key: npx orchestra keys create --role agent');
  process.exit(2);
}
const worker = new AgentWorker({
  url,
  apiKey,
  agentId,
  capabilities: ['code-stats'],
  concurrency: Number(process.env.AGENT_CONCURRENCY ?? 2),
  handler: codeStats,
  onStatus: (status) => {
    switch (status.type) {
      case 'registered':
        console.log(`agent ${agentId} registered with ${url}`);
        return;
      case 'disconnected':
        console.log(`disconnected (${status.code}); reconnecting in ${status.retryInMs} ms`);
        return;
      case 'error':
        console.error(`error: ${status.error.message}`);
        return;
    }
  },
});

try {
  await worker.start();
} catch (err) {
  console.error(`could not start: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
