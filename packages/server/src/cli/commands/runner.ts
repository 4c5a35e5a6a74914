import { loadSettingsWithFlags } from '../settings-flags.ts';
import { command, single, UsageError } from '../spec.ts';
import { NODE_OPTIONS } from './start.ts';

export const group = single({
  name: 'runner',
  summary: 'Run a hosted-agent runner: a cluster node that runs hosted agents and serves no API',
  command: command({
    name: 'runner',
    description: [
      'Runs a node of a cluster that takes and runs hosted agents’ tasks (templates of kind llm) and serves only /healthz, /readyz, /metrics and /openapi.json: the runtime that scales on its own. It joins the cluster’s PostgreSQL (ORCHESTRA_DATABASE_URL, required) and should share its NATS (ORCHESTRA_NATS_URL), so that it hears of new tasks at once, and the secrets key (ORCHESTRA_SECRETS_KEY) of the other nodes, so that it can read the providers’ keys. Nodes that serve the API can leave hosted agents to runners with ORCHESTRA_HOSTED_RUNNER=false. Example:',
      '  ORCHESTRA_DATABASE_URL=postgres://… ORCHESTRA_NATS_URL=nats://… orchestra runner --port 8081',
    ].join('\n'),
    options: NODE_OPTIONS,
    async run({ values, positionals, path }) {
      if (positionals.length > 0) throw new UsageError(`${path} takes no arguments`);
      const settings = await loadSettingsWithFlags(values);
      if (settings.databaseUrl === undefined) {
        throw new UsageError(
          'orchestra runner joins a cluster: set ORCHESTRA_DATABASE_URL (or --database-url) to the PostgreSQL of the nodes that serve the API',
        );
      }
      const [{ RUNNER_MODULES }, { startServer }] = await Promise.all([
        import('../../modules.ts'),
        import('./start.ts'),
      ]);

      await startServer(
        { ...settings, hostedRunner: true },
        { modules: RUNNER_MODULES, serve: ['ops'] },
      );
      return 0;
    },
  }),
});
