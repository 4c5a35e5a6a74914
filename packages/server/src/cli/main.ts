import { parseArgs } from 'node:util';
import {
  type Agent,
  type AgentStatus,
  type ApiKey,
  type CreateTaskInput,
  type CreateTemplateInput,
  isTerminalState,
  type MultitaskStrategy,
  type Orchestra,
  OrchestraError,
  type Session,
  type Task,
  type TaskState,
  type Template,
  type TemplateDefinition,
  type TemplateVersionSummary,
  type Tenant,
} from '@orchestra/sdk';
// Client commands load only what they use: the server's modules (store, settings schemas,
// Fastify) cost about a second at start, and are imported by `start` and
// `recover-admin-key` alone.
import { AGENT_STATUSES } from '../agents/statuses.ts';
import { SYSTEM_TENANT_ID } from '../gateway/system-tenant.ts';
import { ApiError } from '../platform/errors.ts';
import type { RunningServer } from '../server.ts';
import { MAX_STATS_MINUTES } from '../stats/stats-service.ts';
import { TASK_STATES } from '../tasks/states.ts';
import { VERSION } from '../version.ts';
import { agentRow, describeAgent } from './agent-format.ts';
import {
  client,
  countFlag,
  offsetFlag,
  parse,
  positiveInteger,
  print,
  readJson,
  readText,
  UsageError,
} from './common.ts';
import { CONFIG_HELP, configCommand, SERVICES_HELP, servicesCommand } from './config-commands.ts';
import { describeSession, sessionEventLine, sessionRow } from './session-format.ts';
import { describeStats } from './stats-format.ts';
import { formatTable } from './table.ts';
import {
  describeTask,
  eventLine,
  outcomeText,
  progressOf,
  taskRow,
  templateText,
  waitingText,
} from './task-format.ts';

const GLOBAL_HELP = `Orchestra ${VERSION}: control plane for AI agents

Usage: orchestra <command> [options]

Commands:
  start                 Run the server
  whoami                Show the tenant and role of the credential in use
  keys create|list|revoke
                        Manage API keys of your tenant
  tenants create|list|get|update
                        Manage tenants and their limits (admins of the system tenant)
  templates create|list|get|update|versions|rollback|delete
                        Manage versioned agent templates
  task submit|submit-batch|get|ls|cancel|retry|events
                        Submit tasks, follow their events, cancel and retry them
  agents ls|get|drain|rm
                        Inspect the agents of your tenant, drain and remove them
  sessions create|ls|get|rm|events
                        Manage sessions: tasks that run in order and share a history
  topics ls|publish|history|presence|rm|token
                        Realtime topics: publish, read history, see who is present
  config get|put|rm|ls|envs|watch|history|diff|revert
                        Configuration: versioned keys per environment, live changes
  services ls|resolve   Service registry: registered instances and their health
  stats                 Agents by status, tasks by state, throughput and latency
  cluster nodes         The nodes of the cluster and their load (system admins)
  recover-admin-key     Create an admin key directly in the store (lost keys)
  version               Print the version

Options for commands that talk to a server:
  --url URL[,URL…]      Server URL, or the nodes of a cluster to fail over between
                        (env ORCHESTRA_URL; default http://localhost:8080)
  --api-key KEY         API key or JWT (env ORCHESTRA_API_KEY; default for a server on
                        this machine: the admin-key file in ORCHESTRA_DATA_DIR or
                        ./.orchestra, if present)
  --json                Print JSON instead of tables
  -h, --help            Show help for a command

Run "orchestra <command> --help" for the options of a command.`;

