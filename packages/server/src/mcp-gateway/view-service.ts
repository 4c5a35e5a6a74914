import type { CreateMcpView, McpView, UpdateMcpView } from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { Statement } from '../store/statement.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import { TenantMemo, type ToolChanges } from '../tools/index.ts';
import type { McpViewsTable } from './tables.ts';

type ViewSpec = Omit<McpView, 'id' | 'tenant_id' | 'name' | 'created_at' | 'updated_at'>;

const VIEW_ID_PREFIX = 'mcpv_';

// A view by name or id: read on every request to `/mcp/{view}`.
const VIEW_BY_NAME = new Statement('select * from mcp_views where tenant_id = ? and name = ?');
const VIEW_BY_ID = new Statement('select * from mcp_views where tenant_id = ? and id = ?');

export function viewNotFound(name: string): ApiError {
  return new ApiError('MCP_VIEW_NOT_FOUND', `MCP view "${name}" does not exist`);
}

/** Checks a view's definition: exposed names unique, nothing named twice. */
function specOf(input: UpdateMcpView): ViewSpec {
  const tools = input.tools ?? [];
  const names = new Set<string>();
  tools.forEach((t, i) => {
    const exposed = t.name ?? t.tool;
    if (names.has(exposed)) {
      throw fieldError(`body.tools.${i}.name`, `"${exposed}" is exposed twice in the view`);
    }
    names.add(exposed);
  });
  return {
    description: input.description ?? '',
    tools,
    servers: input.servers ?? [],
    tool_exposure: input.tool_exposure ?? 'all',
    instructions: input.instructions ?? null,
  };
}

/** Named views of a tenant's tools: what `/mcp/{view}` serves. */
export class ViewService {
  readonly #store: RelationalStore;
  readonly #changes: ToolChanges;
  /** Views as requests read them, kept until the tenant's views (or tools) change. */
  readonly #serving: TenantMemo<McpView | null>;

  constructor(deps: { store: RelationalStore; changes: ToolChanges }) {
    this.#store = deps.store;
    this.#changes = deps.changes;
    this.#serving = new TenantMemo(deps.changes);
  }

  async create(principal: Principal, input: CreateMcpView): Promise<McpView> {
    const { name, ...fields } = input;
    const now = new Date().toISOString();
    const row: McpViewsTable = {
      id: newId('mcpv'),
      tenant_id: principal.tenant.id,
      name,
      spec: JSON.stringify(specOf(fields)),
      created_at: now,
      updated_at: now,
    };
    try {
      await this.#store.db.insertInto('mcp_views').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'MCP_VIEW_ALREADY_EXISTS',
          `An MCP view named "${name}" already exists`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    this.#changes.changed(principal.tenant.id);
    return view(row);
  }

  async update(principal: Principal, ref: string, input: UpdateMcpView): Promise<McpView> {
    const current = await this.#find(principal.tenant.id, ref);
    const row = await this.#store.db
      .updateTable('mcp_views')
      .set({ spec: JSON.stringify(specOf(input)), updated_at: new Date().toISOString() })
      .where('id', '=', current.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw viewNotFound(ref);
    this.#changes.changed(principal.tenant.id);
    return view(row);
  }

  async get(tenantId: string, ref: string): Promise<McpView> {
    return view(await this.#find(tenantId, ref));
  }

  /**
   * The view `ref` (a name or an id), for serving it: read with a fixed statement, and
   * shared with other requests while it does not change (read-only). Throws
   * MCP_VIEW_NOT_FOUND.
   */
  async serving(tenantId: string, ref: string): Promise<McpView> {
    const found = await this.#serving.get(tenantId, ref, async () => {
      const statement = ref.startsWith(VIEW_ID_PREFIX) ? VIEW_BY_ID : VIEW_BY_NAME;
      const [row] = await statement.rows<McpViewsTable>(this.#store.db, this.#store.kind, [
        tenantId,
        ref,
      ]);
      return row === undefined ? null : view(row);
    });
    if (found === null) throw viewNotFound(ref);
    return found;
  }

  async list(
    principal: Principal,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: McpView[]; next_cursor: string | null }> {
    const after = decodeCursor(page.cursor, (id) => id.startsWith(VIEW_ID_PREFIX));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('mcp_views')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    return toPage(await query.execute(), limit, view, page.maxBytes);
  }

  async delete(principal: Principal, ref: string): Promise<void> {
    const row = await this.#find(principal.tenant.id, ref);
    await this.#store.db.deleteFrom('mcp_views').where('id', '=', row.id).execute();
    this.#changes.changed(principal.tenant.id);
  }

  async #find(tenantId: string, ref: string): Promise<McpViewsTable> {
    const row = await this.#store.db
      .selectFrom('mcp_views')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where(ref.startsWith(VIEW_ID_PREFIX) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw viewNotFound(ref);
    return row;
  }
}

function view(row: McpViewsTable): McpView {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    ...(JSON.parse(row.spec) as ViewSpec),
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}
