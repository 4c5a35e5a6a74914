import type {
  CreateInstance,
  CreateWorkspaceTemplate,
  ExecCommand,
  ExecResult,
  Instance,
  InstanceState,
  Recommendations,
  ResourceUsage,
  StreamGap,
  UpdateInstance,
  WorkspaceTemplate,
  WorkspaceTemplateSpec,
  WorkspaceUpload,
} from '@orchestra/protocol';
import { CheckpointsApi } from './checkpoints-api.ts';
import type { Orchestra } from './client.ts';
import { InstanceFilesApi } from './instance-files-api.ts';
import { labelQuery, paginate } from './listing.ts';
import { PortsApi } from './ports-api.ts';
import { TerminalsApi } from './terminals-api.ts';
import type { Page, PageOptions } from './types.ts';

// Workspaces: templates and instances. The wire types are @orchestra/protocol's
// (decision 0014).

export type {
  CreateInstance,
  CreateWorkspaceTemplate,
  ExecCommand,
  ExecResult,
  Instance,
  InstanceState,
  Recommendations,
  ResourceRecommendation,
  ResourceUsage,
  UpdateInstance,
  WorkspaceBase,
  WorkspaceTemplate,
  WorkspaceTemplateSpec,
  WorkspaceUpload,
} from '@orchestra/protocol';

export interface ListInstancesOptions extends PageOptions {
  /** Only instances in these states. */
  state?: InstanceState[];
  /** Only instances of this workspace template (name or id). */
  template?: string;
  /** Only instances that carry all these labels. */
  labels?: Record<string, string>;
}

/** One of the tenant's workspace quotas (`instances.quotas`). */
export interface Quota {
  name: string;
  /** 0: no limit. */
  limit: number;
  used: number;
  /** `tenant`: the tenant's own limit; `setting`: the server's setting. */
  source: 'tenant' | 'setting';
  setting: string;
}

/** One item of `instances.createMany`, in the order given. */
export type InstanceBatchItem =
  | { status: 201; instance: Instance }
  | { status: number; error: { code: string; message: string; details?: unknown } };

/** A state change of an instance (`instance.<state>`), as its stream carries it. */
export interface InstanceEvent {
  offset: number;
  type: string;
  time: string;
  data: { instance_id: string; state: InstanceState; reason: string; node_id: string };
}

/** An event of a command: `exec.started`, `exec.output` (`stream`, `data`), `exec.exited`. */
export interface ExecEvent {
  offset: number;
  type: string;
  time: string;
  data: Record<string, unknown>;
}

export interface FollowOptions {
  /** Resume after this offset (0: from the start). */
  after?: number;
  /** Follow live (the default), or end after the events there are. */
  follow?: boolean;
  signal?: AbortSignal;
  /** Failed reconnections in a row before giving up (default 8). */
  maxReconnects?: number;
}

const DEFAULT_MAX_RECONNECTS = 8;
const templatePath = (ref: string) => `/v1/workspace-templates/${encodeURIComponent(ref)}`;
const instancePath = (id: string) => `/v1/instances/${encodeURIComponent(id)}`;

/**
 * `Orchestra.workspaceTemplates`: what instances start from and how they run (reading: any
 * role but agent; changing: admin or operator). A template that does not exist rejects with
 * `WORKSPACE_TEMPLATE_NOT_FOUND` (404).
 */
export class WorkspaceTemplatesApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** A taken name rejects with `WORKSPACE_TEMPLATE_ALREADY_EXISTS` (409). */
  create(template: CreateWorkspaceTemplate): Promise<WorkspaceTemplate> {
    return this.#client.request('POST', '/v1/workspace-templates', { body: template });
  }

  list(options: PageOptions = {}): Promise<Page<WorkspaceTemplate>> {
    return this.#client.request('GET', '/v1/workspace-templates', { query: { ...options } });
  }

  get(ref: string): Promise<WorkspaceTemplate> {
    return this.#client.request('GET', templatePath(ref));
  }

  /** Replaces its spec; its `version` goes up. Instances keep the spec they had. */
  update(ref: string, spec: WorkspaceTemplateSpec): Promise<WorkspaceTemplate> {
    return this.#client.request('PUT', templatePath(ref), { body: spec });
  }

  /** `WORKSPACE_TEMPLATE_IN_USE` (409) while instances created from it exist. */
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', templatePath(ref));
  }
}

const uploadPath = (id: string) => `/v1/workspace-uploads/${encodeURIComponent(id)}`;

/**
 * `Orchestra.workspaceUploads`: tar archives and git bundles that workspace templates start
 * instances from (`base: { type: 'upload', upload: id }`).
 */