const HELP: Record<string, string> = {
  config: CONFIG_HELP,
  services: SERVICES_HELP,
  start: `Usage: orchestra start [options]

Runs the Orchestra server in the foreground until SIGTERM or SIGINT. Settings come from
ORCHESTRA_* environment variables and an optional JSON config file; the flags below win.
On first start it creates the system tenant and prints its admin key once.

Options:
  --config FILE         JSON config file (env ORCHESTRA_CONFIG_FILE)
  --port N              TCP port (env ORCHESTRA_PORT; default 8080)
  --host HOST           Listen address (env ORCHESTRA_HOST; default localhost)
  --data-dir DIR        Data directory (env ORCHESTRA_DATA_DIR; default .orchestra)
  --database-url URL    PostgreSQL URL (env ORCHESTRA_DATABASE_URL; default SQLite)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (env ORCHESTRA_LOG_LEVEL)`,
  cluster: `Usage: orchestra cluster nodes [--json]

  cluster nodes
      Lists the Orchestra nodes of the cluster: address, version, stores, when each last
      reported (every 30 s), its memory, event-loop delay, agents and realtime connections
      then, and which one runs the registry's health checks (*). A node whose lease lapses
      leaves the list within 10 s. Needs an admin key of the system tenant.

Common options: --url URL, --api-key KEY, --json`,
  stats: `Usage: orchestra stats [--minutes N] [--template NAME|ID] [--json]

Shows your tenant's agents by status and tasks by state now, then the tasks submitted
and finished in each of the last N minutes (1 to 60; default 15) with their latency
(submission to success; p50 and p99 per minute). --template counts only that template's
tasks.

Common options: --url URL, --api-key KEY, --json`,
  whoami: `Usage: orchestra whoami [--url URL] [--api-key KEY] [--json]

Shows the tenant, role and credential the API key or token authenticates as.`,
  keys: `Usage: orchestra keys <create|list|revoke> [options]

  keys create --name NAME --role ROLE [--expires-in DURATION | --expires-at ISO]
      Creates a key in your tenant and prints its secret once.
      ROLE is admin, operator, agent or viewer. DURATION is a number with s, m, h or d
      (30d). Needs an admin credential.
  keys list [--role ROLE] [--include-revoked]
      Lists the keys of your tenant.
  keys revoke ID
      Revokes a key at once. The last active admin key cannot be revoked.

Common options: --url URL, --api-key KEY, --json`,
  tenants: `Usage: orchestra tenants <create|list|get|update> [options]

  tenants create ID [--name NAME]
      Creates a tenant and prints its first admin key once. ID is lowercase letters,
      digits and dashes. Needs an admin key of the system tenant.
  tenants list
      Lists tenants (all of them for system admins, else your own).
  tenants get ID
      Shows a tenant and every limit that applies to it, with where each value comes
      from: the tenant's own, or the server's setting.
  tenants update ID [--name NAME] [--limit NAME=VALUE]... [--unset-limit NAME]...
      Renames a tenant or sets its own limits (admins of the system tenant only). A limit
      set here overrides the server's setting for this tenant; --unset-limit removes it.
      Limits: task_input_max_bytes, task_output_max_bytes, task_event_max_bytes,
      topic_message_max_bytes, config_value_max_bytes, max_concurrency,
      max_queued_tasks, max_topics, max_config_keys, max_templates, max_sessions
      (for max_*, 0 means no limit). Example:
        orchestra tenants update acme --limit task_input_max_bytes=4194304 --limit max_topics=500

Common options: --url URL, --api-key KEY, --json`,
  templates: `Usage: orchestra templates <create|list|get|update|versions|rollback|delete> [options]

  templates create --file FILE
      Creates a template (version 1) from a JSON file: an object with its "name" and
      definition (description, labels, capabilities, input_schema, output_schema,
      config_schema, config, default_timeout_ms, default_max_attempts, default_priority,
      strategy). --file - reads standard input.
  templates list [--name-prefix PREFIX] [--label KEY=VALUE ...]
      Lists templates at their latest version. Repeat --label to require several labels.
  templates get NAME|ID [--version N]
      Shows a template at its latest version, or at version N.
  templates update NAME|ID --file FILE [--if-version N]
      Replaces the whole definition with the one in FILE, as a new version that becomes
      the latest; fields left out go back to their defaults. FILE may be the output of
      "templates get --json": its id, name, versions and timestamps are not sent.
      With --if-version, refuses (PRECONDITION_FAILED) unless N is still the latest.
  templates versions NAME|ID
      Lists the versions of a template, newest first; * marks the latest.
  templates rollback NAME|ID --to N
      Makes version N the latest again. Creates no version.
  templates delete NAME|ID    (alias: rm)
      Deletes the template and all its versions.

Creating, updating, rolling back and deleting need an admin or operator credential.

Common options: --url URL, --api-key KEY, --json`,
  task: `Usage: orchestra task <submit|submit-batch|get|ls|cancel|retry|events> [options]

  task submit [TEMPLATE] [--input JSON | --input-file FILE] [--capability C ...]
              [--priority N] [--idempotency-key KEY] [--label KEY=VALUE ...]
              [--session ID] [--wait [DURATION] | --follow]
      Submits a task of TEMPLATE (name or id), routed by --capability, or both; repeat
      --capability and --label for several. The input is JSON: --input gives it inline,
      --input-file reads it from FILE (- for standard input). Submitting again with the
      same --idempotency-key prints the task submitted first and creates none.
      --session submits it in session ID (see "orchestra sessions --help").
      --wait waits for the task to end, at most DURATION if given, and prints it then
      (or that it is still running). --follow prints its events as they happen until it
      ends. With either, the exit code is 1 if the task ended without success.
  task submit-batch FILE
      Submits every task in FILE (- for standard input): one JSON object a line, with
      the fields of POST /v1/tasks, such as {"template": "code-stats", "input": {...}}.
      They are stored as if submitted one after another in that order, 500 to a
      request. Prints one line a task (its id, or why it was refused) and a summary;
      the exit code is 1 if any was refused. --json prints one JSON object a line:
      {"line", "status", "task"} or {"line", "status", "error"}.
  task get ID [--wait DURATION]
      Shows a task, with its input, result and error. --wait waits at most DURATION for
      it to end first.
  task ls [--state STATE ...] [--template NAME|ID] [--session ID] [--label KEY=VALUE ...]
          [--limit N]
      (alias: list) Lists the N newest tasks that match (default 50). Repeat --state for
      several: queued, assigned, running, succeeded, failed, cancelled, timed_out, dead.
      --session keeps the tasks of session ID.
  task cancel ID
      Cancels a queued task at once; asks the agent holding a running task to stop it.
  task retry ID
      Queues a task that failed, died, timed out or was cancelled again.
  task events ID [--after N] [--follow]
      Prints the task's events, one a line (offset, time, type, summary), after offset
      N (default: from the first one still retained). Without --follow, prints the
      events there are and exits: for a task that has ended, its whole history; for one
      still running, the events until none came for a second. With --follow,
      goes on until the task ends, and exits 1 if it ended without success. A dropped
      connection is resumed where it stopped.

DURATION is a number with ms, s, m or h: 500ms, 30s, 2m, 1h. Submitting, cancelling and
retrying need an admin or operator credential. --json prints the task (a JSON array for
ls; one JSON event a line for events and --follow).

Common options: --url URL, --api-key KEY, --json`,
  agents: `Usage: orchestra agents <ls|get|drain|rm> [options]

  agents ls [--status STATUS ...] [--capability C] [--limit N]
      (alias: list) Lists the agents of your tenant in id order, at most N (default
      50): status, capabilities, tasks held of the most it runs at once, the load and
      time of its last heartbeat, and the node it is connected to. Repeat --status for
      several: online, busy, draining, offline, error. --capability keeps the agents
      that offer C.
  agents get ID
      Shows an agent: status, capabilities, labels, load, connection, lease, and the
      tasks it holds.
  agents drain ID
      Asks a connected agent to finish the tasks it holds and take no new ones; it stays
      connected until it disconnects itself.
  agents rm ID    (alias: delete)
      Forgets an agent that is not connected and holds no tasks.

Agents appear once they connect (the SDK's AgentWorker, with an agent key). Draining and
removing need an admin or operator credential. --json prints the agent (a JSON array for
ls).

Common options: --url URL, --api-key KEY, --json`,
  topics: `Usage: orchestra topics <ls|publish|history|presence|rm|token> [options]

  topics ls [--prefix P] [--limit N]
      (alias: list) Lists user topics by name (default 50): epoch, newest offset, created.
  topics publish TOPIC --data JSON [--event NAME]
      Publishes a message (JSON; --data - reads it from standard input) and prints its
      offset once it is stored.
  topics history TOPIC [--after N | --last N] [--limit N]
      Prints retained messages, one a line (offset, time, event, data): after offset N,
      or the last N (default: the first 100 retained).
  topics presence TOPIC
      Lists who is subscribed with presence: connection, client, info, since when.
  topics rm TOPIC   (alias: delete)
      Deletes a user topic with its history; subscribers are told (topic_deleted).
  topics token TOPIC... [--publish] [--client-id ID] [--ttl SECONDS]
      Issues a realtime token (ort_…) that grants only these topics or patterns, for a
      browser or another client; prints the token. Default lifetime 3600 s, at most 86400.

To subscribe live, use the SDK's RealtimeClient or GET /v1/topics/TOPIC/events (SSE).
Publishing needs an admin, operator or agent credential; rm and token need admin or
operator. --json prints the API's JSON answer.

Common options: --url URL, --api-key KEY, --json`,
  sessions: `Usage: orchestra sessions <create|ls|get|rm|events> [options]

  sessions create [--name NAME] [--label KEY=VALUE ...] [--strategy STRATEGY]
      Creates a session and prints its id. Tasks submitted in it ("task submit
      --session ID") run one at a time, in order, and share one history. STRATEGY says
      what a task submitted while another is unfinished does: enqueue (default: it runs
      after the earlier ones), reject (refused, SESSION_BUSY) or interrupt (the
      unfinished ones are cancelled, then it runs).
  sessions ls [--label KEY=VALUE ...] [--limit N]
      (alias: list) Lists the N newest sessions that match (default 50): name, strategy,
      how many tasks it has and how many of them are unfinished. Repeat --label to
      require several labels.
  sessions get ID
      Shows a session, with the ids of its unfinished tasks.
  sessions rm ID    (alias: delete)
      Deletes a session AND every task submitted in it, with their events and results;
      there is no undo. Refused (SESSION_BUSY) while one of its tasks is unfinished.
  sessions events ID [--after N] [--follow]
      Prints the session's history, one event a line (offset, time, type, task id,
      summary): session.created, then every event of every task in it, after offset N
      (default: from the first one still retained). Without --follow, prints the events
      there are and exits; with --follow, goes on with new events until interrupted.

Creating and deleting need an admin or operator credential. --json prints the session (a
JSON array for ls; one JSON event a line for events).

Common options: --url URL, --api-key KEY, --json`,
  'recover-admin-key': `Usage: orchestra recover-admin-key [--tenant ID] [options]

Creates a new admin key directly in the store, without a server or a credential: for when
every admin key of a tenant is lost, revoked or expired. It needs what the server needs to
open the store (the data directory, or the PostgreSQL URL), so run it where the server runs.
Safe while the server runs.

Options:
  --tenant ID           Tenant to add the key to (default: default, the system tenant)
  --config FILE         JSON config file (env ORCHESTRA_CONFIG_FILE)
  --data-dir DIR        Data directory (env ORCHESTRA_DATA_DIR; default .orchestra)
  --database-url URL    PostgreSQL URL (env ORCHESTRA_DATABASE_URL; default SQLite)
  --json                Print JSON`,
  version: `Usage: orchestra version [--json]

Prints the version of this CLI and of the Node.js runtime.`,
};

const DURATION = /^(\d+)([smhd])$/;
const MAX_EXPIRY_MS = 36_500 * 86_400_000;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

function parseDuration(text: string): number {
  const match = DURATION.exec(text);
  if (!match?.[1] || !match[2]) {
    throw new UsageError(
      `--expires-in must be a number followed by s, m, h or d (like 30d), got "${text}"`,
    );
  }
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  if (ms > MAX_EXPIRY_MS) throw new UsageError('--expires-in must be at most 36500d (100 years)');
  return ms;
}

const dash = (v: string | null) => v ?? '-';

