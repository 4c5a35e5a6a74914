import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { WorkspaceUpload } from '@orchestra/protocol';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { RelationalStore } from '../store/store.ts';
import { compressionOf, refusableBody } from './files.ts';
import type { WorkspaceUploadsTable } from './tables.ts';

/** Bytes per stored piece: small enough for any store's row, few enough rows per upload. */
const CHUNK_BYTES = 1024 * 1024;
/** An upload whose bytes stopped arriving this long ago (its node died) is removed. */
const INCOMPLETE_TTL_MS = 3_600_000;
const GIT_BUNDLE = /^# v[23] git bundle\n/;
/** Enough of the start to tell a git bundle, a compressed tar, or a plain tar (`ustar` at 257). */
const HEAD_BYTES = 512;

export type UploadFormat = WorkspaceUpload['format'];

function uploadNotFound(id: string): ApiError {
  return new ApiError('WORKSPACE_UPLOAD_NOT_FOUND', `Workspace upload "${id}" does not exist`);
}

function view(row: WorkspaceUploadsTable): WorkspaceUpload {
  return {
    id: row.id,
    name: row.name,
    format: row.format as UploadFormat,
    size: Number(row.size),
    sha256: row.sha256,
    created_by: row.created_by,
    created_at: row.created_at,
  };
}

/** What the first bytes of an upload say it is; undefined for anything else. */
export function uploadFormat(head: Buffer): UploadFormat | undefined {
  if (GIT_BUNDLE.test(head.subarray(0, 20).toString('latin1'))) return 'git_bundle';
  if (compressionOf(head) !== undefined) return 'tar';
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return undefined;
}

/**
 * Bases uploaded for workspace templates (`base.type: upload`): a tar archive or a git
 * bundle, kept in the relational store in pieces, so that every node of a cluster can lay
 * out an instance from it (and start a lost one elsewhere). An upload a template or an
 * instance names cannot be deleted.
 */
export class WorkspaceUploads {
  readonly #store: RelationalStore;
  readonly #maxBytes: number;

  constructor(deps: { store: RelationalStore; maxBytes: number }) {
    this.#store = deps.store;
    this.#maxBytes = deps.maxBytes;
  }

  /** Stores `body`; 400 when it is neither a tar archive nor a git bundle, 413 past the limit. */
  async create(
    principal: Principal,
    name: string,
    body: AsyncIterable<Buffer>,
  ): Promise<WorkspaceUpload> {
    const id = newId('wup');
    const row: WorkspaceUploadsTable = {
      id,
      tenant_id: principal.tenant.id,
      name: name === '' ? id : name,
      format: '',
      size: 0,
      sha256: '',
      complete: 0,
      created_by: credentialId(principal),
      created_at: new Date().toISOString(),
    };
    const input = refusableBody(body);
    const chunks = input.chunks[Symbol.asyncIterator]();
    await this.#store.db.insertInto('workspace_uploads').values(row).execute();
    try {
      const hash = createHash('sha256');
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let size = 0;
      let seq = 0;
      let format: UploadFormat | undefined;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const data = Buffer.concat(pending);
        pending = [];
        pendingBytes = 0;
        await this.#store.db
          .insertInto('workspace_upload_chunks')
          .values({ upload_id: id, seq, data: data.toString('base64') })
          .execute();
        seq += 1;
      };
      for (;;) {
        const next = await chunks.next();
        if (next.done) break;
        const chunk = next.value;
        size += chunk.length;
        if (size > this.#maxBytes) {
          throw new ApiError(
            'PAYLOAD_TOO_LARGE',
            `An upload may hold ${this.#maxBytes} bytes at most (ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES)`,
          );
        }
        hash.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (format === undefined && (pendingBytes >= HEAD_BYTES || seq > 0)) {
          format = this.#formatOf(Buffer.concat(pending));
        }
        if (pendingBytes >= CHUNK_BYTES) await flush();
      }
      if (format === undefined) format = this.#formatOf(Buffer.concat(pending));
      await flush();
      const done = { format, size, sha256: hash.digest('hex'), complete: 1 };
      await this.#store.db
        .updateTable('workspace_uploads')
        .set(done)
        .where('id', '=', id)
        .execute();
      return view({ ...row, ...done });
    } catch (err) {
      await this.#store.db.deleteFrom('workspace_uploads').where('id', '=', id).execute();
      await input.drain();
      throw err;
    }
  }

  #formatOf(head: Buffer): UploadFormat {
    const format = uploadFormat(head);
    if (format === undefined) {
      throw new ApiError(
        'BAD_REQUEST',
        'An upload must be a tar archive (plain, gzip, bzip2, xz or zstd) or a git bundle (`git bundle create`)',
      );
    }
    return format;
  }

  async list(
    principal: Principal,
    options: { limit?: number | undefined; cursor?: string | undefined; maxBytes: number },
  ): Promise<{ items: WorkspaceUpload[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('wup_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('workspace_uploads')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('complete', '=', 1)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    return toPage(await query.execute(), limit, view, options.maxBytes);
  }

  async get(principal: Principal, id: string): Promise<WorkspaceUpload> {
    return view(await this.#row(principal.tenant.id, id));
  }

  /** An upload of the tenant a template names: VALIDATION_FAILED naming `field` if none. */
  async check(tenantId: string, id: string, field: string): Promise<void> {
    await this.#row(tenantId, id).catch((err: unknown) => {
      if (err instanceof ApiError && err.code === 'WORKSPACE_UPLOAD_NOT_FOUND') {
        throw fieldError(field, `no workspace upload "${id}" in this tenant`);
      }
      throw err;
    });
  }

  /** Its format and bytes, piece by piece (the store is read one piece at a time). */
  async open(tenantId: string, id: string): Promise<{ format: UploadFormat; body: Readable }> {
    const row = await this.#row(tenantId, id);
    const db = this.#store.db;
    async function* pieces() {
      for (let seq = 0; ; seq++) {
        const chunk = await db
          .selectFrom('workspace_upload_chunks')
          .select('data')
          .where('upload_id', '=', id)
          .where('seq', '=', seq)
          .executeTakeFirst();
        if (chunk === undefined) return;
        yield Buffer.from(chunk.data, 'base64');
      }
    }
    return { format: row.format as UploadFormat, body: Readable.from(pieces()) };
  }

  /** Deletes it; 409 while a template or an instance names it (`inUse` says which). */
  async delete(
    principal: Principal,
    id: string,
    inUse: (tenantId: string, id: string) => Promise<string | undefined>,
  ): Promise<void> {
    const row = await this.#row(principal.tenant.id, id);
    const user = await inUse(row.tenant_id, id);
    if (user !== undefined) {
      throw new ApiError(
        'WORKSPACE_UPLOAD_IN_USE',
        `Workspace upload "${id}" is the base of ${user}; delete or change that first`,
        { details: { used_by: user } },
      );
    }
    await this.#store.db.deleteFrom('workspace_uploads').where('id', '=', id).execute();
  }

  /** Removes uploads whose bytes stopped arriving long ago (their node stopped mid-upload). */
  async sweep(): Promise<void> {
    const before = new Date(Date.now() - INCOMPLETE_TTL_MS).toISOString();
    await this.#store.db
      .deleteFrom('workspace_uploads')
      .where('complete', '=', 0)
      .where('created_at', '<', before)
      .execute();
  }

  async #row(tenantId: string, id: string): Promise<WorkspaceUploadsTable> {
    const row = await this.#store.db
      .selectFrom('workspace_uploads')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('complete', '=', 1)
      .executeTakeFirst();
    if (row === undefined) throw uploadNotFound(id);
    return row;
  }
}
