import { readFile } from 'node:fs/promises';
import { MAX_INSTANCE_LIFETIME_MS } from '@orchestra/protocol';
import type { ExecEvent, Instance, InstanceState, WorkspaceUpload } from '@orchestra/sdk';
import { INSTANCE_STATES } from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  durationFlag,
  ENV,
  envFlags,
  LABEL,
  labelFlags,
  labelsText,
  noArguments,
  oneArgument,
  print,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const EXEC_TIMEOUT: DurationFormat = {
  units: ['ms', 's', 'm', 'h'],
  maxDigits: 9,
  maxMs: 3_600_000,
};

/** Idle timeouts and TTLs: a second to a year. */
const LIFETIME: DurationFormat = {
  units: ['s', 'm', 'h', 'd'],
  maxDigits: 8,
  maxMs: MAX_INSTANCE_LIFETIME_MS,
};

function describeInstance(i: Instance): string {
  return [
    `ID:        ${i.id}`,
    `Name:      ${i.name}`,
    `State:     ${i.state} (${i.state_reason})`,
    `Template:  ${i.template.name} v${i.template.version}`,
    `Driver:    ${i.driver} on node ${i.node_id}`,
    `Labels:    ${labelsText(i.labels)}`,
    `Exit code: ${i.exit_code ?? '-'}`,
    `Idle stop: ${i.idle_timeout_ms === null ? 'never' : `after ${i.idle_timeout_ms / 1000}s without activity`} (last active ${i.last_active_at ?? '-'})`,
    `Expires:   ${i.expires_at ?? 'never'}`,
    `Started:   ${i.started_at ?? '-'}`,
    `Stopped:   ${i.stopped_at ?? '-'}`,
    `Created:   ${i.created_at} by ${i.created_by}`,
  ].join('\n');
}

/** One line per instance for ls. */
const row = (i: Instance) => [
  i.id,
  i.name,
  i.state,
  `${i.template.name} v${i.template.version}`,
  labelsText(i.labels),
  i.created_at,
];

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the tenant’s instances, newest first.',
  options: {
    state: {
      type: 'string',
      value: 'STATE',
      multiple: true,
      description: `Only instances in this state (${INSTANCE_STATES.join(', ')}); repeat for several`,
    },
    template: { type: 'string', value: 'TEMPLATE', description: 'Only instances of this template' },
    label: {
      ...LABEL,
      description: 'Only instances with this label; with several, all must match',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const states = (values.state ?? []).map(
      (s) => choice('--state', s, INSTANCE_STATES) as InstanceState,
    );
    const items: Instance[] = [];
    for await (const i of client(values).instances.listAll({
      limit: 200,
      ...(states.length > 0 ? { state: states } : {}),
      ...(values.template !== undefined ? { template: values.template } : {}),
      labels: labelFlags(values.label),
    })) {
      items.push(i);
    }
    print(values.json, items, () =>
      formatTable(['ID', 'NAME', 'STATE', 'TEMPLATE', 'LABELS', 'CREATED'], items.map(row)),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description: 'Shows an instance: its state and why, its template, node and labels.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'instance id');
    const i = await client(values).instances.get(id);
    print(values.json, i, () => describeInstance(i));
    return 0;
  },
});