async function keysCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    name: { type: 'string' },
    role: { type: 'string' },
    'expires-in': { type: 'string' },
    'expires-at': { type: 'string' },
    'include-revoked': { type: 'boolean', default: false },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.keys}\n`);
    if (sub === undefined) throw new UsageError('keys needs a subcommand: create, list or revoke');
    return;
  }
  const api = client(values);
  switch (sub) {
    case 'create': {
      if (!values.name) throw new UsageError('keys create needs --name');
      if (!values.role)
        throw new UsageError('keys create needs --role (admin, operator, agent or viewer)');
      if (values['expires-in'] && values['expires-at']) {
        throw new UsageError('use either --expires-in or --expires-at, not both');
      }
      const expiresAt = values['expires-in']
        ? new Date(Date.now() + parseDuration(values['expires-in'])).toISOString()
        : values['expires-at'];
      const key = await api.apiKeys.create({
        name: values.name,
        role: values.role as 'admin',
        ...(expiresAt ? { expires_at: expiresAt } : {}),
      });
      print(values.json, key, () =>
        [
          `Created API key ${key.id} (${key.name}, role ${key.role}${key.expires_at ? `, expires ${key.expires_at}` : ''}).`,
          '',
          `  ${key.secret}`,
          '',
          'Store it now: it is not shown again.',
        ].join('\n'),
      );
      return;
    }
    case 'list': {
      const keys: ApiKey[] = [];
      for await (const key of api.apiKeys.listAll({
        limit: 200,
        include_revoked: values['include-revoked'],
        ...(values.role ? { role: values.role as 'admin' } : {}),
      })) {
        keys.push(key);
      }
      print(values.json, keys, () =>
        formatTable(
          ['ID', 'NAME', 'ROLE', 'STATUS', 'PREFIX', 'CREATED', 'EXPIRES', 'LAST USED'],
          keys.map((k) => [
            k.id,
            k.name,
            k.role,
            k.status,
            k.prefix,
            k.created_at,
            dash(k.expires_at),
            dash(k.last_used_at),
          ]),
        ),
      );
      return;
    }
    case 'revoke': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError('keys revoke needs the key id');
      const key = await api.apiKeys.revoke(id);
      print(values.json, key, () => `Revoked API key ${key.id} (${key.name}).`);
      return;
    }
    default:
      throw new UsageError(`unknown keys subcommand "${sub}"; use create, list or revoke`);
  }
}

/** A tenant and each of its limits, with where the value comes from. */
function describeTenant(t: Tenant): string {
  const rows = Object.entries(t.limits).map(([name, value]) => [
    name,
    String(value),
    name in t.limit_overrides ? 'tenant' : 'setting',
  ]);
  return [
    `Tenant ${t.id} (${t.name}), ${t.kind}, created ${t.created_at}`,
    '',
    formatTable(['LIMIT', 'VALUE', 'SET BY'], rows),
  ].join('\n');
}

/** `--limit NAME=VALUE` and `--unset-limit NAME` as the body's `limits`. */
function limitChanges(
  set: string[] | undefined,
  unset: string[] | undefined,
): Record<string, number | null> | undefined {
  if ((set?.length ?? 0) + (unset?.length ?? 0) === 0) return undefined;
  const limits: Record<string, number | null> = {};
  for (const item of set ?? []) {
    const match = /^([a-z_]+)=(\d+)$/.exec(item);
    if (match === null || match[1] === undefined || match[2] === undefined) {
      throw new UsageError(`--limit takes NAME=VALUE with a whole number, not "${item}"`);
    }
    limits[match[1]] = Number(match[2]);
  }
  for (const name of unset ?? []) limits[name] = null;
  return limits;
}

async function tenantsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    name: { type: 'string' },
    limit: { type: 'string', multiple: true },
    'unset-limit': { type: 'string', multiple: true },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.tenants}\n`);
    if (sub === undefined) {
      throw new UsageError('tenants needs a subcommand: create, list, get or update');
    }
    return;
  }
  const api = client(values);
  const tenantId = () => {
    const id = positionals[0];
    if (id === undefined) throw new UsageError(`tenants ${sub} needs the tenant id`);
    return id;
  };
  switch (sub) {
    case 'create': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError('tenants create needs the tenant id');
      const created = await api.tenants.create({
        id,
        ...(values.name ? { name: values.name } : {}),
      });
      print(values.json, created, () =>
        [
          `Created tenant ${created.tenant.id} (${created.tenant.name}) with admin key ${created.admin_key.id}:`,
          '',
          `  ${created.admin_key.secret}`,
          '',
          'Store it now: it is not shown again.',
        ].join('\n'),
      );
      return;
    }
    case 'list': {
      const tenants: Tenant[] = [];
      for await (const tenant of api.tenants.listAll({ limit: 200 })) tenants.push(tenant);
      print(values.json, tenants, () =>
        formatTable(
          ['ID', 'NAME', 'KIND', 'CREATED'],
          tenants.map((t) => [t.id, t.name, t.kind, t.created_at]),
        ),
      );
      return;
    }
    case 'get': {
      const tenant = await api.tenants.get(tenantId());
      print(values.json, tenant, () => describeTenant(tenant));
      return;
    }
    case 'update': {
      const id = tenantId();
      const limits = limitChanges(values.limit, values['unset-limit']);
      if (values.name === undefined && limits === undefined) {
        throw new UsageError('tenants update needs --name, --limit or --unset-limit');
      }
      const tenant = await api.tenants.update(id, {
        ...(values.name !== undefined ? { name: values.name } : {}),
        ...(limits !== undefined ? { limits } : {}),
      });
      print(values.json, tenant, () => describeTenant(tenant));
      return;
    }
    default:
      throw new UsageError(`unknown tenants subcommand "${sub}"; use create, list, get or update`);
  }
}

/** Fields of `templates get --json` output that the server sets; an update does not send them. */
const TEMPLATE_READ_ONLY_FIELDS = [
  'id',
  'tenant_id',
  'name',
  'version',
  'latest_version',
  'highest_version',
  'created_at',
  'updated_at',
  'version_created_at',
  'version_created_by',
] as const;

const TEMPLATE_SCHEMA_FIELDS = ['input_schema', 'output_schema', 'config_schema'] as const;

/**
 * The task bodies in a JSON-lines file (`-`: standard input), with their line numbers;
 * blank lines are skipped. Usage errors name the file and line.
 */
function readTaskLines(file: string): { lines: number[]; inputs: CreateTaskInput[] } {
  const { source, text } = readText(file);
  const lines: number[] = [];
  const inputs: CreateTaskInput[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new UsageError(`${source} line ${i + 1} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new UsageError(
        `${source} line ${i + 1} must be a JSON object, such as {"template": "code-stats"}`,
      );
    }
    lines.push(i + 1);
    inputs.push(parsed as CreateTaskInput);
  });
  if (inputs.length === 0) throw new UsageError(`${source} holds no task`);
  return { lines, inputs };
}

/** The JSON object in `file` (`-`: standard input); usage errors name the file. */
function readJsonObject(file: string): Record<string, unknown> {
  const parsed = readJson(file);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const source = file === '-' ? 'standard input' : file;
    throw new UsageError(`${source} must hold a JSON object, such as {"name": "my-template"}`);
  }
  return parsed as Record<string, unknown>;
}

/**
 * The definition in a template file, without what the server sets, so that the output of
 * `templates get --json` can be edited and sent back. A null schema there means "none".
 */
function templateDefinition(document: Record<string, unknown>): TemplateDefinition {
  const definition: Record<string, unknown> = { ...document };
  for (const field of TEMPLATE_READ_ONLY_FIELDS) delete definition[field];
  for (const field of TEMPLATE_SCHEMA_FIELDS) {
    if (definition[field] === null) delete definition[field];
  }
  // Anything else, typos included, goes to the server, which names unknown fields.
  return definition as TemplateDefinition;
}

/** The `--label KEY=VALUE` flags as an object. */
function labelFlags(flags: string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const selector of flags ?? []) {
    const at = selector.indexOf('=');
    if (at < 1) throw new UsageError(`--label must be KEY=VALUE, got "${selector}"`);
    labels[selector.slice(0, at)] = selector.slice(at + 1);
  }
  return labels;
}

function labelsText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

function describeTemplate(t: Template): string {
  const schema = (value: Record<string, unknown> | null) =>
    value === null ? ' (none)' : `\n${JSON.stringify(value, null, 2)}`;
  const rows: [string, string][] = [
    ['Name', t.name],
    ['ID', t.id],
    ['Version', `${t.version} (latest ${t.latest_version}, highest ${t.highest_version})`],
    ['Description', t.description || '-'],
    ['Capabilities', t.capabilities.length > 0 ? t.capabilities.join(', ') : '-'],
    ['Labels', labelsText(t.labels)],
    [
      'Defaults',
      `timeout ${t.default_timeout_ms} ms, max attempts ${t.default_max_attempts}, priority ${t.default_priority}`,
    ],
    ['Strategy', t.strategy],
    ['Created', t.created_at],
    ['Updated', t.updated_at],
    [`Version ${t.version}`, `created ${t.version_created_at} by ${t.version_created_by}`],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return [
    ...rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`),
    '',
    `Input schema:${schema(t.input_schema)}`,
    `Output schema:${schema(t.output_schema)}`,
    `Config schema:${schema(t.config_schema)}`,
    `Config:${Object.keys(t.config).length > 0 ? `\n${JSON.stringify(t.config, null, 2)}` : ' (none)'}`,
  ].join('\n');
}

