import type { Checkpoint, CheckpointDiff } from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { paginate } from './listing.ts';
import type { Page, PageOptions } from './types.ts';

// Checkpoints of an instance's workspace (`/v1/instances/{id}/checkpoints`).

export type { Checkpoint, CheckpointDiff } from '@orchestra/protocol';

export interface ListCheckpointsOptions extends PageOptions {
  /** Only the checkpoints of this task. */
  task_id?: string;
}

const checkpointsPath = (id: string) => `/v1/instances/${encodeURIComponent(id)}/checkpoints`;

/**
 * `Orchestra.instances.checkpoints`: save an instance's workspace, list, diff and restore
 * its checkpoints. A checkpoint that does not exist rejects with `CHECKPOINT_NOT_FOUND` (404).
 */
export class CheckpointsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** Saves the workspace; `taskId` ties it to a task (a remote agent's own checkpoints). */
  create(id: string, options: { message?: string; taskId?: string } = {}): Promise<Checkpoint> {
    return this.#client.request('POST', checkpointsPath(id), {
      body: {
        ...(options.message !== undefined ? { message: options.message } : {}),
        ...(options.taskId !== undefined ? { task_id: options.taskId } : {}),
      },
    });
  }

  /** One page, newest first; `task_id`: only that task's (before each attempt, after turns). */
  list(id: string, options: ListCheckpointsOptions = {}): Promise<Page<Checkpoint>> {
    return this.#client.request('GET', checkpointsPath(id), { query: { ...options } });
  }

  listAll(
    id: string,
    options: Omit<ListCheckpointsOptions, 'cursor'> = {},
  ): AsyncIterable<Checkpoint> {
    return paginate((cursor) => this.list(id, { ...options, ...cursor }));
  }

  get(id: string, checkpoint: string): Promise<Checkpoint> {
    return this.#client.request('GET', `${checkpointsPath(id)}/${encodeURIComponent(checkpoint)}`);
  }

  /** What changed since `checkpoint`: against the workspace, or `against` another one. */
  diff(
    id: string,
    checkpoint: string,
    options: { against?: string; path?: string } = {},
  ): Promise<CheckpointDiff> {
    return this.#client.request(
      'GET',
      `${checkpointsPath(id)}/${encodeURIComponent(checkpoint)}/diff`,
      { query: { ...options } },
    );
  }

  /**
   * Restores it, whole or for `paths`; the workspace as it was is saved first (`before`:
   * restore that to undo).
   */
  restore(
    id: string,
    checkpoint: string,
    options: { paths?: string[] } = {},
  ): Promise<{ checkpoint: Checkpoint; before: Checkpoint }> {
    return this.#client.request(
      'POST',
      `${checkpointsPath(id)}/${encodeURIComponent(checkpoint)}/restore`,
      { body: options.paths ? { paths: options.paths } : {} },
    );
  }
}
