import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  decisionOf,
  InMemoryRateLimiter,
  type RateLimitDecision,
  type RateLimiter,
} from './rate-limit.ts';

/**
 * One token bucket per key in a Redis hash, refilled and changed in one script, so every
 * node takes from the same bucket. Time is Redis's own clock (`TIME`), not the nodes',
 * which may disagree. An untouched bucket expires once it would be full again.
 */
const REFILL = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
end
`;

const STORE = `
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
`;

/** Takes one token when there is one. */
const TAKE = `${REFILL}
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
${STORE}
return { allowed, tostring(tokens) }
`;

/** Takes ARGV[3] tokens whatever is left: the bucket may go into debt, down to -burst. */
const CHARGE = `${REFILL}
tokens = math.max(-burst, tokens - tonumber(ARGV[3]))
${STORE}
return { 1, tostring(tokens) }
`;

/** The scripts, as ioredis adds them to the client by `defineCommand`. */
interface BucketCommands {
  orchestraTake(key: string, rate: number, burst: number): Promise<[number, string]>;
  orchestraCharge(
    key: string,
    rate: number,
    burst: number,
    tokens: number,
  ): Promise<[number, string]>;
}

export interface RedisRateLimiterOptions {
  url: string;
  ratePerSecond: number;
  burst: number;
  /** Every key is stored under this prefix, so installations can share one Redis. */
  prefix: string;
  log: Logger;
  /** How long one decision may wait for Redis before this node decides alone. */
  timeoutMs?: number;
}

/**
 * Rate limits across nodes, in Redis. When Redis does not answer, each node limits on its
 * own (the in-memory buckets) rather than refusing everyone or letting everyone through;
 * `connected` and the `orchestra_dependency_up{dependency="redis"}` gauge show it.
 */
export class RedisRateLimiter implements RateLimiter {
  readonly backend = 'redis' as const;
  readonly #redis: Redis;
  readonly #fallback: InMemoryRateLimiter;
  readonly #rate: number;
  readonly #burst: number;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  #fallbackLogged = false;

  constructor(options: RedisRateLimiterOptions) {
    this.#rate = options.ratePerSecond;
    this.#burst = options.burst;
    this.#prefix = options.prefix;
    this.#timeoutMs = options.timeoutMs ?? 250;
    this.#log = options.log;
    this.#fallback = new InMemoryRateLimiter({ ratePerSecond: this.#rate, burst: this.#burst });
    this.#redis = new Redis(options.url, {
      lazyConnect: false,
      // Calls while disconnected fail at once; the fallback answers them.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 2_000,
      retryStrategy: (attempt) => Math.min(2_000, 100 * 2 ** Math.min(attempt, 5)),
    });
    this.#redis.on('error', () => {}); // reported through `connected` and the fallback log
    this.#redis.on('ready', () => {
      if (this.#fallbackLogged) this.#log.info('Redis is back: rate limits are shared again');
      this.#fallbackLogged = false;
    });
    this.#redis.defineCommand('orchestraTake', { numberOfKeys: 1, lua: TAKE });
    this.#redis.defineCommand('orchestraCharge', { numberOfKeys: 1, lua: CHARGE });
  }

  /** True while Redis takes commands. */
  get connected(): boolean {
    return this.#redis.status === 'ready';
  }

  /** Resolves once connected, or rejects after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.connected) {
      if (Date.now() > deadline || this.#redis.status === 'end')
        throw new Error(`Redis did not answer within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async ping(timeoutMs: number): Promise<void> {
    if (!this.connected) throw new Error('not connected to Redis');
    await withTimeout(this.#redis.ping(), timeoutMs);
  }

  consume(key: string): Promise<RateLimitDecision> {
    return this.#run(
      (commands, shared) => commands.orchestraTake(shared, this.#rate, this.#burst),
      () => this.#fallback.consume(key),
      key,
    );
  }

  charge(key: string, tokens: number): Promise<RateLimitDecision> {
    return this.#run(
      (commands, shared) => commands.orchestraCharge(shared, this.#rate, this.#burst, tokens),
      () => this.#fallback.charge(key, tokens),
      key,
    );
  }

  /** Runs a bucket script on the key in Redis, or asks this node's buckets when it cannot. */
  async #run(
    script: (commands: BucketCommands, sharedKey: string) => Promise<[number, string]>,
    alone: () => RateLimitDecision,
    key: string,
  ): Promise<RateLimitDecision> {
    if (this.connected) {
      try {
        const command = script(this.#redis as unknown as BucketCommands, `${this.#prefix}${key}`);
        const [allowed, tokens] = await withTimeout(command, this.#timeoutMs);
        return decisionOf(allowed === 1, Number(tokens), this.#rate, this.#burst);
      } catch (err) {
        this.#logFallback(err);
      }
    } else {
      this.#logFallback(undefined);
    }
    return alone();
  }

  close(): void {
    this.#fallback.close();
    this.#redis.disconnect();
  }

  #logFallback(err: unknown): void {
    if (this.#fallbackLogged) return;
    this.#fallbackLogged = true;
    this.#log.warn({ err }, 'Redis does not answer: rate limits are per node until it is back');
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
