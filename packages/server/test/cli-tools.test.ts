import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CreateToolInput, Orchestra } from '@orchestra/sdk';
import {
  type CliServer,
  echoUpstream,
  expectExit,
  followCli,
  jsonOf,
  startCliServer,
} from './helpers.ts';

// `orchestra tools`, `tool-policies`, `tool-calls` and `approvals` as a user runs them: a
// spawned `node bin/orchestra.js` against a spawned `orchestra start`, whose HTTP tools call
// an upstream in this process. Each test uses tools and policies of its own names.

let fixture: CliServer;
let api: Orchestra;
let upstream: Awaited<ReturnType<typeof echoUpstream>>;

before(async () => {
  upstream = await echoUpstream();
  fixture = await startCliServer('tools');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(async () => {
  await fixture.stop();
  await upstream.close();
});

const cli = (args: string[], options?: { input?: string }) => fixture.cli(args, options);

/** Writes `content` as JSON to a file in the work dir; returns its name. */
function writeJson(name: string, content: unknown): string {
  writeFileSync(join(fixture.workDir, name), JSON.stringify(content));
  return name;
}

/** The table row whose first cell is `first`. */
function row(table: string, first: string): string {
  const found = table.split('\n').find((line) => line.split(/\s+/)[0] === first);
  assert.ok(found, `no row for ${first} in\n${table}`);
  return found;
}

const tool = (name: string, extra: Partial<CreateToolInput> = {}): CreateToolInput => ({
  name,
  description: `Echoes for ${name}`,
  annotations: { readOnlyHint: true },
  input_schema: { type: 'object', properties: { word: { type: 'string' } } },
  source: { type: 'http', method: 'POST', url: `${upstream.url}/echo` },
  ...extra,
});

describe('orchestra tools', () => {
  test('create, ls, get, update from get --json, versions and rm', async () => {
    const created = await cli([
      'tools',
      'create',
      '--file',
      writeJson('echo.json', tool('cli-echo', { labels: { team: 'cli' } })),
    ]);
    expectExit(created, 0);
    const match = /^Created tool cli-echo \((tool_\w+)\), version 1\.\n$/.exec(created.stdout);
    assert.ok(match, created.stdout);

    const table = await cli(['tools', 'ls', '--name-prefix', 'cli-']);
    expectExit(table, 0);
    assert.match(table.stdout, /^NAME\s+ID\s+VERSION\s+STATE\s+SOURCE\s+LABELS\s+UPDATED\n/);
    assert.match(
      row(table.stdout, 'cli-echo'),
      /^cli-echo\s+tool_\w+\s+1\s+active\s+http\s+team=cli\s/,
    );
    assert.deepEqual(jsonOf(await cli(['tools', 'ls', '--label', 'team=nobody', '--json'])), []);
    const bad = await cli(['tools', 'ls', '--state', 'sleepy']);
    expectExit(bad, 2);
    assert.match(bad.stderr, /--state must be active, held, unavailable or disabled/);

    const described = await cli(['tools', 'get', 'cli-echo']);
    expectExit(described, 0);
    assert.match(described.stdout, /^Source: +POST http:\/\/127\.0\.0\.1:\d+\/echo$/m);
    assert.match(described.stdout, /^Destructive: +no$/m);

    // The output of get --json, edited, goes back as the next version.
    const current = jsonOf(await cli(['tools', 'get', match[1] ?? '', '--json']));
    const updated = await cli(['tools', 'update', 'cli-echo', '--file', '-'], {
      input: JSON.stringify({ ...current, description: 'Echoes, version 2' }),
    });
    expectExit(updated, 0);
    assert.match(updated.stdout, /version 2 is the latest/);
    const v1 = jsonOf(await cli(['tools', 'get', 'cli-echo', '--version', '1', '--json']));
    assert.equal(v1.description, 'Echoes for cli-echo');
    const versions = await cli(['tools', 'versions', 'cli-echo']);
    expectExit(versions, 0);
    assert.match(
      versions.stdout,
      /^VERSION\s+LATEST\s+HASH\s+CREATED\s+CREATED BY\n2\s+\*\s+[0-9a-f]{12}\s/,
    );

    // An HTTP tool never has a definition waiting for approval.
    const approve = await cli(['tools', 'approve', 'cli-echo', '--yes']);
    expectExit(approve, 1);
    assert.match(approve.stderr, /cli-echo has no definition waiting for approval/);

    expectExit(await cli(['tools', 'rm', 'cli-echo']), 0);
    const gone = await cli(['tools', 'get', 'cli-echo']);
    expectExit(gone, 1);
    assert.match(gone.stderr, /\(TOOL_NOT_FOUND, HTTP 404\)/);
  });

  test('invoke prints the result’s text, --json the whole call; exit 1 for errors', async () => {
    await api.tools.create(tool('cli-call'));
    await api.tools.create(
      tool('cli-404', { source: { type: 'http', method: 'GET', url: `${upstream.url}/missing` } }),
    );

    const called = await cli(['tools', 'invoke', 'cli-call', '--args', '{"word":"hi"}']);
    expectExit(called, 0);
    assert.equal(called.stdout, '{"got":{"word":"hi"}}\n');

    const whole = jsonOf(
      await cli(['tools', 'invoke', 'cli-call', '--args-file', '-', '--json'], {
        input: '{"word":"yo"}',
      }),
    );
    assert.equal(whole.call.status, 'succeeded');
    assert.deepEqual(whole.result.structured_content, { got: { word: 'yo' } });

    const toolError = await cli(['tools', 'invoke', 'cli-404']);
    expectExit(toolError, 1);
    assert.match(toolError.stdout, /HTTP 404: no such thing/);
    assert.match(toolError.stderr, /the tool reported an error \(call tc_\w+\)/);

    const invalid = await cli(['tools', 'invoke', 'cli-call', '--args', '{"word":7}']);
    expectExit(invalid, 1);
    assert.match(invalid.stderr, /\(TOOL_INVALID_ARGUMENTS, HTTP 400\)/);

    const notJson = await cli(['tools', 'invoke', 'cli-call', '--args', '{word}']);
    expectExit(notJson, 2);
    assert.match(notJson.stderr, /--args is not valid JSON/);

    const calls = await cli(['tool-calls', 'ls', '--tool', 'cli-404']);
    expectExit(calls, 0);
    assert.match(calls.stdout, /^ID\s+TOOL\s+STATUS\s+ERROR\s+CALLER\s+DURATION\s+CREATED\n/);
    assert.match(calls.stdout, /\ntc_\w+\s+cli-404\s+succeeded\s+is_error\s+key_\w+\s+\d+ms\s/);
    const id = /\n(tc_\w+)/.exec(calls.stdout)?.[1] ?? '';
    const record = await cli(['tool-calls', 'get', id]);
    expectExit(record, 0);
    assert.match(record.stdout, /^Error: +the tool reported an error$/m);
    const denied = jsonOf(
      await cli(['tool-calls', 'ls', '--tool', 'cli-call', '--status', 'denied', '--json']),
    );
    assert.deepEqual(
      denied.map((c: { status: string }) => c.status),
      ['denied'],
    );
  });

  test('a policy that requires approval: invoke exits 3, approvals approve asks and runs it', async () => {
    await api.tools.create(tool('ops__ship', { annotations: { destructiveHint: true } }));
    const policy = writeJson('ship.json', {
      name: 'ship-needs-approval',
      effect: 'allow',
      tools: ['ops__ship'],
      approval: 'required',
    });
    expectExit(await cli(['tool-policies', 'create', '--file', policy]), 0);
    const policies = await cli(['tool-policies', 'ls']);
    assert.match(
      row(policies.stdout, 'ship-needs-approval'),
      /\s+allow\s+ops__ship\s+required\s+yes\s/,
    );

    const waiting = await cli(['tools', 'invoke', 'ops__ship', '--args', '{"word":"v2"}']);
    expectExit(waiting, 3);
    const approvalId = /orchestra approvals approve (apr_\w+)/.exec(waiting.stderr)?.[1];
    assert.ok(approvalId, waiting.stderr);
    assert.match(
      row((await cli(['approvals', 'ls'])).stdout, approvalId),
      /\s+ops__ship\s+pending\s+ship-needs-approval\s/,
    );

    // Without a terminal or --yes, the question gets no answer: nothing is approved.
    const unanswered = await cli(['approvals', 'approve', approvalId]);
    expectExit(unanswered, 1);
    assert.match(unanswered.stderr, /"word": "v2"/);
    assert.match(unanswered.stderr, /^Arguments hash: [0-9a-f]{64}$/m);
    assert.match(unanswered.stderr, /Not approved\./);

    const approved = await cli(['approvals', 'approve', approvalId, '--reason', 'ship it'], {
      input: 'y\n',
    });
    expectExit(approved, 0);
    assert.match(
      approved.stdout,
      new RegExp(
        `^Approved ${approvalId}: call tc_\\w+ succeeded\\.\\n\\{"got":\\{"word":"v2"\\}\\}\\n$`,
      ),
    );
    const decided = jsonOf(await cli(['approvals', 'get', approvalId, '--json']));
    assert.equal(decided.status, 'approved');
    assert.equal(decided.reason, 'ship it');

    const second = await cli(['tools', 'invoke', 'ops__ship', '--json']);
    expectExit(second, 3);
    const secondId = JSON.parse(second.stdout).call.approval_id;
    const rejected = await cli(['approvals', 'reject', secondId]);
    expectExit(rejected, 0);
    assert.match(
      rejected.stdout,
      new RegExp(
        `^Rejected ${secondId}: call tc_\\w+ rejected: Rejected by key_\\w+ \\(TOOL_CALL_REJECTED\\)\\.\\n$`,
      ),
    );
    const all = jsonOf(
      await cli(['approvals', 'ls', '--status', 'all', '--tool', 'ops__ship', '--json']),
    );
    assert.deepEqual(
      all.map((a: { status: string }) => a.status),
      ['rejected', 'approved'],
    );

    // get --json, edited, replaces the policy.
    const current = jsonOf(await cli(['tool-policies', 'get', 'ship-needs-approval', '--json']));
    expectExit(
      await cli(['tool-policies', 'update', 'ship-needs-approval', '--file', '-'], {
        input: JSON.stringify({ ...current, approval: 'none' }),
      }),
      0,
    );
    const shipped = await cli(['tools', 'invoke', 'ops__ship']);
    expectExit(shipped, 0);
    expectExit(await cli(['tool-policies', 'rm', 'ship-needs-approval']), 0);
    const gone = await cli(['tool-policies', 'get', 'ship-needs-approval']);
    expectExit(gone, 1);
    assert.match(gone.stderr, /\(TOOL_POLICY_NOT_FOUND, HTTP 404\)/);
  });

  test('tool-calls ls --follow prints calls as they are recorded, until interrupted', async () => {
    await api.tools.create(tool('cli-follow'));
    await api.tools.create(tool('cli-follow-other'));
    const following = followCli(fixture, ['tool-calls', 'ls', '--follow', '--tool', 'cli-follow']);
    try {
      // The header is printed once the subscription is confirmed.
      await following.until('header', () => following.stdout().startsWith('ID\tTOOL'));
      const other = await api.tools.invoke('cli-follow-other', {});
      const { call } = await api.tools.invoke('cli-follow', { word: 'live' });
      await following.until('the call', () => following.stdout().includes(call.id));
      const line =
        following
          .stdout()
          .split('\n')
          .find((l) => l.includes(call.id)) ?? '';
      assert.match(line, new RegExp(`^${call.id}\\tcli-follow\\tsucceeded\\t-\\t`));
      assert.equal(following.exitCode(), null);
      // Recorded before it, and filtered out by --tool.
      assert.ok(!following.stdout().includes(other.call.id), following.stdout());
    } finally {
      await following.stop();
    }
  });
});
