import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers.ts';

// Idle event streams get a keep-alive every ORCHESTRA_STREAM_KEEPALIVE_MS, so that proxies
// with an idle timeout do not close a stream that is only waiting for the next event.

const KEEPALIVE_MS = 1000;
let server: TestServer;
let taskId: string;

before(async () => {
  server = await startTestServer({ env: { ORCHESTRA_STREAM_KEEPALIVE_MS: String(KEEPALIVE_MS) } });
  // No agent has this capability: the task stays queued and its stream stays open and idle.
  const created = await server.call('POST', '/v1/tasks', {
    body: { capabilities: ['nobody-has-this'], input: {} },
  });
  assert.equal(created.status, 201);
  taskId = (created.body as { id: string }).id;
});
after(() => server?.stop());

/** What the stream sent in the first `ms` milliseconds. */
async function readFor(accept: string, ms: number): Promise<string> {
  const controller = new AbortController();
  const response = await fetch(`${server.url}/v1/tasks/${taskId}/events`, {
    headers: { authorization: `Bearer ${server.adminKey}`, accept },
    signal: controller.signal,
  });
  assert.equal(response.status, 200);
  const body = response.body;
  assert.ok(body);
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } catch (err) {
    if (!controller.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
  }
  return text;
}

test('an idle NDJSON stream gets empty lines between its events', async () => {
  const text = await readFor('application/x-ndjson', KEEPALIVE_MS * 3.5);
  const lines = text.split('\n');
  const events = lines.filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string });
  assert.deepEqual(
    events.map((e) => e.type),
    ['task.queued'],
  );
  // The last line is what follows the final newline: empty. Before it, keep-alives.
  const keepAlives = lines.slice(1, -1);
  assert.ok(keepAlives.length >= 2, `keep-alive lines: ${JSON.stringify(text)}`);
  assert.ok(keepAlives.every((l) => l === ''));
});

test('an idle SSE stream gets comments between its events', async () => {
  const text = await readFor('text/event-stream', KEEPALIVE_MS * 3.5);
  assert.match(text, /^retry: 2000\n\nid: 1\nevent: task\.queued\n/);
  const comments = text.match(/^: keep-alive$/gm) ?? [];
  assert.ok(comments.length >= 2, `keep-alive comments: ${JSON.stringify(text)}`);
});

test('the setting is checked', async () => {
  await assert.rejects(
    startTestServer({ env: { ORCHESTRA_STREAM_KEEPALIVE_MS: '10' } }),
    /ORCHESTRA_STREAM_KEEPALIVE_MS.*1000 to 600000/s,
  );
});
