import { type CreatedTenant, OrchestraError, type Tenant } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  PagedTable,
  PageHeader,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';
import { NewSecret } from './keys.tsx';

/** The server's rule for tenant ids, checked here first to say it at the field. */
const TENANT_ID = /^[a-z0-9][a-z0-9-]{1,62}$/;

function CreateTenant({ onCreated }: { onCreated: (created: CreatedTenant) => void }) {
  const { client } = useSession();
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const [idError, setIdError] = useState<string | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setIdError(undefined);
    setProblem(undefined);
    if (!TENANT_ID.test(id)) {
      setIdError('2 to 63 lowercase letters, digits and dashes, starting with a letter or digit.');
      return;
    }
    setBusy(true);
    try {
      const created = await client.tenants.create({
        id,
        ...(name.trim() ? { name: name.trim() } : {}),
      });
      setId('');
      setName('');
      onCreated(created);
    } catch (err) {
      // A taken id (409) or a refusal of the id's form is the id field's problem.
      if (
        err instanceof OrchestraError &&
        (err.code === 'TENANT_ALREADY_EXISTS' ||
          (err.details?.fields as { field: string }[] | undefined)?.some(
            (f) => f.field === 'body.id',
          ))
      ) {
        setIdError(err.message);
      } else setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="create-tenant-title">
      <h2 id="create-tenant-title">Create a tenant</h2>
      <form className="form" onSubmit={submit} noValidate>
        <TextField
          id="tenant-id"
          label="Id"
          value={id}
          onChange={setId}
          placeholder="acme"
          spellCheck={false}
          error={idError}
        />
        <TextField id="tenant-name" label="Name (optional)" value={name} onChange={setName} />
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Create tenant
          </button>
        </div>
      </form>
    </section>
  );
}

/** Tenants, for admins of the system tenant: list, and create one with its first admin key. */
export function TenantsPage() {
  const { who } = useSession();
  if (who.tenant.kind !== 'system' || who.role !== 'admin') {
    return (
      <>
        <PageHeader title="Tenants" />
        <p className="empty">Only admins of the system tenant manage tenants.</p>
      </>
    );
  }
  return <SystemTenantsPage />;
}

function SystemTenantsPage() {
  const { client } = useSession();
  const [created, setCreated] = useState<CreatedTenant | undefined>();
  const pager = usePager('');
  const tenants = useAsync(
    () => client.tenants.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Tenants" />
      {created && (
        <NewSecret
          title={`Tenant “${created.tenant.id}” created`}
          secret={created.admin_key.secret}
          onDone={() => setCreated(undefined)}
        >
          It is the first <strong>admin</strong> key of {created.tenant.id}: give it to whoever runs
          that tenant, who signs in with it and makes the other keys.
        </NewSecret>
      )}
      <CreateTenant
        onCreated={(c) => {
          setCreated(c);
          tenants.reload();
        }}
      />
      <PagedTable
        result={tenants}
        pager={pager}
        what="tenants"
        empty="No tenants."
        columns={['Tenant', 'Name', 'Kind', 'Created']}
        row={(t: Tenant) => (
          <tr key={t.id}>
            <td>
              <code>{t.id}</code>
            </td>
            <td>{t.name}</td>
            <td>
              <Badge value={t.kind} />
            </td>
            <td>
              <Time iso={t.created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}
