import type {
  CreateRealtimeToken,
  RealtimeToken as WireRealtimeToken,
  Topic as WireTopic,
  TopicHistory as WireTopicHistory,
} from '@orchestra/protocol';
import { isTerminalState, TERMINAL_EVENT_TYPES } from '@orchestra/protocol/constants';
import { ConfigApi } from './config-api.ts';
import { type ErrorPayload, OrchestraError } from './errors.ts';
import { InstancesApi, WorkspaceTemplatesApi, WorkspaceUploadsApi } from './instances-api.ts';
import { labelQuery, paginate } from './listing.ts';
import { McpCatalogApi, McpServersApi, McpViewsApi } from './mcp-api.ts';
import { ModelProvidersApi } from './model-providers-api.ts';
import type { PresenceMember, TopicMessage } from './realtime-client.ts';
import { LeasesApi, ServicesApi } from './registry-api.ts';
import { SecretsApi } from './secrets-api.ts';
import { MAX_BATCH_TASKS, SubmitBatcher } from './submit-batcher.ts';
import { ToolApprovalsApi, ToolCallsApi, ToolPoliciesApi, ToolsApi } from './tools-api.ts';
import {
  type ConnectionOptions,
  type Query,
  type RequestOptions,
  type ResumableStream,
  Transport,
} from './transport.ts';
import type {
  Agent,
  ApiKey,
  ApiKeyWithSecret,
  ClusterNode,
  CreateApiKeyInput,
  CreatedTenant,
  CreateSessionInput,
  CreateTaskInput,
  CreateTaskOutcome,
  CreateTaskResult,
  CreateTemplateInput,
  CreateTenantInput,
  ListAgentsOptions,
  ListApiKeysOptions,
  ListSessionsOptions,
  ListTasksOptions,
  ListTemplatesOptions,
  Page,
  PageOptions,
  Readiness,
  Session,
  SessionEventsOptions,
  SessionStreamItem,
  Stats,
  StatsOptions,
  StreamGap,
  Task,
  TaskEvent,
  TaskStreamItem,
  Template,
  TemplateDefinition,
  TemplateVersionSummary,
  Tenant,
  UpdateTenantInput,
  WhoAmI,
} from './types.ts';
import { UsageApi } from './usage-api.ts';

export interface OrchestraOptions extends ConnectionOptions {
  /**
   * Base URL of the server, such as `http://localhost:8080`. Several URLs (the nodes of a
   * cluster, without a load balancer in front): requests go to one node until it cannot be
   * reached, then to the next. A request moves to another node only when it cannot have
   * reached the first (connection refused), or when it is safe to repeat (GET, HEAD, PUT,
   * DELETE).
   */
  url: string | string[];
  /**
   * Backoff between resumes of an event stream or a watch: half a step to a step, from
   * `initialDelayMs` (default 200) doubling up to `maxDelayMs` (default 5,000), and never
   * sooner than a server's Retry-After.
   */
  reconnect?: ConnectionOptions['reconnect'];
  /**
   * Called with `connected` once a request is answered, `reconnecting` when a request
   * reached no node or a stream is being resumed (with `retryInMs`), and so on; see
   * `ConnectionStatus`.
   */
  onStatus?: ConnectionOptions['onStatus'];
  /** Per-request timeout; default 30 s. */
  timeoutMs?: number;
  /** Replaces the global `fetch` (for proxies or instrumentation). */
  fetch?: typeof fetch;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /**
   * Send the `tasks.create` calls (without `wait`) made in one turn of the event loop
   * together, as one `POST /v1/tasks/batch`, instead of one request each; default true.
   * Each call still resolves or rejects on its own, as it would alone. Turn it off to see
   * every submit as its own request (in a proxy's log, for instance).
   */
  batchSubmits?: boolean;
}

/** One item of a `POST /v1/tasks/batch` answer. */
interface BatchItem {
  status: number;
  task?: Task;
  error?: Pick<ErrorPayload, 'code' | 'message' | 'details'>;
}

export type { Query, RequestOptions };

export interface TaskEventsOptions {
  /** Start after this offset; default 0, from the first retained event. */
  after?: number;
  /** Stops the iteration: the iterator then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Reconnections in a row that may fail before the iterator gives up; default 8. Every
   * event received resets the count.
   */
  maxReconnects?: number;
}

/**
 * The transport of a REST client. `statusFromRequests`: whether each request's outcome is
 * the connection state (false for a client that reports a state of its own).
 */
export function restTransport(
  options: Omit<OrchestraOptions, 'batchSubmits'>,
  settings: { statusFromRequests: boolean },
): Transport {
  return new Transport({
    url: options.url,
    apiKey: options.apiKey,
    reconnect: options.reconnect ?? {},
    onStatus: options.onStatus,
    timeoutMs: options.timeoutMs,
    fetch: options.fetch,
    headers: options.headers,
    schemes: ['http', 'https'],
    statusFromRequests: settings.statusFromRequests,
  });
}

