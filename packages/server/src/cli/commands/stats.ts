import { MAX_STATS_MINUTES } from '@orchestra/protocol/constants';
import { CLIENT_OPTIONS, client, countFlag, noArguments, print } from '../common.ts';
import { command, single } from '../spec.ts';
import { describeStats } from '../stats-format.ts';

export const group = single({
  name: 'stats',
  summary: 'Agents by status, tasks by state, throughput and latency',
  command: command({
    name: 'stats',
    description:
      "Shows your tenant's agents by status and tasks by state now, then the tasks submitted and finished in each of the last N minutes with their latency (submission to success; p50 and p99 per minute).",
    options: {
      minutes: {
        type: 'string',
        value: 'N',
        description: `The minutes to show, 1 to ${MAX_STATS_MINUTES} (default 15)`,
      },
      template: {
        type: 'string',
        value: 'NAME|ID',
        description: "Counts only that template's tasks",
      },
    },
    common: CLIENT_OPTIONS,
    async run(invocation) {
      const { values } = invocation;
      noArguments(invocation);
      const stats = await client(values).stats({
        ...(values.minutes !== undefined
          ? { minutes: countFlag('--minutes', values.minutes, MAX_STATS_MINUTES) }
          : {}),
        ...(values.template !== undefined ? { template: values.template } : {}),
      });
      print(values.json, stats, () => describeStats(stats));
      return 0;
    },
  }),
});
