import type {
  CreateTool,
  PendingDefinition,
  RetryPolicy,
  Tool,
  ToolAnnotations,
  ToolSource,
  ToolState,
  ToolVersionSummary,
  UpdateTool,
} from '@orchestra/protocol';
import { sql, type Transaction } from 'kysely';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import {
  bytesOf,
  DEFAULT_PAGE_LIMIT,
  decodeCursor,
  encodeCursor,
  fetchPage,
  ROW_OVERHEAD_BYTES,
  toPage,
} from '../platform/pagination.ts';
import { describeErrors, UserSchemaCompiler } from '../platform/user-schema.ts';
import type { Database } from '../store/database.ts';
import { Statement } from '../store/statement.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import { TenantMemo, type ToolChanges } from './changes.ts';
import {
  definitionDiff,
  definitionHash,
  injectionFlags,
  isDestructive,
  isRetrySafe,
  type ToolDefinition,
} from './definition.ts';
import type { ToolsTable, ToolVersionsTable } from './tables.ts';
import {
  WORKSPACE_TOOL_PREFIX,
  workspaceTool,
  workspaceTools,
  workspaceToolVersion,
} from './workspace-tools.ts';

export const TOOL_DEFAULT_TIMEOUT_MS = 30_000;
const TOOL_ID_PREFIX = 'tool_';
const CHECK_CACHE_SIZE = 1000;

// A tool by name or id: read on every call (kept until the tenant's tools change).
const TOOL_BY_NAME = new Statement('select * from tools where tenant_id = ? and name = ?');
const TOOL_BY_ID = new Statement('select * from tools where tenant_id = ? and id = ?');

/** The stored definition of one version, with defaults filled in. */
export interface ToolSpec {
  description: string;
  input_schema: Record<string, unknown>;
  output_schema: Record<string, unknown> | null;
  annotations: ToolAnnotations;
  labels: Record<string, string>;
  timeout_ms: number;
  retry: RetryPolicy | null;
  source: ToolSource;
  flags: string[];
}

/** A tool as an MCP server lists it (`tools/list`), in MCP's field names. */
export interface DiscoveredTool {
  name: string;
  description?: string | undefined;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown> | undefined;
  annotations?: ToolAnnotations | undefined;
}

/** A tool ready to be called: its current definition and a check of its arguments. */
export interface CallableTool {
  tool: Tool;
  /** Undefined when the arguments match the input schema, else the problems in words. */
  checkArguments: (args: unknown) => string | undefined;
}

export interface ListToolsOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  name_prefix?: string | undefined;
  /** Words that must all appear in the name or description (case-insensitive). */
  q?: string | undefined;
  source?: 'http' | 'mcp' | 'agent' | 'workspace' | undefined;
  /** Whether the built-in workspace tools are listed too (default true). */
  workspace?: boolean | undefined;
  server?: string | undefined;
  state?: ToolState | undefined;
  labels?: Record<string, string>;
  maxBytes: number;
}

/** A tool an agent declares when it registers (the `register` frame's `tools`). */
export interface AgentDeclaredTool {
  name: string;
  description?: string | undefined;
  input_schema?: Record<string, unknown> | undefined;
  output_schema?: Record<string, unknown> | undefined;
  annotations?: ToolAnnotations | undefined;
  timeout_ms?: number | undefined;
}

/** The capability that routes the calls of an agent-declared tool to the agents serving it. */
export function agentToolCapability(name: string): string {
  return `tool:${name}`;
}

/** The name under which a tool of an MCP server is registered. */
export function mcpToolName(server: string, tool: string): string {
  return `${server}__${tool}`;
}

function toolNotFound(ref: string): ApiError {
  return new ApiError('TOOL_NOT_FOUND', `Tool "${ref}" does not exist`);
}

/** What a tool's breaker and bulkhead are keyed by, and its calls recorded under. */
function upstreamOfSource(source: ToolSource): string {
  switch (source.type) {
    case 'http':
      return hostOf(source.url);
    case 'mcp':
      return source.server;
    case 'agent':
      return 'agents';
    case 'workspace':
      return 'workspace';
  }
}

/** Refuses to change a built-in tool. */
function builtInNotEditable(tool: Tool): ApiError {
  return new ApiError(
    'TOOL_NOT_EDITABLE',
    `Tool "${tool.name}" is built in: it cannot be changed or deleted (tool policies decide who may call it)`,
  );
}

function hostOf(url: string): string {
  try {
    return new URL(url.replace(/\{[^}]*\}/g, 'x')).host;
  } catch {
    return 'invalid';
  }
}