/** Longest wait the server allows in one long poll (`?wait=`). */
const MAX_WAIT_MS = 300_000;
const DEFAULT_MAX_RECONNECTS = 8;

/**
 * Client for the Orchestra REST API. Methods resolve to the response body and reject
 * with an `OrchestraError` carrying the server's error code.
 */
export class Orchestra {
  /** The base URLs, in the order they are tried. */
  readonly urls: readonly string[];
  /** Failover, retries, resumable streams and the connection state. */
  readonly #transport: Transport;
  readonly #timeoutMs: number;
  /** Gathers concurrent submits into batches, unless `batchSubmits` is false. */
  readonly #submits: SubmitBatcher | undefined;

  /** The config center: keys per environment, history, schemas, watch. */
  readonly config: ConfigApi;
  /** Leases: instances and keys bound to one go when it ends. */
  readonly leases: LeasesApi;
  /** The service registry: register, discover, resolve, watch. */
  readonly services: ServicesApi;
  /** Named secrets of the tenant: write-only, so only names, versions and timestamps. */
  readonly secrets: SecretsApi;
  /** The model APIs hosted agents call (OpenAI-compatible and Anthropic). */
  readonly modelProviders: ModelProvidersApi;
  /** What hosted agents used: tokens, cost, model and tool calls, grouped over time. */
  readonly usage: UsageApi;
  /** Tools: register HTTP tools, list, read versions, approve MCP definitions, invoke. */
  readonly tools: ToolsApi;
  /** Tool policies: who may call which tools, with what arguments, how often. */
  readonly toolPolicies: ToolPoliciesApi;
  /** The audited record of every tool call. */
  readonly toolCalls: ToolCallsApi;
  /** Tool calls waiting for an operator's approval: list, read, approve, reject. */
  readonly approvals: ToolApprovalsApi;
  /** MCP servers: register, install from the catalog, follow their status, logs, restart. */
  readonly mcpServers: McpServersApi;
  /** The catalog of installable MCP servers: built-in entries and the tenant's own. */
  readonly mcpCatalog: McpCatalogApi;
  /** Views: virtual MCP servers at `/mcp/{view}` with a chosen set of tools. */
  readonly mcpViews: McpViewsApi;
  /** Workspace templates: what instances start from and how they run. */
  readonly workspaceTemplates: WorkspaceTemplatesApi;
  /** Uploaded bases (tar archives, git bundles) that workspace templates start from. */
  readonly workspaceUploads: WorkspaceUploadsApi;
  /** Instances: sandboxed workspaces, their lifecycle and commands run in them. */
  readonly instances: InstancesApi;

  /** API keys of the caller's tenant (admin role). */
  readonly apiKeys: {
    create(input: CreateApiKeyInput): Promise<ApiKeyWithSecret>;
    list(options?: ListApiKeysOptions): Promise<Page<ApiKey>>;
    /** Every key, page after page. */
    listAll(options?: Omit<ListApiKeysOptions, 'cursor'>): AsyncIterable<ApiKey>;
    get(id: string): Promise<ApiKey>;
    /** Revokes the key; resolves to it with status `revoked`. */
    revoke(id: string): Promise<ApiKey>;
  };

  /** Tenants (admin role; creating needs an admin of the system tenant). */
  readonly tenants: {
    create(input: CreateTenantInput): Promise<CreatedTenant>;
    list(options?: PageOptions): Promise<Page<Tenant>>;
    listAll(options?: Omit<PageOptions, 'cursor'>): AsyncIterable<Tenant>;
    get(id: string): Promise<Tenant>;
    /**
     * Renames a tenant or sets its limits (admins of the system tenant only). Limits not
     * named keep their value; `null` removes one, so the node's setting applies again.
     */
    update(id: string, change: UpdateTenantInput): Promise<Tenant>;
  };

