import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { connect } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Bus } from './bus.ts';

export interface NatsBusOptions {
  /** NATS server URLs (`nats://host:4222`), comma-separated in the setting. */
  servers: string[];
  /** Every subject is published under this first token, so clusters can share a NATS. */
  prefix: string;
  /** Shown by the NATS server as the client's name (`orchestra <instance id>`). */
  name: string;
  log: Logger;
}

/** How long the first connection may take before the node refuses to start. */
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * The bus across nodes, on core NATS: what one node publishes reaches the subscribers of
 * every node, the publisher's own included. As with the in-process bus, nothing that
 * must not be lost travels here only: messages are wake-ups and fan-out of what the store
 * already holds, and a follower that misses one catches up from the store. So while NATS
 * is unreachable, publishes are dropped (and counted), not queued without bound.
 */
export class NatsBus implements Bus {
  readonly backend = 'nats' as const;
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #subjects = new Map<
    string,
    { sub: Subscription; handlers: Set<(m: unknown) => void> }
  >();
  #connected = true;
  #dropped = 0;

  private constructor(nc: NatsConnection, options: NatsBusOptions) {
    this.#nc = nc;
    this.#prefix = options.prefix;
    this.#log = options.log;
    void this.#watchStatus();
  }

  static async connect(options: NatsBusOptions): Promise<NatsBus> {
    const nc = await connect({
      servers: options.servers,
      name: options.name,
      timeout: CONNECT_TIMEOUT_MS,
      // A node outlives any NATS outage: it reconnects for ever, and polls the store meanwhile.
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      pingInterval: 10_000,
      maxPingOut: 2,
    });
    return new NatsBus(nc, options);
  }

  /** The connection, for JetStream (`events/jetstream-export.ts`). */
  get connection(): NatsConnection {
    return this.#nc;
  }

  /** True while the connection to NATS is up. */
  get connected(): boolean {
    return this.#connected && !this.#nc.isClosed();
  }

  /** Messages dropped because NATS could not take them. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Round trip to the NATS server; rejects when it does not answer within `timeoutMs`. */
  async ping(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.#nc.flush(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('NATS did not answer')), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  publish(subject: string, message: unknown): void {
    if (!this.connected) {
      this.#dropped++;
      return;
    }
    try {
      this.#nc.publish(this.#natsSubject(subject), JSON.stringify(message));
    } catch (err) {
      this.#dropped++;
      this.#log.debug({ err, subject }, 'bus message dropped');
    }
  }

  subscribe(subject: string, handler: (message: unknown) => void): () => void {
    let entry = this.#subjects.get(subject);
    if (entry === undefined) {
      const handlers = new Set<(m: unknown) => void>();
      const sub = this.#nc.subscribe(this.#natsSubject(subject), {
        callback: (err, msg) => {
          if (err !== null) return;
          let message: unknown;
          try {
            message = JSON.parse(msg.string());
          } catch {
            return; // not one of ours
          }
          for (const h of [...handlers]) {
            try {
              h(message);
            } catch {
              // One failing subscriber must not keep the message from the others.
            }
          }
        },
      });
      entry = { sub, handlers };
      this.#subjects.set(subject, entry);
    }
    const { handlers, sub } = entry;
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size === 0 && this.#subjects.get(subject)?.sub === sub) {
        this.#subjects.delete(subject);
        sub.unsubscribe();
      }
    };
  }

  async close(): Promise<void> {
    this.#subjects.clear();
    if (this.#nc.isClosed()) return;
    // Drain hands over what was published before closing; a dead NATS must not hold it.
    await Promise.race([
      this.#nc.drain().catch(() => undefined),
      new Promise((resolve) => setTimeout(resolve, 2_000).unref()),
    ]);
    if (!this.#nc.isClosed()) await this.#nc.close().catch(() => undefined);
  }

  /**
   * Orchestra never subscribes with wildcards, so each subject becomes one escaped token
   * under the prefix.
   */
  #natsSubject(subject: string): string {
    return `${this.#prefix}.${natsToken(subject)}`;
  }

  async #watchStatus(): Promise<void> {
    for await (const status of this.#nc.status()) {
      if (status.type === 'disconnect') {
        this.#connected = false;
        this.#log.warn('lost the connection to NATS; cross-node wake-ups wait for it');
      } else if (status.type === 'reconnect') {
        this.#connected = true;
        this.#log.info('reconnected to NATS');
      }
    }
  }
}

/**
 * `text` as one NATS subject token. Orchestra's subjects hold tenant ids and topic names; a
 * NATS subject may not hold spaces, and `.`, `*` and `>` mean something to it. Letters,
 * digits, `-`, `_` and `:` stay; every other byte becomes `=` and two hex digits.
 */
export function natsToken(text: string): string {
  let token = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const safe =
      (byte >= 0x30 && byte <= 0x39) ||
      (byte >= 0x41 && byte <= 0x5a) ||
      (byte >= 0x61 && byte <= 0x7a) ||
      byte === 0x2d ||
      byte === 0x5f ||
      byte === 0x3a;
    token += safe ? String.fromCharCode(byte) : `=${byte.toString(16).padStart(2, '0')}`;
  }
  // An empty token is not allowed; a lone `=` is no escape, so it cannot collide.
  return token === '' ? '=' : token;
}
