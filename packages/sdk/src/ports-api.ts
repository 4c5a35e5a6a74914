import type { PortShare } from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { paginate } from './listing.ts';
import type { Page, PageOptions } from './types.ts';

// Ports of an instance through Orchestra (`/v1/instances/{id}/ports/{port}/…`) and their
// share links (`/v1/instances/{id}/shares`).

export type { PortShare } from '@orchestra/protocol';

const sharesPath = (id: string) => `/v1/instances/${encodeURIComponent(id)}/shares`;

/**
 * `Orchestra.instances.ports`: where an instance's port is reached, and links that share
 * it without a credential. A link that does not exist rejects with `PORT_SHARE_NOT_FOUND`.
 */
export class PortsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** The address of `path` on `port` of the instance, through Orchestra (needs a credential). */
  url(id: string, port: number, path = '/'): string {
    const base = this.#client.url.replace(/\/$/, '');
    const rest = path.startsWith('/') ? path : `/${path}`;
    return `${base}/v1/instances/${encodeURIComponent(id)}/ports/${port}${rest}`;
  }

  /**
   * A link to `port` that works without a credential until it expires (an hour by default);
   * `url` (absolute here) holds its token, which is shown this once.
   */
  async share(
    id: string,
    port: number,
    options: { expiresInSeconds?: number } = {},
  ): Promise<PortShare & { url: string }> {
    const share = await this.#client.request<PortShare>('POST', sharesPath(id), {
      body: {
        port,
        ...(options.expiresInSeconds !== undefined
          ? { expires_in_seconds: options.expiresInSeconds }
          : {}),
      },
    });
    return { ...share, url: `${this.#client.url.replace(/\/$/, '')}${share.url ?? ''}` };
  }

  /** The links that still work, oldest first (without their tokens). */
  listShares(id: string, options: PageOptions = {}): Promise<Page<PortShare>> {
    return this.#client.request('GET', sharesPath(id), { query: { ...options } });
  }

  listAllShares(id: string, options: Omit<PageOptions, 'cursor'> = {}): AsyncIterable<PortShare> {
    return paginate((cursor) => this.listShares(id, { ...options, ...cursor }));
  }

  async revokeShare(id: string, share: string): Promise<void> {
    await this.#client.request('DELETE', `${sharesPath(id)}/${encodeURIComponent(share)}`);
  }
}
