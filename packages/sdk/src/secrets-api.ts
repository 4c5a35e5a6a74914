import type { Secret } from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import type { Page, PageOptions } from './types.ts';

// The secrets' wire types are @orchestra/protocol's (decision 0014).

export type { Secret } from '@orchestra/protocol';

export interface ListSecretsOptions extends PageOptions {
  /** Only secrets whose name starts with this (case-sensitive). */
  name_prefix?: string;
}

const path = (name: string) => `/v1/secrets/${encodeURIComponent(name)}`;

/**
 * `Orchestra.secrets`: named secrets of the caller's tenant (reading metadata: admin,
 * operator or viewer; writing: admin or operator). Write-only: no method returns a value,
 * only names, versions and timestamps. A name that does not exist, or belongs to another
 * tenant, rejects with `SECRET_NOT_FOUND` (404).
 */
export class SecretsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /**
   * Creates the secret (version 1) or replaces its value (the next version; only the
   * current value is kept). `value`: not empty, at most 65536 bytes of UTF-8.
   */
  put(name: string, value: string, options: { description?: string } = {}): Promise<Secret> {
    return this.#client.request('PUT', path(name), { body: { value, ...options } });
  }

  /** One page of secrets, in creation order. */
  list(options: ListSecretsOptions = {}): Promise<Page<Secret>> {
    return this.#client.request('GET', '/v1/secrets', { query: { ...options } });
  }

  /** Every secret that matches, page after page. */
  async *listAll(options: Omit<ListSecretsOptions, 'cursor'> = {}): AsyncIterable<Secret> {
    let cursor: string | null = null;
    do {
      const page: Page<Secret> = await this.list({
        ...options,
        ...(cursor === null ? {} : { cursor }),
      });
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }

  /** The secret's metadata. */
  get(name: string): Promise<Secret> {
    return this.#client.request('GET', path(name));
  }

  async delete(name: string): Promise<void> {
    await this.#client.request('DELETE', path(name));
  }
}
