/**
 * Runs the agent protocol conformance scenarios (conformance/agent-protocol/*.json, format
 * in conformance/README.md) against an Orchestra server:
 *
 *   node conformance/run.ts --url http://127.0.0.1:8080 --admin-key ork_… [--only a,b]
 *
 * Deliberately small and free of server code, so that it can be ported to other languages.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { frameChecker, SERVER_AGENT_FRAMES } from '@orchestra/protocol';
import WebSocket from 'ws';

type Json = unknown;
type Vars = Record<string, Json>;

export interface Scenario {
  name: string;
  description: string;
  steps: Step[];
}

/** One step: exactly one action key (connect, send, expect, http, …) plus its modifiers. */
export type Step = Record<string, Json>;

export interface Context {
  url: string;
  /** Credentials by name: admin, agent, viewer. */
  keys: Record<string, string>;
  /** Default wait for an expected frame, close or HTTP condition. */
  timeoutMs: number;
}

const HERE = new URL('.', import.meta.url);
export const SCENARIO_DIR = new URL('agent-protocol/', HERE);
/** The settings the suite expects of the server it runs against. */
export const SERVER_ENV = JSON.parse(
  readFileSync(new URL('server-env.json', HERE), 'utf8'),
) as Record<string, string>;

/** The scenarios in `dir`, by file name; each file's `name` must be its name without .json. */
export function loadScenarios(dir: URL = SCENARIO_DIR): Scenario[] {
  return readdirSync(dir)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => {
      const scenario = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as Scenario;
      if (`${scenario.name}.json` !== file) throw new Error(`${file} holds "${scenario.name}"`);
      return scenario;
    });
}

/** Creates the agent and viewer keys the scenarios use, with the admin key. */
export async function prepare(options: {
  url: string;
  adminKey: string;
  timeoutMs?: number;
}): Promise<Context> {
  const ctx: Context = {
    url: options.url.replace(/\/+$/, ''),
    keys: { admin: options.adminKey },
    timeoutMs: options.timeoutMs ?? 10_000,
  };
  for (const role of ['agent', 'viewer']) {
    const body = { name: `conformance-${role}`, role };
    const res = await request(ctx, { method: 'POST', path: '/v1/api-keys', body });
    if (res.status !== 201) throw new Error(`creating the ${role} key: ${res.status} ${res.text}`);
    ctx.keys[role] = (res.body as { secret: string }).secret;
  }
  return ctx;
}

// ---------------------------------------------------------------- patterns

/** `${name}` in strings: the variable (its own type when it is the whole string). */
export function interpolate(value: Json, vars: Vars): Json {
  if (typeof value === 'string') {
    const whole = /^\$\{([\w.]+)\}$/.exec(value);
    if (whole) return lookup(vars, whole[1] as string);
    return value.replace(/\$\{([\w.]+)\}/g, (_, name: string) => String(lookup(vars, name)));
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, vars));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, vars)]));
  }
  return value;
}

function lookup(vars: Vars, name: string): Json {
  if (!(name in vars)) throw new Error(`variable \${${name}} is not set`);
  return vars[name];
}

/**
 * Matches `actual` against a partial `pattern`; resolves to the variables with the
 * pattern's captures added, or null. Objects: the pattern's keys only. Arrays: same length.
 */
export function match(pattern: Json, actual: Json, vars: Vars): Vars | null {
  if (typeof pattern === 'string') {
    if (pattern === '$any') return actual === undefined ? null : vars;
    if (pattern === '$string') return typeof actual === 'string' ? vars : null;
    if (pattern === '$number') return typeof actual === 'number' ? vars : null;
    if (pattern.startsWith('$capture:')) {
      return actual === undefined ? null : { ...vars, [pattern.slice(9)]: actual };
    }
    if (pattern.startsWith('$contains:')) {
      const part = String(interpolate(pattern.slice(10), vars));
      return typeof actual === 'string' && actual.includes(part) ? vars : null;
    }
    return isDeepStrictEqual(interpolate(pattern, vars), actual) ? vars : null;
  }
  if (Array.isArray(pattern)) {
    if (!Array.isArray(actual) || actual.length !== pattern.length) return null;
    let out: Vars | null = vars;
    for (let i = 0; i < pattern.length && out; i++) out = match(pattern[i], actual[i], out);
    return out;
  }
  if (pattern !== null && typeof pattern === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return null;
    let out: Vars | null = vars;
    for (const [key, sub] of Object.entries(pattern)) {
      if (out === null) break;
      const has = Object.hasOwn(actual, key);
      if (sub === '$absent') out = has ? null : out;
      else out = has ? match(sub, (actual as Record<string, Json>)[key], out) : null;
    }
    return out;
  }
  return pattern === actual ? vars : null;
}

