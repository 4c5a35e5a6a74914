import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
  tempDir,
} from '../../server/test/helpers.ts';
import {
  AgentWorker,
  isTerminalState,
  Orchestra,
  type Task,
  type TaskEvent,
} from '../src/index.ts';
import {
  collect,
  killScripts,
  rejection,
  type SpawnedScript,
  spawnScript,
  startRestartableServer,
} from './support.ts';

// AgentWorker against a real server, with real agents: each agent is a separate process
// (test/fixtures/agent.ts) that a test can SIGKILL, and the task input says what it does.

const AGENT_SCRIPT = fileURLToPath(new URL('./fixtures/agent.ts', import.meta.url));
/** Every wait for a task is bounded by this, generously: machines are shared. */
const WAIT_MS = 60_000;

/**
 * Short leases and backoffs, so that failures are noticed quickly. The lease is ten
 * heartbeats long, and the cancel grace three seconds, so that a busy machine does not end
 * one by accident or force a cancel that the agent confirms in time (forced: false).
 */
const FAST_SETTINGS = {
  ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
  ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '2000',
  ORCHESTRA_TASK_RETRY_BASE_MS: '50',
  ORCHESTRA_TASK_RETRY_MAX_MS: '200',
  ORCHESTRA_TASK_CANCEL_GRACE_MS: '3000',
  // Below the SDK's 1 MiB default: agents must follow the limit the server announces.
  ORCHESTRA_AGENT_MAX_FRAME_BYTES: '262144',
};

interface Agent {
  id: string;
  process: SpawnedScript;
}

/** Starts the fixture agent and waits until it registered. */
async function startAgent(
  url: string,
  apiKey: string,
  id: string,
  capabilities: string[],
  options: { concurrency?: number } = {},
): Promise<Agent> {
  const agent = spawnScript(AGENT_SCRIPT, {
    env: {
      ORCHESTRA_URL: url,
      ORCHESTRA_API_KEY: apiKey,
      AGENT_ID: id,
      AGENT_CAPABILITIES: capabilities.join(','),
      AGENT_CONCURRENCY: String(options.concurrency ?? 1),
    },
  });
  await agent.waitFor('its registration', (line) => line.event === 'registered');
  return { id, process: agent };
}

/** Resolves once `task_id` started on the agent (attempt `attempt`, when given). */
function started(agent: Agent, taskId: string, attempt?: number) {
  return agent.process.waitFor(
    `the start of ${taskId}`,
    (line) =>
      line.event === 'started' &&
      line.task_id === taskId &&
      (attempt === undefined || line.attempt === attempt),
  );
}

/** The `started` lines the agent printed for the task: one per attempt it ran. */
function startsOf(agent: Agent, taskId: string) {
  return agent.process.lines().filter((l) => l.event === 'started' && l.task_id === taskId);
}

/** Every event of an ended task. */
async function eventsOf(client: Orchestra, taskId: string): Promise<TaskEvent[]> {
  const items = await collect(client.tasks.events(taskId));
  const events = items.filter((i): i is TaskEvent => 'offset' in i);
  assert.equal(events.length, items.length, 'no gap in a fresh stream');
  return events;
}

const types = (events: TaskEvent[]) => events.map((e) => e.type);
const dataOf = (event: TaskEvent | undefined) => event?.data as Record<string, any>;

/** Offsets 1, 2, 3…: strictly increasing, without holes or duplicates. */
function assertConsecutive(events: TaskEvent[]): void {
  assert.deepEqual(
    events.map((e) => e.offset),
    events.map((_, i) => i + 1),
  );
}

/**
 * The request comes before the end, which is the last event. (The agent's accept may be
 * stored after the request: `task.running` can come in between.)
 */
function assertCancelledLast(events: TaskEvent[]): void {
  assert.equal(events.at(-1)?.type, 'task.cancelled');
  assert.equal(types(events).filter((t) => t === 'task.cancel_requested').length, 1);
  assert.ok(types(events).indexOf('task.cancel_requested') < events.length - 1);
}

