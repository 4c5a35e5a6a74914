import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ClusterNode,
  errorResponses,
  eventStreamResponse,
  GrantLease,
  INSTANCE_ID_PATTERN,
  Lease,
  RegisterInstance,
  ReportLoad,
  SERVICE_NAME_PATTERN,
  ServiceInstance,
  ServiceInstancePage,
  ServiceList,
  ServiceWatchEvent,
} from '@orchestra/protocol';
import Type from 'typebox';
import { STRATEGY_NAMES, type StrategyName } from '../balancing/strategies.ts';
import { lastEventIdOf, type StreamFormat, sendStream, streamFormat } from '../events/index.ts';
import type { KvStore } from '../kv/index.ts';
import {
  ADMIN_ROLES,
  isSystemAdmin,
  READ_ROLES,
  type Role,
  WRITE_ROLES,
} from '../platform/auth.ts';
import { invalidField } from '../platform/envelope.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import { decodeCursor, PageQuery, responseBudget, toPage } from '../platform/pagination.ts';
import type { NodeRegistry } from './nodes.ts';
import { leaseNotFound, type RegistryService, type ServiceEvent } from './registry-service.ts';

/** Agents and services register themselves with agent-role keys; people read. */
const REGISTER_ROLES: readonly Role[] = [...WRITE_ROLES, 'agent'];
const DISCOVER_ROLES: readonly Role[] = [...READ_ROLES, 'agent'];

const ServiceParams = Type.Object({ name: Type.String({ pattern: SERVICE_NAME_PATTERN }) });
const InstanceParams = Type.Object({
  name: Type.String({ pattern: SERVICE_NAME_PATTERN }),
  id: Type.String({ pattern: INSTANCE_ID_PATTERN }),
});
const INSTANCE_ID = new RegExp(INSTANCE_ID_PATTERN);

function encodeServiceEvent(event: ServiceEvent, format: StreamFormat): string {
  const json = JSON.stringify(event);
  return format === 'ndjson'
    ? `${json}\n`
    : `id: ${event.revision}\nevent: ${event.type}\ndata: ${json}\n\n`;
}

