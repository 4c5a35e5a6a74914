import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';

// The service registry (`/v1/leases`, `/v1/services`): leases with a TTL, instances bound to
// them, health checks, resolution and watch.

/** A host name or an IP address (v4 or v6). */
const ADDRESS = '^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})|[0-9A-Fa-f:.]{2,45})$';

export const HealthCheck = Type.Object(
  {
    type: Type.Union([Type.Literal('http'), Type.Literal('tcp')]),
    /** HTTP only; default `/`. 2xx and 3xx pass. */
    path: Type.Optional(
      Type.String({ pattern: '^/[^\\s]{0,1023}$', description: 'HTTP only; default `/`.' }),
    ),
    /** Default 10,000. */
    interval_ms: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 10_000 }),
    /** Default 2,000; less than the interval. */
    timeout_ms: Type.Integer({ minimum: 50, maximum: 60_000, default: 2_000 }),
    /** Consecutive passes to become passing; default 1. */
    healthy_threshold: Type.Integer({ minimum: 1, maximum: 20, default: 1 }),
    /** Consecutive failures to become failing; default 2. */
    unhealthy_threshold: Type.Integer({ minimum: 1, maximum: 20, default: 2 }),
  },
  { additionalProperties: false },
);
/**
 * How the registry checks an instance, as an instance carries it: the server fills in the
 * defaults of the fields a registration leaves out.
 */
export type HealthCheck = Static<typeof HealthCheck>;

export const InstanceMetadata = Type.Object(
  {
    version: Type.Optional(Type.String({ maxLength: 64 })),
    zone: Type.Optional(Type.String({ maxLength: 64 })),
    weight: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1000 })),
    labels: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[a-z0-9][a-z0-9._/-]{0,62}$' }),
        Type.String({ maxLength: 256 }),
        {
          maxProperties: 50,
          additionalProperties: false,
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type InstanceMetadata = Static<typeof InstanceMetadata>;

export const InstanceLoad = Type.Object(
  {
    connections: Type.Optional(Type.Integer({ minimum: 0 })),
    cpu: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    memory: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    latency_ms: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);
/** What an instance reports of its load, and what the strategies resolve by. */
export type InstanceLoad = Static<typeof InstanceLoad>;

export const ServiceInstance = Type.Object(
  {
    id: Type.String(),
    service: Type.String(),
    address: Type.String(),
    port: Type.Integer(),
    metadata: InstanceMetadata,
    health_check: Type.Union([HealthCheck, Type.Null()]),
    lease: Type.String(),
    registered_at: Timestamp,
    /** `passing` without a health check; otherwise the checks' verdict, `unknown` until the first one. */
    status: Type.Union(
      [Type.Literal('passing'), Type.Literal('failing'), Type.Literal('unknown')],
      {
        description:
          '`passing` without a health check; otherwise the checks’ verdict, `unknown` until the first one.',
      },
    ),
    /** When the check that set the status ran. */
    checked_at: Type.Union([Timestamp, Type.Null()], {
      description: 'When the check that set the status ran.',
    }),
    last_error: Type.Union([Type.String(), Type.Null()]),
    check_latency_ms: Type.Union([Type.Number(), Type.Null()]),
    load: Type.Union([InstanceLoad, Type.Null()]),
    revision: Type.Integer(),
  },
  { $id: 'ServiceInstance' },
);
/** A registered instance of a service. */
export type ServiceInstance = Static<typeof ServiceInstance>;

/** The schemas `Type.Ref` names in this file, for `Static`. */
type RegistryRefs = { ServiceInstance: typeof ServiceInstance };

export const Lease = Type.Object(
  {
    id: Type.String(),
    ttl_seconds: Type.Integer(),
    remaining_ms: Type.Integer(),
  },
  { $id: 'Lease' },
);
/** A lease: what is bound to it goes when it ends. */
export type Lease = Static<typeof Lease>;

export const GrantLease = Type.Object(
  { ttl_seconds: Type.Integer({ minimum: 1, maximum: 86_400 }) },
  { additionalProperties: false },
);
/** The body of `POST /v1/leases`. */
export type GrantLease = Static<typeof GrantLease>;

export const RegisterInstance = Type.Object(
  {
    address: Type.String({ pattern: ADDRESS, description: 'Host name or IP address.' }),
    port: Type.Integer({ minimum: 1, maximum: 65_535 }),
    metadata: Type.Optional(InstanceMetadata),
    health_check: Type.Optional(HealthCheck),
    /** Bind to this lease; without it the server grants one of `ttl_seconds` (default 30). */
    lease: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
  },
  { additionalProperties: false },
);
/** The body of `PUT /v1/services/{name}/instances/{id}`, its health check's defaults filled in. */
export type RegisterInstance = Static<typeof RegisterInstance>;

export const ReportLoad = Type.Object({ load: InstanceLoad }, { additionalProperties: false });
/** The body of `PATCH /v1/services/{name}/instances/{id}`. */
export type ReportLoad = Static<typeof ReportLoad>;

export const ServiceSummary = Type.Object({
  name: Type.String(),
  instances: Type.Integer(),
  passing: Type.Integer(),
});
/** A service with its instance counts, as `GET /v1/services` lists it. */
export type ServiceSummary = Static<typeof ServiceSummary>;

export const ServiceList = Type.Object({ items: Type.Array(ServiceSummary) });
/** What `GET /v1/services` answers. */
export type ServiceList = Static<typeof ServiceList>;

export const ServiceInstancePage = Type.Object({
  name: Type.String(),
  revision: Type.Integer(),
  instances: Type.Array(Type.Ref('ServiceInstance')),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});
/** A page of `GET /v1/services/{name}`. */
export type ServiceInstancePage = Static<typeof ServiceInstancePage, RegistryRefs>;

/** An item of `GET /v1/services/{name}/watch` (`ServiceEvent` in the server's registry-service.ts). */
export const ServiceWatchEvent = Type.Union(
  [
    Type.Object({
      type: Type.Literal('put'),
      instance: Type.Ref('ServiceInstance'),
      revision: Type.Integer(),
    }),
    Type.Object({
      type: Type.Literal('delete'),
      service: Type.String(),
      id: Type.String(),
      revision: Type.Integer(),
    }),
    Type.Object({
      type: Type.Literal('resync'),
      revision: Type.Integer(),
      instances: Type.Array(Type.Ref('ServiceInstance')),
    }),
  ],
  { $id: 'ServiceWatchEvent' },
);
/** A change of a service's membership; `resync` carries every instance. */
export type ServiceWatchEvent = Static<typeof ServiceWatchEvent, RegistryRefs>;
