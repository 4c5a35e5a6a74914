import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../platform/errors.ts';

/**
 * Set on a request one node passes to another: the receiver answers it itself, whatever it
 * finds (no second hop, no loop while nodes disagree about an owner).
 */
export const FORWARDED_HEADER = 'x-orchestra-forwarded-by';
/** How long the list of live nodes is reused. */
const NODES_CACHE_MS = 2_000;
const CONNECT_TIMEOUT_MS = 10_000;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection']);

/** A node of the cluster as forwarding needs it. */
export interface LiveNode {
  id: string;
  url: string;
}

/**
 * Sends requests about an instance to the node that runs it: an instance's processes,
 * files, terminals and ports are on one node, and any node of a cluster takes the request.
 * The request goes on as it came (method, path, headers with the caller's credential, body
 * unread), and the owner answers it; a WebSocket upgrade is joined byte for byte. A node
 * that is not live (its lease ended) is not asked: the request is answered here, which
 * says where the instance was and why it cannot be reached (`lost`).
 */
export class InstanceForwarding {
  readonly #selfId: string;
  readonly #ownerOf: (request: FastifyRequest) => Promise<string | undefined>;
  readonly #liveNodes: () => Promise<LiveNode[]>;
  #cached: { at: number; nodes: Promise<LiveNode[]> } | undefined;

  constructor(options: {
    selfId: string;
    /** The node that runs the instance this request is about (undefined: none, or unknown). */
    ownerOf: (request: FastifyRequest) => Promise<string | undefined>;
    liveNodes: () => Promise<LiveNode[]>;
  }) {
    this.#selfId = options.selfId;
    this.#ownerOf = options.ownerOf;
    this.#liveNodes = options.liveNodes;
  }

  /** An `onRequest` hook for routes about one instance: forwards what another node runs. */
  readonly hook = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (request.headers[FORWARDED_HEADER] !== undefined) return;
    const owner = await this.#ownerOf(request);
    if (owner === undefined || owner === this.#selfId) return;
    const node = (await this.#nodes()).find((n) => n.id === owner);
    if (node === undefined || node.url === '') return;
    if ((request as FastifyRequest & { ws?: boolean }).ws === true) {
      await this.#joinUpgrade(request, reply, node);
    } else {
      await this.#forwardHttp(request, reply, node);
    }
  };

  /**
   * Sends a request whose body was read already (`body`, as JSON) to node `nodeId` (a
   * placement's pick), and its answer back; false when that node is not live.
   */
  async forwardTo(
    request: FastifyRequest,
    reply: FastifyReply,
    nodeId: string,
    body: unknown,
  ): Promise<boolean> {
    const node = (await this.#nodes()).find((n) => n.id === nodeId);
    if (node === undefined || node.url === '') return false;
    await this.#forwardHttp(request, reply, node, Buffer.from(JSON.stringify(body ?? {})));
    return true;
  }

  /** The address of node `nodeId` while it is live; undefined when it is not (or has none). */
  async nodeUrl(nodeId: string): Promise<string | undefined> {
    const node = (await this.#nodes()).find((n) => n.id === nodeId);
    return node === undefined || node.url === '' ? undefined : node.url;
  }

  async #nodes(): Promise<LiveNode[]> {
    const now = Date.now();
    if (this.#cached === undefined || now - this.#cached.at > NODES_CACHE_MS) {
      const nodes = this.#liveNodes();
      this.#cached = { at: now, nodes };
      nodes.catch(() => {
        if (this.#cached?.nodes === nodes) this.#cached = undefined;
      });
    }
    return this.#cached.nodes;
  }

  #headers(request: FastifyRequest): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(request.raw.headers)) {
      if (value !== undefined && name !== 'host') headers[name] = value;
    }
    headers[FORWARDED_HEADER] = this.#selfId;
    const client = request.raw.socket.remoteAddress;
    if (client !== undefined) {
      const before = request.headers['x-forwarded-for'];
      headers['x-forwarded-for'] = before === undefined ? client : `${before}, ${client}`;
    }
    return headers;
  }

  async #forwardHttp(
    request: FastifyRequest,
    reply: FastifyReply,
    node: LiveNode,
    /** The body, when it was read already; else the request's own stream goes on. */
    body?: Buffer,
  ): Promise<void> {
    const target = new URL(request.raw.url ?? '/', node.url);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const headers = this.#headers(request);
    if (body !== undefined) {
      delete headers['transfer-encoding'];
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(body.length);
    }
    const answer = await new Promise<IncomingMessage>((resolve, reject) => {
      const upstream = send(target, {
        method: request.method,
        headers,
        timeout: CONNECT_TIMEOUT_MS,
      });
      upstream.once('response', (res) => {
        upstream.setTimeout(0);
        resolve(res);
      });
      upstream.once('timeout', () => upstream.destroy(new Error('no answer in time')));
      upstream.once('error', (err) => reject(unreachable(node, err)));
      if (body !== undefined) upstream.end(body);
      else request.raw.pipe(upstream);
    });
    reply.hijack();
    // Hop-by-hop headers are this connection's own: Node frames the body again itself.
    const answered: string[] = [];
    for (let i = 0; i + 1 < answer.rawHeaders.length; i += 2) {
      const name = answer.rawHeaders[i] ?? '';
      if (!HOP_BY_HOP.has(name.toLowerCase())) answered.push(name, answer.rawHeaders[i + 1] ?? '');
    }
    reply.raw.writeHead(answer.statusCode ?? 502, answered);
    answer.pipe(reply.raw);
    reply.raw.once('close', () => answer.destroy());
  }

  async #joinUpgrade(request: FastifyRequest, reply: FastifyReply, node: LiveNode): Promise<void> {
    const target = new URL(node.url);
    const port = Number(target.port) || (target.protocol === 'https:' ? 443 : 80);
    const upstream = await new Promise<Socket>((resolve, reject) => {
      const socket =
        target.protocol === 'https:'
          ? tlsConnect({ host: target.hostname, port, servername: target.hostname })
          : connect(port, target.hostname);
      const timer = setTimeout(
        () => socket.destroy(new Error('no connection in time')),
        CONNECT_TIMEOUT_MS,
      );
      socket.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(unreachable(node, err));
      });
    });
    reply.hijack();
    const client = reply.raw.socket;
    if (client === null) {
      upstream.destroy();
      return;
    }
    const lines = [`${request.method} ${request.raw.url ?? '/'} HTTP/1.1`, `host: ${target.host}`];
    for (const [name, value] of Object.entries(this.#headers(request))) {
      for (const one of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${one}`);
    }
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    client.pipe(upstream);
    upstream.pipe(client);
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  }
}

function unreachable(node: LiveNode, err: Error): ApiError {
  return new ApiError(
    'NODE_UNREACHABLE',
    `Node ${node.id}, which runs the instance, did not answer at ${node.url}: ${err.message}`,
    { details: { node_id: node.id } },
  );
}
