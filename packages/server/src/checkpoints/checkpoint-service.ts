import { spawn } from 'node:child_process';
import { lstat, mkdir, realpath, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  Checkpoint,
  CheckpointDiff,
  CreateCheckpoint,
  RestoreCheckpoint,
} from '@orchestra/protocol';
import type { Logger } from 'pino';
import { type InstanceService, lexicalInside, type WorkspaceRef } from '../instances/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { KeyedQueue } from '../platform/keyed-queue.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { RelationalStore } from '../store/store.ts';
import type { CheckpointsTable } from './tables.ts';

const GIT_TIMEOUT_MS = 300_000;
const PATCH_MAX_BYTES = 1024 * 1024;
const SKIPPED_LISTED = 100;

function view(row: CheckpointsTable): Checkpoint {
  return {
    id: row.id,
    instance_id: row.instance_id,
    task_id: row.task_id,
    message: row.message,
    commit: row.commit_sha,
    tree: row.tree_sha,
    files: row.files,
    skipped: JSON.parse(row.skipped) as string[],
    created_by: row.created_by,
    created_at: row.created_at,
    restored_at: row.restored_at,
  };
}

/** A pathspec that means the path as written: no glob, no magic. */
const literal = (path: string) => `:(literal)${path}`;

/** A gitignore pattern matching exactly `path` from the top (special characters escaped). */
function exactPattern(path: string): string {
  return `/${path.replace(/[\\*?[\]!# ]/g, (c) => `\\${c}`)}`;
}

/**
 * Checkpoints of instances' workspaces (KiloCode's ShadowCheckpointService): each is a
 * commit of a shadow git repository kept under the node's data directory, outside the
 * instance's directory, so that neither the user's own `.git` nor anything a sandboxed
 * process can write is involved (a hook planted there would run outside the sandbox). The
 * workspace's `.gitignore` files apply; files larger than the size rule are left out and
 * listed. Operations on one instance's checkpoints run one at a time.
 */
export class CheckpointService {
  readonly #store: RelationalStore;
  readonly #instances: InstanceService;
  readonly #root: string;
  readonly #maxFileBytes: number;
  readonly #log: Logger;
  readonly #locks = new KeyedQueue();

