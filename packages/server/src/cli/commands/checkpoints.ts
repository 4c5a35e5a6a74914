import type { Checkpoint } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, print, UsageError } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

// `orchestra checkpoints …`: save, list, diff and restore an instance's workspace.

/** INSTANCE, or INSTANCE CHECKPOINT. */
function args(
  { positionals, path }: { positionals: string[]; path: string },
  withCheckpoint: boolean,
): [string, string] {
  const wanted = withCheckpoint ? 2 : 1;
  if (positionals.length !== wanted) {
    throw new UsageError(
      `${path} takes ${withCheckpoint ? 'an instance id and a checkpoint id' : 'an instance id'}, got "${positionals.join(' ')}"`,
    );
  }
  return [positionals[0] as string, positionals[1] ?? ''];
}

const describe = (c: Checkpoint) =>
  [
    `ID:       ${c.id}`,
    `Message:  ${c.message}`,
    `Files:    ${c.files}${c.skipped.length > 0 ? ` (left out by size: ${c.skipped.join(', ')})` : ''}`,
    `Tree:     ${c.tree}`,
    `Task:     ${c.task_id ?? '-'}`,
    `Created:  ${c.created_at} by ${c.created_by}`,
    `Restored: ${c.restored_at ?? '-'}`,
  ].join('\n');

const list = command({
  name: 'ls',
  aliases: ['list'],
  args: 'INSTANCE',
  description:
    'Lists an instance’s checkpoints, newest first. A task that works in the instance has one before each attempt (and after each turn of a hosted agent): --task lists those.',
  options: {
    task: { type: 'string', value: 'ID', description: 'Only the checkpoints of task ID' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id] = args(invocation, false);
    const items: Checkpoint[] = [];
    const query = { limit: 200, ...(values.task !== undefined ? { task_id: values.task } : {}) };
    for await (const c of client(values).instances.checkpoints.listAll(id, query)) {
      items.push(c);
    }
    print(values.json, items, () =>
      formatTable(
        ['ID', 'MESSAGE', 'FILES', 'TASK', 'CREATED'],
        items.map((c) => [c.id, c.message, String(c.files), c.task_id ?? '-', c.created_at]),
      ),
    );
    return 0;
  },
});

const create = command({
  name: 'create',
  aliases: ['save'],
  args: 'INSTANCE',
  description: 'Saves the instance’s workspace as a checkpoint.',
  options: {
    message: { type: 'string', short: 'm', value: 'TEXT', description: 'What it is' },
    task: { type: 'string', value: 'TASK', description: 'The task it belongs to' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id] = args(invocation, false);
    const c = await client(values).instances.checkpoints.create(id, {
      ...(values.message !== undefined ? { message: values.message } : {}),
      ...(values.task !== undefined ? { taskId: values.task } : {}),
    });
    print(values.json, c, () => describe(c));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'INSTANCE CHECKPOINT',
  description: 'Shows a checkpoint.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, checkpoint] = args(invocation, true);
    const c = await client(values).instances.checkpoints.get(id, checkpoint);
    print(values.json, c, () => describe(c));
    return 0;
  },
});

const diff = command({
  name: 'diff',
  args: 'INSTANCE CHECKPOINT',
  description:
    'Prints what changed since a checkpoint, as a unified diff: against the workspace, or --against another checkpoint. --stat lists the files.',
  options: {
    against: { type: 'string', value: 'CHECKPOINT', description: 'Compare with this checkpoint' },
    path: { type: 'string', value: 'PATH', description: 'Only this file or directory' },
    stat: { type: 'boolean', description: 'Each file’s status and line counts instead' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, checkpoint] = args(invocation, true);
    const d = await client(values).instances.checkpoints.diff(id, checkpoint, {
      ...(values.against !== undefined ? { against: values.against } : {}),
      ...(values.path !== undefined ? { path: values.path } : {}),
    });
    print(values.json, d, () =>
      values.stat
        ? formatTable(
            ['STATUS', 'PATH', '+', '-'],
            d.files.map((f) => [
              f.status,
              f.old_path !== undefined ? `${f.old_path} -> ${f.path}` : f.path,
              f.additions === null ? 'bin' : String(f.additions),
              f.deletions === null ? 'bin' : String(f.deletions),
            ]),
          )
        : `${d.patch}${d.truncated ? '\n(the diff is longer than 1 MiB; narrow it with --path)' : ''}`.replace(
            /\n$/,
            '',
          ),
    );
    return 0;
  },
});

const restore = command({
  name: 'restore',
  args: 'INSTANCE CHECKPOINT',
  description:
    'Restores a checkpoint, whole or for --path (repeatable); the workspace is saved first, and the command prints that checkpoint to undo with.',
  options: {
    path: {
      type: 'string',
      value: 'PATH',
      multiple: true,
      description: 'Only this file or directory; repeat for several',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [id, checkpoint] = args(invocation, true);
    const done = await client(values).instances.checkpoints.restore(id, checkpoint, {
      ...(values.path ? { paths: values.path } : {}),
    });
    print(
      values.json,
      done,
      () =>
        `Restored ${done.checkpoint.id}${values.path ? ` (${values.path.join(', ')})` : ''}. To undo: orchestra checkpoints restore ${id} ${done.before.id}`,
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'checkpoints',
  summary: 'Checkpoints of an instance’s workspace: ls, create, get, diff, restore',
  notes:
    'A checkpoint is a commit of a shadow git repository outside the workspace: the workspace’s own .git is not touched, .gitignore is respected. Saving and restoring need an admin or operator credential.',
  subcommands: [list, create, get, diff, restore],
});
