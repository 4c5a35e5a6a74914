import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses, Readiness } from '@orchestra/protocol';
import Type from 'typebox';
import type { Bus } from '../bus/bus.ts';
import type { KvStore } from '../kv/index.ts';
import { ApiError } from '../platform/errors.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { RateLimiter } from '../platform/rate-limit.ts';
import type { RelationalStore } from '../store/store.ts';

const READY_TIMEOUT_MS = 2000;

/** Probes stay answerable under load: no rate limit, no load shedding, quiet access log. */
const probeConfig = { probe: true as const, pressureHandler: () => undefined };

/** `/healthz`, `/readyz` and `/metrics`. */
export const opsRoutes: FastifyPluginAsyncTypebox<{
  store: RelationalStore;
  kv: KvStore;
  bus: Bus;
  rateLimiter: RateLimiter | undefined;
  metrics: Metrics;
  version: string;
  instanceId: string;
}> = async (app, { store, kv, bus, rateLimiter, metrics, version, instanceId }) => {
  /** Times one dependency's ping; a failure is logged here and reported as `failed`. */
  const check =
    (name: string, ping: (timeoutMs: number) => Promise<void>) =>
    async (): Promise<{ status: 'ok' | 'failed'; latency_ms?: number }> => {
      const started = performance.now();
      try {
        await ping(READY_TIMEOUT_MS);
        const latency = Math.round((performance.now() - started) * 100) / 100;
        return { status: 'ok', latency_ms: latency };
      } catch (err) {
        app.log.warn({ err }, `readiness: ${name} does not answer`);
        return { status: 'failed' };
      }
    };
  /** The config store on etcd: its own check (embedded, it is the relational store). */
  const checkKv = check('etcd', (t) => kv.ping(t));
  /** The bus on NATS: a round trip to the server (in-process, there is nothing to check). */
  const checkBus = check('NATS', (t) => bus.ping(t));
  const redis = rateLimiter?.backend === 'redis' ? rateLimiter : undefined;
  const checkRedis = check('Redis', (t) => redis?.ping(t) ?? Promise.resolve());
  /** PostgreSQL is a server that can go away; the embedded SQLite file cannot. */
  const checkStore = check('PostgreSQL', (t) => store.ping(t));
  metrics.dependencyUp.reset();
  let droppedSeen = 0;
  metrics.onCollect(async () => {
    // Before the first await: prom-client renders the counter concurrently with this.
    const dropped = bus.dropped - droppedSeen;
    if (dropped > 0) metrics.busDropped.inc(dropped);
    droppedSeen += dropped;
    const [storeUp, kvUp, busUp, redisUp] = await Promise.all([
      store.kind === 'postgres' ? checkStore() : undefined,
      kv.backend === 'etcd' ? checkKv() : undefined,
      bus.backend === 'nats' ? checkBus() : undefined,
      redis ? checkRedis() : undefined,
    ]);
    const up = (c: { status: string }) => (c.status === 'ok' ? 1 : 0);
    if (storeUp) metrics.dependencyUp.set({ dependency: 'postgres' }, up(storeUp));
    if (kvUp) metrics.dependencyUp.set({ dependency: 'etcd' }, up(kvUp));
    if (busUp) metrics.dependencyUp.set({ dependency: 'nats' }, up(busUp));
    if (redisUp) metrics.dependencyUp.set({ dependency: 'redis' }, up(redisUp));
  });

  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        operationId: 'getHealth',
        summary: 'Liveness: the process answers',
        response: {
          200: Type.Object({ status: Type.Literal('ok') }),
          503: Type.Ref('ErrorResponse', { description: 'SHUTTING_DOWN: the server is stopping.' }),
        },
      },
      config: probeConfig,
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        operationId: 'getReadiness',
        summary: 'Readiness: the storage answers',
        description:
          '503 STORAGE_UNAVAILABLE when the relational store does not answer within 2 s: nothing works without it. With the config store on etcd, an etcd that does not answer makes the node `degraded` (still 200): tasks, agents and topics work, config and the service registry answer 503 STORAGE_UNAVAILABLE until etcd is back. With the bus on NATS, a NATS that does not answer makes the node `degraded` too: everything works, and other nodes hear of changes by polling the store (up to 2 s late) until NATS is back. With rate limits in Redis, a Redis that does not answer makes it `degraded`: each node then limits on its own.',
        response: {
          200: Readiness,
          ...errorResponses,
        },
      },
      config: probeConfig,
    },
    async () => {
      const started = performance.now();
      try {
        await store.ping(READY_TIMEOUT_MS);
      } catch (err) {
        throw new ApiError('STORAGE_UNAVAILABLE', `The ${store.kind} store does not answer`, {
          cause: err,
          // Driver messages can name hosts and users: they go to the log, not to this
          // unauthenticated response.
          details: { checks: { store: { status: 'failed' } } },
          headers: { 'retry-after': '5' },
        });
      }
      const latency = Math.round((performance.now() - started) * 100) / 100;
      const [kvCheck, busCheck, limitCheck] = await Promise.all([
        kv.backend === 'etcd'
          ? checkKv().then((c) => ({ ...c, backend: 'etcd' as const }))
          : { status: 'ok' as const, backend: 'embedded' as const, latency_ms: latency },
        bus.backend === 'nats'
          ? checkBus().then((c) => ({ ...c, backend: 'nats' as const }))
          : { status: 'ok' as const, backend: 'in-process' as const },
        redis
          ? checkRedis().then((c) => ({ ...c, backend: 'redis' as const }))
          : {
              status: 'ok' as const,
              backend: rateLimiter ? ('memory' as const) : ('off' as const),
            },
      ]);
      const ok = [kvCheck, busCheck, limitCheck].every((c) => c.status === 'ok');
      return {
        status: ok ? ('ready' as const) : ('degraded' as const),
        version,
        instance_id: instanceId,
        store: store.kind,
        checks: {
          store: { status: 'ok' as const, latency_ms: latency },
          kv: kvCheck,
          bus: busCheck,
          rate_limit: limitCheck,
        },
      };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        operationId: 'getMetrics',
        summary: 'Prometheus metrics in the text exposition format',
        response: {
          200: {
            description: 'The metrics of this node.',
            content: {
              'text/plain': {
                schema: Type.String({ description: 'Prometheus text exposition format 0.0.4.' }),
              },
            },
          },
          503: Type.Ref('ErrorResponse', { description: 'SHUTTING_DOWN: the server is stopping.' }),
        },
      },
      config: probeConfig,
    },
    async (_request, reply) => {
      reply.type(metrics.registry.contentType);
      return metrics.registry.metrics();
    },
  );
};
