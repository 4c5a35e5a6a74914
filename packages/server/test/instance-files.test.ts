import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import {
  expectError,
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
  tempDir,
} from './helpers.ts';

// The files API and the path service of an instance, through HTTP: reads with ranges and
// ETags, atomic writes guarded by a hash, list/stat/move/delete, ripgrep search, tar both
// ways, the change feed, and a list of path attacks that must all be refused.

const UPLOAD_MAX = 1024 * 1024;

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

interface Raw {
  status: number;
  headers: Headers;
  bytes: Buffer;
  json: any;
}

async function raw(
  server: TestServer,
  method: string,
  path: string,
  options: { body?: Buffer | string; headers?: Record<string, string>; key?: string } = {},
): Promise<Raw> {
  const response = await fetch(server.url + path, {
    method,
    headers: { authorization: `Bearer ${options.key ?? server.adminKey}`, ...options.headers },
    ...(options.body !== undefined
      ? { body: typeof options.body === 'string' ? options.body : new Uint8Array(options.body) }
      : {}),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, bytes, json };
}

const q = (path: string) => encodeURIComponent(path);

for (const store of STORE_VARIANTS) {
  describe(`instance files on ${store}`, () => {
    let server: TestServer;
    let id: string;
    let files: string;
    let workspace: string;
    const outside = tempDir('orchestra-outside-');

    before(async () => {
      server = await startTestServer({
        store,
        env: { ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES: String(UPLOAD_MAX) },
      });
      await server.call('POST', '/v1/workspace-templates', { body: { name: 'files' } });
      const created = await server.call('POST', '/v1/instances', {
        body: { template: 'files', start: false },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      id = created.body.id;
      files = `/v1/instances/${id}/files`;
      workspace = join(server.dataDir, 'instances', id, 'workspace');
      writeFileSync(join(outside.path, 'secret'), 'outside the instance');
    });

    after(async () => {
      await server.stop();
      outside.remove();
    });

    const put = (path: string, body: string | Buffer, headers: Record<string, string> = {}) =>
      raw(server, 'PUT', `${files}/content?path=${q(path)}`, {
        body,
        headers: { 'content-type': 'application/octet-stream', ...headers },
      });

    test('write, read with ETag and ranges, replace guarded by If-Match and If-None-Match', async () => {
      const created = await put('src/hello.txt', 'hello, world\n');
      assert.equal(created.status, 201, created.bytes.toString());
      assert.equal(created.json.sha256, sha256('hello, world\n'));
      assert.equal(created.json.type, 'file');
      assert.equal(created.json.path, 'src/hello.txt');
      assert.equal(created.headers.get('etag'), `"${sha256('hello, world\n')}"`);
      assert.equal(readFileSync(join(workspace, 'src/hello.txt'), 'utf8'), 'hello, world\n');

      const read = await raw(server, 'GET', `${files}/content?path=src/hello.txt`);
      assert.equal(read.status, 200);
      assert.equal(read.bytes.toString(), 'hello, world\n');
      assert.equal(read.headers.get('etag'), `"${sha256('hello, world\n')}"`);
      assert.equal(read.headers.get('accept-ranges'), 'bytes');

      const part = await raw(server, 'GET', `${files}/content?path=src/hello.txt`, {
        headers: { range: 'bytes=7-11' },
      });
      assert.equal(part.status, 206);
      assert.equal(part.bytes.toString(), 'world');
      assert.equal(part.headers.get('content-range'), 'bytes 7-11/13');
      const tail = await raw(server, 'GET', `${files}/content?path=src/hello.txt`, {
        headers: { range: 'bytes=-6' },
      });
      assert.equal(tail.bytes.toString(), 'world\n');
      const past = await raw(server, 'GET', `${files}/content?path=src/hello.txt`, {
        headers: { range: 'bytes=13-' },
      });
      expectError({ status: past.status, body: past.json }, 416, 'RANGE_NOT_SATISFIABLE');
      assert.equal(past.headers.get('content-range'), 'bytes */13');

      // A stale hash loses nothing: 412, the file as it was, and the current hash to retry with.
      const stale = await put('src/hello.txt', 'lost update', { 'if-match': `"${sha256('x')}"` });
      const error = expectError(
        { status: stale.status, body: stale.json },
        412,
        'PRECONDITION_FAILED',
      );
      assert.equal(error.details.sha256, sha256('hello, world\n'));
      assert.equal(readFileSync(join(workspace, 'src/hello.txt'), 'utf8'), 'hello, world\n');
      const replaced = await put('src/hello.txt', 'hello again\n', {
        'if-match': read.headers.get('etag') as string,
      });
      assert.equal(replaced.status, 200, replaced.bytes.toString());
      assert.equal(replaced.json.sha256, sha256('hello again\n'));
      const exists = await put('src/hello.txt', 'no', { 'if-none-match': '*' });
      expectError({ status: exists.status, body: exists.json }, 409, 'WORKSPACE_FILE_EXISTS');
      const missing = await put('src/none.txt', 'no', { 'if-match': '*' });
      expectError({ status: missing.status, body: missing.json }, 412, 'PRECONDITION_FAILED');
      assert.equal(existsSync(join(workspace, 'src/none.txt')), false);

      // Binary content round-trips byte for byte; an empty body makes an empty file.
      const binary = Buffer.from([0, 255, 1, 254, 10, 13, 0]);
      assert.equal((await put('bin/data', binary)).status, 201);
      assert.deepEqual((await raw(server, 'GET', `${files}/content?path=bin/data`)).bytes, binary);
      assert.equal((await put('empty', '')).json.size, 0);

      // Too large: 413, and the file keeps its content; no temporary file is left behind.
      const big = await put('src/hello.txt', Buffer.alloc(UPLOAD_MAX + 1, 97));
      expectError({ status: big.status, body: big.json }, 413, 'PAYLOAD_TOO_LARGE');
      assert.equal(readFileSync(join(workspace, 'src/hello.txt'), 'utf8'), 'hello again\n');
      assert.deepEqual(
        execFileSync('ls', ['-A', join(workspace, 'src')], { encoding: 'utf8' }).trim(),
        'hello.txt',
      );

      // Sent in chunks, without a length to refuse it by: read up to the limit, the rest
      // dropped, and the client still gets the 413 (not a reset connection).
      const parts = Array.from({ length: 6 }, () => Buffer.alloc(UPLOAD_MAX / 2, 98));
      for (const target of [
        `${files}/content?path=src/hello.txt`,
        `${files}/archive?path=chunked`,
      ]) {
        const chunked = await fetch(server.url + target, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${server.adminKey}`,
            'content-type': 'application/octet-stream',
          },
          body: new ReadableStream({
            pull(controller) {
              const next = parts.shift();
              if (next === undefined) controller.close();
              else controller.enqueue(new Uint8Array(next));
            },
          }),
          duplex: 'half',
        } as RequestInit);
        expectError(
          { status: chunked.status, body: await chunked.json() },
          413,
          'PAYLOAD_TOO_LARGE',
        );
        parts.push(...Array.from({ length: 6 }, () => Buffer.alloc(UPLOAD_MAX / 2, 98)));
      }
      assert.equal(readFileSync(join(workspace, 'src/hello.txt'), 'utf8'), 'hello again\n');

      // Reading a directory, or writing over one, is refused.
      const dir = await raw(server, 'GET', `${files}/content?path=src`);
      expectError({ status: dir.status, body: dir.json }, 400, 'VALIDATION_FAILED');
      const overDir = await put('src', 'x');
      expectError({ status: overDir.status, body: overDir.json }, 409, 'WORKSPACE_FILE_EXISTS');
      const none = await raw(server, 'GET', `${files}/content?path=nothing/here`);
      expectError({ status: none.status, body: none.json }, 404, 'WORKSPACE_FILE_NOT_FOUND');
    });

    test('list (paged, by name), stat (a link described, a hash on request), directories, move and delete', async () => {
      for (const name of ['c', 'a', 'b', 'd']) await put(`list/${name}.txt`, name);
      symlinkSync('a.txt', join(workspace, 'list', 'link'));
      const first = await server.call('GET', `${files}?path=list&limit=2`);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.deepEqual(
        first.body.items.map((e: { name: string }) => e.name),
        ['a.txt', 'b.txt'],
      );
      const second = await server.call(
        'GET',
        `${files}?path=list&limit=2&cursor=${first.body.next_cursor}`,
      );
      assert.deepEqual(
        second.body.items.map((e: { name: string }) => e.name),
        ['c.txt', 'd.txt'],
      );
      const third = await server.call(
        'GET',
        `${files}?path=list&limit=2&cursor=${second.body.next_cursor}`,
      );
      assert.deepEqual(
        third.body.items.map((e: { name: string }) => e.name),
        ['link'],
      );
      assert.equal(third.body.next_cursor, null);
      expectError(await server.call('GET', `${files}?cursor=bogus!`), 400, 'INVALID_CURSOR');
      expectError(await server.call('GET', `${files}?path=list/a.txt`), 400, 'VALIDATION_FAILED');

      const link = await server.call('GET', `${files}/stat?path=list/link`);
      assert.equal(link.body.type, 'symlink');
      assert.equal(link.body.target, 'a.txt');
      const hashed = await server.call('GET', `${files}/stat?path=list/a.txt&hash=true`);
      assert.equal(hashed.body.sha256, sha256('a'));
      assert.equal(hashed.body.mode, '644');
      const root = await server.call('GET', `${files}/stat?path=`);
      assert.equal(root.body.type, 'directory');

      const made = await server.call('POST', `${files}/directories`, {
        body: { path: 'deep/er/still', parents: true },
      });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      expectError(
        await server.call('POST', `${files}/directories`, { body: { path: 'deep' } }),
        409,
        'WORKSPACE_FILE_EXISTS',
      );
      expectError(
        await server.call('POST', `${files}/directories`, { body: { path: 'no/parent' } }),
        404,
        'WORKSPACE_FILE_NOT_FOUND',
      );

      const moved = await server.call('POST', `${files}/move`, {
        body: { from: 'list/a.txt', to: 'deep/a.txt' },
      });
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      assert.equal(moved.body.path, 'deep/a.txt');
      expectError(
        await server.call('POST', `${files}/move`, {
          body: { from: 'list/b.txt', to: 'list/c.txt' },
        }),
        409,
        'WORKSPACE_FILE_EXISTS',
      );
      const over = await server.call('POST', `${files}/move`, {
        body: { from: 'list/b.txt', to: 'list/c.txt', overwrite: true },
      });
      assert.equal(over.status, 200);
      assert.equal(readFileSync(join(workspace, 'list/c.txt'), 'utf8'), 'b');
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'deep', to: 'deep/er/x' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'list/c.txt', to: 'deep' } }),
        409,
        'WORKSPACE_FILE_EXISTS',
      );
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'gone', to: 'x' } }),
        404,
        'WORKSPACE_FILE_NOT_FOUND',
      );

      // A link is deleted, not what it points to; a full directory needs recursive=true.
      assert.equal((await server.call('DELETE', `${files}?path=list/link`)).status, 204);
      assert.equal(existsSync(join(workspace, 'list/link')), false);
      expectError(
        await server.call('DELETE', `${files}?path=deep`),
        409,
        'WORKSPACE_DIRECTORY_NOT_EMPTY',
      );
      assert.equal((await server.call('DELETE', `${files}?path=deep&recursive=true`)).status, 204);
      assert.equal(existsSync(join(workspace, 'deep')), false);
      expectError(await server.call('DELETE', `${files}?path=.`), 400, 'VALIDATION_FAILED');
      expectError(
        await server.call('DELETE', `${files}?path=deep`),
        404,
        'WORKSPACE_FILE_NOT_FOUND',
      );
    });

    test('path attacks are refused: nothing outside the workspace is read, written, listed or deleted', async () => {
      // Links a process of the instance could have made: out to the host, and out of the
      // workspace into the instance's own logs.
      symlinkSync(outside.path, join(workspace, 'out'));
      symlinkSync(join(outside.path, 'secret'), join(workspace, 'secret-link'));
      symlinkSync('../logs', join(workspace, 'logs-link'));
      symlinkSync('../../..', join(workspace, 'up'));
      const attacks = [
        '../secret',
        'a/../../secret',
        `${'../'.repeat(12)}etc/passwd`,
        '/etc/passwd',
        outside.path,
        'out/secret',
        'out',
        'secret-link',
        'logs-link',
        'logs-link/service.log',
        'up/etc/passwd',
        'up',
      ];
      for (const path of attacks) {
        for (const [method, route] of [
          ['GET', `${files}/content?path=${q(path)}`],
          ['GET', `${files}?path=${q(path)}`],
          ['GET', `${files}/search?query=outside&path=${q(path)}`],
          ['GET', `${files}/paths/structure?path=${q(path)}`.replace('/files/paths', '/paths')],
        ] as const) {
          const got = await raw(server, method, route);
          assert.ok(
            got.status === 400 || got.status === 404,
            `${method} ${route}: ${got.status} ${got.bytes.toString()}`,
          );
          assert.ok(!got.bytes.toString().includes('outside the instance'), route);
          assert.ok(!got.bytes.toString().includes('root:x:0'), route);
        }
        const written = await put(`${path}/planted`, 'planted');
        assert.ok(
          written.status === 400 || written.status === 409,
          `PUT ${path}: ${written.status}`,
        );
      }
      // Writing through a link out, with or without parents, creates nothing out there.
      for (const path of ['out/new', 'out/sub/dir/new', 'secret-link', 'logs-link/x']) {
        const got = await put(path, 'planted');
        assert.ok(got.status === 400 || got.status === 409, `${path}: ${got.status}`);
      }
      const mkdir = await server.call('POST', `${files}/directories`, {
        body: { path: 'out/made', parents: true },
      });
      expectError(mkdir, 400, 'VALIDATION_FAILED');
      assert.deepEqual(
        execFileSync('ls', ['-A', outside.path], { encoding: 'utf8' }).trim(),
        'secret',
      );
      assert.equal(readFileSync(join(outside.path, 'secret'), 'utf8'), 'outside the instance');
      // Moving or deleting through a link out is refused; deleting the link itself is not.
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'out/secret', to: 'stolen' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'list/c.txt', to: 'out/c' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('DELETE', `${files}?path=out/secret`),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(existsSync(join(outside.path, 'secret')), true);
      // A NUL byte, an encoded separator, a path far too long.
      expectError(
        await server.call('GET', `${files}/content?path=a%00b`),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', `${files}/content?path=..%2Fsecret`),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', `${files}/content?path=${'a/'.repeat(3000)}`),
        400,
        'VALIDATION_FAILED',
      );
      // Encoded twice, or with a backslash, it is just an odd name inside.
      expectError(
        await server.call('GET', `${files}/content?path=..%252Fsecret`),
        404,
        'WORKSPACE_FILE_NOT_FOUND',
      );
      expectError(
        await server.call('GET', `${files}/content?path=..%5Csecret`),
        404,
        'WORKSPACE_FILE_NOT_FOUND',
      );
      // The path service says so too, without an error.
      const validated = await server.call('POST', `/v1/instances/${id}/paths/validate`, {
        body: { paths: ['src/new.txt', '../x', 'out/secret', 'up'] },
      });
      assert.equal(validated.status, 200, JSON.stringify(validated.body));
      assert.deepEqual(
        validated.body.paths.map((p: { valid: boolean }) => p.valid),
        [true, false, false, false],
      );
      assert.equal(validated.body.overall_status, 'invalid');
      for (const link of ['out', 'secret-link', 'logs-link', 'up']) {
        assert.equal((await server.call('DELETE', `${files}?path=${link}`)).status, 204);
      }
      assert.equal(existsSync(join(outside.path, 'secret')), true);
    });

    test('tar archives: download a directory, upload one; an archive cannot plant files outside', async () => {
      await put('pkg/one.txt', 'one');
      await put('pkg/sub/two.txt', 'two');
      const tarball = await raw(server, 'GET', `${files}/archive?path=pkg`);
      assert.equal(tarball.status, 200);
      assert.equal(tarball.headers.get('content-type'), 'application/x-tar');
      const listing = execFileSync('tar', ['-t'], { input: tarball.bytes, encoding: 'utf8' });
      assert.deepEqual(listing.trim().split('\n').sort(), [
        'pkg/',
        'pkg/one.txt',
        'pkg/sub/',
        'pkg/sub/two.txt',
      ]);

      const uploaded = await raw(server, 'PUT', `${files}/archive?path=copy`, {
        body: tarball.bytes,
        headers: { 'content-type': 'application/x-tar' },
      });
      assert.equal(uploaded.status, 200, uploaded.bytes.toString());
      assert.equal(uploaded.json.path, 'copy');
      assert.equal(readFileSync(join(workspace, 'copy/pkg/sub/two.txt'), 'utf8'), 'two');
      // Compressed archives are recognised by their first bytes.
      const gzipped = await raw(server, 'PUT', `${files}/archive?path=gz`, {
        body: gzipSync(tarball.bytes),
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(gzipped.status, 200, gzipped.bytes.toString());
      assert.equal(readFileSync(join(workspace, 'gz/pkg/one.txt'), 'utf8'), 'one');

      // A hostile archive: `..` members, an absolute name, a link out then a file through it.
      const hostile = tempDir('orchestra-hostile-');
      try {
        mkdirSync(join(hostile.path, 'in'));
        writeFileSync(join(hostile.path, 'evil'), 'evil');
        symlinkSync(outside.path, join(hostile.path, 'in', 'escape'));
        const archive = join(hostile.path, 'hostile.tar');
        execFileSync('tar', ['-c', '-f', archive, '-C', join(hostile.path, 'in'), 'escape']);
        execFileSync('tar', [
          '-r',
          '-f',
          archive,
          '-C',
          hostile.path,
          '--transform=s|^evil$|escape/planted|',
          'evil',
        ]);
        execFileSync('tar', [
          '-r',
          '-f',
          archive,
          '-C',
          hostile.path,
          '--transform=s|^evil$|../../../evil-up|',
          'evil',
        ]);
        execFileSync('tar', [
          '-r',
          '-f',
          archive,
          '-P',
          '-C',
          hostile.path,
          `--transform=s|^evil$|${join(outside.path, 'absolute')}|`,
          'evil',
        ]);
        const got = await raw(server, 'PUT', `${files}/archive?path=unpacked`, {
          body: readFileSync(archive),
          headers: { 'content-type': 'application/x-tar' },
        });
        assert.ok(
          got.status === 200 || got.status === 400,
          `${got.status} ${got.bytes.toString()}`,
        );
      } finally {
        hostile.remove();
      }
      assert.deepEqual(
        execFileSync('ls', ['-A', outside.path], { encoding: 'utf8' }).trim(),
        'secret',
      );
      assert.equal(existsSync(join(server.dataDir, 'instances', id, 'evil-up')), false);
      assert.equal(existsSync(join(server.dataDir, 'evil-up')), false);

      const broken = await raw(server, 'PUT', `${files}/archive`, {
        body: 'this is not a tar archive at all, not even close'.repeat(20),
        headers: { 'content-type': 'application/x-tar' },
      });
      expectError({ status: broken.status, body: broken.json }, 400, 'BAD_REQUEST');
      // An archive larger than the limit: 413 (tar would have read it all).
      const large = tempDir('orchestra-large-');
      let bigTar: Buffer;
      try {
        writeFileSync(join(large.path, 'blob'), Buffer.alloc(UPLOAD_MAX + 1, 120));
        bigTar = execFileSync('tar', ['-c', '-C', large.path, 'blob'], {
          maxBuffer: 8 * UPLOAD_MAX,
        });
      } finally {
        large.remove();
      }
      const big = await raw(server, 'PUT', `${files}/archive?path=big`, {
        body: bigTar,
        headers: { 'content-type': 'application/x-tar' },
      });
      expectError({ status: big.status, body: big.json }, 413, 'PAYLOAD_TOO_LARGE');
    });

    test('search with ripgrep, the project structure with sizes, path info and tests; .gitignore respected', async () => {
      await put('proj/.gitignore', 'build/\n*.log\n');
      await put('proj/src/main.ts', 'const answer = 42;\nconsole.log(answer);\n');
      await put('proj/src/util.ts', 'export const Answer = "forty-two";\n');
      await put('proj/build/out.js', 'const answer = 42;\n');
      await put('proj/debug.log', 'answer\n');
      await put('proj/.hidden/conf', 'answer = yes\n');

      const found = await server.call('GET', `${files}/search?query=answer&path=proj`);
      assert.equal(found.status, 200, JSON.stringify(found.body));
      const where = found.body.matches.map(
        (m: { path: string; line: number }) => `${m.path}:${m.line}`,
      );
      assert.deepEqual(where.sort(), [
        'proj/.hidden/conf:1',
        'proj/src/main.ts:1',
        'proj/src/main.ts:2',
      ]);
      const first = found.body.matches.find((m: { path: string }) => m.path === 'proj/src/main.ts');
      assert.equal(first.column, 7);
      assert.equal(first.text, 'const answer = 42;');
      const caseless = await server.call(
        'GET',
        `${files}/search?query=answer&path=proj&case_sensitive=false&glob=*.ts`,
      );
      assert.equal(caseless.body.matches.length, 3);
      const regex = await server.call('GET', `${files}/search?query=%5Cd%2B&regex=true&path=proj`);
      assert.deepEqual(
        regex.body.matches.map((m: { path: string }) => m.path),
        ['proj/src/main.ts'],
      );
      const capped = await server.call(
        'GET',
        `${files}/search?query=answer&path=proj&max_results=1`,
      );
      assert.equal(capped.body.matches.length, 1);
      assert.equal(capped.body.truncated, true);
      expectError(
        await server.call('GET', `${files}/search?query=%28unclosed&regex=true`),
        400,
        'VALIDATION_FAILED',
      );
      const nothing = await server.call('GET', `${files}/search?query=zzzznotthere`);
      assert.deepEqual(nothing.body, { matches: [], truncated: false });

      const tree = await server.call('GET', `/v1/instances/${id}/paths/structure?path=proj`);
      assert.equal(tree.status, 200, JSON.stringify(tree.body));
      const names = (node: { name: string; children?: unknown[] }): unknown =>
        node.children
          ? { [node.name]: (node.children as { name: string }[]).map((c) => names(c as never)) }
          : node.name;
      assert.deepEqual(names(tree.body.root), {
        proj: ['.gitignore', { '.hidden': ['conf'] }, { src: ['main.ts', 'util.ts'] }],
      });
      const size =
        'const answer = 42;\nconsole.log(answer);\n'.length +
        'export const Answer = "forty-two";\n'.length;
      const src = tree.body.root.children.find((c: { name: string }) => c.name === 'src');
      assert.equal(src.size, size);
      assert.equal(tree.body.truncated, false);
      const everything = await server.call(
        'GET',
        `/v1/instances/${id}/paths/structure?path=proj&ignored=true`,
      );
      assert.ok(everything.body.root.children.some((c: { name: string }) => c.name === 'build'));
      const shallow = await server.call(
        'GET',
        `/v1/instances/${id}/paths/structure?path=proj&depth=1`,
      );
      assert.equal(shallow.body.truncated, true);
      assert.ok(shallow.body.root.children.every((c: { type: string }) => c.type === 'file'));

      const info = await server.call('GET', `/v1/instances/${id}/paths`);
      assert.equal(info.body.paths.workspace, workspace);
      assert.equal(info.body.paths.project_root, join(server.dataDir, 'instances', id));
      const valid = await server.call('POST', `/v1/instances/${id}/paths/validate`, { body: {} });
      assert.equal(valid.body.overall_status, 'valid', JSON.stringify(valid.body));
      assert.deepEqual(
        valid.body.layout.map((l: { path_type: string }) => l.path_type),
        ['project_root', 'workspace', 'user_data', 'extensions', 'logs', 'temp'],
      );
      const tested = await server.call('POST', `/v1/instances/${id}/paths/test`, {
        body: { paths: ['proj/src/main.ts', 'proj', 'missing', '../x'] },
      });
      assert.deepEqual(
        tested.body.results.map(
          (r: { exists: boolean; type: string | null; inside: boolean; readable: boolean }) => [
            r.inside,
            r.exists,
            r.type,
            r.readable,
          ],
        ),
        [
          [true, true, 'file', true],
          [true, true, 'directory', true],
          [true, false, null, false],
          [false, false, null, false],
        ],
      );
    });

    test('the change feed: changes through the API while stopped, and by the instance’s processes while it runs', async () => {
      const head = await raw(server, 'GET', `${files}/events?follow=false`);
      const before = head.bytes.toString().split('\n').filter(Boolean).length;
      await put('feed/a.txt', 'a');
      await put('feed/a.txt', 'b');
      await server.call('DELETE', `${files}?path=feed/a.txt`);
      const events = async () =>
        (await raw(server, 'GET', `${files}/events?follow=false`)).bytes
          .toString()
          .split('\n')
          .filter(Boolean)
          .map(
            (line) =>
              JSON.parse(line) as {
                offset: number;
                type: string;
                data: { path: string; kind: string | null };
              },
          );
      const stopped = (await events()).slice(before).map((e) => `${e.type} ${e.data.path}`);
      assert.deepEqual(stopped, [
        'file.created feed',
        'file.created feed/a.txt',
        'file.changed feed/a.txt',
        'file.deleted feed/a.txt',
      ]);

      // Running: the watcher reports what commands do. It starts as the instance does; a
      // probe tells when it sees changes.
      assert.equal((await server.call('POST', `/v1/instances/${id}/start`)).status, 200);
      for (let i = 0; ; i++) {
        const probe = await server.call('POST', `/v1/instances/${id}/exec`, {
          body: { command: ['sh', '-c', `echo ${i} > probe-${i}`] },
        });
        assert.equal(probe.body.exit_code, 0, JSON.stringify(probe.body));
        // Reported a moment later (changes are gathered first): any probe seen will do.
        const seen = (await events()).some((e) => e.data.path.startsWith('probe-'));
        if (seen) break;
        assert.ok(i < 100, 'the watcher never reported a change');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const mark = (await events()).at(-1)?.offset ?? 0;
      const run = async (script: string) => {
        const ran = await server.call('POST', `/v1/instances/${id}/exec`, {
          body: { command: ['sh', '-c', script] },
        });
        assert.equal(ran.body.exit_code, 0, JSON.stringify(ran.body));
      };
      const since = async (wanted: string) => {
        let seen: string[] = [];
        for (let i = 0; i < 300; i++) {
          seen = (await events())
            .filter((e) => e.offset > mark)
            .map((e) => `${e.type} ${e.data.path}`);
          if (seen.includes(wanted)) return seen;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        assert.fail(`never saw "${wanted}": ${seen.join(', ')}`);
      };
      await run('mkdir -p w/deep && echo one > w/deep/f');
      await since('file.created w/deep/f');
      await run('echo two >> w/deep/f');
      await since('file.changed w/deep/f');
      await run('mv w/deep/f w/g && rm -r w/deep && mkdir .git && echo x > .git/HEAD');
      let seen = await since('file.deleted w/deep');
      assert.ok(seen.includes('file.created w'), seen.join(', '));
      assert.ok(seen.includes('file.created w/deep'), seen.join(', '));
      assert.ok(seen.includes('file.created w/g'), seen.join(', '));
      assert.ok(!seen.some((s) => s.includes('.git/')), seen.join(', '));
      // A write through the API while it runs is reported once, by the watcher, as changed.
      await put('w/g', 'three');
      for (let i = 0; i < 300; i++) {
        seen = (await events())
          .filter((e) => e.offset > mark)
          .map((e) => `${e.type} ${e.data.path}`);
        if (seen.includes('file.changed w/g')) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(seen.includes('file.changed w/g'), seen.join(', '));
      assert.ok(!seen.some((s) => s.includes('.orchestra-')), seen.join(', '));
      await server.call('POST', `/v1/instances/${id}/stop`);
    });

    test('another tenant sees none of the files; bad input is a 400', async () => {
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `files-${store}` } });
      const key = tenant.body.admin_key.secret as string;
      for (const [method, path] of [
        ['GET', `${files}?path=`],
        ['GET', `${files}/content?path=src/hello.txt`],
        ['GET', `${files}/stat?path=src`],
        ['GET', `${files}/search?query=hello`],
        ['GET', `${files}/archive`],
        ['GET', `${files}/events?follow=false`],
        ['GET', `/v1/instances/${id}/paths`],
        ['GET', `/v1/instances/${id}/paths/structure`],
        ['DELETE', `${files}?path=src`],
      ] as const) {
        const got = await raw(server, method, path, { key });
        expectError({ status: got.status, body: got.json }, 404, 'WORKSPACE_INSTANCE_NOT_FOUND');
      }
      const planted = await raw(server, 'PUT', `${files}/content?path=x`, { key, body: 'x' });
      expectError(
        { status: planted.status, body: planted.json },
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      assert.equal(existsSync(join(workspace, 'x')), false);

      expectError(await server.call('GET', `${files}/content`), 400, 'VALIDATION_FAILED');
      expectError(await server.call('GET', `${files}?limit=0`), 400, 'VALIDATION_FAILED');
      expectError(await server.call('GET', `${files}/search`), 400, 'VALIDATION_FAILED');
      expectError(
        await server.call('POST', `${files}/move`, { body: { from: 'a' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', `/v1/instances/${id}/paths/test`, { body: { paths: [] } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', '/v1/instances/ins_none/files?path='),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      const noPath = await raw(server, 'PUT', `${files}/content?path=`, { body: 'x' });
      expectError({ status: noPath.status, body: noPath.json }, 400, 'VALIDATION_FAILED');
    });
  });
}