  constructor(deps: {
    store: RelationalStore;
    instances: InstanceService;
    dataDir: string;
    maxFileBytes: number;
    log: Logger;
  }) {
    this.#store = deps.store;
    this.#instances = deps.instances;
    this.#root = join(deps.dataDir, 'checkpoints');
    this.#maxFileBytes = deps.maxFileBytes;
    this.#log = deps.log;
    // An instance's checkpoints go with it.
    deps.instances.onDeleted((instanceId) => this.#forget(instanceId));
  }

  async create(
    principal: Principal,
    instanceId: string,
    input: CreateCheckpoint,
  ): Promise<Checkpoint> {
    const ref = await this.#instances.workspace(principal, instanceId);
    return this.#locked(ref.id, () =>
      this.#take(ref, {
        message: input.message ?? `checkpoint by ${credentialId(principal)}`,
        taskId: input.task_id ?? null,
        by: credentialId(principal),
      }),
    );
  }

  async list(
    principal: Principal,
    instanceId: string,
    options: {
      limit?: number | undefined;
      cursor?: string | undefined;
      task_id?: string | undefined;
      maxBytes: number;
    },
  ): Promise<{ items: Checkpoint[]; next_cursor: string | null }> {
    await this.#instances.get(principal, instanceId);
    const before = decodeCursor(options.cursor, (id) => id.startsWith('chk_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('checkpoints')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('instance_id', '=', instanceId)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    if (options.task_id !== undefined) query = query.where('task_id', '=', options.task_id);
    return toPage(await query.execute(), limit, view, options.maxBytes);
  }

  async get(principal: Principal, instanceId: string, id: string): Promise<Checkpoint> {
    return view(await this.#row(principal.tenant.id, instanceId, id));
  }

  /** What changed between a checkpoint and another, or the workspace as it is now. */
  async diff(
    principal: Principal,
    instanceId: string,
    id: string,
    options: { against?: string | undefined; path?: string | undefined },
  ): Promise<CheckpointDiff> {
    const ref = await this.#instances.workspace(principal, instanceId);
    const from = await this.#row(principal.tenant.id, instanceId, id);
    const against = options.against ?? 'working';
    const to =
      against === 'working' ? undefined : await this.#row(principal.tenant.id, instanceId, against);
    const filter: string[] = [];
    if (options.path !== undefined && options.path !== '' && options.path !== '.') {
      const workspace = await realpath(ref.paths.workspace);
      lexicalInside(workspace, options.path, 'querystring.path');
      filter.push('--', literal(options.path.replace(/\/+$/, '')));
    }
    return this.#locked(ref.id, async () => {
      const git = this.#git(ref);
      // Against the workspace: stage it as a checkpoint would, and compare with the index.
      const range =
        to === undefined ? ['--cached', from.commit_sha] : [from.commit_sha, to.commit_sha];
      if (to === undefined) await this.#stage(ref);
      const common = ['diff', '--no-color', '--no-ext-diff', '-M', ...range];
      const statuses = await git.run([...common, '--name-status', '-z', ...filter]);
      const counts = await git.run([...common, '--numstat', '-z', ...filter]);
      const patch = await git.run([...common, '--patch', ...filter], PATCH_MAX_BYTES);
      return {
        from: from.id,
        to: to?.id ?? 'working',
        files: parseDiff(statuses.stdout, counts.stdout),
        patch: patch.stdout,
        truncated: patch.truncated,
      };
    });
  }

  /**
   * Restores a checkpoint, whole or for some paths, after taking a checkpoint of the
   * workspace as it is (`before`), so that a restore can be undone. Whole, the workspace
   * becomes exactly the checkpoint's tree; files ignored or left out by the size rule stay
   * as they are.
   */
  async restore(
    principal: Principal,
    instanceId: string,
    id: string,
    input: RestoreCheckpoint,
  ): Promise<{ checkpoint: Checkpoint; before: Checkpoint }> {
    const ref = await this.#instances.workspace(principal, instanceId);
    const row = await this.#row(principal.tenant.id, instanceId, id);
    const workspace = await realpath(ref.paths.workspace);
    const paths = (input.paths ?? []).map((p, i) => {
      lexicalInside(workspace, p, `body.paths.${i}`);
      const clean = p.replace(/\/+$/, '');
      if (clean === '' || clean === '.')
        throw fieldError(
          `body.paths.${i}`,
          'must name a path in the workspace; leave out paths to restore it all',
        );
      return clean;
    });
    return this.#locked(ref.id, async () => {
      const by = credentialId(principal);
      const before = await this.#take(ref, {
        message: `before restoring ${row.id}`,
        taskId: row.task_id,
        by,
      });
      const git = this.#git(ref);
      if (paths.length === 0) {
        await git.run(['read-tree', '-u', '--reset', row.commit_sha]);
      } else {
        for (const path of paths) {
          await git.run(['rm', '-r', '-q', '--ignore-unmatch', '--', literal(path)]);
          const held = await git.run(['cat-file', '-e', `${row.commit_sha}:${path}`], 0, true);
          if (held.code === 0) await git.run(['checkout', row.commit_sha, '--', literal(path)]);
        }
      }
      const restoredAt = new Date().toISOString();
      await this.#store.db
        .updateTable('checkpoints')
        .set({ restored_at: restoredAt })
        .where('id', '=', row.id)
        .execute();
      this.#instances.touch(ref.id);
      return { checkpoint: view({ ...row, restored_at: restoredAt }), before };
    });
  }

  /** Stages the workspace into the shadow index: the size rule, then `git add -A`. */
  async #stage(ref: WorkspaceRef): Promise<string[]> {
    const git = this.#git(ref);
    await this.#init(ref);
    const exclude = join(this.#dir(ref.id), 'info', 'exclude');
    // Listed with no size exclusions first, so that a file still too large stays out.
    await writeFile(exclude, '.git\n');
    const listed = await git.run([
      'ls-files',
      '-z',
      '--others',
      '--modified',
      '--exclude-standard',
    ]);
    const large: string[] = [];
    for (const path of new Set(listed.stdout.split('\0').filter((p) => p !== ''))) {
      const info = await lstat(join(ref.paths.workspace, path)).catch(() => undefined);
      if (info?.isFile() && info.size > this.#maxFileBytes) large.push(path);
    }
    large.sort();
    await writeFile(exclude, `${['.git', ...large.map(exactPattern)].join('\n')}\n`);
    if (large.length > 0) {
      await git.run(['rm', '-q', '--cached', '--ignore-unmatch', '--', ...large.map(literal)]);
    }
    await git.run(['add', '-A', '--', '.']);
    return large;
  }

  async #take(
    ref: WorkspaceRef,
    what: { message: string; taskId: string | null; by: string },
  ): Promise<Checkpoint> {
    const git = this.#git(ref);
    const large = await this.#stage(ref);
    await git.run([
      'commit',
      '-q',
      '--allow-empty',
      '--no-verify',
      '-m',
      what.message || 'checkpoint',
    ]);
    const commit = (await git.run(['rev-parse', 'HEAD'])).stdout.trim();
    const tree = (await git.run(['rev-parse', 'HEAD^{tree}'])).stdout.trim();
    const files = (await git.run(['ls-files', '-z'])).stdout
      .split('\0')
      .filter((p) => p !== '').length;
    const row: CheckpointsTable = {
      id: newId('chk'),
      tenant_id: ref.tenantId,
      instance_id: ref.id,
      task_id: what.taskId,
      message: what.message,
      commit_sha: commit,
      tree_sha: tree,
      files,
      skipped: JSON.stringify(large.slice(0, SKIPPED_LISTED)),
      created_by: what.by,
      created_at: new Date().toISOString(),
      restored_at: null,
    };
    await this.#store.db.insertInto('checkpoints').values(row).execute();
    this.#instances.touch(ref.id);
    return view(row);
  }

  async #init(ref: WorkspaceRef): Promise<void> {
    const dir = this.#dir(ref.id);
    if ((await lstat(join(dir, 'HEAD')).catch(() => undefined)) !== undefined) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await this.#git(ref).run(['init', '-q']);
  }

  async #row(tenantId: string, instanceId: string, id: string): Promise<CheckpointsTable> {
    const row = await this.#store.db
      .selectFrom('checkpoints')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('instance_id', '=', instanceId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) {
      throw new ApiError(
        'CHECKPOINT_NOT_FOUND',
        `Checkpoint "${id}" of instance "${instanceId}" does not exist`,
      );
    }
    return row;
  }

  async #forget(instanceId: string): Promise<void> {
    await this.#store.db.deleteFrom('checkpoints').where('instance_id', '=', instanceId).execute();
    await rm(this.#dir(instanceId), { recursive: true, force: true });
  }

  #dir(instanceId: string): string {
    return join(this.#root, `${instanceId}.git`);
  }

  #git(ref: WorkspaceRef): Git {
    return new Git(this.#dir(ref.id), ref.paths.workspace);
  }

  #locked<T>(id: string, work: () => Promise<T>): Promise<T> {
    return this.#locks.run(id, work);
  }
}

