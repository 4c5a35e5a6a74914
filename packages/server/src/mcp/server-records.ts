import type {
  CreateMcpServer,
  McpServer,
  McpServerStatus,
  McpTransport,
  UpdateMcpServer,
} from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { SecretBox } from '../platform/secret-box.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { McpServersTable } from './tables.ts';

export const MCP_DEFAULT_TOOL_TIMEOUT_MS = 30_000;
const SERVER_ID_PREFIX = 'mcp_';

/** A server's settings as stored, without the values of its env and headers. */
export interface McpServerSettings {
  description: string;
  transport: McpTransport;
  command: string | null;
  args: string[];
  cwd: string | null;
  network: boolean;
  url: string | null;
  tool_timeout_ms: number;
  trust_initial_tools: boolean;
}

/** Env and header values: sealed at rest, never returned. */
export interface McpServerCredentials {
  env: Record<string, string>;
  headers: Record<string, string>;
}

/** Everything the hub needs to run a server. */
export interface McpServerRecord {
  row: McpServersTable;
  settings: McpServerSettings;
  credentials: McpServerCredentials;
}

export function initialStatus(enabled: boolean): McpServerStatus {
  return {
    state: enabled ? 'connecting' : 'disabled',
    reason: enabled ? 'waiting for a node to connect to it' : null,
    since: new Date().toISOString(),
    protocol_version: null,
    server_info: null,
    node: null,
    restarts: 0,
    sandboxed: null,
    last_health_check: null,
  };
}

function serverNotFound(ref: string): ApiError {
  return new ApiError('MCP_SERVER_NOT_FOUND', `MCP server "${ref}" does not exist`);
}

const credentialsContext = (id: string) => `mcp_servers:${id}:credentials`;

/** Checks that the fields fit the transport; throws VALIDATION_FAILED naming the field. */
function settingsOf(input: UpdateMcpServer): {
  settings: McpServerSettings;
  credentials: McpServerCredentials;
} {
  if (input.transport === 'stdio') {
    if (input.command === undefined) throw fieldError('body.command', 'is required for stdio');
    for (const field of ['url', 'headers'] as const) {
      if (input[field] !== undefined) throw fieldError(`body.${field}`, 'is for HTTP transports');
    }
  } else {
    if (input.url === undefined) throw fieldError('body.url', `is required for ${input.transport}`);
    for (const field of ['command', 'args', 'cwd', 'env', 'network'] as const) {
      if (input[field] !== undefined) throw fieldError(`body.${field}`, 'is for stdio servers');
    }
  }
  return {
    settings: {
      description: input.description ?? '',
      transport: input.transport,
      command: input.command ?? null,
      args: input.args ?? [],
      cwd: input.cwd ?? null,
      network: input.network ?? false,
      url: input.url ?? null,
      tool_timeout_ms: input.tool_timeout_ms ?? MCP_DEFAULT_TOOL_TIMEOUT_MS,
      trust_initial_tools: input.trust_initial_tools ?? true,
    },
    credentials: { env: input.env ?? {}, headers: input.headers ?? {} },
  };
}

/**
 * The records of MCP servers: what each tenant registered. The values of env and headers
 * are sealed under the node key (they may hold credentials given in the clear rather than
 * as secret references) and never leave through the API.
 */
export class McpServerRecords {
  readonly #store: RelationalStore;
  readonly #box: SecretBox;

  constructor(deps: { store: RelationalStore; box: SecretBox }) {
    this.#store = deps.store;
    this.#box = deps.box;
  }

