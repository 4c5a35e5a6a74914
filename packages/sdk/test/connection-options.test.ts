import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closedPort } from '../../server/test/helpers.ts';
import {
  AgentWorker,
  ConfigClient,
  type ConnectionState,
  type ConnectionStatus,
  Orchestra,
  RealtimeClient,
  type RealtimeState,
  ServiceClient,
  type SessionStreamItem,
  type WorkerStatus,
} from '../src/index.ts';
import { type RestartableServer, startRestartableServer } from './support.ts';

// Every client of the SDK sits on one transport and takes the same options: `url` (one or
// several), `apiKey`, `reconnect` and `onStatus`. Here all five share a list of URLs whose
// first node is down, against a real `orchestra start` that is killed and restarted under
// them: each passes over the dead node, reports the outage and the recovery through
// `onStatus`, and streams resume. The names these options replace keep working.

/** Generous: a restart on a busy 2-core machine can take a while. */
const GRACE_MS = 90_000;
const FAST = { initialDelayMs: 50, maxDelayMs: 500 };

async function until<T>(what: string, probe: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + GRACE_MS;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${GRACE_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The states reported, without repeats in a row (a retry reports its state again). */
function statesOf(statuses: readonly { state: ConnectionState }[]): ConnectionState[] {
  return statuses.map((s) => s.state).filter((state, i, all) => i === 0 || all[i - 1] !== state);
}

/** Whether `states` holds `wanted` in this order, other states allowed between. */
function inOrder<T>(states: readonly T[], wanted: readonly T[]): boolean {
  let next = 0;
  for (const state of states) if (state === wanted[next]) next += 1;
  return next === wanted.length;
}

describe('SDK clients share one transport and one options vocabulary', () => {
  let server: RestartableServer;
  let down: string;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    server = await startRestartableServer('sqlite', {});
    down = `http://127.0.0.1:${await closedPort()}`;
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await server.remove();
  });

  test('the old option names still work, mapped to the new ones', async () => {
    const states: RealtimeState[] = [];
    const rt = new RealtimeClient({
      url: [down, server.url],
      token: async () => server.adminKey,
      reconnectDelayMs: { min: 50, max: 500 },
      onStateChange: (state) => states.push(state),
    });
    cleanups.push(() => rt.close());
    await rt.connect();
    assert.equal(rt.url, server.url);
    assert.equal((await rt.publish('sdk.old-names', { n: 1 })).offset, 1);
    rt.close();
    assert.deepEqual(states, ['connected', 'closed']);

    // New names win over old ones given alongside.
    const both = new RealtimeClient({
      url: server.url,
      apiKey: server.adminKey,
      token: 'ork_not-a-key',
    });
    cleanups.push(() => both.close());
    await both.connect();
    both.close();

    assert.throws(() => new RealtimeClient({ url: server.url }), TypeError);
    assert.throws(
      () => new Orchestra({ url: server.url, reconnect: { initialDelayMs: -1 } }),
      RangeError,
    );
  });

  test('with a dead first node, all five clients connect, then report the outage and the recovery of a restart; streams resume', async () => {
    const statuses = {
      orchestra: [] as ConnectionStatus[],
      worker: [] as WorkerStatus[],
      realtime: [] as ConnectionStatus[],
      config: [] as ConnectionStatus[],
      services: [] as ConnectionStatus[],
    };
    const legacy = { realtime: [] as RealtimeState[], stale: [] as boolean[] };
    const urls = [down, server.url];
    let keyReads = 0;

    const orchestra = new Orchestra({
      url: urls,
      apiKey: () => {
        keyReads += 1;
        return server.adminKey;
      },
      reconnect: FAST,
      onStatus: (s) => statuses.orchestra.push(s),
    });
    assert.equal((await orchestra.whoami()).role, 'admin');
    assert.equal(orchestra.url, server.url, 'the node that answered is kept');
    assert.ok(keyReads >= 1, 'a function apiKey is called for the request');

    const ran: string[] = [];
    const worker = new AgentWorker({
      url: urls,
      apiKey: server.adminKey,
      reconnect: FAST,
      onStatus: (s) => statuses.worker.push(s),
      agentId: 'transport-agent',
      capabilities: ['transport-test'],
      handleSignals: false,
      handler: async (input) => {
        ran.push(String((input as { n: number }).n));
        return input;
      },
    });
    cleanups.push(() => worker.stop({ drain: false }));
    await worker.start();

    const realtime = new RealtimeClient({
      url: urls,
      apiKey: server.adminKey,
      reconnect: FAST,
      onStatus: (s) => statuses.realtime.push(s),
    });
    cleanups.push(() => realtime.close());
    const topic = await realtime.subscribe<number>('sdk.transport');

    // The old callbacks, beside the new ones, on clients of their own.
    const legacyRealtime = new RealtimeClient({
      url: urls,
      token: server.adminKey,
      reconnectDelayMs: { min: 50, max: 500 },
      onStateChange: (state) => legacy.realtime.push(state),
    });
    cleanups.push(() => legacyRealtime.close());
    await legacyRealtime.connect();

    await orchestra.config.set('transport/flag', 1);
    const config = new ConfigClient({
      url: urls,
      apiKey: server.adminKey,
      prefix: 'transport/',
      reconnect: FAST,
      onStatus: (s) => statuses.config.push(s),
      onStaleChange: (stale) => legacy.stale.push(stale),
    });
    cleanups.push(() => config.close());
    await config.start();
    assert.equal(config.get('transport/flag'), 1);

    const services = new ServiceClient({
      url: urls,
      apiKey: server.adminKey,
      reconnect: FAST,
      onStatus: (s) => statuses.services.push(s),
    });
    const live = await services.live('transport-svc');
    cleanups.push(() => live.close());

    // A session's stream, followed across the restart.
    const session = await orchestra.sessions.create();
    const stop = new AbortController();
    cleanups.push(() => stop.abort());
    const items: SessionStreamItem[] = [];
    const following = (async () => {
      for await (const item of orchestra.sessions.events(session.id, {
        signal: stop.signal,
        maxReconnects: Number.POSITIVE_INFINITY,
      })) {
        items.push(item);
      }
    })().catch((err: unknown) => {
      if (!stop.signal.aborted) throw err;
    });
    const first = await orchestra.tasks.create({
      session_id: session.id,
      capabilities: ['transport-test'],
      input: { n: 1 },
    });
    await orchestra.tasks.wait(first.id, { timeoutMs: GRACE_MS });
    const before = await until('the first task’s events', () =>
      items.some((i) => 'data' in i && i.data.task_id === first.id && i.type === 'task.succeeded')
        ? items.length
        : undefined,
    );

    for (const [name, list] of Object.entries(statuses)) {
      assert.equal(list.at(-1)?.state, 'connected', `${name} is connected`);
      assert.equal(list.at(-1)?.url, server.url, `${name} reports the node it uses`);
    }
    assert.ok(
      statuses.worker.some((s) => s.type === 'registered' && s.state === 'connected'),
      'the worker says it registered, with the shared state',
    );

    await server.crash();
    // Each client notices on its own: the sockets close, the streams and watches break.
    // The REST client notices through its session stream.
    for (const [name, list] of Object.entries(statuses)) {
      await until(`${name} reports reconnecting`, () =>
        list.some((s) => s.state === 'reconnecting'),
      );
    }
    const retry = statuses.worker.find((s) => s.type === 'disconnected');
    assert.ok(
      retry?.type === 'disconnected' && retry.retryInMs >= 0 && retry.state === 'reconnecting',
    );
    assert.ok(
      statuses.orchestra.some((s) => s.state === 'reconnecting' && s.retryInMs !== undefined),
      'a resuming stream says when it tries again',
    );
    await server.restart();

    for (const [name, list] of Object.entries(statuses)) {
      await until(`${name} is connected again`, () =>
        inOrder(statesOf(list), ['connected', 'reconnecting', 'connected']),
      );
    }
    await until('the old realtime callback saw the recovery', () =>
      inOrder(legacy.realtime, ['connected', 'reconnecting', 'connected']),
    );
    await until('onStaleChange saw the center go and come back', () =>
      inOrder(legacy.stale, [true, false]),
    );

    // The session stream resumed after its last offset: the next task's events follow on,
    // nothing repeated, nothing skipped.
    const second = await orchestra.tasks.create({
      session_id: session.id,
      capabilities: ['transport-test'],
      input: { n: 2 },
    });
    await orchestra.tasks.wait(second.id, { timeoutMs: GRACE_MS });
    await until('the second task’s events on the resumed stream', () =>
      items.some((i) => 'data' in i && i.data.task_id === second.id && i.type === 'task.succeeded'),
    );
    assert.ok(items.length > before);
    const offsets = items.map((i) => ('offset' in i ? i.offset : -1));
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => i + 1),
      'consecutive offsets from 1',
    );
    assert.deepEqual(ran, ['1', '2']);

    // The realtime subscription resumed too.
    await orchestra.topics.publish('sdk.transport', 7);
    for await (const message of topic) {
      assert.equal(message.data, 7);
      break;
    }
    await orchestra.config.set('transport/flag', 2);
    await until('the config client follows again', () => config.get('transport/flag') === 2);

    stop.abort();
    await following;
    await worker.stop({ drain: false });
    realtime.close();
    legacyRealtime.close();
    await config.close();
    assert.equal(statuses.worker.at(-1)?.type, 'stopped');
    for (const name of ['worker', 'realtime', 'config'] as const) {
      assert.equal(statuses[name].at(-1)?.state, 'closed', `${name} reports closed`);
    }
    assert.equal(legacy.realtime.at(-1), 'closed');
  });
});