/** The system git on a shadow repository and a work tree, with no outside configuration. */
class Git {
  readonly #dir: string;
  readonly #workTree: string;

  constructor(dir: string, workTree: string) {
    this.#dir = dir;
    this.#workTree = workTree;
  }

  /**
   * Runs git; rejects on a failure unless `allowFailure`. With `maxBytes`, output past it
   * is dropped and `truncated` is set.
   */
  run(
    args: string[],
    maxBytes = 0,
    allowFailure = false,
  ): Promise<{ stdout: string; code: number | null; truncated: boolean }> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        'git',
        [
          '-c',
          'core.hooksPath=/dev/null',
          '-c',
          'core.autocrlf=false',
          '-c',
          'core.symlinks=true',
          '-c',
          'core.quotepath=false',
          '-c',
          'core.fsmonitor=false',
          '-c',
          'gc.auto=0',
          '-c',
          'commit.gpgsign=false',
          '-c',
          'user.name=Orchestra',
          '-c',
          'user.email=checkpoints@orchestra.invalid',
          ...args,
        ],
        {
          cwd: this.#workTree,
          stdio: ['ignore', 'pipe', 'pipe'],
          timeout: GIT_TIMEOUT_MS,
          env: {
            PATH: '/usr/local/bin:/usr/bin:/bin',
            LANG: 'C.UTF-8',
            HOME: this.#dir,
            GIT_DIR: this.#dir,
            GIT_WORK_TREE: this.#workTree,
            GIT_CONFIG_NOSYSTEM: '1',
            GIT_CONFIG_GLOBAL: '/dev/null',
            GIT_TERMINAL_PROMPT: '0',
          },
        },
      );
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      child.stdout.on('data', (chunk: Buffer) => {
        if (maxBytes > 0 && size + chunk.length > maxBytes) {
          if (size < maxBytes) chunks.push(chunk.subarray(0, maxBytes - size));
          size = maxBytes;
          truncated = true;
          return;
        }
        chunks.push(chunk);
        size += chunk.length;
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < 4000) stderr += chunk;
      });
      child.once('error', reject);
      child.once('close', (code) => {
        const stdout = Buffer.concat(chunks).toString('utf8');
        if (code !== 0 && !allowFailure) {
          reject(
            new Error(`git ${args[0]} failed (${code}): ${stderr.trim().split('\n')[0] ?? ''}`),
          );
          return;
        }
        resolve({ stdout, code, truncated });
      });
    });
  }
}

/** The files of `--name-status -z` with the counts of `--numstat -z`. */
function parseDiff(statuses: string, counts: string): CheckpointDiff['files'] {
  const files: CheckpointDiff['files'] = [];
  const s = statuses.split('\0');
  for (let i = 0; i < s.length - 1; ) {
    const code = s[i++] ?? '';
    if (code.startsWith('R') || code.startsWith('C')) {
      const oldPath = s[i++] ?? '';
      const path = s[i++] ?? '';
      files.push({ path, old_path: oldPath, status: 'renamed', additions: null, deletions: null });
    } else {
      const path = s[i++] ?? '';
      const status =
        code === 'A'
          ? 'added'
          : code === 'D'
            ? 'deleted'
            : code === 'T'
              ? 'type_changed'
              : 'modified';
      files.push({ path, status, additions: null, deletions: null });
    }
  }
  const byPath = new Map(files.map((f) => [f.path, f]));
  const c = counts.split('\0');
  for (let i = 0; i < c.length - 1; ) {
    const [added = '-', deleted = '-', name = ''] = (c[i++] ?? '').split('\t');
    // A rename: the paths follow as two more items.
    let path = name;
    if (name === '') {
      i += 1; // the old path
      path = c[i++] ?? '';
    }
    const file = byPath.get(path);
    if (file === undefined) continue;
    file.additions = added === '-' ? null : Number(added);
    file.deletions = deleted === '-' ? null : Number(deleted);
  }
  return files;
}
