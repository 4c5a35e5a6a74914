import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import pino, { type DestinationStream, type Logger } from 'pino';
import { AgentPool, AgentService } from './agents/index.ts';
import { buildApp } from './app.ts';
import { type Bus, InProcessBus } from './bus/bus.ts';
import { NatsBus } from './bus/nats.ts';
import { ConfigService, configRelayRoute } from './config/index.ts';
import {
  EventLog,
  EventRetention,
  exportStreamName,
  JetStreamEventExport,
} from './events/index.ts';
import { type ApiKeyView, IdentityService, TenantLimitStore } from './gateway/index.ts';
import type { KvStore } from './kv/index.ts';
import { EmbeddedKv, EtcdKv, KvTopicRelay } from './kv/index.ts';
import { migrations } from './migrations.ts';
import { secureDataDir } from './platform/data-dir.ts';
import { Jobs } from './platform/jobs.ts';
import { JwtVerifier } from './platform/jwt.ts';
import { Lifecycle } from './platform/lifecycle.ts';
import { Metrics } from './platform/metrics.ts';
import { InMemoryRateLimiter, type RateLimiter } from './platform/rate-limit.ts';
import { RedisRateLimiter } from './platform/redis-rate-limit.ts';
import { loadNodeKey, SecretBox } from './platform/secret-box.ts';
import { maskPasswords, type Settings, SettingsError } from './platform/settings.ts';
import { limitDefaults } from './platform/tenant-limits.ts';
import {
  HistoryRules,
  RealtimeHub,
  RealtimeTokens,
  TopicService,
  tokenAuthenticator,
} from './realtime/index.ts';
import {
  HealthChecker,
  NodeRegistry,
  RegistryService,
  serviceRelayRoute,
} from './registry/index.ts';
import { SessionService } from './sessions/index.ts';
import { openStore, type RelationalStore } from './store/store.ts';
import { Dispatcher, TaskRuntime, TaskService } from './tasks/index.ts';
import { TemplateService } from './templates/index.ts';
import { ADMIN_KEY_FILE, VERSION } from './version.ts';

export { ADMIN_KEY_FILE, VERSION };

export interface RunningServer {
  /** Base URL clients can use, such as `http://localhost:8080`. */
  url: string;
  app: FastifyInstance;
  store: RelationalStore;
  settings: Settings;
  log: Logger;
  /**
   * Graceful shutdown: refuses new requests, lets in-flight ones finish within
   * `shutdownTimeoutMs`, then closes remaining connections and the store. Idempotent.
   */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Defaults to JSON lines on stdout at `settings.logLevel`. */
  log?: Logger;
  /** Called once, on the start that created the system tenant, with its admin key. */
  onAdminKey?: (key: ApiKeyView & { secret: string; file: string | undefined }) => void;
}