async function templatesCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    file: { type: 'string' },
    'name-prefix': { type: 'string' },
    label: { type: 'string', multiple: true },
    version: { type: 'string' },
    'if-version': { type: 'string' },
    to: { type: 'string' },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.templates}\n`);
    if (sub === undefined) {
      throw new UsageError(
        'templates needs a subcommand: create, list, get, update, versions, rollback or delete',
      );
    }
    return;
  }
  /** The NAME|ID argument of the subcommands that take one. */
  const ref = () => {
    const value = positionals[0];
    if (value === undefined) throw new UsageError(`templates ${sub} needs a template name or id`);
    return value;
  };
  switch (sub) {
    case 'create': {
      if (!values.file) throw new UsageError('templates create needs --file FILE (- for stdin)');
      const document = readJsonObject(values.file);
      if (typeof document.name !== 'string') {
        throw new UsageError(
          `${values.file === '-' ? 'standard input' : values.file} needs a "name" string`,
        );
      }
      const input: CreateTemplateInput = {
        ...templateDefinition(document),
        name: document.name,
      };
      const template = await client(values).templates.create(input);
      print(
        values.json,
        template,
        () => `Created template ${template.name} (${template.id}), version ${template.version}.`,
      );
      return;
    }
    case 'list': {
      const labels = labelFlags(values.label);
      const templates: Template[] = [];
      for await (const template of client(values).templates.listAll({
        limit: 200,
        labels,
        ...(values['name-prefix'] ? { name_prefix: values['name-prefix'] } : {}),
      })) {
        templates.push(template);
      }
      print(values.json, templates, () =>
        formatTable(
          ['NAME', 'ID', 'LATEST', 'HIGHEST', 'CAPABILITIES', 'LABELS', 'UPDATED'],
          templates.map((t) => [
            t.name,
            t.id,
            String(t.latest_version),
            String(t.highest_version),
            t.capabilities.length > 0 ? t.capabilities.join(',') : '-',
            labelsText(t.labels),
            t.updated_at,
          ]),
        ),
      );
      return;
    }
    case 'get': {
      const name = ref();
      const version =
        values.version === undefined ? undefined : positiveInteger('--version', values.version);
      const template = await client(values).templates.get(
        name,
        version === undefined ? {} : { version },
      );
      print(values.json, template, () => describeTemplate(template));
      return;
    }
    case 'update': {
      const name = ref();
      if (!values.file) throw new UsageError('templates update needs --file FILE (- for stdin)');
      const ifVersion =
        values['if-version'] === undefined
          ? undefined
          : positiveInteger('--if-version', values['if-version']);
      const document = readJsonObject(values.file);
      if (typeof document.name === 'string' && !name.startsWith('tpl_') && document.name !== name) {
        throw new UsageError(
          `${values.file === '-' ? 'standard input' : values.file} is for template "${document.name}", not "${name}"; templates cannot be renamed`,
        );
      }
      const template = await client(values).templates.update(
        name,
        templateDefinition(document),
        ifVersion === undefined ? {} : { ifVersion },
      );
      print(
        values.json,
        template,
        () =>
          `Updated template ${template.name} (${template.id}): version ${template.version} is the latest.`,
      );
      return;
    }
    case 'versions': {
      const name = ref();
      const versions: TemplateVersionSummary[] = [];
      for await (const version of client(values).templates.versionsAll(name, { limit: 200 })) {
        versions.push(version);
      }
      print(values.json, versions, () =>
        formatTable(
          ['VERSION', 'LATEST', 'CREATED', 'CREATED BY'],
          versions.map((v) => [String(v.version), v.latest ? '*' : '', v.created_at, v.created_by]),
        ),
      );
      return;
    }
    case 'rollback': {
      const name = ref();
      if (values.to === undefined) {
        throw new UsageError('templates rollback needs --to N, the version to make the latest');
      }
      const template = await client(values).templates.rollback(
        name,
        positiveInteger('--to', values.to),
      );
      print(
        values.json,
        template,
        () =>
          `Rolled back template ${template.name} (${template.id}): version ${template.latest_version} is the latest (highest ${template.highest_version}).`,
      );
      return;
    }
    case 'delete':
    case 'rm': {
      const name = ref();
      await client(values).templates.delete(name);
      print(values.json, { deleted: name }, () => `Deleted template ${name}.`);
      return;
    }
    default:
      throw new UsageError(
        `unknown templates subcommand "${sub}"; use create, list, get, update, versions, rollback or delete`,
      );
  }
}

const WAIT_DURATION = /^(\d{1,9})(ms|s|m|h)$/;
const WAIT_UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Milliseconds of a wait such as `500ms`, `30s`, `2m` or `1h`. */
function parseWait(flag: string, text: string): number {
  const match = WAIT_DURATION.exec(text);
  if (!match?.[1] || !match[2]) {
    throw new UsageError(
      `${flag} must be a number followed by ms, s, m or h (like 30s), got "${text}"`,
    );
  }
  return Number(match[1]) * WAIT_UNIT_MS[match[2] as keyof typeof WAIT_UNIT_MS];
}

/**
 * Splits off `--wait [DURATION]`, whose value is optional, which parseArgs cannot express:
 * the next argument is its value when it looks like a duration. Resolves `wait` to the
 * milliseconds, to Infinity for a bare `--wait`, or to undefined without one.
 */
function takeOptionalWait(args: string[]): { rest: string[]; wait: number | undefined } {
  const rest: string[] = [];
  let wait: number | undefined;
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] ?? '';
    if (arg === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (arg.startsWith('--wait=')) {
      wait = parseWait('--wait', arg.slice('--wait='.length));
    } else if (arg === '--wait') {
      const next = args[i + 1];
      if (next !== undefined && /^\d/.test(next) && /^[\w]+$/.test(next)) {
        wait = parseWait('--wait', next);
        i += 1;
      } else {
        wait = Number.POSITIVE_INFINITY;
      }
    } else {
      rest.push(arg);
    }
  }
  return { rest, wait };
}

/** How long `task events` without --follow waits for another event before it stops. */
const EVENTS_QUIET_MS = 1000;
const DEFAULT_TASK_LIST_LIMIT = 50;
const MAX_TASK_LIST_LIMIT = 10_000;

/**
 * Prints a task's events until the stream ends (the task ended) or, with `quietMs`, until
 * none came for that long; one JSON item a line with `json`. On a terminal, progress events share one line that they
 * update in place.
 */
async function printEvents(
  api: Orchestra,
  id: string,
  options: { after: number; json: boolean; quietMs?: number },
): Promise<void> {
  const tty = process.stdout.isTTY === true && !options.json;
  let progressLineOpen = false;
  const quiet = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const armQuietTimer = () => {
    if (options.quietMs === undefined) return;
    clearTimeout(timer);
    timer = setTimeout(() => quiet.abort(), options.quietMs);
  };
  armQuietTimer();
  try {
    for await (const item of api.tasks.events(id, { after: options.after, signal: quiet.signal })) {
      armQuietTimer();
      if (options.json) {
        process.stdout.write(`${JSON.stringify(item)}\n`);
        continue;
      }
      const line = eventLine(item);
      if (tty && progressOf(item) !== undefined) {
        process.stdout.write(`\r\x1b[K${line}`);
        progressLineOpen = true;
        continue;
      }
      process.stdout.write(`${progressLineOpen ? '\n' : ''}${line}\n`);
      progressLineOpen = false;
    }
  } catch (err) {
    if (!quiet.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    if (progressLineOpen) process.stdout.write('\n');
  }
}

/** The task's exit code once it ended: 0 for success, 1 for any other end. */
const taskExitCode = (task: Task) => (task.state === 'succeeded' ? 0 : 1);

async function taskCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { rest: withoutWait, wait: optionalWait } =
    sub === 'submit' ? takeOptionalWait(rest) : { rest, wait: undefined };
  const { values, positionals } = parse(withoutWait, {
    input: { type: 'string' },
    'input-file': { type: 'string' },
    capability: { type: 'string', multiple: true },
    priority: { type: 'string' },
    'idempotency-key': { type: 'string' },
    label: { type: 'string', multiple: true },
    follow: { type: 'boolean', default: false },
    wait: { type: 'string' },
    state: { type: 'string', multiple: true },
    template: { type: 'string' },
    session: { type: 'string' },
    limit: { type: 'string' },
    after: { type: 'string' },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.task}\n`);
    if (sub === undefined) {
      throw new UsageError(
        'task needs a subcommand: submit, submit-batch, get, ls, cancel, retry or events',
      );
    }
    return 0;
  }
  /** The ID argument of the subcommands that take one. */
  const taskId = () => {
    const value = positionals[0];
    if (value === undefined) throw new UsageError(`task ${sub} needs a task id`);
    if (positionals.length > 1) {
      throw new UsageError(`task ${sub} takes one task id, got "${positionals.join(' ')}"`);
    }
    return value;
  };
  switch (sub) {
    case 'submit': {
      const [template, ...extra] = positionals;
      if (extra.length > 0) {
        throw new UsageError(`task submit takes one template, got "${positionals.join(' ')}"`);
      }
      const capabilities = values.capability ?? [];
      if (template === undefined && capabilities.length === 0) {
        throw new UsageError('task submit needs a template, --capability C, or both');
      }
      if (values.input !== undefined && values['input-file'] !== undefined) {
        throw new UsageError('use either --input or --input-file, not both');
      }
      if (optionalWait !== undefined && values.follow) {
        throw new UsageError('use either --wait or --follow, not both');
      }
      let input: unknown;
      if (values.input !== undefined) {
        try {
          input = JSON.parse(values.input);
        } catch (err) {
          throw new UsageError(`--input is not valid JSON: ${(err as Error).message}`);
        }
      } else if (values['input-file'] !== undefined) {
        input = readJson(values['input-file']);
      }
      if (values.priority !== undefined && !/^-?\d{1,4}$/.test(values.priority)) {
        throw new UsageError(
          `--priority must be a whole number from -1000 to 1000, got "${values.priority}"`,
        );
      }
      const labels = labelFlags(values.label);
      const api = client(values);
      const { task, replayed } = await api.tasks.createDetailed({
        ...(template !== undefined ? { template } : {}),
        ...(capabilities.length > 0 ? { capabilities } : {}),
        ...(input !== undefined ? { input } : {}),
        ...(values.priority !== undefined ? { priority: Number(values.priority) } : {}),
        ...(values['idempotency-key'] !== undefined
          ? { idempotency_key: values['idempotency-key'] }
          : {}),
        ...(Object.keys(labels).length > 0 ? { labels } : {}),
        ...(values.session !== undefined ? { session_id: values.session } : {}),
      });
      const submitted = [
        replayed
          ? `Task ${task.id} was submitted before with idempotency key "${task.idempotency_key}" (${task.state}); nothing new was submitted.`
          : `Submitted task ${task.id} (${task.template === null ? `capabilities ${task.capabilities.join(', ')}` : templateText(task)}): ${task.state}.`,
        // Said at once: otherwise --wait and --follow would wait without a word.
        ...[waitingText(task) ?? []].flat(),
      ].join('\n');
      if (values.follow) {
        if (!values.json) process.stdout.write(`${submitted}\n`);
        await printEvents(api, task.id, { after: 0, json: values.json });
        const ended = await api.tasks.get(task.id);
        if (!values.json) process.stdout.write(`${outcomeText(ended)}\n`);
        return taskExitCode(ended);
      }
      if (optionalWait === undefined) {
        print(values.json, task, () => submitted);
        return 0;
      }
      if (!values.json) process.stdout.write(`${submitted}\n`);
      const current = await api.tasks.wait(
        task.id,
        Number.isFinite(optionalWait) ? { timeoutMs: optionalWait } : {},
      );
      if (!isTerminalState(current.state)) {
        print(
          values.json,
          current,
          () =>
            `Task ${current.id} is still ${current.state}; wait for it with "orchestra task get ${current.id} --wait 5m".`,
        );
        return 0;
      }
      print(values.json, current, () => `${outcomeText(current)}\n\n${describeTask(current)}`);
      return taskExitCode(current);
    }
    case 'submit-batch': {
      const [file, ...extra] = positionals;
      if (file === undefined)
        throw new UsageError('task submit-batch needs a FILE (- for standard input)');
      if (extra.length > 0) {
        throw new UsageError(`task submit-batch takes one FILE, got "${positionals.join(' ')}"`);
      }
      const { lines, inputs } = readTaskLines(file);
      const outcomes = await client(values).tasks.createMany(inputs);
      let refused = 0;
      let replayed = 0;
      outcomes.forEach((outcome, i) => {
        const line = lines[i];
        if (!outcome.ok) refused += 1;
        else if (outcome.replayed) replayed += 1;
        if (values.json) {
          const status = outcome.ok ? (outcome.replayed ? 200 : 201) : outcome.error.status;
          const body = outcome.ok
            ? { line, status, task: outcome.task }
            : {
                line,
                status,
                error: {
                  code: outcome.error.code,
                  message: outcome.error.message,
                  ...(outcome.error.details ? { details: outcome.error.details } : {}),
                },
              };
          process.stdout.write(`${JSON.stringify(body)}\n`);
        } else if (outcome.ok) {
          const again = outcome.replayed ? ' (submitted before with this idempotency key)' : '';
          process.stdout.write(`line ${line}: ${outcome.task.id} ${outcome.task.state}${again}\n`);
        } else {
          process.stdout.write(
            `line ${line}: refused: ${outcome.error.code}: ${outcome.error.message}\n`,
          );
        }
      });
      if (!values.json) {
        const created = outcomes.length - refused - replayed;
        process.stdout.write(
          `Submitted ${created} of ${outcomes.length} tasks; ${replayed} submitted before, ${refused} refused.\n`,
        );
      }
      return refused > 0 ? 1 : 0;
    }
    case 'get': {
      const id = taskId();
      const api = client(values);
      const task =
        values.wait === undefined
          ? await api.tasks.get(id)
          : await api.tasks.wait(id, { timeoutMs: parseWait('--wait', values.wait) });
      print(values.json, task, () => describeTask(task));
      return 0;
    }
    case 'ls':
    case 'list': {
      const states = values.state ?? [];
      for (const state of states) {
        if (!(TASK_STATES as readonly string[]).includes(state)) {
          throw new UsageError(`--state must be one of ${TASK_STATES.join(', ')}; got "${state}"`);
        }
      }
      const limit =
        values.limit === undefined
          ? DEFAULT_TASK_LIST_LIMIT
          : countFlag('--limit', values.limit, MAX_TASK_LIST_LIMIT);
      const labels = labelFlags(values.label);
      const tasks: Task[] = [];
      for await (const task of client(values).tasks.listAll({
        limit: Math.min(limit, 200),
        state: states as TaskState[],
        labels,
        ...(values.template !== undefined ? { template: values.template } : {}),
        ...(values.session !== undefined ? { session_id: values.session } : {}),
      })) {
        tasks.push(task);
        if (tasks.length === limit) break;
      }
      print(values.json, tasks, () =>
        formatTable(
          ['ID', 'STATE', 'TEMPLATE', 'PRIORITY', 'ATTEMPT', 'AGENT', 'CREATED'],
          tasks.map(taskRow),
        ),
      );
      return 0;
    }
    case 'cancel': {
      const id = taskId();
      const task = await client(values).tasks.cancel(id);
      print(values.json, task, () =>
        task.state === 'cancelled'
          ? `Cancelled task ${task.id}.`
          : `Asked the agent holding task ${task.id} (${task.state}) to stop it; it ends cancelled once the agent stops.`,
      );
      return 0;
    }
    case 'retry': {
      const id = taskId();
      const task = await client(values).tasks.retry(id);
      print(
        values.json,
        task,
        () => `Queued task ${task.id} again (${task.state}, attempts reset).`,
      );
      return 0;
    }
    case 'events': {
      const id = taskId();
      const after = values.after === undefined ? 0 : Number(values.after);
      if (values.after !== undefined && !/^\d{1,15}$/.test(values.after)) {
        throw new UsageError(`--after must be an event offset (0 or more), got "${values.after}"`);
      }
      const api = client(values);
      if (values.follow) {
        const waiting = values.json ? undefined : waitingText(await api.tasks.get(id));
        if (waiting !== undefined) process.stdout.write(`${waiting}\n`);
        await printEvents(api, id, { after, json: values.json });
        return taskExitCode(await api.tasks.get(id));
      }
      // Without --follow: the stream of an ended task ends by itself; that of a running
      // task never says it caught up, so stop at the first pause.
      const task = await api.tasks.get(id);
      await printEvents(api, id, {
        after,
        json: values.json,
        ...(isTerminalState(task.state) ? {} : { quietMs: EVENTS_QUIET_MS }),
      });
      return 0;
    }
    default:
      throw new UsageError(
        `unknown task subcommand "${sub}"; use submit, submit-batch, get, ls, cancel, retry or events`,
      );
  }
}

