import type { Tenant } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, print, shownOnce, UsageError } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

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

/** The ID argument of the subcommands that take one. */
function tenantId(sub: string, positionals: string[]): string {
  const id = positionals[0];
  if (id === undefined) throw new UsageError(`tenants ${sub} needs the tenant id`);
  return id;
}

const create = command({
  name: 'create',
  args: 'ID',
  description:
    'Creates a tenant and prints its first admin key once. ID is lowercase letters, digits and dashes. Needs an admin key of the system tenant.',
  options: {
    name: { type: 'string', value: 'NAME', description: 'Display name (default: the ID)' },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const id = tenantId('create', positionals);
    const created = await client(values).tenants.create({
      id,
      ...(values.name ? { name: values.name } : {}),
    });
    print(values.json, created, () =>
      shownOnce(
        `Created tenant ${created.tenant.id} (${created.tenant.name}) with admin key ${created.admin_key.id}:`,
        created.admin_key.secret,
      ),
    );
    return 0;
  },
});

const list = command({
  name: 'list',
  description: 'Lists tenants (all of them for system admins, else your own).',
  common: CLIENT_OPTIONS,
  async run({ values }) {
    const tenants: Tenant[] = [];
    for await (const tenant of client(values).tenants.listAll({ limit: 200 })) {
      tenants.push(tenant);
    }
    print(values.json, tenants, () =>
      formatTable(
        ['ID', 'NAME', 'KIND', 'CREATED'],
        tenants.map((t) => [t.id, t.name, t.kind, t.created_at]),
      ),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description:
    "Shows a tenant and every limit that applies to it, with where each value comes from: the tenant's own, or the server's setting.",
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const tenant = await client(values).tenants.get(tenantId('get', positionals));
    print(values.json, tenant, () => describeTenant(tenant));
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'ID',
  description: [
    "Renames a tenant or sets its own limits (admins of the system tenant only). A limit set here overrides the server's setting for this tenant; --unset-limit removes it. Limits: task_input_max_bytes, task_output_max_bytes, task_event_max_bytes, topic_message_max_bytes, config_value_max_bytes, max_concurrency, max_queued_tasks, max_topics, max_config_keys, max_templates, max_secrets, max_sessions, monthly_tokens, monthly_cost_cents, max_instances, max_running_instances, max_running_cpus, max_running_memory_bytes, max_storage_bytes, max_terminals (for max_* and monthly_*, 0 means no limit). Example:",
    '  orchestra tenants update acme --limit task_input_max_bytes=4194304 --limit max_topics=500',
  ].join('\n'),
  options: {
    name: { type: 'string', value: 'NAME', description: 'New display name' },
    limit: {
      type: 'string',
      value: 'NAME=VALUE',
      multiple: true,
      description: "Sets the tenant's own value of a limit (a whole number)",
    },
    'unset-limit': {
      type: 'string',
      value: 'NAME',
      multiple: true,
      description: "Removes the tenant's own value: the server's setting applies again",
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const id = tenantId('update', positionals);
    const limits = limitChanges(values.limit, values['unset-limit']);
    if (values.name === undefined && limits === undefined) {
      throw new UsageError('tenants update needs --name, --limit or --unset-limit');
    }
    const tenant = await client(values).tenants.update(id, {
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(limits !== undefined ? { limits } : {}),
    });
    print(values.json, tenant, () => describeTenant(tenant));
    return 0;
  },
});

export const group = defineGroup({
  name: 'tenants',
  summary: 'Manage tenants and their limits (admins of the system tenant)',
  subcommands: [create, list, get, update],
});
