import { defineModule } from '../module.ts';
import { CheckpointService } from './checkpoint-service.ts';
import { checkpointsMigrations } from './migrations.ts';
import { checkpointRoutes } from './routes.ts';
import { CHECKPOINTS_SETTINGS } from './settings.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    checkpoints: CheckpointService;
  }
}

/** Checkpoints of instances' workspaces in a shadow git repository (issue 22). */
export const checkpointsModule = defineModule({
  name: 'checkpoints',
  needs: ['instances'],
  migrations: checkpointsMigrations,
  tables: ['checkpoints'],
  settings: CHECKPOINTS_SETTINGS,
  errors: ['CHECKPOINT_NOT_FOUND'],
  create({ store, log, settings, need }) {
    return new CheckpointService({
      store,
      instances: need('instances'),
      dataDir: settings.dataDir,
      maxFileBytes: settings.checkpointMaxFileBytes,
      log: log.child({ module: 'checkpoints' }),
    });
  },
  routes:
    (checkpoints, { need }) =>
    async (app) => {
      // Requests about another node's instance go to that node.
      const forwarding = need('instances').forwarding;
      if (forwarding !== undefined) app.addHook('onRequest', forwarding.hook);
      await app.register(checkpointRoutes, { checkpoints });
    },
});