const DEFAULT_AGENT_LIST_LIMIT = 50;
const MAX_AGENT_LIST_LIMIT = 10_000;

async function agentsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    status: { type: 'string', multiple: true },
    capability: { type: 'string' },
    limit: { type: 'string' },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.agents}\n`);
    if (sub === undefined) throw new UsageError('agents needs a subcommand: ls, get, drain or rm');
    return;
  }
  /** The ID argument of the subcommands that take one. */
  const agentId = () => {
    const value = positionals[0];
    if (value === undefined) throw new UsageError(`agents ${sub} needs an agent id`);
    if (positionals.length > 1) {
      throw new UsageError(`agents ${sub} takes one agent id, got "${positionals.join(' ')}"`);
    }
    return value;
  };
  switch (sub) {
    case 'ls':
    case 'list': {
      if (positionals.length > 0) {
        throw new UsageError(`agents ${sub} takes no arguments, got "${positionals.join(' ')}"`);
      }
      const statuses = values.status ?? [];
      for (const status of statuses) {
        if (!(AGENT_STATUSES as readonly string[]).includes(status)) {
          throw new UsageError(
            `--status must be one of ${AGENT_STATUSES.join(', ')}; got "${status}"`,
          );
        }
      }
      const limit =
        values.limit === undefined
          ? DEFAULT_AGENT_LIST_LIMIT
          : countFlag('--limit', values.limit, MAX_AGENT_LIST_LIMIT);
      const agents: Agent[] = [];
      let more = false;
      // One past the limit tells whether some were left out.
      for await (const agent of client(values).agents.listAll({
        limit: Math.min(limit + 1, 200),
        status: [...new Set(statuses)] as AgentStatus[],
        ...(values.capability !== undefined ? { capability: values.capability } : {}),
      })) {
        if (agents.length === limit) {
          more = true;
          break;
        }
        agents.push(agent);
      }
      print(values.json, agents, () =>
        formatTable(
          ['ID', 'STATUS', 'CAPABILITIES', 'IN FLIGHT', 'LOAD', 'LAST HEARTBEAT', 'NODE'],
          agents.map(agentRow),
        ),
      );
      if (more && !values.json) {
        process.stderr.write(`Showing the first ${limit} agents; use --limit N for more.\n`);
      }
      return;
    }
    case 'get': {
      const agent = await client(values).agents.get(agentId());
      print(values.json, agent, () => describeAgent(agent));
      return;
    }
    case 'drain': {
      const agent = await client(values).agents.drain(agentId());
      const held = agent.in_flight.length;
      print(
        values.json,
        agent,
        () =>
          `Draining agent ${agent.id}: it ${held > 0 ? `finishes the ${held} task${held === 1 ? '' : 's'} it holds and ` : ''}gets no new tasks.`,
      );
      return;
    }
    case 'rm':
    case 'delete': {
      const id = agentId();
      await client(values).agents.delete(id);
      print(values.json, { deleted: id }, () => `Deleted agent ${id}.`);
      return;
    }
    default:
      throw new UsageError(`unknown agents subcommand "${sub}"; use ls, get, drain or rm`);
  }
}

const DEFAULT_SESSION_LIST_LIMIT = 50;
const MAX_SESSION_LIST_LIMIT = 10_000;
const MULTITASK_STRATEGIES: readonly MultitaskStrategy[] = ['reject', 'enqueue', 'interrupt'];

async function topicsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    prefix: { type: 'string' },
    limit: { type: 'string' },
    data: { type: 'string' },
    event: { type: 'string' },
    after: { type: 'string' },
    last: { type: 'string' },
    publish: { type: 'boolean', default: false },
    'client-id': { type: 'string' },
    ttl: { type: 'string' },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.topics}\n`);
    if (sub === undefined) {
      throw new UsageError(
        'topics needs a subcommand: ls, publish, history, presence, rm or token',
      );
    }
    return;
  }
  const topicArgument = () => {
    const value = positionals[0];
    if (value === undefined) throw new UsageError(`topics ${sub} needs a topic`);
    if (positionals.length > 1) {
      throw new UsageError(`topics ${sub} takes one topic, got "${positionals.join(' ')}"`);
    }
    return value;
  };
  const api = () => client(values).topics;
  switch (sub) {
    case 'ls':
    case 'list': {
      if (positionals.length > 0) throw new UsageError('topics ls takes no arguments');
      const limit = values.limit === undefined ? 50 : countFlag('--limit', values.limit, 200);
      const page = await api().list({
        limit,
        ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
      });
      print(
        values.json,
        page.items,
        () =>
          formatTable(
            ['TOPIC', 'EPOCH', 'OFFSET', 'CREATED'],
            page.items.map((t) => [t.name, t.epoch, String(t.last_offset), t.created_at]),
          ) + (page.next_cursor === null ? '' : `\n(more: raise --limit or use --prefix)`),
      );
      return;
    }
    case 'publish': {
      const topic = topicArgument();
      if (values.data === undefined) throw new UsageError('topics publish needs --data JSON');
      const { source, text } =
        values.data === '-' ? readText('-') : { source: '--data', text: values.data };
      let data: unknown;
      try {
        data = JSON.parse(text);
      } catch (err) {
        throw new UsageError(`${source} is not JSON: ${(err as Error).message}`);
      }
      const published = await api().publish(
        topic,
        data,
        values.event !== undefined ? { event: values.event } : {},
      );
      print(values.json, published, () => `Published to ${topic} at offset ${published.offset}.`);
      return;
    }
    case 'history': {
      const topic = topicArgument();
      if (values.after !== undefined && values.last !== undefined) {
        throw new UsageError('give --after or --last, not both');
      }
      const history = await api().history(topic, {
        ...(values.after !== undefined ? { after: offsetFlag('--after', values.after) } : {}),
        ...(values.last !== undefined ? { last: countFlag('--last', values.last, 1000) } : {}),
        ...(values.limit !== undefined ? { limit: countFlag('--limit', values.limit, 1000) } : {}),
      });
      if (values.json) {
        process.stdout.write(`${JSON.stringify(history)}\n`);
        return;
      }
      for (const m of history.messages) {
        process.stdout.write(`${m.offset}\t${m.time}\t${m.event}\t${JSON.stringify(m.data)}\n`);
      }
      process.stderr.write(
        `epoch ${history.epoch}; offsets ${history.first_offset}..${history.last_offset} retained\n`,
      );
      return;
    }
    case 'presence': {
      const members = await api().presence(topicArgument());
      print(values.json, members, () =>
        formatTable(
          ['CONNECTION', 'CLIENT', 'INFO', 'SINCE'],
          members.map((m) => [m.connection_id, m.client_id, JSON.stringify(m.info), m.joined_at]),
        ),
      );
      return;
    }
    case 'rm':
    case 'delete': {
      const topic = topicArgument();
      await api().delete(topic);
      print(values.json, { deleted: topic }, () => `Deleted topic ${topic}.`);
      return;
    }
    case 'token': {
      if (positionals.length === 0) throw new UsageError('topics token needs at least one topic');
      const token = await api().createToken({
        topics: positionals,
        publish: values.publish,
        ...(values['client-id'] !== undefined ? { client_id: values['client-id'] } : {}),
        ...(values.ttl !== undefined
          ? { ttl_seconds: countFlag('--ttl', values.ttl, 86_400) }
          : {}),
      });
      print(values.json, token, () =>
        [token.token, `Valid until ${token.expires_at} for ${token.topics.join(', ')}.`].join('\n'),
      );
      return;
    }
    default:
      throw new UsageError(
        `unknown topics subcommand "${sub}"; use ls, publish, history, presence, rm or token`,
      );
  }
}

