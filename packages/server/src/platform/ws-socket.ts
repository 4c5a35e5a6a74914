import type { Socket } from 'node:net';
import { constants, deflateRawSync } from 'node:zlib';
import type { WebSocket } from 'ws';

/**
 * The socket that the connection core (ws-connection.ts) drives: a WebSocket reduced to
 * sending, closing and its state, plus the flow control every protocol needs. The core
 * and the protocols on it never see `ws` or HTTP; `wsSocket` adapts a `ws` WebSocket, and
 * another transport (a test double, another library) only has to provide this.
 */
export interface WireSocket {
  /** `open`; `closing` once either side began the closing handshake; `closed` when gone. */
  readonly state: 'open' | 'closing' | 'closed';
  /** Bytes accepted by `send` and not yet taken by the network: the send queue. */
  readonly bufferedAmount: number;
  /**
   * Sends one message, uncompressed (text unless `binary`). Messages sent in the same turn
   * of the event loop leave in one network write.
   */
  send(data: Buffer | string, binary?: boolean): void;
  /**
   * Sends a text message encoded once for many sockets: compressed once for all that
   * negotiated permessage-deflate, when it is worth it, and plain to the others.
   */
  sendShared(frame: SharedFrame): void;
  /** Starts the closing handshake. */
  close(code: number, reason: string): void;
  /** Drops the connection without a handshake. */
  terminate(): void;
  /** A WebSocket-level ping; the answer comes to `onPong`. */
  ping(): void;
  /** Stops reading from the network (the peer's sends back up), and starts again. */
  pauseReading(): void;
  resumeReading(): void;
  onMessage(listener: (data: Buffer, binary: boolean) => void): void;
  onPong(listener: () => void): void;
  onError(listener: (err: Error) => void): void;
  /** Called once, when the connection is gone. */
  onClose(listener: () => void): void;
}

/** One message encoded once for every receiver; its compressed form is made on first need. */
export interface SharedFrame {
  text: Buffer;
  /** A complete WebSocket frame with RSV1 set, or undefined until a socket needs it. */
  deflated?: Buffer;
}

/** Messages smaller than this go out uncompressed even where deflate was negotiated. */
const DEFLATE_THRESHOLD = 1024;

/** A WebSocket text frame (FIN, RSV1: compressed) holding `text`, unmasked as servers send. */
function deflatedFrame(text: Buffer): Buffer {
  // permessage-deflate: a raw DEFLATE stream, sync-flushed, minus its last 4 bytes.
  const body = deflateRawSync(text, { finishFlush: constants.Z_SYNC_FLUSH });
  const payload = body.subarray(0, body.length - 4);
  const n = payload.length;
  const header = Buffer.alloc(n < 126 ? 2 : n < 65_536 ? 4 : 10);
  header[0] = 0xc1;
  if (n < 126) header[1] = n;
  else if (n < 65_536) {
    header[1] = 126;
    header.writeUInt16BE(n, 2);
  } else {
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([header, payload]);
}

/** Sockets corked until the end of this turn of the event loop; one tick uncorks them all. */
const corked = new Set<Socket>();

function cork(socket: Socket): void {
  if (corked.has(socket)) return;
  if (corked.size === 0) {
    process.nextTick(() => {
      for (const s of corked) s.uncork();
      corked.clear();
    });
  }
  corked.add(socket);
  socket.cork();
}

function bytesOf(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return Buffer.from(data as ArrayBuffer);
}

/** The `WireSocket` of a `ws` WebSocket that the server accepted. */
export function wsSocket(socket: WebSocket): WireSocket {
  // ws keeps its TCP socket private; it is what corking and prebuilt frames need.
  const tcp = (socket as unknown as { _socket?: Socket })._socket;
  const deflates = socket.extensions.includes('permessage-deflate');
  return {
    get state() {
      return socket.readyState === socket.OPEN
        ? 'open'
        : socket.readyState === socket.CLOSED
          ? 'closed'
          : 'closing';
    },
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    send(data, binary = false) {
      if (tcp !== undefined) cork(tcp);
      socket.send(data, { binary, compress: false });
    },
    sendShared(frame) {
      if (deflates && tcp !== undefined && frame.text.length >= DEFLATE_THRESHOLD) {
        frame.deflated ??= deflatedFrame(frame.text);
        // Written as a whole frame: ws itself never compresses on these sockets (every send
        // says compress: false), so nothing of its own can be half-written ahead of it.
        cork(tcp);
        tcp.write(frame.deflated);
        return;
      }
      this.send(frame.text);
    },
    close: (code, reason) => socket.close(code, reason),
    terminate: () => socket.terminate(),
    ping: () => socket.ping(),
    pauseReading: () => socket.pause(),
    resumeReading: () => socket.resume(),
    onMessage: (listener) => {
      socket.on('message', (data, binary) => listener(bytesOf(data), binary));
    },
    onPong: (listener) => {
      socket.on('pong', listener);
    },
    onError: (listener) => {
      socket.on('error', listener);
    },
    onClose: (listener) => {
      socket.once('close', listener);
    },
  };
}
