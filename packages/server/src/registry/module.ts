import { cpus, freemem, loadavg, totalmem } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { defineModule } from '../module.ts';
import { VERSION } from '../version.ts';
import { HealthChecker } from './health.ts';
import { NodeRegistry } from './nodes.ts';
import { RegistryService, serviceRelayRoute } from './registry-service.ts';
import { registryRoutes } from './routes.ts';

export interface RegistryInterface {
  registry: RegistryService;
  /** The cluster's nodes, and the claims that pick one node for a leader's job. */
  nodes: NodeRegistry;
  checker: HealthChecker;
  /** This node's own: its address once it listens, and its event-loop delay monitor. */
  node: { url: string };
  loopDelay: ReturnType<typeof monitorEventLoopDelay>;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    registry: RegistryInterface;
  }
}

/** The service registry, health checks, and this cluster's own nodes. */
export const registryModule = defineModule({
  name: 'registry',
  needs: ['kv', 'gateway'],
  // A node's registration reports its load: the agents and realtime connections it holds.
  later: ['agents', 'realtime', 'instances'],
  errors: ['LEASE_NOT_FOUND', 'SERVICE_NOT_FOUND', 'INSTANCE_NOT_FOUND', 'NO_HEALTHY_INSTANCE'],
  topics: [
    {
      name: 'services',
      description: 'services.<name>: membership changes of one service',
      relay: serviceRelayRoute,
    },
    { name: 'registry', description: 'reserved' },
  ],
  jobs: ['node-lease', 'health-checks'],
  create({ store, log, jobs, settings, need, later }) {
    const { kv } = need('kv');
    const gateway = need('gateway');
    const agents = later('agents');
    const realtime = later('realtime');
    const instances = later('instances');
    const loopDelay = monitorEventLoopDelay({ resolution: 20 });
    loopDelay.enable();
    const startedAt = new Date().toISOString();
    // ORCHESTRA_NODE_URL, or (empty) the address it listens on, known at start.
    const node = { url: settings.nodeUrl };
    const nodes = new NodeRegistry({
      kv,
      jobs,
      systemTenantId: gateway.systemTenantId,
      nodeId: settings.instanceId,
      log,
      info: () => {
        const delay = loopDelay.mean / 1e6;
        loopDelay.reset();
        return {
          url: node.url,
          version: VERSION,
          started_at: startedAt,
          store: store.kind,
          kv: kv.backend,
          load: {
            rss_bytes: process.memoryUsage.rss(),
            event_loop_delay_ms: Number.isFinite(delay) ? Math.round(delay * 100) / 100 : 0,
            agents: agents().pool.connectionCount,
            realtime_connections: realtime().hub.connectionCount,
            cpu: Math.round(((loadavg()[0] ?? 0) / cpus().length) * 100) / 100,
            memory: Math.round((1 - freemem() / totalmem()) * 100) / 100,
            instances: instances().runningHere,
          },
          instance_drivers: instances().driverNames,
        };
      },
    });
    const checker = new HealthChecker({ kv, nodes, log, tenants: gateway.tenantIds, jobs });
    return {
      registry: new RegistryService({ kv, defaultTtlSeconds: 30 }),
      nodes,
      checker,
      node,
      loopDelay,
    };
  },
  async start(self, { url }) {
    if (self.node.url === '') self.node.url = url;
    await self.nodes.start();
    self.checker.start();
  },
  async stop(self) {
    await self.checker.stop();
    await self.nodes.stop();
    self.loopDelay.disable();
  },
  routes:
    ({ registry, nodes }, { shutdown, need }) =>
    async (app) => {
      await app.register(registryRoutes, { registry, kv: need('kv').kv, nodes, shutdown });
    },
});
