import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

// A model server that is not a model: it speaks the wire protocols of OpenAI Chat
// Completions (`POST /v1/chat/completions`, `GET /v1/models`) and Anthropic Messages
// (`POST /v1/messages`, `GET /v1/models` with `anthropic-version`), streaming and not, and
// answers with turns scripted in advance, or, when none is queued for the model, with a
// fixed demo behaviour (see `demoTurn`). It lets the real provider clients be tested where
// no model can run, and it is the demo provider of the README's quick start
// (`orchestra demo-provider`). Nothing here pretends to understand language.

/** A tool call the scripted model makes. */
export interface ScriptedToolCall {
  name: string;
  arguments: Record<string, unknown>;
  /** Default: a fresh id. */
  id?: string;
}

/** Token counts to report instead of the estimate (4 characters a token). */
export interface ScriptedUsage {
  input_tokens?: number;
  output_tokens?: number;
  cached_input_tokens?: number;
}

/** One answer of the scripted model: what the next request for its model gets. */
export type ScriptedTurn =
  | {
      /** The answer's text (for structured output: the JSON text). */
      text: string;
      /** And tool calls after it, made together (in parallel). */
      tool_calls?: ScriptedToolCall[];
      usage?: ScriptedUsage;
      /** Streaming: the text is sent in pieces of this many characters. Default 8. */
      chunk_chars?: number;
      /** Streaming: a pause before each piece. Default 0. */
      chunk_delay_ms?: number;
      /** Streaming: after this many pieces, send nothing more and keep the response open. */
      stall_after_chunks?: number;
      /** Streaming: after this many pieces, destroy the connection. */
      cut_after_chunks?: number;
      /** `length`: as if the output token limit was reached. Default: stop (or tool calls). */
      finish?: 'stop' | 'length';
    }
  | {
      /** An HTTP error instead of an answer. */
      error: {
        status: number;
        /** Sent as `Retry-After` (seconds). */
        retry_after_s?: number;
        message?: string;
      };
    };

/** A request the server received, for tests to look at. */
export interface ScriptedRequest {
  api: 'openai' | 'anthropic';
  path: string;
  model: string;
  stream: boolean;
  /** The parsed JSON body. */
  body: Record<string, unknown>;
  /** The API key it carried (Authorization bearer or x-api-key), if any. */
  api_key: string | null;
  /** `Date.now()` when it arrived. */
  received_at: number;
  /** The turn it was answered with; null when it was refused before taking one (a bad key). */
  turn: ScriptedTurn | null;
}

export interface ScriptedModelServerOptions {
  /** Requests must carry this key; others get 401. Default: any key or none. */
  apiKey?: string;
  /** The model names `GET /v1/models` lists. Default: `demo`. */
  models?: string[];
  /** Most requests kept in `requests`. Default 1,000. */
  maxRecordedRequests?: number;
  /** Largest request body accepted, in bytes. Default 8 MiB. */
  maxBodyBytes?: number;
}

const DEFAULT_CHUNK_CHARS = 8;
/** The demo's search for tool arguments in a message: how far it looks, and how hard. */
const MAX_JSON_CHARS = 10_000;
const MAX_JSON_TRIES = 200;
const DEMO_NOTE = '(Orchestra demo provider: scripted answers, not a language model.)';

/** A normalised view of the conversation, the same for both APIs, for the demo behaviour. */
interface Conversation {
  lastRole: 'user' | 'tool' | 'assistant' | 'none';
  lastText: string;
  /** For a last message holding tool results: the tools' names and what they returned. */
  toolResults: { name: string; content: string }[];
  tools: { name: string; schema: Record<string, unknown> }[];
  wantsJson: boolean;
}

function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (typeof part === 'string') return part;
        const p = part as { type?: string; text?: string; content?: unknown };
        if (p.type === 'text' && typeof p.text === 'string') return p.text;
        if (p.type === 'tool_result') return textOf(p.content);
        return '';
      })
      .join('');
  }
  return content == null ? '' : JSON.stringify(content);
}

