import type {
  CreateModelProvider,
  ModelProvider,
  ModelProviderKind,
  ModelProviderTest,
  UpdateModelProvider,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import type { Page, PageOptions } from './types.ts';

// The model providers' wire types are @orchestra/protocol's (decision 0014).

export type {
  CreateModelProvider,
  ModelPrice,
  ModelProvider,
  ModelProviderKind,
  ModelProviderTest,
  ModelRef,
  ProviderModel,
  UpdateModelProvider,
} from '@orchestra/protocol';

export interface ListModelProvidersOptions extends PageOptions {
  /** Only providers of this kind. */
  kind?: ModelProviderKind;
}

const path = (ref: string) => `/v1/model-providers/${encodeURIComponent(ref)}`;

/**
 * `Orchestra.modelProviders`: the model APIs the tenant's hosted agents call (reading: admin,
 * operator or viewer; testing: admin or operator; changing: admin). The API key is the name
 * of a secret (`secrets.put` it first); header values are never returned. A provider that
 * does not exist, or belongs to another tenant, rejects with `MODEL_PROVIDER_NOT_FOUND` (404).
 */
export class ModelProvidersApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** Registers a provider. A taken name rejects with `MODEL_PROVIDER_ALREADY_EXISTS` (409). */
  create(provider: CreateModelProvider): Promise<ModelProvider> {
    return this.#client.request('POST', '/v1/model-providers', { body: provider });
  }

  /** One page of providers, in creation order. */
  list(options: ListModelProvidersOptions = {}): Promise<Page<ModelProvider>> {
    return this.#client.request('GET', '/v1/model-providers', { query: { ...options } });
  }

  /** Every provider that matches, page after page. */
  async *listAll(
    options: Omit<ListModelProvidersOptions, 'cursor'> = {},
  ): AsyncIterable<ModelProvider> {
    let cursor: string | null = null;
    do {
      const page: Page<ModelProvider> = await this.list({
        ...options,
        ...(cursor === null ? {} : { cursor }),
      });
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }

  /** A provider by name or id (`mpr_…`). */
  get(ref: string): Promise<ModelProvider> {
    return this.#client.request('GET', path(ref));
  }

  /** Replaces its settings (fields left out take their defaults); the name stays. */
  update(ref: string, settings: UpdateModelProvider): Promise<ModelProvider> {
    return this.#client.request('PUT', path(ref), { body: settings });
  }

  /** Removes it; `MODEL_PROVIDER_IN_USE` (409) while another provider falls back to it. */
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', path(ref));
  }

  /**
   * Checks that it answers: lists its models and, with `model`, has that model answer a
   * one-line prompt. Resolves whether it works or not: `ok` and `error` say.
   */
  test(ref: string, options: { model?: string } = {}): Promise<ModelProviderTest> {
    return this.#client.request('POST', `${path(ref)}/test`, { body: options });
  }
}
