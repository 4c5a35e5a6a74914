import { CLIENT_OPTIONS, client, noArguments, print } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const nodes = command({
  name: 'nodes',
  description:
    "Lists the Orchestra nodes of the cluster: address, version, stores, when each last reported (every 30 s), its memory, event-loop delay, agents and realtime connections then, and which one runs the registry's health checks (*). A node whose lease lapses leaves the list within 10 s. Needs an admin key of the system tenant.",
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const nodes = await client(values).cluster.nodes();
    print(values.json, nodes, () =>
      formatTable(
        [
          'ID',
          'URL',
          'VERSION',
          'STORE',
          'KV',
          'SEEN',
          'RSS',
          'LOOP DELAY',
          'AGENTS',
          'CONNECTIONS',
          'INSTANCES',
          'DRIVERS',
        ],
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
          String(n.load.instances ?? 0),
          (n.instance_drivers ?? []).join(',') || '-',
        ]),
      ),
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'cluster',
  summary: 'The nodes of the cluster and their load (system admins)',
  subcommands: [nodes],
});
