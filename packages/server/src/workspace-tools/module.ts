import type { FastifyPluginAsync } from 'fastify';
import { defineModule } from '../module.ts';
import { callerPrincipal, WORKSPACE_CALL_PATH, WorkspaceCalls } from './workspace-calls.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    'workspace-tools': WorkspaceCalls;
  }
}

/** Most bytes of a workspace call one node sends another (a write_file of 4 MiB, escaped). */
const CALL_BODY_LIMIT = 16 * 1024 * 1024;

/**
 * Agents in workspaces: a task that names an instance gets the built-in `workspace.*` tools
 * of the tool registry for it, and checkpoints before each attempt (and after each turn of
 * a hosted agent). The tasks and tools modules reach it `later`; it reaches the instances,
 * their checkpoints and terminals.
 */
export const workspaceToolsModule = defineModule({
  name: 'workspace-tools',
  needs: ['instances', 'checkpoints', 'terminals'],
  create({ settings, secrets, log, need }) {
    return new WorkspaceCalls({
      instances: need('instances'),
      checkpoints: need('checkpoints'),
      terminals: need('terminals'),
      box: secrets,
      nodeId: settings.instanceId,
      log: log.child({ module: 'workspace-tools' }),
    });
  },
  routes: (calls) => {
    const plugin: FastifyPluginAsync = async (app) => {
      // The body is hashed as it came: the seal covers those bytes.
      app.removeContentTypeParser('application/json');
      app.addContentTypeParser(
        'application/json',
        { parseAs: 'string' },
        (_request, body, done) => {
          done(null, typeof body === 'string' ? body : body.toString('utf8'));
        },
      );
      app.post(
        WORKSPACE_CALL_PATH,
        {
          bodyLimit: CALL_BODY_LIMIT,
          // Between the nodes of a cluster, sealed with their secrets key: not for clients.
          schema: { hide: true },
          // No role may: every key and JWT gets 403 before the body is read; the token has
          // no role, and the handler checks it is this kind.
          config: { auth: [], token: calls.tokenKind },
        },
        async (request) => {
          const call = calls.verify(
            request.token,
            typeof request.body === 'string' ? request.body : '',
          );
          const abort = new AbortController();
          // The calling node gives up (its caller did): the command here is cancelled too.
          const onClose = () => {
            if (!request.raw.complete || request.raw.socket?.destroyed) abort.abort();
          };
          request.raw.socket?.once('close', onClose);
          try {
            return await calls.run(
              callerPrincipal(call.tenant_id, call.caller),
              call,
              abort.signal,
            );
          } finally {
            request.raw.socket?.off('close', onClose);
          }
        },
      );
    };
    return plugin;
  },
});