  /**
   * Versioned agent templates of the caller's tenant (reading: admin, operator or viewer;
   * changing: admin or operator). Wherever a method takes `ref`, it is the template's id
   * (`tpl_…`) or its name. A template that does not exist, or belongs to another tenant,
   * rejects with `TEMPLATE_NOT_FOUND` (404).
   */
  readonly templates: {
    /**
     * Creates a template at version 1. Rejects with `TEMPLATE_ALREADY_EXISTS` (409) when the
     * tenant has a template of that name, and with `VALIDATION_FAILED` (400) when a field or
     * one of the JSON Schemas is invalid; `details.fields[].field` names it, such as
     * `body.input_schema`.
     */
    create(input: CreateTemplateInput): Promise<Template>;
    /**
     * The template at the version `latest` points to or, with `version`, at that version
     * (`TEMPLATE_VERSION_NOT_FOUND` when it has no such version). `latest_version` is the
     * value to pass as `ifVersion` to `update`.
     */
    get(ref: string, options?: { version?: number }): Promise<Template>;
    /** One page of templates, in id order, each at the version `latest` points to. */
    list(options?: ListTemplatesOptions): Promise<Page<Template>>;
    /** Every template that matches, page after page. */
    listAll(options?: Omit<ListTemplatesOptions, 'cursor'>): AsyncIterable<Template>;
    /**
     * Replaces the whole definition: creates version `highest_version + 1` and points
     * `latest` at it, even when nothing changed. Fields left out of `definition` go back to
     * their defaults. With `ifVersion` (the `latest_version` you read), rejects with
     * `PRECONDITION_FAILED` (412) instead when someone else has moved `latest` since.
     */
    update(
      ref: string,
      definition: TemplateDefinition,
      options?: { ifVersion?: number },
    ): Promise<Template>;
    /** Deletes the template and all its versions; resolves to undefined. */
    delete(ref: string): Promise<void>;
    /** One page of the template's versions, newest first. */
    versions(ref: string, page?: PageOptions): Promise<Page<TemplateVersionSummary>>;
    /** Every version of the template, newest first, page after page. */
    versionsAll(
      ref: string,
      options?: Omit<PageOptions, 'cursor'>,
    ): AsyncIterable<TemplateVersionSummary>;
    /**
     * Points `latest` at an existing earlier (or later) version; creates no version, so the
     * next update still gets `highest_version + 1`. Rejects with
     * `TEMPLATE_VERSION_NOT_FOUND` when the template has no such version.
     */
    rollback(ref: string, version: number): Promise<Template>;
  };

