import {
  type CreateTemplate,
  HOSTED_CAPABILITY,
  type Template,
  type TemplateSpec,
  type UpdateTemplate,
} from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import {
  bytesOf,
  DEFAULT_PAGE_LIMIT,
  decodeCursor,
  fetchPage,
  ROW_OVERHEAD_BYTES,
  toPage,
} from '../platform/pagination.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import { describeErrors, UserSchemaCompiler } from '../platform/user-schema.ts';
import type { Database } from '../store/database.ts';
import { countRows, isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { TemplatesTable, TemplateVersionsTable } from './tables.ts';

/** Defaults of a template that does not set them. */
export const TEMPLATE_DEFAULTS = {
  default_timeout_ms: 300_000,
  default_max_attempts: 3,
  default_priority: 0,
  strategy: 'least_connections',
} as const;

const TEMPLATE_ID_PREFIX = 'tpl_';

export interface TemplateVersionSummary {
  version: number;
  created_at: string;
  created_by: string;
  latest: boolean;
}

/** Undefined when the value matches the schema, else the problems in words. */
export type SchemaCheck = (value: unknown) => string | undefined;

/** What a task needs from its template: the pinned definition and an input check. */
export interface ResolvedTemplate {
  template: Template;
  checkInput: SchemaCheck;
}

/** Compiled schema checks kept, by kind, template id and version (versions are immutable). */
const VALIDATOR_CACHE_SIZE = 500;

export interface ListTemplatesOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  name_prefix?: string | undefined;
  /** `key=value` selectors; a template must carry all of them. */
  labels?: Record<string, string>;
  /** About the most bytes of JSON the page may carry (ORCHESTRA_RESPONSE_MAX_BYTES). */
  maxBytes: number;
}

function templateNotFound(ref: string): ApiError {
  return new ApiError('TEMPLATE_NOT_FOUND', `Template "${ref}" does not exist`);
}

/**
 * Versioned agent templates of a tenant. Every create or update writes an immutable
 * version; `latest` points to the newest unless rolled back. Every method scopes to the
 * principal's tenant: templates of other tenants do not exist for it.
 */
export class TemplateService {
  readonly #store: RelationalStore;
  readonly #schemas = new UserSchemaCompiler();
  readonly #validators = new Map<string, SchemaCheck>();
  readonly #specs = new Map<string, TemplateSpec>();
  readonly #limit: TenantLimit;

