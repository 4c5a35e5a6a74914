import {
  type CreatedTenant,
  OrchestraError,
  type Tenant,
  type TenantLimits,
  type UpdateTenantInput,
} from '@orchestra/sdk';
import { type FormEvent, type ReactNode, useState } from 'react';
import { Link } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  NotLoaded,
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

/** What only system admins may open; others get a line saying so under `title`. */
function SystemAdminsOnly({ title, children }: { title: string; children: ReactNode }) {
  const { who } = useSession();
  if (who.tenant.kind !== 'system' || who.role !== 'admin') {
    return (
      <>
        <PageHeader title={title} />
        <p className="empty">Only admins of the system tenant manage tenants.</p>
      </>
    );
  }
  return <>{children}</>;
}

/** Tenants, for admins of the system tenant: list, and create one with its first admin key. */
export function TenantsPage() {
  return (
    <SystemAdminsOnly title="Tenants">
      <SystemTenantsPage />
    </SystemAdminsOnly>
  );
}

/** One tenant and its limits, which a system admin can set or give back to the settings. */
export function TenantDetailPage({ id }: { id: string }) {
  return (
    <SystemAdminsOnly title={`Tenant ${id}`}>
      <TenantDetail id={id} />
    </SystemAdminsOnly>
  );
}

function TenantDetail({ id }: { id: string }) {
  const { client } = useSession();
  const tenant = useAsync(() => client.tenants.get(id), [client, id]);
  if (tenant.data === undefined) {
    return <NotLoaded result={tenant} title={`Tenant ${id}`} what="the tenant" />;
  }
  const t = tenant.data;
  return (
    <>
      <PageHeader title={`Tenant ${t.id}`}>
        <Badge value={t.kind} />
      </PageHeader>
      <dl className="facts">
        <dt>Name</dt>
        <dd>{t.name}</dd>
        <dt>Created</dt>
        <dd>
          <Time iso={t.created_at} />
        </dd>
      </dl>
      <LimitsForm tenant={t} />
    </>
  );
}

/**
 * Every limit with its value for this tenant. A field holds the tenant's own value; an
 * empty one follows the server's setting, shown as its placeholder.
 */
function LimitsForm(props: { tenant: Tenant }) {
  const { client } = useSession();
  // The tenant as last saved: the update's answer replaces it, fields and all.
  const [tenant, setTenant] = useState(props.tenant);
  const names = Object.keys(tenant.limits) as (keyof TenantLimits)[];
  const fieldsOf = (t: Tenant) =>
    Object.fromEntries(names.map((n) => [n, String(t.limit_overrides[n] ?? '')]));
  const [values, setValues] = useState<Record<string, string>>(() => fieldsOf(tenant));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  // What a field shows when empty: the setting's value, which the tenant then follows.
  const settingValue = (n: keyof TenantLimits) =>
    tenant.limit_overrides[n] === undefined ? tenant.limits[n] : undefined;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    setSaved(false);
    const limits: NonNullable<UpdateTenantInput['limits']> = {};
    const found: Record<string, string> = {};
    for (const n of names) {
      const text = (values[n] ?? '').trim();
      const own = tenant.limit_overrides[n];
      if (text === '') {
        if (own !== undefined) limits[n] = null;
      } else if (!/^\d+$/.test(text)) {
        found[n] = 'A whole number, or empty to follow the server setting.';
      } else if (Number(text) !== own) limits[n] = Number(text);
    }
    if (Object.keys(found).length > 0) {
      setErrors(found);
      return;
    }
    if (Object.keys(limits).length === 0) {
      setSaved(true);
      return;
    }
    setBusy(true);
    try {
      const updated = await client.tenants.update(tenant.id, { limits });
      setTenant(updated);
      setValues(fieldsOf(updated));
      setSaved(true);
    } catch (err) {
      // The server names the field (`body.limits.max_topics`); show it at that input.
      const fields = (err instanceof OrchestraError ? err.details?.fields : undefined) as
        | { field: string; message: string }[]
        | undefined;
      const atFields: Record<string, string> = {};
      for (const f of fields ?? []) {
        const name = f.field.replace(/^body\.limits\./, '');
        // The first message is the one that matters ("must be >= 1024"); the rest say
        // that `null` would also have done.
        if (name !== f.field && atFields[name] === undefined) atFields[name] = f.message;
      }
      if (Object.keys(atFields).length > 0) setErrors(atFields);
      else setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="tenant-limits-title">
      <h2 id="tenant-limits-title">Limits</h2>
      <p className="muted">
        An empty field follows the server's setting (its value is shown greyed); a number is this
        tenant's own. For the <code>max_*</code> limits, 0 means no limit.
      </p>
      <form className="form" onSubmit={submit} noValidate>
        {names.map((n) => (
          <TextField
            key={n}
            id={`limit-${n}`}
            label={n}
            type="number"
            value={values[n] ?? ''}
            onChange={(v) => setValues((all) => ({ ...all, [n]: v }))}
            placeholder={String(settingValue(n) ?? '')}
            error={errors[n]}
          />
        ))}
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Save limits
          </button>
          {saved && (
            <span role="status" className="muted">
              Saved
            </span>
          )}
        </div>
      </form>
    </section>
  );
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
        columns={['Tenant', 'Name', 'Kind', 'Own limits', 'Created']}
        row={(t: Tenant) => (
          <tr key={t.id}>
            <td>
              <Link to={`/tenants/${encodeURIComponent(t.id)}`}>
                <code>{t.id}</code>
              </Link>
            </td>
            <td>{t.name}</td>
            <td>
              <Badge value={t.kind} />
            </td>
            <td>{Object.keys(t.limit_overrides).length || '—'}</td>
            <td>
              <Time iso={t.created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}
