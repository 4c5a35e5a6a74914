import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Orchestra } from '@orchestra/sdk';
import {
  type CliServer,
  childEnv,
  closedPort,
  expectExit,
  jsonOf,
  ORCHESTRA_BIN,
  runCli,
  SPAWN_DEADLINE_MS,
  startCliServer,
  tableRow,
} from './helpers.ts';

// `orchestra providers` and `orchestra demo-provider` as a user runs them: spawned commands
// against a spawned `orchestra start`, the demo provider a spawned process of its own.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('providers');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(() => fixture.stop());

/** Starts `orchestra demo-provider` on a free port; resolves once it says where it listens. */
async function startDemoProvider() {
  const port = await closedPort();
  const child = spawn(process.execPath, [ORCHESTRA_BIN, 'demo-provider', '--port', String(port)], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start line: ${out}`)), SPAWN_DEADLINE_MS);
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`demo-provider exited ${code}: ${out}`)));
  });
  await ready;
  return { port, child, output: () => out };
}

/** `providers add demo` for the demo provider on `port`, as the README writes it. */
const addDemo = (port: number) => [
  ...['providers', 'add', 'demo', '--kind', 'openai'],
  ...['--base-url', `http://127.0.0.1:${port}/v1`, '--model', 'demo'],
];

describe('orchestra providers', () => {
  test('the demo provider answers through a provider added with flags; get, list, test, update and remove it', async () => {
    const demo = await startDemoProvider();
    try {
      assert.match(demo.output(), /Demo model provider \(scripted, not a language model\)/);
      const added = await fixture.cli([
        ...addDemo(demo.port),
        '--model',
        'llama3.2:3b',
        '--price',
        'demo=0.5/1.5/0.1',
        '--header',
        'X-Team=agents',
        '--max-concurrency',
        '4',
        '--timeout',
        '30s',
        '--idle-timeout',
        '5s',
        '--max-retries',
        '0',
      ]);
      expectExit(added, 0);
      assert.match(added.stdout, /^Added model provider demo \(mpr_/);
      const provider = await api.modelProviders.get('demo');
      assert.deepEqual(provider.models, [
        { name: 'demo', price: { input: 0.5, output: 1.5, cached_input: 0.1 } },
        { name: 'llama3.2:3b' },
      ]);
      assert.deepEqual(
        [
          provider.max_concurrency,
          provider.timeout_ms,
          provider.idle_timeout_ms,
          provider.max_retries,
        ],
        [4, 30_000, 5_000, 0],
      );
      assert.deepEqual(provider.header_names, ['X-Team']);

      const tested = await fixture.cli(['providers', 'test', 'demo', '--model', 'demo']);
      expectExit(tested, 0);
      assert.match(tested.stdout, /^demo: ok in [\d.]+ ms\n/);
      assert.match(tested.stdout, /Not listed by the provider: llama3\.2:3b/);
      assert.match(tested.stdout, /Answer: You said: Reply with the single word: ready/);
      assert.match(tested.stdout, /demo provider: scripted answers, not a language model/);

      const listed = await fixture.cli(['providers', 'ls']);
      expectExit(listed, 0);
      assert.match(listed.stdout, /^NAME\s+KIND\s+BASE URL\s+MODELS\s+FALLBACKS\s+ENABLED\n/);
      assert.match(
        tableRow(listed.stdout, 'demo'),
        /openai\s+http:\/\/127\.0\.0\.1:\d+\/v1\s+demo,llama3\.2:3b\s+-\s+yes/,
      );
      const got = await fixture.cli(['providers', 'get', 'demo']);
      expectExit(got, 0);
      assert.match(got.stdout, /Headers:\s+X-Team\n/);
      assert.match(got.stdout, /demo \(\$0\.5 in, \$1\.5 out, \$0\.1 cached per million tokens\)/);

      // get --json, edited, goes back with update --file; the header's value must be given again.
      const json = jsonOf(await fixture.cli(['providers', 'get', 'demo', '--json']));
      const file = fixture.writeJson('demo.json', { ...json, max_retries: 1 });
      const noValues = await fixture.cli(['providers', 'update', 'demo', '--file', file]);
      expectExit(noValues, 2);
      assert.match(noValues.stderr, /names headers X-Team but holds no values/);
      const withValues = fixture.writeJson('demo2.json', {
        ...json,
        max_retries: 1,
        headers: { 'X-Team': 'agents' },
      });
      const updated = await fixture.cli(['providers', 'update', 'demo', '--file', withValues]);
      expectExit(updated, 0);
      assert.equal(updated.stdout, 'Updated model provider demo (version 2).\n');
      assert.equal((await api.modelProviders.get('demo')).max_retries, 1);

      const removed = await fixture.cli(['providers', 'rm', 'demo']);
      expectExit(removed, 0);
      assert.equal((await api.modelProviders.list()).items.length, 0);
    } finally {
      demo.child.kill('SIGTERM');
      const [code] = await once(demo.child, 'exit');
      assert.equal(code, 0, 'demo-provider exits 0 on SIGTERM');
    }
  });

  test('the README’s hosted agent quick start works as written: the demo model calls the tool and reports it', async () => {
    const demo = await startDemoProvider();
    try {
      const example = (file: string) =>
        fileURLToPath(new URL(`../../../examples/hosted-agent/${file}`, import.meta.url));
      // The tool file as it ships, pointed at this test's server instead of port 8080.
      const tool = JSON.parse(readFileSync(example('tool.json'), 'utf8'));
      assert.equal(tool.source.url, 'http://127.0.0.1:8080/healthz');
      const toolFile = fixture.writeJson('tool.json', {
        ...tool,
        source: { ...tool.source, url: `${fixture.server.url}/healthz` },
      });
      for (const args of [
        addDemo(demo.port),
        ['tools', 'create', '--file', toolFile],
        ['templates', 'create', '--file', example('template.json')],
      ]) {
        expectExit(await fixture.cli(args), 0);
      }
      const run = await fixture.cli([
        'task',
        'submit',
        'assistant',
        '--input',
        '{"prompt":"Is the node up? Ask node_health."}',
        '--follow',
      ]);
      expectExit(run, 0);
      assert.match(run.stdout, /node_health returned: \{"status":"ok"/);
      assert.match(run.stdout, /demo provider: scripted answers, not a language model/);
      assert.match(run.stdout, /succeeded/);
      // The same agent through `orchestra chat`: the answer on stdout, the tool call on stderr.
      const chat = await fixture.cli(['chat', 'assistant', '--message', 'Ask node_health please']);
      expectExit(chat, 0);
      assert.match(chat.stdout, /^node_health returned: \{"status":"ok"/);
      assert.match(chat.stderr, /\[tool node_health \{\}\]\n\[tool node_health: succeeded\]/);
      const piped = await fixture.cli(['chat', 'assistant'], { input: 'Hello there\n' });
      expectExit(piped, 0);
      assert.match(piped.stdout, /^You said: Hello there\n/);
      // In a session, each turn sends only its message: the session remembers.
      const session = await api.sessions.create({ name: 'cli chat' });
      const inSession = await fixture.cli([
        'chat',
        'assistant',
        '--session',
        session.id,
        '--message',
        'First',
      ]);
      expectExit(inSession, 0);
      const [turn] = (await api.tasks.list({ session_id: session.id })).items;
      assert.deepEqual(turn?.input, { prompt: 'First' });
      const unknown = await fixture.cli(['chat', 'nobody', '--message', 'hi']);
      expectExit(unknown, 1);
      assert.match(unknown.stderr, /no template "nobody"/);
      const usage = await fixture.cli(['usage', '--by', 'template']);
      expectExit(usage, 0);
      assert.match(
        usage.stdout,
        /^Usage from \S+ to \S+\nTEMPLATE\s+INPUT\s+OUTPUT\s+CACHED\s+COST\s+CALLS\s+TOOL CALLS\n/,
      );
      assert.match(
        tableRow(usage.stdout, 'assistant'),
        // Six model calls: the submit's two, the chat's two, the piped and the session's one each.
        /^assistant\s+\d+\s+\d+\s+0\s+\$0\.000000\s+6\s+2$/,
      );
      const csv = await fixture.cli(['usage', '--by', 'template', '--csv']);
      expectExit(csv, 0);
      assert.match(csv.stdout, /^template,input_tokens,/);
      const badTime = await fixture.cli(['usage', '--from', 'last week']);
      expectExit(badTime, 2);
      assert.match(badTime.stderr, /--from must be a date/);
      expectExit(await fixture.cli(['templates', 'rm', 'assistant']), 0);
      expectExit(await fixture.cli(['providers', 'rm', 'demo']), 0);
    } finally {
      demo.child.kill('SIGTERM');
      await once(demo.child, 'exit');
    }
  });

  test('a provider that does not answer: test exits 1 and says why', async () => {
    const port = await closedPort();
    expectExit(
      await fixture.cli([
        'providers',
        'add',
        'gone',
        '--kind',
        'anthropic',
        '--base-url',
        `http://127.0.0.1:${port}`,
        '--model',
        'claude',
      ]),
      0,
    );
    const tested = await fixture.cli(['providers', 'test', 'gone']);
    expectExit(tested, 1);
    assert.match(
      tested.stdout,
      /^gone: FAILED in [\d.]+ ms\nError \(unavailable\): gone could not be reached/,
    );
    expectExit(await fixture.cli(['providers', 'rm', 'gone']), 0);
  });

  test('usage errors exit 2 before any request; API errors exit 1 with the code', async () => {
    // A valid `add` up to its last flags, which each case gets wrong.
    const add = (...flags: string[]) => [
      ...['providers', 'add', 'x', '--kind', 'openai', '--base-url', 'http://h', '--model', 'm'],
      ...flags,
    ];
    const cases: [string[], RegExp][] = [
      [['providers', 'add', 'x'], /needs --kind, --base-url and --model, or --file FILE/],
      [
        ['providers', 'add', 'x', '--kind', 'gemini', '--base-url', 'http://h', '--model', 'm'],
        /--kind must be/,
      ],
      [add('--price', 'm=cheap'), /--price must be MODEL=IN\/OUT\[\/CACHED\]/],
      [add('--price', 'n=1/2'), /--price names model "n", which no --model gives/],
      [add('--fallback', 'nomodel'), /--fallback must be PROVIDER\/MODEL/],
      [add('--max-retries', '11'), /--max-retries must be a number from 0 to 10/],
    ];
    for (const [args, message] of cases) {
      const result = await fixture.cli(args);
      expectExit(result, 2);
      assert.match(result.stderr, message, args.join(' '));
    }
    const port = await runCli(['demo-provider', '--port', 'many'], { cwd: fixture.workDir });
    expectExit(port, 2);
    assert.match(port.stderr, /--port must be a port number, got "many"/);
    const missing = await fixture.cli(add('--api-key-secret', 'NOT_SET'));
    expectExit(missing, 1);
    assert.match(missing.stderr, /no secret named NOT_SET exists.*\(VALIDATION_FAILED, HTTP 400\)/);
    const unknown = await fixture.cli(['providers', 'get', 'nobody']);
    expectExit(unknown, 1);
    assert.match(unknown.stderr, /MODEL_PROVIDER_NOT_FOUND/);
    const help = await fixture.cli(['providers', 'add', '--help']);
    expectExit(help, 0);
    assert.match(help.stdout, /--api-key-secret SECRET/);
  });
});
