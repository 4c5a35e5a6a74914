import { VERSION } from '../version.ts';
import { type Group, optionTable, UsageError } from './spec.ts';

// The `orchestra` command. It reads the command's name and loads that group's module alone:
// a client command loads no server code, and `orchestra version` hardly more than Node.

/** Every group, in the order `orchestra --help` lists them. */
export const GROUPS: Readonly<Record<string, () => Promise<{ group: Group }>>> = {
  start: () => import('./commands/start.ts'),
  runner: () => import('./commands/runner.ts'),
  whoami: () => import('./commands/whoami.ts'),
  keys: () => import('./commands/keys.ts'),
  tenants: () => import('./commands/tenants.ts'),
  templates: () => import('./commands/templates.ts'),
  task: () => import('./commands/task.ts'),
  agents: () => import('./commands/agents.ts'),
  sessions: () => import('./commands/sessions.ts'),
  tools: () => import('./commands/tools.ts'),
  'tool-policies': () => import('./commands/tool-policies.ts'),
  'tool-calls': () => import('./commands/tool-calls.ts'),
  approvals: () => import('./commands/approvals.ts'),
  'mcp-servers': () => import('./commands/mcp-servers.ts'),
  'mcp-catalog': () => import('./commands/mcp-catalog.ts'),
  'mcp-views': () => import('./commands/mcp-views.ts'),
  providers: () => import('./commands/providers.ts'),
  instances: () => import('./commands/instances.ts'),
  exec: () => import('./commands/exec.ts'),
  files: () => import('./commands/files.ts'),
  checkpoints: () => import('./commands/checkpoints.ts'),
  terminals: () => import('./commands/terminals.ts'),
  term: () => import('./commands/term.ts'),
  ports: () => import('./commands/ports.ts'),
  chat: () => import('./commands/chat.ts'),
  usage: () => import('./commands/usage.ts'),
  'demo-provider': () => import('./commands/demo-provider.ts'),
  topics: () => import('./commands/topics.ts'),
  config: () => import('./commands/config.ts'),
  secrets: () => import('./commands/secrets.ts'),
  services: () => import('./commands/services.ts'),
  stats: () => import('./commands/stats.ts'),
  cluster: () => import('./commands/cluster.ts'),
  'recover-admin-key': () => import('./commands/recover-admin-key.ts'),
  version: () => import('./commands/version.ts'),
};

/** The group named `name`, loaded; undefined for an unknown name. */
export async function loadGroup(name: string): Promise<Group | undefined> {
  return Object.hasOwn(GROUPS, name) ? (await GROUPS[name]?.())?.group : undefined;
}

/** `orchestra --help`: every group's summary (this loads them all). */
export async function globalHelp(): Promise<string> {
  const [groups, { CLIENT_OPTIONS }] = await Promise.all([
    Promise.all(Object.keys(GROUPS).map(loadGroup)),
    import('./common.ts'),
  ]);
  const lines = groups.flatMap((g) => {
    if (g === undefined) return [];
    const name = [g.name, g.subcommandNames].filter(Boolean).join(' ');
    return name.length < 22
      ? [`  ${name.padEnd(22)}${g.summary}`]
      : [`  ${name}`, `${' '.repeat(24)}${g.summary}`];
  });
  return [
    `Orchestra ${VERSION}: control plane for AI agents`,
    '',
    'Usage: orchestra <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'Options for commands that talk to a server:',
    optionTable(
      {
        ...CLIENT_OPTIONS,
        help: { type: 'boolean', short: 'h', description: 'Show help for a command' },
      },
      2,
    ),
    '',
    'Run "orchestra <command> --help" for the options of a command.',
  ].join('\n');
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [first, ...args] = argv;
  // `--version` is the one flag that names a command.
  const command = first === '--version' ? 'version' : first;
  try {
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      process.stdout.write(`${await globalHelp()}\n`);
      return command === undefined ? 2 : 0;
    }
    const group = await loadGroup(command);
    if (group === undefined) throw new UsageError(`unknown command "${command}"`);
    return await group.run(args);
  } catch (err) {
    return report(err, command !== undefined && Object.hasOwn(GROUPS, command) ? command : '');
  }
}

/** Prints what went wrong and returns the exit code: 2 for a usage mistake, else 1. */
function report(err: unknown, command: string): number {
  if (err instanceof UsageError) {
    process.stderr.write(
      `error: ${err.message}\nRun "orchestra ${command ? `${command} ` : ''}--help" for usage.\n`,
    );
    return 2;
  }
  // By name, here and below: the SDK and the settings module are loaded only by the
  // commands that use them.
  if (err instanceof Error && err.name === 'OrchestraError') {
    const { code, status } = err as Error & { code: string; status: number };
    process.stderr.write(`error: ${err.message} (${code}${status ? `, HTTP ${status}` : ''})\n`);
    return 1;
  }
  if (err instanceof Error && err.name === 'SettingsError') {
    process.stderr.write(`error: ${err.message}\n`);
    return 1;
  }
  // The message and its causes say what went wrong; a stack trace would bury that.
  const lines = [`error: ${err instanceof Error ? err.message : String(err)}`];
  for (let cause = (err as Error)?.cause; cause !== undefined; cause = (cause as Error)?.cause) {
    lines.push(`  caused by: ${cause instanceof Error ? cause.message : String(cause)}`);
    if (lines.length > 5) break;
  }
  process.stderr.write(`${lines.join('\n')}\n`);
  return 1;
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // `start` keeps running until a signal; every other command ends here.
  if (process.argv[2] !== 'start' || code !== 0) process.exitCode = code;
}
