import type { CreateToolPolicy, UpdateToolPolicy } from '@orchestra/protocol';
import { type FormEvent, useState } from 'react';
import { Link, navigate } from '../router.tsx';
import { describeError, fieldErrorsOf, useSession } from '../session.tsx';
import { type ToolPolicy, toolsApi } from '../tools-api.ts';
import {
  Alert,
  Badge,
  ConfirmButton,
  NotLoaded,
  PagedTable,
  PageHeader,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';
import { ToolsTabs } from './tools.tsx';

/** Who a policy is about, in words. */
function whoOf(p: ToolPolicy): string {
  const m = p.match;
  const parts = [
    m.roles?.length && `roles ${m.roles.join(', ')}`,
    m.api_keys?.length && `keys ${m.api_keys.join(', ')}`,
    m.agents?.length && `agents ${m.agents.join(', ')}`,
    m.templates?.length && `templates ${m.templates.join(', ')}`,
    m.session_labels &&
      Object.keys(m.session_labels).length > 0 &&
      `sessions ${Object.entries(m.session_labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}`,
  ].filter(Boolean);
  return parts.join('; ') || 'everyone';
}

function limitsOf(p: ToolPolicy): string {
  return (
    [
      p.approval === 'required' && `approval within ${Math.round(p.approval_timeout_ms / 1000)} s`,
      p.rate_limit && `${p.rate_limit.requests} per ${p.rate_limit.per_seconds} s`,
      p.max_concurrency && `${p.max_concurrency} at once`,
      p.arguments_schema && 'arguments checked',
    ]
      .filter(Boolean)
      .join(' · ') || '–'
  );
}

export function ToolPoliciesPage() {
  const { client, who } = useSession();
  const admin = who.role === 'admin';
  const pager = usePager('');
  const policies = useAsync(
    () =>
      toolsApi(client).policies.list({
        limit: 50,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
      }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Tool policies">
        {admin && (
          <Link to="/tool-policies/new" className="button primary">
            New policy
          </Link>
        )}
      </PageHeader>
      <ToolsTabs />
      <p className="muted">
        Deny wins over allow. A tool no policy names may be called unless it is destructive, which
        takes an allow. {admin ? '' : 'Only admins change policies.'}
      </p>
      <PagedTable
        result={policies}
        pager={pager}
        what="tool policies"
        empty="No policies: every tool that is not destructive may be called by operators, admins and agents."
        columns={['Policy', 'Effect', 'Tools', 'Who', 'Conditions', 'Changed', '']}
        row={(p: ToolPolicy) => (
          <tr key={p.id}>
            <td>
              <Link to={`/tool-policies/${encodeURIComponent(p.name)}`}>{p.name}</Link>
              {!p.enabled && <span className="badge badge-offline">disabled</span>}
              {p.description && <div className="muted">{p.description}</div>}
            </td>
            <td>
              <Badge value={p.effect} />
            </td>
            <td>
              <code>{p.tools.join(', ')}</code>
            </td>
            <td>{whoOf(p)}</td>
            <td>{limitsOf(p)}</td>
            <td>
              <Time iso={p.updated_at} />
            </td>
            <td>
              {admin && (
                <ConfirmButton
                  label="Delete"
                  ariaLabel={`Delete ${p.name}`}
                  confirmLabel={`Delete ${p.name}`}
                  onConfirm={async () => {
                    await toolsApi(client).policies.delete(p.id);
                    policies.reload();
                  }}
                />
              )}
            </td>
          </tr>
        )}
      />
    </>
  );
}

/** The editor's fields as text; JSON for who it matches and the arguments schema. */
interface PolicyFields {
  name: string;
  description: string;
  effect: 'allow' | 'deny';
  tools: string;
  approval: 'none' | 'required';
  approval_timeout_s: string;
  rate_requests: string;
  rate_seconds: string;
  max_concurrency: string;
  match: string;
  arguments_schema: string;
  enabled: boolean;
}

function fieldsOf(p: ToolPolicy | undefined): PolicyFields {
  return {
    name: p?.name ?? '',
    description: p?.description ?? '',
    effect: p?.effect ?? 'allow',
    tools: p?.tools.join(', ') ?? '',
    approval: p?.approval ?? 'none',
    approval_timeout_s: p ? String(p.approval_timeout_ms / 1000) : '3600',
    rate_requests: p?.rate_limit ? String(p.rate_limit.requests) : '',
    rate_seconds: p?.rate_limit ? String(p.rate_limit.per_seconds) : '',
    max_concurrency: p?.max_concurrency ? String(p.max_concurrency) : '',
    match: JSON.stringify(p?.match ?? {}, null, 2),
    arguments_schema: p?.arguments_schema ? JSON.stringify(p.arguments_schema, null, 2) : '',
    enabled: p?.enabled ?? true,
  };
}

function parseFields(
  f: PolicyFields,
): { spec: UpdateToolPolicy } | { errors: Partial<Record<keyof PolicyFields, string>> } {
  const errors: Partial<Record<keyof PolicyFields, string>> = {};
  const spec: UpdateToolPolicy = {
    effect: f.effect,
    tools: f.tools
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean),
    enabled: f.enabled,
  };
  if (spec.tools.length === 0) errors.tools = 'Name at least one tool (`*` matches any run).';
  if (f.description.trim()) spec.description = f.description.trim();
  const json = (name: 'match' | 'arguments_schema') => {
    if (f[name].trim() === '') return undefined;
    try {
      const value = JSON.parse(f[name]) as unknown;
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        return value as Record<string, unknown>;
      }
      errors[name] = 'Enter a JSON object.';
    } catch {
      errors[name] = 'Enter valid JSON.';
    }
    return undefined;
  };
  const whole = (name: keyof PolicyFields, text: string) => {
    if (text.trim() === '') return undefined;
    const n = Number(text);
    if (Number.isInteger(n) && n > 0) return n;
    errors[name] = 'Enter a whole number above 0.';
    return undefined;
  };
  const match = json('match');
  if (match) spec.match = match;
  if (f.effect === 'allow') {
    const schema = json('arguments_schema');
    if (schema) spec.arguments_schema = schema;
    spec.approval = f.approval;
    if (f.approval === 'required') {
      const seconds = whole('approval_timeout_s', f.approval_timeout_s);
      if (seconds) spec.approval_timeout_ms = seconds * 1000;
    }
    const requests = whole('rate_requests', f.rate_requests);
    const per = whole('rate_seconds', f.rate_seconds);
    if (requests && per) spec.rate_limit = { requests, per_seconds: per };
    else if (requests || per) errors.rate_requests = 'Give both the calls and the window.';
    const concurrency = whole('max_concurrency', f.max_concurrency);
    if (concurrency) spec.max_concurrency = concurrency;
  }
  return Object.keys(errors).length > 0 ? { errors } : { spec };
}

