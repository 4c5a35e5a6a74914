import { STRATEGY_NAMES } from '@orchestra/protocol/constants';
import type { ResolveStrategy, ServiceInstance } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, print, UsageError } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const ls = command({
  name: 'ls',
  aliases: ['list'],
  args: '[NAME]',
  description:
    'Without NAME, lists the registered services: instances and passing instances. With NAME, lists the passing instances of that service.',
  options: {
    all: {
      type: 'boolean',
      description: 'With NAME: every instance, with its health status and last check error',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    if (positionals.length > 1) {
      throw new UsageError(
        `services ls takes at most one service name, got "${positionals.join(' ')}"`,
      );
    }
    const [name] = positionals;
    const api = client(values).services;
    if (name === undefined) {
      if (values.all) throw new UsageError('--all needs a service name');
      const services = await api.list();
      print(values.json, services, () =>
        formatTable(
          ['SERVICE', 'INSTANCES', 'PASSING'],
          services.map((s) => [s.name, String(s.instances), String(s.passing)]),
        ),
      );
      return 0;
    }
    const listed = await api.instances(name, { all: values.all });
    print(values.json, listed, () => instanceTable(listed.instances));
    return 0;
  },
});

const resolve = command({
  name: 'resolve',
  args: 'NAME',
  description:
    "Picks one passing instance as the registry's resolve does and prints its address:port.",
  options: {
    strategy: {
      type: 'string',
      value: 'S',
      description: `How to pick: ${STRATEGY_NAMES.join(', ')}`,
    },
    key: {
      type: 'string',
      value: 'K',
      description: 'The key consistent_hash hashes (needed by it)',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    const [name] = positionals;
    if (name === undefined) throw new UsageError('services resolve needs a service name');
    if (positionals.length > 1) {
      throw new UsageError(
        `services resolve takes one service name, got "${positionals.join(' ')}"`,
      );
    }
    const strategy = values.strategy;
    if (strategy !== undefined && !(STRATEGY_NAMES as readonly string[]).includes(strategy)) {
      throw new UsageError(
        `--strategy must be one of ${STRATEGY_NAMES.join(', ')}, got "${strategy}"`,
      );
    }
    if (strategy === 'consistent_hash' && values.key === undefined) {
      throw new UsageError('--strategy consistent_hash needs --key');
    }
    const instance = await client(values).services.resolve(name, {
      ...(strategy !== undefined ? { strategy: strategy as ResolveStrategy } : {}),
      ...(values.key !== undefined ? { key: values.key } : {}),
    });
    print(values.json, instance, () => hostPort(instance));
    return 0;
  },
});

export const group = defineGroup({
  name: 'services',
  summary: 'Service registry: registered instances and their health',
  notes:
    "Instances register themselves through the API or the SDK's ServiceClient. --json prints the API's JSON answer.",
  subcommands: [ls, resolve],
});

function hostPort(i: ServiceInstance): string {
  return `${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}`;
}

function instanceTable(instances: ServiceInstance[]): string {
  return formatTable(
    ['ID', 'ADDRESS', 'STATUS', 'VERSION', 'ZONE', 'REGISTERED', 'LAST ERROR'],
    instances.map((i) => [
      i.id,
      hostPort(i),
      i.status,
      i.metadata.version ?? '-',
      i.metadata.zone ?? '-',
      i.registered_at,
      i.last_error ?? '-',
    ]),
  );
}
