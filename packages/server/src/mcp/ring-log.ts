/**
 * The last lines of a stream, bounded by a line count and a byte budget. Bytes arrive in
 * arbitrary chunks; a line longer than `maxLineBytes` is cut and marked, so one endless line
 * cannot hold more than that in memory while it is still open.
 */
export class RingLog {
  readonly maxLines: number;
  readonly maxBytes: number;
  readonly maxLineBytes: number;
  private lines: string[] = [];
  private bytes = 0;
  private partial = '';
  private partialTruncated = false;
  /** Lines dropped from the head to stay inside the bounds, since the start. */
  droppedLines = 0;

  constructor(options?: { maxLines?: number; maxBytes?: number; maxLineBytes?: number }) {
    this.maxLines = options?.maxLines ?? 500;
    this.maxBytes = options?.maxBytes ?? 64 * 1024;
    this.maxLineBytes = Math.min(options?.maxLineBytes ?? 4096, this.maxBytes);
  }

  /** Appends a chunk of text; complete lines enter the ring, the rest waits for its newline. */
  write(chunk: string): void {
    let rest = chunk;
    for (let newline = rest.indexOf('\n'); newline !== -1; newline = rest.indexOf('\n')) {
      this.appendPartial(rest.slice(0, newline));
      this.push(this.partialTruncated ? `${this.partial} [truncated]` : this.partial);
      this.partial = '';
      this.partialTruncated = false;
      rest = rest.slice(newline + 1);
    }
    this.appendPartial(rest);
  }

  /** Pushes the unfinished last line, if any (the stream ended). */
  flush(): void {
    if (this.partial !== '' || this.partialTruncated) this.write('\n');
  }

  /** The kept lines, oldest first. */
  snapshot(): string[] {
    return [...this.lines];
  }

  get byteLength(): number {
    return this.bytes;
  }

  private appendPartial(text: string): void {
    if (this.partialTruncated || text === '') return;
    const room = this.maxLineBytes - Buffer.byteLength(this.partial);
    if (Buffer.byteLength(text) <= room) {
      this.partial += text;
      return;
    }
    // A cut inside a multi-byte character leaves one U+FFFD; the line is marked as cut anyway.
    this.partial += Buffer.from(text).subarray(0, Math.max(0, room)).toString('utf8');
    this.partialTruncated = true;
  }

  private push(line: string): void {
    const size = Buffer.byteLength(line) + 1;
    this.lines.push(line);
    this.bytes += size;
    while (this.lines.length > this.maxLines || this.bytes > this.maxBytes) {
      const dropped = this.lines.shift();
      if (dropped === undefined) break;
      this.bytes -= Buffer.byteLength(dropped) + 1;
      this.droppedLines += 1;
    }
  }
}
