import type { IncomingMessage, ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import pino, { type DestinationStream, type Logger } from 'pino';
import { buildApp } from './app.ts';
import { type Bus, InProcessBus } from './bus/bus.ts';
import { NatsBus } from './bus/nats.ts';
import type { ApiKeyView } from './gateway/index.ts';
import { type AnyModule, buildModules, type Platform, startModules } from './module.ts';
import { MODULES, migrationsOf } from './modules.ts';
import { secureDataDir } from './platform/data-dir.ts';
import { Jobs } from './platform/jobs.ts';
import { Lifecycle } from './platform/lifecycle.ts';
import { Metrics } from './platform/metrics.ts';
import { InMemoryRateLimiter, type RateLimiter } from './platform/rate-limit.ts';
import { RedisRateLimiter } from './platform/redis-rate-limit.ts';
import { loadKeyring } from './platform/secret-box.ts';
import { maskPasswords, type Settings, SettingsError } from './platform/settings.ts';
import { openStore, type RelationalStore } from './store/store.ts';
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
  /** The modules to run; default `MODULES`, every module of Orchestra. */
  modules?: readonly AnyModule[];
  /**
   * The modules whose routes the node serves (by name); default all of them, and the
   * console. `orchestra runner` serves only `ops` (health, readiness, metrics).
   */
  serve?: readonly string[];
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
  const secrets = loadKeyring(settings, log);

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
    const list = options.modules ?? MODULES;
    // Every module's migrations, whichever run here: a node that runs some of the modules
    // (`orchestra runner`) shares its database with nodes that run them all, and migrations
    // apply in one order.
    const applied = await store.migrate(migrationsOf([...MODULES, ...list]));
    log.info({ store: store.kind, location: store.location, applied }, 'store ready');
    const rateLimiter = await rateLimiterOf(settings, log);
    if (rateLimiter) lifecycle.add('rate limiter', () => rateLimiter.close());
    let closing = false;
    const shutdown = new AbortController();
    const bus: Bus = settings.natsUrl
      ? await connectBus(settings.natsUrl, settings, log)
      : new InProcessBus();
    lifecycle.add('bus', () => bus.close());
    logClusterMode(settings, log);
    const metrics = new Metrics({
      version: VERSION,
      instanceId: settings.instanceId,
      store: store.kind,
    });
    const platform: Platform = {
      settings,
      log,
      store,
      bus,
      jobs: new Jobs({ log, metrics }),
      metrics,
      secrets,
      rateLimiter,
      version: VERSION,
      shutdown: shutdown.signal,
      isClosing: () => closing,
      onAdminKey: options.onAdminKey,
    };
    // In dependency order; each one registers on `lifecycle` what it takes.
    const modules = await buildModules(list, platform, lifecycle);
    const built = await buildApp(platform, modules, { serve: options.serve });
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
    // Each module's stop is registered as its start succeeds: a close stops them last
    // started first (see MODULES for why agents close before the node leaves the registry).
    await startModules(modules, lifecycle, { url });
    // Last, and with nothing awaited after it: whoever waits for this line may signal at
    // once, and the signal handlers are installed only once this function returns.
    log.info({ url, version: VERSION }, 'orchestra listening');

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

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}
