import type {
  CatalogEntry,
  CreateCatalogEntry,
  CreateMcpServer,
  CreateMcpView,
  InstallCatalogEntry,
  McpPrompt,
  McpResource,
  McpServer,
  McpServerLog,
  McpView,
  UpdateMcpServer,
  UpdateMcpView,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { paginate } from './listing.ts';
import type { Page, PageOptions } from './types.ts';

// The MCP hub (servers Orchestra runs or connects to, and the catalog they are installed
// from) and the gateway's views. The wire types are @orchestra/protocol's (decision 0014).

export type {
  CatalogEntry,
  McpPrompt,
  McpResource,
  McpServer,
  McpServerLog,
  McpServerState,
  McpServerStatus,
  McpTransport,
  McpView,
  McpViewTool,
} from '@orchestra/protocol';

/** What `mcpServers.create` takes: a name, a transport and how to reach the server. */
export type CreateMcpServerInput = CreateMcpServer;

/** A server's settings; an update replaces all of them (fields left out take their defaults). */
export type McpServerDefinition = UpdateMcpServer;

/** What `mcpCatalog.create` takes: an entry of the tenant's own catalog. */
export type CreateCatalogEntryInput = CreateCatalogEntry;

/** What `mcpCatalog.install` takes besides the entry: all optional. */
export type InstallCatalogEntryInput = InstallCatalogEntry;

/** What `mcpViews.create` takes. */
export type CreateMcpViewInput = CreateMcpView;

/** What a view offers; an update replaces all of it. */
export type McpViewDefinition = UpdateMcpView;

const serverPath = (ref: string) => `/v1/mcp/servers/${encodeURIComponent(ref)}`;
const entryPath = (id: string) => `/v1/mcp/catalog/${encodeURIComponent(id)}`;
const viewPath = (ref: string) => `/v1/mcp/views/${encodeURIComponent(ref)}`;

/**
 * `Orchestra.mcpServers`: the MCP servers of the tenant, whose tools join the registry as
 * `<server>__<tool>` (reading: any role; changing: admin). Wherever a method takes `ref`, it
 * is the server's name or id (`mcp_…`); one that does not exist rejects with
 * `MCP_SERVER_NOT_FOUND` (404). Env and header values are never returned, only their names
 * (`env_names`, `header_names`).
 */
export class McpServersApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /**
   * Registers a server: a node starts (stdio) or connects to (HTTP) it at once, so it
   * resolves while `status.state` is still `connecting`; follow it with `get`. Values of
   * `env` and `headers` may refer to secrets as `${secret:NAME}`.
   */
  create(input: CreateMcpServerInput): Promise<McpServer> {
    return this.#client.request('POST', '/v1/mcp/servers', { body: input });
  }

  /** One page of servers with their status. */
  list(options: PageOptions = {}): Promise<Page<McpServer>> {
    return this.#client.request('GET', '/v1/mcp/servers', { query: { ...options } });
  }

  /** Every server, page after page. */
  listAll(options: Omit<PageOptions, 'cursor'> = {}): AsyncIterable<McpServer> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }

  /** The server's settings and status: state, reason, protocol version, node, restarts. */
  get(ref: string): Promise<McpServer> {
    return this.#client.request('GET', serverPath(ref));
  }

  /** Replaces the server's settings; it restarts with them. */
  update(ref: string, definition: McpServerDefinition): Promise<McpServer> {
    return this.#client.request('PUT', serverPath(ref), { body: definition });
  }

  /** Stops the server and removes it and its tools (the record of their calls stays). */
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', serverPath(ref));
  }

  /** Starts the server again; its tools are served again once it is ready. */
  enable(ref: string): Promise<McpServer> {
    return this.#client.request('POST', `${serverPath(ref)}/enable`);
  }

  /** Stops the server; its tools are not served until it is enabled. */
  disable(ref: string): Promise<McpServer> {
    return this.#client.request('POST', `${serverPath(ref)}/disable`);
  }

  /** Restarts (for HTTP: reconnects to) the server with a fresh backoff. */
  restart(ref: string): Promise<McpServer> {
    return this.#client.request('POST', `${serverPath(ref)}/restart`);
  }

  /**
   * The last lines of its stderr and of what happened to it, oldest first. This and
   * `resources` and `prompts` ask the node that runs the server: they reject with
   * `MCP_SERVER_NOT_RUNNING` (409) when it is disabled or runs on another node of a cluster
   * (`details.node` names it).
   */
  logs(ref: string): Promise<McpServerLog> {
    return this.#client.request('GET', `${serverPath(ref)}/logs`);
  }

  /** The resources the server lists. */
  async resources(ref: string): Promise<McpResource[]> {
    const { items } = await this.#client.request<{ items: McpResource[] }>(
      'GET',
      `${serverPath(ref)}/resources`,
    );
    return items;
  }

  /** The prompts the server lists. */
  async prompts(ref: string): Promise<McpPrompt[]> {
    const { items } = await this.#client.request<{ items: McpPrompt[] }>(
      'GET',
      `${serverPath(ref)}/prompts`,
    );
    return items;
  }
}

/**
 * `Orchestra.mcpCatalog`: installable MCP servers, Orchestra's built-in entries then the
 * tenant's own (reading: any role; changing and installing: admin).
 */
export class McpCatalogApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** Every entry: built-in ones first (`origin: 'builtin'`), then the tenant's. */
  async list(): Promise<CatalogEntry[]> {
    const { items } = await this.#client.request<{ items: CatalogEntry[] }>(
      'GET',
      '/v1/mcp/catalog',
    );
    return items;
  }

  /** Adds an entry to the tenant's catalog. */
  create(input: CreateCatalogEntryInput): Promise<CatalogEntry> {
    return this.#client.request('POST', '/v1/mcp/catalog', { body: input });
  }

  /**
   * Removes an entry of the tenant's catalog; servers installed from it stay.
   * `MCP_CATALOG_ENTRY_NOT_FOUND` (404) when the tenant has no such entry.
   */
  async delete(entryId: string): Promise<void> {
    await this.#client.request('DELETE', entryPath(entryId));
  }

  /**
   * Registers a server from the entry, named after it unless `name` is given. `config` is
   * checked against the entry's `config_schema` (defaults applied). Resolves, like
   * `mcpServers.create`, while the server is still connecting.
   */
  install(entryId: string, input: InstallCatalogEntryInput = {}): Promise<McpServer> {
    return this.#client.request('POST', `${entryPath(entryId)}/install`, { body: input });
  }
}

/**
 * `Orchestra.mcpViews`: virtual MCP servers the gateway serves at `/mcp/{view}`, each with a
 * chosen set of tools (reading: any role; changing: admin). `ref` is the view's name or id;
 * one that does not exist rejects with `MCP_VIEW_NOT_FOUND` (404). The policy still decides
 * what each caller sees and may call.
 */
export class McpViewsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  list(options: PageOptions = {}): Promise<Page<McpView>> {
    return this.#client.request('GET', '/v1/mcp/views', { query: { ...options } });
  }
  listAll(options: Omit<PageOptions, 'cursor'> = {}): AsyncIterable<McpView> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }
  get(ref: string): Promise<McpView> {
    return this.#client.request('GET', viewPath(ref));
  }
  create(input: CreateMcpViewInput): Promise<McpView> {
    return this.#client.request('POST', '/v1/mcp/views', { body: input });
  }
  /** Replaces the whole view; its clients see the change on their next list. */
  update(ref: string, definition: McpViewDefinition): Promise<McpView> {
    return this.#client.request('PUT', viewPath(ref), { body: definition });
  }
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', viewPath(ref));
  }
}