export function ToolPolicyEditorPage({ name }: { name?: string }) {
  const { client } = useSession();
  const existing = useAsync<ToolPolicy | undefined>(
    async () => (name ? toolsApi(client).policies.get(name) : undefined),
    [client, name],
  );
  if (name && existing.data === undefined) {
    return <NotLoaded result={existing} title={`Policy ${name}`} what="the policy" />;
  }
  return <PolicyForm key={existing.data?.updated_at ?? 'new'} policy={existing.data} />;
}

function PolicyForm({ policy }: { policy: ToolPolicy | undefined }) {
  const { client, who } = useSession();
  const admin = who.role === 'admin';
  const [fields, setFields] = useState(() => fieldsOf(policy));
  const [errors, setErrors] = useState<Partial<Record<keyof PolicyFields, string>>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const set = <K extends keyof PolicyFields>(name: K, value: PolicyFields[K]) =>
    setFields((f) => ({ ...f, [name]: value }));

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    const parsed = parseFields(fields);
    if ('errors' in parsed) {
      setErrors(parsed.errors);
      setProblem('Some fields need attention.');
      return;
    }
    setBusy(true);
    try {
      const api = toolsApi(client).policies;
      const input: CreateToolPolicy = { name: fields.name.trim(), ...parsed.spec };
      await (policy ? api.update(policy.id, parsed.spec) : api.create(input));
      navigate('/tool-policies');
    } catch (err) {
      const byField = fieldErrorsOf(err);
      // A rate limit's errors show at its first control.
      if (byField) setErrors({ ...byField, rate_requests: byField.rate_limit });
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  const text = (
    name: Exclude<keyof PolicyFields, 'effect' | 'approval' | 'enabled'>,
    label: string,
    options: { area?: number; help?: string; disabled?: boolean; type?: 'number' } = {},
  ) => (
    <TextField
      id={`policy-${name}`}
      label={label}
      value={fields[name]}
      onChange={(value) => set(name, value)}
      error={errors[name]}
      help={options.help}
      rows={options.area}
      disabled={options.disabled || !admin}
      {...(options.type ? { type: options.type } : {})}
      spellCheck={false}
    />
  );
  const allow = fields.effect === 'allow';

  return (
    <>
      <PageHeader title={policy ? `Policy ${policy.name}` : 'New tool policy'} />
      <ToolsTabs />
      <form className="panel form" onSubmit={save} noValidate aria-label="Tool policy">
        {text('name', 'Name', {
          disabled: policy !== undefined,
          help: policy
            ? 'A policy keeps its name.'
            : 'Lowercase letters, digits, ".", "_" and "-".',
        })}
        {text('description', 'Description')}
        <div className="field">
          <label htmlFor="policy-effect">Effect</label>
          <select
            id="policy-effect"
            value={fields.effect}
            disabled={!admin}
            onChange={(e) => set('effect', e.target.value === 'deny' ? 'deny' : 'allow')}
          >
            <option value="allow">allow</option>
            <option value="deny">deny (wins over any allow)</option>
          </select>
        </div>
        {text('tools', 'Tools', {
          help: 'Comma-separated tool names; `*` matches any run of characters (github__*).',
        })}
        {text('match', 'Who (JSON)', {
          area: 4,
          help: 'roles, api_keys, agents, templates, session_labels; every field given must match. {} is everyone.',
        })}
        {allow && (
          <>
            <div className="field">
              <label htmlFor="policy-approval">Approval</label>
              <select
                id="policy-approval"
                value={fields.approval}
                disabled={!admin}
                onChange={(e) =>
                  set('approval', e.target.value === 'required' ? 'required' : 'none')
                }
              >
                <option value="none">none: calls run at once</option>
                <option value="required">required: each call waits for an operator</option>
              </select>
            </div>
            {fields.approval === 'required' &&
              text('approval_timeout_s', 'Approval deadline (seconds)', { type: 'number' })}
            <div className="columns">
              {text('rate_requests', 'Rate limit: calls', { type: 'number' })}
              {text('rate_seconds', 'per seconds', { type: 'number' })}
              {text('max_concurrency', 'At once (per node)', { type: 'number' })}
            </div>
            {text('arguments_schema', 'Arguments schema (JSON Schema)', {
              area: 5,
              help: 'Optional: the arguments must also match it (a path prefix, an allow-list of hosts).',
            })}
          </>
        )}
        <div className="field field-inline">
          <input
            id="policy-enabled"
            type="checkbox"
            checked={fields.enabled}
            disabled={!admin}
            onChange={(e) => set('enabled', e.target.checked)}
          />
          <label htmlFor="policy-enabled">Enabled</label>
        </div>
        <Alert message={problem} />
        {admin && (
          <div className="actions">
            <button type="submit" className="primary" disabled={busy}>
              {busy ? 'Saving…' : policy ? 'Save' : 'Create policy'}
            </button>
            <button type="button" onClick={() => navigate('/tool-policies')}>
              Cancel
            </button>
            {policy && (
              <ConfirmButton
                label="Delete"
                confirmLabel={`Delete ${policy.name}`}
                onConfirm={async () => {
                  await toolsApi(client).policies.delete(policy.id);
                  navigate('/tool-policies');
                }}
              />
            )}
          </div>
        )}
      </form>
    </>
  );
}