const create = command({
  name: 'create',
  args: 'TEMPLATE',
  description:
    'Creates an instance from a workspace template and starts it; prints it once it runs (or why it failed: exit 1).',
  options: {
    name: { type: 'string', value: 'NAME', description: 'Its name in lists' },
    label: LABEL,
    stopped: { type: 'boolean', description: 'Leave it stopped' },
    'idle-timeout': {
      type: 'string',
      value: 'DURATION',
      description: 'Stop it after this long without activity (30m, 2h); overrides the template',
    },
    ttl: {
      type: 'string',
      value: 'DURATION',
      description: 'Delete it this long after now (8h, 7d); overrides the template',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const template = oneArgument(invocation, 'workspace template');
    const labels = labelFlags(values.label);
    const i = await client(values).instances.create({
      template,
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...(values.stopped ? { start: false } : {}),
      ...(values['idle-timeout'] !== undefined
        ? {
            idle_timeout_ms: durationFlag(
              '--idle-timeout',
              values['idle-timeout'],
              LIFETIME,
              '30m',
            ),
          }
        : {}),
      ...(values.ttl !== undefined
        ? { ttl_ms: durationFlag('--ttl', values.ttl, LIFETIME, '8h') }
        : {}),
    });
    print(values.json, i, () => `Instance ${i.id} is ${i.state}: ${i.state_reason}.`);
    return i.state === 'failed' ? 1 : 0;
  },
});

function lifecycle(action: 'start' | 'stop' | 'restart', description: string) {
  return command({
    name: action,
    args: 'ID',
    description,
    common: CLIENT_OPTIONS,
    async run(invocation) {
      const { values } = invocation;
      const id = oneArgument(invocation, 'instance id');
      const i = await client(values).instances[action](id);
      print(values.json, i, () => `Instance ${i.id} is ${i.state}: ${i.state_reason}.`);
      return i.state === 'failed' ? 1 : 0;
    },
  });
}

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'ID',
  description: 'Stops an instance and deletes it with its files and events; there is no undo.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'instance id');
    await client(values).instances.delete(id);
    print(values.json, { deleted: id }, () => `Deleted instance ${id}.`);
    return 0;
  },
});

const uploadBase = command({
  name: 'upload-base',
  args: 'FILE',
  description:
    'Uploads a tar archive (plain or compressed) or a git bundle (git bundle create FILE --all) that workspace templates can start instances from: "base": {"type": "upload", "upload": "<id>"}.',
  options: {
    name: { type: 'string', value: 'NAME', description: 'What to call it (its id by default)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const file = oneArgument(invocation, 'file');
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (err) {
      throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
    }
    const upload = await client(values).workspaceUploads.create(data, {
      ...(values.name !== undefined ? { name: values.name } : {}),
    });
    print(
      values.json,
      upload,
      () =>
        `Uploaded ${upload.id} (${upload.format}, ${upload.size} bytes, sha256 ${upload.sha256}).\nIn a workspace template: "base": {"type": "upload", "upload": "${upload.id}"}`,
    );
    return 0;
  },
});

const bases = command({
  name: 'bases',
  description: 'Lists the uploaded bases, newest first.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const items: WorkspaceUpload[] = [];
    for await (const u of client(values).workspaceUploads.listAll({ limit: 200 })) items.push(u);
    print(values.json, items, () =>
      formatTable(
        ['ID', 'NAME', 'FORMAT', 'SIZE', 'CREATED'],
        items.map((u) => [u.id, u.name, u.format, String(u.size), u.created_at]),
      ),
    );
    return 0;
  },
});

const removeBase = command({
  name: 'rm-base',
  args: 'ID',
  description:
    'Deletes an uploaded base; refused while a workspace template or an instance starts from it.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'upload id');
    await client(values).workspaceUploads.delete(id);
    print(values.json, { deleted: id }, () => `Deleted upload ${id}.`);
    return 0;
  },
});

export const exec = command({
  name: 'exec',
  args: 'ID -- COMMAND [ARG…]',
  description:
    'Runs a command in a running instance, its output streamed as it comes, and exits with its exit code (124 when it timed out, 137 when it was killed). With --json, prints its events as NDJSON.',
  options: {
    cwd: { type: 'string', value: 'DIR', description: 'Working directory, inside the workspace' },
    env: ENV,
    timeout: {
      type: 'string',
      value: 'DURATION',
      description: 'Kill it after this long (default 1m; at most 1h): 30s, 10m',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, ...command] = positionals;
    if (id === undefined || command.length === 0) {
      throw new UsageError(`${path} needs an instance id and a command after --`);
    }
    const env = envFlags(values.env);
    let exit: ExecEvent | undefined;
    for await (const event of client(values).instances.execStream(id, {
      command,
      ...(values.cwd !== undefined ? { cwd: values.cwd } : {}),
      ...(Object.keys(env).length > 0 ? { env } : {}),
      ...(values.timeout !== undefined
        ? { timeout_ms: durationFlag('--timeout', values.timeout, EXEC_TIMEOUT, '30s') }
        : {}),
    })) {
      if (!('offset' in event)) continue;
      if (values.json) {
        process.stdout.write(`${JSON.stringify(event)}\n`);
      } else if (event.type === 'exec.output') {
        const target = event.data.stream === 'stderr' ? process.stderr : process.stdout;
        target.write(String(event.data.data));
      }
      if (event.type === 'exec.exited') exit = event;
    }
    const data = exit?.data ?? {};
    if (data.timed_out === true) {
      if (!values.json) process.stderr.write('orchestra: the command timed out\n');
      return 124;
    }
    if (typeof data.exit_code === 'number') return data.exit_code;
    return 137; // killed by a signal
  },
});

