import { defineModule } from '../module.ts';
import { usageMigrations } from './migrations.ts';
import { usageRoutes } from './routes.ts';
import { UsageService } from './usage-service.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    usage: UsageService;
  }
}

/** Usage accounting (the analytics service): what hosted agents' model calls used. */
export const usageModule = defineModule({
  name: 'usage',
  needs: ['gateway'],
  migrations: usageMigrations,
  tables: ['model_usage'],
  create: ({ store }) => new UsageService({ store }),
  routes: (usage) => async (app) => {
    await app.register(usageRoutes, { usage });
  },
});
