import type { ModelProvider, ModelProviderKind, ModelProviderTest } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { describeError, fieldErrorsOf, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  PagedTable,
  PageHeader,
  SelectField,
  TextField,
  useAsync,
  usePager,
} from '../ui.tsx';

const NAME = /^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$/;
const KINDS = [
  { value: 'openai', label: 'OpenAI-compatible (Chat Completions)' },
  { value: 'anthropic', label: 'Anthropic (Messages)' },
] as const;
/** One model a line: its name, then optionally its prices per million tokens. */
const MODEL_LINE = /^(\S+)(?:\s+(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)(?:\/(\d+(?:\.\d+)?))?)?$/;

type ParsedModels = { models: ModelProvider['models'] } | { error: string };

function parseModels(text: string): ParsedModels {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (lines.length === 0) return { error: 'At least one model.' };
  const models: ModelProvider['models'] = [];
  for (const line of lines) {
    const m = MODEL_LINE.exec(line);
    if (m === null) return { error: `"${line}": a name, then optionally IN/OUT[/CACHED] prices.` };
    const [, name, input, output, cached] = m as unknown as [
      string,
      string,
      ...(string | undefined)[],
    ];
    models.push(
      input !== undefined && output !== undefined
        ? {
            name,
            price: {
              input: Number(input),
              output: Number(output),
              ...(cached !== undefined ? { cached_input: Number(cached) } : {}),
            },
          }
        : { name },
    );
  }
  return { models };
}

/** Registers a provider (admins). */
function AddProviderForm(props: { onAdded: () => void }) {
  const { client } = useSession();
  const [name, setName] = useState('');
  const [kind, setKind] = useState<ModelProviderKind>('openai');
  const [baseUrl, setBaseUrl] = useState('');
  const [keySecret, setKeySecret] = useState('');
  const [models, setModels] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    const found: Record<string, string> = {};
    if (!NAME.test(name.trim())) {
      found.name = 'Lowercase letters, digits, "-" and single "_"; up to 63.';
    }
    if (!/^https?:\/\/\S+$/.test(baseUrl.trim())) found.base_url = 'An http:// or https:// URL.';
    const parsed = parseModels(models);
    if ('error' in parsed) found.models = parsed.error;
    setErrors(found);
    if (Object.keys(found).length > 0 || 'error' in parsed) return;
    setBusy(true);
    try {
      await client.modelProviders.create({
        name: name.trim(),
        kind,
        base_url: baseUrl.trim(),
        models: parsed.models,
        ...(keySecret.trim() !== '' ? { api_key_secret: keySecret.trim() } : {}),
      });
      setName('');
      setBaseUrl('');
      setKeySecret('');
      setModels('');
      props.onAdded();
    } catch (err) {
      const fields = fieldErrorsOf(err);
      if (fields) {
        setErrors(fields);
      } else setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel" aria-labelledby="add-provider-title">
      <h2 id="add-provider-title">Add a provider</h2>
      <form className="form" onSubmit={submit} noValidate>
        <TextField
          id="provider-name"
          label="Name"
          value={name}
          onChange={setName}
          maxLength={63}
          placeholder="openai"
          spellCheck={false}
          error={errors.name}
        />
        <SelectField
          id="provider-kind"
          label="Kind"
          value={kind}
          options={KINDS}
          onChange={setKind}
        />
        <TextField
          id="provider-base-url"
          label="Base URL"
          value={baseUrl}
          onChange={setBaseUrl}
          maxLength={2048}
          placeholder={
            kind === 'openai' ? 'https://api.openai.com/v1' : 'https://api.anthropic.com'
          }
          spellCheck={false}
          error={errors.base_url}
        />
        <TextField
          id="provider-key-secret"
          label="API key secret (optional)"
          value={keySecret}
          onChange={setKeySecret}
          maxLength={128}
          placeholder="OPENAI_API_KEY"
          help="The name of a secret (Secrets page) that holds the key. None for servers without keys, such as a local Ollama."
          spellCheck={false}
          error={errors.api_key_secret}
        />
        <TextField
          id="provider-models"
          label="Models"
          value={models}
          onChange={setModels}
          rows={3}
          placeholder="gpt-4.1-mini 0.4/1.6/0.1"
          help="One a line: the model's name, then optionally its prices in dollars per million input, output and cached input tokens."
          spellCheck={false}
          error={errors.models}
        />
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Add provider
          </button>
        </div>
      </form>
    </section>
  );
}