// ---------------------------------------------------------------- connections

interface Connection {
  socket: WebSocket;
  inbox: Json[];
  /** Frames the server sent that the wire contract does not allow. */
  violations: string[];
  closed: { code: number; reason: string } | undefined;
  heartbeat: boolean;
  timer: NodeJS.Timeout | undefined;
  wake: () => void;
}

function credential(ctx: Context, key: Json, vars: Vars): string | undefined {
  const name = String(interpolate(key ?? 'agent', vars));
  if (name === 'none') return undefined;
  return ctx.keys[name] ?? name;
}

function connect(
  ctx: Context,
  step: Step,
  vars: Vars,
): Promise<Connection | { status: number; body: Json }> {
  const key = credential(ctx, step.key, vars);
  const socket = new WebSocket(`${ctx.url.replace(/^http/, 'ws')}/v1/agents/connect`, {
    headers: key === undefined ? {} : { authorization: `Bearer ${key}` },
  });
  const conn: Connection = {
    socket,
    inbox: [],
    violations: [],
    closed: undefined,
    heartbeat: step.heartbeat !== false,
    timer: undefined,
    wake: () => {},
  };
  socket.on('message', (data, isBinary) => {
    const frame = parseJson(isBinary ? '"binary"' : String(data)) as {
      payload?: Record<string, Json>;
    };
    // Once registered, heartbeat at the interval the server asks for, like any agent.
    if (frame.payload?.kind === 'registered' && conn.heartbeat) {
      conn.timer = setInterval(
        () =>
          send(conn, { header: { type: 'EVENT' }, payload: { kind: 'heartbeat', in_flight: 0 } }),
        Number(frame.payload.heartbeat_interval_ms),
      );
    }
    const problem = contractProblem(frame.payload);
    if (problem !== undefined) conn.violations.push(`${problem}: ${show(frame as Json)}`);
    conn.inbox.push(frame);
    conn.wake();
  });
  socket.on('close', (code, reason) => {
    clearInterval(conn.timer);
    conn.closed = { code, reason: String(reason) };
    conn.wake();
  });
  return new Promise((resolve, reject) => {
    socket.once('open', () => resolve(conn));
    socket.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => {
        text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: parseJson(text) }));
    });
    socket.once('error', reject);
    socket.on('error', () => {}); // after the upgrade, a close says what happened
  });
}

/**
 * Every payload the server sends is checked against the wire contract
 * (`SERVER_AGENT_FRAMES` of @orchestra/protocol): its kind is known and its fields are those
 * the kind declares, no more.
 */
export const contractProblem = frameChecker(SERVER_AGENT_FRAMES);

/** Fills the header fields the scenario left out; a null value removes a field. */
function send(conn: Connection, frame: Record<string, Json>): void {
  const given = (frame.header ?? {}) as Record<string, Json>;
  const header: Record<string, Json> = {
    id: randomUUID(),
    timestamp: new Date().toISOString(),
    source: 'agent:conformance',
    version: 1,
    ...given,
  };
  for (const [k, v] of Object.entries(header)) if (v === null) delete header[k];
  if (conn.socket.readyState === WebSocket.OPEN) {
    conn.socket.send(JSON.stringify({ ...frame, header }));
  }
}

/** Waits until `ready` returns something or the time is up (undefined). */
async function waitFor<T>(
  conn: Connection,
  ms: number,
  ready: () => T | undefined,
): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const value = ready();
    if (value !== undefined || Date.now() >= end) return value;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.min(100, end - Date.now()));
      conn.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

// ---------------------------------------------------------------- HTTP

interface HttpResult {
  status: number;
  text: string;
  body: Json;
  lines: Json[] | undefined;
}

