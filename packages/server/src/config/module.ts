import { defineModule } from '../module.ts';
import { ConfigService, configRelayRoute } from './config-service.ts';
import { configEnvironmentRoutes } from './environment-routes.ts';
import { configRoutes } from './routes.ts';
import { CONFIG_SETTINGS } from './settings.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    config: ConfigService;
  }
}

/** The config center: keys per environment, versions, schemas, watches. */
export const configModule = defineModule({
  name: 'config',
  needs: ['kv', 'gateway'],
  settings: CONFIG_SETTINGS,
  errors: [
    'CONFIG_KEY_NOT_FOUND',
    'CONFIG_VERSION_NOT_FOUND',
    'CONFIG_SCHEMA_NOT_FOUND',
    'REVISION_COMPACTED',
  ],
  topics: [
    {
      name: 'config',
      description: 'config.<env>: changes of the config keys of one environment',
      relay: configRelayRoute,
    },
  ],
  create: ({ log, settings, need }) =>
    new ConfigService({
      kv: need('kv').kv,
      log,
      limits: need('gateway').limits,
      settings: {
        defaultEnv: settings.configDefaultEnv,
        historyMaxVersions: settings.configHistoryMaxVersions,
      },
    }),
  routes:
    (config, { shutdown }) =>
    async (app) => {
      await app.register(configRoutes, { config, shutdown });
      await app.register(configEnvironmentRoutes, { config });
    },
});
