import { defineModule } from '../module.ts';
import { statsRoutes } from './routes.ts';
import { StatsService } from './stats-service.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    stats: StatsService;
  }
}

/**
 * Counts of a tenant's tasks and agents over time windows. The smallest module, and the
 * worked example of the contract in docs/architecture.md.
 */
export const statsModule = defineModule({
  name: 'stats',
  // Counts come from the tasks and agents modules' query functions (their index.ts).
  needs: ['templates', 'tasks', 'agents'],
  create: ({ store, need }) => new StatsService(store, need('templates')),
  routes: (stats) => async (app) => {
    await app.register(statsRoutes, { stats });
  },
});
