import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { ApiError } from '../platform/errors.ts';
import type { Metrics } from '../platform/metrics.ts';
import { errorResponses } from '../platform/schemas.ts';
import type { RelationalStore } from '../store/store.ts';

const READY_TIMEOUT_MS = 2000;

/** Probes stay answerable under load: no rate limit, no load shedding, quiet access log. */
const probeConfig = { probe: true as const, pressureHandler: () => undefined };

/** `/healthz`, `/readyz` and `/metrics`. */
export const opsRoutes: FastifyPluginAsyncTypebox<{
  store: RelationalStore;
  metrics: Metrics;
  version: string;
  instanceId: string;
}> = async (app, { store, metrics, version, instanceId }) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Liveness: the process answers',
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
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
        summary: 'Readiness: the storage answers',
        description: '503 STORAGE_UNAVAILABLE when the store does not answer within 2 s.',
        response: {
          200: Type.Object({
            status: Type.Literal('ready'),
            version: Type.String(),
            instance_id: Type.String(),
            store: Type.String(),
            checks: Type.Object({
              store: Type.Object({ status: Type.Literal('ok'), latency_ms: Type.Number() }),
            }),
          }),
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
      return {
        status: 'ready' as const,
        version,
        instance_id: instanceId,
        store: store.kind,
        checks: { store: { status: 'ok' as const, latency_ms: latency } },
      };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics in the text exposition format',
        produces: ['text/plain'],
      },
      config: probeConfig,
    },
    async (_request, reply) => {
      reply.type(metrics.registry.contentType);
      return metrics.registry.metrics();
    },
  );
};