  /**
   * Tasks of the caller's tenant (reading and streaming: admin, operator or viewer;
   * submitting, cancelling and retrying: admin or operator). A task that does not exist, or
   * belongs to another tenant, rejects with `TASK_NOT_FOUND` (404). Waits are in
   * milliseconds.
   */
  readonly tasks: {
    /**
     * Submits a task; it is stored durably before this resolves. Give a `template`,
     * `capabilities`, or both; neither rejects with `VALIDATION_FAILED` naming
     * `body.template`, and an input that does not match the template's input schema rejects
     * with `VALIDATION_FAILED` naming `body.input`.
     *
     * Without `wait`, resolves to the new task (`queued`). With `wait` (0 to 300000 ms; more
     * rejects with `VALIDATION_FAILED` naming `querystring.wait`), resolves when the task
     * ends or the wait runs out, whichever comes first: check `state` to know which.
     *
     * When `idempotency_key` was used before in this tenant, resolves to that earlier task
     * instead and creates nothing; with `wait`, the server waits for that task the same
     * way, so that retrying a call after a network error behaves like the first one. Use
     * `createDetailed` to tell a replay from a new task.
     */
    create(input: CreateTaskInput, options?: { wait?: number }): Promise<Task>;
    /** `create`, resolving to the task and whether it was an idempotent replay. */
    createDetailed(input: CreateTaskInput, options?: { wait?: number }): Promise<CreateTaskResult>;
    /**
     * Submits several tasks, as if one after another in this order (their ids, and so
     * first-in-first-out dispatch, follow it), in as few requests as the server allows
     * (500 tasks each). Resolves to one outcome per input, in order: the task, or the error
     * `create` would have rejected with for it (its fields named `body.tasks.<i>.…`); one
     * task failing does not stop the others. Rejects only when a whole request fails (no
     * answer, 401, 503…): tasks of earlier requests are stored then, those of later ones
     * are not sent. Give idempotency keys to resubmit safely after such a failure.
     */
    createMany(inputs: CreateTaskInput[]): Promise<CreateTaskOutcome[]>;
    /**
     * The task. With `wait` (0 to 300000 ms), a long poll: answers when the task ends or the
     * wait runs out, with its state at that moment; an ended task answers at once. Use
     * `wait` for longer waits. When `signal` aborts, rejects with its reason.
     */
    get(id: string, options?: { wait?: number; signal?: AbortSignal }): Promise<Task>;
    /** One page of tasks, newest first. */
    list(options?: ListTasksOptions): Promise<Page<Task>>;
    /** Every task that matches, newest first, page after page. */
    listAll(options?: Omit<ListTasksOptions, 'cursor'>): AsyncIterable<Task>;
    /**
     * Long-polls until the task ends (see `isTerminalState`) or `timeoutMs` passes, in as
     * many requests as needed, and resolves to the task as it is then: a task still
     * running when `timeoutMs` runs out resolves too, it does not reject. Without
     * `timeoutMs`, waits until the task ends. When `signal` aborts, rejects with its reason.
     * A task that ended and is retried meanwhile is not waited for again.
     */
    wait(id: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<Task>;
    /**
     * Cancels the task. A queued task ends `cancelled` at once; one that an agent holds
     * stays `assigned` or `running` with `cancel_requested_at` set, until its agent stops.
     * Cancelling a cancelled task resolves to it; any other ended task rejects with
     * `TASK_ALREADY_FINISHED` (409).
     */
    cancel(id: string): Promise<Task>;
    /**
     * Queues a task that ended without success (failed, dead, cancelled, timed out) again,
     * with its attempts, result and error reset. Any other task rejects with
     * `TASK_NOT_RETRYABLE` (409).
     */
    retry(id: string): Promise<Task>;
    /**
     * The task's events after `after`: the retained ones first, then live ones, oldest
     * first. The iteration ends after the task's terminal event (task.succeeded, failed,
     * cancelled, timed_out or dead) when no event follows it, or at once for an ended task
     * with nothing after `after`. A task that runs on keeps the iteration open. An `after`
     * beyond the task's newest event rejects with `VALIDATION_FAILED`.
     *
     * A dropped connection is resumed transparently after the last offset received, with
     * backoff and jitter: the offsets of the events yielded stay consecutive, without
     * duplicates, across reconnections. Only `maxReconnects` failed reconnections in a row
     * are tried; then the iterator rejects with `CONNECTION_FAILED` (or the server's error
     * when it kept answering 429, 502, 503 or 504). The first connection is not retried:
     * `TASK_NOT_FOUND`, a wrong URL or a server that is down reject on the first `next()`.
     *
     * Events that retention removed are announced by one `StreamGap` item; the iteration
     * goes on at its `first_offset`. Leaving the loop early (`break`) closes the
     * connection.
     */
    events(id: string, options?: TaskEventsOptions): AsyncIterable<TaskStreamItem>;
  };

  /**
   * Agents of the caller's tenant: the processes that connected with an `AgentWorker`
   * (reading: admin, operator or viewer; draining and deleting: admin or operator). An
   * agent that does not exist, or belongs to another tenant, rejects with
   * `AGENT_NOT_FOUND` (404).
   */
  /**
   * Realtime topics over REST. To subscribe, use `RealtimeClient`, which recovers after
   * reconnects.
   */
  readonly topics: {
    /** One page of the tenant's user topics, by name. */
    list(options?: PageOptions & { prefix?: string }): Promise<Page<Topic>>;
    /** Stores a message durably and delivers it to every subscriber. */
    publish(
      topic: string,
      data: unknown,
      options?: { event?: string },
    ): Promise<{ topic: string; epoch: string; offset: number }>;
    /**
     * Retained messages after an offset, or the last N, oldest first: at most `limit` and
     * about the server's ORCHESTRA_RESPONSE_MAX_BYTES; `next_after` (when not null) is the
     * `after` that gets the rest.
     */
    history(
      topic: string,
      query?: { after?: number; last?: number; limit?: number },
    ): Promise<TopicHistory>;
    /** Members present on the topic, on every node. */
    presence(topic: string): Promise<PresenceMember[]>;
    /** Deletes a user topic with its history; a new one of the name gets a new epoch. */
    delete(topic: string): Promise<void>;
    /** A short-lived token that grants a client these topics (and nothing else). */
    createToken(input: RealtimeTokenInput): Promise<RealtimeToken>;
  };

  readonly agents: {
    /**
     * One page of agents, in id order. `status` keeps agents in any of the statuses
     * given; `capability` keeps agents that offer it.
     */
    list(options?: ListAgentsOptions): Promise<Page<Agent>>;
    /** Every agent that matches, in id order, page after page. */
    listAll(options?: Omit<ListAgentsOptions, 'cursor'>): AsyncIterable<Agent>;
    /** The agent, with its status, load and the ids of the tasks it holds. */
    get(id: string): Promise<Agent>;
    /**
     * Asks a connected agent to drain: it finishes the tasks it holds and is given no new
     * ones; it stays connected until it disconnects itself. Resolves to the agent, now
     * `draining`. An agent that is not connected rejects with `AGENT_NOT_CONNECTED` (409).
     */
    drain(id: string): Promise<Agent>;
    /**
     * Forgets an agent that is not connected and holds no tasks; resolves to undefined.
     * One that is connected, or still holds tasks, rejects with `AGENT_CONNECTED` (409):
     * drain it and wait until it disconnects. An agent that connects again later is
     * recorded anew.
     */
    delete(id: string): Promise<void>;
  };

  readonly sessions: {
    /**
     * Creates a session. Submit tasks with its id (`session_id`) to run them in order and
     * collect their history in one stream.
     */
    create(input?: CreateSessionInput): Promise<Session>;
    /** One page of sessions, newest first. */
    list(options?: ListSessionsOptions): Promise<Page<Session>>;
    /** Every session that matches, newest first, page after page. */
    listAll(options?: Omit<ListSessionsOptions, 'cursor'>): AsyncIterable<Session>;
    /** The session, with how many tasks it has and which are unfinished. */
    get(id: string): Promise<Session>;
    /**
     * Deletes the session with its tasks and their histories. Rejects with `SESSION_BUSY`
     * (409) while one of its tasks is unfinished.
     */
    delete(id: string): Promise<void>;
    /**
     * The session's history: `session.created`, then every event of every task in it (each
     * with `data.task_id`), in order; then live events until `signal` aborts, unless
     * `follow` is false. Resumes by itself after a dropped connection, without gaps or
     * duplicates; a `stream.gap` item says that retention removed events.
     */
    events(id: string, options?: SessionEventsOptions): AsyncIterable<SessionStreamItem>;
  };

  /**
   * `transport` is for the SDK's own clients that build on this one (`ConfigClient`,
   * `ServiceClient`); users leave it out.
   */
  constructor(options: OrchestraOptions, transport?: Transport) {
    this.#transport = transport ?? restTransport(options, { statusFromRequests: true });
    this.urls = this.#transport.urls;
    this.#timeoutMs = this.#transport.timeoutMs;
    if (options.batchSubmits !== false) {
      this.#submits = new SubmitBatcher(
        (input) => this.#createOne(input, undefined),
        (inputs) => this.#createBatch(inputs),
      );
    }

    this.config = new ConfigApi(this);
    this.leases = new LeasesApi(this);
    this.services = new ServicesApi(this);
    this.secrets = new SecretsApi(this);
    this.modelProviders = new ModelProvidersApi(this);
    this.usage = new UsageApi(this);
    this.workspaceTemplates = new WorkspaceTemplatesApi(this);
    this.workspaceUploads = new WorkspaceUploadsApi(this);
    this.instances = new InstancesApi(this);
    this.tools = new ToolsApi(this);
    this.toolPolicies = new ToolPoliciesApi(this);
    this.toolCalls = new ToolCallsApi(this);
    this.approvals = new ToolApprovalsApi(this);
    this.mcpServers = new McpServersApi(this);
    this.mcpCatalog = new McpCatalogApi(this);
    this.mcpViews = new McpViewsApi(this);
    this.apiKeys = {
      create: (input) =>
        this.request('POST', '/v1/api-keys', {
          body: {
            ...input,
            ...(input.expires_at instanceof Date
              ? { expires_at: input.expires_at.toISOString() }
              : {}),
          },
        }),
      list: (options = {}) => this.request('GET', '/v1/api-keys', { query: { ...options } }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.apiKeys.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', `/v1/api-keys/${encodeURIComponent(id)}`),
      revoke: (id) => this.request('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`),
    };
    this.tenants = {
      create: (input) => this.request('POST', '/v1/tenants', { body: input }),
      list: (options = {}) => this.request('GET', '/v1/tenants', { query: { ...options } }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.tenants.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', `/v1/tenants/${encodeURIComponent(id)}`),
      update: (id, change) =>
        this.request('PATCH', `/v1/tenants/${encodeURIComponent(id)}`, { body: change }),
    };
    const template = (ref: string) => `/v1/templates/${encodeURIComponent(ref)}`;
    this.templates = {
      create: (input) => this.request('POST', '/v1/templates', { body: input }),
      get: (ref, options = {}) =>
        this.request(
          'GET',
          options.version === undefined
            ? template(ref)
            : `${template(ref)}/versions/${encodeURIComponent(options.version)}`,
        ),
      list: ({ labels, ...options } = {}) =>
        this.request('GET', '/v1/templates', {
          query: {
            ...options,
            label: labelQuery(labels),
          },
        }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.templates.list({ ...options, ...cursor })),
      update: (ref, definition, options = {}) =>
        this.request('PUT', template(ref), {
          body: definition,
          ...(options.ifVersion !== undefined
            ? { headers: { 'if-match': `"${options.ifVersion}"` } }
            : {}),
        }),
      delete: (ref) => this.request('DELETE', template(ref)),
      versions: (ref, page = {}) =>
        this.request('GET', `${template(ref)}/versions`, { query: { ...page } }),
      versionsAll: (ref, options = {}) =>
        this.#paginate((cursor) => this.templates.versions(ref, { ...options, ...cursor })),
      rollback: (ref, version) =>
        this.request('POST', `${template(ref)}/rollback`, { body: { version } }),
    };
    const task = (id: string) => `/v1/tasks/${encodeURIComponent(id)}`;
    this.tasks = {
      create: async (input, options = {}) => (await this.tasks.createDetailed(input, options)).task,
      createDetailed: async (input, options = {}) => {
        if (this.#submits !== undefined && options.wait === undefined) {
          return this.#submits.submit(input);
        }
        return this.#createOne(input, options.wait);
      },
      createMany: async (inputs) => {
        const outcomes: CreateTaskOutcome[] = [];
        for (let i = 0; i < inputs.length; i += MAX_BATCH_TASKS) {
          outcomes.push(...(await this.#createBatch(inputs.slice(i, i + MAX_BATCH_TASKS))));
        }
        return outcomes;
      },
      get: (id, options = {}) =>
        this.request('GET', task(id), {
          query: { wait: waitQuery(options.wait) },
          timeoutMs: this.#timeoutMs + (options.wait ?? 0),
          signal: options.signal,
        }),
      list: ({ labels, state, created_after, created_before, ...options } = {}) =>
        this.request('GET', '/v1/tasks', {
          query: {
            ...options,
            state: state === undefined ? [] : Array.isArray(state) ? state : [state],
            label: labelQuery(labels),
            created_after:
              created_after instanceof Date ? created_after.toISOString() : created_after,
            created_before:
              created_before instanceof Date ? created_before.toISOString() : created_before,
          },
        }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.tasks.list({ ...options, ...cursor })),
      wait: async (id, options = {}) => {
        const timeoutMs = options.timeoutMs ?? Number.POSITIVE_INFINITY;
        if (Number.isNaN(timeoutMs) || timeoutMs < 0) {
          throw new RangeError(`timeoutMs must be 0 or more, got ${timeoutMs}`);
        }
        const until = Date.now() + timeoutMs;
        for (;;) {
          const wait = Math.min(MAX_WAIT_MS, Math.max(0, until - Date.now()));
          const current = await this.tasks.get(id, {
            wait,
            ...(options.signal ? { signal: options.signal } : {}),
          });
          if (isTerminalState(current.state) || Date.now() >= until) return current;
        }
      },
      cancel: (id) => this.request('POST', `${task(id)}/cancel`),
      retry: (id) => this.request('POST', `${task(id)}/retry`),
      events: (id, options = {}) => this.#taskEvents(id, options),
    };
    const session = (id: string) => `/v1/sessions/${encodeURIComponent(id)}`;
    this.sessions = {
      create: (input = {}) => this.request('POST', '/v1/sessions', { body: input }),
      list: ({ labels, ...options } = {}) =>
        this.request('GET', '/v1/sessions', {
          query: { ...options, label: labelQuery(labels) },
        }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.sessions.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', session(id)),
      delete: (id) => this.request('DELETE', session(id)),
      events: (id, options = {}) => this.#sessionEvents(id, options),
    };
    const topic = (name: string) => `/v1/topics/${encodeURIComponent(name)}`;
    this.topics = {
      list: (options = {}) => this.request('GET', '/v1/topics', { query: { ...options } }),
      publish: (name, data, options = {}) =>
        this.request('POST', `${topic(name)}/messages`, {
          body: { data: data ?? null, ...(options.event ? { event: options.event } : {}) },
        }),
      history: (name, query = {}) =>
        this.request('GET', `${topic(name)}/messages`, { query: { ...query } }),
      presence: async (name) =>
        (await this.request<{ members: PresenceMember[] }>('GET', `${topic(name)}/presence`))
          .members,
      delete: (name) => this.request('DELETE', topic(name)),
      createToken: (input) => this.request('POST', '/v1/realtime/tokens', { body: input }),
    };
    const agent = (id: string) => `/v1/agents/${encodeURIComponent(id)}`;
    this.agents = {
      list: ({ status, ...options } = {}) =>
        this.request('GET', '/v1/agents', {
          query: {
            ...options,
            status: status === undefined ? [] : Array.isArray(status) ? status : [status],
          },
        }),
      listAll: (options = {}) =>
        this.#paginate((cursor) => this.agents.list({ ...options, ...cursor })),
      get: (id) => this.request('GET', agent(id)),
      drain: (id) => this.request('POST', `${agent(id)}/drain`),
      delete: (id) => this.request('DELETE', agent(id)),
    };
  }

  /**
   * The tenant's agents by status and tasks by state now, and tasks submitted and finished
   * per minute, with their latency, over the last `minutes` (admin, operator or viewer).
   */
  stats(options: StatsOptions = {}): Promise<Stats> {
    return this.request('GET', '/v1/stats', { query: { ...options } });
  }

  /** The tenant, role and credential the client authenticates as. */
  whoami(): Promise<WhoAmI> {
    return this.request('GET', '/v1/whoami');
  }

  /** Liveness probe; resolves when the server process answers. */
  health(): Promise<{ status: 'ok' }> {
    return this.request('GET', '/healthz');
  }

  /**
   * Readiness probe of the node that answers; rejects with `STORAGE_UNAVAILABLE` when the
   * relational store does not answer.
   */
  ready(): Promise<Readiness> {
    return this.request('GET', '/readyz');
  }

  /** The cluster's nodes (admins of the system tenant only; others get `PERMISSION_DENIED`). */
  readonly cluster = {
    nodes: async (): Promise<ClusterNode[]> =>
      (await this.request<{ items: ClusterNode[] }>('GET', '/v1/cluster/nodes')).items,
  };

  async #createOne(input: CreateTaskInput, wait: number | undefined): Promise<CreateTaskResult> {
    const answer = await this.exchange<Task>('POST', '/v1/tasks', {
      body: input,
      query: { wait: waitQuery(wait) },
      timeoutMs: this.#timeoutMs + (wait ?? 0),
    });
    return { task: answer.body, replayed: answer.headers.get('idempotent-replayed') === 'true' };
  }

  /** One `POST /v1/tasks/batch` (at most `MAX_BATCH_TASKS` inputs; none sends nothing). */
  async #createBatch(inputs: CreateTaskInput[]): Promise<CreateTaskOutcome[]> {
    if (inputs.length === 0) return [];
    const answer = await this.exchange<{ items: BatchItem[] }>('POST', '/v1/tasks/batch', {
      body: { tasks: inputs },
    });
    const requestId = answer.headers.get('x-request-id') ?? undefined;
    return inputs.map((_, i): CreateTaskOutcome => {
      const item = answer.body.items[i];
      if (item?.task !== undefined) {
        return { ok: true, task: item.task, replayed: item.status === 200 };
      }
      return {
        ok: false,
        error:
          item?.error === undefined
            ? new OrchestraError(
                'INVALID_RESPONSE',
                `POST /v1/tasks/batch answered without a task or an error for item ${i}`,
                { status: answer.status, requestId },
              )
            : new OrchestraError(item.error.code, item.error.message, {
                status: item.status,
                requestId,
                details: item.error.details,
              }),
      };
    });
  }

  /**
   * Sends one request and parses the JSON answer; resolves to undefined when the answer has
   * no body (204). Public so that routes without a typed method yet can still be called
   * with the client's credentials and error handling. `query` skips undefined values and
   * repeats a parameter for each item of an array; `headers` add to (and override) the
   * client's `headers` for this request only. `timeoutMs` replaces the client's per-request
   * timeout for this request; when `signal` aborts, the call rejects with its reason.
   */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return this.#transport.request<T>(method, path, options);
  }

  /** `request`, also resolving to the status and headers of the answer (an ETag, a range). */
  exchange<T>(
    method: string,
    path: string,
    options: RequestOptions,
  ): Promise<{ status: number; headers: Headers; body: T }> {
    return this.#transport.exchange<T>(method, path, options);
  }

  /**
   * The credential requests carry now (the API key, or the token provider's current token):
   * for a protocol that sends it in a frame (terminal attach).
   */
  currentCredential(): Promise<string | undefined> {
    return this.#transport.credential();
  }

  /** The per-request timeout, in ms. */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** The base URL requests go to now. */
  get url(): string {
    return this.#transport.url;
  }

  #taskEvents(id: string, options: TaskEventsOptions): AsyncIterable<TaskStreamItem> {
    const path = `/v1/tasks/${encodeURIComponent(id)}/events`;
    const { signal } = options;
    let cursor = options.after ?? 0;
    let endedWithTerminal = false;
    return this.#transport.resume<TaskStreamItem>({
      what: `the event stream of task "${id}"`,
      signal,
      maxReconnects: options.maxReconnects ?? DEFAULT_MAX_RECONNECTS,
      // A task that does not exist (or a server that cannot be reached) fails at once.
      failFirst: true,
      position: () => `offset ${cursor}`,
      connect: (onOpen) => {
        let status = 0;
        return this.#items(
          path,
          { after: cursor },
          signal,
          (s) => {
            status = s;
            onOpen(s);
            // The task is over and nothing is left after `cursor`.
            if (status === 204) endedWithTerminal = true;
          },
          (item) => {
            if ('offset' in item) {
              if (item.offset <= cursor) return false; // delivered before a reconnection
              cursor = item.offset;
              endedWithTerminal = TERMINAL_EVENT_TYPES.has(item.type);
            } else {
              cursor = Math.max(cursor, item.first_offset - 1);
              endedWithTerminal = false;
            }
            return true;
          },
        );
      },
      ended: async (received) => {
        // NDJSON has no end marker, so a server stopping mid-stream (shutdown, an error)
        // also ends cleanly: resume unless the task has really ended.
        if (endedWithTerminal) return { done: true };
        if (received > 0) return { again: true };
        // A failure here counts as one of the stream's: resumed after, or thrown when final.
        const current = await this.tasks.get(id, signal ? { signal } : {});
        if (isTerminalState(current.state)) return { done: true };
        return {
          problem: new OrchestraError(
            'CONNECTION_FAILED',
            `The event stream of task "${id}" ended before the task did`,
            { status: 0 },
          ),
        };
      },
    });
  }

  /**
   * Follows a session's stream: on a dropped connection (or a server that went away),
   * reconnects after the last offset received, with backoff.
   */
  #sessionEvents(id: string, options: SessionEventsOptions): AsyncIterable<SessionStreamItem> {
    const path = `/v1/sessions/${encodeURIComponent(id)}/events`;
    const follow = options.follow ?? true;
    let cursor = options.after ?? 0;
    const stream: ResumableStream<TaskStreamItem> = {
      what: `the event stream of session "${id}"`,
      signal: options.signal,
      maxReconnects: options.maxReconnects ?? DEFAULT_MAX_RECONNECTS,
      position: () => `offset ${cursor}`,
      connect: (onOpen) =>
        this.#items(path, { after: cursor, follow }, options.signal, onOpen, (item) => {
          if ('offset' in item) {
            if (item.offset <= cursor) return false;
            cursor = item.offset;
          } else {
            cursor = Math.max(cursor, item.first_offset - 1);
          }
          return true;
        }),
      // A followed stream ends only when the server goes away: resume. Unfollowed, it ends
      // once caught up.
      ended: async () =>
        follow
          ? {
              problem: new OrchestraError(
                'CONNECTION_FAILED',
                `The stream of session "${id}" ended`,
                { status: 0 },
              ),
            }
          : { done: true },
    };
    // A session's events are the server's SessionEvent: data is always an object.
    return this.#transport.resume(stream) as AsyncIterable<SessionStreamItem>;
  }

  /**
   * One connection to an event stream: yields the items `keep` keeps (it moves the
   * caller's cursor), checked to carry an offset, and closes the stream when the reader
   * stops early.
   */
  async *#items(
    path: string,
    query: Query,
    signal: AbortSignal | undefined,
    onOpen: (status: number) => void,
    keep: (item: TaskStreamItem) => boolean,
  ): AsyncIterable<TaskStreamItem> {
    for await (const raw of this.#transport.streamJson(path, query, { signal, onOpen })) {
      const item = checkItem(raw, path);
      if (keep(item)) yield item;
    }
  }

  /**
   * One connection to an NDJSON stream (config and service watches): yields each line
   * parsed as JSON until the stream ends, and closes it when the reader stops early.
   * `onOpen` runs once the response headers arrive; an error status rejects with the
   * server's error. Resuming is the caller's business.
   */
  streamJson(
    path: string,
    query: Query,
    options: {
      signal?: AbortSignal | undefined;
      onOpen?: (status: number) => void;
      body?: unknown;
    } = {},
  ): AsyncIterable<unknown> {
    return this.#transport.streamJson(path, query, options);
  }

  /** @internal Follows a stream across connections; see `Transport.resume`. */
  resume<T>(stream: ResumableStream<T>): AsyncIterable<T> {
    return this.#transport.resume(stream);
  }

  #paginate<T>(fetchPage: (cursor: { cursor?: string }) => Promise<Page<T>>): AsyncIterable<T> {
    return paginate(fetchPage);
  }
}

