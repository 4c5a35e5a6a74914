import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Jobs } from '../src/platform/jobs.ts';
import { Metrics } from '../src/platform/metrics.ts';

// The one helper every background loop of the server runs on (issue 19): single-flight
// runs, failures logged and counted without stopping the job, leader claims with logged
// changes, and a stop that waits for the run in progress.

function setup() {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write(line: string) {
        lines.push(JSON.parse(line));
      },
    },
  );
  const metrics = new Metrics({ version: 'test', instanceId: 'test', store: 'sqlite' });
  return { jobs: new Jobs({ log, metrics }), lines, metrics };
}

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string>) {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) =>
    Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return value?.value;
}

test('runs never overlap: runNow during a run joins it', async () => {
  const { jobs } = setup();
  let running = 0;
  let most = 0;
  let runs = 0;
  let release!: () => void;
  const job = jobs.job({
    name: 'slow',
    intervalMs: 60_000,
    run: async () => {
      running += 1;
      runs += 1;
      most = Math.max(most, running);
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      running -= 1;
    },
  });
  const first = job.runNow();
  const second = job.runNow();
  assert.equal(first, second, 'the second call joins the run in progress');
  release();
  await Promise.all([first, second]);
  assert.deepEqual([runs, most], [1, 1]);
  await job.stop();
});

test('a failed run is logged and counted, and the job goes on at its interval', async () => {
  const { jobs, lines, metrics } = setup();
  let calls = 0;
  const job = jobs.job({
    name: 'flaky',
    intervalMs: 10,
    run: () => {
      calls += 1;
      if (calls === 1) throw new Error('store away');
    },
  });
  job.start();
  for (let i = 0; i < 6000 && calls < 3; i++) await sleep(10);
  await job.stop();
  assert.ok(calls >= 3, `ran ${calls} times`);
  const failure = lines.find((l) => l.job === 'flaky' && l.level === 40);
  assert.match(String(failure?.msg), /flaky: a run failed; it runs again in 10 ms/);
  assert.equal((failure?.err as { message: string } | undefined)?.message, 'store away');
  assert.equal(
    await metricValue(metrics, 'orchestra_job_runs_total', { job: 'flaky', outcome: 'failed' }),
    1,
  );
  assert.ok(
    Number(
      await metricValue(metrics, 'orchestra_job_runs_total', { job: 'flaky', outcome: 'done' }),
    ) >= 2,
  );
});

test('a leader job runs only while its claim holds, and says when it gains and loses it', async () => {
  const { jobs, lines, metrics } = setup();
  let holds = false;
  let runs = 0;
  let lost = 0;
  const job = jobs.job({
    name: 'relay',
    intervalMs: 60_000,
    run: () => {
      runs += 1;
    },
    leader: {
      key: 'cluster/relay',
      claim: async (key) => {
        assert.equal(key, 'cluster/relay');
        return holds;
      },
      role: 'relays things',
      onLost: () => {
        lost += 1;
      },
    },
  });
  await job.runNow();
  assert.deepEqual([runs, job.leader], [0, false]);
  holds = true;
  await job.runNow();
  await job.runNow();
  assert.deepEqual([runs, job.leader], [2, true]);
  assert.equal(await metricValue(metrics, 'orchestra_job_leader', { job: 'relay' }), 1);
  holds = false;
  await job.runNow();
  assert.deepEqual([runs, job.leader, lost], [2, false, 1]);
  assert.equal(await metricValue(metrics, 'orchestra_job_leader', { job: 'relay' }), 0);
  const said = lines.filter((l) => l.job === 'relay').map((l) => l.msg);
  assert.deepEqual(said, ['this node now relays things', 'relay: no longer the leader']);
  assert.equal(
    await metricValue(metrics, 'orchestra_job_runs_total', { job: 'relay', outcome: 'follower' }),
    2,
  );
  await job.stop();
});

test('stop aborts the run in progress, waits for it, lets go of leadership, and is final', async () => {
  const { jobs } = setup();
  let aborted = false;
  let ended = false;
  let lost = 0;
  const job = jobs.job({
    name: 'long',
    intervalMs: 60_000,
    run: async (signal) => {
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
      aborted = signal.aborted;
      await sleep(20);
      ended = true;
    },
    leader: {
      key: 'k',
      claim: async () => true,
      role: 'does long things',
      onLost: () => {
        lost += 1;
      },
    },
  });
  job.start();
  const run = job.runNow();
  await sleep(10);
  await job.stop();
  assert.deepEqual([aborted, ended, lost, job.leader], [true, true, 1, false]);
  await run;
  // Stopped for good: neither start nor runNow runs it again.
  job.start();
  await job.runNow();
  assert.equal(jobs.names.includes('long'), false);
});
