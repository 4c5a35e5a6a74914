/**
 * The MCP benchmark's client side (bench/mcp.ts starts it), driven over Node's IPC channel;
 * see `LoadRequest` in shared.ts. Every client is the MCP TypeScript SDK 1.x `Client` over
 * its `StreamableHTTPClientTransport`, the same for both paths; only the URL (and
 * Orchestra's `Authorization` header) differ. Each call is `tools/call echo {text}`, timed
 * from before `callTool` to its result, and checked: a result that is not the echo of its
 * text counts as an error.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { redactKeys, serveLoadRequests } from '../common.ts';
import { newHistogram, record } from '../realtime/shared.ts';
import {
  ECHO_PREFIX,
  type Failures,
  type LatencyReport,
  type LoadRequest,
  type SessionsReport,
  type Target,
  type ThroughputReport,
  TOOL_NAME,
} from './shared.ts';

/** One call may take this long before it counts as failed. */
const CALL_TIMEOUT_MS = 30_000;

interface Session {
  client: Client;
  transport: StreamableHTTPClientTransport;
}

async function open(target: Target): Promise<Session> {
  const transport = new StreamableHTTPClientTransport(new URL(target.url), {
    requestInit:
      target.apiKey === undefined ? {} : { headers: { authorization: `Bearer ${target.apiKey}` } },
  });
  const client = new Client({ name: 'orchestra-bench-mcp', version: '1.0.0' });
  await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
  return { client, transport };
}

/** Ends the session (DELETE) and closes the client; never throws. */
async function close(session: Session): Promise<void> {
  await session.transport.terminateSession().catch(() => undefined);
  await session.client.close().catch(() => undefined);
}

const message = (err: unknown) =>
  redactKeys(err instanceof Error ? err.message : String(err)).slice(0, 500);

function fail(failures: Failures, reason: string): void {
  failures.errors += 1;
  failures.firstError ??= reason;
}

let sequence = 0;

/** One checked call; its latency in ms, or null (and the failure noted) if it failed. */
async function call(session: Session, failures: Failures): Promise<number | null> {
  const text = `b${++sequence}`;
  const started = performance.now();
  try {
    const result = await session.client.callTool(
      { name: TOOL_NAME, arguments: { text } },
      undefined,
      {
        timeout: CALL_TIMEOUT_MS,
      },
    );
    const ms = performance.now() - started;
    const first = (result.content as { type: string; text?: string }[] | undefined)?.[0];
    if (result.isError === true || first?.text !== `${ECHO_PREFIX}${text}`) {
      fail(failures, `unexpected result: ${JSON.stringify(result).slice(0, 300)}`);
      return null;
    }
    return ms;
  } catch (err) {
    fail(failures, message(err));
    return null;
  }
}

async function latency(request: Extract<LoadRequest, { type: 'latency' }>): Promise<LatencyReport> {
  const sessions = await Promise.all(request.targets.map(open));
  try {
    const scratch: Failures = { errors: 0, firstError: null };
    for (let i = 0; i < request.warmup; i++) {
      for (const session of sessions) await call(session, scratch);
    }
    const perTarget = request.targets.map(() => ({
      calls: 0,
      errors: 0,
      firstError: null as string | null,
      latency: newHistogram(),
    }));
    const started = performance.now();
    const deadline = started + request.maxMs;
    for (let i = 0; i < request.calls && performance.now() < deadline; i++) {
      // Alternate which path goes first, so that neither always follows the other.
      for (let k = 0; k < sessions.length; k++) {
        const j = (i + k) % sessions.length;
        const session = sessions[j];
        const into = perTarget[j];
        if (session === undefined || into === undefined) continue;
        into.calls += 1;
        const ms = await call(session, into);
        if (ms !== null) record(into.latency, ms);
      }
    }
    return { perTarget, ms: performance.now() - started };
  } finally {
    await Promise.all(sessions.map(close));
  }
}

async function throughput(
  request: Extract<LoadRequest, { type: 'throughput' }>,
): Promise<ThroughputReport> {
  const failures: Failures = { errors: 0, firstError: null };
  const opened = await Promise.allSettled(
    Array.from({ length: request.clients }, () => open(request.target)),
  );
  const sessions: Session[] = [];
  let connectFailures = 0;
  for (const o of opened) {
    if (o.status === 'fulfilled') sessions.push(o.value);
    else {
      connectFailures += 1;
      fail(failures, `initialize: ${message(o.reason)}`);
    }
  }
  const hist = newHistogram();
  let issued = 0;
  let calls = 0;
  const started = performance.now();
  const deadline = started + request.durationMs;
  let lastDone = started;
  const worker = async (session: Session) => {
    while (performance.now() < deadline && issued < request.maxCalls) {
      issued += 1;
      const ms = await call(session, failures);
      lastDone = performance.now();
      if (ms === null) continue;
      calls += 1;
      record(hist, ms);
    }
  };
  try {
    await Promise.all(
      sessions.flatMap((s) => Array.from({ length: request.inFlight }, () => worker(s))),
    );
  } finally {
    await Promise.all(sessions.map(close));
  }
  return { ...failures, calls, ms: lastDone - started, latency: hist, connectFailures };
}

async function manySessions(
  request: Extract<LoadRequest, { type: 'sessions' }>,
): Promise<SessionsReport> {
  const failures: Failures = { errors: 0, firstError: null };
  const init = newHistogram();
  const hist = newHistogram();
  const whole = newHistogram();
  let completed = 0;
  let calls = 0;
  const started = performance.now();
  const deadline = started + request.maxMs;
  let lastDone = started;
  const one = async () => {
    const t0 = performance.now();
    let session: Session;
    try {
      session = await open(request.target);
    } catch (err) {
      fail(failures, `initialize: ${message(err)}`);
      return;
    }
    record(init, performance.now() - t0);
    let ok = true;
    try {
      for (let i = 0; i < request.calls; i++) {
        if (performance.now() > deadline) {
          ok = false;
          fail(failures, `not done within ${request.maxMs} ms`);
          break;
        }
        const ms = await call(session, failures);
        if (ms === null) {
          ok = false;
          continue;
        }
        calls += 1;
        record(hist, ms);
      }
    } finally {
      await close(session);
    }
    lastDone = performance.now();
    record(whole, lastDone - t0);
    if (ok) completed += 1;
  };
  await Promise.all(Array.from({ length: request.sessions }, one));
  return {
    ...failures,
    sessions: request.sessions,
    completed,
    calls,
    ms: lastDone - started,
    initialize: init,
    latency: hist,
    session: whole,
  };
}

async function handle(request: LoadRequest): Promise<unknown> {
  switch (request.type) {
    case 'latency':
      return latency(request);
    case 'throughput':
      return throughput(request);
    case 'sessions':
      return manySessions(request);
    case 'stop':
      setImmediate(() => process.exit(0));
      return 'stopping';
  }
}

serveLoadRequests(handle);
