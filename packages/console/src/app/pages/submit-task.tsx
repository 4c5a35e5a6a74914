import { type CreateTaskInput, OrchestraError, type Template } from '@orchestra/sdk';
import { type FormEvent, useEffect, useState } from 'react';
import { navigate, useLocation } from '../router.tsx';
import {
  buildInput,
  fieldOfServerMessage,
  formable,
  initialValues,
  type JsonSchema,
  SchemaForm,
} from '../schema-form.tsx';
import { describeError, useSession } from '../session.tsx';
import { Alert, ErrorBox, Loading, PageHeader, TextField, useAsync } from '../ui.tsx';

/** The server names the offending field `body.<name>`; the form shows it there. */
function fieldErrors(err: unknown): { fields: Record<string, string>; rest?: string } {
  if (!(err instanceof OrchestraError)) return { fields: {}, rest: describeError(err) };
  const listed = (err.details?.fields ?? []) as { field: string; message: string }[];
  const fields: Record<string, string> = {};
  for (const f of listed) fields[f.field.replace(/^body\./, '')] = f.message;
  return listed.length > 0 ? { fields, rest: err.message } : { fields, rest: describeError(err) };
}

export function SubmitTaskPage() {
  const { client } = useSession();
  const { query } = useLocation();
  const [templateName, setTemplateName] = useState(query.get('template') ?? '');
  const [capabilities, setCapabilities] = useState('');
  const [values, setValues] = useState<Record<string, string>>({});
  const [rawInput, setRawInput] = useState('{}');
  const [asJson, setAsJson] = useState(false);
  const [priority, setPriority] = useState('');
  const [idempotencyKey, setIdempotencyKey] = useState('');
  const [sessionId, setSessionId] = useState(query.get('session') ?? '');
  const [instanceId, setInstanceId] = useState(query.get('instance') ?? '');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  const templates = useAsync(() => client.templates.list({ limit: 200 }), [client]);
  const template = useAsync<Template | undefined>(
    async () => (templateName ? client.templates.get(templateName) : undefined),
    [client, templateName],
  );
  const schema = (template.data?.input_schema ?? null) as JsonSchema | null;
  const useForm = formable(schema) && !asJson;

  // A new template starts from its schema's defaults.
  useEffect(() => {
    if (formable(schema)) setValues(initialValues(schema));
    setErrors({});
    setProblem(undefined);
  }, [schema]);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    let input: unknown;
    if (useForm && schema) {
      const built = buildInput(schema, values);
      if ('errors' in built) {
        setErrors(built.errors);
        setProblem('Some fields need attention.');
        return;
      }
      input = built.input;
    } else {
      try {
        input = JSON.parse(rawInput);
      } catch {
        setErrors({ input: 'Enter valid JSON.' });
        return;
      }
    }
    const request: CreateTaskInput = { input };
    if (templateName) request.template = templateName;
    else {
      const caps = capabilities
        .split(',')
        .map((c) => c.trim())
        .filter(Boolean);
      if (caps.length === 0) {
        setErrors({ capabilities: 'Choose a template, or name at least one capability.' });
        return;
      }
      request.capabilities = caps;
    }
    if (priority.trim() !== '') request.priority = Number(priority);
    if (idempotencyKey.trim() !== '') request.idempotency_key = idempotencyKey.trim();
    if (sessionId.trim() !== '') request.session_id = sessionId.trim();
    if (instanceId.trim() !== '') request.instance = instanceId.trim();
    setBusy(true);
    try {
      const task = await client.tasks.create(request);
      navigate(`/tasks/${encodeURIComponent(task.id)}`);
    } catch (err) {
      const { fields, rest } = fieldErrors(err);
      // An input error names a property in its message: show it at that control.
      const inputMessage = fields.input;
      const onProperty = inputMessage ? fieldOfServerMessage(inputMessage) : undefined;
      if (useForm && onProperty) {
        setErrors({ [onProperty.field]: onProperty.message });
      } else setErrors(fields);
      setProblem(rest);
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="Submit a task" />
      <form className="panel form" onSubmit={submit} noValidate aria-label="Submit a task">
        <div className="field">
          <label htmlFor="task-template">Template</label>
          <select
            id="task-template"
            value={templateName}
            onChange={(e) => setTemplateName(e.target.value)}
            aria-describedby="task-template-help"
          >
            <option value="">None: route by capabilities</option>
            {templates.data?.items.map((t) => (
              <option key={t.id} value={t.name}>
                {t.name} (v{t.version})
              </option>
            ))}
          </select>
          <small id="task-template-help" className="muted">
            {template.data?.description ||
              'A template gives the task its input schema, defaults and capabilities.'}
          </small>
          {errors.template && <small className="field-error">{errors.template}</small>}
        </div>
        {!templateName && (
          <TextField
            id="task-capabilities"
            label="Capabilities"
            value={capabilities}
            onChange={setCapabilities}
            placeholder="fs.read, llm"
            error={errors.capabilities}
          />
        )}
        {templates.error !== undefined && <ErrorBox error={templates.error} />}
        {template.error !== undefined && <ErrorBox error={template.error} />}
        {templateName && template.loading && template.data === undefined ? (
          <Loading what="the template" />
        ) : (
          <fieldset>
            <legend>
              Input
              {formable(schema) && (
                <button type="button" className="link" onClick={() => setAsJson((v) => !v)}>
                  {asJson ? 'edit as a form' : 'edit as JSON'}
                </button>
              )}
            </legend>
            {useForm && schema ? (
              <SchemaForm
                schema={schema}
                values={values}
                errors={errors}
                onChange={(name, value) => setValues((v) => ({ ...v, [name]: value }))}
              />
            ) : (
              <div className="field">
                <label htmlFor="task-input">Input (JSON)</label>
                <textarea
                  id="task-input"
                  rows={6}
                  spellCheck={false}
                  value={rawInput}
                  onChange={(e) => setRawInput(e.target.value)}
                  aria-invalid={errors.input ? true : undefined}
                  aria-describedby={errors.input ? 'task-input-error' : undefined}
                />
                {errors.input && (
                  <small id="task-input-error" className="field-error">
                    {errors.input}
                  </small>
                )}
              </div>
            )}
          </fieldset>
        )}
        <details open={query.has('session') || query.has('instance') || undefined}>
          <summary>Options</summary>
          <TextField
            id="task-session"
            label="Session"
            value={sessionId}
            onChange={setSessionId}
            placeholder="ses_…: run it in this session, after its earlier tasks"
            error={errors.session_id}
          />
          <TextField
            id="task-instance"
            label="Instance"
            value={instanceId}
            onChange={setInstanceId}
            placeholder="ins_…: work in this instance, with the workspace tools"
            error={errors.instance}
          />
          <TextField
            id="task-priority"
            label="Priority"
            type="number"
            value={priority}
            onChange={setPriority}
            placeholder={String(template.data?.default_priority ?? 0)}
            error={errors.priority}
          />
          <TextField
            id="task-idempotency"
            label="Idempotency key"
            value={idempotencyKey}
            onChange={setIdempotencyKey}
            placeholder="the same key gives the same task"
            error={errors.idempotency_key}
          />
        </details>
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Submitting…' : 'Submit'}
          </button>
          <button type="button" onClick={() => navigate('/tasks')}>
            Cancel
          </button>
        </div>
      </form>
    </>
  );
}