export class WorkspaceUploadsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /**
   * Uploads a tar archive (plain or compressed) or a git bundle; `BAD_REQUEST` (400) for
   * anything else, `PAYLOAD_TOO_LARGE` (413) past the server's limit.
   */
  create(data: Uint8Array, options: { name?: string } = {}): Promise<WorkspaceUpload> {
    return this.#client.request('POST', '/v1/workspace-uploads', {
      query: options.name !== undefined ? { name: options.name } : {},
      rawBody: data,
      headers: { 'content-type': 'application/octet-stream' },
    });
  }

  list(options: PageOptions = {}): Promise<Page<WorkspaceUpload>> {
    return this.#client.request('GET', '/v1/workspace-uploads', { query: { ...options } });
  }

  listAll(options: Omit<PageOptions, 'cursor'> = {}): AsyncIterable<WorkspaceUpload> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }

  get(id: string): Promise<WorkspaceUpload> {
    return this.#client.request('GET', uploadPath(id));
  }

  /** `WORKSPACE_UPLOAD_IN_USE` (409) while a template or an instance starts from it. */
  async delete(id: string): Promise<void> {
    await this.#client.request('DELETE', uploadPath(id));
  }
}

/**
 * `Orchestra.instances`: sandboxed workspaces. `create`, `start`, `stop` and `restart`
 * resolve once the instance got there (or `failed`, with `state_reason`). An instance that
 * does not exist rejects with `WORKSPACE_INSTANCE_NOT_FOUND` (404); an operation its state
 * does not allow with `WORKSPACE_INSTANCE_STATE` (409).
 */
export class InstancesApi {
  readonly #client: Orchestra;
  /** An instance's files: read, write, list, move, delete, search, archives, changes. */
  readonly files: InstanceFilesApi;
  /** Checkpoints of an instance's workspace: save, list, diff, restore. */
  readonly checkpoints: CheckpointsApi;
  /** Its terminals: open, attach, type, read the screen, close. */
  readonly terminals: TerminalsApi;
  /** Its ports through Orchestra, and share links. */
  readonly ports: PortsApi;
  constructor(client: Orchestra) {
    this.#client = client;
    this.files = new InstanceFilesApi(client);
    this.checkpoints = new CheckpointsApi(client);
    this.terminals = new TerminalsApi(client);
    this.ports = new PortsApi(client);
  }

  create(input: CreateInstance): Promise<Instance> {
    return this.#client.request('POST', '/v1/instances', { body: input });
  }

