import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type DestinationStream, type Logger } from 'pino';
import packageJson from '../package.json' with { type: 'json' };
import { AgentService } from './agents/agent-service.ts';
import { AgentPool } from './agents/pool.ts';
import { buildApp } from './app.ts';
import { InProcessBus } from './bus/bus.ts';
import { EventLog } from './events/event-log.ts';
import { EventRetention } from './events/retention.ts';
import { type ApiKeyView, IdentityService } from './gateway/identity-service.ts';
import { migrations } from './migrations.ts';
import { JwtVerifier } from './platform/jwt.ts';
import { Metrics } from './platform/metrics.ts';
import { InMemoryRateLimiter } from './platform/rate-limit.ts';
import { type Settings, SettingsError } from './platform/settings.ts';
import { tokenAuthenticator } from './realtime/access.ts';
import { RealtimeHub } from './realtime/hub.ts';
import { RealtimeTokens } from './realtime/tokens.ts';
import { TopicService } from './realtime/topic-service.ts';
import { HistoryRules } from './realtime/topics.ts';
import { SessionService } from './sessions/session-service.ts';
import { openStore, type RelationalStore } from './store/store.ts';
import { Dispatcher } from './tasks/dispatcher.ts';
import { TaskRuntime } from './tasks/runtime.ts';
import { TaskService } from './tasks/task-service.ts';
import { TemplateService } from './templates/template-service.ts';

export const VERSION: string = packageJson.version;

/** Name of the file in the data directory that holds the first-start admin key. */
export const ADMIN_KEY_FILE = 'admin-key';

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