async function sessionsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    name: { type: 'string' },
    label: { type: 'string', multiple: true },
    strategy: { type: 'string' },
    limit: { type: 'string' },
    after: { type: 'string' },
    follow: { type: 'boolean', default: false },
  });
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.sessions}\n`);
    if (sub === undefined) {
      throw new UsageError('sessions needs a subcommand: create, ls, get, rm or events');
    }
    return;
  }
  /** The ID argument of the subcommands that take one. */
  const sessionId = () => {
    const value = positionals[0];
    if (value === undefined) throw new UsageError(`sessions ${sub} needs a session id`);
    if (positionals.length > 1) {
      throw new UsageError(`sessions ${sub} takes one session id, got "${positionals.join(' ')}"`);
    }
    return value;
  };
  const noArguments = () => {
    if (positionals.length > 0) {
      throw new UsageError(`sessions ${sub} takes no arguments, got "${positionals.join(' ')}"`);
    }
  };
  switch (sub) {
    case 'create': {
      noArguments();
      const strategy = values.strategy;
      if (strategy !== undefined && !(MULTITASK_STRATEGIES as string[]).includes(strategy)) {
        throw new UsageError(
          `--strategy must be one of ${MULTITASK_STRATEGIES.join(', ')}; got "${strategy}"`,
        );
      }
      const labels = labelFlags(values.label);
      const session = await client(values).sessions.create({
        ...(values.name !== undefined ? { name: values.name } : {}),
        ...(Object.keys(labels).length > 0 ? { labels } : {}),
        ...(strategy !== undefined ? { multitask_strategy: strategy as MultitaskStrategy } : {}),
      });
      print(values.json, session, () =>
        [
          session.id,
          `Created session ${session.id}${session.name === null ? '' : ` (${session.name})`}, strategy ${session.multitask_strategy}.`,
          `Submit tasks in it with "orchestra task submit ... --session ${session.id}".`,
        ].join('\n'),
      );
      return;
    }
    case 'ls':
    case 'list': {
      noArguments();
      const limit =
        values.limit === undefined
          ? DEFAULT_SESSION_LIST_LIMIT
          : countFlag('--limit', values.limit, MAX_SESSION_LIST_LIMIT);
      const labels = labelFlags(values.label);
      const sessions: Session[] = [];
      let more = false;
      // One past the limit tells whether some were left out.
      for await (const session of client(values).sessions.listAll({
        limit: Math.min(limit + 1, 200),
        labels,
      })) {
        if (sessions.length === limit) {
          more = true;
          break;
        }
        sessions.push(session);
      }
      print(values.json, sessions, () =>
        formatTable(
          ['ID', 'NAME', 'STRATEGY', 'TASKS', 'UNFINISHED', 'CREATED'],
          sessions.map(sessionRow),
        ),
      );
      if (more && !values.json) {
        process.stderr.write(`Showing the newest ${limit} sessions; use --limit N for more.\n`);
      }
      return;
    }
    case 'get': {
      const session = await client(values).sessions.get(sessionId());
      print(values.json, session, () => describeSession(session));
      return;
    }
    case 'rm':
    case 'delete': {
      const id = sessionId();
      const api = client(values);
      // Counted first: what the delete took with it is said, not left to be found out.
      const { total } = (await api.sessions.get(id)).tasks;
      await api.sessions.delete(id);
      print(
        values.json,
        { deleted: id, deleted_tasks: total },
        () =>
          `Deleted session ${id}${total === 0 ? '' : ` with its ${total === 1 ? 'task' : `${total} tasks`} and their events`}.`,
      );
      return;
    }
    case 'events': {
      const id = sessionId();
      if (values.after !== undefined && !/^\d{1,15}$/.test(values.after)) {
        throw new UsageError(`--after must be an event offset (0 or more), got "${values.after}"`);
      }
      const after = values.after === undefined ? 0 : Number(values.after);
      for await (const item of client(values).sessions.events(id, {
        after,
        follow: values.follow,
      })) {
        process.stdout.write(`${values.json ? JSON.stringify(item) : sessionEventLine(item)}\n`);
      }
      return;
    }
    default:
      throw new UsageError(
        `unknown sessions subcommand "${sub}"; use create, ls, get, rm or events`,
      );
  }
}

async function whoamiCommand(args: string[]): Promise<void> {
  const { values } = parse(args, {});
  if (values.help) {
    process.stdout.write(`${HELP.whoami}\n`);
    return;
  }
  const me = await client(values).whoami();
  print(values.json, me, () => {
    const c = me.credential;
    const credential =
      c.type === 'api_key'
        ? `API key ${c.id} (${c.name}, ${c.prefix}…)`
        : `JWT for ${c.subject}${c.issuer ? ` from ${c.issuer}` : ''}`;
    return formatTable(
      ['TENANT', 'ROLE', 'CREDENTIAL', 'EXPIRES'],
      [[`${me.tenant.id} (${me.tenant.name})`, me.role, credential, dash(c.expires_at)]],
    );
  });
}

async function clusterCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {});
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${HELP.cluster}\n`);
    if (sub === undefined) throw new UsageError('cluster needs a subcommand: nodes');
    return;
  }
  if (sub !== 'nodes') throw new UsageError(`unknown cluster subcommand "${sub}"; use nodes`);
  if (positionals.length > 0) {
    throw new UsageError(`cluster nodes takes no arguments, got "${positionals.join(' ')}"`);
  }
  const nodes = await client(values).cluster.nodes();
  print(values.json, nodes, () =>
    formatTable(
      ['ID', 'URL', 'VERSION', 'STORE', 'KV', 'SEEN', 'RSS', 'LOOP DELAY', 'AGENTS', 'CONNECTIONS'],
      nodes.map((n) => [
        n.health_checker ? `${n.id} *` : n.id,
        n.url,
        n.version,
        n.store,
        n.kv,
        n.seen_at,
        `${Math.round(n.load.rss_bytes / 1024 / 1024)} MiB`,
        `${n.load.event_loop_delay_ms.toFixed(1)} ms`,
        String(n.load.agents),
        String(n.load.realtime_connections),
      ]),
    ),
  );
}

