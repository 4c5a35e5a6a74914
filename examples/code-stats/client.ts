import { resolve } from 'node:path';
import { isTerminalState, Orchestra, OrchestraError } from '@orchestra/sdk';
import type { CodeStats } from './agent.ts';

// Submits a `code-stats` task for a directory, prints its progress as the agent reports
// it, then the result.
//
//   node examples/code-stats/client.ts <directory> [--json]
//
//   ORCHESTRA_URL      server URL (default http://localhost:8080)
//   ORCHESTRA_API_KEY  an operator or admin key
//
// The agent reads the directory, so give a path that exists where the agent runs. With
// --json the result is printed as one JSON line. Ctrl-C cancels the task. Exits 0 when the
// task succeeded, 1 otherwise.

const args = process.argv.slice(2);
const json = args.includes('--json');
const directory = args.find((a) => !a.startsWith('--'));
const apiKey = process.env.ORCHESTRA_API_KEY;
if (directory === undefined || !apiKey) {
  console.error(
    'Usage: ORCHESTRA_API_KEY=<key> node examples/code-stats/client.ts <directory> [--json]',
  );
  process.exit(2);
}

const orchestra = new Orchestra({
  url: process.env.ORCHESTRA_URL ?? 'http://localhost:8080',
  apiKey,
});

/** The counts as a text table, one row per extension and a total. */
function table(stats: CodeStats): string {
  const rows = [
    ['extension', 'files', 'lines', 'bytes'],
    ...Object.entries(stats.by_extension).map(([ext, c]) => [ext, c.files, c.lines, c.bytes]),
    ['total', stats.files, stats.lines, stats.bytes],
  ].map((row) => row.map(String));
  const width = (column: number) => Math.max(...rows.map((row) => row[column]?.length ?? 0));
  return rows
    .map(([name = '', ...counts]) =>
      [name.padEnd(width(0)), ...counts.map((c, i) => c.padStart(width(i + 1)))].join('  '),
    )
    .join('\n');
}

try {
  const task = await orchestra.tasks.create({
    capabilities: ['code-stats'],
    input: { path: resolve(directory) },
  });
  console.log(`task ${task.id} submitted for ${resolve(directory)}`);
  process.once('SIGINT', () => {
    console.log(`cancelling ${task.id}`);
    void orchestra.tasks.cancel(task.id).finally(() => process.exit(130));
  });

  for await (const event of orchestra.tasks.events(task.id)) {
    if (!('offset' in event)) continue; // a gap: older events expired
    const data = event.data as { current?: number; total?: number; message?: string };
    if (event.type === 'task.progress') {
      console.log(`[${data.current}/${data.total}] ${data.message ?? ''}`);
    } else if (event.type === 'task.assigned') {
      console.log(`assigned to ${(event.data as { agent_id: string }).agent_id}`);
    }
  }

  const done = await orchestra.tasks.get(task.id);
  if (!isTerminalState(done.state)) throw new Error(`the stream ended while ${done.state}`);
  if (done.state !== 'succeeded') {
    console.error(`task ${done.state}: ${done.error?.code ?? ''} ${done.error?.message ?? ''}`);
    process.exit(1);
  }
  const stats = done.result as CodeStats;
  console.log(json ? JSON.stringify(stats) : table(stats));
} catch (err) {
  const code = err instanceof OrchestraError ? ` (${err.code})` : '';
  console.error(`error${code}: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