  async create(
    principal: Principal,
    input: CreateMcpServer,
    catalogEntry: string | null = null,
  ): Promise<McpServerRecord> {
    const { name, enabled, ...rest } = input;
    const { settings, credentials } = settingsOf(rest);
    const now = new Date().toISOString();
    const id = newId('mcp');
    const row: McpServersTable = {
      id,
      tenant_id: principal.tenant.id,
      name,
      spec: JSON.stringify(settings),
      credentials: this.#box.seal(JSON.stringify(credentials), credentialsContext(id)),
      enabled: enabled === false ? 0 : 1,
      catalog_entry: catalogEntry,
      status: JSON.stringify(initialStatus(enabled !== false)),
      synced: 0,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.#store.db.insertInto('mcp_servers').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'MCP_SERVER_ALREADY_EXISTS',
          `An MCP server named "${name}" already exists`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    return { row, settings, credentials };
  }

  async update(
    principal: Principal,
    ref: string,
    input: UpdateMcpServer,
  ): Promise<McpServerRecord> {
    const current = await this.find(principal.tenant.id, ref);
    const { enabled, ...rest } = input;
    const { settings, credentials } = settingsOf(rest);
    const row = await this.#store.db
      .updateTable('mcp_servers')
      .set({
        spec: JSON.stringify(settings),
        credentials: this.#box.seal(
          JSON.stringify(credentials),
          credentialsContext(current.row.id),
        ),
        enabled: enabled === false ? 0 : 1,
        updated_at: new Date().toISOString(),
      })
      .where('id', '=', current.row.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw serverNotFound(ref);
    return { row, settings, credentials };
  }

  async setEnabled(principal: Principal, ref: string, enabled: boolean): Promise<McpServerRecord> {
    const current = await this.find(principal.tenant.id, ref);
    const row = await this.#store.db
      .updateTable('mcp_servers')
      .set({
        enabled: enabled ? 1 : 0,
        updated_at: new Date().toISOString(),
        ...(enabled ? {} : { status: JSON.stringify(initialStatus(false)) }),
      })
      .where('id', '=', current.row.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw serverNotFound(ref);
    return { ...current, row };
  }

  async delete(principal: Principal, ref: string): Promise<McpServersTable> {
    const current = await this.find(principal.tenant.id, ref);
    await this.#store.db.deleteFrom('mcp_servers').where('id', '=', current.row.id).execute();
    return current.row;
  }

  async list(
    principal: Principal,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
    toolCounts: (tenantId: string, servers: string[]) => Promise<Map<string, number>>,
  ): Promise<{ items: McpServer[]; next_cursor: string | null }> {
    const after = decodeCursor(page.cursor, (id) => id.startsWith(SERVER_ID_PREFIX));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('mcp_servers')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    const rows = await query.execute();
    const counts = await toolCounts(
      principal.tenant.id,
      rows.map((r) => r.name),
    );
    return toPage(rows, limit, (r) => this.view(r, counts.get(r.name) ?? 0), page.maxBytes);
  }

  /** A server of the tenant by id (`mcp_…`) or name, credentials opened. */
  async find(tenantId: string, ref: string): Promise<McpServerRecord> {
    const row = await this.#store.db
      .selectFrom('mcp_servers')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where(ref.startsWith(SERVER_ID_PREFIX) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw serverNotFound(ref);
    return this.#record(row);
  }

  /** Every enabled server of every tenant: what the nodes share out between them. */
  async enabled(): Promise<McpServerRecord[]> {
    const rows = await this.#store.db
      .selectFrom('mcp_servers')
      .selectAll()
      .where('enabled', '=', 1)
      .orderBy('id')
      .execute();
    return rows.map((row) => this.#record(row));
  }

  #record(row: McpServersTable): McpServerRecord {
    return {
      row,
      settings: JSON.parse(row.spec) as McpServerSettings,
      credentials: JSON.parse(
        this.#box.open(row.credentials, credentialsContext(row.id)),
      ) as McpServerCredentials,
    };
  }

  /** Records the status the node running the server saw, unless the record changed since. */
  async setStatus(id: string, status: McpServerStatus): Promise<void> {
    await this.#store.db
      .updateTable('mcp_servers')
      .set({ status: JSON.stringify(status) })
      .where('id', '=', id)
      .where('enabled', '=', 1)
      .execute();
  }

  async markSynced(id: string): Promise<void> {
    await this.#store.db
      .updateTable('mcp_servers')
      .set({ synced: 1 })
      .where('id', '=', id)
      .execute();
  }

  view(row: McpServersTable, tools: number): McpServer {
    const settings = JSON.parse(row.spec) as McpServerSettings;
    const credentials = this.#record(row).credentials;
    return {
      id: row.id,
      tenant_id: row.tenant_id,
      name: row.name,
      description: settings.description,
      transport: settings.transport,
      command: settings.command,
      args: settings.args,
      cwd: settings.cwd,
      env_names: Object.keys(credentials.env),
      network: settings.network,
      url: settings.url,
      header_names: Object.keys(credentials.headers),
      tool_timeout_ms: settings.tool_timeout_ms,
      trust_initial_tools: settings.trust_initial_tools,
      enabled: row.enabled === 1,
      catalog_entry: row.catalog_entry,
      status: JSON.parse(row.status) as McpServerStatus,
      tools,
      created_at: row.created_at,
      updated_at: row.updated_at,
    };
  }
}
