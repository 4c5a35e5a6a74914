import { defineModule } from '../module.ts';
import { opsRoutes } from './routes.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    ops: Record<string, never>;
  }
}

/** Health, readiness and metrics endpoints for operators. */
export const opsModule = defineModule({
  name: 'ops',
  needs: ['kv'],
  create: () => ({}),
  routes:
    (_self, { store, bus, rateLimiter, metrics, version, settings, need }) =>
    async (app) => {
      await app.register(opsRoutes, {
        store,
        kv: need('kv').kv,
        bus,
        rateLimiter,
        metrics,
        version,
        instanceId: settings.instanceId,
      });
    },
});
