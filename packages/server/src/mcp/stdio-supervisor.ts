import { type ChildProcess, spawn } from 'node:child_process';
import type { JSONRPCMessage, Transport } from '@modelcontextprotocol/client';
import { deserializeMessage } from '@modelcontextprotocol/client';
import { UpstreamError } from './errors.ts';
import type { RingLog } from './ring-log.ts';

export interface StdioProcessSpec {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface StdioProcessOptions {
  /** Where the process's stderr goes (bounded). */
  stderr: RingLog;
  /** The longest stdout line (one JSON-RPC message) kept; longer lines are dropped. */
  maxMessageBytes?: number;
  /** After this many non-JSON-RPC stdout lines the process is treated as broken and killed. */
  maxGarbageLines?: number;
  /** How long `close()` waits after SIGTERM before SIGKILL. */
  killGraceMs?: number;
}

const STDOUT_DRAIN_MS = 250;

/** How the process ended, for the status reason. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when Orchestra itself ended the process, with why. */
  killedBecause?: string;
}

/**
 * One spawned stdio MCP server as an MCP transport: newline-delimited JSON-RPC on
 * stdin/stdout, stderr into a bounded log. The process is the leader of its own process
 * group, and `close()` signals the whole group (TERM, then KILL after a grace period) and
 * resolves only when the process has exited. Output is bounded: a line longer than
 * `maxMessageBytes` is dropped without being buffered whole, a line that is not JSON-RPC is
 * reported through `onerror` and skipped, and a process that keeps writing garbage is killed.
 *
 * The `pid` and `stderr` accessors make the MCP client treat this as a stdio transport
 * (a probe timeout then means "legacy server", not "outage").
 */
export class StdioProcessTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: <T extends JSONRPCMessage>(message: T) => void;

  private readonly spec: StdioProcessSpec;
  private readonly log: RingLog;
  private readonly maxMessageBytes: number;
  private readonly maxGarbageLines: number;
  private readonly killGraceMs: number;
  private child: ChildProcess | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private discardingLine = false;
  private garbageLines = 0;
  private exited: Promise<void> | undefined;
  private closeReported = false;
  /** Set once the process has exited. */
  exit: ProcessExit | undefined;
  private killReason: string | undefined;

  constructor(spec: StdioProcessSpec, options: StdioProcessOptions) {
    this.spec = spec;
    this.log = options.stderr;
    this.maxMessageBytes = options.maxMessageBytes ?? 4 * 1024 * 1024;
    this.maxGarbageLines = options.maxGarbageLines ?? 100;
    this.killGraceMs = options.killGraceMs ?? 2000;
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get stderr(): null {
    return null;
  }

  /** Spawns the process; rejects when it cannot be started at all (no such command…). */
  start(): Promise<void> {
    if (this.child !== undefined) throw new Error('StdioProcessTransport already started');
    const child = spawn(this.spec.command, this.spec.args, {
      cwd: this.spec.cwd,
      env: this.spec.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group, so close() reaches the grandchildren too.
      detached: true,
      windowsHide: true,
    });
    this.child = child;
    this.exited = new Promise((resolveExit) => {
      child.once('exit', (code, signal) => {
        this.exit = {
          code,
          signal,
          ...(this.killReason ? { killedBecause: this.killReason } : {}),
        };
        // The answers it wrote just before exiting are still in the pipe: read them first,
        // but not for long, since a grandchild holding the pipe open keeps it from closing.
        const drained = new Promise<void>((resolveDrain) => {
          const timer = setTimeout(resolveDrain, STDOUT_DRAIN_MS);
          const done = () => {
            clearTimeout(timer);
            resolveDrain();
          };
          if (child.stdout === null || child.stdout.closed) done();
          else child.stdout.once('close', done);
        });
        void drained.then(() => {
          this.log.flush();
          resolveExit();
          this.reportClose();
        });
      });
    });
    child.stdout?.on('data', (chunk: Buffer) => this.onStdout(chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.log.write(chunk));
    // EPIPE after the process died: the close handler reports the death.
    child.stdin?.on('error', () => {});
    return new Promise((resolveStart, rejectStart) => {
      let spawned = false;
      child.once('spawn', () => {
        spawned = true;
        resolveStart();
      });
      child.on('error', (error) => {
        if (spawned) {
          this.onerror?.(error);
          return;
        }
        this.exit ??= { code: null, signal: null, killedBecause: error.message };
        rejectStart(
          new UpstreamError('unavailable', `cannot start ${this.spec.command}: ${error.message}`, {
            cause: error,
          }),
        );
        this.reportClose();
      });
    });
  }

  send(message: JSONRPCMessage): Promise<void> {
    const stdin = this.child?.stdin;
    if (stdin == null || this.exit !== undefined || stdin.destroyed) {
      return Promise.reject(
        new UpstreamError('unavailable', 'the upstream process is not running'),
      );
    }
    return new Promise((resolveSend, rejectSend) => {
      stdin.write(`${JSON.stringify(message)}\n`, (error) => {
        if (error)
          rejectSend(
            new UpstreamError('unavailable', 'write to the upstream failed', { cause: error }),
          );
        else resolveSend();
      });
    });
  }

  /** Ends the process group and resolves once the process has exited. */
  async close(): Promise<void> {
    await this.kill('closed by Orchestra');
  }

  /** Signals the process group TERM, then KILL after the grace period; resolves on exit. */
  async kill(reason: string): Promise<void> {
    const child = this.child;
    if (child === undefined || this.exited === undefined) {
      this.reportClose();
      return;
    }
    if (this.exit === undefined) {
      this.killReason ??= reason;
      signalGroup(child, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), this.killGraceMs);
      try {
        await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    // Anything the process left in its group (a daemonised grandchild) goes too.
    signalGroup(child, 'SIGKILL');
  }

  private reportClose(): void {
    if (this.closeReported) return;
    this.closeReported = true;
    this.onclose?.();
  }

  private onStdout(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      this.appendPending(chunk.subarray(start, newline));
      if (this.discardingLine) this.discardingLine = false;
      else this.dispatchLine(Buffer.concat(this.pending, this.pendingBytes).toString('utf8'));
      this.pending = [];
      this.pendingBytes = 0;
      start = newline + 1;
      if (this.exit !== undefined || this.killReason !== undefined) return;
    }
    this.appendPending(chunk.subarray(start));
  }

  private appendPending(part: Buffer): void {
    if (this.discardingLine || part.length === 0) return;
    if (this.pendingBytes + part.length > this.maxMessageBytes) {
      this.pending = [];
      this.pendingBytes = 0;
      this.discardingLine = true;
      this.garbage(`the upstream wrote a line longer than ${this.maxMessageBytes} bytes; dropped`);
      return;
    }
    this.pending.push(Buffer.from(part));
    this.pendingBytes += part.length;
  }

  private dispatchLine(line: string): void {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (text.trim() === '') return;
    let message: JSONRPCMessage;
    try {
      message = deserializeMessage(text);
    } catch (error) {
      this.garbage(`the upstream wrote a line that is not JSON-RPC: ${preview(text)}`, error);
      return;
    }
    this.onmessage?.(message);
  }

  private garbage(message: string, cause?: unknown): void {
    this.garbageLines += 1;
    this.onerror?.(new UpstreamError('protocol', message, { cause }));
    if (this.garbageLines >= this.maxGarbageLines && this.killReason === undefined) {
      void this.kill(`it wrote ${this.garbageLines} lines that are not JSON-RPC`);
    }
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group is already gone.
  }
}

function preview(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}
