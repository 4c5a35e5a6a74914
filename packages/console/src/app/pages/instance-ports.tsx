import type { Instance, PortShare } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  Empty,
  ErrorBox,
  Loading,
  Time,
  useAction,
  useAsync,
} from '../ui.tsx';

// An instance's ports: what it declared, and links that open a port in a browser without
// a credential (a browser cannot send the API key with a plain link).

const LIFETIMES = [
  { seconds: 900, label: '15 minutes' },
  { seconds: 3600, label: '1 hour' },
  { seconds: 86_400, label: '1 day' },
  { seconds: 604_800, label: '7 days' },
] as const;

export function PortsTab({ instance }: { instance: Instance }) {
  const { client, canWrite } = useSession();
  const shares = useAsync(
    () => client.instances.ports.listShares(instance.id, { limit: 100 }),
    [client, instance.id],
  );
  const [port, setPort] = useState(String(instance.ports[0]?.port ?? ''));
  const [lifetime, setLifetime] = useState<number>(3600);
  const [made, setMade] = useState<(PortShare & { url: string }) | undefined>();
  const share = useAction();
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setMade(undefined);
    void share.run(async () => {
      const n = Number(port);
      if (!Number.isInteger(n) || n < 1 || n > 65_535) {
        throw new Error('The port is a number from 1 to 65535.');
      }
      setMade(await client.instances.ports.share(instance.id, n, { expiresInSeconds: lifetime }));
      shares.reload();
    });
  };
  return (
    <>
      {instance.ports.length === 0 ? (
        <Empty>
          Its template declares no port. Any port it listens on is still reachable through
          /v1/instances/{instance.id}/ports/PORT/ with a credential, and can be shared below.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Ports">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Port</th>
                <th scope="col">Environment</th>
              </tr>
            </thead>
            <tbody>
              {instance.ports.map((p) => (
                <tr key={p.name}>
                  <td>{p.name}</td>
                  <td>{p.port}</td>
                  <td>
                    <code>PORT_{p.name.toUpperCase().replaceAll('-', '_')}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {canWrite && (
        <form className="inline-form" aria-label="Share a port" onSubmit={submit}>
          <div className="field">
            <label htmlFor="share-port">Port</label>
            <input
              id="share-port"
              type="number"
              min={1}
              max={65_535}
              value={port}
              onChange={(e) => setPort(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="share-lifetime">Works for</label>
            <select
              id="share-lifetime"
              value={lifetime}
              onChange={(e) => setLifetime(Number(e.target.value))}
            >
              {LIFETIMES.map((l) => (
                <option key={l.seconds} value={l.seconds}>
                  {l.label}
                </option>
              ))}
            </select>
          </div>
          <button type="submit" disabled={share.busy}>
            {share.busy ? 'Sharing…' : 'Share'}
          </button>
          <Alert message={share.problem} />
        </form>
      )}
      {made && (
        <p role="status">
          Anyone with this link reaches port {made.port} until <Time iso={made.expires_at} />; it is
          shown this once:{' '}
          <a href={made.url} target="_blank" rel="noreferrer noopener">
            {made.url}
          </a>
        </p>
      )}
      {shares.error !== undefined && <ErrorBox error={shares.error} onRetry={shares.reload} />}
      {shares.data === undefined ? (
        shares.error === undefined && <Loading what="share links" />
      ) : shares.data.items.length === 0 ? (
        <Empty>No share link works now.</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Share links">
            <thead>
              <tr>
                <th scope="col">Link</th>
                <th scope="col">Port</th>
                <th scope="col">Expires</th>
                <th scope="col">By</th>
                {canWrite && (
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {shares.data.items.map((s) => (
                <tr key={s.id} data-share={s.id}>
                  <td>{s.id}</td>
                  <td>{s.port}</td>
                  <td>
                    <Time iso={s.expires_at} />
                  </td>
                  <td>{s.created_by}</td>
                  {canWrite && (
                    <td>
                      <ConfirmButton
                        label="Revoke"
                        ariaLabel={`Revoke ${s.id}`}
                        confirmLabel={`Revoke ${s.id}`}
                        onConfirm={async () => {
                          await client.instances.ports.revokeShare(instance.id, s.id);
                          shares.reload();
                        }}
                      />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