const quotas = command({
  name: 'quotas',
  description:
    'Shows the tenant’s workspace quotas and what it uses of them (0: no limit; "tenant": its own limit, "setting": the server’s).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const answer = await client(values).instances.quotas();
    print(values.json, answer, () =>
      formatTable(
        ['QUOTA', 'USED', 'LIMIT', 'SOURCE'],
        answer.quotas.map((q) => [
          q.name,
          String(q.used),
          q.limit === 0 ? 'none' : String(q.limit),
          q.source === 'tenant' ? 'tenant' : `setting (${q.setting})`,
        ]),
      ),
    );
    return 0;
  },
});

const usage = command({
  name: 'usage',
  args: '[ID]',
  description:
    'Shows what the tenant’s instances use (CPU since start, memory, processes, disk) against their resources, and what the node has; with --recommend, what to raise or lower.',
  options: {
    recommend: { type: 'boolean', description: 'Print recommendations (over-, under-used, idle)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals } = invocation;
    if (positionals.length > 1)
      throw new UsageError('instances usage takes at most one instance id');
    const api = client(values).instances;
    const only = positionals[0] !== undefined ? { instance: positionals[0] } : {};
    if (values.recommend) {
      const advice = await api.optimize(only);
      print(values.json, advice, () =>
        advice.recommendations.length === 0
          ? `Nothing to change (${advice.instances_checked} instances checked).`
          : formatTable(
              ['INSTANCE', 'KIND', 'RESOURCE', 'ADVICE'],
              advice.recommendations.map((r) => [r.instance_id, r.kind, r.resource, r.message]),
            ),
      );
      return 0;
    }
    const answer = await api.usage(only);
    const pct = (n: number) => `${Math.round(n * 1000) / 10}%`;
    print(values.json, answer, () =>
      [
        `Node ${answer.node.node_id}: ${answer.node.cpus} CPUs, ${answer.node.memory_free_bytes} of ${answer.node.memory_total_bytes} bytes free, load ${answer.node.load_average.join(' ')}, ${answer.node.instances_running} running; limits by ${answer.node.limits?.mechanism ?? '-'}`,
        '',
        formatTable(
          ['ID', 'STATE', 'CPU', 'MEMORY', 'PROCESSES', 'DISK'],
          answer.instances.map((i) =>
            i.usage === null
              ? [i.instance_id, i.state, `on ${i.node_id}`, '-', '-', '-']
              : [
                  i.instance_id,
                  i.state,
                  pct(i.usage.cpu_utilization),
                  `${i.usage.memory_bytes} (${pct(i.usage.memory_utilization)})`,
                  String(i.usage.processes),
                  `${i.usage.disk_bytes} (${pct(i.usage.storage_utilization)})`,
                ],
          ),
        ),
      ].join('\n'),
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'instances',
  summary: 'Manage workspace instances: create, list, start, stop, exec, remove',
  notes:
    'Instances are sandboxed workspaces made from workspace templates (POST /v1/workspace-templates). Creating, starting, stopping and removing need an admin or operator credential.',
  subcommands: [
    list,
    get,
    create,
    lifecycle('start', 'Starts a stopped or failed instance; prints it once it runs.'),
    lifecycle('stop', 'Stops an instance’s service; its files stay.'),
    lifecycle('restart', 'Stops an instance if it runs, then starts it.'),
    remove,
    exec,
    quotas,
    usage,
    uploadBase,
    bases,
    removeBase,
  ],
});
