import type { ApiKey, ApiKeyWithSecret, Role } from '@orchestra/sdk';
import { type FormEvent, type ReactNode, useState } from 'react';
import { describeError, fieldMessage, useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  ConfirmButton,
  PagedTable,
  PageHeader,
  SelectField,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';

const ROLES: { role: Role; what: string }[] = [
  { role: 'viewer', what: 'reads everything, changes nothing' },
  { role: 'operator', what: 'submits and cancels tasks, edits templates and config' },
  { role: 'agent', what: 'for agent processes: connects and runs tasks' },
  { role: 'admin', what: 'everything, including keys' },
];

const EXPIRIES = [
  { label: 'Never', days: 0 },
  { label: 'In 7 days', days: 7 },
  { label: 'In 30 days', days: 30 },
  { label: 'In 90 days', days: 90 },
  { label: 'In a year', days: 365 },
] as const;

/** The secret of a key just created: shown once, never again. */
export function NewSecret(props: {
  title: string;
  secret: string;
  /** Who holds the key, and what it may do. */
  children: ReactNode;
  onDone: () => void;
}) {
  const [copied, setCopied] = useState<string | undefined>();
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.secret);
      setCopied('Copied.');
    } catch {
      setCopied('The browser refused the clipboard: select the key and copy it.');
    }
  };
  return (
    <section className="panel notice-panel" aria-labelledby="secret-title">
      <h2 id="secret-title">{props.title}</h2>
      <p>Copy the secret now: it is shown only this once. {props.children}</p>
      <div className="field">
        <label htmlFor="new-secret">Secret</label>
        <input
          id="new-secret"
          readOnly
          value={props.secret}
          spellCheck={false}
          onFocus={(e) => e.currentTarget.select()}
        />
      </div>
      <div className="actions">
        <button type="button" onClick={copy}>
          Copy
        </button>
        <button type="button" onClick={props.onDone}>
          Done
        </button>
        {copied && (
          <span className="muted" role="status">
            {copied}
          </span>
        )}
      </div>
    </section>
  );
}

function CreateKey({ onCreated }: { onCreated: (key: ApiKeyWithSecret) => void }) {
  const { client } = useSession();
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [days, setDays] = useState<number>(90);
  const [problem, setProblem] = useState<string | undefined>();
  const [nameError, setNameError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    setNameError(undefined);
    if (name.trim() === '') {
      setNameError('Required: say who or what will use the key.');
      return;
    }
    setBusy(true);
    try {
      const created = await client.apiKeys.create({
        name: name.trim(),
        role,
        ...(days > 0 ? { expires_at: new Date(Date.now() + days * 86_400_000) } : {}),
      });
      setName('');
      onCreated(created);
    } catch (err) {
      const message = fieldMessage(err, 'body.name');
      if (message) setNameError(message);
      else setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="create-key-title">
      <h2 id="create-key-title">Create a key</h2>
      <form className="form" onSubmit={submit} noValidate>
        <TextField
          id="key-name"
          label="Name"
          value={name}
          onChange={setName}
          maxLength={100}
          placeholder="ci-deploys, search-agents…"
          error={nameError}
        />
        <SelectField
          id="key-role"
          label="Role"
          value={role}
          options={ROLES.map((r) => ({ value: r.role, label: `${r.role}: ${r.what}` }))}
          onChange={setRole}
        />
        <SelectField
          id="key-expiry"
          label="Expires"
          value={days}
          options={EXPIRIES.map((e) => ({ value: e.days, label: e.label }))}
          onChange={setDays}
        />
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Create key
          </button>
        </div>
      </form>
    </section>
  );
}

/** Revoking cannot be undone: the button asks once more before it acts. */
function RevokeButton({ apiKey, onRevoked }: { apiKey: ApiKey; onRevoked: () => void }) {
  const { client, who } = useSession();
  const own = who.credential.type === 'api_key' && who.credential.id === apiKey.id;
  if (apiKey.status !== 'active') return null;
  return (
    <ConfirmButton
      label={own ? 'Revoke (yours)' : 'Revoke'}
      confirmLabel={`Revoke ${apiKey.name}`}
      ariaLabel={own ? `Revoke ${apiKey.name} (yours)` : `Revoke ${apiKey.name}`}
      {...(own ? { title: 'This is the key you signed in with' } : {})}
      onConfirm={async () => {
        await client.apiKeys.revoke(apiKey.id);
        onRevoked();
      }}
    />
  );
}

/** API keys of the tenant: create (the secret shown once), list and revoke. Admins only. */
export function KeysPage() {
  const { who } = useSession();
  if (who.role !== 'admin') {
    return (
      <>
        <PageHeader title="API keys" />
        <p className="empty">Only admins manage API keys. Ask an admin of your tenant.</p>
      </>
    );
  }
  return <AdminKeysPage />;
}

function AdminKeysPage() {
  const { client } = useSession();
  const [showRevoked, setShowRevoked] = useState(false);
  const [created, setCreated] = useState<ApiKeyWithSecret | undefined>();
  const pager = usePager(String(showRevoked));
  const keys = useAsync(
    () =>
      client.apiKeys.list({
        limit: 50,
        include_revoked: showRevoked,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
      }),
    [client, pager.cursor, showRevoked],
  );
  return (
    <>
      <PageHeader title="API keys" />
      {created && (
        <NewSecret
          title={`Key “${created.name}” created`}
          secret={created.secret}
          onDone={() => setCreated(undefined)}
        >
          Whoever holds it acts as <strong>{created.role}</strong> in this tenant.
        </NewSecret>
      )}
      <CreateKey
        onCreated={(key) => {
          setCreated(key);
          keys.reload();
        }}
      />
      <div className="filters">
        <label className="field-inline">
          <input
            type="checkbox"
            checked={showRevoked}
            onChange={(e) => setShowRevoked(e.target.checked)}
          />{' '}
          Show revoked keys
        </label>
      </div>
      <PagedTable
        result={keys}
        pager={pager}
        what="API keys"
        empty="No keys."
        columns={['Name', 'Role', 'Key', 'Status', 'Created', 'Expires', 'Last used', '']}
        row={(k: ApiKey) => (
          <tr key={k.id}>
            <td>
              {k.name}
              <div className="muted">
                <code>{k.id}</code>
              </div>
            </td>
            <td>{k.role}</td>
            <td>
              <code>{k.prefix}…</code>
            </td>
            <td>
              <Badge value={k.status} />
            </td>
            <td>
              <Time iso={k.created_at} />
            </td>
            <td>{k.expires_at ? <Time iso={k.expires_at} /> : 'never'}</td>
            <td>
              <Time iso={k.last_used_at} />
            </td>
            <td>
              <RevokeButton apiKey={k} onRevoked={keys.reload} />
            </td>
          </tr>
        )}
      />
    </>
  );
}
