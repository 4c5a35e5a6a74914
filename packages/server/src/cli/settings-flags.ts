import type { OptionSpecs } from './spec.ts';

// The flags of the commands that open the store themselves (start, recover-admin-key).

/** Where the settings come from: a config file, the data directory, the database. */
export const STORE_FLAGS = {
  config: {
    type: 'string',
    value: 'FILE',
    description: 'JSON config file (env ORCHESTRA_CONFIG_FILE)',
  },
  'data-dir': {
    type: 'string',
    value: 'DIR',
    description: 'Data directory (env ORCHESTRA_DATA_DIR; default .orchestra)',
  },
  'database-url': {
    type: 'string',
    value: 'URL',
    description: 'PostgreSQL URL (env ORCHESTRA_DATABASE_URL; default SQLite)',
  },
} as const satisfies OptionSpecs;

/**
 * The server's settings: environment, then the config file, then these flags. Loads the
 * settings module only now: it costs a client command's start-up time.
 */
export async function loadSettingsWithFlags(values: {
  config?: string | undefined;
  port?: string | undefined;
  host?: string | undefined;
  'data-dir'?: string | undefined;
  'database-url'?: string | undefined;
  'log-level'?: string | undefined;
}) {
  const { loadSettings } = await import('../modules.ts');
  return loadSettings(process.env, {
    ...(values.config ? { configFile: values.config } : {}),
    overrides: {
      port: values.port,
      host: values.host,
      dataDir: values['data-dir'],
      databaseUrl: values['database-url'],
      logLevel: values['log-level'],
    },
  });
}
