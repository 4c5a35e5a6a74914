import { defineModule } from '../module.ts';
import { templatesMigrations } from './migrations.ts';
import { templateRoutes } from './routes.ts';
import { TemplateService } from './template-service.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    templates: TemplateService;
  }
}

/** Versioned agent templates. */
export const templatesModule = defineModule({
  name: 'templates',
  needs: ['gateway'],
  migrations: templatesMigrations,
  tables: ['templates', 'template_versions', 'template_labels'],
  errors: ['TEMPLATE_NOT_FOUND', 'TEMPLATE_VERSION_NOT_FOUND', 'TEMPLATE_ALREADY_EXISTS'],
  create: ({ store, need }) => new TemplateService({ store, limits: need('gateway').limits }),
  routes: (templates) => async (app) => {
    await app.register(templateRoutes, { templates });
  },
});
