import { defineModule } from '../module.ts';
import { ApiError } from '../platform/errors.ts';
import { providersMigrations } from './migrations.ts';
import { ModelService } from './model-service.ts';
import { ModelProviderRecords } from './provider-records.ts';
import { providerRoutes } from './routes.ts';

/** What other modules use: model calls through a tenant's providers. */
export interface ProvidersInterface {
  /** Model calls along a chain of providers, with limits, breakers and fallbacks. */
  models: ModelService;
  /** The module's own: the provider records (routes). */
  records: ModelProviderRecords;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    providers: ProvidersInterface;
  }
}

/** Model providers (OpenAI-compatible and Anthropic) and the calls hosted agents make. */
export const providersModule = defineModule({
  name: 'providers',
  needs: ['secrets'],
  migrations: providersMigrations,
  tables: ['model_providers'],
  errors: ['MODEL_PROVIDER_NOT_FOUND', 'MODEL_PROVIDER_ALREADY_EXISTS', 'MODEL_PROVIDER_IN_USE'],
  create({ store, secrets: box, log, metrics, need }) {
    const secrets = need('secrets');
    const records = new ModelProviderRecords({
      store,
      box,
      secretExists: async (tenantId, name) => {
        try {
          await secrets.service.resolve(tenantId, name);
          return true;
        } catch (err) {
          if (err instanceof ApiError && err.code === 'SECRET_NOT_FOUND') return false;
          throw err;
        }
      },
    });
    const models = new ModelService({
      records,
      secrets,
      log: log.child({ module: 'providers' }),
      registry: metrics.registry,
    });
    return { models, records };
  },
  routes: (self) => async (app) => {
    await app.register(providerRoutes, { records: self.records, models: self.models });
  },
});
