import Type, { type Static } from 'typebox';
import { NullableTimestamp, Timestamp } from './common.ts';
import { WorkspacePath } from './workspace-files.ts';

// Checkpoints of an instance's workspace (issue 22): commits of a shadow git repository
// kept outside the workspace, listed, diffed and restored through
// `/v1/instances/{id}/checkpoints`.

export const Checkpoint = Type.Object(
  {
    /** `chk_…` */
    id: Type.String(),
    instance_id: Type.String(),
    /** The task it was taken for, if any. */
    task_id: Type.Union([Type.String(), Type.Null()]),
    message: Type.String(),
    /** The shadow repository's commit and tree (the tree hash is the content's identity). */
    commit: Type.String(),
    tree: Type.String(),
    /** Files in it. */
    files: Type.Integer(),
    /** Files left out by the size rule (ORCHESTRA_CHECKPOINT_MAX_FILE_BYTES), at most 100. */
    skipped: Type.Array(Type.String()),
    created_by: Type.String(),
    created_at: Timestamp,
    restored_at: NullableTimestamp,
  },
  { $id: 'Checkpoint' },
);
export type Checkpoint = Static<typeof Checkpoint>;

export const CreateCheckpoint = Type.Object(
  {
    message: Type.Optional(Type.String({ maxLength: 1000 })),
    task_id: Type.Optional(Type.String({ maxLength: 64, description: 'A task it belongs to.' })),
  },
  { additionalProperties: false },
);
export type CreateCheckpoint = Static<typeof CreateCheckpoint>;

export const CheckpointRef = Type.Object({
  instance: Type.String({ maxLength: 64 }),
  checkpoint: Type.String({ maxLength: 64, description: 'The checkpoint’s id (`chk_…`).' }),
});

export const DiffQuery = Type.Object(
  {
    against: Type.Optional(
      Type.String({
        maxLength: 64,
        description:
          'Another checkpoint (`chk_…`) to compare with, or `working` (the default): the workspace as it is now.',
      }),
    ),
    path: Type.Optional(WorkspacePath),
  },
  { additionalProperties: false },
);

export const DIFF_STATUSES = ['added', 'modified', 'deleted', 'renamed', 'type_changed'] as const;

export const CheckpointDiff = Type.Object(
  {
    from: Type.String({ description: 'The checkpoint.' }),
    to: Type.String({ description: 'The other checkpoint, or `working`.' }),
    files: Type.Array(
      Type.Object({
        path: Type.String(),
        /** The path before a rename. */
        old_path: Type.Optional(Type.String()),
        status: Type.Enum([...DIFF_STATUSES]),
        /** Null for a binary file. */
        additions: Type.Union([Type.Integer(), Type.Null()]),
        deletions: Type.Union([Type.Integer(), Type.Null()]),
      }),
    ),
    /** The unified diff (at most 1 MiB; `truncated` says when there was more). */
    patch: Type.String(),
    truncated: Type.Boolean(),
  },
  { $id: 'CheckpointDiff' },
);
export type CheckpointDiff = Static<typeof CheckpointDiff>;

export const RestoreCheckpoint = Type.Object(
  {
    paths: Type.Optional(
      Type.Array(WorkspacePath, {
        minItems: 1,
        maxItems: 1000,
        description:
          'Only these files or directories (a path the checkpoint does not hold is deleted); the whole workspace without.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RestoreCheckpoint = Static<typeof RestoreCheckpoint>;

export const RestoreResult = Type.Object(
  {
    checkpoint: Type.Ref('Checkpoint'),
    /** Taken just before, so that the restore can be undone. */
    before: Type.Ref('Checkpoint'),
  },
  { $id: 'RestoreResult' },
);