  /** `limits`: each tenant's most templates. */
  constructor(deps: { store: RelationalStore; limits: TenantLimitSource }) {
    this.#store = deps.store;
    this.#limit = new TenantLimit({
      name: 'max_templates',
      limits: deps.limits,
      what: 'templates',
      count: (tenantId) => countRows(this.#store.db, 'templates', { tenant_id: tenantId }),
    });
  }

  /** Checks a definition and fills in defaults; throws VALIDATION_FAILED naming the field. */
  #spec(input: UpdateTemplate): TemplateSpec {
    for (const field of ['input_schema', 'output_schema', 'config_schema'] as const) {
      const schema = input[field];
      if (schema === undefined) continue;
      const check = this.#schemas.check(schema);
      if (!check.ok) {
        const at = check.field === undefined ? '' : `.${check.field}`;
        throw fieldError(`body.${field}${at}`, check.message);
      }
    }
    if (input.config_schema !== undefined) {
      const check = this.#schemas.check(input.config_schema);
      if (check.ok && !check.validate(input.config ?? {})) {
        throw fieldError(
          'body.config',
          `does not match config_schema: ${describeErrors(check.validate.errors)}`,
        );
      }
    }
    const kind = input.kind ?? 'agent';
    if (kind === 'llm') {
      if (input.llm == null) throw fieldError('body.llm', 'is required for kind llm');
      if (input.capabilities !== undefined && input.capabilities.length > 0) {
        throw fieldError(
          'body.capabilities',
          `is set by Orchestra for kind llm (${HOSTED_CAPABILITY}: only hosted runners take its tasks)`,
        );
      }
    } else if (input.llm != null) {
      throw fieldError('body.llm', 'is only for kind llm');
    }
    return {
      kind,
      llm: kind === 'llm' ? (input.llm ?? null) : null,
      description: input.description ?? '',
      labels: input.labels ?? {},
      capabilities: kind === 'llm' ? [HOSTED_CAPABILITY] : (input.capabilities ?? []),
      input_schema: input.input_schema ?? null,
      output_schema: input.output_schema ?? null,
      config_schema: input.config_schema ?? null,
      config: input.config ?? {},
      default_timeout_ms: input.default_timeout_ms ?? TEMPLATE_DEFAULTS.default_timeout_ms,
      default_max_attempts: input.default_max_attempts ?? TEMPLATE_DEFAULTS.default_max_attempts,
      default_priority: input.default_priority ?? TEMPLATE_DEFAULTS.default_priority,
      strategy: input.strategy ?? TEMPLATE_DEFAULTS.strategy,
      concurrency_key_limit: input.concurrency_key_limit ?? null,
    };
  }

  async create(principal: Principal, input: CreateTemplate): Promise<Template> {
    const { name, ...definition } = input;
    const spec = this.#spec(definition);
    await this.#limit.check(principal.tenant.id);
    const now = new Date().toISOString();
    const row: TemplatesTable = {
      id: newId('tpl'),
      tenant_id: principal.tenant.id,
      name,
      latest_version: 1,
      highest_version: 1,
      created_at: now,
      updated_at: now,
    };
    const version: TemplateVersionsTable = {
      template_id: row.id,
      version: 1,
      spec: JSON.stringify(spec),
      created_at: now,
      created_by: credentialId(principal),
    };
    try {
      await this.#store.db.transaction().execute(async (trx) => {
        await trx.insertInto('templates').values(row).execute();
        await trx.insertInto('template_versions').values(version).execute();
        await this.#setLabels(trx, row.id, spec.labels);
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError('TEMPLATE_ALREADY_EXISTS', `A template named "${name}" already exists`, {
          cause: err,
        });
      }
      throw err;
    }
    return view(row, version, spec);
  }

  /** The template at `version`, or at the version `latest` points to. */
  async get(principal: Principal, ref: string, version?: number): Promise<Template> {
    const row = await this.#find(principal, ref);
    const wanted = version ?? row.latest_version;
    const versionRow = await this.#store.db
      .selectFrom('template_versions')
      .selectAll()
      .where('template_id', '=', row.id)
      .where('version', '=', wanted)
      .executeTakeFirst();
    if (versionRow === undefined) {
      throw new ApiError(
        'TEMPLATE_VERSION_NOT_FOUND',
        `Template "${ref}" has no version ${wanted}`,
      );
    }
    return view(row, versionRow, JSON.parse(versionRow.spec) as TemplateSpec);
  }

  async list(
    principal: Principal,
    options: ListTemplatesOptions,
  ): Promise<{ items: Template[]; next_cursor: string | null }> {
    const after = decodeCursor(options.cursor, (id) => id.startsWith(TEMPLATE_ID_PREFIX));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('templates')
      .innerJoin('template_versions', (join) =>
        join
          .onRef('template_versions.template_id', '=', 'templates.id')
          .onRef('template_versions.version', '=', 'templates.latest_version'),
      )
      .where('templates.tenant_id', '=', principal.tenant.id)
      .orderBy('templates.id');
    if (after !== undefined) query = query.where('templates.id', '>', after);
    if (options.name_prefix) {
      // Names are [a-z0-9._-], so a range on the name column is an exact prefix match.
      query = query
        .where('templates.name', '>=', options.name_prefix)
        .where('templates.name', '<', `${options.name_prefix}\u{10FFFF}`);
    }
    for (const [key, value] of Object.entries(options.labels ?? {})) {
      query = query.where((eb) =>
        eb.exists(
          eb
            .selectFrom('template_labels')
            .select('template_labels.key')
            .whereRef('template_labels.template_id', '=', 'templates.id')
            .where('template_labels.key', '=', key)
            .where('template_labels.value', '=', value),
        ),
      );
    }
    // Specs can be large: sized first, so that a page reads no more of them than it sends.
    return fetchPage({
      limit,
      maxBytes: options.maxBytes,
      sizes: async (n) =>
        (await query.select(bytesOf('template_versions.spec').as('size')).limit(n).execute()).map(
          (r) => Number(r.size) + ROW_OVERHEAD_BYTES,
        ),
      rows: (n) =>
        query
          .selectAll('templates')
          .select([
            'template_versions.spec',
            'template_versions.created_at as version_created_at',
            'template_versions.created_by as version_created_by',
          ])
          .limit(n)
          .execute(),
      map: (r) =>
        view(
          r,
          {
            version: r.latest_version,
            created_at: r.version_created_at,
            created_by: r.version_created_by,
          },
          JSON.parse(r.spec) as TemplateSpec,
        ),
    });
  }

  /**
   * Replaces the definition with a new version and points `latest` at it. With
   * `ifLatestVersion`, refuses (412) when `latest` has moved since the caller read it.
   */
  async update(
    principal: Principal,
    ref: string,
    input: UpdateTemplate,
    ifLatestVersion?: number,
  ): Promise<Template> {
    const spec = this.#spec(input);
    const current = await this.#find(principal, ref);
    const now = new Date().toISOString();
    return this.#store.db.transaction().execute(async (trx) => {
      // One statement both reserves the version number and checks the precondition, so
      // concurrent updates get distinct versions and a stale If-Match loses.
      let bump = trx
        .updateTable('templates')
        .set((eb) => ({
          highest_version: eb('highest_version', '+', 1),
          latest_version: eb('highest_version', '+', 1),
          updated_at: now,
        }))
        .where('id', '=', current.id)
        .where('tenant_id', '=', principal.tenant.id);
      if (ifLatestVersion !== undefined) bump = bump.where('latest_version', '=', ifLatestVersion);
      const row = await bump.returningAll().executeTakeFirst();
      if (row === undefined) {
        if (ifLatestVersion !== undefined) {
          throw new ApiError(
            'PRECONDITION_FAILED',
            `The latest version of "${ref}" is no longer ${ifLatestVersion}`,
          );
        }
        throw templateNotFound(ref);
      }
      const version: TemplateVersionsTable = {
        template_id: row.id,
        version: row.highest_version,
        spec: JSON.stringify(spec),
        created_at: now,
        created_by: credentialId(principal),
      };
      await trx.insertInto('template_versions').values(version).execute();
      await this.#setLabels(trx, row.id, spec.labels);
      return view(row, version, spec);
    });
  }

  /** Points `latest` at an existing version; later updates still number from the highest. */
  async rollback(principal: Principal, ref: string, version: number): Promise<Template> {
    const current = await this.#find(principal, ref);
    return this.#store.db.transaction().execute(async (trx) => {
      const versionRow = await trx
        .selectFrom('template_versions')
        .selectAll()
        .where('template_id', '=', current.id)
        .where('version', '=', version)
        .executeTakeFirst();
      if (versionRow === undefined) {
        throw new ApiError(
          'TEMPLATE_VERSION_NOT_FOUND',
          `Template "${ref}" has no version ${version}`,
        );
      }
      const row = await trx
        .updateTable('templates')
        .set({ latest_version: version, updated_at: new Date().toISOString() })
        .where('id', '=', current.id)
        .where('tenant_id', '=', principal.tenant.id)
        .returningAll()
        .executeTakeFirst();
      if (row === undefined) throw templateNotFound(ref);
      const spec = JSON.parse(versionRow.spec) as TemplateSpec;
      await this.#setLabels(trx, row.id, spec.labels);
      return view(row, versionRow, spec);
    });
  }

  async versions(
    principal: Principal,
    ref: string,
    page: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: TemplateVersionSummary[]; next_cursor: string | null }> {
    const row = await this.#find(principal, ref);
    const after = decodeCursor(page.cursor, (version) => /^[1-9]\d{0,9}$/.test(version));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('template_versions')
      .select(['version', 'created_at', 'created_by'])
      .where('template_id', '=', row.id)
      .orderBy('version', 'desc')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('version', '<', Number(after));
    const rows = (await query.execute()).map((r) => ({ ...r, id: String(r.version) }));
    return toPage(
      rows,
      limit,
      (r) => ({
        version: r.version,
        created_at: r.created_at,
        created_by: r.created_by,
        latest: r.version === row.latest_version,
      }),
      page.maxBytes,
    );
  }

  /**
   * The template a task runs: `version`, or the one `latest` points to. Input validators
   * are compiled once per template version.
   */
  async resolve(principal: Principal, ref: string, version?: number): Promise<ResolvedTemplate> {
    const template = await this.get(principal, ref, version);
    return {
      template,
      checkInput: this.#checker('input', template.id, template.version, template.input_schema),
    };
  }

  /**
   * The check of a result against the output schema of a template version, or undefined
   * when the version has none (or no longer exists). Cached like input checks.
   */
  async outputCheck(
    tenantId: string,
    templateId: string,
    version: number,
  ): Promise<SchemaCheck | undefined> {
    const spec = await this.versionSpec(tenantId, templateId, version);
    if (spec === undefined || spec.output_schema === null) return undefined;
    return this.#checker('output', templateId, version, spec.output_schema);
  }

  /**
   * The definition of one version of a template of the tenant, or undefined when it no
   * longer exists. Versions never change, so they are cached.
   */
  async versionSpec(
    tenantId: string,
    templateId: string,
    version: number,
  ): Promise<TemplateSpec | undefined> {
    const key = `${tenantId}/${templateId}@${version}`;
    const cached = this.#specs.get(key);
    if (cached !== undefined) return cached;
    const row = await this.#store.db
      .selectFrom('template_versions')
      .innerJoin('templates', 'templates.id', 'template_versions.template_id')
      .select('template_versions.spec')
      .where('templates.tenant_id', '=', tenantId)
      .where('template_versions.template_id', '=', templateId)
      .where('template_versions.version', '=', version)
      .executeTakeFirst();
    if (row === undefined) return undefined;
    const spec = JSON.parse(row.spec) as TemplateSpec;
    if (this.#specs.size >= VALIDATOR_CACHE_SIZE) {
      const oldest = this.#specs.keys().next().value;
      if (oldest !== undefined) this.#specs.delete(oldest);
    }
    this.#specs.set(key, spec);
    return spec;
  }

  /** A compiled check of one schema of a template version; versions are immutable. */
  #checker(
    kind: 'input' | 'output',
    templateId: string,
    version: number,
    schema: Record<string, unknown> | null,
  ): SchemaCheck {
    const key = `${kind}:${templateId}@${version}`;
    let checker = this.#validators.get(key);
    if (checker === undefined) {
      const check = schema === null ? undefined : this.#schemas.check(schema);
      checker = (value) => {
        if (check === undefined) return undefined;
        if (!check.ok) return `the template's ${kind} schema cannot be used: ${check.message}`;
        return check.validate(value) ? undefined : describeErrors(check.validate.errors);
      };
      if (this.#validators.size >= VALIDATOR_CACHE_SIZE) {
        const oldest = this.#validators.keys().next().value;
        if (oldest !== undefined) this.#validators.delete(oldest);
      }
      this.#validators.set(key, checker);
    }
    return checker;
  }

  /**
   * The tenants with a template version of kind `llm` (`of`: only among these tenants):
   * those whose tasks hosted runners may take.
   */
  async hostedTenants(of?: readonly string[]): Promise<string[]> {
    if (of !== undefined && of.length === 0) return [];
    let query = this.#store.db
      .selectFrom('template_versions')
      .innerJoin('templates', 'templates.id', 'template_versions.template_id')
      .select('templates.tenant_id')
      .distinct()
      // Specs are stored as JSON.stringify writes them: `kind` is their first field.
      .where('template_versions.spec', 'like', '{"kind":"llm"%');
    if (of !== undefined) query = query.where('templates.tenant_id', 'in', of);
    const rows = await query.execute();
    return rows.map((r) => r.tenant_id);
  }

  /** Deletes the template and all its versions. */
  async delete(principal: Principal, ref: string): Promise<void> {
    const row = await this.#find(principal, ref);
    const result = await this.#store.db
      .deleteFrom('templates')
      .where('id', '=', row.id)
      .where('tenant_id', '=', principal.tenant.id)
      .executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) throw templateNotFound(ref);
  }

  /** Finds a template of the principal's tenant by id (`tpl_…`) or name. */
  async #find(principal: Principal, ref: string): Promise<TemplatesTable> {
    const row = await this.#store.db
      .selectFrom('templates')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where(ref.startsWith(TEMPLATE_ID_PREFIX) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw templateNotFound(ref);
    return row;
  }

  async #setLabels(
    trx: Transaction<Database>,
    templateId: string,
    labels: Record<string, string>,
  ): Promise<void> {
    await trx.deleteFrom('template_labels').where('template_id', '=', templateId).execute();
    const rows = Object.entries(labels).map(([key, value]) => ({
      template_id: templateId,
      key,
      value,
    }));
    if (rows.length > 0) await trx.insertInto('template_labels').values(rows).execute();
  }
}

function view(
  row: TemplatesTable,
  version: Pick<TemplateVersionsTable, 'version' | 'created_at' | 'created_by'>,
  spec: TemplateSpec,
): Template {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    version: version.version,
    latest_version: row.latest_version,
    highest_version: row.highest_version,
    ...spec,
    kind: spec.kind ?? 'agent',
    llm: spec.llm ?? null,
    concurrency_key_limit: spec.concurrency_key_limit ?? null,
    created_at: row.created_at,
    updated_at: row.updated_at,
    version_created_at: version.created_at,
    version_created_by: version.created_by,
  };
}
