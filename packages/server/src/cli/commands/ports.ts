import type { PortShare } from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import { CLIENT_OPTIONS, client, durationFlag, print, UsageError } from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

// `orchestra ports …`: an instance's ports through Orchestra, and links that share them.

const SHARE_LIFETIME: DurationFormat = { units: ['m', 'h', 'd'], maxMs: 7 * 86_400_000 };

const list = command({
  name: 'ls',
  aliases: ['list'],
  args: 'INSTANCE',
  description:
    'Lists an instance’s declared ports (with the address each is reached at through Orchestra) and its share links that still work.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, ...rest] = positionals;
    if (id === undefined || rest.length > 0) throw new UsageError(`${path} takes an instance id`);
    const orchestra = client(values);
    const instance = await orchestra.instances.get(id);
    const shares: PortShare[] = [];
    for await (const s of orchestra.instances.ports.listAllShares(id, { limit: 200 }))
      shares.push(s);
    const answer = {
      ports: instance.ports.map((p) => ({ ...p, url: orchestra.instances.ports.url(id, p.port) })),
      shares,
    };
    print(values.json, answer, () =>
      [
        answer.ports.length === 0
          ? 'No declared port (any port the instance listens on is still reachable at /v1/instances/ID/ports/PORT/).'
          : formatTable(
              ['NAME', 'PORT', 'URL'],
              answer.ports.map((p) => [p.name, String(p.port), p.url]),
            ),
        ...(shares.length > 0
          ? [
              '',
              formatTable(
                ['SHARE', 'PORT', 'EXPIRES', 'BY'],
                shares.map((s) => [s.id, String(s.port), s.expires_at, s.created_by]),
              ),
            ]
          : []),
      ].join('\n'),
    );
    return 0;
  },
});

const share = command({
  name: 'share',
  args: 'INSTANCE PORT',
  description:
    'Makes a link that reaches PORT of the instance without a credential until it expires (1h by default, at most 7d), and prints it: its token is shown this once.',
  options: {
    expires: { type: 'string', value: 'DURATION', description: 'How long it works: 30m, 2h, 1d' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, portText, ...rest] = positionals;
    if (id === undefined || portText === undefined || rest.length > 0) {
      throw new UsageError(`${path} takes an instance id and a port`);
    }
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      throw new UsageError(`the port must be a number from 1 to 65535, got "${portText}"`);
    }
    const expires =
      values.expires === undefined
        ? undefined
        : durationFlag('--expires', values.expires, SHARE_LIFETIME, '2h');
    if (expires !== undefined && expires < 60_000) {
      throw new UsageError('--expires must be at least 1m');
    }
    const made = await client(values).instances.ports.share(id, port, {
      ...(expires !== undefined ? { expiresInSeconds: Math.round(expires / 1000) } : {}),
    });
    print(
      values.json,
      made,
      () =>
        `${made.url}\n(expires ${made.expires_at}; revoke: orchestra ports unshare ${id} ${made.id})`,
    );
    return 0;
  },
});

const unshare = command({
  name: 'unshare',
  args: 'INSTANCE SHARE',
  description: 'Revokes a share link: it stops working at once.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values, positionals, path } = invocation;
    const [id, shareId, ...rest] = positionals;
    if (id === undefined || shareId === undefined || rest.length > 0) {
      throw new UsageError(`${path} takes an instance id and a share link id`);
    }
    await client(values).instances.ports.revokeShare(id, shareId);
    print(values.json, { revoked: shareId }, () => `Revoked ${shareId}`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'ports',
  summary: 'An instance’s ports through Orchestra, and share links: ls, share, unshare',
  notes:
    'A port is reached at /v1/instances/ID/ports/PORT/… with a credential, or at a share link’s /share/TOKEN/… without one. Sharing and revoking need an admin or operator credential.',
  subcommands: [list, share, unshare],
});