  /** Up to 100 at once, created in parallel: a result per item, in order. */
  async createMany(inputs: CreateInstance[]): Promise<InstanceBatchItem[]> {
    const answer = await this.#client.request<{ items: InstanceBatchItem[] }>(
      'POST',
      '/v1/instances/batch',
      { body: { instances: inputs } },
    );
    return answer.items;
  }

  /** One page, newest first. */
  list(options: ListInstancesOptions = {}): Promise<Page<Instance>> {
    const { labels, ...rest } = options;
    return this.#client.request('GET', '/v1/instances', {
      query: {
        ...rest,
        ...(labels ? { label: labelQuery(labels) } : {}),
      },
    });
  }

  /** Every instance that matches, page after page. */
  listAll(options: Omit<ListInstancesOptions, 'cursor'> = {}): AsyncIterable<Instance> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }

  get(id: string): Promise<Instance> {
    return this.#client.request('GET', instancePath(id));
  }

  /** Renames it or replaces its labels. */
  update(id: string, change: UpdateInstance): Promise<Instance> {
    return this.#client.request('PATCH', instancePath(id), { body: change });
  }

  start(id: string): Promise<Instance> {
    return this.#client.request('POST', `${instancePath(id)}/start`);
  }

  stop(id: string): Promise<Instance> {
    return this.#client.request('POST', `${instancePath(id)}/stop`);
  }

  restart(id: string): Promise<Instance> {
    return this.#client.request('POST', `${instancePath(id)}/restart`);
  }

  /** Stops it and deletes its files, its record and its events. */
  async delete(id: string): Promise<void> {
    await this.#client.request('DELETE', instancePath(id));
  }

  /** Its state changes, oldest first, resumed across dropped connections. */
  events(id: string, options: FollowOptions = {}): AsyncIterable<InstanceEvent | StreamGap> {
    return followEvents(
      this.#client,
      `${instancePath(id)}/events`,
      `the events of instance "${id}"`,
      options,
    );
  }

  /**
   * Runs a command in a running instance and resolves once it ended, with its exit code and
   * output (1 MiB of each stream; `truncated` says when there was more: read it all with
   * `execEvents`). A request timeout shorter than the command's ends the wait, not the
   * command.
   */
  exec(id: string, command: Omit<ExecCommand, 'stream'>): Promise<ExecResult> {
    return this.#client.request('POST', `${instancePath(id)}/exec`, { body: command });
  }

  /**
   * Runs a command and yields its events as they come: `exec.started` first (its
   * `exec_id`), `exec.output` (`stream`, `data`), `exec.exited` last. A connection dropped
   * once it started resumes from the last event received; the command does not stop when
   * the reader does (`cancelExec` stops it).
   */
  async *execStream(
    id: string,
    command: Omit<ExecCommand, 'stream'>,
    options: { signal?: AbortSignal; maxReconnects?: number } = {},
  ): AsyncIterable<ExecEvent | StreamGap> {
    let execId: string | undefined;
    let cursor = 0;
    try {
      for await (const raw of this.#client.streamJson(
        `${instancePath(id)}/exec`,
        {},
        { signal: options.signal, body: { ...command, stream: true } },
      )) {
        const item = raw as ExecEvent;
        cursor = item.offset;
        if (item.type === 'exec.started') execId = String(item.data.exec_id);
        yield item;
        if (item.type === 'exec.exited') return;
      }
    } catch (err) {
      // Before it started, nothing can be resumed: whether it runs is unknown.
      if (execId === undefined || options.signal?.aborted) throw err;
    }
    if (execId === undefined) return;
    yield* this.execEvents(id, execId, { ...options, after: cursor });
  }

  /** A command's events, live until it exited, resumed across dropped connections. */
  execEvents(
    id: string,
    execId: string,
    options: FollowOptions = {},
  ): AsyncIterable<ExecEvent | StreamGap> {
    return followEvents(
      this.#client,
      `${instancePath(id)}/execs/${encodeURIComponent(execId)}/events`,
      `the output of command "${execId}"`,
      options,
      (item) => item.type === 'exec.exited',
    );
  }

  /**
   * The tenant's workspace quotas (instances, running instances, their CPUs and memory,
   * storage) with what it uses of each; `limit` 0 is none.
   */
  quotas(): Promise<{ tenant_id: string; quotas: Quota[] }> {
    return this.#client.request('GET', '/v1/quotas');
  }

  /**
   * What the tenant's instances use (CPU, memory, processes, disk) against their
   * resources, and what the node answering has; `usage` is null for another node's.
   */
  usage(options: { instance?: string } = {}): Promise<ResourceUsage> {
    return this.#client.request('GET', '/v1/resources/usage', { query: { ...options } });
  }

  /** Recommendations for over-used, under-used and idle instances; changes nothing. */
  optimize(options: { instance?: string; minRunningMs?: number } = {}): Promise<Recommendations> {
    return this.#client.request('POST', '/v1/resources/optimize', {
      body: {
        ...(options.instance !== undefined ? { instance: options.instance } : {}),
        ...(options.minRunningMs !== undefined ? { min_running_ms: options.minRunningMs } : {}),
      },
    });
  }

  /** Kills a running command; one that ended already is left as it ended. */
  async cancelExec(id: string, execId: string): Promise<void> {
    await this.#client.request(
      'POST',
      `${instancePath(id)}/execs/${encodeURIComponent(execId)}/cancel`,
    );
  }
}

/**
 * Follows an event stream of an instance (its states, a command's output, its files):
 * resumes after the last offset received across dropped connections; ends when `isLast`
 * says so, or once caught up when not following.
 */
export function followEvents<T extends { offset: number; type: string }>(
  client: Orchestra,
  path: string,
  what: string,
  options: FollowOptions,
  isLast: (item: T) => boolean = () => false,
): AsyncIterable<T | StreamGap> {
  const follow = options.follow ?? true;
  let cursor = options.after ?? 0;
  let last = false;
  return client.resume<T | StreamGap>({
    what,
    signal: options.signal,
    maxReconnects: options.maxReconnects ?? DEFAULT_MAX_RECONNECTS,
    position: () => `offset ${cursor}`,
    async *connect(onOpen) {
      for await (const raw of client.streamJson(
        path,
        { after: cursor, follow: String(follow) },
        { signal: options.signal, onOpen },
      )) {
        const item = raw as T | StreamGap;
        if ('offset' in item) {
          if (item.offset <= cursor) continue;
          cursor = item.offset;
          if (isLast(item)) last = true;
        } else {
          cursor = Math.max(cursor, item.first_offset - 1);
        }
        yield item;
      }
    },
    // Unfollowed, or past its last event, it is complete; followed, a drop resumes.
    ended: async () => (last || !follow ? { done: true } : { problem: undefined }),
  });
}
