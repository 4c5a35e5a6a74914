/**
 * The revisioned key-value port: what the config center and the service registry keep
 * their state in. Two adapters, one contract (test/kv-contract.test.ts):
 *
 * - embedded (`kv/embedded.ts`): tables in the relational store, with the change feed in
 *   the event log, so watch and resume work as they do for every other stream;
 * - etcd v3 (`kv/etcd.ts`), when `ORCHESTRA_ETCD_ENDPOINTS` is set.
 *
 * Every call is scoped to a tenant; one tenant can never name another's keys or leases.
 * Revisions increase with every change a tenant makes and never go back, but they are not
 * contiguous (etcd numbers all of its changes together), so nobody may count on `+ 1`.
 * Values are opaque strings (the modules store JSON).
 */
export interface KvStore {
  readonly backend: 'embedded' | 'etcd';
  /** One key, or undefined. */
  get(tenantId: string, key: string): Promise<KvEntry | undefined>;
  /**
   * Keys starting with `prefix`, in key order, after `after` when given, at most `limit`.
   * With `revision`, the keys as they were at that revision; KvCompactedError when the
   * history for that is gone. The page's `revision` is the one it was read at.
   */
  range(tenantId: string, query: KvRangeQuery): Promise<KvPage>;
  /** How many keys start with `prefix` now. */
  count(tenantId: string, prefix: string): Promise<number>;
  /**
   * The folders under `prefix` now, with how many keys each holds: a folder is the text
   * between `prefix` and the next `/` of a key (`env` of `c/env/a/b` under `c/`), and holds
   * the keys that start with `<prefix><name>/`. Keys with no `/` after `prefix` are in no
   * folder. Folders come in key order (the byte order of `<name>/`, so `a-b` before `a`),
   * after the folder `after` when given, at most `limit`. The reads grow with the folders
   * listed, not with the keys inside them (etcd also reads each key that is in no folder).
   */
  folders(tenantId: string, query: KvFoldersQuery): Promise<KvFolderPage>;
  /**
   * Applies `ops` atomically if every compare holds. One revision for the whole
   * transaction; changes to the same key in one transaction are refused.
   */
  txn(tenantId: string, txn: KvTxn): Promise<KvTxnResult>;
  /** The tenant's newest revision (0 before its first change on the embedded store). */
  revision(tenantId: string): Promise<number>;
  /**
   * Changes under `prefix` from `fromRevision` (inclusive) on, in revision order, as long
   * as the returned iterator is read. It throws KvCompactedError at once when that
   * revision is no longer retained, and KvUnavailableError when the backend goes away for
   * longer than the adapter retries.
   */
  watch(
    tenantId: string,
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncIterable<KvChangeBatch>;
  /** Forgets the change history before `revision`: a watch or range from earlier fails with KvCompactedError. */
  compact(tenantId: string, revision: number): Promise<void>;

  /** A lease that expires `ttlMs` after its last keep-alive; keys put with it go with it. */
  grantLease(tenantId: string, ttlMs: number): Promise<KvLease>;
  /** Restarts a lease's TTL; undefined if it expired or never existed. */
  keepAlive(tenantId: string, leaseId: string): Promise<KvLease | undefined>;
  /** Ends a lease now and deletes its keys; false if it did not exist. */
  revokeLease(tenantId: string, leaseId: string): Promise<boolean>;
  /** A lease and how long it has left, or undefined. */
  lease(tenantId: string, leaseId: string): Promise<KvLease | undefined>;
  /** Resolves when the backend answers within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface KvEntry {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  /** 1 on creation, + 1 on each put; a deleted and re-created key starts at 1 again. */
  version: number;
  /** The lease the key is bound to, if any. */
  lease?: string;
}

export interface KvRangeQuery {
  prefix: string;
  after?: string;
  limit: number;
  revision?: number;
}

export interface KvPage {
  entries: KvEntry[];
  /** The revision the page shows. */
  revision: number;
  /** More keys follow the last one. */
  more: boolean;
}

export interface KvFoldersQuery {
  prefix: string;
  /** A folder name: the page starts with the folder after it. */
  after?: string;
  limit: number;
}

export interface KvFolder {
  name: string;
  /** How many keys start with `<prefix><name>/`. */
  keys: number;
}

export interface KvFolderPage {
  folders: KvFolder[];
  /** More folders follow the last one. */
  more: boolean;
}

/** A condition on a key: its version (0 = absent) or the revision of its last change. */
export type KvCompare = { key: string; version: number } | { key: string; modRevision: number };

export type KvOp =
  | { type: 'put'; key: string; value: string; lease?: string }
  | { type: 'delete'; key: string };

export interface KvTxn {
  compare: KvCompare[];
  ops: KvOp[];
}

export interface KvTxnResult {
  succeeded: boolean;
  /** The revision of the change, or the current one when nothing was written. */
  revision: number;
}

export interface KvChange {
  type: 'put' | 'delete';
  key: string;
  /** The new value of a put. */
  value?: string;
  /** The value before the change, when the key existed. */
  prevValue?: string;
  /** The key's version after a put. */
  version?: number;
  revision: number;
}

/** The changes of one revision (one transaction), or a lease expiry. */
export interface KvChangeBatch {
  revision: number;
  changes: KvChange[];
}

export interface KvLease {
  id: string;
  ttlMs: number;
  /** Milliseconds left before it expires. */
  remainingMs: number;
}

/** The history needed for a watch or a range at a revision is gone. */
export class KvCompactedError extends Error {
  /** The oldest revision still available, when the backend says. */
  readonly oldestRevision: number | undefined;
  constructor(requested: number, oldestRevision: number | undefined) {
    super(
      oldestRevision === undefined
        ? `revision ${requested} is compacted`
        : `revision ${requested} is compacted; the oldest available is ${oldestRevision}`,
    );
    this.name = 'KvCompactedError';
    this.oldestRevision = oldestRevision;
  }
}

/** The backend cannot be reached. */
export class KvUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvUnavailableError';
  }
}

/** A put names a lease that does not exist (or expired) in the tenant. */
export class KvLeaseNotFoundError extends Error {
  readonly leaseId: string;
  constructor(leaseId: string) {
    super(`lease ${leaseId} does not exist or has expired`);
    this.name = 'KvLeaseNotFoundError';
    this.leaseId = leaseId;
  }
}
