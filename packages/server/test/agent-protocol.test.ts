import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  type Context,
  contractProblem,
  loadScenarios,
  match,
  prepare,
  runScenario,
  SERVER_ENV,
} from '../../../conformance/run.ts';
import { AGENT_FRAMES } from '../src/agents/protocol.ts';
import { CLOSE_CODES } from '../src/platform/errors.ts';
import { STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

// The agent protocol conformance suite (conformance/README.md), as CI runs it: every
// scenario against a real server, on each store.
const scenarios = loadScenarios();

test('the runner holds every frame the server sends to the wire contract', () => {
  assert.equal(contractProblem({ kind: 'drain', reason: 'requested through the API' }), undefined);
  assert.match(String(contractProblem({ kind: 'task.assigned' })), /unknown payload.kind/);
  assert.match(String(contractProblem({ kind: 'drain' })), /payload.*reason|required/);
  assert.match(String(contractProblem({ kind: 'drain', reason: 'x', extra: 1 })), /payload/);
  assert.match(
    String(
      contractProblem({
        kind: 'task.cancel',
        task_id: 't',
        attempt: 1,
        reason: 'bored',
        deadline_ms: 0,
      }),
    ),
    /payload\/reason/,
  );
});

test('the suite has scenarios, each with a description and steps', () => {
  assert.ok(scenarios.length >= 20);
  for (const s of scenarios) assert.ok(s.description.length > 0 && s.steps.length > 0, s.name);
});

for (const store of STORE_VARIANTS) {
  describe(`agent protocol conformance (${store})`, { concurrency: 4 }, () => {
    let server: TestServer;
    let ctx: Context;
    before(async () => {
      server = await startTestServer({ store, env: SERVER_ENV });
      ctx = await prepare({ url: server.url, adminKey: server.adminKey });
    });
    after(() => server?.stop());

    for (const scenario of scenarios) {
      test(scenario.name, () => runScenario(scenario, ctx));
    }

    test('the runner fails a scenario whose expectation the server does not meet', async () => {
      const wrongClose = {
        name: 'wrong-close',
        description: 'expects 4409 where the server closes with 4408',
        steps: [{ connect: 'a' }, { expect_close: 4409, timeout_ms: 5_000 }],
      };
      await assert.rejects(runScenario(wrongClose, ctx), /step 2 .*closed with 4408/);
      const wrongFrame = {
        name: 'wrong-frame',
        description: 'expects registered for a frame sent before registering',
        steps: [
          { connect: 'a' },
          { send: { header: { type: 'EVENT' }, payload: { kind: 'heartbeat', in_flight: 0 } } },
          { expect: { payload: { kind: 'registered' } }, timeout_ms: 500 },
        ],
      };
      await assert.rejects(runScenario(wrongFrame, ctx), /step 3 .*AGENT_NOT_REGISTERED/);
      const notNext = {
        name: 'not-next',
        description: 'expects registered as the next frame, after a frame that got an error',
        steps: [
          { connect: 'a' },
          { send: { header: { type: 'EVENT' }, payload: { kind: 'heartbeat', in_flight: 0 } } },
          {
            send: {
              header: { type: 'REQUEST' },
              payload: { kind: 'register', agent_id: 'x', capabilities: [], max_concurrency: 1 },
            },
          },
          { expect: { payload: { kind: 'registered' } }, next: true },
        ],
      };
      await assert.rejects(
        runScenario(notNext, ctx),
        /step 4 .*the next frame does not match.*AGENT_NOT_REGISTERED/,
      );
    });
  });
}

test('docs/protocol.md lists every agent frame with its envelope type, and every close code', () => {
  const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');
  for (const [kind, { type }] of Object.entries(AGENT_FRAMES)) {
    assert.ok(
      doc.includes(`| \`${kind}\` | \`${type}\` |`),
      `${kind} (${type}) is not in the table`,
    );
  }
  for (const { code } of Object.values(CLOSE_CODES)) {
    assert.ok(doc.includes(`| \`${code}\` |`), `close code ${code} is not in the table`);
  }
});

/** `${name}`: a variable reference in a scenario. */
const ref = (name: string) => `\${${name}}`;

test('patterns match partially, capture, and compare arrays by length', () => {
  assert.deepEqual(match({ a: 1 }, { a: 1, b: 2 }, {}), {});
  assert.equal(match({ a: 1 }, { a: 2 }, {}), null);
  assert.equal(match([1], [1, 2], {}), null);
  assert.deepEqual(match({ id: '$capture:x' }, { id: 'tsk_1' }, {}), { x: 'tsk_1' });
  assert.deepEqual(match({ id: ref('x') }, { id: 'tsk_1' }, { x: 'tsk_1' }), { x: 'tsk_1' });
  assert.equal(match({ id: `a-${ref('x')}` }, { id: 'a-tsk_2' }, { x: 'tsk_1' }), null);
  assert.deepEqual(match({ n: ref('n') }, { n: 3 }, { n: 3 }), { n: 3 });
  assert.equal(match({ c: '$absent' }, { c: undefined }, {}), null);
  assert.deepEqual(match({ c: '$absent' }, {}, {}), {});
  assert.equal(match({ m: '$contains:seq' }, { m: 'payload.cursor' }, {}), null);
  assert.equal(match({ n: '$number' }, { n: '1' }, {}), null);
  assert.equal(match({ a: '$any' }, {}, {}), null);
  assert.throws(() => match(ref('unset'), 'x', {}), /not set/);
});

test('the documented command runs the suite from a shell whose node may be older than 24', async () => {
  const readme = readFileSync(new URL('../../../conformance/README.md', import.meta.url), 'utf8');
  assert.match(readme, /^npm run conformance -- --url /m);
  const server = await startTestServer({ env: SERVER_ENV });
  try {
    // As a user's shell has it: no node_modules/.bin ahead of the system's node. npm puts
    // the pinned Node 24 first for the script itself.
    const PATH = (process.env.PATH ?? '')
      .split(delimiter)
      .filter((dir) => !dir.includes('node_modules'))
      .join(delimiter);
    // Not spawnSync: the server runs in this process and must go on answering.
    const run = await new Promise<{ status: number | null; stdout: string; stderr: string }>(
      (resolve) => {
        execFile(
          'npm',
          [
            'run',
            '--silent',
            'conformance',
            '--',
            '--url',
            server.url,
            '--admin-key',
            server.adminKey,
            '--only',
            'register',
          ],
          {
            cwd: fileURLToPath(new URL('../../../', import.meta.url)),
            env: { ...process.env, PATH },
            encoding: 'utf8',
            timeout: 120_000,
          },
          (err, stdout, stderr) =>
            resolve({ status: err ? ((err.code as number | undefined) ?? 1) : 0, stdout, stderr }),
        );
      },
    );
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /\bok\b.*\bregister\b/);
  } finally {
    await server.stop();
  }
});
