import { defineModule } from '../module.ts';
import { sessionsMigrations } from './migrations.ts';
import { sessionRoutes } from './routes.ts';
import { SessionService } from './session-service.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    sessions: SessionService;
  }
}

/** Sessions: conversations whose tasks run one after another on one agent. */
export const sessionsModule = defineModule({
  name: 'sessions',
  needs: ['events', 'gateway', 'tasks'],
  migrations: sessionsMigrations,
  tables: ['sessions', 'session_labels'],
  errors: ['SESSION_NOT_FOUND', 'SESSION_BUSY'],
  topics: [{ name: 'sessions', description: 'sessions.<id>: the events of one session' }],
  create({ store, need }) {
    const { tasks } = need('tasks');
    return new SessionService({
      store,
      events: need('events').events,
      limits: need('gateway').limits,
      // What sessions ask of tasks, and no more.
      tasks: {
        ofSession: (tenantId, sessionId) => tasks.ofSession(tenantId, sessionId),
        unfinishedInSession: (trx, tenantId, sessionId) =>
          tasks.unfinishedInSession(trx, tenantId, sessionId),
        deleteEvents: (trx, tenantId, taskIds) => tasks.deleteEvents(trx, tenantId, taskIds),
      },
    });
  },
  routes:
    (sessions, { shutdown }) =>
    async (app) => {
      await app.register(sessionRoutes, { sessions, shutdown });
    },
});
