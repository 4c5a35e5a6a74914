import Type, { type Static } from 'typebox';
import { LabelSelectors, Labels, NullableTimestamp, Timestamp } from './common.ts';
import { INSTANCE_STATES } from './states.ts';

// Workspaces (issue 22): workspace templates (`/v1/workspace-templates`) say what an
// instance starts from and how it runs; instances (`/v1/instances`) are sandboxed
// directories with their processes, for coding agents and their users.

export const WorkspaceTemplateName = Type.String({
  pattern: '^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$',
  description:
    'Lowercase letters, digits, "-" and single "_"; 1 to 63 characters; unique in the tenant.',
});

export const WorkspaceTemplateRef = Type.Object({
  template: Type.String({
    maxLength: 64,
    description: 'The workspace template’s name or id (`wst_…`).',
  }),
});

export const INSTANCE_DRIVERS = ['process', 'docker'] as const;
export const InstanceDriver = Type.Enum([...INSTANCE_DRIVERS], {
  description:
    '`process` (the default): a directory on the node, its processes in a bubblewrap sandbox. `docker`: the same directory, bind-mounted into a container of the template’s `image` on the node’s Docker engine (ORCHESTRA_DOCKER_HOST).',
});

/** An image reference as Docker takes it: `name[:tag]` or `name@sha256:…`. */
export const ContainerImage = Type.String({
  minLength: 1,
  maxLength: 255,
  pattern: '^[a-z0-9][a-z0-9._/:@-]*$',
  description:
    'The container image of the `docker` driver (required there, refused elsewhere). It must already be on the node’s Docker engine (`docker pull`, `docker load` or `docker import`): Orchestra never pulls.',
});
export type InstanceDriver = Static<typeof InstanceDriver>;

const ServerPath = Type.String({
  minLength: 1,
  maxLength: 4096,
  pattern: '^/',
  description:
    'An absolute path on the server’s machine, under one of ORCHESTRA_INSTANCE_SOURCE_ROOTS.',
});

/** What a new instance's workspace holds at first. */
export const WorkspaceBase = Type.Union(
  [
    Type.Object(
      { type: Type.Literal('empty') },
      { additionalProperties: false, description: 'An empty directory.' },
    ),
    Type.Object(
      { type: Type.Literal('directory'), path: ServerPath },
      {
        additionalProperties: false,
        description: 'A copy of a directory on the server’s machine.',
      },
    ),
    Type.Object(
      {
        type: Type.Literal('git'),
        path: ServerPath,
        ref: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 255,
            pattern: '^[A-Za-z0-9._/-]+$',
            description: 'A branch or tag to check out; the repository’s HEAD without one.',
          }),
        ),
      },
      {
        additionalProperties: false,
        description: 'A clone of a git repository on the server’s machine.',
      },
    ),
    Type.Object(
      {
        type: Type.Literal('upload'),
        upload: Type.String({
          pattern: '^wup_[0-9a-f]{1,60}$',
          description: 'An upload of the tenant (`POST /v1/workspace-uploads`).',
        }),
        ref: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 255,
            pattern: '^[A-Za-z0-9._/-]+$',
            description: 'For a git bundle: a branch or tag to check out; its HEAD without one.',
          }),
        ),
      },
      {
        additionalProperties: false,
        description:
          'An uploaded tar archive (extracted in the instance’s sandbox) or git bundle (cloned).',
      },
    ),
  ],
  { description: 'What a new instance’s workspace holds at first.' },
);
export type WorkspaceBase = Static<typeof WorkspaceBase>;

export const WORKSPACE_UPLOAD_FORMATS = ['tar', 'git_bundle'] as const;

/** A tar archive or git bundle stored for workspace templates to start instances from. */
export const WorkspaceUpload = Type.Object(
  {
    /** `wup_…` */
    id: Type.String(),
    name: Type.String(),
    /** What its first bytes say it is: a tar archive (plain or compressed) or a git bundle. */
    format: Type.Enum([...WORKSPACE_UPLOAD_FORMATS]),
    size: Type.Integer({ description: 'Bytes, as uploaded.' }),
    sha256: Type.String(),
    created_by: Type.String(),
    created_at: Timestamp,
  },
  { $id: 'WorkspaceUpload' },
);
export type WorkspaceUpload = Static<typeof WorkspaceUpload>;

