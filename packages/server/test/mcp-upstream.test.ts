import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import {
  detectSandbox,
  type McpTransportConfig,
  McpUpstream,
  type McpUpstreamOptions,
  RingLog,
  UpstreamError,
  type UpstreamStatus,
} from '../src/mcp/index.ts';
import { tempDir } from './helpers.ts';
import {
  EVERYTHING,
  FILESYSTEM,
  FIXTURES,
  REPO_ROOT,
  spawnEverythingHttp,
  spawnHttpServer,
  WAIT_MS,
} from './mcp-servers.ts';

const log = pino({ level: 'silent' });

const upstreams: McpUpstream[] = [];
after(async () => {
  await Promise.all(upstreams.map((upstream) => upstream.close()));
});

function fixture(name: string, args: string[] = [], extra?: { network?: boolean; cwd?: string }) {
  return {
    transport: 'stdio',
    command: process.execPath,
    args: [join(FIXTURES, name), ...args],
    env: {},
    network: extra?.network ?? false,
    ...(extra?.cwd ? { cwd: extra.cwd } : {}),
  } satisfies McpTransportConfig;
}

async function open(
  config: McpTransportConfig,
  options: Partial<McpUpstreamOptions> = {},
): Promise<McpUpstream> {
  const upstream = new McpUpstream(config, {
    logger: log,
    readOnlyPaths: [REPO_ROOT],
    healthIntervalMs: 0,
    restart: { initialDelayMs: 50, maxDelayMs: 500 },
    ...options,
  });
  upstreams.push(upstream);
  await upstream.start();
  return upstream;
}

/** Polls until `predicate` holds (bounded by WAIT_MS). */
async function waitFor(
  upstream: McpUpstream,
  predicate: (status: UpstreamStatus) => boolean,
): Promise<UpstreamStatus> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    const status = upstream.status;
    if (predicate(status)) return status;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`condition not reached; last status ${JSON.stringify(upstream.status)}`);
}

function text(result: { content?: unknown }): string {
  const first = (result.content as { type: string; text?: string }[] | undefined)?.[0];
  return first?.text ?? '';
}

async function rejectsWith(promise: Promise<unknown>, kind: UpstreamError['kind']) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UpstreamError, `expected an UpstreamError, got ${String(error)}`);
    assert.equal(error.kind, kind, error.message);
    return true;
  });
}

/** Live processes whose command line contains `marker` (zombies have none). */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker))
        found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