function definitionOf(name: string, spec: ToolSpec): ToolDefinition {
  return {
    name,
    description: spec.description,
    input_schema: spec.input_schema,
    output_schema: spec.output_schema,
    annotations: spec.annotations,
  };
}

/**
 * The tool registry of every tenant: HTTP tools written by users, and the tools of MCP
 * servers, kept in step with what each server lists. Every write makes an immutable
 * version. A tool of a server is pinned to the definition an admin approved: a changed or
 * new definition is held back (not served) until approved.
 */
export class ToolService {
  readonly #store: RelationalStore;
  readonly #schemas = new UserSchemaCompiler();
  readonly #checks = new Map<string, (args: unknown) => string | undefined>();
  readonly #specs = new Map<string, ToolSpec>();
  readonly #changes: ToolChanges;
  /** The rows calls look up by name, kept until the tenant's tools change. */
  readonly #serving: TenantMemo<ToolsTable | null>;

  constructor(deps: { store: RelationalStore; changes: ToolChanges }) {
    this.#store = deps.store;
    this.#changes = deps.changes;
    this.#serving = new TenantMemo(deps.changes);
  }

  /** Checks a user's definition and fills in defaults; throws VALIDATION_FAILED naming the field. */
  #spec(input: UpdateTool): ToolSpec {
    for (const field of ['input_schema', 'output_schema'] as const) {
      const schema = input[field];
      if (schema === undefined) continue;
      const check = this.#schemas.check(schema);
      if (!check.ok) {
        const at = check.field === undefined ? '' : `.${check.field}`;
        throw fieldError(`body.${field}${at}`, check.message);
      }
    }
    const annotations = input.annotations ?? {};
    if (
      input.source.type === 'agent' &&
      input.source.template === undefined &&
      input.source.capabilities === undefined
    ) {
      throw fieldError('body.source', 'an agent tool names a template, capabilities, or both');
    }
    if (input.retry && !isRetrySafe(annotations)) {
      throw fieldError(
        'body.retry',
        'only tools that are read-only (readOnlyHint) or idempotent (idempotentHint) may be retried',
      );
    }
    const spec: ToolSpec = {
      description: input.description ?? '',
      input_schema: input.input_schema ?? { type: 'object' },
      output_schema: input.output_schema ?? null,
      annotations,
      labels: input.labels ?? {},
      timeout_ms: input.timeout_ms ?? TOOL_DEFAULT_TIMEOUT_MS,
      retry: input.retry ?? null,
      source: input.source,
      flags: [],
    };
    spec.flags = injectionFlags(spec);
    return spec;
  }

  /** Registers an HTTP or agent tool (version 1). */
  async create(principal: Principal, input: CreateTool): Promise<Tool> {
    const { name, ...definition } = input;
    if (name.startsWith(WORKSPACE_TOOL_PREFIX)) {
      throw fieldError(
        'body.name',
        `names starting with "${WORKSPACE_TOOL_PREFIX}" are kept for the built-in workspace tools`,
      );
    }
    const spec = this.#spec(definition);
    const now = new Date().toISOString();
    const hash = definitionHash(definitionOf(name, spec));
    const row: ToolsTable = {
      id: newId('tool'),
      tenant_id: principal.tenant.id,
      name,
      source_type: input.source.type,
      upstream: upstreamOfSource(input.source),
      latest_version: 1,
      highest_version: 1,
      state: 'active',
      // Written by an admin: approved as written.
      pinned_hash: hash,
      pending: null,
      created_at: now,
      updated_at: now,
    };
    const version: ToolVersionsTable = {
      tool_id: row.id,
      version: 1,
      spec: JSON.stringify(spec),
      hash,
      created_at: now,
      created_by: credentialId(principal),
    };
    try {
      await this.#store.db.transaction().execute(async (trx) => {
        await trx.insertInto('tools').values(row).execute();
        await trx.insertInto('tool_versions').values(version).execute();
        await this.#setLabels(trx, row.id, spec.labels);
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError('TOOL_ALREADY_EXISTS', `A tool named "${name}" already exists`, {
          cause: err,
        });
      }
      throw err;
    }
    this.#changes.changed(principal.tenant.id);
    return view(row, version, spec);
  }

  /** Replaces an HTTP tool's definition with a new version. */
  async update(principal: Principal, ref: string, input: UpdateTool): Promise<Tool> {
    const builtIn = workspaceTool(principal.tenant.id, ref);
    if (builtIn !== undefined) throw builtInNotEditable(builtIn);
    const spec = this.#spec(input);
    const current = await this.#find(principal.tenant.id, ref);
    if (current.source_type === 'mcp') {
      throw new ApiError(
        'TOOL_NOT_EDITABLE',
        `Tool "${ref}" comes from MCP server "${current.upstream}": it changes through its server`,
      );
    }
    const hash = definitionHash(definitionOf(current.name, spec));
    const updated = await this.#store.db.transaction().execute(async (trx) => {
      const { row, version } = await this.#newVersion(trx, current, spec, hash, principal, {
        upstream: upstreamOfSource(spec.source),
        source_type: spec.source.type,
        pinned_hash: hash,
      });
      return view(row, version, spec);
    });
    this.#changes.changed(principal.tenant.id);
    return updated;
  }

  async #newVersion(
    trx: Transaction<Database>,
    current: ToolsTable,
    spec: ToolSpec,
    hash: string,
    principal: Principal | string,
    set: Partial<
      Pick<ToolsTable, 'upstream' | 'source_type' | 'pinned_hash' | 'pending' | 'state'>
    >,
  ): Promise<{ row: ToolsTable; version: ToolVersionsTable }> {
    const now = new Date().toISOString();
    const row = await trx
      .updateTable('tools')
      .set((eb) => ({
        highest_version: eb('highest_version', '+', 1),
        latest_version: eb('highest_version', '+', 1),
        updated_at: now,
        ...set,
      }))
      .where('id', '=', current.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw toolNotFound(current.name);
    const version: ToolVersionsTable = {
      tool_id: row.id,
      version: row.highest_version,
      spec: JSON.stringify(spec),
      hash,
      created_at: now,
      created_by: typeof principal === 'string' ? principal : credentialId(principal),
    };
    await trx.insertInto('tool_versions').values(version).execute();
    await this.#setLabels(trx, row.id, spec.labels);
    return { row, version };
  }

  /** The tool at `version`, or at its latest version. */
  async get(principal: Principal, ref: string, version?: number): Promise<Tool> {
    const builtIn = workspaceTool(principal.tenant.id, ref);
    if (builtIn !== undefined) {
      if (version !== undefined && version !== 1) {
        throw new ApiError('TOOL_VERSION_NOT_FOUND', `Tool "${ref}" has no version ${version}`);
      }
      return builtIn;
    }
    const row = await this.#find(principal.tenant.id, ref);
    const wanted = version ?? row.latest_version;
    const versionRow = await this.#store.db
      .selectFrom('tool_versions')
      .selectAll()
      .where('tool_id', '=', row.id)
      .where('version', '=', wanted)
      .executeTakeFirst();
    if (versionRow === undefined) {
      throw new ApiError('TOOL_VERSION_NOT_FOUND', `Tool "${ref}" has no version ${wanted}`);
    }
    return view(row, versionRow, JSON.parse(versionRow.spec) as ToolSpec);
  }

  async list(
    tenantId: string,
    options: ListToolsOptions,
  ): Promise<{ items: Tool[]; next_cursor: string | null }> {
    const after = decodeCursor(options.cursor, (id) => id.startsWith(TOOL_ID_PREFIX));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    // The built-in tools come first (their ids sort before any stored tool's).
    const builtIns =
      options.workspace === false
        ? []
        : workspaceTools(tenantId)
            .filter((t) => after === undefined || t.id > after)
            .filter((t) => listed(t, options))
            .slice(0, limit);
    if (builtIns.length === limit) {
      const last = builtIns.at(-1);
      return { items: builtIns, next_cursor: last === undefined ? null : encodeCursor(last.id) };
    }
    const stored = await this.#listStored(tenantId, options, after, limit - builtIns.length);
    return { items: [...builtIns, ...stored.items], next_cursor: stored.next_cursor };
  }

  async #listStored(
    tenantId: string,
    options: ListToolsOptions,
    after: string | undefined,
    limit: number,
  ): Promise<{ items: Tool[]; next_cursor: string | null }> {
    let query = this.#store.db
      .selectFrom('tools')
      .innerJoin('tool_versions', (join) =>
        join
          .onRef('tool_versions.tool_id', '=', 'tools.id')
          .onRef('tool_versions.version', '=', 'tools.latest_version'),
      )
      .where('tools.tenant_id', '=', tenantId)
      .orderBy('tools.id');
    if (after !== undefined) query = query.where('tools.id', '>', after);
    if (options.name_prefix) {
      query = query
        .where('tools.name', '>=', options.name_prefix)
        .where('tools.name', '<', `${options.name_prefix}\u{10FFFF}`);
    }
    if (options.source !== undefined) query = query.where('tools.source_type', '=', options.source);
    if (options.server !== undefined) {
      query = query
        .where('tools.source_type', '=', 'mcp')
        .where('tools.upstream', '=', options.server);
    }
    if (options.state !== undefined) query = query.where('tools.state', '=', options.state);
    for (const word of (options.q ?? '').toLowerCase().split(/\s+/).filter(Boolean).slice(0, 10)) {
      // Matched on the name and the stored spec's text: a word in a schema counts too.
      const like = `%${word.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      // ESCAPE is explicit: SQLite has no default escape character in LIKE.
      query = query.where(
        sql<boolean>`(lower(tools.name) like ${like} escape '\\' or lower(tool_versions.spec) like ${like} escape '\\')`,
      );
    }
    for (const [key, value] of Object.entries(options.labels ?? {})) {
      query = query.where((eb) =>
        eb.exists(
          eb
            .selectFrom('tool_labels')
            .select('tool_labels.key')
            .whereRef('tool_labels.tool_id', '=', 'tools.id')
            .where('tool_labels.key', '=', key)
            .where('tool_labels.value', '=', value),
        ),
      );
    }
    return fetchPage({
      limit,
      maxBytes: options.maxBytes,
      sizes: async (n) =>
        (
          await query
            .select(bytesOf('tool_versions.spec', 'tools.pending').as('size'))
            .limit(n)
            .execute()
        ).map((r) => Number(r.size) + ROW_OVERHEAD_BYTES),
      rows: (n) =>
        query
          .selectAll('tools')
          .select([
            'tool_versions.spec',
            'tool_versions.hash',
            'tool_versions.created_at as version_created_at',
            'tool_versions.created_by as version_created_by',
          ])
          .limit(n)
          .execute(),
      map: (r) =>
        view(
          r,
          {
            version: r.latest_version,
            hash: r.hash,
            created_at: r.version_created_at,
            created_by: r.version_created_by,
          },
          JSON.parse(r.spec) as ToolSpec,
        ),
    });
  }

  /**
   * Stored tools named like a built-in one (made before the workspace tools came): the
   * built-in is served under the name, so these cannot be called or changed by it.
   */
  async shadowedByBuiltIns(): Promise<{ tenant_id: string; name: string; id: string }[]> {
    return this.#store.db
      .selectFrom('tools')
      .select(['tenant_id', 'name', 'id'])
      .where('name', 'like', `${WORKSPACE_TOOL_PREFIX}%`)
      .execute();
  }

  /** Every active tool of the tenant at its latest version (for the MCP gateway). */
  async active(tenantId: string): Promise<Tool[]> {
    const rows = await this.#store.db
      .selectFrom('tools')
      .innerJoin('tool_versions', (join) =>
        join
          .onRef('tool_versions.tool_id', '=', 'tools.id')
          .onRef('tool_versions.version', '=', 'tools.latest_version'),
      )
      .selectAll('tools')
      .select([
        'tool_versions.spec',
        'tool_versions.hash',
        'tool_versions.created_at as vc',
        'tool_versions.created_by as vb',
      ])
      .where('tools.tenant_id', '=', tenantId)
      .where('tools.state', '=', 'active')
      .orderBy('tools.name')
      .execute();
    return rows.map((r) =>
      view(
        r,
        { version: r.latest_version, hash: r.hash, created_at: r.vc, created_by: r.vb },
        JSON.parse(r.spec) as ToolSpec,
      ),
    );
  }

  async versions(
    principal: Principal,
    ref: string,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: ToolVersionSummary[]; next_cursor: string | null }> {
    const builtIn = workspaceTool(principal.tenant.id, ref);
    if (builtIn !== undefined) {
      return {
        items: page.cursor === undefined ? [workspaceToolVersion(builtIn)] : [],
        next_cursor: null,
      };
    }
    const row = await this.#find(principal.tenant.id, ref);
    const after = decodeCursor(page.cursor, (version) => /^[1-9]\d{0,9}$/.test(version));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tool_versions')
      .select(['version', 'hash', 'created_at', 'created_by'])
      .where('tool_id', '=', row.id)
      .orderBy('version', 'desc')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('version', '<', Number(after));
    const rows = (await query.execute()).map((r) => ({ ...r, id: String(r.version) }));
    return toPage(
      rows,
      limit,
      (r) => ({
        version: r.version,
        hash: r.hash,
        created_at: r.created_at,
        created_by: r.created_by,
        latest: r.version === row.latest_version,
      }),
      page.maxBytes,
    );
  }

  /** Deletes an HTTP tool and its versions; the record of its calls stays. */
  async delete(principal: Principal, ref: string): Promise<void> {
    const builtIn = workspaceTool(principal.tenant.id, ref);
    if (builtIn !== undefined) throw builtInNotEditable(builtIn);
    const row = await this.#find(principal.tenant.id, ref);
    if (row.source_type === 'mcp') {
      throw new ApiError(
        'TOOL_NOT_EDITABLE',
        `Tool "${ref}" comes from MCP server "${row.upstream}": remove or disable the server instead`,
      );
    }
    await this.#store.db.deleteFrom('tools').where('id', '=', row.id).execute();
    this.#changes.changed(principal.tenant.id);
  }

  /**
   * Approves the definition a server changed or added: it becomes a new version, pinned,
   * and is served. `hash` must be the pending one the admin reviewed.
   */
  async approve(principal: Principal, ref: string, hash: string): Promise<Tool> {
    const builtIn = workspaceTool(principal.tenant.id, ref);
    if (builtIn !== undefined) {
      throw new ApiError(
        'TOOL_NOT_HELD',
        `Tool "${builtIn.name}" is built in: it has no definition waiting for approval`,
      );
    }
    const current = await this.#find(principal.tenant.id, ref);
    const pending =
      current.pending === null ? null : (JSON.parse(current.pending) as PendingDefinition);
    if (pending === null) {
      throw new ApiError('TOOL_NOT_HELD', `Tool "${ref}" has no definition waiting for approval`);
    }
    if (pending.hash !== hash) {
      throw new ApiError(
        'TOOL_DEFINITION_CHANGED',
        `The definition waiting for approval is ${pending.hash}, not ${hash}: review it again`,
        { details: { pending_hash: pending.hash } },
      );
    }
    const latest = await this.#versionSpec(current.id, current.latest_version);
    const spec: ToolSpec = {
      ...latest,
      description: pending.description,
      input_schema: pending.input_schema,
      output_schema: pending.output_schema,
      annotations: pending.annotations,
      flags: pending.flags,
    };
    const approved = await this.#store.db.transaction().execute(async (trx) => {
      const { row, version } = await this.#newVersion(trx, current, spec, hash, principal, {
        pinned_hash: hash,
        pending: null,
        state: 'active',
      });
      return view(row, version, spec);
    });
    this.#changes.changed(principal.tenant.id);
    return approved;
  }

  /**
   * Brings the registry in step with what MCP server `server` lists now. Known tools whose
   * definition matches their pin stay (or become again) active; a changed definition is
   * held back with a diff; a new tool is held too, unless `trustNew` (the first listing of a
   * server its admin just registered) and its description raises no flag; tools the server
   * no longer lists become unavailable. Resolves to what changed, by tool name.
   */
  async syncServer(
    tenantId: string,
    server: string,
    listed: readonly DiscoveredTool[],
    options: { trustNew: boolean; timeoutMs: number; createdBy: string },
  ): Promise<{ added: string[]; held: string[]; removed: string[] }> {
    const outcome = { added: [] as string[], held: [] as string[], removed: [] as string[] };
    let restored = false;
    await this.#store.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('tools')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('source_type', '=', 'mcp')
        .where('upstream', '=', server)
        .execute();
      const byName = new Map(existing.map((r) => [r.name, r]));
      const seen = new Set<string>();
      const now = new Date().toISOString();
      for (const tool of listed) {
        const name = mcpToolName(server, tool.name);
        seen.add(name);
        const spec: ToolSpec = {
          description: tool.description ?? '',
          input_schema: tool.inputSchema,
          output_schema: tool.outputSchema ?? null,
          annotations: tool.annotations ?? {},
          labels: {},
          timeout_ms: options.timeoutMs,
          retry: null,
          source: { type: 'mcp', server, tool: tool.name },
          flags: [],
        };
        const change = await this.#reconcile(trx, tenantId, name, spec, byName.get(name), {
          trustNew: options.trustNew,
          createdBy: options.createdBy,
          now,
        });
        if (change === 'added') outcome.added.push(name);
        if (change === 'held') outcome.held.push(name);
        if (change === 'restored') restored = true;
      }
      for (const row of existing) {
        if (seen.has(row.name) || row.state === 'unavailable') continue;
        await trx
          .updateTable('tools')
          .set({ state: 'unavailable', updated_at: now })
          .where('id', '=', row.id)
          .execute();
        outcome.removed.push(row.name);
      }
    });
    if (restored || outcome.added.length + outcome.held.length + outcome.removed.length > 0) {
      this.#changes.changed(tenantId);
    }
    return outcome;
  }

  /**
   * Brings one discovered tool (of an MCP server, or declared by an agent) in step with the
   * registry: a new one is added (active if trusted and unflagged, else held); one that
   * matches its pin becomes active again; a changed one is held with a diff against the
   * pinned definition. Resolves to what happened.
   */
  async #reconcile(
    trx: Transaction<Database>,
    tenantId: string,
    name: string,
    spec: ToolSpec,
    row: ToolsTable | undefined,
    options: { trustNew: boolean; createdBy: string; now: string },
  ): Promise<'added' | 'held' | 'restored' | 'unchanged'> {
    const { now } = options;
    spec.flags = injectionFlags(spec);
    const hash = definitionHash(definitionOf(name, spec));
    if (row === undefined) {
      const trusted = options.trustNew && spec.flags.length === 0;
      const pending = trusted ? null : pendingOf(hash, spec, [], now);
      const created: ToolsTable = {
        id: newId('tool'),
        tenant_id: tenantId,
        name,
        source_type: spec.source.type,
        upstream: upstreamOfSource(spec.source),
        latest_version: 1,
        highest_version: 1,
        state: trusted ? 'active' : 'held',
        pinned_hash: trusted ? hash : null,
        pending: pending === null ? null : JSON.stringify(pending),
        created_at: now,
        updated_at: now,
      };
      await trx.insertInto('tools').values(created).execute();
      await trx
        .insertInto('tool_versions')
        .values({
          tool_id: created.id,
          version: 1,
          spec: JSON.stringify(spec),
          hash,
          created_at: now,
          created_by: options.createdBy,
        })
        .execute();
      return trusted ? 'added' : 'held';
    }
    if (row.pinned_hash === hash) {
      if (row.state !== 'active' || row.pending !== null) {
        await trx
          .updateTable('tools')
          .set({ state: 'active', pending: null, updated_at: now })
          .where('id', '=', row.id)
          .execute();
        return 'restored';
      }
      return 'unchanged';
    }
    const heldAlready =
      row.pending === null ? null : (JSON.parse(row.pending) as PendingDefinition);
    if (heldAlready?.hash === hash && row.state === 'held') return 'unchanged';
    const pinned = await this.#versionSpec(row.id, row.latest_version, trx);
    const diff =
      row.pinned_hash === null
        ? []
        : definitionDiff(definitionOf(name, pinned), definitionOf(name, spec));
    await trx
      .updateTable('tools')
      .set({
        state: 'held',
        pending: JSON.stringify(pendingOf(hash, spec, diff, now)),
        updated_at: now,
      })
      .where('id', '=', row.id)
      .execute();
    return 'held';
  }

  /**
   * The tools an agent declared when it registered: each becomes (or stays) an agent tool
   * served by the capability `tool:<name>`, pinned like an MCP server's tools. A name taken
   * by an HTTP or MCP tool is skipped. Declarations never remove a tool: another agent may
   * still serve it. Resolves to what changed, and the names it skipped.
   */
  async syncAgentTools(
    tenantId: string,
    agentId: string,
    declared: readonly AgentDeclaredTool[],
  ): Promise<{ added: string[]; held: string[]; skipped: string[] }> {
    const outcome = { added: [] as string[], held: [] as string[], skipped: [] as string[] };
    if (declared.length === 0) return outcome;
    let restored = false;
    await this.#store.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('tools')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where(
          'name',
          'in',
          declared.map((t) => t.name),
        )
        .execute();
      const byName = new Map(existing.map((r) => [r.name, r]));
      const now = new Date().toISOString();
      for (const tool of declared) {
        const row = byName.get(tool.name);
        if (
          (row !== undefined && row.source_type !== 'agent') ||
          tool.name.startsWith(WORKSPACE_TOOL_PREFIX)
        ) {
          outcome.skipped.push(tool.name);
          continue;
        }
        const spec: ToolSpec = {
          description: tool.description ?? '',
          input_schema: tool.input_schema ?? { type: 'object' },
          output_schema: tool.output_schema ?? null,
          annotations: tool.annotations ?? {},
          labels: {},
          timeout_ms: tool.timeout_ms ?? TOOL_DEFAULT_TIMEOUT_MS,
          retry: null,
          source: { type: 'agent', capabilities: [agentToolCapability(tool.name)] },
          flags: [],
        };
        const change = await this.#reconcile(trx, tenantId, tool.name, spec, row, {
          trustNew: true,
          createdBy: `agent:${agentId}`,
          now,
        });
        if (change === 'added') outcome.added.push(tool.name);
        if (change === 'held') outcome.held.push(tool.name);
        if (change === 'restored') restored = true;
      }
    });
    if (restored || outcome.added.length + outcome.held.length > 0) this.#changes.changed(tenantId);
    return outcome;
  }

  /** Marks every tool of an MCP server disabled (`false`) or back in service (`true`). */
  async setServerEnabled(tenantId: string, server: string, enabled: boolean): Promise<void> {
    const now = new Date().toISOString();
    if (enabled) {
      // Back to what the pins say; the next sync re-checks each against the server's list.
      await this.#store.db
        .updateTable('tools')
        .set((eb) => ({
          state: eb.case().when('pending', 'is not', null).then('held').else('active').end(),
          updated_at: now,
        }))
        .where('tenant_id', '=', tenantId)
        .where('source_type', '=', 'mcp')
        .where('upstream', '=', server)
        .where('state', '=', 'disabled')
        .execute();
    } else {
      await this.#store.db
        .updateTable('tools')
        .set({ state: 'disabled', updated_at: now })
        .where('tenant_id', '=', tenantId)
        .where('source_type', '=', 'mcp')
        .where('upstream', '=', server)
        .execute();
    }
    this.#changes.changed(tenantId);
  }

  /** Whether the tenant has a tool named `name` (in any state). */
  async exists(tenantId: string, name: string): Promise<boolean> {
    return (await this.#servingRow(tenantId, name)) !== null;
  }

  /** How many tools each of the tenant's MCP servers `servers` has in the registry. */
  async countByServer(tenantId: string, servers: string[]): Promise<Map<string, number>> {
    if (servers.length === 0) return new Map();
    const rows = await this.#store.db
      .selectFrom('tools')
      .select(['upstream', (eb) => eb.fn.countAll<number>().as('n')])
      .where('tenant_id', '=', tenantId)
      .where('source_type', '=', 'mcp')
      .where('upstream', 'in', servers)
      .groupBy('upstream')
      .execute();
    return new Map(rows.map((r) => [r.upstream, Number(r.n)]));
  }

  /** Forgets every tool of an MCP server (the server was removed). */
  async removeServer(tenantId: string, server: string): Promise<void> {
    await this.#store.db
      .deleteFrom('tools')
      .where('tenant_id', '=', tenantId)
      .where('source_type', '=', 'mcp')
      .where('upstream', '=', server)
      .execute();
    this.#changes.changed(tenantId);
  }

  /**
   * The tool `ref` of the tenant, ready to call. Throws TOOL_NOT_FOUND, or TOOL_NOT_AVAILABLE
   * when it exists but is not served (held, unavailable, disabled).
   */
  async callable(tenantId: string, ref: string): Promise<CallableTool> {
    const builtIn = workspaceTool(tenantId, ref);
    if (builtIn !== undefined) {
      const spec: ToolSpec = { ...builtIn, flags: [] };
      return { tool: builtIn, checkArguments: this.#argumentCheck(builtIn.id, 1, spec) };
    }
    const row = await this.#servingRow(tenantId, ref);
    if (row === null) throw toolNotFound(ref);
    if (row.state !== 'active') {
      throw new ApiError(
        'TOOL_NOT_AVAILABLE',
        row.state === 'held'
          ? `Tool "${row.name}" changed upstream and is held until an admin approves it`
          : `Tool "${row.name}" is ${row.state}`,
        { details: { state: row.state } },
      );
    }
    const spec = await this.#versionSpec(row.id, row.latest_version);
    const hash = row.pinned_hash ?? '';
    const tool = view(
      row,
      { version: row.latest_version, hash, created_at: row.updated_at, created_by: '' },
      spec,
    );
    return { tool, checkArguments: this.#argumentCheck(row.id, row.latest_version, spec) };
  }

  #argumentCheck(
    toolId: string,
    version: number,
    spec: ToolSpec,
  ): (args: unknown) => string | undefined {
    const key = `${toolId}@${version}`;
    let check = this.#checks.get(key);
    if (check === undefined) {
      const compiled = this.#schemas.check(spec.input_schema);
      check = (args) => {
        if (typeof args !== 'object' || args === null || Array.isArray(args)) {
          return 'the arguments must be an object';
        }
        // A server's schema this server cannot evaluate safely is left to the server.
        if (!compiled.ok) return undefined;
        return compiled.validate(args) ? undefined : describeErrors(compiled.validate.errors);
      };
      if (this.#checks.size >= CHECK_CACHE_SIZE) {
        const oldest = this.#checks.keys().next().value;
        if (oldest !== undefined) this.#checks.delete(oldest);
      }
      this.#checks.set(key, check);
    }
    return check;
  }

  /** One version's definition; versions never change, so each is read once (a call's hot path). */
  async #versionSpec(
    toolId: string,
    version: number,
    trx?: Transaction<Database>,
  ): Promise<ToolSpec> {
    const key = `${toolId}@${version}`;
    const cached = this.#specs.get(key);
    if (cached !== undefined) return cached;
    const row = await (trx ?? this.#store.db)
      .selectFrom('tool_versions')
      .select('spec')
      .where('tool_id', '=', toolId)
      .where('version', '=', version)
      .executeTakeFirstOrThrow();
    const spec = JSON.parse(row.spec) as ToolSpec;
    if (this.#specs.size >= CHECK_CACHE_SIZE) {
      const oldest = this.#specs.keys().next().value;
      if (oldest !== undefined) this.#specs.delete(oldest);
    }
    this.#specs.set(key, spec);
    return spec;
  }

  /** A tool by id or name as calls see it: kept between calls until the tenant's tools change. */
  #servingRow(tenantId: string, ref: string): Promise<ToolsTable | null> {
    return this.#serving.get(tenantId, ref, async () => {
      const statement = ref.startsWith(TOOL_ID_PREFIX) ? TOOL_BY_ID : TOOL_BY_NAME;
      const [row] = await statement.rows<ToolsTable>(this.#store.db, this.#store.kind, [
        tenantId,
        ref,
      ]);
      return row ?? null;
    });
  }

  /** A tool of the tenant by id (`tool_…`) or name. */
  async #find(tenantId: string, ref: string): Promise<ToolsTable> {
    const statement = ref.startsWith(TOOL_ID_PREFIX) ? TOOL_BY_ID : TOOL_BY_NAME;
    const [row] = await statement.rows<ToolsTable>(this.#store.db, this.#store.kind, [
      tenantId,
      ref,
    ]);
    if (row === undefined) throw toolNotFound(ref);
    return row;
  }

  async #setLabels(
    trx: Transaction<Database>,
    toolId: string,
    labels: Record<string, string>,
  ): Promise<void> {
    await trx.deleteFrom('tool_labels').where('tool_id', '=', toolId).execute();
    const rows = Object.entries(labels).map(([key, value]) => ({ tool_id: toolId, key, value }));
    if (rows.length > 0) await trx.insertInto('tool_labels').values(rows).execute();
  }
}

function pendingOf(hash: string, spec: ToolSpec, diff: string[], now: string): PendingDefinition {
  return {
    hash,
    detected_at: now,
    description: spec.description,
    input_schema: spec.input_schema,
    output_schema: spec.output_schema,
    annotations: spec.annotations,
    diff,
    flags: spec.flags,
  };
}

function view(
  row: ToolsTable,
  version: Pick<ToolVersionsTable, 'version' | 'hash' | 'created_at' | 'created_by'>,
  spec: ToolSpec,
): Tool {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    version: version.version,
    latest_version: row.latest_version,
    description: spec.description,
    input_schema: spec.input_schema,
    output_schema: spec.output_schema,
    annotations: spec.annotations,
    destructive: isDestructive(spec.annotations),
    labels: spec.labels,
    timeout_ms: spec.timeout_ms,
    retry: spec.retry,
    source: spec.source,
    state: row.state as ToolState,
    flags: spec.flags,
    pinned_hash: row.pinned_hash,
    pending: row.pending === null ? null : (JSON.parse(row.pending) as PendingDefinition),
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

/** Whether a built-in tool passes a listing's filters (it has no labels and no server). */
function listed(tool: Tool, options: ListToolsOptions): boolean {
  if (options.source !== undefined && options.source !== 'workspace') return false;
  if (options.server !== undefined) return false;
  if (options.state !== undefined && options.state !== 'active') return false;
  if (Object.keys(options.labels ?? {}).length > 0) return false;
  if (options.name_prefix && !tool.name.startsWith(options.name_prefix)) return false;
  const text = `${tool.name} ${JSON.stringify({ d: tool.description, s: tool.input_schema })}`;
  const lower = text.toLowerCase();
  return (options.q ?? '')
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 10)
    .every((word) => lower.includes(word));
}