/** `/v1/leases`, `/v1/services` and `/v1/cluster/nodes`. */
export const registryRoutes: FastifyPluginAsyncTypebox<{
  registry: RegistryService;
  kv: KvStore;
  nodes: NodeRegistry;
  shutdown: AbortSignal;
}> = async (app, { registry, kv, nodes, shutdown }) => {
  app.addSchema(ServiceInstance);
  app.addSchema(Lease);
  app.addSchema(ServiceWatchEvent);

  // Leases.

  const leaseOut = (lease: { id: string; ttlMs: number; remainingMs: number }) => ({
    id: lease.id,
    ttl_seconds: Math.round(lease.ttlMs / 1000),
    remaining_ms: Math.max(0, Math.round(lease.remainingMs)),
  });
  const LeaseParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

  app.post(
    '/v1/leases',
    {
      schema: {
        tags: ['registry'],
        operationId: 'grantLease',
        summary: 'Grant a lease',
        description:
          'Keys and instances bound to the lease are deleted when it ends: revoked, or `ttl_seconds` after its last keep-alive. etcd may round a short TTL up to its minimum.',
        body: GrantLease,
        response: { 201: Type.Ref('Lease'), ...errorResponses },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request, reply) => {
      const lease = await kv.grantLease(
        principalOf(request).tenant.id,
        request.body.ttl_seconds * 1000,
      );
      reply.status(201);
      return leaseOut(lease);
    },
  );

  app.get(
    '/v1/leases/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'getLease',
        summary: 'How long a lease has left',
        params: LeaseParams,
        response: { 200: Type.Ref('Lease'), ...errorResponses },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request) => {
      const lease = await kv.lease(principalOf(request).tenant.id, request.params.id);
      if (lease === undefined) throw leaseNotFound(request.params.id);
      return leaseOut(lease);
    },
  );

  app.post(
    '/v1/leases/:id/keepalive',
    {
      schema: {
        tags: ['registry'],
        operationId: 'keepLeaseAlive',
        summary: 'Keep a lease alive: its TTL starts over',
        description: '404 LEASE_NOT_FOUND once it has ended: grant a new one and register again.',
        params: LeaseParams,
        response: { 200: Type.Ref('Lease'), ...errorResponses },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request) => {
      const lease = await kv.keepAlive(principalOf(request).tenant.id, request.params.id);
      if (lease === undefined) throw leaseNotFound(request.params.id);
      return leaseOut(lease);
    },
  );

  app.delete(
    '/v1/leases/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'revokeLease',
        summary: 'Revoke a lease: what is bound to it goes now',
        params: LeaseParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request, reply) => {
      if (!(await kv.revokeLease(principalOf(request).tenant.id, request.params.id)))
        throw leaseNotFound(request.params.id);
      reply.status(204);
      return null;
    },
  );

  // Services.

  app.put(
    '/v1/services/:name/instances/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'registerServiceInstance',
        summary: 'Register (or re-register) a service instance',
        description:
          'The instance is bound to `lease`, or to a new lease of `ttl_seconds` (default 30) whose id comes back in `lease`: keep it alive with `POST /v1/leases/{id}/keepalive`, or the instance goes. With a `health_check`, the registry checks the instance and `resolve` returns it only while the check passes. 201 when new, 200 when it replaced a registration.',
        params: InstanceParams,
        body: RegisterInstance,
        response: {
          200: Type.Ref('ServiceInstance'),
          201: Type.Ref('ServiceInstance'),
          ...errorResponses,
        },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request, reply) => {
      const body = request.body;
      if (body.lease !== undefined && body.ttl_seconds !== undefined)
        throw invalidField(
          'body.ttl_seconds',
          'cannot be given with lease (the lease has its own TTL)',
        );
      const check = body.health_check;
      if (check && check.timeout_ms >= check.interval_ms)
        throw invalidField('body.health_check.timeout_ms', 'must be less than interval_ms');
      if (check?.type === 'tcp' && check.path !== undefined)
        throw invalidField('body.health_check.path', 'applies to HTTP checks only');
      const { instance, created } = await registry.register(
        principalOf(request).tenant.id,
        request.params.name,
        {
          id: request.params.id,
          address: body.address,
          port: body.port,
          metadata: body.metadata,
          health_check: check,
          lease: body.lease,
          ttl_seconds: body.ttl_seconds,
        },
      );
      reply.status(created ? 201 : 200);
      return instance;
    },
  );

  app.get(
    '/v1/services/:name/instances/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'getServiceInstance',
        summary: 'Get a service instance',
        params: InstanceParams,
        response: { 200: Type.Ref('ServiceInstance'), ...errorResponses },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request) =>
      registry.instance(principalOf(request).tenant.id, request.params.name, request.params.id),
  );

  app.patch(
    '/v1/services/:name/instances/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'reportServiceInstanceLoad',
        summary: 'Report an instance’s load',
        description:
          'What `least_connections` (`connections`), `latency` (`latency_ms`) and `resource` (`cpu`, `memory`, 0 to 1) resolve by.',
        params: InstanceParams,
        body: ReportLoad,
        response: { 200: Type.Ref('ServiceInstance'), ...errorResponses },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request) =>
      registry.reportLoad(
        principalOf(request).tenant.id,
        request.params.name,
        request.params.id,
        request.body.load,
      ),
  );

  app.delete(
    '/v1/services/:name/instances/:id',
    {
      schema: {
        tags: ['registry'],
        operationId: 'deregisterServiceInstance',
        summary: 'Deregister a service instance',
        description:
          'Its lease stays (other instances may share it); revoke the lease to end them all.',
        params: InstanceParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: REGISTER_ROLES },
    },
    async (request, reply) => {
      await registry.deregister(
        principalOf(request).tenant.id,
        request.params.name,
        request.params.id,
      );
      reply.status(204);
      return null;
    },
  );

  app.get(
    '/v1/services',
    {
      schema: {
        tags: ['registry'],
        operationId: 'listServices',
        summary: 'List services with their instance counts',
        response: { 200: ServiceList, ...errorResponses },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request) => ({ items: await registry.services(principalOf(request).tenant.id) }),
  );

  app.get(
    '/v1/services/:name',
    {
      schema: {
        tags: ['registry'],
        operationId: 'listServiceInstances',
        summary: 'A service’s instances: healthy ones, or all with `all=true`',
        description:
          'Instances by id, at most `limit` (default: all) and about ORCHESTRA_RESPONSE_MAX_BYTES of JSON (4 MiB by default; at least one instance); `next_cursor` (with the same `all`) gets the rest, null when there is none.',
        params: ServiceParams,
        querystring: Type.Object(
          {
            all: Type.Optional(Type.Boolean({ default: false })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
            cursor: PageQuery.cursor,
          },
          { additionalProperties: false },
        ),
        response: { 200: ServiceInstancePage, ...errorResponses },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request) => {
      const { instances, revision } = await registry.instances(
        principalOf(request).tenant.id,
        request.params.name,
      );
      const after = decodeCursor(request.query.cursor, (id) => INSTANCE_ID.test(id));
      // Listed by key, so by id: the cursor is the last id answered.
      const shown = instances.filter(
        (i) =>
          (request.query.all || i.status === 'passing') && (after === undefined || i.id > after),
      );
      const page = toPage(
        shown,
        request.query.limit ?? shown.length,
        (i) => i,
        responseBudget(request),
      );
      return {
        name: request.params.name,
        revision,
        instances: page.items,
        next_cursor: page.next_cursor,
      };
    },
  );

  app.get(
    '/v1/services/:name/resolve',
    {
      schema: {
        tags: ['registry'],
        operationId: 'resolveService',
        summary: 'Pick one healthy instance',
        description:
          'Through the shared strategy module (docs/load-balancing.md); `key` keeps `consistent_hash` picks together. 404 SERVICE_NOT_FOUND without instances, 503 NO_HEALTHY_INSTANCE when none passes.',
        params: ServiceParams,
        querystring: Type.Object(
          {
            strategy: Type.Optional(
              Type.Union(
                STRATEGY_NAMES.map((s) => Type.Literal(s)),
                { default: 'round_robin' },
              ),
            ),
            key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref('ServiceInstance'), ...errorResponses },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request) => {
      const strategy = (request.query.strategy ?? 'round_robin') as StrategyName;
      if (strategy === 'consistent_hash' && request.query.key === undefined)
        throw invalidField('querystring.key', 'is required with consistent_hash');
      return registry.resolve(
        principalOf(request).tenant.id,
        request.params.name,
        strategy,
        request.query.key,
      );
    },
  );

  app.get(
    '/v1/services/:name/watch',
    {
      schema: {
        tags: ['registry'],
        operationId: 'watchService',
        summary: 'Watch a service’s membership',
        description:
          'Server-Sent Events (or NDJSON): `put` with the whole instance when one registers, re-registers, or its health or load changes; `delete` when one goes (deregistered, or its lease ended); the revision is the SSE id. Resume with `Last-Event-ID` or `from_revision`; `resync` with every instance when that revision is gone.',
        params: ServiceParams,
        querystring: Type.Object(
          { from_revision: Type.Optional(Type.Integer({ minimum: 0 })) },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 20 })) }),
        response: {
          200: eventStreamResponse(
            Type.Ref('ServiceWatchEvent'),
            'Changes of the service’s membership.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: DISCOVER_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      let after = lastEventIdOf(request.headers['last-event-id']) ?? request.query.from_revision;
      // Fails here (503) rather than inside the stream when the backend is down.
      if (after === undefined) after = await kv.revision(principal.tenant.id);
      const from = after;
      await sendStream<ServiceEvent>(
        request,
        reply,
        (signal) => registry.watch(principal.tenant.id, request.params.name, from, signal),
        {
          format: streamFormat(request.headers.accept),
          stop: shutdown,
          encode: encodeServiceEvent,
          endEvent: false,
        },
      );
      return reply;
    },
  );

  // Nodes.

  app.get(
    '/v1/cluster/nodes',
    {
      schema: {
        tags: ['registry'],
        operationId: 'listClusterNodes',
        summary: 'The Orchestra nodes of this cluster',
        description:
          'System-tenant admins only. Every node registers itself with a lease it renews every few seconds; a node that stops renewing drops out within 10 s. `health_checker` marks the node that runs the registry’s health checks.',
        response: {
          200: Type.Object({
            items: Type.Array(ClusterNode),
          }),
          ...errorResponses,
        },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => {
      if (!isSystemAdmin(principalOf(request)))
        throw new ApiError(
          'PERMISSION_DENIED',
          'Only an admin of the system tenant sees the cluster’s nodes',
        );
      const [list, leader] = await Promise.all([
        nodes.nodes(),
        kv.get(nodes.systemTenantId, 'cluster/health-checker'),
      ]);
      return { items: list.map((n) => ({ ...n, health_checker: leader?.value === n.id })) };
    },
  );
};