async function waitUntilGone(marker: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (processesWith(marker).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.deepEqual(processesWith(marker), [], `processes tagged ${marker} survived close()`);
}

describe('ring log', () => {
  it('keeps the last lines within its line and byte budget, cutting endless lines', () => {
    const ring = new RingLog({ maxLines: 3, maxBytes: 1000, maxLineBytes: 10 });
    ring.write('one\ntwo\nthr');
    ring.write('ee\nfour\n');
    assert.deepEqual(ring.snapshot(), ['two', 'three', 'four']);
    ring.write(`${'z'.repeat(50)}\n`);
    assert.deepEqual(ring.snapshot().at(-1), `${'z'.repeat(10)} [truncated]`);
    const bytes = new RingLog({ maxLines: 1000, maxBytes: 20, maxLineBytes: 20 });
    for (let i = 0; i < 100; i += 1) bytes.write(`line ${i}\n`);
    assert.ok(bytes.byteLength <= 20);
    assert.deepEqual(bytes.snapshot().at(-1), 'line 99');
    assert.ok(bytes.droppedLines > 90);
  });
});

describe('server-everything', () => {
  it('over stdio: negotiates 2025-11-25, lists and calls', async () => {
    const upstream = await open({
      transport: 'stdio',
      command: process.execPath,
      args: [EVERYTHING, 'stdio'],
      env: {},
      network: false,
    });
    const status = upstream.status;
    assert.equal(status.state, 'ready', status.reason ?? '');
    assert.equal(status.protocolVersion, '2025-11-25');
    assert.equal(status.era, 'legacy');
    assert.ok(upstream.tools().some((tool) => tool.name === 'echo'));
    assert.ok(upstream.resources().length > 0);
    assert.ok(upstream.prompts().some((prompt) => prompt.name === 'simple-prompt'));
    const result = await upstream.callTool('echo', { message: 'hi there' });
    assert.match(text(result), /hi there/);
    const first = upstream.resources()[0];
    assert.ok(first);
    const resource = await upstream.readResource(first.uri);
    assert.equal(resource.contents[0]?.uri, first.uri);
    const prompt = await upstream.getPrompt('simple-prompt');
    assert.ok(prompt.messages.length > 0);
    await upstream.close();
    assert.equal(upstream.status.state, 'failed');
    await rejectsWith(upstream.callTool('echo', { message: 'x' }), 'closed');
  });

  it('over Streamable HTTP', async (t) => {
    const server = await spawnEverythingHttp('streamableHttp');
    t.after(server.kill);
    const upstream = await open({
      transport: 'streamable_http',
      url: `http://127.0.0.1:${server.port}/mcp`,
      headers: { 'x-test': '1' },
    });
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    assert.equal(upstream.status.protocolVersion, '2025-11-25');
    assert.ok(upstream.tools().some((tool) => tool.name === 'get-sum'));
    const result = await upstream.callTool('get-sum', { a: 2, b: 3 });
    assert.match(text(result), /5/);
    await upstream.close();
  });

  it('a wrong URL fails with the HTTP status in the reason', async (t) => {
    const server = await spawnEverythingHttp('streamableHttp');
    t.after(server.kill);
    const upstream = await open(
      { transport: 'streamable_http', url: `http://127.0.0.1:${server.port}/nope`, headers: {} },
      { restart: { maxAttempts: 1 } },
    );
    assert.equal(upstream.status.state, 'failed');
    assert.match(upstream.status.reason ?? '', /HTTP 404/);
    await upstream.close();
  });

  it('over legacy HTTP+SSE', async (t) => {
    const server = await spawnEverythingHttp('sse');
    t.after(server.kill);
    const upstream = await open({
      transport: 'sse',
      url: `http://127.0.0.1:${server.port}/sse`,
      headers: {},
    });
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    const result = await upstream.callTool('echo', { message: 'over sse' });
    assert.match(text(result), /over sse/);
    await upstream.close();
  });

  it('over Streamable HTTP: a dead server fails the health check and is reconnected', async (t) => {
    const first = await spawnEverythingHttp('streamableHttp');
    t.after(first.kill);
    const upstream = await open(
      { transport: 'streamable_http', url: `http://127.0.0.1:${first.port}/mcp`, headers: {} },
      { healthIntervalMs: 200, healthTimeoutMs: 2000 },
    );
    assert.equal(upstream.status.state, 'ready');
    await first.kill();
    const down = await waitFor(upstream, (s) => s.state === 'degraded' || s.state === 'failed');
    assert.ok(down.reason);
    await rejectsWith(upstream.callTool('echo', { message: 'x' }), 'unavailable');
    const second = await spawnEverythingHttp('streamableHttp', first.port);
    t.after(second.kill);
    const back = await waitFor(upstream, (s) => s.state === 'ready' && s.reconnects >= 1);
    assert.equal(back.restarts, 0);
    assert.match(text(await upstream.callTool('echo', { message: 'again' })), /again/);
    await upstream.close();
  });
});

describe('server-filesystem', () => {
  it('over stdio, confined to a temp dir', async (t) => {
    const dir = tempDir('orchestra-mcp-fs-');
    t.after(dir.remove);
    writeFileSync(join(dir.path, 'note.txt'), 'inside the allowed dir');
    const upstream = await open({
      transport: 'stdio',
      command: process.execPath,
      args: [FILESYSTEM, dir.path],
      cwd: dir.path,
      env: {},
      network: false,
    });
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    const names = upstream.tools().map((tool) => tool.name);
    assert.ok(names.includes('read_text_file'), names.join());
    const read = await upstream.callTool('read_text_file', { path: join(dir.path, 'note.txt') });
    assert.equal(text(read), 'inside the allowed dir');
    const listing = await upstream.callTool('list_directory', { path: dir.path });
    assert.match(text(listing), /note\.txt/);
    const outside = await upstream.callTool('read_text_file', { path: '/etc/hostname' });
    assert.equal(outside.isError, true);
    await upstream.close();
  });
});

describe('changing-server fixture', () => {
  it('re-fetches the tool list on list_changed and emits listChanged', async () => {
    const upstream = await open(fixture('changing-server.ts'));
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    assert.deepEqual(
      upstream
        .tools()
        .map((tool) => tool.name)
        .sort(),
      ['change_tools', 'echo', 'fail', 'rug_pull', 'structured'],
    );
    const changed = new Promise<string>((resolve) => upstream.on('listChanged', resolve));
    assert.equal(text(await upstream.callTool('change_tools', {})), 'changed 1');
    assert.equal(await changed, 'tools');
    const names = upstream.tools().map((tool) => tool.name);
    assert.ok(names.includes('added_tool_1'), names.join());
    assert.ok(!names.includes('echo'), names.join());
    assert.equal(text(await upstream.callTool('added_tool_1', {})), 'added 1');
    await upstream.close();
  });

  it('returns results as they are: structuredContent, isError, resources, prompts', async () => {
    const upstream = await open(fixture('changing-server.ts'));
    const structured = await upstream.callTool('structured', { n: 21 });
    assert.deepEqual(structured.structuredContent, { doubled: 42 });
    const failed = await upstream.callTool('fail', {});
    assert.equal(failed.isError, true);
    assert.equal(text(failed), 'it failed');
    const resource = await upstream.readResource('fixture://greeting');
    assert.deepEqual(resource.contents[0], {
      uri: 'fixture://greeting',
      mimeType: 'text/plain',
      text: 'hello from the fixture',
    });
    const prompt = await upstream.getPrompt('greet', { who: 'Ada' });
    assert.deepEqual(prompt.messages[0]?.content, { type: 'text', text: 'Say hello to Ada' });
    // The 1.x server reports an unknown tool as a tool error, an unknown prompt as JSON-RPC error.
    assert.equal((await upstream.callTool('no_such_tool', {})).isError, true);
    await rejectsWith(upstream.getPrompt('no_such_prompt'), 'protocol');
    await upstream.close();
  });
});

describe('lists', () => {
  it('follows pagination cursors to the end', async () => {
    const upstream = await open(fixture('paged-server.ts'));
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    const tools = upstream.tools().map((tool) => tool.name);
    assert.equal(tools.length, 25);
    assert.equal(new Set(tools).size, 25);
    assert.equal(upstream.resources().length, 12);
    assert.deepEqual(upstream.prompts(), []);
    await upstream.close();
  });
});

describe('protocol generations', () => {
  it('a 2.x server negotiates 2026-07-28', async () => {
    const upstream = await open(fixture('modern-server.ts'));
    const status = upstream.status;
    assert.equal(status.state, 'ready', status.reason ?? '');
    assert.equal(status.protocolVersion, '2026-07-28');
    assert.equal(status.era, 'modern');
    assert.equal(status.serverInfo?.name, 'modern-server');
    assert.equal(text(await upstream.callTool('echo', { text: 'hi' })), 'modern: hi');
    await upstream.close();
  });

  it('a 2.x server announces tool changes over the 2026-07-28 subscription', async () => {
    const upstream = await open(fixture('modern-server.ts'));
    assert.equal(upstream.status.era, 'modern');
    const changed = new Promise<string>((resolve) => upstream.on('listChanged', resolve));
    assert.equal(text(await upstream.callTool('change_tools', {})), 'changed 1');
    assert.equal(await changed, 'tools');
    assert.ok(upstream.tools().some((tool) => tool.name === 'added_tool_1'));
    assert.equal(text(await upstream.callTool('added_tool_1', {})), 'added 1');
    await upstream.close();
  });

  it('a 2.x server over Streamable HTTP negotiates 2026-07-28', async (t) => {
    const server = await spawnHttpServer([join(FIXTURES, 'modern-http-server.ts')]);
    t.after(server.kill);
    const upstream = await open({
      transport: 'streamable_http',
      url: `http://127.0.0.1:${server.port}/mcp`,
      headers: {},
    });
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    assert.equal(upstream.status.protocolVersion, '2026-07-28');
    assert.equal(upstream.status.era, 'modern');
    assert.equal(text(await upstream.callTool('echo', { text: 'hi' })), 'modern http: hi');
    await upstream.close();
  });

  it('a legacy server that exits on the probe is restarted with the plain 2025 handshake', async () => {
    const upstream = await open(fixture('strict-legacy-server.ts'));
    const status = await waitFor(upstream, (s) => s.state === 'ready');
    assert.equal(status.protocolVersion, '2025-11-25');
    assert.equal(status.restarts, 1);
    assert.ok(
      upstream.stderrLines().includes('strict-legacy-server: first message was not initialize'),
    );
    assert.equal(text(await upstream.callTool('echo', { text: 'hi' })), 'strict: hi');
    await upstream.close();
  });

  it('a 1.x server negotiates 2025-11-25', async () => {
    const upstream = await open(fixture('changing-server.ts'));
    assert.equal(upstream.status.protocolVersion, '2025-11-25');
    assert.equal(upstream.status.era, 'legacy');
    await upstream.close();
  });
});

describe('faults', () => {
  it('a crash rejects the pending call and the process is restarted', async () => {
    const upstream = await open(fixture('crashing-server.ts'));
    assert.equal(upstream.status.restarts, 0);
    await rejectsWith(upstream.callTool('crash', {}), 'unavailable');
    const back = await waitFor(upstream, (s) => s.state === 'ready' && s.restarts >= 1);
    assert.equal(back.restarts, 1);
    assert.match(text(await upstream.callTool('pid', {})), /^\d+$/);
    assert.ok(upstream.stderrLines().includes('crashing-server: crash requested'));
    await upstream.close();
  });

  it('an answer written just before the process exits still arrives', async () => {
    const upstream = await open(fixture('crashing-server.ts'));
    assert.equal(text(await upstream.callTool('answer_then_exit', {})), 'last words');
    await waitFor(upstream, (s) => s.state === 'ready' && s.restarts === 1);
    await upstream.close();
  });

  it('a process that exits after N calls is restarted each time', async () => {
    const upstream = await open(fixture('crashing-server.ts', ['--exit-after-calls', '2']));
    await upstream.callTool('pid', {});
    await rejectsWith(upstream.callTool('pid', {}), 'unavailable');
    await waitFor(upstream, (s) => s.state === 'ready' && s.restarts === 1);
    await upstream.callTool('pid', {});
    await upstream.close();
  });

  it('a process that cannot start ends failed with the exit in the reason', async () => {
    const upstream = await open(fixture('crashing-server.ts', ['--exit-at-start']), {
      restart: { initialDelayMs: 20, maxDelayMs: 50, maxAttempts: 3 },
    });
    const status = await waitFor(upstream, (s) => s.state === 'failed' && s.nextAttemptAt === null);
    assert.match(status.reason ?? '', /exited with code 4/);
    assert.match(status.reason ?? '', /gave up after 3 attempts/);
    // Four spawns: dying on the version probe first reads as "legacy server", retried at once.
    assert.equal(status.restarts, 3);
    assert.ok(upstream.stderrLines().includes('crashing-server: exiting at start'));
    await rejectsWith(upstream.callTool('pid', {}), 'unavailable');
    await upstream.close();
  });

  it('a command that does not exist fails with a clear reason', async () => {
    const upstream = await open(
      { transport: 'stdio', command: '/nonexistent/mcp-server', args: [], env: {}, network: false },
      { sandbox: 'off', restart: { maxAttempts: 1 } },
    );
    assert.equal(upstream.status.state, 'failed');
    assert.match(upstream.status.reason ?? '', /ENOENT|cannot start/);
    await upstream.close();
  });

  it('a hanging tool call times out and the upstream stays usable', async () => {
    const upstream = await open(fixture('hanging-server.ts'));
    await rejectsWith(upstream.callTool('hang', {}, { timeoutMs: 300 }), 'timeout');
    assert.equal(text(await upstream.callTool('quick', {})), 'quick');
    const controller = new AbortController();
    const call = upstream.callTool('hang', {}, { signal: controller.signal });
    controller.abort(new Error('caller gave up'));
    await assert.rejects(call, /caller gave up/);
    await upstream.close();
  });

  it('close() rejects the calls in flight with closed', async () => {
    const upstream = await open(fixture('hanging-server.ts'));
    const rejected = rejectsWith(upstream.callTool('hang', {}), 'closed');
    await upstream.close();
    await rejected;
  });

  it('a server that never answers fails the connect with a timeout', async () => {
    const upstream = await open(fixture('hanging-server.ts', ['--silent']), {
      connectTimeoutMs: 500,
      restart: { maxAttempts: 1 },
    });
    assert.equal(upstream.status.state, 'failed');
    assert.match(upstream.status.reason ?? '', /no answer within|timed out/i);
    await upstream.close();
  });

  it('garbage on stdout is skipped; endless garbage gets the process restarted', async () => {
    const upstream = await open(fixture('garbage-server.ts'));
    assert.equal(upstream.status.state, 'ready', upstream.status.reason ?? '');
    assert.equal(text(await upstream.callTool('garbage', { lines: 5 })), 'wrote 5 garbage lines');
    assert.equal(upstream.status.state, 'ready');
    await rejectsWith(upstream.callTool('garbage', { lines: 500 }), 'unavailable');
    const back = await waitFor(upstream, (s) => s.state === 'ready' && s.restarts === 1);
    assert.equal(back.restarts, 1);
    await upstream.close();
  });

  it('floods of stdout and stderr stay bounded and the upstream keeps answering', async () => {
    const upstream = await open(fixture('flood-server.ts'), {
      maxMessageBytes: 1024 * 1024,
      stderr: { maxLines: 100, maxBytes: 16 * 1024 },
    });
    assert.equal(
      text(await upstream.callTool('flood_stdout', { megabytes: 16 }, { timeoutMs: WAIT_MS })),
      'flooded stdout',
    );
    assert.equal(
      text(await upstream.callTool('flood_stderr', { megabytes: 8 }, { timeoutMs: WAIT_MS })),
      'flooded stderr',
    );
    await waitFor(upstream, () => upstream.stderrLines().at(-1) === 'flood done');
    const lines = upstream.stderrLines();
    assert.ok(lines.length <= 100);
    assert.ok(Buffer.byteLength(lines.join('\n')) <= 16 * 1024);
    assert.ok(lines.some((line) => line.endsWith('[truncated]')));
    assert.equal(upstream.status.state, 'ready');
    await upstream.close();
  });

  it('close() kills the process and leaves no orphan', async () => {
    const upstream = await open(fixture('crashing-server.ts'), { sandbox: 'off' });
    const pid = Number(text(await upstream.callTool('pid', {})));
    assert.ok(pid > 0);
    process.kill(pid, 0);
    await upstream.close();
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  });

  it('close() also ends the grandchildren of the process', async () => {
    const marker = `orchestra-grandchild-${process.pid}-${Date.now()}`;
    const upstream = await open(fixture('crashing-server.ts'), { sandbox: 'off' });
    await upstream.callTool('spawn_child', { marker, detached: false });
    assert.equal(processesWith(marker).length, 1);
    await upstream.close();
    await waitUntilGone(marker);
  });

  it('restart() replaces the process and starts the backoff over', async () => {
    const upstream = await open(fixture('crashing-server.ts'), { sandbox: 'off' });
    const before = Number(text(await upstream.callTool('pid', {})));
    await upstream.restart();
    assert.equal(upstream.status.state, 'ready');
    assert.equal(upstream.status.restarts, 1);
    assert.notEqual(Number(text(await upstream.callTool('pid', {}))), before);
    assert.throws(() => process.kill(before, 0), { code: 'ESRCH' });
    await upstream.close();
  });

  it('a stopped process fails the health check, is replaced, and comes back ready', async () => {
    const upstream = await open(fixture('crashing-server.ts'), {
      sandbox: 'off',
      healthIntervalMs: 200,
      healthTimeoutMs: 2000,
    });
    const pid = Number(text(await upstream.callTool('pid', {})));
    const states: string[] = [];
    upstream.on('status', (s) => states.push(s.state));
    process.kill(pid, 'SIGSTOP');
    const back = await waitFor(upstream, (s) => s.state === 'ready' && s.reconnects >= 1);
    assert.ok(states.includes('degraded'), states.join());
    assert.notEqual(Number(text(await upstream.callTool('pid', {}))), pid);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    assert.equal(back.restarts, 1);
    await upstream.close();
  });
});

describe('sandbox', () => {
  let available = false;
  let reason = '';
  before(async () => {
    const verdict = await detectSandbox();
    available = verdict.available;
    reason = verdict.available ? '' : verdict.reason;
  });

  it('reports sandboxed: false with the reason when bubblewrap cannot run, or when off', async () => {
    const off = await open(fixture('changing-server.ts'), { sandbox: 'off' });
    assert.equal(off.status.sandboxed, false);
    assert.match(off.status.sandboxReason ?? '', /turned off/);
    await off.close();
    const auto = await open(fixture('changing-server.ts'));
    assert.equal(auto.status.sandboxed, available);
    assert.equal(auto.status.sandboxReason, available ? null : reason);
    await auto.close();
  });

  it('confines writes to the work dir and cuts the network unless allowed', async (t) => {
    if (!available) {
      t.skip(`bubblewrap unavailable: ${reason}`);
      return;
    }
    const work = tempDir('orchestra-mcp-work-');
    const outside = tempDir('orchestra-mcp-outside-');
    t.after(() => {
      work.remove();
      outside.remove();
    });
    mkdirSync(join(work.path, 'sub'));
    const listener = createServer((socket) => socket.end());
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    t.after(() => listener.close());
    const { port } = listener.address() as AddressInfo;

    const closed = await open(fixture('sandbox-probe-server.ts', [], { cwd: work.path }));
    assert.equal(closed.status.sandboxed, true);
    const inside = await closed.callTool('write_file', { path: join(work.path, 'sub', 'a.txt') });
    assert.equal(text(inside), 'ok');
    assert.ok(existsSync(join(work.path, 'sub', 'a.txt')));
    const escaped = await closed.callTool('write_file', { path: join(outside.path, 'b.txt') });
    assert.notEqual(text(escaped), 'ok');
    assert.ok(!existsSync(join(outside.path, 'b.txt')));
    const repo = await closed.callTool('write_file', {
      path: join(REPO_ROOT, 'sandbox-escape.txt'),
    });
    assert.notEqual(text(repo), 'ok');
    assert.ok(!existsSync(join(REPO_ROOT, 'sandbox-escape.txt')));
    // Regression: run as root, bwrap kept every capability and the process could remount /usr.
    assert.match(text(await closed.callTool('capabilities', {})), /^0+$/);
    if (existsSync('/etc/shadow')) {
      assert.notEqual(text(await closed.callTool('read_file', { path: '/etc/shadow' })), 'ok');
    }
    assert.equal(text(await closed.callTool('read_file', { path: '/etc/passwd' })), 'ok');
    const blocked = await closed.callTool('connect_tcp', { port });
    assert.notEqual(text(blocked), 'ok');
    await closed.close();

    // Its own PID namespace: even a grandchild in a session of its own dies with it.
    const marker = `orchestra-sandboxed-grandchild-${process.pid}-${Date.now()}`;
    const tree = await open(fixture('crashing-server.ts', [], { cwd: work.path }));
    assert.equal(tree.status.sandboxed, true);
    await tree.callTool('spawn_child', { marker, detached: true });
    assert.equal(processesWith(marker).length, 1);
    await tree.close();
    await waitUntilGone(marker);

    const open_ = await open(
      fixture('sandbox-probe-server.ts', [], { cwd: work.path, network: true }),
    );
    assert.equal(text(await open_.callTool('connect_tcp', { port })), 'ok');
    await open_.close();
  });
});