/** The `?wait=` value for a wait in milliseconds: whole milliseconds, rounded up. */
function waitQuery(ms: number | undefined): string | undefined {
  if (ms === undefined) return undefined;
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`wait must be a number of milliseconds (0 or more), got ${ms}`);
  }
  return `${Math.ceil(ms)}ms`;
}

function checkItem(item: unknown, path: string): TaskStreamItem {
  const candidate = item as Partial<TaskEvent & StreamGap> | null;
  const valid =
    typeof candidate?.type === 'string' &&
    (typeof candidate.offset === 'number' || typeof candidate.first_offset === 'number');
  if (!valid) {
    throw new OrchestraError('INVALID_RESPONSE', `GET ${path} streamed an item without an offset`, {
      status: 200,
    });
  }
  return item as TaskStreamItem;
}

/** A topic of the tenant; `epoch` changes when it is deleted and created again. */
export type Topic = WireTopic;

/**
 * A page of a topic's history. `first_offset` is the oldest retained offset
 * (`last_offset + 1` when none is); `next_after`, when messages up to `last_offset` were
 * left out (by `limit` or the server's byte budget), is the `after` for the rest.
 */
export type TopicHistory = Omit<WireTopicHistory, 'messages'> & { messages: TopicMessage[] };

/** What a realtime token grants: topics or patterns (1 to 20), publish, presence; ttl 1–86400 s. */
export type RealtimeTokenInput = CreateRealtimeToken;

/** A realtime token as issued: the secret is shown this once. */
export type RealtimeToken = WireRealtimeToken;