function openAiConversation(body: Record<string, unknown>): Conversation {
  const messages = (Array.isArray(body.messages) ? body.messages : []) as Record<string, unknown>[];
  const names = new Map<string, string>();
  for (const m of messages) {
    for (const call of (m.tool_calls as { id: string; function: { name: string } }[]) ?? []) {
      names.set(call.id, call.function?.name ?? '');
    }
  }
  const tools = ((body.tools as { function?: { name?: string; parameters?: object } }[]) ?? [])
    .map((t) => ({
      name: String(t.function?.name ?? ''),
      schema: (t.function?.parameters ?? {}) as Record<string, unknown>,
    }))
    .filter((t) => t.name !== '');
  const format = body.response_format as { type?: string } | undefined;
  const wantsJson = format?.type === 'json_schema' || format?.type === 'json_object';
  const last = messages[messages.length - 1];
  if (last === undefined)
    return { lastRole: 'none', lastText: '', toolResults: [], tools, wantsJson };
  if (last.role === 'tool') {
    // Every tool message after the last assistant message: the results of one round.
    const results: { name: string; content: string }[] = [];
    for (let i = messages.length - 1; i >= 0 && messages[i]?.role === 'tool'; i--) {
      const m = messages[i] as Record<string, unknown>;
      results.unshift({
        name: names.get(String(m.tool_call_id)) ?? 'tool',
        content: textOf(m.content),
      });
    }
    return { lastRole: 'tool', lastText: '', toolResults: results, tools, wantsJson };
  }
  const role = last.role === 'assistant' ? 'assistant' : 'user';
  return { lastRole: role, lastText: textOf(last.content), toolResults: [], tools, wantsJson };
}

function anthropicConversation(body: Record<string, unknown>): Conversation {
  const messages = (Array.isArray(body.messages) ? body.messages : []) as Record<string, unknown>[];
  const names = new Map<string, string>();
  for (const m of messages) {
    if (!Array.isArray(m.content)) continue;
    for (const block of m.content as { type?: string; id?: string; name?: string }[]) {
      if (block.type === 'tool_use' && block.id) names.set(block.id, block.name ?? '');
    }
  }
  const tools = ((body.tools as { name?: string; input_schema?: object }[]) ?? [])
    .map((t) => ({
      name: String(t.name ?? ''),
      schema: (t.input_schema ?? {}) as Record<string, unknown>,
    }))
    .filter((t) => t.name !== '');
  const wantsJson = (body.output_config as { format?: unknown } | undefined)?.format != null;
  const last = messages[messages.length - 1];
  if (last === undefined)
    return { lastRole: 'none', lastText: '', toolResults: [], tools, wantsJson };
  if (last.role === 'user' && Array.isArray(last.content)) {
    const results = (last.content as { type?: string; tool_use_id?: string; content?: unknown }[])
      .filter((b) => b.type === 'tool_result')
      .map((b) => ({
        name: names.get(String(b.tool_use_id)) ?? 'tool',
        content: textOf(b.content),
      }));
    if (results.length > 0) {
      return { lastRole: 'tool', lastText: '', toolResults: results, tools, wantsJson };
    }
  }
  const role = last.role === 'assistant' ? 'assistant' : 'user';
  return { lastRole: role, lastText: textOf(last.content), toolResults: [], tools, wantsJson };
}

/** The first `{...}` in `text` that parses as a JSON object. */
function jsonObjectIn(text: string): Record<string, unknown> | undefined {
  // Bounded: each try parses a span, and a long message full of braces must not stall the
  // server (at most MAX_JSON_TRIES parses of at most MAX_JSON_CHARS).
  const head = text.slice(0, MAX_JSON_CHARS);
  let tries = 0;
  for (let start = head.indexOf('{'); start !== -1; start = head.indexOf('{', start + 1)) {
    for (let end = head.lastIndexOf('}'); end > start; end = head.lastIndexOf('}', end - 1)) {
      if (++tries > MAX_JSON_TRIES) return undefined;
      try {
        const value: unknown = JSON.parse(head.slice(start, end + 1));
        if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
          return value as Record<string, unknown>;
        }
      } catch {
        // Not this span; try a shorter one.
      }
    }
  }
  return undefined;
}