/** JSON lines to stdout, or to `destination` (tests collect them). */
export function createLogger(settings: Settings, destination?: DestinationStream): Logger {
  return pino(
    {
      level: settings.logLevel,
      base: { service: 'orchestra', instance_id: settings.instanceId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/** A listen failure as a settings error that names the setting to change, else `err`. */
function listenError(settings: Settings, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${urlHost(settings.host)}:${settings.port}`;
  if (code === 'EADDRINUSE') {
    return new SettingsError(
      `ORCHESTRA_PORT: port ${settings.port} is in use on ${settings.host} (${where}); stop what holds it or choose another port`,
      { cause: err },
    );
  }
  if (code === 'EACCES') {
    return new SettingsError(
      `ORCHESTRA_PORT: this user may not listen on ${where}; choose a port above 1023`,
      { cause: err },
    );
  }
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new SettingsError(`ORCHESTRA_HOST: ${settings.host} is not an address of this machine`, {
      cause: err,
    });
  }
  return err;
}

/** Binds the port for a moment to learn whether the server could listen there. */
async function assertCanListen(settings: Settings): Promise<void> {
  if (settings.port === 0) return;
  const probe = createNetServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ port: settings.port, host: settings.host, exclusive: true }, resolve);
    });
  } catch (err) {
    throw listenError(settings, err);
  } finally {
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }
}

/** Opens the store, applies migrations, bootstraps the system tenant and starts listening. */
export async function startServer(
  settings: Settings,
  options: StartOptions = {},
): Promise<RunningServer> {
  const log = options.log ?? createLogger(settings);
  // Before anything is created: a start that cannot listen must not make the system
  // tenant and print its admin key first.
  await assertCanListen(settings);
  secureDataDir(settings.dataDir, log, { sqlite: settings.databaseUrl === undefined });
  const secrets = new SecretBox(loadNodeKey(settings.secretKey, settings.dataDir, log));

  const store = await openStore({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: settings.databasePoolSize,
    preparedStatements: settings.databasePreparedStatements,
  });
  // Everything taken from here on is given back by `lifecycle.stopAll()`, last first, on a
  // normal close and on a failed start alike.
  const lifecycle = new Lifecycle(log);
  lifecycle.add('store', () => store.close());
  try {
    let rules: HistoryRules;
    try {
      rules = new HistoryRules({
        rules: settings.topicHistory,
        maxMessages: settings.topicHistoryMaxMessages,
        maxAgeMs: settings.topicHistoryMaxAgeMs,
        retentionMs: settings.eventRetentionMs,
      });
    } catch (err) {
      throw new SettingsError(`ORCHESTRA_TOPIC_HISTORY: ${(err as Error).message}`);
    }
    const applied = await store.migrate(migrations);
    log.info({ store: store.kind, location: store.location, applied }, 'store ready');

    // A tenant's limits are cached as long as its keys: a change reaches other nodes
    // within the same TTL as a revocation.
    const limits = new TenantLimitStore({
      store,
      defaults: limitDefaults(settings),
      ttlMs: settings.authCacheTtlMs,
    });
    const identity = new IdentityService({
      store,
      jwt: new JwtVerifier(settings),
      log,
      keyCacheTtlMs: settings.authCacheTtlMs,
      limits,
    });
    const boot = await identity.bootstrap();
    const keyFile = join(settings.dataDir, ADMIN_KEY_FILE);
    if (boot.adminKey) {
      log.info(
        { tenant_id: boot.tenant.id, key_id: boot.adminKey.id },
        'created the system tenant and its admin key',
      );
      // Saved whether or not anyone listens (`?.` would skip evaluating the arguments),
      // and handed over before anything else can fail: the key exists from now on.
      const file = saveAdminKey(keyFile, boot.adminKey.secret, log);
      options.onAdminKey?.({ ...boot.adminKey, file });
    } else if (existsSync(keyFile)) {
      log.info({ file: keyFile }, 'the first-start admin key is in the data directory');
    }

    const rateLimiter = await rateLimiterOf(settings, log);
    if (rateLimiter) lifecycle.add('rate limiter', () => rateLimiter.close());
    let closing = false;
    const shutdown = new AbortController();
    const bus: Bus = settings.natsUrl
      ? await connectBus(settings.natsUrl, settings, log)
      : new InProcessBus();
    lifecycle.add('bus', () => bus.close());
    const exportEvents = bus instanceof NatsBus && settings.natsExportEvents;
    if (bus instanceof NatsBus && exportEvents) await ensureExportStream(bus, settings, log);
    const templates = new TemplateService({ store, limits });
    const metrics = new Metrics({
      version: VERSION,
      instanceId: settings.instanceId,
      store: store.kind,
    });
    const jobs = new Jobs({ log, metrics });
    const events = new EventLog({
      jobs,
      store,
      bus,
      exported: exportEvents,
      maxReadBytes: settings.responseMaxBytes,
    });
    const retention = new EventRetention({
      events,
      retentionMs: settings.eventRetentionMs,
      log,
      jobs,
    });
    await retention.start();
    lifecycle.add('event retention', () => retention.stop());
    const runtime = new TaskRuntime({
      store,
      events,
      bus,
      templates,
      retryBaseMs: settings.taskRetryBaseMs,
      retryMaxMs: settings.taskRetryMaxMs,
    });
    const agents = new AgentService({ store, events, runtime });
    const pool = new AgentPool({
      agents,
      runtime,
      bus,
      log,
      metrics,
      jobs,
      limits,
      settings: {
        heartbeatIntervalMs: settings.agentHeartbeatIntervalMs,
        maxFrameBytes: settings.agentMaxFrameBytes,
        heartbeatTimeoutMs: settings.agentHeartbeatTimeoutMs,
        retentionMs: settings.agentRetentionMs,
        instanceId: settings.instanceId,
        version: VERSION,
      },
    });
    // Leases are checked several times per timeout, so that a dead agent's tasks move on
    // soon after its lease ends.
    const sweepIntervalMs = Math.max(50, Math.min(1_000, settings.agentHeartbeatTimeoutMs / 4));
    const dispatcher = new Dispatcher({
      store,
      events,
      bus,
      templates,
      runtime,
      directory: pool,
      log,
      limits,
      jobs,
      concurrencyKeyLimit: settings.concurrencyKeyLimit,
      sweepIntervalMs,
    });
    pool.dispatcher = dispatcher;
    const connectedAgents = pool;
    runtime.leaseClock = (now) => connectedAgents.tickLeaseClock(now);
    runtime.expiredLeases = (holders, at) => agents.expiredAmong(holders, at);
    // Tasks and sessions know each other through narrow interfaces; the closures resolve
    // once both exist.
    const sessions: SessionService = new SessionService({
      store,
      events,
      tasks: {
        ofSession: (tenantId, sessionId) => tasks.ofSession(tenantId, sessionId),
        unfinishedInSession: (trx, tenantId, sessionId) =>
          tasks.unfinishedInSession(trx, tenantId, sessionId),
        deleteEvents: (trx, tenantId, taskIds) => tasks.deleteEvents(trx, tenantId, taskIds),
      },
      limits,
    });
    const tasks = new TaskService({
      store,
      events,
      limits,
      templates,
      bus,
      cancelGraceMs: settings.taskCancelGraceMs,
      sessions,
      agents,
    });
    const kv: KvStore = settings.etcdEndpoints
      ? new EtcdKv({
          endpoints: settings.etcdEndpoints.split(',').map((e) => e.trim()),
          prefix: settings.etcdPrefix,
        })
      : new EmbeddedKv({
          jobs,
          store,
          events,
          bus,
          log,
          retainedRevisions: settings.kvRetainedRevisions,
        });
    lifecycle.add('config store', () => kv.close());
    if (kv instanceof EmbeddedKv) kv.start();
    log.info({ backend: kv.backend }, 'config store ready');
    logClusterMode(settings, log);
    const config = new ConfigService({
      kv,
      log,
      limits,
      settings: {
        defaultEnv: settings.configDefaultEnv,
        historyMaxVersions: settings.configHistoryMaxVersions,
      },
    });
    const registry = new RegistryService({ kv, defaultTtlSeconds: 30 });
    const loopDelay = monitorEventLoopDelay({ resolution: 20 });
    loopDelay.enable();
    let nodeUrl = '';
    const startedAt = new Date().toISOString();
    const nodes = new NodeRegistry({
      kv,
      jobs,
      systemTenantId: boot.tenant.id,
      nodeId: settings.instanceId,
      log,
      info: () => {
        const delay = loopDelay.mean / 1e6;
        loopDelay.reset();
        return {
          url: nodeUrl,
          version: VERSION,
          started_at: startedAt,
          store: store.kind,
          kv: kv?.backend ?? 'embedded',
          load: {
            rss_bytes: process.memoryUsage.rss(),
            event_loop_delay_ms: Number.isFinite(delay) ? Math.round(delay * 100) / 100 : 0,
            agents: pool?.connectionCount ?? 0,
            realtime_connections: hub?.connectionCount ?? 0,
          },
        };
      },
    });
    const tenantIds = () => identity.tenantIds();
    const checker = new HealthChecker({ kv, nodes, log, tenants: tenantIds, jobs });
    const registryOfNodes = nodes;
    let exporter: JetStreamEventExport | undefined;
    if (bus instanceof NatsBus && exportEvents) {
      exporter = new JetStreamEventExport({
        store,
        connection: bus.connection,
        prefix: settings.natsPrefix,
        claim: (key) => registryOfNodes.claim(key),
        log,
        jobs,
      });
    }
    const relay = new KvTopicRelay({
      kv,
      events,
      store,
      claim: (key) => registryOfNodes.claim(key),
      log,
      tenants: tenantIds,
      routes: [configRelayRoute, serviceRelayRoute],
      jobs,
    });
    const tokens = new RealtimeTokens({ store, secrets });
    await tokens.start();
    const topicService = new TopicService({
      jobs,
      store,
      events,
      bus,
      rules,
      log,
      nodeId: `${settings.instanceId}:${randomUUID()}`,
      limits,
    });
    const hub = new RealtimeHub({
      topics: topicService,
      bus,
      log,
      rateLimiter,
      authenticateToken: tokenAuthenticator(tokens, identity),
      metrics,
      settings: {
        maxFrameBytes: settings.realtimeMaxFrameBytes,
        maxSubscriptions: settings.realtimeMaxSubscriptions,
        maxQueueBytes: settings.realtimeMaxQueueBytes,
        historyMaxBytes: settings.responseMaxBytes,
        compression: settings.realtimeCompression,
        pingIntervalMs: settings.realtimePingIntervalMs,
        subscribesPerSecond: settings.realtimeSubscribesPerSecond,
        bytesPerToken: settings.rateLimitBytesPerToken,
        instanceId: settings.instanceId,
      },
    });
    const built = await buildApp({
      hub,
      topics: topicService,
      tokens,
      config,
      registry,
      kv,
      nodes,
      settings,
      store,
      log,
      metrics,
      rateLimiter,
      identity,
      templates,
      tasks,
      agents,
      sessions,
      pool,
      bus,
      version: VERSION,
      shutdown: shutdown.signal,
      isClosing: () => closing,
    });
    // Before any agent can connect or any lease is judged: time in which no node ran (this
    // restart) does not count against the leases agents held.
    await pool.tickLeaseClock(new Date(), 2 * sweepIntervalMs);
    const connections = trackRequests(built);
    // In-flight requests get until the deadline once the node's own work has stopped; then
    // their connections are closed. Registered before the listeners so that it runs after
    // them, and before what requests use (config store, bus, store).
    lifecycle.add('http', async () => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), settings.shutdownTimeoutMs);
      });
      const drained = built.close().then(() => 'drained' as const);
      // Connections with no request in flight (idle keep-alive, or never used: fetch opens
      // spares) would hold the drain until the deadline; Node does not count the latter as idle.
      connections.closeUnused();
      const sweep = setInterval(() => connections.closeUnused(), 100);
      drained.finally(() => clearInterval(sweep));
      if ((await Promise.race([drained, deadline])) === 'timeout') {
        log.warn(
          'in-flight requests did not finish before the deadline; closing their connections',
        );
        built.server.closeAllConnections();
        await drained;
      }
      clearTimeout(timer);
    });
    try {
      await built.listen({ port: settings.port, host: settings.host });
    } catch (err) {
      // Taken since the check at start (another process was quicker).
      throw listenError(settings, err);
    }
    const address = built.server.address() as AddressInfo;
    const url = `http://${urlHost(settings.host)}:${address.port}`;
    nodeUrl = url;
    // Before "listening" is logged: whoever waits for that line may signal at once, and the
    // signal handlers are installed only once this function returns. Each stop is registered
    // as its start succeeds: a close stops them in reverse, agents first (they keep their
    // leases and reconnect to another node, or to this one after a restart, while their tasks
    // stay theirs), the node's registration last.
    await nodes.start();
    lifecycle.add('node registration', () => nodes.stop());
    checker.start();
    lifecycle.add('health checks', () => checker.stop());
    relay.start();
    lifecycle.add('topic relay', () => relay.stop());
    if (exporter) {
      const events = exporter;
      metrics.eventExport = events;
      events.start();
      lifecycle.add('event export', () => events.stop());
    }
    log.info({ url, version: VERSION }, 'orchestra listening');
    topicService.start();
    lifecycle.add('realtime topics', () => topicService.stop());
    hub.start();
    lifecycle.add('realtime connections', () => hub.close());
    pool.start(sweepIntervalMs);
    lifecycle.add('agent connections', () => pool.close());
    dispatcher.start();
    lifecycle.add('dispatch', () => dispatcher.stop());

    let closed: Promise<void> | undefined;
    const close = () => {
      closed ??= (async () => {
        closing = true;
        log.info({ deadline_ms: settings.shutdownTimeoutMs }, 'shutting down');
        shutdown.abort(); // ends event streams and waits, which would otherwise hold the drain
        await lifecycle.stopAll();
        log.info('shutdown complete');
      })();
      return closed;
    };
    return { url, app: built, store, settings, log, close };
  } catch (err) {
    await lifecycle.stopAll();
    throw err;
  }
}

/**
 * Says at start which features this node runs on its own: with some of the cluster's
 * services configured and others not, an operator should not have to guess.
 */
function logClusterMode(settings: Settings, log: Logger): void {
  const clustered =
    settings.databaseUrl !== undefined ||
    settings.natsUrl !== undefined ||
    settings.etcdEndpoints !== undefined ||
    settings.redisUrl !== undefined;
  if (!clustered) return;
  const alone: string[] = [];
  if (settings.databaseUrl === undefined) {
    alone.push('everything: the store is a SQLite file that only this node can use');
  } else {
    if (settings.natsUrl === undefined)
      alone.push(
        'wake-ups (no ORCHESTRA_NATS_URL): other nodes see new tasks, messages and changes by polling the store, up to 2 s late',
      );
    if (settings.redisUrl === undefined && settings.rateLimitPerSecond > 0)
      alone.push('rate limits (no ORCHESTRA_REDIS_URL): each node counts on its own');
  }
  const services = {
    store: settings.databaseUrl === undefined ? 'sqlite' : 'postgres',
    bus: settings.natsUrl === undefined ? 'in-process' : 'nats',
    kv: settings.etcdEndpoints === undefined ? 'store' : 'etcd',
    rate_limit: settings.redisUrl === undefined ? 'memory' : 'redis',
  };
  if (alone.length === 0) log.info({ services }, 'cluster mode: every node shares this state');
  else
    log.warn(
      { services, single_node: alone },
      'cluster mode: some features run on this node alone',
    );
}

/** Shared buckets in Redis when it is configured, this node's own otherwise; none at rate 0. */
async function rateLimiterOf(settings: Settings, log: Logger): Promise<RateLimiter | undefined> {
  if (settings.rateLimitPerSecond <= 0) return undefined;
  const limits = { ratePerSecond: settings.rateLimitPerSecond, burst: settings.rateLimitBurst };
  if (settings.redisUrl === undefined) return new InMemoryRateLimiter(limits);
  const limiter = new RedisRateLimiter({
    ...limits,
    url: settings.redisUrl,
    prefix: `${settings.redisPrefix}rl:`,
    log,
  });
  try {
    await limiter.ready(5_000);
  } catch (err) {
    limiter.close();
    throw new Error(`ORCHESTRA_REDIS_URL: could not connect to Redis: ${(err as Error).message}`, {
      cause: err,
    });
  }
  log.info('rate limits in Redis, shared by every node');
  return limiter;
}

/** The JetStream stream of exported events, or a start-up error that says what to do. */
async function ensureExportStream(bus: NatsBus, settings: Settings, log: Logger): Promise<void> {
  try {
    await JetStreamEventExport.ensureStream(bus.connection, {
      prefix: settings.natsPrefix,
      maxAgeMs: settings.eventRetentionMs,
      replicas: settings.natsStreamReplicas,
    });
  } catch (err) {
    throw new Error(
      `ORCHESTRA_NATS_EXPORT_EVENTS: could not create the JetStream stream ` +
        `${exportStreamName(settings.natsPrefix)}: ${(err as Error).message}. Start nats-server ` +
        'with JetStream (-js), or set ORCHESTRA_NATS_EXPORT_EVENTS=false.',
      { cause: err },
    );
  }
  log.info(
    { stream: exportStreamName(settings.natsPrefix), subjects: `${settings.natsPrefix}.export.>` },
    'events exported to JetStream',
  );
}

/** The NATS bus, or a start-up error that says which server did not answer. */
async function connectBus(urls: string, settings: Settings, log: Logger): Promise<NatsBus> {
  const servers = urls.split(',').map((u) => u.trim());
  const shown = servers.map(maskPasswords);
  try {
    const bus = await NatsBus.connect({
      servers,
      prefix: settings.natsPrefix,
      name: `orchestra ${settings.instanceId}`,
      log,
    });
    log.info({ servers: shown, prefix: settings.natsPrefix }, 'bus on NATS');
    return bus;
  } catch (err) {
    throw new Error(
      `ORCHESTRA_NATS_URL: could not connect to NATS at ${shown.join(', ')}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Knows which sockets have a request in flight, so that shutdown can close the others.
 * A socket must have been unused for a moment before it counts: one accepted just before the
 * listener closed usually has its request on the wire, and that request deserves its 503
 * SHUTTING_DOWN rather than a connection closed under it.
 */
function trackRequests(app: FastifyInstance): { closeUnused(): void } {
  const unusedFor = 250;
  const idleSince = new Map<Socket, number>();
  const inFlight = new Map<Socket, number>();
  app.server.on('connection', (socket: Socket) => {
    idleSince.set(socket, performance.now());
    socket.once('close', () => {
      idleSince.delete(socket);
      inFlight.delete(socket);
    });
  });
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    response.once('close', () => {
      const left = (inFlight.get(socket) ?? 1) - 1;
      if (left > 0) inFlight.set(socket, left);
      else {
        inFlight.delete(socket);
        if (idleSince.has(socket)) idleSince.set(socket, performance.now());
      }
    });
  });
  return {
    closeUnused() {
      const now = performance.now();
      for (const [socket, since] of idleSince) {
        if (!inFlight.has(socket) && now - since >= unusedFor) socket.destroy();
      }
    },
  };
}

/** Writes the key readable by the owner only; returns the path, or undefined on failure. */
function saveAdminKey(file: string, secret: string, log: Logger): string | undefined {
  try {
    writeFileSync(file, `${secret}\n`, { mode: 0o600 });
    chmodSync(file, 0o600); // the mode above is ignored when the file already existed
    return file;
  } catch (err) {
    log.error({ err, file }, 'could not save the admin key file; the key is printed only');
    return undefined;
  }
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}
