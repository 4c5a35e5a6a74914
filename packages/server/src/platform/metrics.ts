import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics of one server instance. Each instance has its own registry, so
 * several servers in one process (tests) do not share counters.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status_code'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  readonly rateLimited: Counter<'scope'>;
  readonly agentsConnected: Gauge;
  readonly agentFrames: Counter<'kind'>;
  readonly agentProtocolErrors: Counter<'code'>;
  readonly tasksAssigned: Counter;
  readonly realtimeConnections: Gauge;
  readonly realtimeCloses: Counter<'code'>;
  readonly dependencyUp: Gauge<'dependency'>;
  readonly busDropped: Counter;
  readonly eventsExported: Counter;
  readonly eventExportPending: Gauge;
  readonly jobRuns: Counter<'job' | 'outcome'>;
  readonly jobSeconds: Histogram<'job'>;
  readonly jobLeader: Gauge<'job'>;
  /** The JetStream export, on a node that runs it; read at each scrape. */
  eventExport: { readonly exported: number; pendingStreams(): Promise<number> } | undefined;
  readonly #onCollect: (() => Promise<void>)[] = [];

  constructor(options: { version: string; instanceId: string; store: string }) {
    collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges with a `_total` suffix, which Prometheus reserves
    // for counters (promtool rejects them); `nodejs_active_resources` carries the same counts.
    for (const name of [
      'nodejs_active_handles_total',
      'nodejs_active_requests_total',
      'nodejs_active_resources_total',
    ]) {
      this.registry.removeSingleMetric(name);
    }
    this.httpRequests = new Counter({
      name: 'orchestra_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers: [this.registry],
    });
    this.httpDuration = new Histogram({
      name: 'orchestra_http_request_duration_seconds',
      help: 'Time from receiving a request to sending the last byte of its response.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    this.rateLimited = new Counter({
      name: 'orchestra_rate_limited_requests_total',
      help: 'Requests refused with 429, by whether a credential or an IP address was limited.',
      labelNames: ['scope'],
      registers: [this.registry],
    });
    this.agentsConnected = new Gauge({
      name: 'orchestra_agents_connected',
      help: 'Agent connections on this node that have registered.',
      registers: [this.registry],
    });
    this.agentFrames = new Counter({
      name: 'orchestra_agent_frames_received_total',
      help: 'Valid frames received from agents, by kind.',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    this.agentProtocolErrors = new Counter({
      name: 'orchestra_agent_frame_errors_total',
      help: 'Error frames sent to agents, by error code.',
      labelNames: ['code'],
      registers: [this.registry],
    });
    this.tasksAssigned = new Counter({
      name: 'orchestra_tasks_assigned_total',
      help: 'Task attempts this node assigned to its agents.',
      registers: [this.registry],
    });
    this.realtimeConnections = new Gauge({
      name: 'orchestra_realtime_connections',
      help: 'Open WebSocket connections to /v1/realtime on this node.',
      registers: [this.registry],
    });
    this.realtimeCloses = new Counter({
      name: 'orchestra_realtime_server_closes_total',
      help: 'Realtime connections this node closed, by close code (4507 is a slow consumer).',
      labelNames: ['code'],
      registers: [this.registry],
    });
    const collectors = this.#onCollect;
    this.dependencyUp = new Gauge({
      name: 'orchestra_dependency_up',
      help: 'Whether an external dependency (postgres, etcd, nats, redis) answered when metrics were collected (1) or not (0); only the dependencies this node is configured with.',
      labelNames: ['dependency'],
      registers: [this.registry],
      async collect() {
        await Promise.all(collectors.map((c) => c()));
      },
    });
    // Brought up to date by the dependency collector, before its first await.
    this.busDropped = new Counter({
      name: 'orchestra_bus_dropped_messages_total',
      help: 'Bus messages (cross-node wake-ups) dropped because NATS could not take them; followers make up for them by polling the store.',
      registers: [this.registry],
    });
    this.jobRuns = new Counter({
      name: 'orchestra_job_runs_total',
      help: 'Runs of background jobs (lease sweeps, retention, relays, health checks…) by outcome: done, failed, or follower (a leader-only job on a node that does not hold its claim).',
      labelNames: ['job', 'outcome'],
      registers: [this.registry],
    });
    this.jobSeconds = new Histogram({
      name: 'orchestra_job_duration_seconds',
      help: 'How long a run of a background job took.',
      labelNames: ['job'],
      buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    this.jobLeader = new Gauge({
      name: 'orchestra_job_leader',
      help: '1 while this node holds the leader claim of a job that runs on one node of the cluster (health checks, topic relay, event export).',
      labelNames: ['job'],
      registers: [this.registry],
    });
    // Collected by themselves: prom-client renders metrics concurrently, so a value set by
    // the dependency probes' collector may be read before it is set.
    const metrics = this;
    let exportedSeen = 0;
    this.eventsExported = new Counter({
      name: 'orchestra_events_exported_total',
      help: 'Events this node published to the JetStream stream of exported events (only the leader of the export publishes).',
      registers: [this.registry],
      collect() {
        const exported = metrics.eventExport?.exported ?? 0;
        if (exported > exportedSeen) this.inc(exported - exportedSeen);
        exportedSeen = exported;
      },
    });
    this.eventExportPending = new Gauge({
      name: 'orchestra_event_export_pending_streams',
      help: 'Event streams with events not yet exported to JetStream; it grows while NATS is away and falls back to about 0 once it answers.',
      registers: [this.registry],
      async collect() {
        // Without the store there is no count; the gauge keeps its last value.
        const pending = await metrics.eventExport?.pendingStreams().catch(() => undefined);
        if (pending !== undefined) this.set(pending);
      },
    });
    const info = new Gauge({
      name: 'orchestra_build_info',
      help: 'Always 1; the labels say which version runs on which node and store.',
      labelNames: ['version', 'instance_id', 'store'],
      registers: [this.registry],
    });
    info.set(
      { version: options.version, instance_id: options.instanceId, store: options.store },
      1,
    );
  }

  /** Runs `probe` each time the metrics are collected (a scrape), before they are rendered. */
  onCollect(probe: () => Promise<void>): void {
    this.#onCollect.push(probe);
  }
}
