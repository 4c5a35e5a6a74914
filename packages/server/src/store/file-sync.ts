import { type FileHandle, open } from 'node:fs/promises';

/**
 * `fdatasync` of one file, run off the event loop and shared by whoever asks meanwhile.
 * A call resolves once a sync that started after the call has finished, so everything
 * written to the file before the call is on disk. One sync runs at a time; the calls made
 * during it share the next one.
 */
export class FileSync {
  readonly #path: string;
  #handle: Promise<FileHandle> | undefined;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  /** Syncs finished so far. */
  completed = 0;

  constructor(path: string) {
    this.#path = path;
  }

  sync(): Promise<void> {
    if (this.#running === undefined) {
      this.#running = this.#once().finally(() => {
        this.#running = undefined;
      });
      return this.#running;
    }
    this.#queued ??= this.#running
      .catch(() => {})
      .then(() => {
        this.#queued = undefined;
        return this.sync();
      });
    return this.#queued;
  }

  /**
   * Resolves once the syncs already asked for are done (at once if none is): everything
   * written before a `sync()` call made so far is then on disk.
   */
  flushed(): Promise<void> {
    return this.#queued ?? this.#running ?? Promise.resolve();
  }

  /** Waits for the syncs under way, then closes the file. */
  async close(): Promise<void> {
    await this.#queued?.catch(() => {});
    await this.#running?.catch(() => {});
    const handle = this.#handle;
    this.#handle = undefined;
    await (await handle?.catch(() => undefined))?.close();
  }

  async #once(): Promise<void> {
    this.#handle ??= open(this.#path, 'r');
    const opening = this.#handle;
    let handle: FileHandle;
    try {
      handle = await opening;
    } catch (err) {
      if (this.#handle === opening) this.#handle = undefined; // try again next time
      throw err;
    }
    await handle.datasync();
    this.completed += 1;
  }
}
