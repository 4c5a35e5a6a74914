import type { McpServer, Orchestra } from '@orchestra/sdk';
import type { DurationFormat } from '../platform/duration.ts';
import { durationFlag, print } from './common.ts';
import type { OptionSpecs } from './spec.ts';

const WAIT: DurationFormat = { units: ['ms', 's', 'm'], maxDigits: 9, maxMs: 3_600_000 };
/** A bare --wait: long enough for `npx` to fetch a package on a slow link. */
const DEFAULT_WAIT_MS = 120_000;
const POLL_MS = 250;

/** `--wait [DURATION]` of the commands that start an MCP server (add, install). */
export const WAIT_OPTION = {
  wait: {
    type: 'string',
    value: 'DURATION',
    description:
      'Waits until the server is ready (exit code 0) or has failed (1), at most DURATION (2m if bare; then 1): a number with ms, s or m, like 30s',
    // The next argument is the duration when it looks like one (30s, 5, 2m).
    optionalValue: (next: string) => /^\d/.test(next) && /^\w+$/.test(next),
  },
} as const satisfies OptionSpecs;

/** The --wait limit in ms, or undefined without --wait. */
export function waitLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return value === '' ? DEFAULT_WAIT_MS : durationFlag('--wait', value, WAIT, '30s');
}

/**
 * Polls server `ref` until it is ready or failed, or `limitMs` has passed: resolves to its
 * last state. A server retrying after a failed attempt (`connecting` with a reason) is
 * still waited for: its next attempt may succeed.
 */
export async function waitForServer(
  api: Orchestra,
  ref: string,
  limitMs: number,
): Promise<McpServer> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const server = await api.mcpServers.get(ref);
    const { state } = server.status;
    if (state === 'ready' || state === 'failed' || Date.now() >= deadline) return server;
    await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, deadline - Date.now())));
  }
}

/**
 * Prints a server just added or installed (`headline` says how), and with --wait (`limitMs`)
 * what it came to. Resolves to the exit code: 1 when it waited and the server is not ready.
 */
export async function reportStarted(
  api: Orchestra,
  json: boolean,
  server: McpServer,
  headline: string,
  limitMs: number | undefined,
): Promise<number> {
  if (limitMs === undefined) {
    print(
      json,
      server,
      () =>
        `${headline}; it is ${server.status.state}. Follow it with "orchestra mcp-servers get ${server.name}".`,
    );
    return 0;
  }
  const settled = await waitForServer(api, server.id, limitMs);
  print(json, settled, () => `${headline}.\n${waitedText(settled)}`);
  return settled.status.state === 'ready' ? 0 : 1;
}

/** The line after a wait: what the server came to, and why when it is not ready. */
function waitedText(server: McpServer): string {
  const { state, reason } = server.status;
  if (state === 'ready') return `MCP server ${server.name} is ready with ${server.tools} tools.`;
  const why = reason ? `: ${reason}` : '';
  return state === 'failed'
    ? `MCP server ${server.name} failed${why}`
    : `MCP server ${server.name} is still ${state}${why} (gave up waiting)`;
}