function TestResult({ result }: { result: ModelProviderTest }) {
  return (
    <div role="status" className={result.ok ? 'muted' : 'field-error'}>
      {result.ok ? 'Answers' : 'Fails'} ({result.latency_ms} ms)
      {result.listed_models !== null && `; lists ${result.listed_models.length} models`}
      {result.unlisted_models.length > 0 && `; does not list ${result.unlisted_models.join(', ')}`}
      {result.answer !== null && `; answered "${result.answer}"`}
      {result.error !== null &&
        `: ${result.error.code}${result.error.status !== null ? ` (HTTP ${result.error.status})` : ''}: ${result.error.message}`}
    </div>
  );
}

/** Tests one provider: lists its models and prompts its first one. */
function TestButton({ provider }: { provider: ModelProvider }) {
  const { client } = useSession();
  const [result, setResult] = useState<ModelProviderTest | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const first = provider.models[0]?.name;
  return (
    <>
      <button
        type="button"
        aria-label={`Test ${provider.name}`}
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          setProblem(undefined);
          try {
            setResult(
              await client.modelProviders.test(provider.name, first ? { model: first } : {}),
            );
          } catch (err) {
            setProblem(describeError(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? 'Testing…' : 'Test'}
      </button>
      {result && <TestResult result={result} />}
      <Alert message={problem} />
    </>
  );
}

/** Model providers of the tenant: admins add and remove them, writers test them. */
export function ProvidersPage() {
  const { client, canWrite, who } = useSession();
  const isAdmin = who.role === 'admin';
  const pager = usePager('');
  const providers = useAsync(
    () =>
      client.modelProviders.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Model providers" />
      <p className="muted">
        The model APIs hosted agents call. Keys come from secrets; extra header values are never
        shown.
      </p>
      {isAdmin ? (
        <AddProviderForm onAdded={providers.reload} />
      ) : (
        <p className="muted">Admins add and remove providers.</p>
      )}
      <PagedTable
        result={providers}
        pager={pager}
        what="providers"
        empty="No providers yet."
        columns={[
          'Name',
          'Kind',
          'Base URL',
          'Models',
          'Key',
          'Fallbacks',
          ...(canWrite ? [''] : []),
        ]}
        row={(p: ModelProvider) => (
          <tr key={p.id}>
            <td>
              <code>{p.name}</code>
              {!p.enabled && ' (disabled)'}
            </td>
            <td>{p.kind}</td>
            <td>
              <code>{p.base_url}</code>
            </td>
            <td>
              {p.models.map((m) => (
                <div key={m.name}>
                  <code>{m.name}</code>
                  {m.price && (
                    <span className="muted">
                      {' '}
                      ${m.price.input}/${m.price.output}
                      {m.price.cached_input !== undefined && `/$${m.price.cached_input}`} per Mtok
                    </span>
                  )}
                </div>
              ))}
            </td>
            <td>{p.api_key_secret ? <code>{p.api_key_secret}</code> : '-'}</td>
            <td>{p.fallbacks.map((f) => `${f.provider}/${f.model}`).join(', ') || '-'}</td>
            {canWrite && (
              <td>
                <div className="actions">
                  <TestButton provider={p} />
                  {isAdmin && (
                    <ConfirmButton
                      label="Delete"
                      confirmLabel={`Delete ${p.name}`}
                      ariaLabel={`Delete ${p.name}`}
                      onConfirm={async () => {
                        await client.modelProviders.delete(p.name);
                        providers.reload();
                      }}
                    />
                  )}
                </div>
              </td>
            )}
          </tr>
        )}
      />
    </>
  );
}
