import type { RunningServer, StartOptions } from '../../server.ts';
import { loadSettingsWithFlags, STORE_FLAGS } from '../settings-flags.ts';
import { command, type OptionSpecs, single } from '../spec.ts';

/** The flags of the commands that run a node: `start` and `runner`. */
export const NODE_OPTIONS = {
  config: STORE_FLAGS.config,
  port: {
    type: 'string',
    value: 'N',
    description: 'TCP port (env ORCHESTRA_PORT; default 8080)',
  },
  host: {
    type: 'string',
    value: 'HOST',
    description: 'Listen address (env ORCHESTRA_HOST; default localhost)',
  },
  'data-dir': STORE_FLAGS['data-dir'],
  'database-url': STORE_FLAGS['database-url'],
  'log-level': {
    type: 'string',
    value: 'LEVEL',
    description: 'fatal|error|warn|info|debug|trace|silent (env ORCHESTRA_LOG_LEVEL)',
  },
} as const satisfies OptionSpecs;

export const group = single({
  name: 'start',
  summary: 'Run the server',
  command: command({
    name: 'start',
    description:
      'Runs the Orchestra server in the foreground until SIGTERM or SIGINT. Settings come from ORCHESTRA_* environment variables and an optional JSON config file; the flags below win. On first start it creates the system tenant and prints its admin key once.',
    options: NODE_OPTIONS,
    async run({ values }) {
      await startServer(await loadSettingsWithFlags(values));
      return 0;
    },
  }),
});

/**
 * Runs a node in the foreground until SIGTERM or SIGINT: `orchestra start`, and with
 * `options` (its modules, the routes it serves) `orchestra runner`.
 */
export async function startServer(
  settings: Awaited<ReturnType<typeof loadSettingsWithFlags>>,
  options: Pick<StartOptions, 'modules' | 'serve'> = {},
): Promise<void> {
  const { startServer } = await import('../../server.ts');
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
      ...options,
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
