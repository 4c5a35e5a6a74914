import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';

// Operations: what the probes say of the node that answered, and the nodes of the cluster.

/** A dependency's answer in `Readiness.checks`; `latency_ms` is its round trip, when it answered. */
const dependencyCheck = <B extends string>(backends: readonly B[]) =>
  Type.Object({
    status: Type.Union([Type.Literal('ok'), Type.Literal('failed')]),
    backend: Type.Union(backends.map((b) => Type.Literal(b))),
    latency_ms: Type.Optional(Type.Number()),
  });

/**
 * What `GET /readyz` says of the node that answered: `degraded` when etcd, NATS or Redis
 * does not answer (the node still serves what does not need them).
 */
export const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('degraded')]),
  version: Type.String(),
  instance_id: Type.String(),
  store: Type.String(),
  checks: Type.Object({
    store: Type.Object({ status: Type.Literal('ok'), latency_ms: Type.Number() }),
    kv: dependencyCheck(['embedded', 'etcd']),
    bus: dependencyCheck(['in-process', 'nats']),
    rate_limit: dependencyCheck(['off', 'memory', 'redis']),
  }),
});
export type Readiness = Static<typeof Readiness>;

/** A dependency's answer in `Readiness.checks`. */
export type DependencyCheck = Omit<Readiness['checks']['kv'], 'backend'>;

/** An Orchestra node of the cluster, as it last reported itself (`GET /v1/cluster/nodes`). */
export const ClusterNode = Type.Object({
  id: Type.String(),
  url: Type.String(),
  version: Type.String(),
  started_at: Timestamp,
  /**
   * When it last rewrote its entry (with its load), every 30 s. Its lease is renewed far more
   * often: a node that stops renewing drops out of the list within 10 s.
   */
  seen_at: Timestamp,
  store: Type.String(),
  kv: Type.String(),
  lease: Type.String(),
  /** Whether it runs the service registry's health checks. */
  health_checker: Type.Boolean(),
  load: Type.Object({
    rss_bytes: Type.Integer(),
    event_loop_delay_ms: Type.Number(),
    agents: Type.Integer(),
    realtime_connections: Type.Integer(),
    /** The machine's 1-minute load average per CPU (1: every CPU busy). */
    cpu: Type.Optional(Type.Number()),
    /** The share of the machine's memory in use, 0 to 1. */
    memory: Type.Optional(Type.Number()),
    /** Workspace instances running on the node. */
    instances: Type.Optional(Type.Integer()),
  }),
  /** The workspace drivers the node has (`process`; `docker` where an engine is set). */
  instance_drivers: Type.Optional(Type.Array(Type.String())),
});
export type ClusterNode = Static<typeof ClusterNode>;
