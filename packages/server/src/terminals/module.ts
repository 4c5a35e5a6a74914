import { defineModule } from '../module.ts';
import { TerminalAttachments } from './attach.ts';
import { terminalsMigrations } from './migrations.ts';
import { terminalRoutes } from './routes.ts';
import { TERMINALS_SETTINGS } from './settings.ts';
import { TerminalService } from './terminal-service.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    terminals: TerminalService;
  }
}

/** Viewers are pinged, and their credential checked again, this often. */
const VIEWER_PING_INTERVAL_MS = 30_000;

/** Terminals of instances: PTYs in their sandboxes, with server-side screens (issue 22). */
export const terminalsModule = defineModule({
  name: 'terminals',
  needs: ['instances'],
  migrations: terminalsMigrations,
  tables: ['terminals'],
  settings: TERMINALS_SETTINGS,
  errors: ['TERMINAL_NOT_FOUND', 'TERMINAL_EXITED'],
  create({ store, log, settings, need }, lifecycle) {
    const terminals = new TerminalService({
      store,
      instances: need('instances'),
      nodeId: settings.instanceId,
      log: log.child({ module: 'terminals' }),
      maxPerInstance: settings.terminalMaxPerInstance,
      scrollback: settings.terminalScrollback,
      maxViewers: settings.terminalMaxViewers,
    });
    const attachments = new TerminalAttachments({
      terminals,
      log: log.child({ module: 'terminals' }),
      nodeId: settings.instanceId,
      pingIntervalMs: VIEWER_PING_INTERVAL_MS,
    });
    viewers.set(terminals, attachments);
    lifecycle.add('terminal viewers', () => attachments.close());
    return terminals;
  },
  routes:
    (terminals, { need }) =>
    async (app) => {
      // Requests about another node's instance go to that node.
      const forwarding = need('instances').forwarding;
      if (forwarding !== undefined) app.addHook('onRequest', forwarding.hook);
      const attachments = viewers.get(terminals);
      if (attachments === undefined) throw new Error('terminals built without their viewers');
      await app.register(terminalRoutes, { terminals, attachments });
    },
  start: (terminals) => terminals.reconcile(),
  stop: async (terminals) => {
    await viewers.get(terminals)?.close();
    await terminals.shutdown();
  },
});

const viewers = new WeakMap<TerminalService, TerminalAttachments>();
