import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers.ts';
import { PostgresServer } from './postgres-server.ts';

// A PostgreSQL of the test's own, crashed (SIGQUIT) again and again under concurrent writes:
// every request in flight when it goes gets 503 with Retry-After, none a 500, and writes
// succeed again once it is back. Requests caught mid-transaction by the crash once failed
// with node-postgres's "Client has encountered a connection error and is not queryable",
// which was not recognised as the store being unavailable.

let postgres: PostgresServer;
let server: TestServer;

before(async () => {
  postgres = await PostgresServer.start();
  server = await startTestServer({
    env: { ORCHESTRA_DATABASE_URL: await postgres.createDatabase('orchestra') },
  });
});

after(async () => {
  await server?.stop();
  await postgres?.stop();
});

test('PostgreSQL crashing under concurrent writes: 503 with Retry-After while it is away, never a 500', async () => {
  const answers = new Map<string, number>();
  let running = true;
  const writer = async (w: number) => {
    // Bounded: the loop stops when the crashes are over, or after a minute at most.
    const deadline = Date.now() + 60_000;
    for (let i = 0; running && Date.now() < deadline; i++) {
      const topic = i % 2 === 1;
      const res = await fetch(`${server.url}${topic ? `/v1/topics/w${w}/messages` : '/v1/tasks'}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(topic ? { data: { i } } : { capabilities: ['none'], input: { i } }),
        signal: AbortSignal.timeout(15_000),
      }).catch((err: Error) => err);
      let key: string;
      if (res instanceof Error) key = `no answer: ${res.message}`;
      else {
        const body = await res.text();
        key =
          res.status === 503
            ? `503 ${JSON.parse(body).error.code} retry-after=${res.headers.get('retry-after') !== null}`
            : res.status === 201 || res.status === 202
              ? '2xx'
              : `${res.status} ${body.slice(0, 300)}`;
      }
      answers.set(key, (answers.get(key) ?? 0) + 1);
    }
  };
  const writers = Array.from({ length: 16 }, (_, w) => writer(w));
  try {
    for (let round = 0; round < 3; round++) {
      await new Promise((resolve) => setTimeout(resolve, 700));
      await postgres.kill();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await postgres.resume();
    }
    await new Promise((resolve) => setTimeout(resolve, 1_500));
  } finally {
    running = false;
    await Promise.all(writers);
  }
  const seen = Object.fromEntries(answers);
  assert.deepEqual(
    Object.keys(seen).sort(),
    ['2xx', '503 STORAGE_UNAVAILABLE retry-after=true'],
    JSON.stringify(seen),
  );
  // And it works again afterwards.
  const res = await fetch(`${server.url}/v1/topics/after/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ data: {} }),
  });
  assert.equal(res.status, 201);
});
