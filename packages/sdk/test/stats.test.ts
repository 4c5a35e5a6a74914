import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { AgentWorker, Orchestra, TaskFailedError } from '../src/index.ts';
import { eventually, rejection } from './support.ts';

// `orchestra.stats()` (GET /v1/stats) against a real server, in a tenant of its own so that
// every count is exact, with real AgentWorkers running the tasks.

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

for (const store of STORE_VARIANTS) {
  describe(`orchestra.stats on ${store}`, () => {
    let server: TestServer;
    let system: Orchestra;
    let admin: Orchestra;
    let viewer: Orchestra;
    let agentKey: string;
    const workers: AgentWorker[] = [];
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });

    before(async () => {
      server = await startTestServer({ store });
      system = new Orchestra({ url: server.url, apiKey: server.adminKey });
      const { admin_key } = await system.tenants.create({ id: 'stats-tenant' });
      admin = new Orchestra({ url: server.url, apiKey: admin_key.secret });
      agentKey = (await admin.apiKeys.create({ name: 'stats-agent', role: 'agent' })).secret;
      const viewerKey = await admin.apiKeys.create({ name: 'stats-viewer', role: 'viewer' });
      viewer = new Orchestra({ url: server.url, apiKey: viewerKey.secret });
      await admin.templates.create({ name: 'quick', capabilities: ['quick'] });
      await admin.templates.create({ name: 'held', capabilities: ['held'] });
    });
    after(async () => {
      release();
      await Promise.all(workers.map((w) => w.stop({ drain: false })));
      await server.stop();
    });

    test('an empty tenant: zeros, one entry per minute of the window, no latency', async () => {
      const before = Date.now();
      const stats = await admin.stats({ minutes: 5 });
      assert.equal(stats.window.minutes, 5);
      assert.equal(stats.template, null);
      assert.equal(stats.tasks.per_minute.length, 5);
      const starts = stats.tasks.per_minute.map((m) => Date.parse(m.at));
      assert.deepEqual(
        starts.slice(1).map((start, i) => start - (starts[i] ?? 0)),
        [60_000, 60_000, 60_000, 60_000],
      );
      assert.equal(starts[0], Date.parse(stats.window.from));
      // The last minute is the current one.
      const last = starts.at(-1) ?? 0;
      assert.ok(last <= Date.parse(stats.at) && Date.parse(stats.at) < last + 60_000);
      assert.ok(Date.parse(stats.at) >= before - 1000);
      assert.deepEqual(stats.tasks.active, {
        queued: 0,
        assigned: 0,
        running: 0,
        awaiting_approval: 0,
      });
      assert.equal(stats.tasks.submitted, 0);
      assert.deepEqual(stats.tasks.finished, {
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        timed_out: 0,
        dead: 0,
      });
      assert.equal(stats.tasks.latency_ms, null);
      assert.equal(stats.tasks.queue_wait_ms, null);
      assert.equal(stats.tasks.oldest_queued_at, null);
      assert.equal(stats.agents.total, 0);
      assert.equal(stats.agents.slots, 0);
      // Default window.
      assert.equal((await viewer.stats()).tasks.per_minute.length, 15);
    });

    test('tasks by state now and by outcome per minute, agents by status, latency of successes', async () => {
      const quick = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: 'stats-quick',
        capabilities: ['quick'],
        concurrency: 4,
        handleSignals: false,
        handler: async (input) => {
          const fail = (input as { fail?: string }).fail;
          // Not retryable: the task fails. Retryable, out of attempts: it is dead.
          if (fail === 'hard') throw new TaskFailedError('asked to fail', { retryable: false });
          if (fail === 'soft') throw new Error('asked to fail');
          await sleep(20);
          return { ok: true };
        },
      });
      const slow = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: 'stats-held',
        capabilities: ['held'],
        concurrency: 1,
        handleSignals: false,
        handler: async () => {
          await held;
          return { ok: true };
        },
      });
      workers.push(quick, slow);
      await Promise.all([quick.start(), slow.start()]);

      const succeeded = await Promise.all(
        Array.from({ length: 6 }, () => admin.tasks.create({ template: 'quick', input: {} })),
      );
      const failed = await Promise.all(
        ['hard', 'soft'].map((fail) =>
          admin.tasks.create({ template: 'quick', input: { fail }, max_attempts: 1 }),
        ),
      );
      const running = await admin.tasks.create({ template: 'held', input: {} });
      const queued = await admin.tasks.create({ template: 'held', input: {} });
      const cancelled = await admin.tasks.create({ template: 'held', input: {} });
      await admin.tasks.cancel(cancelled.id);
      for (const task of [...succeeded, ...failed]) await admin.tasks.wait(task.id);

      const stats = await eventually('the held task running', async () => {
        const s = await viewer.stats({ minutes: 3 });
        return s.tasks.active.running === 1 ? s : undefined;
      });
      assert.deepEqual(stats.tasks.active, {
        queued: 1,
        assigned: 0,
        running: 1,
        awaiting_approval: 0,
      });
      assert.equal(stats.tasks.oldest_queued_at, queued.created_at);
      assert.equal(stats.tasks.submitted, 11);
      assert.deepEqual(stats.tasks.finished, {
        succeeded: 6,
        failed: 1,
        cancelled: 1,
        timed_out: 0,
        dead: 1,
      });
      const minutes = stats.tasks.per_minute;
      assert.equal(sum(minutes.map((m) => m.submitted)), 11);
      assert.equal(sum(minutes.map((m) => m.finished.succeeded)), 6);
      assert.equal(sum(minutes.map((m) => m.finished.failed)), 1);
      assert.equal(sum(minutes.map((m) => m.finished.dead)), 1);
      assert.equal(sum(minutes.map((m) => m.finished.cancelled)), 1);
      assert.equal(sum(minutes.map((m) => m.latency_ms?.samples ?? 0)), 6);

      // Latency is each success's submission to its end, as the tasks themselves say.
      const ended = await Promise.all(succeeded.map((t) => admin.tasks.get(t.id)));
      const latencies = ended
        .map((t) => Date.parse(t.finished_at ?? '') - Date.parse(t.created_at))
        .sort((a, b) => a - b);
      const latency = stats.tasks.latency_ms;
      assert.ok(latency !== null);
      assert.equal(latency.samples, 6);
      assert.equal(latency.max, latencies.at(-1));
      assert.equal(latency.p50, latencies[2]);
      // Timestamps are whole milliseconds: a 20 ms sleep can show as 19.
      assert.ok(latency.p50 >= 19, `the handler sleeps 20 ms, p50 was ${latency.p50}`);
      assert.equal(stats.tasks.queue_wait_ms?.samples, 6);
      assert.ok((stats.tasks.queue_wait_ms?.max ?? Infinity) <= latency.max);

      // The agent with its one slot taken is busy; in flight counts what agents hold.
      assert.equal(stats.agents.total, 2);
      assert.equal(stats.agents.by_status.online, 1);
      assert.equal(stats.agents.by_status.busy, 1);
      assert.equal(stats.agents.slots, 5);
      assert.equal(stats.agents.slots_used, 1);
      assert.equal(stats.agents.in_flight, 1);

      // One template's tasks only; agents stay the tenant's.
      const onlyHeld = await admin.stats({ minutes: 3, template: 'held' });
      assert.equal(onlyHeld.template, 'held');
      assert.equal(onlyHeld.tasks.submitted, 3);
      assert.deepEqual(onlyHeld.tasks.active, {
        queued: 1,
        assigned: 0,
        running: 1,
        awaiting_approval: 0,
      });
      assert.equal(onlyHeld.tasks.finished.succeeded, 0);
      assert.equal(onlyHeld.tasks.finished.cancelled, 1);
      assert.equal(onlyHeld.tasks.latency_ms, null);
      assert.equal(onlyHeld.agents.total, 2);
      const template = await admin.templates.get('quick');
      const byId = await admin.stats({ minutes: 3, template: template.id });
      assert.equal(byId.tasks.submitted, 8);
      assert.equal(byId.tasks.finished.succeeded, 6);

      // Another tenant sees none of it.
      const other = await system.stats({ minutes: 3 });
      assert.equal(other.tasks.submitted, 0);
      assert.equal(other.agents.total, 0);

      // Draining and offline agents are counted as such and offer no slots.
      await admin.agents.drain('stats-quick');
      const draining = await admin.stats({ minutes: 3 });
      assert.equal(draining.agents.by_status.draining, 1);
      assert.equal(draining.agents.slots, 1);
      // The held agent's task is in use of its slot; a draining agent's would not be.
      assert.equal(draining.agents.slots_used, 1);
      release();
      await admin.tasks.wait(running.id);
      await admin.tasks.wait(queued.id);
      await slow.stop();
      const after = await eventually('the held agent offline', async () => {
        const s = await admin.stats({ minutes: 3 });
        return s.agents.by_status.offline === 1 ? s : undefined;
      });
      assert.equal(after.agents.slots, 0);
      assert.equal(after.agents.slots_used, 0);
      assert.equal(after.agents.in_flight, 0);
      assert.deepEqual(after.tasks.active, {
        queued: 0,
        assigned: 0,
        running: 0,
        awaiting_approval: 0,
      });
      assert.equal(after.tasks.finished.succeeded, 8);
    });

    test('a task retried by hand counts its latency and queue wait from the retry', async () => {
      await admin.templates.create({ name: 'retried', capabilities: ['retried'] });
      // Nobody offers the capability yet: the task waits, is cancelled, and is retried later.
      const task = await admin.tasks.create({ template: 'retried', input: {} });
      await admin.tasks.cancel(task.id);
      const queuedBy = await admin.stats({ template: 'retried' });
      assert.equal(queuedBy.tasks.oldest_queued_at, null);
      await sleep(300);
      const retriedAt = Date.now();
      await admin.tasks.retry(task.id);
      const waiting = await admin.stats({ template: 'retried' });
      assert.ok(
        Date.parse(waiting.tasks.oldest_queued_at ?? '') >= retriedAt - 1000 &&
          Date.parse(waiting.tasks.oldest_queued_at ?? '') > Date.parse(task.created_at),
        `oldest queued ${waiting.tasks.oldest_queued_at}, submitted ${task.created_at}`,
      );
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: 'stats-retried',
        capabilities: ['retried'],
        handleSignals: false,
        handler: () => ({ ok: true }),
      });
      workers.push(worker);
      await worker.start();
      const done = await admin.tasks.wait(task.id, { timeoutMs: 10_000 });
      assert.equal(done.state, 'succeeded');
      const stats = await admin.stats({ template: 'retried' });
      const sinceSubmit = Date.parse(done.finished_at ?? '') - Date.parse(task.created_at);
      const latency = stats.tasks.latency_ms;
      assert.ok(latency !== null);
      assert.equal(latency.samples, 1);
      // The 300 ms before the retry are not part of it.
      assert.ok(
        latency.max <= sinceSubmit - 300,
        `latency ${latency.max} ms, ${sinceSubmit} ms since the first submission`,
      );
      assert.ok((stats.tasks.queue_wait_ms?.max ?? Infinity) <= latency.max);
    });

    test('bad windows and parameters are refused; agents may not read stats', async () => {
      for (const minutes of [0, 61, 1.5]) {
        const error = await rejection(() => admin.stats({ minutes }));
        assert.equal(error.status, 400);
        assert.equal(error.code, 'VALIDATION_FAILED');
        assert.match(error.message, /minutes/);
      }
      const response = await fetch(`${server.url}/v1/stats?window=5`, {
        headers: { authorization: `Bearer ${server.adminKey}` },
      });
      assert.equal(response.status, 400);
      assert.equal(
        ((await response.json()) as { error: { code: string } }).error.code,
        'VALIDATION_FAILED',
      );
      const unknown = await rejection(() => admin.stats({ template: 'no-such-template' }));
      assert.equal(unknown.status, 404);
      assert.equal(unknown.code, 'TEMPLATE_NOT_FOUND');
      const agent = new Orchestra({ url: server.url, apiKey: agentKey });
      const denied = await rejection(() => agent.stats());
      assert.equal(denied.status, 403);
      const nobody = new Orchestra({ url: server.url, apiKey: 'ork_wrong' });
      assert.equal((await rejection(() => nobody.stats())).status, 401);
    });
  });
}
