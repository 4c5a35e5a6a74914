import {
  OrchestraError,
  type Template,
  type TemplateDefinition,
  type TemplateStrategy,
} from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { Diff } from '../diff.tsx';
import { Link, navigate, useLocation } from '../router.tsx';
import { describeError, fieldErrorsOf, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  ErrorBox,
  Json,
  Loading,
  NotLoaded,
  PagedTable,
  PageHeader,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';

const STRATEGIES: TemplateStrategy[] = [
  'least_connections',
  'round_robin',
  'weighted',
  'latency',
  'resource',
  'consistent_hash',
];

export function TemplatesPage() {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const prefix = query.get('prefix') ?? '';
  const pager = usePager(prefix);
  const templates = useAsync(
    () =>
      client.templates.list({
        limit: 50,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
        ...(prefix ? { name_prefix: prefix } : {}),
      }),
    [client, pager.cursor, prefix],
  );
  return (
    <>
      <PageHeader title="Templates">
        {canWrite && (
          <Link to="/templates/new" className="button primary">
            New template
          </Link>
        )}
      </PageHeader>
      <form className="filters" aria-label="Filter templates" onSubmit={(e) => e.preventDefault()}>
        <div className="field">
          <label htmlFor="filter-prefix">Name starts with</label>
          <input
            id="filter-prefix"
            defaultValue={prefix}
            onKeyDown={(e) => {
              if (e.key !== 'Enter') return;
              const value = e.currentTarget.value.trim();
              navigate(value ? `/templates?prefix=${encodeURIComponent(value)}` : '/templates', {
                replace: true,
              });
            }}
          />
        </div>
      </form>
      <PagedTable
        result={templates}
        pager={pager}
        what="templates"
        empty={
          prefix
            ? 'No template starts with that.'
            : 'No templates yet. A template names a kind of task: its input schema, defaults and the capabilities it needs.'
        }
        columns={['Name', 'Version', 'Capabilities', 'Description', 'Changed']}
        row={(t: Template) => (
          <tr key={t.id}>
            <td>
              <Link to={`/templates/${encodeURIComponent(t.name)}`}>{t.name}</Link>
            </td>
            <td>
              v{t.version}
              {t.version !== t.highest_version && (
                <span className="muted"> (of {t.highest_version})</span>
              )}
            </td>
            <td>{t.capabilities.join(', ') || <span className="muted">–</span>}</td>
            <td>{t.description || <span className="muted">–</span>}</td>
            <td>
              <Time iso={t.version_created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}

/** What an update sends: the definition fields of a template at one version. */
function definitionOf(t: Template): TemplateDefinition {
  return {
    ...(t.kind === 'llm' ? { kind: 'llm' as const, llm: t.llm } : {}),
    description: t.description,
    labels: t.labels,
    ...(t.kind === 'llm' ? {} : { capabilities: t.capabilities }),
    ...(t.input_schema ? { input_schema: t.input_schema } : {}),
    ...(t.output_schema ? { output_schema: t.output_schema } : {}),
    ...(t.config_schema ? { config_schema: t.config_schema } : {}),
    config: t.config,
    default_timeout_ms: t.default_timeout_ms,
    default_max_attempts: t.default_max_attempts,
    default_priority: t.default_priority,
    strategy: t.strategy,
    concurrency_key_limit: t.concurrency_key_limit,
  };
}

/** The fields of a hosted agent (`kind: llm`), as the form edits them. */
const LLM_FIELDS = [
  'llm_provider',
  'llm_model',
  'llm_fallbacks',
  'llm_system_prompt',
  'llm_prompt',
  'llm_tools',
  'llm_temperature',
  'llm_max_tokens',
  'llm_max_turns',
  'llm_max_tool_calls',
  'llm_max_input_tokens',
  'llm_max_output_tokens',
  'llm_max_cost_usd',
  'llm_max_wall_time_ms',
  'llm_memory',
  'llm_memory_size',
] as const;

type EditorFields = Record<(typeof LLM_FIELDS)[number], string> & {
  kind: string;
  name: string;
  description: string;
  capabilities: string;
  labels: string;
  input_schema: string;
  output_schema: string;
  config_schema: string;
  config: string;
  default_timeout_ms: string;
  default_max_attempts: string;
  default_priority: string;
  strategy: string;
  concurrency_key_limit: string;
};

function fieldsOf(t: Template | undefined): EditorFields {
  const json = (v: unknown) => (v == null ? '' : JSON.stringify(v, null, 2));
  const llm = t?.llm ?? null;
  const limit = (v: number | undefined) => (v === undefined ? '' : String(v));
  return {
    kind: t?.kind ?? 'agent',
    llm_provider: llm?.model.provider ?? '',
    llm_model: llm?.model.model ?? '',
    llm_fallbacks: (llm?.fallbacks ?? []).map((f) => `${f.provider}/${f.model}`).join('\n'),
    llm_system_prompt: llm?.system_prompt ?? '',
    llm_prompt: llm?.prompt ?? '',
    llm_tools: (llm?.tools ?? []).join(', '),
    llm_temperature: limit(llm?.temperature),
    llm_max_tokens: limit(llm?.max_tokens),
    llm_max_turns: limit(llm?.limits?.max_turns),
    llm_max_tool_calls: limit(llm?.limits?.max_tool_calls),
    llm_max_input_tokens: limit(llm?.limits?.max_input_tokens),
    llm_max_output_tokens: limit(llm?.limits?.max_output_tokens),
    llm_max_cost_usd: limit(llm?.limits?.max_cost_usd),
    llm_max_wall_time_ms: limit(llm?.limits?.max_wall_time_ms),
    llm_memory: llm?.memory?.strategy ?? '',
    llm_memory_size: limit(llm?.memory?.turns ?? llm?.memory?.max_tokens),
    name: t?.name ?? '',
    description: t?.description ?? '',
    capabilities: t?.capabilities.join(', ') ?? '',
    labels: t
      ? Object.entries(t.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join('\n')
      : '',
    input_schema: json(t?.input_schema),
    output_schema: json(t?.output_schema),
    config_schema: json(t?.config_schema),
    config: t && Object.keys(t.config).length > 0 ? json(t.config) : '',
    default_timeout_ms: t ? String(t.default_timeout_ms) : '',
    default_max_attempts: t ? String(t.default_max_attempts) : '',
    default_priority: t ? String(t.default_priority) : '',
    strategy: t?.strategy ?? '',
    concurrency_key_limit: t?.concurrency_key_limit != null ? String(t.concurrency_key_limit) : '',
  };
}

type LlmDefinition = NonNullable<TemplateDefinition['llm']>;

/** The hosted agent's fields as its `llm`; errors by field for what is not well-formed. */
function parseLlm(f: EditorFields, errors: Record<string, string>): LlmDefinition | undefined {
  if (f.llm_provider.trim() === '') errors.llm_provider = 'Required: a model provider’s name.';
  if (f.llm_model.trim() === '') errors.llm_model = 'Required: one of the provider’s models.';
  const number = (name: (typeof LLM_FIELDS)[number], whole: boolean): number | undefined => {
    const text = f[name].trim();
    if (text === '') return undefined;
    const n = Number(text);
    if (!Number.isFinite(n) || (whole && !Number.isInteger(n))) {
      errors[name] = whole ? 'Enter a whole number.' : 'Enter a number.';
      return undefined;
    }
    return n;
  };
  const fallbacks: { provider: string; model: string }[] = [];
  for (const line of f.llm_fallbacks.split('\n')) {
    const text = line.trim();
    if (text === '') continue;
    const slash = text.indexOf('/');
    if (slash < 1 || slash === text.length - 1)
      errors.llm_fallbacks = `"${text}" is not provider/model.`;
    else fallbacks.push({ provider: text.slice(0, slash), model: text.slice(slash + 1) });
  }
  const tools = f.llm_tools
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  const limits = {
    max_turns: number('llm_max_turns', true),
    max_tool_calls: number('llm_max_tool_calls', true),
    max_input_tokens: number('llm_max_input_tokens', true),
    max_output_tokens: number('llm_max_output_tokens', true),
    max_cost_usd: number('llm_max_cost_usd', false),
    max_wall_time_ms: number('llm_max_wall_time_ms', true),
  };
  const temperature = number('llm_temperature', false);
  const maxTokens = number('llm_max_tokens', true);
  const memorySize = number('llm_memory_size', true);
  const memory = f.llm_memory as '' | 'last_turns' | 'token_window' | 'summary' | 'none';
  const defined = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined));
  return {
    model: { provider: f.llm_provider.trim(), model: f.llm_model.trim() },
    ...(fallbacks.length > 0 ? { fallbacks } : {}),
    ...(f.llm_system_prompt.trim() !== '' ? { system_prompt: f.llm_system_prompt } : {}),
    ...(f.llm_prompt.trim() !== '' ? { prompt: f.llm_prompt } : {}),
    ...(tools.length > 0 ? { tools } : {}),
    ...(temperature !== undefined ? { temperature } : {}),
    ...(maxTokens !== undefined ? { max_tokens: maxTokens } : {}),
    ...(Object.keys(defined).length > 0 ? { limits: defined } : {}),
    ...(memory !== ''
      ? {
          memory: {
            strategy: memory,
            ...(memorySize !== undefined && (memory === 'last_turns' || memory === 'summary')
              ? { turns: memorySize }
              : {}),
            ...(memorySize !== undefined && memory === 'token_window'
              ? { max_tokens: memorySize }
              : {}),
          },
        }
      : {}),
  };
}

/** The form's text as a definition; or the fields that are not even well-formed. */
function parseFields(
  f: EditorFields,
): { definition: TemplateDefinition } | { errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const definition: TemplateDefinition = { description: f.description };
  if (f.kind === 'llm') {
    const llm = parseLlm(f, errors);
    if (llm !== undefined) {
      definition.kind = 'llm';
      definition.llm = llm;
    }
  } else {
    definition.capabilities = f.capabilities
      .split(',')
      .map((c) => c.trim())
      .filter(Boolean);
  }
  const labels: Record<string, string> = {};
  for (const line of f.labels.split('\n')) {
    if (line.trim() === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) errors.labels = `"${line.trim()}" is not key=value.`;
    else labels[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  definition.labels = labels;
  for (const name of ['input_schema', 'output_schema', 'config_schema', 'config'] as const) {
    const text = f[name].trim();
    if (text === '') continue;
    try {
      const value: unknown = JSON.parse(text);
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        errors[name] = 'Must be a JSON object.';
      } else definition[name] = value as Record<string, unknown>;
    } catch (err) {
      errors[name] = `Not valid JSON: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  for (const name of ['default_timeout_ms', 'default_max_attempts', 'default_priority'] as const) {
    const text = f[name].trim();
    if (text === '') continue;
    const n = Number(text);
    if (!Number.isInteger(n)) errors[name] = 'Enter a whole number.';
    else definition[name] = n;
  }
  if (f.strategy) definition.strategy = f.strategy as TemplateStrategy;
  const limit = f.concurrency_key_limit.trim();
  if (limit !== '') {
    const n = Number(limit);
    if (!Number.isInteger(n)) errors.concurrency_key_limit = 'Enter a whole number.';
    else definition.concurrency_key_limit = n;
  }
  return Object.keys(errors).length > 0 ? { errors } : { definition };
}

export function TemplateEditorPage({ name }: { name?: string }) {
  const { client } = useSession();
  const existing = useAsync<Template | undefined>(
    async () => (name ? client.templates.get(name) : undefined),
    [client, name],
  );
  if (name && existing.data === undefined) {
    return <NotLoaded result={existing} title={`Edit ${name}`} what="the template" />;
  }
  return <TemplateForm key={existing.data?.latest_version ?? 'new'} template={existing.data} />;
}

function TemplateForm({ template }: { template: Template | undefined }) {
  const { client } = useSession();
  const [fields, setFields] = useState(() => fieldsOf(template));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const set = (name: keyof EditorFields) => (value: string) =>
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
      const saved = template
        ? await client.templates.update(template.name, parsed.definition, {
            ifVersion: template.latest_version,
          })
        : await client.templates.create({ name: fields.name.trim(), ...parsed.definition });
      navigate(`/templates/${encodeURIComponent(saved.name)}`);
    } catch (err) {
      if (err instanceof OrchestraError && err.status === 412) {
        setProblem(
          'Someone else changed this template since you opened it. Reload the page to edit the newest version (your changes here are not saved).',
        );
      } else {
        const byField = fieldErrorsOf(err);
        if (byField) setErrors(byField);
        setProblem(byField ? (err as Error).message : describeError(err));
      }
    } finally {
      setBusy(false);
    }
  };

  const text = (
    name: keyof EditorFields,
    label: string,
    options: { area?: number; help?: string; disabled?: boolean; type?: 'number' } = {},
  ) => (
    <TextField
      id={`template-${name}`}
      label={label}
      value={fields[name]}
      onChange={set(name)}
      error={errors[name]}
      help={options.help}
      rows={options.area}
      disabled={options.disabled}
      {...(options.type ? { type: options.type } : {})}
      spellCheck={false}
    />
  );

  return (
    <>
      <PageHeader title={template ? `Edit ${template.name}` : 'New template'} />
      <form className="panel form" onSubmit={save} noValidate aria-label="Template">
        {text('name', 'Name', {
          disabled: template !== undefined,
          help: template
            ? 'A template keeps its name.'
            : 'Lowercase letters, digits, ".", "_" and "-".',
        })}
        {text('description', 'Description')}
        <div className="field">
          <label htmlFor="template-kind">Kind</label>
          <select
            id="template-kind"
            value={fields.kind}
            onChange={(e) => set('kind')(e.target.value)}
          >
            <option value="agent">Agent: your agents run its tasks</option>
            <option value="llm">
              Hosted agent (llm): Orchestra runs it with a model and tools
            </option>
          </select>
        </div>
        {fields.kind === 'llm' ? (
          <fieldset className="panel" aria-label="Hosted agent">
            <legend>Hosted agent</legend>
            {errors.llm && <small className="field-error">{errors.llm}</small>}
            <div className="columns">
              {text('llm_provider', 'Model provider', {
                help: 'A provider’s name (Providers page).',
              })}
              {text('llm_model', 'Model', { help: 'One of its models.' })}
            </div>
            {text('llm_fallbacks', 'Fallbacks', {
              area: 2,
              help: 'One provider/model a line, tried in order.',
            })}
            {text('llm_system_prompt', 'System prompt', {
              area: 4,
              help: '{{input}} is the input as JSON, {{input.field}} one of its fields.',
            })}
            {text('llm_prompt', 'Prompt', {
              area: 2,
              help: 'The user message. Default: the input’s prompt field, else the input as JSON.',
            })}
            {text('llm_tools', 'Tools', {
              help: 'Names or patterns (github__*), comma-separated.',
            })}
            <div className="columns">
              {text('llm_temperature', 'Temperature')}
              {text('llm_max_tokens', 'Max tokens per call', { type: 'number' })}
            </div>
            <div className="columns">
              {text('llm_max_turns', 'Max turns', { type: 'number' })}
              {text('llm_max_tool_calls', 'Max tool calls', { type: 'number' })}
              {text('llm_max_input_tokens', 'Max input tokens', { type: 'number' })}
              {text('llm_max_output_tokens', 'Max output tokens', { type: 'number' })}
              {text('llm_max_cost_usd', 'Max cost (USD)')}
              {text('llm_max_wall_time_ms', 'Max wall time (ms)', { type: 'number' })}
            </div>
            <div className="columns">
              <div className="field">
                <label htmlFor="template-llm_memory">Session memory</label>
                <select
                  id="template-llm_memory"
                  value={fields.llm_memory}
                  onChange={(e) => set('llm_memory')(e.target.value)}
                >
                  <option value="">Default (the last 20 turns)</option>
                  <option value="last_turns">The last turns</option>
                  <option value="token_window">The turns that fit in a token window</option>
                  <option value="summary">A summary, then the last turns</option>
                  <option value="none">None</option>
                </select>
              </div>
              {text('llm_memory_size', 'Turns or tokens', { type: 'number' })}
            </div>
          </fieldset>
        ) : (
          text('capabilities', 'Capabilities', {
            help: 'Comma-separated; an agent must offer all of them.',
          })
        )}
        {text('labels', 'Labels', { area: 2, help: 'One key=value a line.' })}
        {text('input_schema', 'Input schema (JSON Schema)', {
          area: 8,
          help: 'Tasks are checked against it; the console builds its submit form from it.',
        })}
        {text('output_schema', 'Output schema (JSON Schema)', { area: 4 })}
        {text('config_schema', 'Config schema (JSON Schema)', { area: 3 })}
        {text('config', 'Config (JSON)', { area: 3 })}
        <div className="columns">
          {text('default_timeout_ms', 'Timeout (ms)', { type: 'number' })}
          {text('default_max_attempts', 'Attempts', { type: 'number' })}
          {text('default_priority', 'Priority', { type: 'number' })}
          {text('concurrency_key_limit', 'Concurrency per key', { type: 'number' })}
        </div>
        <div className="field">
          <label htmlFor="template-strategy">Dispatch strategy</label>
          <select
            id="template-strategy"
            value={fields.strategy}
            onChange={(e) => set('strategy')(e.target.value)}
          >
            <option value="">Default (least_connections)</option>
            {STRATEGIES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
          {errors.strategy && <small className="field-error">{errors.strategy}</small>}
        </div>
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Saving…' : template ? 'Save as a new version' : 'Create template'}
          </button>
          <button
            type="button"
            onClick={() =>
              navigate(template ? `/templates/${encodeURIComponent(template.name)}` : '/templates')
            }
          >
            Cancel
          </button>
        </div>
      </form>
    </>
  );
}

export function TemplateDetailPage({ name }: { name: string }) {
  const { client, canWrite } = useSession();
  const latest = useAsync(() => client.templates.get(name), [client, name]);
  const versions = useAsync(() => client.templates.versions(name, { limit: 100 }), [client, name]);
  const [selected, setSelected] = useState<number | undefined>();
  const chosen = useAsync<Template | undefined>(
    async () => (selected ? client.templates.get(name, { version: selected }) : undefined),
    [client, name, selected],
  );
  const [actionError, setActionError] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();

  if (latest.data === undefined) {
    return <NotLoaded result={latest} title={`Template ${name}`} what="the template" />;
  }
  const t = latest.data;
  const rollback = async (version: number) => {
    setActionError(undefined);
    setNotice(undefined);
    try {
      await client.templates.rollback(name, version);
      setNotice(`latest now points to version ${version}.`);
      setSelected(undefined);
      latest.reload();
      versions.reload();
    } catch (err) {
      setActionError(describeError(err));
    }
  };
  return (
    <>
      <PageHeader title={`Template ${t.name}`}>
        {canWrite && (
          <>
            <Link to={`/tasks/new?template=${encodeURIComponent(t.name)}`} className="button">
              Submit a task
            </Link>
            <Link to={`/templates/${encodeURIComponent(t.name)}/edit`} className="button primary">
              Edit
            </Link>
            <ConfirmButton
              label="Delete"
              confirmLabel="Delete it and all its versions"
              onConfirm={async () => {
                await client.templates.delete(t.name);
                navigate('/templates');
              }}
            />
          </>
        )}
      </PageHeader>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <Alert message={actionError} />
      <section className="panel" aria-label="Template">
        <dl className="facts">
          <dt>Latest version</dt>
          <dd>
            v{t.version} <span className="muted">(highest v{t.highest_version})</span>
          </dd>
          <dt>Description</dt>
          <dd>{t.description || '–'}</dd>
          <dt>Capabilities</dt>
          <dd>{t.capabilities.join(', ') || '–'}</dd>
          <dt>Defaults</dt>
          <dd>
            timeout {t.default_timeout_ms} ms · {t.default_max_attempts} attempts · priority{' '}
            {t.default_priority} · {t.strategy}
          </dd>
          <dt>Changed</dt>
          <dd>
            <Time iso={t.version_created_at} />
          </dd>
        </dl>
      </section>
      <div className="columns">
        <section className="panel" aria-labelledby="input-schema-title">
          <h2 id="input-schema-title">Input schema</h2>
          {t.input_schema ? (
            <Json value={t.input_schema} label="Input schema" />
          ) : (
            <p className="muted">None: any input is accepted.</p>
          )}
        </section>
        <section className="panel" aria-labelledby="versions-title">
          <h2 id="versions-title">Versions</h2>
          {versions.error !== undefined && <ErrorBox error={versions.error} />}
          {versions.data === undefined ? (
            <Loading what="versions" />
          ) : (
            <ol className="versions" aria-label="Versions">
              {versions.data.items.map((v) => (
                <li key={v.version}>
                  <button
                    type="button"
                    className="link"
                    aria-pressed={selected === v.version}
                    onClick={() => setSelected(v.version === selected ? undefined : v.version)}
                  >
                    v{v.version}
                  </button>
                  {v.latest && <span className="badge badge-online">latest</span>}{' '}
                  <Time iso={v.created_at} />
                  {canWrite && !v.latest && (
                    <button type="button" onClick={() => rollback(v.version)}>
                      Roll back to v{v.version}
                    </button>
                  )}
                </li>
              ))}
            </ol>
          )}
        </section>
      </div>
      {selected !== undefined && (
        <section className="panel" aria-labelledby="diff-title">
          <h2 id="diff-title">
            Changes from v{selected} to the latest (v{t.version})
          </h2>
          {chosen.error !== undefined && <ErrorBox error={chosen.error} />}
          {chosen.data === undefined ? (
            <Loading what={`version ${selected}`} />
          ) : (
            <Diff
              before={definitionOf(chosen.data)}
              after={definitionOf(t)}
              label={`Changes from v${selected} to v${t.version}`}
            />
          )}
        </section>
      )}
    </>
  );
}
