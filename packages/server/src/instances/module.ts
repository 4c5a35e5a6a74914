import { defineModule } from '../module.ts';
import { DockerDriver } from './docker-driver.ts';
import { fileRoutes } from './file-routes.ts';
import { InstanceForwarding } from './forwarding.ts';
import { InstanceService, type PlacementStrategy } from './instance-service.ts';
import { type LimitMode, ResourceLimiter } from './limits.ts';
import { instancesMigrations } from './migrations.ts';
import { portRoutes } from './port-routes.ts';
import { ProcessDriver } from './process-driver.ts';
import { instanceRoutes } from './routes.ts';
import { checkInstancesSettings, INSTANCES_SETTINGS, parsePortRange } from './settings.ts';
import { uploadRoutes } from './upload-routes.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    instances: InstanceService;
  }
}

/** Workspaces: workspace templates and sandboxed instances (issue 22). */
export const instancesModule = defineModule({
  name: 'instances',
  needs: ['events', 'gateway'],
  jobs: ['instance-lifetimes', 'instance-failover'],
  migrations: instancesMigrations,
  tables: [
    'workspace_templates',
    'workspace_uploads',
    'workspace_upload_chunks',
    'instances',
    'instance_labels',
    'instance_ports',
    'port_shares',
  ],
  settings: INSTANCES_SETTINGS,
  checkSettings: checkInstancesSettings,
  errors: [
    'WORKSPACE_TEMPLATE_NOT_FOUND',
    'WORKSPACE_TEMPLATE_ALREADY_EXISTS',
    'WORKSPACE_TEMPLATE_IN_USE',
    'WORKSPACE_INSTANCE_NOT_FOUND',
    'WORKSPACE_INSTANCE_STATE',
    'WORKSPACE_FILE_NOT_FOUND',
    'WORKSPACE_FILE_EXISTS',
    'WORKSPACE_DIRECTORY_NOT_EMPTY',
    'RANGE_NOT_SATISFIABLE',
    'SEARCH_UNAVAILABLE',
    'SANDBOX_UNAVAILABLE',
    'PORTS_EXHAUSTED',
    'PORT_NOT_LISTENING',
    'PORT_SHARE_NOT_FOUND',
    'WORKSPACE_UPLOAD_NOT_FOUND',
    'WORKSPACE_UPLOAD_IN_USE',
    'NODE_UNREACHABLE',
  ],
  topics: [
    {
      name: 'instances',
      description: 'instances: state changes of the tenant’s instances',
      tenantWide: true,
    },
  ],
  later: ['registry'],
  create({ store, log, settings, need, jobs, later }) {
    const driver = new ProcessDriver({
      dataDir: settings.dataDir,
      sourceRoots: settings.instanceSourceRoots.split(':').filter((p) => p !== ''),
      limiter: ResourceLimiter.detect(settings.instanceLimits as LimitMode, settings.instanceId),
    });
    const docker =
      settings.dockerHost === ''
        ? undefined
        : new DockerDriver({
            socketPath: settings.dockerHost.replace(/^unix:\/\//, ''),
            dataDir: settings.dataDir,
            layout: driver,
          });
    const registry = later('registry');
    const clusterNodes = () => registry().nodes.nodes();
    const service = new InstanceService({
      store,
      events: need('events').events,
      drivers: docker === undefined ? { process: driver } : { process: driver, docker },
      nodeId: settings.instanceId,
      log: log.child({ module: 'instances' }),
      stopGraceMs: settings.instanceStopGraceMs,
      uploadMaxBytes: settings.instanceUploadMaxBytes,
      jobs,
      sweepMs: settings.instanceSweepMs,
      limits: need('gateway').limits,
      portRange: parsePortRange(settings.instancePortRange),
      placement: settings.instancePlacement as PlacementStrategy,
      clusterNodes,
      claim: (key) => registry().nodes.claim(key),
      lostAfterMs: settings.instanceLostAfterMs,
    });
    service.forwarding = new InstanceForwarding({
      selfId: settings.instanceId,
      ownerOf: async (request) => {
        if (!service.clustered) return undefined;
        const params = (request.params ?? {}) as { instance?: string; token?: string };
        if (params.instance !== undefined) return service.nodeOf(params.instance);
        if (params.token !== undefined && request.url.startsWith('/share/')) {
          const shared = await service.shares.resolve(params.token).catch(() => undefined);
          return shared === undefined ? undefined : service.nodeOf(shared.instanceId);
        }
        return undefined;
      },
      liveNodes: async () => (await clusterNodes()).map((n) => ({ id: n.id, url: n.url })),
    });
    return service;
  },
  routes:
    (instances, { shutdown }) =>
    async (app) => {
      // Requests about another node's instance go to that node (these routes and their children).
      const forwarding = instances.forwarding;
      if (forwarding !== undefined) app.addHook('onRequest', forwarding.hook);
      await app.register(instanceRoutes, { instances, shutdown });
      await app.register(fileRoutes, { instances, shutdown });
      await app.register(portRoutes, { instances, shares: instances.shares });
      await app.register(uploadRoutes, { instances });
    },
  start: (instances) => instances.reconcile(),
  stop: (instances) => instances.close(),
});
