import type {
  CreateModelProvider,
  ModelProvider,
  ModelProviderKind,
  ModelRef,
  ProviderModel,
  UpdateModelProvider,
} from '@orchestra/protocol';
import { sql } from 'kysely';
import type { Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { SecretBox } from '../platform/secret-box.ts';
import { isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { ModelProvidersTable } from './tables.ts';

export const PROVIDER_ID_PREFIX = 'mpr';
export const DEFAULT_MAX_CONCURRENCY = 32;
export const DEFAULT_TIMEOUT_MS = 120_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RETRIES = 2;

/** A provider's settings as stored, without the values of its extra headers. */
export interface ModelProviderSettings {
  kind: ModelProviderKind;
  description: string;
  base_url: string;
  api_key_secret: string | null;
  models: ProviderModel[];
  max_concurrency: number;
  requests_per_minute: number | null;
  timeout_ms: number;
  idle_timeout_ms: number;
  max_retries: number;
  fallbacks: ModelRef[];
}

/** Everything a model call needs of a provider. */
export interface ModelProviderRecord {
  row: ModelProvidersTable;
  settings: ModelProviderSettings;
  /** Header values as given: they may hold `${secret:NAME}` references, resolved per call. */
  headers: Record<string, string>;
}

export function providerNotFound(ref: string): ApiError {
  return new ApiError('MODEL_PROVIDER_NOT_FOUND', `Model provider "${ref}" does not exist`, {
    details: { provider: ref },
  });
}

const headersContext = (id: string) => `model_providers:${id}:headers`;

function settingsOf(input: UpdateModelProvider): ModelProviderSettings {
  const seen = new Set<string>();
  input.models.forEach((model, i) => {
    if (seen.has(model.name)) {
      throw fieldError(`body.models[${i}].name`, `"${model.name}" is listed twice`);
    }
    seen.add(model.name);
  });
  return {
    kind: input.kind,
    description: input.description ?? '',
    base_url: input.base_url,
    api_key_secret: input.api_key_secret ?? null,
    models: input.models,
    max_concurrency: input.max_concurrency ?? DEFAULT_MAX_CONCURRENCY,
    requests_per_minute: input.requests_per_minute ?? null,
    timeout_ms: input.timeout_ms ?? DEFAULT_TIMEOUT_MS,
    idle_timeout_ms: input.idle_timeout_ms ?? DEFAULT_IDLE_TIMEOUT_MS,
    max_retries: input.max_retries ?? DEFAULT_MAX_RETRIES,
    fallbacks: input.fallbacks ?? [],
  };
}

/**
 * The records of model providers: what each tenant registered. Extra header values are
 * sealed under the node key (they may hold credentials given in the clear rather than as
 * secret references) and never leave through the API; the API key is a secret's name.
 */
export class ModelProviderRecords {
  readonly #store: RelationalStore;
  readonly #box: SecretBox;
  readonly #secretExists: (tenantId: string, name: string) => Promise<boolean>;

  /** `secretExists`: whether the tenant has a secret of that name (the API key's). */
  constructor(deps: {
    store: RelationalStore;
    box: SecretBox;
    secretExists: (tenantId: string, name: string) => Promise<boolean>;
  }) {
    this.#store = deps.store;
    this.#box = deps.box;
    this.#secretExists = deps.secretExists;
  }

  async #checkSecret(tenantId: string, settings: ModelProviderSettings): Promise<void> {
    const name = settings.api_key_secret;
    if (name !== null && !(await this.#secretExists(tenantId, name))) {
      throw fieldError(
        'body.api_key_secret',
        `no secret named ${name} exists in this tenant; create it first (PUT /v1/secrets/${name})`,
      );
    }
  }

  async create(principal: Principal, input: CreateModelProvider): Promise<ModelProviderRecord> {
    const { name, enabled, headers = {}, ...rest } = input;
    const settings = settingsOf(rest);
    await this.#checkSecret(principal.tenant.id, settings);
    await this.#checkFallbacks(principal.tenant.id, name, settings, rest.models);
    const now = new Date().toISOString();
    const id = newId(PROVIDER_ID_PREFIX);
    const row: ModelProvidersTable = {
      id,
      tenant_id: principal.tenant.id,
      name,
      kind: settings.kind,
      spec: JSON.stringify(settings),
      headers: this.#box.seal(JSON.stringify(headers), headersContext(id)),
      enabled: enabled === false ? 0 : 1,
      version: 1,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.#store.db.insertInto('model_providers').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new ApiError(
          'MODEL_PROVIDER_ALREADY_EXISTS',
          `A model provider named "${name}" already exists`,
          { cause: err, details: { provider: name } },
        );
      }
      throw err;
    }
    return { row, settings, headers };
  }

  /** Replaces the provider's settings (the name stays). */
  async update(
    principal: Principal,
    ref: string,
    input: UpdateModelProvider,
  ): Promise<ModelProviderRecord> {
    const current = await this.find(principal.tenant.id, ref);
    const { enabled, headers = {}, ...rest } = input;
    const settings = settingsOf(rest);
    await this.#checkSecret(principal.tenant.id, settings);
    await this.#checkFallbacks(principal.tenant.id, current.row.name, settings, rest.models);
    const row = await this.#store.db
      .updateTable('model_providers')
      .set({
        kind: settings.kind,
        spec: JSON.stringify(settings),
        headers: this.#box.seal(JSON.stringify(headers), headersContext(current.row.id)),
        enabled: enabled === false ? 0 : 1,
        version: sql<number>`version + 1`,
        updated_at: new Date().toISOString(),
      })
      .where('id', '=', current.row.id)
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) throw providerNotFound(ref);
    return { row, settings, headers };
  }

  /** Deletes the provider, unless another provider falls back to it (409, naming them). */
  async delete(principal: Principal, ref: string): Promise<ModelProvidersTable> {
    const current = await this.find(principal.tenant.id, ref);
    const users = await this.fallingBackTo(principal.tenant.id, current.row.name);
    if (users.length > 0) {
      throw new ApiError(
        'MODEL_PROVIDER_IN_USE',
        `The providers ${users.map((u) => `"${u}"`).join(', ')} fall back to "${current.row.name}"; change their fallbacks first`,
        { details: { provider: current.row.name, used_by: users } },
      );
    }
    await this.#store.db.deleteFrom('model_providers').where('id', '=', current.row.id).execute();
    return current.row;
  }

  async list(
    principal: Principal,
    page: {
      limit?: number | undefined;
      cursor?: string | undefined;
      kind?: ModelProviderKind | undefined;
      maxBytes: number;
    },
  ): Promise<{ items: ModelProvider[]; next_cursor: string | null }> {
    const after = decodeCursor(page.cursor, (id) => id.startsWith(`${PROVIDER_ID_PREFIX}_`));
    const limit = page.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('model_providers')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    if (page.kind !== undefined) query = query.where('kind', '=', page.kind);
    const rows = await query.execute();
    return toPage(rows, limit, (r) => this.view(this.#record(r)), page.maxBytes);
  }

  /** The names of the tenant's other providers whose fallbacks name provider `name`. */
  async fallingBackTo(tenantId: string, name: string): Promise<string[]> {
    const needle = JSON.stringify({ provider: name }).slice(1, -1);
    const rows = await this.#store.db
      .selectFrom('model_providers')
      .select(['name', 'spec'])
      .where('tenant_id', '=', tenantId)
      .where('name', '<>', name)
      // A prefilter (LIKE's `_` matches any character); the parsed fallbacks decide.
      .where('spec', 'like', `%${needle.replaceAll('%', '_')}%`)
      .execute();
    return rows
      .filter((r) =>
        (JSON.parse(r.spec) as ModelProviderSettings).fallbacks.some((f) => f.provider === name),
      )
      .map((r) => r.name);
  }

  /** A provider of the tenant by id (`mpr_…`) or name, headers opened. */
  async find(tenantId: string, ref: string): Promise<ModelProviderRecord> {
    const row = await this.#store.db
      .selectFrom('model_providers')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where(ref.startsWith(`${PROVIDER_ID_PREFIX}_`) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (row === undefined) throw providerNotFound(ref);
    return this.#record(row);
  }

  #record(row: ModelProvidersTable): ModelProviderRecord {
    return {
      row,
      settings: JSON.parse(row.spec) as ModelProviderSettings,
      headers: JSON.parse(this.#box.open(row.headers, headersContext(row.id))) as Record<
        string,
        string
      >,
    };
  }

  view(record: ModelProviderRecord): ModelProvider {
    const { row, settings } = record;
    return {
      id: row.id,
      tenant_id: row.tenant_id,
      name: row.name,
      kind: settings.kind,
      description: settings.description,
      base_url: settings.base_url,
      api_key_secret: settings.api_key_secret,
      header_names: Object.keys(record.headers),
      models: settings.models,
      max_concurrency: settings.max_concurrency,
      requests_per_minute: settings.requests_per_minute,
      timeout_ms: settings.timeout_ms,
      idle_timeout_ms: settings.idle_timeout_ms,
      max_retries: settings.max_retries,
      fallbacks: settings.fallbacks,
      enabled: row.enabled === 1,
      version: row.version,
      created_at: row.created_at,
      updated_at: row.updated_at,
    };
  }

  /**
   * Each fallback must name a model a provider of the tenant lists (this one included, for
   * another of its models), and must not be this provider and model itself.
   */
  async #checkFallbacks(
    tenantId: string,
    self: string,
    settings: ModelProviderSettings,
    models: ProviderModel[],
  ): Promise<void> {
    for (const [i, ref] of settings.fallbacks.entries()) {
      const field = `body.fallbacks[${i}]`;
      let listed: ProviderModel[];
      if (ref.provider === self) {
        listed = models;
      } else {
        try {
          listed = (await this.find(tenantId, ref.provider)).settings.models;
        } catch (err) {
          if (err instanceof ApiError && err.code === 'MODEL_PROVIDER_NOT_FOUND') {
            throw fieldError(`${field}.provider`, `no model provider is named "${ref.provider}"`);
          }
          throw err;
        }
      }
      if (!listed.some((m) => m.name === ref.model)) {
        throw fieldError(
          `${field}.model`,
          `the provider "${ref.provider}" lists no model "${ref.model}"`,
        );
      }
    }
    const seen = new Set<string>();
    for (const [i, ref] of settings.fallbacks.entries()) {
      const key = `${ref.provider}\u0000${ref.model}`;
      if (seen.has(key)) {
        throw fieldError(`body.fallbacks[${i}]`, `${ref.provider}/${ref.model} is listed twice`);
      }
      seen.add(key);
    }
  }
}