/**
 * What the demo provider answers when no turn is scripted for the model:
 * - the last message holds tool results: it reports what each tool returned;
 * - the last message names an offered tool (its full name, or the part after `__`): it calls
 *   that tool, with the first JSON object in the message as arguments (default `{}`);
 * - otherwise it repeats the message.
 * Structured output gets `{"answer": <that text>}`.
 */
function demoTurn(conversation: Conversation): ScriptedTurn {
  let text: string;
  if (conversation.lastRole === 'tool') {
    text = conversation.toolResults
      .map(
        (r) =>
          `${r.name} returned: ${r.content.length > 2000 ? `${r.content.slice(0, 2000)}…` : r.content}`,
      )
      .join('\n');
  } else {
    const said = conversation.lastText.toLowerCase();
    const tool = conversation.tools.find((t) => {
      const short = t.name.includes('__') ? t.name.slice(t.name.lastIndexOf('__') + 2) : t.name;
      return (
        said.includes(t.name.toLowerCase()) || (short !== '' && said.includes(short.toLowerCase()))
      );
    });
    if (tool !== undefined) {
      return {
        text: '',
        tool_calls: [{ name: tool.name, arguments: jsonObjectIn(conversation.lastText) ?? {} }],
      };
    }
    text = conversation.lastRole === 'none' ? 'Hello.' : `You said: ${conversation.lastText}`;
  }
  if (conversation.wantsJson) return { text: JSON.stringify({ answer: text }) };
  return { text: `${text}\n${DEMO_NOTE}` };
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

function pieces(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

type AnswerTurn = Extract<ScriptedTurn, { text: string }>;

/** Why an answer's stream stops early: cut (socket destroyed) or stalled (left open). */
type StreamEnd = 'complete' | 'cut' | 'stalled';

/**
 * A wire-compatible scripted model server for OpenAI Chat Completions and Anthropic
 * Messages. Listens on loopback only.
 */
export class ScriptedModelServer {
  readonly #options: Required<Omit<ScriptedModelServerOptions, 'apiKey'>> & { apiKey?: string };
  readonly #scripts = new Map<string, ScriptedTurn[]>();
  readonly #sockets = new Set<Socket>();
  readonly #stalled = new Set<ServerResponse>();
  #server: Server | undefined;
  /** The requests answered, oldest first (at most `maxRecordedRequests`). */
  readonly requests: ScriptedRequest[] = [];
  /** `http://127.0.0.1:<port>` once listening. */
  url = '';

  constructor(options: ScriptedModelServerOptions = {}) {
    this.#options = {
      models: options.models ?? ['demo'],
      maxRecordedRequests: options.maxRecordedRequests ?? 1000,
      maxBodyBytes: options.maxBodyBytes ?? 8 * 1024 * 1024,
      ...(options.apiKey !== undefined ? { apiKey: options.apiKey } : {}),
    };
  }

  /** Queues turns for `model`: each request for it takes the next one. */
  script(model: string, ...turns: ScriptedTurn[]): this {
    const queue = this.#scripts.get(model) ?? [];
    queue.push(...turns);
    this.#scripts.set(model, queue);
    return this;
  }

  /** Turns still queued for `model`. */
  pending(model: string): number {
    return this.#scripts.get(model)?.length ?? 0;
  }

  /** Requests for `model` received so far. */
  requestsFor(model: string): ScriptedRequest[] {
    return this.requests.filter((r) => r.model === model);
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<this> {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          this.#json(res, 500, { error: { message: String(err), type: 'server_error' } });
        } else res.destroy();
      });
    });
    server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
    return this;
  }

  /** Stops listening and drops every connection, stalled streams included. */
  async close(): Promise<void> {
    for (const res of this.#stalled) res.destroy();
    for (const socket of this.#sockets) socket.destroy();
    const server = this.#server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const anthropic = req.headers['anthropic-version'] !== undefined || path.endsWith('/messages');
    const apiKey = this.#apiKeyOf(req);
    if (this.#options.apiKey !== undefined && apiKey !== this.#options.apiKey) {
      this.#record({
        api: anthropic ? 'anthropic' : 'openai',
        path,
        model: '',
        stream: false,
        body: {},
        api_key: apiKey,
        received_at: Date.now(),
        turn: null,
      });
      return this.#error(res, anthropic, 401, 'invalid API key');
    }
    if (req.method === 'GET' && path.endsWith('/models')) return this.#models(res, anthropic);
    if (req.method !== 'POST')
      return this.#error(res, anthropic, 404, `no route ${req.method} ${path}`);
    const isChat = path.endsWith('/chat/completions');
    const isMessages = path.endsWith('/messages');
    if (!isChat && !isMessages) return this.#error(res, anthropic, 404, `no route POST ${path}`);
    let body: Record<string, unknown>;
    try {
      body = await this.#readJson(req);
    } catch (err) {
      return this.#error(res, anthropic, 400, (err as Error).message);
    }
    const model = typeof body.model === 'string' ? body.model : '';
    if (model === '') return this.#error(res, anthropic, 400, 'model is required');
    const api = isMessages ? 'anthropic' : 'openai';
    const conversation = api === 'openai' ? openAiConversation(body) : anthropicConversation(body);
    const turn = this.#scripts.get(model)?.shift() ?? demoTurn(conversation);
    const stream = body.stream === true;
    this.#record({
      api,
      path,
      model,
      stream,
      body,
      api_key: apiKey,
      received_at: Date.now(),
      turn,
    });
    if ('error' in turn) {
      const headers: Record<string, string> = {};
      if (turn.error.retry_after_s !== undefined)
        headers['retry-after'] = String(turn.error.retry_after_s);
      return this.#error(
        res,
        api === 'anthropic',
        turn.error.status,
        turn.error.message ?? `scripted error ${turn.error.status}`,
        headers,
      );
    }
    const inputTokens =
      turn.usage?.input_tokens ?? estimateTokens(JSON.stringify(body.messages ?? ''));
    if (api === 'openai') {
      if (stream) await this.#openAiStream(res, model, turn, inputTokens, body);
      else this.#json(res, 200, this.#openAiCompletion(model, turn, inputTokens));
    } else if (stream) await this.#anthropicStream(res, model, turn, inputTokens);
    else this.#json(res, 200, this.#anthropicMessage(model, turn, inputTokens));
  }

  #apiKeyOf(req: IncomingMessage): string | null {
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice(7);
    const key = req.headers['x-api-key'] ?? req.headers['api-key'];
    return typeof key === 'string' ? key : null;
  }

  #record(request: ScriptedRequest): void {
    this.requests.push(request);
    if (this.requests.length > this.#options.maxRecordedRequests) this.requests.shift();
  }

  async #readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > this.#options.maxBodyBytes) throw new Error('request body too large');
      chunks.push(chunk as Buffer);
    }
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error('the body must be a JSON object');
    }
    return value as Record<string, unknown>;
  }

  #json(
    res: ServerResponse,
    status: number,
    value: unknown,
    headers: Record<string, string> = {},
  ): void {
    const text = JSON.stringify(value);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  }

  #error(
    res: ServerResponse,
    anthropic: boolean,
    status: number,
    message: string,
    headers: Record<string, string> = {},
  ): void {
    if (anthropic) {
      const type =
        status === 429
          ? 'rate_limit_error'
          : status === 401
            ? 'authentication_error'
            : status === 404
              ? 'not_found_error'
              : status === 529
                ? 'overloaded_error'
                : status >= 500
                  ? 'api_error'
                  : 'invalid_request_error';
      this.#json(res, status, { type: 'error', error: { type, message } }, headers);
      return;
    }
    const type =
      status === 429
        ? 'rate_limit_exceeded'
        : status >= 500
          ? 'server_error'
          : 'invalid_request_error';
    this.#json(res, status, { error: { message, type, param: null, code: type } }, headers);
  }

  #models(res: ServerResponse, anthropic: boolean): void {
    if (anthropic) {
      const data = this.#options.models.map((id) => ({
        type: 'model',
        id,
        display_name: id,
        created_at: '2026-01-01T00:00:00Z',
      }));
      this.#json(res, 200, {
        data,
        has_more: false,
        first_id: data[0]?.id ?? null,
        last_id: data[data.length - 1]?.id ?? null,
      });
      return;
    }
    this.#json(res, 200, {
      object: 'list',
      data: this.#options.models.map((id) => ({
        id,
        object: 'model',
        created: 1_767_225_600,
        owned_by: 'orchestra-scripted',
      })),
    });
  }

  #usage(turn: AnswerTurn, inputTokens: number) {
    const callsText = JSON.stringify(turn.tool_calls ?? []);
    return {
      input: inputTokens,
      output:
        turn.usage?.output_tokens ??
        estimateTokens(turn.text) + (turn.tool_calls ? estimateTokens(callsText) : 0),
      cached: turn.usage?.cached_input_tokens ?? 0,
    };
  }

  #openAiCompletion(model: string, turn: AnswerTurn, inputTokens: number) {
    const usage = this.#usage(turn, inputTokens);
    const calls = (turn.tool_calls ?? []).map((call) => ({
      id: call.id ?? `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`,
      type: 'function',
      function: { name: call.name, arguments: JSON.stringify(call.arguments) },
    }));
    return {
      id: `chatcmpl-${randomUUID()}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model,
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: turn.text === '' && calls.length > 0 ? null : turn.text,
            refusal: null,
            ...(calls.length > 0 ? { tool_calls: calls } : {}),
          },
          logprobs: null,
          finish_reason: calls.length > 0 ? 'tool_calls' : (turn.finish ?? 'stop'),
        },
      ],
      usage: {
        prompt_tokens: usage.input,
        completion_tokens: usage.output,
        total_tokens: usage.input + usage.output,
        prompt_tokens_details: { cached_tokens: usage.cached },
      },
    };
  }

  #anthropicMessage(model: string, turn: AnswerTurn, inputTokens: number) {
    const usage = this.#usage(turn, inputTokens);
    const content: Record<string, unknown>[] = [];
    if (turn.text !== '') content.push({ type: 'text', text: turn.text });
    for (const call of turn.tool_calls ?? []) {
      content.push({
        type: 'tool_use',
        id: call.id ?? `toolu_${randomUUID().replaceAll('-', '').slice(0, 24)}`,
        name: call.name,
        input: call.arguments,
      });
    }
    return {
      id: `msg_${randomUUID().replaceAll('-', '')}`,
      type: 'message',
      role: 'assistant',
      model,
      content,
      stop_reason: turn.tool_calls?.length
        ? 'tool_use'
        : turn.finish === 'length'
          ? 'max_tokens'
          : 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: usage.input - usage.cached,
        output_tokens: usage.output,
        cache_read_input_tokens: usage.cached,
        cache_creation_input_tokens: 0,
      },
    };
  }

  /**
   * Sends `events` as server-sent events, paced and cut or stalled as the turn says. The
   * first `head` events (the preamble) do not count as pieces.
   */
  async #sse(
    res: ServerResponse,
    turn: AnswerTurn,
    events: { event?: string; data: string }[],
    head: number,
  ): Promise<StreamEnd> {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    res.flushHeaders();
    let sent = 0;
    for (let i = 0; i < events.length; i++) {
      const piece = i - head;
      if (piece >= 0) {
        if (turn.cut_after_chunks !== undefined && piece >= turn.cut_after_chunks) {
          // What was written reaches the client first: the cut comes in the middle of the answer.
          await new Promise<void>((resolve) => res.write('', () => resolve()));
          res.destroy();
          return 'cut';
        }
        if (turn.stall_after_chunks !== undefined && piece >= turn.stall_after_chunks) {
          // Left open until the client gives up or the server closes.
          this.#stalled.add(res);
          res.on('close', () => this.#stalled.delete(res));
          return 'stalled';
        }
        await sleep(turn.chunk_delay_ms ?? 0);
        if (res.destroyed) return 'cut';
      }
      const e = events[i] as { event?: string; data: string };
      res.write(`${e.event ? `event: ${e.event}\n` : ''}data: ${e.data}\n\n`);
      sent++;
    }
    res.end();
    return sent === events.length ? 'complete' : 'cut';
  }

  async #openAiStream(
    res: ServerResponse,
    model: string,
    turn: AnswerTurn,
    inputTokens: number,
    body: Record<string, unknown>,
  ): Promise<void> {
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      JSON.stringify({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      });
    const events: { data: string }[] = [{ data: chunk({ role: 'assistant', content: '' }) }];
    for (const piece of pieces(turn.text, turn.chunk_chars ?? DEFAULT_CHUNK_CHARS)) {
      events.push({ data: chunk({ content: piece }) });
    }
    (turn.tool_calls ?? []).forEach((call, index) => {
      const callId = call.id ?? `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`;
      events.push({
        data: chunk({
          tool_calls: [
            { index, id: callId, type: 'function', function: { name: call.name, arguments: '' } },
          ],
        }),
      });
      for (const piece of pieces(
        JSON.stringify(call.arguments),
        turn.chunk_chars ?? DEFAULT_CHUNK_CHARS,
      )) {
        events.push({ data: chunk({ tool_calls: [{ index, function: { arguments: piece } }] }) });
      }
    });
    const finish = turn.tool_calls?.length ? 'tool_calls' : (turn.finish ?? 'stop');
    events.push({ data: chunk({}, finish) });
    const options = body.stream_options as { include_usage?: boolean } | undefined;
    if (options?.include_usage === true) {
      const usage = this.#usage(turn, inputTokens);
      events.push({
        data: JSON.stringify({
          id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [],
          usage: {
            prompt_tokens: usage.input,
            completion_tokens: usage.output,
            total_tokens: usage.input + usage.output,
            prompt_tokens_details: { cached_tokens: usage.cached },
          },
        }),
      });
    }
    events.push({ data: '[DONE]' });
    await this.#sse(res, turn, events, 1);
  }

  async #anthropicStream(
    res: ServerResponse,
    model: string,
    turn: AnswerTurn,
    inputTokens: number,
  ): Promise<void> {
    const usage = this.#usage(turn, inputTokens);
    const event = (type: string, value: Record<string, unknown>) => ({
      event: type,
      data: JSON.stringify({ type, ...value }),
    });
    const events = [
      event('message_start', {
        message: {
          id: `msg_${randomUUID().replaceAll('-', '')}`,
          type: 'message',
          role: 'assistant',
          model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: {
            input_tokens: usage.input - usage.cached,
            output_tokens: 1,
            cache_read_input_tokens: usage.cached,
            cache_creation_input_tokens: 0,
          },
        },
      }),
    ];
    let index = 0;
    if (turn.text !== '') {
      events.push(
        event('content_block_start', { index, content_block: { type: 'text', text: '' } }),
      );
      for (const piece of pieces(turn.text, turn.chunk_chars ?? DEFAULT_CHUNK_CHARS)) {
        events.push(
          event('content_block_delta', { index, delta: { type: 'text_delta', text: piece } }),
        );
      }
      events.push(event('content_block_stop', { index }));
      index++;
    }
    for (const call of turn.tool_calls ?? []) {
      events.push(
        event('content_block_start', {
          index,
          content_block: {
            type: 'tool_use',
            id: call.id ?? `toolu_${randomUUID().replaceAll('-', '').slice(0, 24)}`,
            name: call.name,
            input: {},
          },
        }),
      );
      for (const piece of pieces(
        JSON.stringify(call.arguments),
        turn.chunk_chars ?? DEFAULT_CHUNK_CHARS,
      )) {
        events.push(
          event('content_block_delta', {
            index,
            delta: { type: 'input_json_delta', partial_json: piece },
          }),
        );
      }
      events.push(event('content_block_stop', { index }));
      index++;
    }
    const stop = turn.tool_calls?.length
      ? 'tool_use'
      : turn.finish === 'length'
        ? 'max_tokens'
        : 'end_turn';
    events.push(
      event('message_delta', {
        delta: { stop_reason: stop, stop_sequence: null },
        usage: { output_tokens: usage.output },
      }),
    );
    events.push(event('message_stop', {}));
    await this.#sse(res, turn, events, 1);
  }
}
