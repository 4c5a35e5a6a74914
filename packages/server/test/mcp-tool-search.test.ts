import assert from 'node:assert/strict';
import { test } from 'node:test';
import { searchTools, tokenize } from '../src/mcp-gateway/index.ts';

// Issue 20: `search_tools` ranks a catalogue by what a client asks for, so that a model
// does not need every tool in its context.

test('tokenize splits snake_case, camelCase and words, without stop words or plural s', () => {
  assert.deepEqual(tokenize('read_file'), ['read', 'file']);
  assert.deepEqual(tokenize('readFile'), ['read', 'file']);
  assert.deepEqual(tokenize('Read the files of a Git repository'), [
    'read',
    'file',
    'git',
    'repository',
  ]);
  assert.deepEqual(tokenize('parseHTTPResponse'), ['parse', 'http', 'response']);
  assert.deepEqual(tokenize('the a of'), []);
});

const catalogue = [
  { name: 'github_create_issue', description: 'Create a new issue in a GitHub repository' },
  { name: 'github_list_issues', description: 'List issues of a GitHub repository' },
  { name: 'slack_post_message', description: 'Post a message to a Slack channel' },
  { name: 'read_file', description: 'Read the contents of a file' },
  { name: 'write_file', description: 'Write text to a file, replacing it' },
  {
    name: 'query',
    description: 'Run SQL',
    inputSchema: { type: 'object', properties: { database: {}, statement: {} } },
  },
];

const names = (query: string, limit = 10) =>
  searchTools(catalogue, query, limit).map((t) => t.name);

test('search_tools finds tools by words of their name and description, best first', () => {
  assert.equal(names('create an issue on github')[0], 'github_create_issue');
  assert.equal(names('list github issues')[0], 'github_list_issues');
  assert.equal(names('send a slack message')[0], 'slack_post_message');
  assert.deepEqual(names('read files').slice(0, 1), ['read_file']);
  assert.ok(names('file').includes('write_file'));
  // Input property names count too.
  assert.deepEqual(names('database statement'), ['query']);
});

test('search_tools returns at most limit tools, and nothing for a query that matches nothing', () => {
  assert.equal(names('github', 1).length, 1);
  assert.deepEqual(names('kubernetes'), []);
  assert.deepEqual(names('   '), []);
  assert.deepEqual(searchTools([], 'anything', 5), []);
});