async function statsCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {
    minutes: { type: 'string' },
    template: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(`${HELP.stats}\n`);
    return;
  }
  if (positionals.length > 0) {
    throw new UsageError(`stats takes no arguments, got "${positionals.join(' ')}"`);
  }
  const stats = await client(values).stats({
    ...(values.minutes !== undefined
      ? { minutes: countFlag('--minutes', values.minutes, MAX_STATS_MINUTES) }
      : {}),
    ...(values.template !== undefined ? { template: values.template } : {}),
  });
  print(values.json, stats, () => describeStats(stats));
}

/** Flags that set server settings, shared by the commands that open the store. */
const SETTINGS_FLAGS = {
  config: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  'data-dir': { type: 'string' },
  'database-url': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** Parses settings flags (plus `extra`) and loads settings: env, config file, then flags. */
function settingsFromFlags<
  E extends Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>,
>(args: string[], extra: E) {
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; options: typeof SETTINGS_FLAGS & E; strict: true }>
  >;
  try {
    parsed = parseArgs({ args, options: { ...SETTINGS_FLAGS, ...extra }, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const str = (v: string | boolean | undefined) => (typeof v === 'string' ? v : undefined);
  const load = async () =>
    (await import('../platform/settings.ts')).loadSettings(process.env, {
      ...(str(values.config) ? { configFile: str(values.config) } : {}),
      overrides: {
        port: str(values.port),
        host: str(values.host),
        dataDir: str(values['data-dir']),
        databaseUrl: str(values['database-url']),
        logLevel: str(values['log-level']),
      },
    });
  return { values, load };
}

async function startCommand(args: string[]): Promise<void> {
  const { values, load } = settingsFromFlags(args, {});
  if (values.help) {
    process.stdout.write(`${HELP.start}\n`);
    return;
  }
  const settings = await load();
  const { startServer } = await import('../server.ts');
  let adminKey: { secret: string; file: string | undefined } | undefined;
  let server: RunningServer | undefined;
  // Installed before the start, so that a signal during it (a supervisor that gives up, a
  // test that stops the server as soon as it listens) shuts down cleanly once started.
  let signals = 0;
  let stopRequested = false;
  const shutdown = (running: RunningServer) => {
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`shutdown failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      process.stderr.write(`received ${signal} again; exiting now\n`);
      process.exit(1);
    }
    if (server === undefined) stopRequested = true;
    else shutdown(server);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    server = await startServer(settings, {
      onAdminKey: (key) => {
        adminKey = key;
      },
    });
  } catch (err) {
    if (stopRequested) process.exit(1);
    throw err;
  } finally {
    // Printed once listening, so that the example names the real URL (port 0 picks one);
    // printed on a failed start too, because the key exists from now on.
    if (adminKey !== undefined) printAdminKey(adminKey, server?.url);
  }
  const running = server;
  if (stopRequested) shutdown(running);
  // Node would exit on these anyway; first leave a structured line for the log pipeline.
  const fatal = (kind: string) => (err: unknown) => {
    running.log.fatal({ err }, kind);
    process.exit(1);
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));
}

/** The first-start admin key, on stderr: the secret must not end up in log pipelines. */
function printAdminKey(
  key: { secret: string; file: string | undefined },
  url: string | undefined,
): void {
  process.stderr.write(
    [
      '',
      '  Orchestra created the system tenant "default" and its first admin key:',
      '',
      `    ${key.secret}`,
      '',
      key.file
        ? `  It is shown only now. A copy is in ${key.file} (mode 0600).`
        : '  It is shown only now: it could not be saved in the data directory (see the log).',
      ...(url ? [`  Try: curl -H "Authorization: Bearer ${key.secret}" ${url}/v1/whoami`] : []),
      '',
      '',
    ].join('\n'),
  );
}

async function recoverAdminKeyCommand(args: string[]): Promise<void> {
  const { values, load } = settingsFromFlags(args, {
    tenant: { type: 'string', default: SYSTEM_TENANT_ID },
    json: { type: 'boolean', default: false },
  });
  if (values.help) {
    process.stdout.write(`${HELP['recover-admin-key']}\n`);
    return;
  }
  const settings = await load();
  const [
    { openStore },
    { migrations },
    { createLogger },
    { IdentityService },
    { JwtVerifier },
    { TenantLimitStore },
    { limitDefaults },
  ] = await Promise.all([
    import('../store/store.ts'),
    import('../migrations.ts'),
    import('../server.ts'),
    import('../gateway/identity-service.ts'),
    import('../platform/jwt.ts'),
    import('../gateway/tenant-limit-store.ts'),
    import('../platform/tenant-limits.ts'),
  ]);
  const tenantId = String(values.tenant);
  const store = await openStore({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: 1,
    preparedStatements: settings.databasePreparedStatements,
  });
  try {
    await store.migrate(migrations);
    const log = createLogger({ ...settings, logLevel: 'warn' }, process.stderr);
    const identity = new IdentityService({
      store,
      jwt: new JwtVerifier(settings),
      log,
      limits: new TenantLimitStore({ store, defaults: limitDefaults(settings), ttlMs: 0 }),
    });
    let key: Awaited<ReturnType<InstanceType<typeof IdentityService>['createRecoveryAdminKey']>>;
    try {
      key = await identity.createRecoveryAdminKey(tenantId);
    } catch (err) {
      if (err instanceof ApiError) throw new UsageError(err.message);
      throw err;
    }
    print(values.json === true, key, () =>
      [
        `Created admin key ${key.id} in tenant ${tenantId} (${store.location}):`,
        '',
        `  ${key.secret}`,
        '',
        'Store it now: it is not shown again. Revoke keys you no longer trust with "orchestra keys revoke".',
      ].join('\n'),
    );
  } finally {
    await store.close();
  }
}

function versionCommand(args: string[]): void {
  const { values } = parse(args, {});
  if (values.help) {
    process.stdout.write(`${HELP.version}\n`);
    return;
  }
  print(
    values.json,
    { version: VERSION, node: process.versions.node },
    () => `orchestra ${VERSION} (Node.js ${process.versions.node})`,
  );
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  try {
    switch (command) {
      case 'start':
        await startCommand(args);
        return 0;
      case 'whoami':
        await whoamiCommand(args);
        return 0;
      case 'keys':
        await keysCommand(args);
        return 0;
      case 'tenants':
        await tenantsCommand(args);
        return 0;
      case 'templates':
        await templatesCommand(args);
        return 0;
      case 'task':
        return await taskCommand(args);
      case 'agents':
        await agentsCommand(args);
        return 0;
      case 'sessions':
        await sessionsCommand(args);
        return 0;
      case 'topics':
        await topicsCommand(args);
        return 0;
      case 'config':
        await configCommand(args);
        return 0;
      case 'services':
        await servicesCommand(args);
        return 0;
      case 'stats':
        await statsCommand(args);
        return 0;
      case 'cluster':
        await clusterCommand(args);
        return 0;
      case 'recover-admin-key':
        await recoverAdminKeyCommand(args);
        return 0;
      case 'version':
      case '--version':
        versionCommand(args);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(`${GLOBAL_HELP}\n`);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(
        `error: ${err.message}\nRun "orchestra ${command && command in HELP ? `${command} ` : ''}--help" for usage.\n`,
      );
      return 2;
    }
    if (err instanceof OrchestraError) {
      process.stderr.write(
        `error: ${err.message} (${err.code}${err.status ? `, HTTP ${err.status}` : ''})\n`,
      );
      return 1;
    }
    // By name: the settings module is loaded only by the commands that read settings.
    if (err instanceof Error && err.name === 'SettingsError') {
      process.stderr.write(`error: ${err.message}\n`);
      return 1;
    }
    // The message and its causes say what went wrong; a stack trace would bury that.
    const lines = [`error: ${err instanceof Error ? err.message : String(err)}`];
    for (let cause = (err as Error)?.cause; cause !== undefined; cause = (cause as Error)?.cause) {
      lines.push(`  caused by: ${cause instanceof Error ? cause.message : String(cause)}`);
      if (lines.length > 5) break;
    }
    process.stderr.write(`${lines.join('\n')}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // `start` keeps running until a signal; every other command ends here.
  if (process.argv[2] !== 'start' || code !== 0) process.exitCode = code;
}
