import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { SETTINGS } from '../src/modules.ts';
import { CLOSE_CODES, ERROR_CATALOGUE } from '../src/platform/errors.ts';

const root = new URL('../../../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

test('docs/errors.md catalogues exactly the codes the server can send, with their status', () => {
  const doc = read('docs/errors.md');
  const rows = [...doc.matchAll(/^\|\s*`([A-Z_]+)`\s*\|\s*(\d{3})\s*\|/gm)].map((m) => [
    m[1],
    Number(m[2]),
  ]);
  const documented = new Map(rows as [string, number][]);
  for (const [code, { status }] of Object.entries(ERROR_CATALOGUE)) {
    assert.equal(
      documented.get(code),
      status,
      `${code} (${status}) is not in docs/errors.md with that status`,
    );
  }
  for (const code of documented.keys()) {
    assert.ok(
      code in ERROR_CATALOGUE,
      `docs/errors.md lists ${code}, which the server does not have`,
    );
  }
});

test('docs/errors.md lists exactly the WebSocket close codes the server sends', () => {
  const doc = read('docs/errors.md');
  const section = doc.slice(doc.indexOf('## WebSocket close codes'));
  const documented = new Set(
    [...section.matchAll(/^\|\s*`(\d{4})`\s*\|/gm)].map((m) => Number(m[1])),
  );
  const sent = new Set(Object.values(CLOSE_CODES).map((c) => c.code));
  assert.deepEqual([...documented].sort(), [...sent].sort());
});

test('the README documents every setting with its default, and the two quick-start commands', () => {
  const readme = read('README.md');
  for (const [key, spec] of Object.entries(SETTINGS)) {
    const cells = (line: string) => line.split('|').map((cell) => cell.trim());
    const row = readme
      .split('\n')
      .find((line) => cells(line)[1] === `\`${spec.env}\`` && cells(line)[2] === `\`${key}\``);
    assert.ok(row, `README.md has no row for ${spec.env}`);
    if ('default' in spec)
      assert.ok(row.includes(`\`${String(spec.default)}\``), `README.md default of ${spec.env}`);
  }
  assert.ok(readme.includes('npm install && npm start'));
  assert.ok(readme.includes('npm test'));
});

test('the deploy files use only settings that exist, and start the server that exists', () => {
  const known = new Set<string>(Object.values(SETTINGS).map((spec) => spec.env));
  for (const file of ['deploy/compose.yaml', 'deploy/Dockerfile']) {
    const used = new Set(read(file).match(/ORCHESTRA_[A-Z0-9_]+/g) ?? []);
    assert.ok(used.size > 0, `${file} configures Orchestra`);
    for (const name of used) assert.ok(known.has(name), `${file}: ${name} is not a setting`);
  }
  const cmd = /CMD \["node", "([^"]+)", "start"\]/.exec(read('deploy/Dockerfile'))?.[1];
  assert.ok(cmd, 'the Dockerfile starts the server');
  assert.ok(read(cmd).length > 0);
  // The image builds the console with the script npm install runs, and ships the result.
  const scripts = [...read('deploy/Dockerfile').matchAll(/^RUN node (\S+)/gm)].map((m) => m[1]);
  assert.deepEqual(scripts, ['packages/console/scripts/build.ts']);
  for (const script of scripts) assert.ok(read(script ?? '').length > 0);
  assert.match(read('deploy/Dockerfile'), /COPY --from=console \S+\/packages\/console\/dist /);
  // The CLI imports @orchestra/sdk, which outside npm resolves to its built dist/ (decision 0012).
  assert.match(read('deploy/Dockerfile'), /COPY --from=console \S+\/packages\/sdk\/dist /);
  // Every node the load balancer sends to is a service of the compose file, and back.
  const compose = read('deploy/compose.yaml');
  const balanced = [...read('deploy/haproxy.cfg').matchAll(/^\s*server (\S+) (\S+):8080/gm)];
  assert.equal(balanced.length, 3);
  for (const [, name, host] of balanced) {
    assert.equal(name, host);
    assert.match(compose, new RegExp(`^  ${host}:$`, 'm'));
  }
});

test('every image the README shows exists', () => {
  const images = [...read('README.md').matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1] ?? '');
  assert.ok(images.length >= 6, 'the README shows the console');
  for (const image of images) assert.ok(read(image).length > 0, image);
});

test('the README quick start fits together: one template file, one capability, $KEY defined before use', () => {
  const readme = read('README.md');
  const template = JSON.parse(read('examples/code-stats/template.json')) as {
    name: string;
    capabilities: string[];
  };
  // The commands create the template from the file that ships, and submit by its name.
  assert.match(readme, /templates create --file examples\/code-stats\/template\.json/);
  assert.match(readme, /-d @examples\/code-stats\/template\.json/);
  assert.match(readme, new RegExp(`task submit ${template.name} `));
  // One capability name everywhere: the template's, the example agent's, the SDK snippet's.
  assert.deepEqual(template.capabilities, ['code-stats']);
  const agent = read('examples/code-stats/agent.ts');
  assert.match(agent, /capabilities: \['code-stats'\]/);
  for (const file of ['README.md', 'packages/sdk/README.md']) {
    const snippets = [...read(file).matchAll(/capabilities: \[([^\]]*)\]/g)].map((m) => m[1]);
    assert.ok(snippets.length > 0, `${file} has an agent snippet`);
    for (const s of snippets) assert.equal(s, "'code-stats'", `${file} names capabilities [${s}]`);
  }
  assert.match(read('packages/sdk/README.md'), /template: 'code-stats'/);
  for (const m of readme.matchAll(/--capability (\S+)/g)) assert.equal(m[1], 'code-stats');
  // Every shell block that uses $KEY comes after the line that sets it.
  const defined = readme.indexOf('KEY=$(cat .orchestra/admin-key)');
  assert.ok(defined > 0, 'the README sets KEY');
  assert.ok(readme.indexOf('$KEY') > defined, 'the README uses $KEY before it sets it');
});