function parseJson(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

interface HttpSpec {
  method?: string;
  path: string;
  body?: Json;
  key?: Json;
  headers?: Record<string, string>;
}

async function request(
  ctx: Context,
  spec: HttpSpec,
  vars: Vars = {},
  readLines?: number,
): Promise<HttpResult> {
  const headers: Record<string, string> = { ...spec.headers };
  const key = credential(ctx, spec.key ?? 'admin', vars);
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  if (spec.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(ctx.url + String(interpolate(spec.path, vars)), {
    method: spec.method ?? 'GET',
    headers,
    body: spec.body === undefined ? undefined : JSON.stringify(interpolate(spec.body, vars)),
    signal: AbortSignal.timeout(ctx.timeoutMs),
  });
  const text =
    readLines === undefined ? await response.text() : await firstLines(response, readLines);
  const ndjson = response.headers.get('content-type')?.includes('ndjson') ?? false;
  const lines = ndjson
    ? text
        .split('\n')
        .filter((l) => l !== '')
        .map(parseJson)
    : undefined;
  return { status: response.status, text, body: parseJson(text), lines };
}

/** The first `count` lines of a streaming body, for streams that stay open (live events). */
async function firstLines(response: Response, count: number): Promise<string> {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  while (text.split('\n').length <= count) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  await reader.cancel();
  return text.split('\n').slice(0, count).join('\n');
}

// ---------------------------------------------------------------- scenarios

const show = (value: Json) => JSON.stringify(value);

/** What an `http` step expects; resolves to the variables with its captures, or a problem. */
function checkResponse(step: Step, res: HttpResult, vars: Vars): Vars | string {
  if (step.expect_status !== undefined && res.status !== step.expect_status) {
    return `HTTP ${res.status}, expected ${step.expect_status}`;
  }
  let next: Vars | null = vars;
  if (step.expect_body !== undefined) next = match(step.expect_body, res.body, next);
  if (next === null) return 'the body does not match';
  if (step.expect_lines !== undefined) next = match(step.expect_lines, res.lines, next);
  return next ?? 'the NDJSON lines do not match';
}

/** One run of a scenario: its variables and connections. */
class ScenarioRun {
  readonly #ctx: Context;
  readonly #conns = new Map<string, Connection>();
  vars: Vars;

  constructor(ctx: Context) {
    this.#ctx = ctx;
    this.vars = { run_id: randomUUID().slice(0, 8), server_url: ctx.url };
  }

  #conn(name: Json): Connection {
    const conn = this.#conns.get(String(name ?? 'a'));
    if (conn === undefined) throw new Error(`connection "${String(name ?? 'a')}" was not opened`);
    return conn;
  }

  async step(step: Step): Promise<void> {
    const timeout = Number(step.timeout_ms ?? this.#ctx.timeoutMs);
    const repeat = Number(step.repeat ?? 1);
    if ('connect' in step) {
      const result = await connect(this.#ctx, step, this.vars);
      if ('socket' in result) {
        if (step.expect_status !== undefined) throw new Error('the upgrade succeeded');
        this.#conns.set(String(step.connect), result);
        return;
      }
      if (result.status !== step.expect_status) {
        throw new Error(`HTTP ${result.status} ${show(result.body)}`);
      }
      const next = match(step.expect_body ?? '$any', result.body, this.vars);
      if (next === null) throw new Error(`body ${show(result.body)}`);
      this.vars = next;
    } else if ('send' in step) {
      const frame = interpolate(step.send, this.vars) as Record<string, Json>;
      for (let i = 0; i < repeat; i++) send(this.#conn(step.conn), frame);
    } else if ('send_raw' in step) {
      const text = String(interpolate(step.send_raw, this.vars));
      for (let i = 0; i < repeat; i++) this.#conn(step.conn).socket.send(text);
    } else if ('send_binary' in step) {
      const data = Buffer.from(String(step.send_binary), 'base64');
      this.#conn(step.conn).socket.send(data, { binary: true });
    } else if ('send_oversized' in step) {
      const frame = JSON.stringify({ header: {}, payload: { pad: '' } });
      const pad = 'x'.repeat(Number(step.send_oversized) - frame.length);
      this.#conn(step.conn).socket.send(frame.replace('""', `"${pad}"`));
    } else if ('expect' in step) {
      await this.#expect(this.#conn(step.conn), step.expect, timeout, step.next === true);
    } else if ('expect_close' in step) {
      const conn = this.#conn(step.conn);
      const closed = await waitFor(conn, timeout, () => conn.closed);
      if (closed?.code !== step.expect_close) {
        const state = closed ? `closed with ${closed.code}` : `still open after ${timeout} ms`;
        throw new Error(`${state}; frames: ${show(conn.inbox)}`);
      }
    } else if ('close' in step) {
      const conn = this.#conn(step.close);
      conn.socket.close(1000, 'done');
      await waitFor(conn, timeout, () => conn.closed);
    } else if ('http' in step) {
      const end = Date.now() + Number(step.until_ms ?? 0);
      const lines = step.read_lines === undefined ? undefined : Number(step.read_lines);
      for (;;) {
        const res = await request(this.#ctx, step.http as HttpSpec, this.vars, lines);
        const outcome = checkResponse(step, res, this.vars);
        if (typeof outcome !== 'string') {
          this.vars = outcome;
          return;
        }
        if (Date.now() >= end) throw new Error(`${outcome}: ${res.text}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } else {
      throw new Error('unknown step');
    }
  }

  /**
   * Takes the first received frame that matches, waiting for one if none has yet; with
   * `next`, only the oldest frame not taken yet may match.
   */
  async #expect(conn: Connection, pattern: Json, timeout: number, next: boolean): Promise<void> {
    const found = await waitFor(conn, timeout, () => {
      const candidates = next ? conn.inbox.slice(0, 1) : conn.inbox;
      for (const [i, frame] of candidates.entries()) {
        const vars = match(pattern, frame, this.vars);
        if (vars) return { i, vars };
      }
      if (candidates.length > 0 && next) return null; // the next frame is another one
      return conn.closed ? null : undefined;
    });
    if (!found) {
      if (next && conn.inbox.length > 0) {
        throw new Error(`the next frame does not match; frames: ${show(conn.inbox)}`);
      }
      const why = conn.closed ? `it closed with ${conn.closed.code}` : `${timeout} ms passed`;
      throw new Error(`no frame matched before ${why}; unmatched frames: ${show(conn.inbox)}`);
    }
    conn.inbox.splice(found.i, 1);
    this.vars = found.vars;
  }

  /** What the server sent outside the wire contract, on any connection. */
  violations(): string[] {
    return [...this.#conns.values()].flatMap((c) => c.violations.splice(0));
  }

  close(): void {
    for (const conn of this.#conns.values()) {
      clearInterval(conn.timer);
      conn.socket.terminate();
    }
  }
}

/** Runs one scenario; throws an Error naming the step that failed and why. */
export async function runScenario(scenario: Scenario, ctx: Context): Promise<void> {
  const run = new ScenarioRun(ctx);
  try {
    for (const [index, step] of scenario.steps.entries()) {
      try {
        await run.step(step);
        const violations = run.violations();
        if (violations.length > 0) {
          throw new Error(`the server sent frames outside the contract: ${violations.join('; ')}`);
        }
      } catch (err) {
        const { note, ...rest } = step;
        const where = `step ${index + 1}${note ? ` (${String(note)})` : ''}`;
        throw new Error(`${where} ${show(rest)}: ${(err as Error).message}`);
      }
    }
  } finally {
    run.close();
  }
}

// ---------------------------------------------------------------- command line

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      'admin-key': { type: 'string' },
      only: { type: 'string' },
      'timeout-ms': { type: 'string' },
    },
  });
  if (!values.url || !values['admin-key']) {
    console.error(
      'usage: node conformance/run.ts --url URL --admin-key KEY [--only a,b] [--timeout-ms N]',
    );
    process.exit(2);
  }
  const only = values.only?.split(',');
  const ctx = await prepare({
    url: values.url,
    adminKey: values['admin-key'],
    timeoutMs: values['timeout-ms'] ? Number(values['timeout-ms']) : undefined,
  });
  let failed = 0;
  for (const scenario of loadScenarios()) {
    if (only && !only.includes(scenario.name)) continue;
    const started = Date.now();
    try {
      await runScenario(scenario, ctx);
      console.log(`ok   ${scenario.name} (${Date.now() - started} ms)`);
    } catch (err) {
      failed += 1;
      console.log(`FAIL ${scenario.name}: ${(err as Error).message}`);
    }
  }
  process.exit(failed === 0 ? 0 : 1);
}

if (import.meta.main) await main();
