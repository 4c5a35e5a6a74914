/** The outcome of taking one token: whether to serve the request, and the header values. */
export interface RateLimitDecision {
  allowed: boolean;
  /** Bucket size. */
  limit: number;
  /** Whole tokens left after this request; 0 while the bucket is in debt. */
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetSeconds: number;
  /** Seconds until one token is available; 0 when allowed. */
  retryAfterSeconds: number;
}

/**
 * The rate-limit port: a token bucket per key. It deliberately knows nothing about
 * requests or credentials; the HTTP layer picks the key. The in-memory adapter limits per
 * node; the Redis adapter (cluster mode) limits across nodes.
 */
export interface RateLimiter {
  readonly backend: 'memory' | 'redis';
  consume(key: string): RateLimitDecision | Promise<RateLimitDecision>;
  /**
   * Takes `tokens` more from the key's bucket after the fact, for work already done (the
   * bytes of an answer already served). Never refuses and never rejects: the bucket may go
   * into debt, down to `-burst` at most (a larger debt is forgiven, so that one answer
   * costs at most about two bursts' worth of waiting), and the key's next `consume` is
   * refused until it has refilled past 1. Resolves to the bucket after the charge
   * (`allowed` is true).
   */
  charge(key: string, tokens: number): RateLimitDecision | Promise<RateLimitDecision>;
  /** Rejects when the shared buckets cannot be reached within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  close(): void;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export interface TokenBucketOptions {
  ratePerSecond: number;
  burst: number;
  /** Keys kept at most; the least recently used are dropped first. */
  maxKeys?: number;
  now?: () => number;
}

/** Token buckets in this process's memory. */
export class InMemoryRateLimiter implements RateLimiter {
  readonly backend = 'memory' as const;
  readonly #rate: number;
  readonly #burst: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(options: TokenBucketOptions) {
    this.#rate = options.ratePerSecond;
    this.#burst = options.burst;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#now = options.now ?? (() => performance.now());
    // A bucket that has refilled holds no information; dropping it bounds memory.
    this.#sweeper = setInterval(() => this.#sweep(), 60_000);
    this.#sweeper.unref();
  }

  consume(key: string): RateLimitDecision {
    const bucket = this.#refilled(key);
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    return decisionOf(allowed, bucket.tokens, this.#rate, this.#burst);
  }

  charge(key: string, tokens: number): RateLimitDecision {
    const bucket = this.#refilled(key);
    bucket.tokens = Math.max(-this.#burst, bucket.tokens - tokens);
    return decisionOf(true, bucket.tokens, this.#rate, this.#burst);
  }

  /** The key's bucket, refilled up to now and marked most recently used. */
  #refilled(key: string): Bucket {
    const now = this.#now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxKeys) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      bucket = { tokens: this.#burst, updatedMs: now };
      this.#buckets.set(key, bucket);
    } else {
      // Re-insert: Map order is then least recently used first, which eviction relies on.
      this.#buckets.delete(key);
      this.#buckets.set(key, bucket);
      const refill = ((now - bucket.updatedMs) / 1000) * this.#rate;
      bucket.tokens = Math.min(this.#burst, bucket.tokens + refill);
      bucket.updatedMs = now;
    }
    return bucket;
  }

  async ping(_timeoutMs: number): Promise<void> {}

  close(): void {
    clearInterval(this.#sweeper);
    this.#buckets.clear();
  }

  #sweep(): void {
    const now = this.#now();
    for (const [key, bucket] of this.#buckets) {
      if (bucket.tokens + ((now - bucket.updatedMs) / 1000) * this.#rate >= this.#burst) {
        this.#buckets.delete(key);
      }
    }
  }
}

/**
 * Charges a rate-limit key for the bytes served to it: one token per `bytesPerToken`
 * (ORCHESTRA_RATE_LIMIT_BYTES_PER_TOKEN), on top of the one its request took. One per
 * request or stream: bytes are summed across `add` calls, so that a stream written in small
 * pieces costs what one answer of the same size does, while a small answer costs nothing.
 */
export class ByteCharge {
  readonly #limiter: RateLimiter;
  readonly #key: string;
  readonly #bytesPerToken: number;
  #uncharged = 0;

  constructor(limiter: RateLimiter, key: string, bytesPerToken: number) {
    this.#limiter = limiter;
    this.#key = key;
    this.#bytesPerToken = bytesPerToken;
  }

  /**
   * Counts `bytes` served; charges the whole tokens they complete. Returns the bucket after
   * the charge, or `undefined` when no whole token was completed. Never rejects.
   */
  add(bytes: number): RateLimitDecision | Promise<RateLimitDecision> | undefined {
    this.#uncharged += bytes;
    const tokens = Math.floor(this.#uncharged / this.#bytesPerToken);
    if (tokens < 1) return undefined;
    this.#uncharged -= tokens * this.#bytesPerToken;
    return this.#limiter.charge(this.#key, tokens);
  }
}

/** The decision for a bucket left with `tokens` after this request (taken or refused). */
export function decisionOf(
  allowed: boolean,
  tokens: number,
  rate: number,
  burst: number,
): RateLimitDecision {
  return {
    allowed,
    limit: burst,
    remaining: Math.max(0, Math.floor(tokens)),
    resetSeconds: Math.ceil((burst - tokens) / rate),
    retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil((1 - tokens) / rate)),
  };
}

/**
 * The rate-limit key of a client address. An IPv6 client usually holds a whole /64, so
 * limiting single addresses would let it rotate through billions of fresh buckets.
 */
export function clientNetwork(ip: string): string {
  const address = ip.split('%')[0] ?? ip; // drop an IPv6 zone id
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  const [head = '', tail] = address.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? headGroups
      : [
          ...headGroups,
          ...Array(8 - headGroups.length - tailGroups.length).fill('0'),
          ...tailGroups,
        ];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`;
}
