import {
  TERMINAL_FRAMES,
  type TerminalFrameKind,
  type TerminalFramePayload,
  type TerminalServerFrameKind,
  type TerminalServerFramePayload,
} from '@orchestra/protocol';
import type { ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import Type from 'typebox';
import type { Principal } from '../platform/auth.ts';
import {
  describeSchemaError,
  frameAjv,
  type Header,
  invalidField,
  parseEnvelope,
} from '../platform/envelope.ts';
import { ApiError, CLOSE_CODES } from '../platform/errors.ts';
import type { Authenticated } from '../platform/http.ts';
import {
  type CloseCode,
  type ConnectionHandler,
  connectionAuth,
  type WsConnection,
  WsConnections,
} from '../platform/ws-connection.ts';
import type { WireSocket } from '../platform/ws-socket.ts';
import type { TerminalService } from './terminal-service.ts';

/** A frame of the attach protocol: an envelope frame, or the bytes of a binary one. */
export type TerminalFrame =
  | {
      [K in TerminalFrameKind]: { header: Header; payload: TerminalFramePayload<K> };
    }[TerminalFrameKind]
  | { header: undefined; payload: { kind: 'bytes'; data: Buffer } };

const validators = new Map<string, ValidateFunction>(
  Object.entries(TERMINAL_FRAMES).map(([kind, fields]) => [
    kind,
    frameAjv.compile(
      Type.Object({ kind: Type.Literal(kind), ...fields }, { additionalProperties: false }),
    ),
  ]),
);

/** Parses one viewer frame; throws a `FrameError` naming the first problem. */
export function parseTerminalFrame(data: Buffer, binary: boolean): TerminalFrame {
  if (binary) {
    if (data.length > 65_536) {
      throw invalidField('frame', 'a binary frame (typed input) holds at most 65536 bytes');
    }
    return { header: undefined, payload: { kind: 'bytes', data } };
  }
  const { header, payload, fail } = parseEnvelope(data.toString('utf8'));
  const kind = payload.kind;
  const validate = typeof kind === 'string' ? validators.get(kind) : undefined;
  if (validate === undefined) {
    throw fail(
      invalidField('payload.kind', `must be one of ${Object.keys(TERMINAL_FRAMES).join(', ')}`),
    );
  }
  if (!validate(payload)) throw fail(describeSchemaError('payload', validate.errors));
  if (header.type !== 'REQUEST') throw fail(invalidField('header.type', 'must be REQUEST'));
  return { header, payload } as TerminalFrame;
}

/** A text frame (a resize carries two numbers) is small; typed input comes in 64 KiB pieces. */
const MAX_FRAME_BYTES = 128 * 1024;
/** Output queued for a viewer past which it is cut (4507); it may attach again. */
const MAX_QUEUE_BYTES = 8 * 1024 * 1024;
/** How long a viewer that connected without a credential has to send its `auth` frame. */
const AUTH_TIMEOUT_MS = 10_000;
const INBOUND = { pauseAt: 64, resumeAt: 16 };

type FrameOf<K extends TerminalFrameKind> = Extract<TerminalFrame, { payload: { kind: K } }>;

/**
 * The viewers attached on this node (`GET /v1/instances/{id}/terminals/{terminal}/attach`),
 * over the shared connection core: authentication (in the upgrade or an `auth` frame),
 * frame limits, the send queue, pings and closing are the core's.
 */
export class TerminalAttachments {
  readonly #sockets: WsConnections<TerminalFrame>;
  readonly #terminals: TerminalService;
  readonly #log: Logger;
  readonly #source: string;

  constructor(deps: {
    terminals: TerminalService;
    log: Logger;
    nodeId: string;
    pingIntervalMs: number;
  }) {
    this.#terminals = deps.terminals;
    this.#log = deps.log;
    this.#source = `orchestra:${deps.nodeId}`;
    this.#sockets = new WsConnections({ pingIntervalMs: deps.pingIntervalMs });
    this.#sockets.start();
  }

  accept(
    socket: WireSocket,
    auth: Authenticated | ((credential: string) => Promise<Authenticated>),
    target: { instanceId: string; terminalId: string },
  ): void {
    this.#sockets.open(
      socket,
      {
        auth: connectionAuth(auth, AUTH_TIMEOUT_MS),
        maxFrameBytes: MAX_FRAME_BYTES,
        maxQueueBytes: MAX_QUEUE_BYTES,
        inbound: INBOUND,
        binaryFrames: 'accept',
        source: this.#source,
        log: this.#log,
      },
      (connection) => new TerminalViewer(this.#terminals, connection, target, this.#log),
    );
  }

  async close(): Promise<void> {
    await this.#sockets.close();
  }
}

type Attachment = Awaited<ReturnType<TerminalService['attach']>>;

/** One viewer's connection: attaches once authenticated, then relays input and output. */
class TerminalViewer implements ConnectionHandler<TerminalFrame> {
  readonly #terminals: TerminalService;
  readonly #connection: WsConnection<TerminalFrame>;
  readonly #target: { instanceId: string; terminalId: string };
  readonly #log: Logger;
  #attachment: Attachment | undefined;
  #attaching = false;
  #chain: Promise<void> = Promise.resolve();

  constructor(
    terminals: TerminalService,
    connection: WsConnection<TerminalFrame>,
    target: { instanceId: string; terminalId: string },
    log: Logger,
  ) {
    this.#terminals = terminals;
    this.#connection = connection;
    this.#target = target;
    this.#log = log;
    const principal = connection.caller?.principal;
    if (principal !== undefined) this.#enqueue(() => this.#attach(principal, undefined));
  }

  #send<K extends TerminalServerFrameKind>(
    type: 'RESPONSE' | 'EVENT',
    payload: TerminalServerFramePayload<K>,
    correlationId?: string,
  ): void {
    this.#connection.sendFrame(type, payload, correlationId);
  }

  parse(data: Buffer, binary: boolean): TerminalFrame {
    return parseTerminalFrame(data, binary);
  }

  receive(frame: TerminalFrame): void {
    // Typed input goes straight through, in order with the frames handled before it.
    this.#connection.inboundQueued();
    this.#enqueue(async () => {
      try {
        await this.#handle(frame);
      } finally {
        this.#connection.inboundHandled();
      }
    }, frame.header?.id);
  }

  #enqueue(work: () => Promise<void>, correlationId?: string): void {
    this.#chain = this.#chain.then(async () => {
      if (!this.#connection.isOpen) return;
      try {
        await work();
      } catch (err) {
        let error: ApiError;
        if (err instanceof ApiError) error = err;
        else {
          this.#log.error({ err }, 'terminal frame failed');
          error = new ApiError('INTERNAL_ERROR');
        }
        this.#connection.sendError(error, correlationId);
      }
    });
  }

  async #handle(frame: TerminalFrame): Promise<void> {
    const { payload } = frame;
    if (payload.kind === 'auth') {
      const caller = await this.#connection.authenticate(payload.token, frame.header?.id);
      if (caller === undefined) return;
      if (caller.principal === undefined) {
        throw new ApiError('PERMISSION_DENIED', 'A terminal takes an API key or a JWT');
      }
      await this.#attach(caller.principal, frame.header?.id);
      return;
    }
    const attachment = this.#attachment;
    if (attachment === undefined) {
      if (this.#attaching || this.#connection.caller !== undefined) return;
      this.#connection.sendError(
        new ApiError('UNAUTHENTICATED', 'Send an auth frame with a credential first'),
        frame.header?.id,
      );
      this.#connection.close(CLOSE_CODES.UNAUTHENTICATED);
      return;
    }
    switch (payload.kind) {
      case 'bytes':
        attachment.write(payload.data);
        return;
      case 'input':
        attachment.write((frame as FrameOf<'input'>).payload.data);
        return;
      case 'resize': {
        const { cols, rows } = (frame as FrameOf<'resize'>).payload;
        attachment.resize(cols, rows);
        return;
      }
      case 'ping':
        this.#send('RESPONSE', { kind: 'pong' }, frame.header?.id);
        return;
    }
  }

  async #attach(principal: Principal, correlationId: string | undefined): Promise<void> {
    this.#attaching = true;
    let attachment: Attachment;
    try {
      attachment = await this.#terminals.attach(
        principal,
        this.#target.instanceId,
        this.#target.terminalId,
        {
          output: (data) => this.#connection.send(data, true),
          frame: (payload) => this.#send('EVENT', payload),
          ended: () => this.#connection.close(CLOSE_CODES.ENDED),
        },
      );
    } catch (err) {
      // Nothing to view: say why, and close.
      if (err instanceof ApiError) {
        this.#connection.sendError(err, correlationId);
        this.#connection.close(
          err.code === 'TENANT_LIMIT_REACHED'
            ? CLOSE_CODES.LIMIT_REACHED
            : err.code === 'PERMISSION_DENIED'
              ? CLOSE_CODES.UNAUTHENTICATED
              : err.status === 404 || err.code === 'TERMINAL_EXITED'
                ? CLOSE_CODES.NOT_FOUND
                : CLOSE_CODES.PROTOCOL_VIOLATION,
        );
        return;
      }
      throw err;
    } finally {
      this.#attaching = false;
    }
    this.#attachment = attachment;
    if (!this.#connection.isOpen) {
      attachment.detach();
      return;
    }
    this.#send(
      correlationId === undefined ? 'EVENT' : 'RESPONSE',
      {
        kind: 'attached',
        terminal: attachment.terminal,
        screen: attachment.screen,
        connection_id: this.#connection.id,
      },
      correlationId,
    );
    attachment.started();
  }

  async closed(_code: CloseCode | undefined): Promise<void> {
    await this.#chain;
    this.#attachment?.detach();
  }
}
