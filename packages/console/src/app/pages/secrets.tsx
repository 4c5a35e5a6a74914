import type { Secret } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { describeError, fieldMessage, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  PagedTable,
  PageHeader,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const MAX_VALUE_BYTES = 65_536;

/** Creates a secret or replaces its value. The value field is masked and cleared once saved. */
function PutSecretForm(props: {
  name: string;
  onName: (name: string) => void;
  onSaved: () => void;
}) {
  const { client } = useSession();
  const [value, setValue] = useState('');
  const [description, setDescription] = useState('');
  const [nameError, setNameError] = useState<string | undefined>();
  const [valueError, setValueError] = useState<string | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [saved, setSaved] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    setSaved(undefined);
    const name = props.name.trim();
    const badName = NAME.test(name)
      ? undefined
      : 'A letter or _, then letters, digits and _ (up to 128), like an environment variable.';
    const badValue =
      value === ''
        ? 'Required.'
        : new TextEncoder().encode(value).length > MAX_VALUE_BYTES
          ? 'At most 64 KiB.'
          : undefined;
    setNameError(badName);
    setValueError(badValue);
    if (badName || badValue) return;
    setBusy(true);
    try {
      const secret = await client.secrets.put(name, value, {
        ...(description.trim() !== '' ? { description: description.trim() } : {}),
      });
      setValue('');
      setDescription('');
      setSaved(
        `${secret.version === 1 ? 'Created' : 'Replaced'} ${secret.name}, version ${secret.version}.`,
      );
      props.onSaved();
    } catch (err) {
      const message = fieldMessage(err, 'params.name');
      if (message) setNameError(message);
      else setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="put-secret-title">
      <h2 id="put-secret-title">Create or replace a secret</h2>
      <p className="muted">
        The value is write-only: once saved, nothing shows it again. Saving an existing name
        replaces its value with a new version.
      </p>
      <form className="form" onSubmit={submit} noValidate>
        <TextField
          id="secret-name"
          label="Name"
          value={props.name}
          onChange={props.onName}
          maxLength={128}
          placeholder="GITHUB_TOKEN"
          spellCheck={false}
          error={nameError}
        />
        <TextField
          id="secret-value"
          label="Value"
          type="password"
          value={value}
          onChange={setValue}
          spellCheck={false}
          error={valueError}
        />
        <TextField
          id="secret-description"
          label="Description (optional)"
          value={description}
          onChange={setDescription}
          maxLength={500}
        />
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Save secret
          </button>
          {saved && (
            <span className="muted" role="status">
              {saved}
            </span>
          )}
        </div>
      </form>
    </section>
  );
}

/** Named secrets of the tenant: names, versions and times; writers create, replace, delete. */
export function SecretsPage() {
  const { client, canWrite } = useSession();
  const [name, setName] = useState('');
  const pager = usePager('');
  const secrets = useAsync(
    () => client.secrets.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Secrets" />
      {canWrite ? (
        <PutSecretForm name={name} onName={setName} onSaved={secrets.reload} />
      ) : (
        <p className="muted">Admins and operators create and replace secrets.</p>
      )}
      <PagedTable
        result={secrets}
        pager={pager}
        what="secrets"
        empty="No secrets yet."
        columns={['Name', 'Version', 'Description', 'Updated', ...(canWrite ? [''] : [])]}
        row={(s: Secret) => (
          <tr key={s.name}>
            <td>
              <code>{s.name}</code>
            </td>
            <td>{s.version}</td>
            <td>{s.description || '-'}</td>
            <td>
              <Time iso={s.updated_at} />
            </td>
            {canWrite && (
              <td>
                <div className="actions">
                  <button
                    type="button"
                    aria-label={`Replace ${s.name}`}
                    onClick={() => {
                      setName(s.name);
                      document.getElementById('secret-value')?.focus();
                    }}
                  >
                    Replace
                  </button>
                  <ConfirmButton
                    label="Delete"
                    confirmLabel={`Delete ${s.name}`}
                    ariaLabel={`Delete ${s.name}`}
                    onConfirm={async () => {
                      await client.secrets.delete(s.name);
                      secrets.reload();
                    }}
                  />
                </div>
              </td>
            )}
          </tr>
        )}
      />
    </>
  );
}