/** Opens the store, applies migrations, bootstraps the system tenant and starts listening. */
export async function startServer(
  settings: Settings,
  options: StartOptions = {},
): Promise<RunningServer> {
  const log = options.log ?? createLogger(settings);
  mkdirSync(settings.dataDir, { recursive: true });

  const store = await openStore({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: settings.databasePoolSize,
  });
  let app: FastifyInstance | undefined;
  let rateLimiter: InMemoryRateLimiter | undefined;
  let retention: EventRetention | undefined;
  let dispatcher: Dispatcher | undefined;
  let pool: AgentPool | undefined;
  let topicService: TopicService | undefined;
  let hub: RealtimeHub | undefined;
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

    const identity = new IdentityService({
      store,
      jwt: new JwtVerifier(settings),
      log,
      keyCacheTtlMs: settings.authCacheTtlMs,
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

    rateLimiter =
      settings.rateLimitPerSecond > 0
        ? new InMemoryRateLimiter({
            ratePerSecond: settings.rateLimitPerSecond,
            burst: settings.rateLimitBurst,
          })
        : undefined;
    let closing = false;
    const shutdown = new AbortController();
    const bus = new InProcessBus();
    const templates = new TemplateService({ store });
    const events = new EventLog({ store, bus });
    retention = new EventRetention({ events, retentionMs: settings.eventRetentionMs, log });
    await retention.start();
    const metrics = new Metrics({
      version: VERSION,
      instanceId: settings.instanceId,
      store: store.kind,
    });
    const runtime = new TaskRuntime({
      store,
      events,
      bus,
      templates,
      retryBaseMs: settings.taskRetryBaseMs,
      retryMaxMs: settings.taskRetryMaxMs,
    });
    const agents = new AgentService({ store, events, runtime });
    pool = new AgentPool({
      agents,
      runtime,
      bus,
      log,
      metrics,
      settings: {
        heartbeatIntervalMs: settings.agentHeartbeatIntervalMs,
        maxFrameBytes: settings.agentMaxFrameBytes,
        heartbeatTimeoutMs: settings.agentHeartbeatTimeoutMs,
        instanceId: settings.instanceId,
        version: VERSION,
      },
    });
    // Leases are checked several times per timeout, so that a dead agent's tasks move on
    // soon after its lease ends.
    const sweepIntervalMs = Math.max(50, Math.min(1_000, settings.agentHeartbeatTimeoutMs / 4));
    dispatcher = new Dispatcher({
      store,
      events,
      bus,
      templates,
      runtime,
      directory: pool,
      log,
      tenantMaxConcurrency: settings.tenantMaxConcurrency,
      concurrencyKeyLimit: settings.concurrencyKeyLimit,
      sweepIntervalMs,
    });
    pool.dispatcher = dispatcher;
    // Tasks and sessions know each other through narrow interfaces; the closures resolve
    // once both exist.
    const sessions: SessionService = new SessionService({
      store,
      events,
      tasks: { ofSession: (tenantId, sessionId) => tasks.ofSession(tenantId, sessionId) },
    });
    const tasks = new TaskService({
      store,
      events,
      templates,
      bus,
      cancelGraceMs: settings.taskCancelGraceMs,
      sessions,
    });
    const tokens = new RealtimeTokens({ store });
    await tokens.start();
    topicService = new TopicService({
      store,
      events,
      bus,
      rules,
      log,
      nodeId: `${settings.instanceId}:${randomUUID()}`,
    });
    hub = new RealtimeHub({
      topics: topicService,
      bus,
      log,
      rateLimiter,
      authenticateToken: tokenAuthenticator(tokens, identity),
      settings: {
        maxFrameBytes: settings.realtimeMaxFrameBytes,
        maxSubscriptions: settings.realtimeMaxSubscriptions,
        maxQueueBytes: settings.realtimeMaxQueueBytes,
        compression: settings.realtimeCompression,
        instanceId: settings.instanceId,
      },
    });
    const built = await buildApp({
      hub,
      topics: topicService,
      tokens,
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
    app = built;
    const connections = trackRequests(built);
    await built.listen({ port: settings.port, host: settings.host });
    const address = built.server.address() as AddressInfo;
    const url = `http://${urlHost(settings.host)}:${address.port}`;
    log.info({ url, version: VERSION }, 'orchestra listening');
    pool.start(sweepIntervalMs);
    dispatcher.start();
    topicService.start();
    hub.start();

    let closed: Promise<void> | undefined;
    const sweeper = retention;
    const limiter = rateLimiter;
    const agentPool = pool;
    const taskDispatcher = dispatcher;
    const realtime = hub;
    const topicsOfNode = topicService;
    const close = () => {
      closed ??= (async () => {
        closing = true;
        log.info({ deadline_ms: settings.shutdownTimeoutMs }, 'shutting down');
        shutdown.abort(); // ends event streams and waits, which would otherwise hold the drain
        // Agents first: they keep their leases and reconnect to another node (or this one
        // after a restart) while their tasks stay theirs.
        await taskDispatcher.stop();
        await agentPool.close();
        await realtime.close();
        await topicsOfNode.stop();
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
        limiter?.close();
        await sweeper?.stop();
        await bus.close();
        await store.close();
        log.info('shutdown complete');
      })();
      return closed;
    };
    return { url, app: built, store, settings, log, close };
  } catch (err) {
    await dispatcher?.stop();
    await pool?.close();
    await hub?.close();
    await topicService?.stop();
    await app?.close().catch(() => {});
    await retention?.stop();
    rateLimiter?.close();
    await store.close().catch(() => {});
    throw err;
  }
}

/** Knows which sockets have a request in flight, so that shutdown can close the others. */
function trackRequests(app: FastifyInstance): { closeUnused(): void } {
  const sockets = new Set<Socket>();
  const inFlight = new Map<Socket, number>();
  app.server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      inFlight.delete(socket);
    });
  });
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    response.once('close', () => {
      const left = (inFlight.get(socket) ?? 1) - 1;
      if (left > 0) inFlight.set(socket, left);
      else inFlight.delete(socket);
    });
  });
  return {
    closeUnused() {
      for (const socket of sockets) if (!inFlight.has(socket)) socket.destroy();
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