async function waitForEnd(client: Orchestra, taskId: string): Promise<Task> {
  const task = await client.tasks.wait(taskId, { timeoutMs: WAIT_MS });
  assert.ok(isTerminalState(task.state), `task ${taskId} still ${task.state} after ${WAIT_MS} ms`);
  return task;
}

/** Polls `read` until `done` holds for what it resolves to; bounded by WAIT_MS. */
async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) {
      assert.fail(`${what}: still ${JSON.stringify(value)} after ${WAIT_MS} ms`);
    }
    await sleep(50);
  }
}

for (const store of STORE_VARIANTS) {
  describe(`AgentWorker with real agents (${store})`, () => {
    let server: TestServer;
    let admin: Orchestra;
    let agentKey: string;
    let counter = 0;
    /** A name no other test uses, for capabilities and agent ids. */
    const unique = (name: string) => `${name}-${++counter}`;
    const agent = (name: string, capabilities: string[], options?: { concurrency?: number }) =>
      startAgent(server.url, agentKey, unique(name), capabilities, options);

    before(async () => {
      server = await startTestServer({ store, env: FAST_SETTINGS });
      admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
      agentKey = (await admin.apiKeys.create({ name: 'test-agents', role: 'agent' })).secret;
    });
    afterEach(async () => {
      await killScripts();
    });
    after(async () => {
      await killScripts();
      await server.stop();
    });

    test('a task runs end to end; its stream holds each step once, in order', async () => {
      const capability = unique('e2e');
      const runner = await agent('e2e', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'progress', steps: 3, delay_ms: 10 },
      });
      assert.equal(task.state, 'queued');

      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'succeeded');
      assert.deepEqual(done.result, { steps: 3, agent_id: runner.id, attempt: 1 });
      assert.deepEqual([done.attempt, done.agent_id, done.error], [1, runner.id, null]);
      assert.ok(done.finished_at);

      const events = await eventsOf(admin, task.id);
      assertConsecutive(events);
      assert.deepEqual(types(events), [
        'task.queued',
        'task.assigned',
        'task.running',
        ...['task.progress', 'task.output', 'task.progress', 'task.output'],
        ...['task.progress', 'task.output'],
        'task.succeeded',
      ]);
      assert.deepEqual(dataOf(events[1]), { state: 'assigned', attempt: 1, agent_id: runner.id });
      assert.deepEqual(dataOf(events[3]), {
        attempt: 1,
        seq: 1,
        current: 1,
        total: 3,
        message: 'step 1',
      });
      assert.deepEqual(dataOf(events[8]), { attempt: 1, seq: 6, data: { step: 3 } });
      const succeeded = dataOf(events.at(-1));
      assert.deepEqual(
        [succeeded.state, succeeded.attempt, succeeded.agent_id],
        ['succeeded', 1, runner.id],
      );
      assert.equal(typeof succeeded.duration_ms, 'number');
    });

    test('tasks queued before an agent connects all run on it, none lost to its registration', async () => {
      // Assignments sent right after `registered` can be read with it, in one chunk: the
      // worker once dropped them as "not resumed", and they hung until their timeout. The
      // worker runs in this process, next to the server, so that the chunk is likely.
      const capability = unique('backlog');
      const backlog = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          admin.tasks.create({
            capabilities: [capability],
            input: { op: 'echo', value: i },
            timeout_ms: 30_000,
          }),
        ),
      );
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: unique('backlog'),
        capabilities: [capability],
        concurrency: 50,
        handleSignals: false,
        handler: (input) => input,
      });
      await worker.start();
      try {
        for (const task of backlog) {
          // A lost task would time out; a retry (a lease lost on a busy machine) is fine.
          const done = await waitForEnd(admin, task.id);
          assert.equal(done.state, 'succeeded', `task ${task.id}: ${JSON.stringify(done.error)}`);
        }
      } finally {
        await worker.stop({ drain: false });
      }
    });

    test('a task whose agent is SIGKILLed mid-task completes on another agent, attempt 2', async () => {
      const capability = unique('failover');
      const first = await agent('failover-first', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        // Sleeps for ever on the first attempt, returns at once on the next.
        input: { op: 'sleep', ms: 600_000, retry_ms: 0 },
      });
      await started(first, task.id, 1);
      const second = await agent('failover-second', [capability]);
      await first.process.kill('SIGKILL');

      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'succeeded');
      assert.deepEqual([done.attempt, done.agent_id], [2, second.id]);
      assert.deepEqual(done.result, { slept_ms: 0, agent_id: second.id, attempt: 2 });
      assert.equal(startsOf(second, task.id).length, 1);

      const events = await eventsOf(admin, task.id);
      assertConsecutive(events);
      const failed = events.filter((e) => e.type === 'task.attempt_failed');
      assert.equal(failed.length, 1);
      assert.equal(dataOf(failed[0]).attempt, 1);
      assert.equal(dataOf(failed[0]).agent_id, first.id);
      assert.equal(dataOf(failed[0]).error.code, 'LEASE_EXPIRED');
      assert.deepEqual(
        events
          .filter((e) => e.type === 'task.assigned')
          .map((e) => [dataOf(e).attempt, dataOf(e).agent_id]),
        [
          [1, first.id],
          [2, second.id],
        ],
      );
    });

    test('cancel while queued ends the task at once', async () => {
      const task = await admin.tasks.create({
        capabilities: [unique('nobody-has-this')],
        input: { op: 'echo' },
      });
      const cancelled = await admin.tasks.cancel(task.id);
      assert.equal(cancelled.state, 'cancelled');
      const events = await eventsOf(admin, task.id);
      assert.deepEqual(types(events), ['task.queued', 'task.cancelled']);
    });

    test('cancel while running: the handler stops on its signal, forced:false; the agent takes the next task', async () => {
      const capability = unique('cancel-running');
      const runner = await agent('cancel-running', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'sleep', ms: 600_000 },
      });
      await started(runner, task.id);
      const requested = await admin.tasks.cancel(task.id);
      assert.ok(['assigned', 'running'].includes(requested.state));
      assert.ok(requested.cancel_requested_at);

      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'cancelled');
      assert.equal(done.attempt, 1);
      await runner.process.waitFor(
        'the handler ending',
        (l) => l.event === 'finished' && l.task_id === task.id && l.ok === false,
      );
      const events = await eventsOf(admin, task.id);
      assertConsecutive(events);
      assertCancelledLast(events);
      assert.deepEqual(
        [dataOf(events.at(-1)).forced, dataOf(events.at(-1)).by],
        [false, 'request'],
      );

      // Its only slot is free again.
      const next = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'echo', value: 'next' },
      });
      const nextDone = await waitForEnd(admin, next.id);
      assert.deepEqual([nextDone.state, nextDone.agent_id], ['succeeded', runner.id]);
    });

    test('cancel while streaming stops the stream; the cancelled event is the last one', async () => {
      const capability = unique('cancel-streaming');
      await agent('cancel-streaming', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'progress', steps: 100_000, delay_ms: 20 },
      });
      const seen: TaskEvent[] = [];
      for await (const item of admin.tasks.events(task.id)) {
        assert.ok('offset' in item);
        seen.push(item);
        if (item.type === 'task.progress' && dataOf(item).current === 3) {
          await admin.tasks.cancel(task.id);
        }
      }
      assertConsecutive(seen);
      const at = types(seen).indexOf('task.cancel_requested');
      assert.ok(at > 0, 'a cancel_requested event');
      assert.ok(
        seen.slice(0, at).filter((e) => e.type === 'task.progress').length >= 3,
        'progress streamed before the cancellation',
      );
      assert.equal(seen.at(-1)?.type, 'task.cancelled');
      assert.equal(dataOf(seen.at(-1)).forced, false);
      assert.equal((await admin.tasks.get(task.id)).state, 'cancelled');
    });

    test('cancel of a handler that ignores its signal ends cancelled, forced:true, after the grace period; the slot is free again', async () => {
      const capability = unique('cancel-hang');
      const runner = await agent('cancel-hang', [capability]);
      const task = await admin.tasks.create({ capabilities: [capability], input: { op: 'hang' } });
      await started(runner, task.id);
      await admin.tasks.cancel(task.id);

      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'cancelled');
      const events = await eventsOf(admin, task.id);
      assertConsecutive(events);
      assertCancelledLast(events);
      assert.deepEqual([dataOf(events.at(-1)).forced, dataOf(events.at(-1)).by], [true, 'request']);
      assert.ok(
        !runner.process.lines().some((l) => l.event === 'finished' && l.task_id === task.id),
        'the handler never ended',
      );

      // Its only slot is free again, on both sides, although the handler still hangs.
      const next = await admin.tasks.create({ capabilities: [capability], input: { op: 'echo' } });
      const nextDone = await waitForEnd(admin, next.id);
      assert.deepEqual([nextDone.state, nextDone.agent_id], ['succeeded', runner.id]);
    });

    test('a handler that ignores its signal stops counting against the worker after the grace period', async () => {
      const capability = unique('ignores-signal');
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: unique('ignores-signal'),
        capabilities: [capability],
        handleSignals: false,
        handler: () => new Promise(() => {}),
      });
      await worker.start();
      try {
        const task = await admin.tasks.create({ capabilities: [capability] });
        await until(
          'the task running',
          () => admin.tasks.get(task.id),
          (t) => t.state === 'running',
        );
        assert.equal(worker.running, 1);
        await admin.tasks.cancel(task.id);
        assert.equal((await waitForEnd(admin, task.id)).state, 'cancelled');
        await until(
          'a free slot',
          async () => worker.running,
          (running) => running === 0,
        );
      } finally {
        await worker.stop({ drain: false });
      }
    });

    test('a retryable failure is retried after a backoff, then the task is dead', async () => {
      const capability = unique('flaky');
      const runner = await agent('flaky', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'fail', retryable: true, code: 'FLAKY', message: 'try again' },
        max_attempts: 3,
      });
      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'dead');
      assert.equal(done.attempt, 3);
      assert.deepEqual(done.error, { code: 'FLAKY', message: 'try again', retryable: true });
      assert.deepEqual(
        startsOf(runner, task.id).map((l) => l.attempt),
        [1, 2, 3],
      );

      const events = await eventsOf(admin, task.id);
      assertConsecutive(events);
      assert.deepEqual(
        events.filter((e) => e.type === 'task.attempt_failed').map((e) => dataOf(e).attempt),
        [1, 2, 3],
      );
      // After each retryable failure but the last, the task waits in the queue until its
      // retry_at, and is only assigned again from then on.
      const requeued = events.filter((e) => e.type === 'task.queued' && dataOf(e).retry_at);
      assert.equal(requeued.length, 2);
      for (const queued of requeued) {
        const next = events.find((e) => e.offset > queued.offset && e.type === 'task.assigned');
        assert.ok(next, 'assigned again');
        assert.ok(Date.parse(next.time) >= Date.parse(dataOf(queued).retry_at));
      }
      assert.equal(events.at(-1)?.type, 'task.dead');
    });

    test('a non-retryable failure ends the task failed with the error code, after one attempt', async () => {
      const capability = unique('broken');
      const runner = await agent('broken', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'fail', retryable: false, code: 'BAD_INPUT', message: 'no such file' },
      });
      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'failed');
      assert.equal(done.attempt, 1);
      assert.deepEqual(done.error, {
        code: 'BAD_INPUT',
        message: 'no such file',
        retryable: false,
      });
      assert.equal(startsOf(runner, task.id).length, 1);
      const events = await eventsOf(admin, task.id);
      assert.deepEqual(types(events).slice(-2), ['task.attempt_failed', 'task.failed']);
    });

    test('a task past its timeout_ms ends timed_out; the agent stops it and takes the next task', async () => {
      const capability = unique('slow');
      const runner = await agent('slow', [capability]);
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'sleep', ms: 600_000 },
        timeout_ms: 1000,
      });
      const done = await waitForEnd(admin, task.id);
      assert.equal(done.state, 'timed_out');
      assert.equal(done.error?.code, 'TIMEOUT');
      await runner.process.waitFor(
        'the handler stopping',
        (l) => l.event === 'finished' && l.task_id === task.id && l.ok === false,
      );
      const next = await admin.tasks.create({ capabilities: [capability], input: { op: 'echo' } });
      const nextDone = await waitForEnd(admin, next.id);
      assert.deepEqual([nextDone.state, nextDone.agent_id], ['succeeded', runner.id]);
    });

    test('the same idempotency key twice gives one task, run once', async () => {
      const capability = unique('idempotent');
      const runner = await agent('idempotent', [capability]);
      const input = {
        capabilities: [capability],
        input: { op: 'echo', value: 42 },
        idempotency_key: unique('order'),
      };
      const [a, b] = await Promise.all([
        admin.tasks.createDetailed(input),
        admin.tasks.createDetailed(input),
      ]);
      assert.equal(a.task.id, b.task.id);
      assert.deepEqual([a.replayed, b.replayed].sort(), [false, true]);
      const done = await waitForEnd(admin, a.task.id);
      assert.deepEqual([done.state, done.attempt], ['succeeded', 1]);
      assert.deepEqual(done.result, { value: 42, agent_id: runner.id, attempt: 1 });

      const again = await admin.tasks.createDetailed(input);
      assert.deepEqual(
        [again.task.id, again.replayed, again.task.state],
        [a.task.id, true, 'succeeded'],
      );
      assert.equal(startsOf(runner, a.task.id).length, 1);
      const events = await eventsOf(admin, a.task.id);
      assert.equal(types(events).filter((t) => t === 'task.assigned').length, 1);
      assert.equal(types(events).filter((t) => t === 'task.succeeded').length, 1);
    });

    test('a result or event too large for a frame fails the task, and the agent stays connected', async () => {
      const capability = unique('big');
      const runner = await agent('big', [capability]);
      // The server takes frames of 256 KiB here (it says so in `registered`); it would close
      // the connection on a larger one, and the agent would send it again after reconnecting.
      const result = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'big', bytes: 500_000 },
      });
      const resultDone = await waitForEnd(admin, result.id);
      assert.deepEqual([resultDone.state, resultDone.attempt], ['failed', 1]);
      assert.deepEqual(
        [resultDone.error?.code, resultDone.error?.retryable],
        ['OUTPUT_TOO_LARGE', false],
      );
      assert.match(resultDone.error?.message ?? '', /maxFrameBytes/);

      const event = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'big', bytes: 500_000, event: true },
        max_attempts: 1,
      });
      const eventDone = await waitForEnd(admin, event.id);
      assert.equal(eventDone.state, 'dead');
      assert.match(eventDone.error?.message ?? '', /output event takes \d+ bytes/);
      assert.ok(!runner.process.lines().some((l) => l.event === 'disconnected'));

      const next = await admin.tasks.create({ capabilities: [capability], input: { op: 'echo' } });
      assert.equal((await waitForEnd(admin, next.id)).state, 'succeeded');
    });

    test('a result or failure the server refuses fails the task at once, instead of at its timeout', async () => {
      const capability = unique('refused');
      await agent('refused', [capability]);
      const deep = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'deep', depth: 100 },
      });
      const deepDone = await waitForEnd(admin, deep.id);
      assert.deepEqual([deepDone.state, deepDone.attempt], ['failed', 1]);
      assert.deepEqual(
        [deepDone.error?.code, deepDone.error?.retryable],
        ['OUTPUT_INVALID', false],
      );
      assert.match(deepDone.error?.message ?? '', /refused the result: .*deeper than 64/);

      // Error codes are letters, digits and `_.:-`: this failure report is refused.
      const badCode = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'fail', code: 'not a code', retryable: false },
      });
      const badCodeDone = await waitForEnd(admin, badCode.id);
      assert.deepEqual([badCodeDone.state, badCodeDone.attempt], ['failed', 1]);
      assert.equal(badCodeDone.error?.code, 'AGENT_ERROR');
      assert.match(badCodeDone.error?.message ?? '', /refused the failure report: .*code/);
    });

    test('revoking the key of a connected agent disconnects it for good', async () => {
      const key = await admin.apiKeys.create({ name: unique('revoked-later'), role: 'agent' });
      const revoked = await startAgent(server.url, key.secret, unique('revoked-later'), ['x']);
      await admin.apiKeys.revoke(key.id);
      const error = await revoked.process.waitFor('an error', (l) => l.event === 'error');
      assert.equal(error.code, 'AGENT_DISCONNECTED');
      assert.match(error.message, /credential is no longer valid/);
      // It stops instead of reconnecting: nothing keeps the process alive.
      assert.equal(await revoked.process.exited(), 0);
      assert.equal(revoked.process.lines().filter((l) => l.event === 'registered').length, 1);
      // The server records the disconnect after closing the connection.
      await until(
        'the agent offline',
        () => admin.agents.get(revoked.id),
        (a) => a.status === 'offline',
      );
    });

    test('SIGTERM drains an agent: it finishes its task, takes no new one, then exits', async () => {
      const capability = unique('sigterm');
      const gate = tempDir('orchestra-agent-gate-');
      try {
        const runner = await agent('sigterm', [capability], { concurrency: 2 });
        const running = await admin.tasks.create({
          capabilities: [capability],
          input: { op: 'gate', file: join(gate.path, 'open') },
        });
        await started(runner, running.id);
        runner.process.child.kill('SIGTERM');
        await until(
          'the agent draining',
          () => admin.agents.get(runner.id),
          (a) => a.status === 'draining',
        );
        const later = await admin.tasks.create({
          capabilities: [capability],
          input: { op: 'echo' },
        });
        writeFileSync(join(gate.path, 'open'), '');
        assert.equal((await waitForEnd(admin, running.id)).state, 'succeeded');
        assert.equal(await runner.process.exited(), 0);
        assert.ok(runner.process.lines().some((l) => l.event === 'stopped'));
        assert.equal(startsOf(runner, later.id).length, 0);
        assert.equal((await admin.tasks.get(later.id)).state, 'queued');
        await admin.tasks.cancel(later.id);
      } finally {
        gate.remove();
      }
    });

    test('GET /v1/agents: online, busy, offline after SIGKILL; drain; delete; other tenants see none of it', async () => {
      const capability = unique('pool');
      const solo = unique('pool-solo');
      const busy = await agent('pool-busy', [capability, solo], { concurrency: 1 });
      const idle = await agent('pool-idle', [capability], { concurrency: 2 });
      /** Both agents, as the list shows them. */
      const listed = async () => {
        const { items } = await admin.agents.list({ capability });
        const find = (id: string) => {
          const found = items.find((a) => a.id === id);
          assert.ok(found, `${id} is listed`);
          return found;
        };
        return [find(busy.id), find(idle.id)] as const;
      };

      const held = await admin.tasks.create({
        capabilities: [solo],
        input: { op: 'sleep', ms: 600_000 },
      });
      await started(busy, held.id);
      const [busyView, idleView] = await listed();
      assert.deepEqual(
        [busyView.id, busyView.status, busyView.in_flight, busyView.max_concurrency],
        [busy.id, 'busy', [held.id], 1],
      );
      assert.deepEqual(busyView.capabilities, [capability, solo]);
      assert.equal(busyView.sdk?.name, '@orchestra/sdk');
      assert.ok(busyView.lease_expires_at);
      assert.deepEqual(
        [idleView.id, idleView.status, idleView.in_flight, idleView.capabilities],
        [idle.id, 'online', [], [capability]],
      );

      // SIGKILL: offline, and once its lease ended it holds nothing (the task is queued again).
      await busy.process.kill('SIGKILL');
      const gone = await until(
        'the killed agent',
        () => admin.agents.get(busy.id),
        (a) => a.status === 'offline' && a.in_flight.length === 0,
      );
      assert.equal(gone.node_id, null);
      const requeued = await admin.tasks.get(held.id);
      assert.deepEqual([requeued.state, requeued.error?.code], ['queued', 'LEASE_EXPIRED']);
      await admin.tasks.cancel(held.id);

      // Drained: it stays connected and takes no new task; a newcomer gets it.
      const drained = await admin.agents.drain(idle.id);
      assert.equal(drained.status, 'draining');
      const task = await admin.tasks.create({
        capabilities: [capability],
        input: { op: 'echo', value: 'after drain' },
      });
      const newcomer = await agent('pool-newcomer', [capability]);
      const done = await waitForEnd(admin, task.id);
      assert.deepEqual([done.state, done.agent_id], ['succeeded', newcomer.id]);
      assert.equal(startsOf(idle, task.id).length, 0);
      assert.equal((await admin.agents.get(idle.id)).status, 'draining');

      // Only an agent that is gone and holds nothing can be forgotten.
      const connected = await rejection(() => admin.agents.delete(idle.id));
      assert.deepEqual([connected.code, connected.status], ['AGENT_CONNECTED', 409]);
      await admin.agents.delete(busy.id);
      assert.equal((await rejection(() => admin.agents.get(busy.id))).code, 'AGENT_NOT_FOUND');

      // Another tenant: none of these agents or tasks, and an agent of its own with the
      // same id as ours does not replace ours.
      const { tenant, admin_key } = await admin.tenants.create({ id: unique('agents-other') });
      const other = new Orchestra({ url: server.url, apiKey: admin_key.secret });
      assert.deepEqual((await other.agents.list()).items, []);
      for (const call of [
        () => other.agents.get(idle.id),
        () => other.agents.drain(idle.id),
        () => other.agents.delete(busy.id),
      ]) {
        assert.equal((await rejection(call)).code, 'AGENT_NOT_FOUND');
      }
      assert.equal((await rejection(() => other.tasks.get(task.id))).code, 'TASK_NOT_FOUND');
      assert.deepEqual((await other.tasks.list()).items, []);

      const otherKey = (await other.apiKeys.create({ name: 'other-agent', role: 'agent' })).secret;
      const twin = await startAgent(server.url, otherKey, newcomer.id, [capability]);
      const theirs = await other.tasks.create({
        capabilities: [capability],
        input: { op: 'echo', value: 'theirs' },
      });
      const theirsDone = await waitForEnd(other, theirs.id);
      assert.deepEqual([theirsDone.state, theirsDone.tenant_id], ['succeeded', tenant.id]);
      assert.equal(startsOf(twin, theirs.id).length, 1);
      assert.equal(startsOf(newcomer, theirs.id).length, 0);
      const twinView = (await other.agents.list()).items;
      assert.deepEqual(
        twinView.map((a) => [a.id, a.tenant_id]),
        [[newcomer.id, tenant.id]],
      );
      assert.equal((await admin.agents.get(newcomer.id)).status, 'online');
      assert.ok(!newcomer.process.lines().some((l) => l.event === 'disconnected'));
    });

    test('start() rejects with an OrchestraError for an unknown, a revoked and a viewer key', async () => {
      const worker = (apiKey: string) =>
        new AgentWorker({
          url: server.url,
          apiKey,
          agentId: 'never-registered',
          capabilities: ['x'],
          handleSignals: false,
          handler: () => null,
        });
      const unknown = await rejection(() => worker('ork_no_such_key').start());
      assert.deepEqual([unknown.code, unknown.status], ['INVALID_API_KEY', 401]);

      const revokedKey = await admin.apiKeys.create({ name: 'revoked-agent', role: 'agent' });
      await admin.apiKeys.revoke(revokedKey.id);
      const revoked = await rejection(() => worker(revokedKey.secret).start());
      assert.deepEqual([revoked.code, revoked.status], ['API_KEY_REVOKED', 401]);

      const viewerKey = await admin.apiKeys.create({ name: 'viewer', role: 'viewer' });
      const viewer = await rejection(() => worker(viewerKey.secret).start());
      assert.deepEqual([viewer.code, viewer.status], ['PERMISSION_DENIED', 403]);
      assert.match(viewer.message, /viewer/);

      const missing = await rejection(() => admin.agents.get('never-registered'));
      assert.equal(missing.code, 'AGENT_NOT_FOUND');
    });
  });

  describe(`AgentWorker across a server restart (${store})`, () => {
    test('an agent reconnects to the restarted server and finishes its tasks, each once', async () => {
      const server = await startRestartableServer(store, {
        ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
        // The lease outlasts the restart, so that the agent's tasks stay its own.
        ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '120000',
      });
      try {
        const { url } = server;
        const admin = new Orchestra({ url, apiKey: server.adminKey });
        const key = (await admin.apiKeys.create({ name: 'restart', role: 'agent' })).secret;
        const runner = await startAgent(url, key, 'restart-agent', ['restart'], {
          concurrency: 2,
        });
        // One task ends while the server is down, the other after it is back.
        const gateDown = join(server.dataDir, 'gate-down');
        const gateUp = join(server.dataDir, 'gate-up');
        const duringOutage = await admin.tasks.create({
          capabilities: ['restart'],
          input: { op: 'gate', file: gateDown },
        });
        const afterOutage = await admin.tasks.create({
          capabilities: ['restart'],
          input: { op: 'gate', file: gateUp },
        });
        for (const task of [duringOutage, afterOutage]) {
          // The first progress event is stored before the server dies.
          for await (const item of admin.tasks.events(task.id)) {
            if (item.type === 'task.progress') break;
          }
        }

        await server.crash();
        const printedBefore = runner.process.lines().length;
        writeFileSync(gateDown, '');
        await runner.process.waitFor(
          'the end of the first task while the server is down',
          (l) => l.event === 'finished' && l.task_id === duringOutage.id && l.ok === true,
        );
        await server.restart();
        const back = await runner.process.waitFor(
          'a registration with the restarted server',
          (l) => l.event === 'registered',
          printedBefore,
        );
        assert.deepEqual([back.resumed, back.lost], [2, 0]);
        writeFileSync(gateUp, '');

        for (const task of [duringOutage, afterOutage]) {
          const done = await waitForEnd(admin, task.id);
          assert.equal(done.state, 'succeeded');
          assert.deepEqual([done.attempt, done.agent_id], [1, runner.id]);
          assert.deepEqual(done.result, { gate: 'opened', agent_id: runner.id, attempt: 1 });
          assert.equal(startsOf(runner, task.id).length, 1);
          const events = await eventsOf(admin, task.id);
          assertConsecutive(events);
          assert.deepEqual(types(events), [
            'task.queued',
            'task.assigned',
            'task.running',
            'task.progress',
            'task.output',
            'task.succeeded',
          ]);
          assert.deepEqual(dataOf(events[4]), { attempt: 1, seq: 2, data: 'gate opened' });
        }
      } finally {
        await killScripts();
        await server.remove();
      }
    });
  });
}

test('a worker needs a URL, or a non-empty list of them', () => {
  const options = { apiKey: 'ork_x', agentId: 'a', capabilities: [], handler: async () => null };
  assert.throws(() => new AgentWorker({ ...options, url: [] }), TypeError);
  assert.throws(() => new AgentWorker({ ...options, url: ['http://a', ''] }), TypeError);
  assert.doesNotThrow(() => new AgentWorker({ ...options, url: ['http://a', 'http://b'] }));
});