export const WorkspaceUploadRef = Type.Object({
  upload: Type.String({ maxLength: 64, description: 'The upload’s id (`wup_…`).' }),
});

const EnvName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' });

export const DEFAULT_INSTANCE_RESOURCES = {
  cpus: 1,
  memory_bytes: 2 * 1024 ** 3,
  storage_bytes: 10 * 1024 ** 3,
  processes: 1024,
} as const;

/** What an instance may use: counted against the tenant's quotas, limited where it can be. */
export const InstanceResources = Type.Object(
  {
    cpus: Type.Optional(
      Type.Number({
        minimum: 0.01,
        maximum: 256,
        description: 'CPUs (fractions allowed); 1 by default.',
      }),
    ),
    memory_bytes: Type.Optional(
      Type.Integer({
        minimum: 16 * 1024 ** 2,
        maximum: 1024 ** 4,
        description: 'Memory; 2 GiB by default.',
      }),
    ),
    storage_bytes: Type.Optional(
      Type.Integer({
        minimum: 1024 ** 2,
        maximum: 100 * 1024 ** 4,
        description: 'Disk for its files; 10 GiB by default.',
      }),
    ),
    processes: Type.Optional(
      Type.Integer({
        minimum: 8,
        maximum: 1_000_000,
        description: 'Most processes and threads at once; 1024 by default.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type InstanceResources = Static<typeof InstanceResources>;

const FilledResources = Type.Object({
  cpus: Type.Number(),
  memory_bytes: Type.Integer(),
  storage_bytes: Type.Integer(),
  processes: Type.Integer(),
});

/** How an instance's processes are limited on its node. */
export const AppliedLimits = Type.Object({
  mechanism: Type.Enum(['cgroup-v2', 'cgroup-v1', 'prlimit', 'none', 'docker'], {
    description:
      'Process driver: cgroups where the node allows the server to make them, else prlimit (memory only), else none. Docker driver: `docker`, the container’s own limits.',
  }),
  enforced: Type.Array(Type.Enum(['cpu', 'memory', 'processes'])),
  note: Type.Union([Type.String(), Type.Null()], {
    description: 'Why nothing stronger applies, when it does not.',
  }),
});

/** A year: the longest idle timeout or TTL. */
export const MAX_INSTANCE_LIFETIME_MS = 366 * 24 * 3_600_000;

const IdleTimeout = Type.Union(
  [Type.Integer({ minimum: 1000, maximum: MAX_INSTANCE_LIFETIME_MS }), Type.Null()],
  {
    description:
      'A running instance with no activity for this long (no exec, terminal, file or port use) is stopped; null (the default): never.',
  },
);
const Ttl = Type.Union(
  [Type.Integer({ minimum: 1000, maximum: MAX_INSTANCE_LIFETIME_MS }), Type.Null()],
  {
    description:
      'An instance is deleted this long after it was created, whatever its state (stops and starts do not reset it); null (the default): never.',
  },
);

export const OnNodeLoss = Type.Enum(['keep', 'restart_elsewhere'], {
  description:
    'When the node that runs an instance is lost (its lease ends), the instance becomes `lost`. `keep` (the default): it stays there, and starts again from its files if that node comes back. `restart_elsewhere`: it starts on another live node from the template’s base; what the process and docker drivers kept in its files stayed on the lost node.',
});

/** The most ports a template may declare. */
export const MAX_INSTANCE_PORTS = 20;

export const PortName = Type.String({
  pattern: '^[a-z][a-z0-9-]{0,31}$',
  description: 'Its name: the environment gets `PORT_<NAME>` (upper case, `-` as `_`).',
});

export const WorkspaceTemplateSpec = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    driver: Type.Optional(InstanceDriver),
    image: Type.Optional(ContainerImage),
    base: Type.Optional(WorkspaceBase),
    env: Type.Optional(
      Type.Record(EnvName, Type.String({ maxLength: 8192 }), {
        maxProperties: 100,
        // Without this, names that miss the pattern are simply not checked.
        additionalProperties: false,
        description: 'Environment variables of every process in the sandbox.',
      }),
    ),
    /** The service the instance runs while it is `running` (a code server…), as argv. */
    startup: Type.Optional(
      Type.Union([
        Type.Object(
          {
            command: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), {
              minItems: 1,
              maxItems: 100,
              description:
                'Program and arguments, run in the workspace directory (no shell: give `["sh", "-c", "…"]` for one).',
            }),
          },
          { additionalProperties: false },
        ),
        Type.Null(),
      ]),
    ),
    network: Type.Optional(
      Type.Enum(['none', 'host'], {
        description:
          '`none` (the default): a network namespace of its own with only loopback. `host`: the node’s network.',
      }),
    ),
    idle_timeout_ms: Type.Optional(IdleTimeout),
    ttl_ms: Type.Optional(Ttl),
    on_node_loss: Type.Optional(OnNodeLoss),
    resources: Type.Optional(InstanceResources),
    ports: Type.Optional(
      Type.Array(Type.Object({ name: PortName }, { additionalProperties: false }), {
        maxItems: MAX_INSTANCE_PORTS,
        description:
          'Ports its processes listen on: each instance gets a number for each from ORCHESTRA_INSTANCE_PORT_RANGE, unique in the cluster, as `PORT_<NAME>` (and the first as `PORT`), reachable at `/v1/instances/{id}/ports/{port}/…`.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type WorkspaceTemplateSpec = Static<typeof WorkspaceTemplateSpec>;

export const CreateWorkspaceTemplate = Type.Object(
  { name: WorkspaceTemplateName, ...WorkspaceTemplateSpec.properties },
  { additionalProperties: false },
);
export type CreateWorkspaceTemplate = Static<typeof CreateWorkspaceTemplate>;

export const WorkspaceTemplate = Type.Object(
  {
    /** `wst_…` */
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    /** 1 on create; each replacement adds one. Instances keep the version they started from. */
    version: Type.Integer(),
    description: Type.String(),
    driver: InstanceDriver,
    image: Type.Union([Type.String(), Type.Null()]),
    base: WorkspaceBase,
    env: Type.Record(Type.String(), Type.String()),
    startup: Type.Union([Type.Object({ command: Type.Array(Type.String()) }), Type.Null()]),
    network: Type.Enum(['none', 'host']),
    idle_timeout_ms: Type.Union([Type.Integer(), Type.Null()]),
    ttl_ms: Type.Union([Type.Integer(), Type.Null()]),
    on_node_loss: OnNodeLoss,
    resources: FilledResources,
    ports: Type.Array(Type.Object({ name: Type.String() })),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'WorkspaceTemplate' },
);
export type WorkspaceTemplate = Static<typeof WorkspaceTemplate>;

export const InstanceState = Type.Enum([...INSTANCE_STATES], {
  description:
    'creating → starting → running → stopping → stopped; `failed` when a step could not be done or its service ended with an error, `lost` when its node went away. `state_reason` says why.',
});
export type InstanceState = Static<typeof InstanceState>;

export const CreateInstance = Type.Object(
  {
    template: Type.String({ maxLength: 64, description: 'A workspace template’s name or id.' }),
    name: Type.Optional(
      Type.String({ minLength: 1, maxLength: 100, description: 'Shown in lists; not unique.' }),
    ),
    labels: Type.Optional(Labels),
    start: Type.Optional(
      Type.Boolean({
        description: 'Start it once created (the default); false leaves it stopped.',
      }),
    ),
    idle_timeout_ms: Type.Optional(IdleTimeout),
    ttl_ms: Type.Optional(Ttl),
  },
  { additionalProperties: false },
);
export type CreateInstance = Static<typeof CreateInstance>;

export const MAX_BATCH_INSTANCES = 100;
export const CreateInstanceBatch = Type.Object(
  {
    instances: Type.Array(CreateInstance, { minItems: 1, maxItems: MAX_BATCH_INSTANCES }),
  },
  { additionalProperties: false },
);

export const UpdateInstance = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    labels: Type.Optional(Labels),
    idle_timeout_ms: Type.Optional(IdleTimeout),
    expires_at: Type.Optional(
      Type.Union([Type.String({ format: 'date-time', maxLength: 40 }), Type.Null()], {
        description:
          'When it is deleted: a later time to keep it longer, null to keep it until deleted.',
      }),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type UpdateInstance = Static<typeof UpdateInstance>;

export const Instance = Type.Object(
  {
    /** `ins_…`; ids are time-ordered. */
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    template: Type.Object({ id: Type.String(), name: Type.String(), version: Type.Integer() }),
    driver: InstanceDriver,
    state: InstanceState,
    /** Why it is in its state, such as "stopped by key_…" or "the startup command exited with code 1". */
    state_reason: Type.String({ description: 'Why it is in its state.' }),
    labels: Type.Record(Type.String(), Type.String()),
    /** The node that runs it (ORCHESTRA_INSTANCE_ID). */
    node_id: Type.String(),
    /** The startup command's exit code once it ended; null otherwise. */
    exit_code: Type.Union([Type.Integer(), Type.Null()]),
    created_by: Type.String(),
    created_at: Timestamp,
    updated_at: Timestamp,
    started_at: NullableTimestamp,
    stopped_at: NullableTimestamp,
    /** Stopped after this long without activity while running; null: never. */
    idle_timeout_ms: Type.Union([Type.Integer(), Type.Null()]),
    /** The last exec, terminal, file or port activity (or start). */
    last_active_at: NullableTimestamp,
    /** When it is deleted (its TTL); null: never. */
    expires_at: NullableTimestamp,
    /** What it may use, from its template (counted against the tenant's quotas). */
    resources: FilledResources,
    /** How its node limits those resources; null when asked of another node. */
    resource_limits: Type.Union([AppliedLimits, Type.Null()]),
    /** The numbers its template's ports got, unique in the cluster. */
    ports: Type.Array(Type.Object({ name: Type.String(), port: Type.Integer() })),
  },
  { $id: 'Instance' },
);
export type Instance = Static<typeof Instance>;

export const ListInstancesQuery = {
  state: Type.Optional(
    Type.Array(InstanceState, { maxItems: 7, description: 'Only instances in these states.' }),
  ),
  template: Type.Optional(Type.String({ maxLength: 64, description: 'A template’s name or id.' })),
  label: Type.Optional(LabelSelectors),
};

export const InstanceRef = Type.Object({
  instance: Type.String({ maxLength: 64, description: 'The instance’s id (`ins_…`).' }),
});

export const MAX_EXEC_TIMEOUT_MS = 3_600_000;
export const MAX_EXEC_STDIN_BYTES = 1024 * 1024;

/** Where a command or terminal starts, relative to the workspace. */
export const WorkingDirectory = Type.String({
  maxLength: 4096,
  description:
    'The working directory, relative to the workspace (the default); it must stay inside it.',
});

/** Variables a command or terminal gets besides the template's. */
export const commandEnv = (description: string) =>
  Type.Record(
    Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }),
    Type.String({ maxLength: 8192 }),
    { maxProperties: 100, additionalProperties: false, description },
  );

/** A command to run in a running instance (`POST /v1/instances/{id}/exec`). */
export const ExecCommand = Type.Object(
  {
    command: Type.Array(Type.String({ minLength: 1, maxLength: 65_536 }), {
      minItems: 1,
      maxItems: 1000,
      description: 'Program and arguments (no shell: give `["sh", "-c", "…"]` for one).',
    }),
    cwd: Type.Optional(WorkingDirectory),
    env: Type.Optional(commandEnv('Added to the template’s environment for this command.')),
    stdin: Type.Optional(
      Type.String({
        maxLength: MAX_EXEC_STDIN_BYTES,
        description: 'Written to its standard input.',
      }),
    ),
    timeout_ms: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_EXEC_TIMEOUT_MS,
        description: 'Killed (SIGKILL) after this long; 60000 by default.',
      }),
    ),
    stream: Type.Optional(
      Type.Boolean({
        description:
          'Stream the output as it comes (SSE with `Accept: text/event-stream`, else NDJSON) instead of answering once it ended.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ExecCommand = Static<typeof ExecCommand>;

/** How a command ended, with its output (`POST /v1/instances/{id}/exec`). */
export const ExecResult = Type.Object(
  {
    /** `exe_…`: its events stay readable at `/v1/instances/{id}/execs/{exec}/events`. */
    exec_id: Type.String(),
    exit_code: Type.Union([Type.Integer(), Type.Null()]),
    signal: Type.Union([Type.String(), Type.Null()]),
    timed_out: Type.Boolean(),
    cancelled: Type.Boolean(),
    duration_ms: Type.Integer(),
    stdout: Type.String(),
    stderr: Type.String(),
    /** The output was longer than the answer holds (1 MiB each); its events hold more. */
    truncated: Type.Boolean(),
  },
  { $id: 'ExecResult' },
);
export type ExecResult = Static<typeof ExecResult>;

export const ExecRef = Type.Object({
  instance: Type.String({ maxLength: 64 }),
  exec: Type.String({ maxLength: 64, description: 'The command’s id (`exe_…`).' }),
});

/** What an instance uses now (`GET /v1/resources/usage`). */
export const InstanceUsage = Type.Object({
  cpu_seconds: Type.Number(),
  cpu_utilization: Type.Number({
    description: 'CPU time over wall time since it started, per CPU it was given.',
  }),
  memory_bytes: Type.Integer(),
  memory_utilization: Type.Number(),
  processes: Type.Integer(),
  disk_bytes: Type.Integer(),
  storage_utilization: Type.Number(),
});
export type InstanceUsage = Static<typeof InstanceUsage>;

export const NodeUsage = Type.Object({
  node_id: Type.String(),
  cpus: Type.Integer(),
  memory_total_bytes: Type.Integer(),
  memory_free_bytes: Type.Integer(),
  load_average: Type.Array(Type.Number()),
  instances_running: Type.Integer(),
  limits: Type.Union([AppliedLimits, Type.Null()]),
});
export type NodeUsage = Static<typeof NodeUsage>;

export const ResourceUsage = Type.Object(
  {
    node: NodeUsage,
    instances: Type.Array(
      Type.Object({
        instance_id: Type.String(),
        name: Type.String(),
        state: Type.String(),
        node_id: Type.String(),
        resources: FilledResources,
        /** Null for an instance of another node (ask that node). */
        usage: Type.Union([InstanceUsage, Type.Null()]),
      }),
    ),
    /** More instances than one answer holds (500). */
    truncated: Type.Boolean(),
  },
  { $id: 'ResourceUsage' },
);
export type ResourceUsage = Static<typeof ResourceUsage>;
export type UsageItem = ResourceUsage['instances'][number];

export const ResourceRecommendation = Type.Object({
  instance_id: Type.String(),
  kind: Type.Enum(['over_used', 'under_used', 'idle']),
  resource: Type.Enum(['cpu', 'memory', 'storage', 'instance']),
  used: Type.Number(),
  allocated: Type.Number(),
  utilization: Type.Number(),
  message: Type.String(),
});
export type ResourceRecommendation = Static<typeof ResourceRecommendation>;

export const Recommendations = Type.Object(
  {
    recommendations: Type.Array(ResourceRecommendation),
    instances_checked: Type.Integer(),
    generated_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'Recommendations' },
);
export type Recommendations = Static<typeof Recommendations>;

/** A share link of an instance's port: anyone with its URL reaches the port until it expires. */
export const PortShare = Type.Object(
  {
    /** `shr_…` */
    id: Type.String(),
    instance_id: Type.String(),
    port: Type.Integer(),
    /** `/share/<token>/`: the token is shown once, at creation; later reads give null. */
    url: Type.Union([Type.String(), Type.Null()]),
    created_by: Type.String(),
    created_at: Timestamp,
    expires_at: Timestamp,
  },
  { $id: 'PortShare' },
);
export type PortShare = Static<typeof PortShare>;

export const MAX_SHARE_SECONDS = 7 * 24 * 3600;

export const CreatePortShare = Type.Object(
  {
    expires_in_seconds: Type.Optional(
      Type.Integer({
        minimum: 60,
        maximum: MAX_SHARE_SECONDS,
        description: 'How long the link works: 1 hour by default, at most 7 days.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreatePortShare = Static<typeof CreatePortShare>;

export const PortRef = Type.Object({
  instance: Type.String({ maxLength: 64 }),
  port: Type.Integer({
    minimum: 1,
    maximum: 65_535,
    description: 'The port, inside the instance.',
  }),
});
