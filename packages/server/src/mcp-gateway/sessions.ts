import type {
  Server,
  WebStandardStreamableHTTPServerTransport,
} from '@modelcontextprotocol/server';
import type { Principal } from '../platform/auth.ts';
import type { GatewayView } from './backend.ts';

/** One stateful (2025-11-25) MCP session: connection state of this node only. */
export interface McpSession {
  readonly id: string;
  readonly tenantId: string;
  /** The credential that opened it: only the same credential may use it. */
  readonly credential: string;
  readonly view: string | undefined;
  readonly transport: WebStandardStreamableHTTPServerTransport;
  readonly server: Server;
  /** The principal of its latest request (roles and expiry may change between requests). */
  principal: Principal;
  /** What the backend said of the view for its latest request. */
  described: GatewayView | undefined;
  lastActiveMs: number;
  /** HTTP exchanges still open (a GET stream, a streaming call): a session with one is not idle. */
  openExchanges: number;
}

export interface McpSessionLimits {
  maxSessions: number;
  maxSessionsPerTenant: number;
  idleMs: number;
}

/**
 * The node's stateful MCP sessions, bounded in number per tenant and in total, closed after
 * `idleMs` without a request. They live in memory: a session is bound to the node that
 * created it (see docs/mcp.md, "Sessions in a cluster").
 */
export class McpSessions {
  readonly #sessions = new Map<string, McpSession>();
  readonly #limits: McpSessionLimits;
  readonly #now: () => number;

  constructor(limits: McpSessionLimits, now: () => number = Date.now) {
    this.#limits = limits;
    this.#now = now;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Makes room for a new session of the tenant: at a limit, the least recently used idle
   * session (of the tenant, or of the node) is closed — clients often drop sessions without
   * DELETE, and one whose session went gets 404 and initializes again, as the spec says.
   * Resolves to the limit that leaves no room (every session is busy), or `undefined`.
   */
  async makeRoom(tenantId: string): Promise<'node' | 'tenant' | undefined> {
    const all = [...this.#sessions.values()];
    const tenant = all.filter((s) => s.tenantId === tenantId);
    if (tenant.length >= this.#limits.maxSessionsPerTenant) {
      const idle = leastRecentlyUsedIdle(tenant);
      if (idle === undefined) return 'tenant';
      await this.close(idle);
    } else if (all.length >= this.#limits.maxSessions) {
      const idle = leastRecentlyUsedIdle(all);
      if (idle === undefined) return 'node';
      await this.close(idle);
    }
    return undefined;
  }

  add(session: McpSession): void {
    this.#sessions.set(session.id, session);
  }

  get(id: string): McpSession | undefined {
    return this.#sessions.get(id);
  }

  /** Forgets the session (its transport closed); closing it is the caller's. */
  delete(id: string): void {
    this.#sessions.delete(id);
  }

  /** Marks the start of an exchange; the function returned marks its end. */
  touch(session: McpSession): () => void {
    session.lastActiveMs = this.#now();
    session.openExchanges++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      session.openExchanges--;
      session.lastActiveMs = this.#now();
    };
  }

  /** Closes the sessions idle for longer than `idleMs`; resolves to how many. */
  async expireIdle(): Promise<number> {
    const before = this.#now() - this.#limits.idleMs;
    const idle = [...this.#sessions.values()].filter(
      (s) => s.openExchanges === 0 && s.lastActiveMs < before,
    );
    await Promise.all(idle.map((s) => this.close(s)));
    return idle.length;
  }

  async close(session: McpSession): Promise<void> {
    this.#sessions.delete(session.id);
    await session.transport.close().catch(() => {});
    await session.server.close().catch(() => {});
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#sessions.values()].map((s) => this.close(s)));
  }
}

function leastRecentlyUsedIdle(sessions: McpSession[]): McpSession | undefined {
  let found: McpSession | undefined;
  for (const session of sessions) {
    if (session.openExchanges > 0) continue;
    if (found === undefined || session.lastActiveMs < found.lastActiveMs) found = session;
  }
  return found;
}
