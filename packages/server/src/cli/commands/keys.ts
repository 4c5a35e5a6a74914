import type { ApiKey } from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  client,
  dash,
  durationFlag,
  print,
  shownOnce,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

/** --expires-in: a whole number of seconds to days, at most 100 years. */
const EXPIRES_IN: DurationFormat = { units: ['s', 'm', 'h', 'd'], maxMs: 36_500 * 86_400_000 };

const ROLES = 'admin, operator, agent or viewer';

const create = command({
  name: 'create',
  description:
    'Creates a key in your tenant and prints its secret once. Needs an admin credential.',
  options: {
    name: {
      type: 'string',
      value: 'NAME',
      description: 'A name for the key, to tell it apart in lists',
      required: true,
    },
    role: { type: 'string', value: 'ROLE', description: ROLES, required: ROLES },
    'expires-in': {
      type: 'string',
      value: 'DURATION',
      description:
        'The key expires after DURATION: a number with s, m, h or d (30d), at most 36500d',
    },
    'expires-at': {
      type: 'string',
      value: 'ISO',
      description: 'The key expires at this time (ISO 8601); not with --expires-in',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values }) {
    if (values['expires-in'] && values['expires-at']) {
      throw new UsageError('use either --expires-in or --expires-at, not both');
    }
    const expiresAt = values['expires-in']
      ? new Date(
          Date.now() + durationFlag('--expires-in', values['expires-in'], EXPIRES_IN, '30d'),
        ).toISOString()
      : values['expires-at'];
    const key = await client(values).apiKeys.create({
      name: values.name,
      role: values.role as 'admin',
      ...(expiresAt ? { expires_at: expiresAt } : {}),
    });
    print(values.json, key, () =>
      shownOnce(
        `Created API key ${key.id} (${key.name}, role ${key.role}${key.expires_at ? `, expires ${key.expires_at}` : ''}).`,
        key.secret,
      ),
    );
    return 0;
  },
});

const list = command({
  name: 'list',
  description: 'Lists the keys of your tenant.',
  options: {
    role: { type: 'string', value: 'ROLE', description: `Only the keys of this role: ${ROLES}` },
    'include-revoked': { type: 'boolean', description: 'Revoked keys too' },
  },
  common: CLIENT_OPTIONS,
  async run({ values }) {
    const keys: ApiKey[] = [];
    for await (const key of client(values).apiKeys.listAll({
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
    return 0;
  },
});

const revoke = command({
  name: 'revoke',
  args: 'ID',
  description: 'Revokes a key at once. The last active admin key cannot be revoked.',
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const id = positionals[0];
    if (id === undefined) throw new UsageError('keys revoke needs the key id');
    const key = await client(values).apiKeys.revoke(id);
    print(values.json, key, () => `Revoked API key ${key.id} (${key.name}).`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'keys',
  summary: 'Manage API keys of your tenant',
  subcommands: [create, list, revoke],
});
