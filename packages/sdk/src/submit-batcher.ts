import { OrchestraError } from './errors.ts';
import type { CreateTaskInput, CreateTaskOutcome, CreateTaskResult } from './types.ts';

/** Most tasks the server takes in one `POST /v1/tasks/batch`. */
export const MAX_BATCH_TASKS = 500;

interface Pending {
  input: CreateTaskInput;
  resolve: (result: CreateTaskResult) => void;
  reject: (error: unknown) => void;
}

/** Runs `work` after the current turn of the event loop (its I/O callbacks included). */
const afterThisTurn: (work: () => void) => void =
  typeof globalThis.setImmediate === 'function'
    ? (work) => void globalThis.setImmediate(work)
    : (work) => void setTimeout(work, 0);

/**
 * Gathers the submits made in one turn of the event loop and sends them together: one
 * alone as a plain submit, several as batches. Each caller still gets its own task or its
 * own error, as if it had sent its submit alone; concurrent submits have no order among
 * themselves either way. A batch that fails as a whole (no answer, 401, 503…) rejects
 * each of its callers with that error.
 */
export class SubmitBatcher {
  readonly #one: (input: CreateTaskInput) => Promise<CreateTaskResult>;
  readonly #many: (inputs: CreateTaskInput[]) => Promise<CreateTaskOutcome[]>;
  #pending: Pending[] = [];

  constructor(
    one: (input: CreateTaskInput) => Promise<CreateTaskResult>,
    many: (inputs: CreateTaskInput[]) => Promise<CreateTaskOutcome[]>,
  ) {
    this.#one = one;
    this.#many = many;
  }

  submit(input: CreateTaskInput): Promise<CreateTaskResult> {
    return new Promise((resolve, reject) => {
      if (this.#pending.length === 0) afterThisTurn(() => this.#flush());
      this.#pending.push({ input, resolve, reject });
    });
  }

  #flush(): void {
    const pending = this.#pending;
    this.#pending = [];
    const only = pending.length === 1 ? pending[0] : undefined;
    if (only !== undefined) {
      this.#one(only.input).then(only.resolve, only.reject);
      return;
    }
    for (let i = 0; i < pending.length; i += MAX_BATCH_TASKS) {
      const chunk = pending.slice(i, i + MAX_BATCH_TASKS);
      this.#many(chunk.map((p) => p.input)).then(
        (outcomes) =>
          chunk.forEach((p, j) => {
            const outcome = outcomes[j];
            if (outcome?.ok) p.resolve({ task: outcome.task, replayed: outcome.replayed });
            else p.reject(outcome ? asSingleSubmit(outcome.error, j) : missingOutcome(j));
          }),
        (error: unknown) => {
          for (const p of chunk) p.reject(error);
        },
      );
    }
  }
}

function missingOutcome(index: number): OrchestraError {
  return new OrchestraError(
    'INVALID_RESPONSE',
    `POST /v1/tasks/batch answered without item ${index}`,
    {
      status: 200,
    },
  );
}

/** The error as a submit sent alone gets it: fields named `body.…`, not `body.tasks.<i>.…`. */
function asSingleSubmit(error: OrchestraError, index: number): OrchestraError {
  const prefix = `body.tasks.${index}.`;
  const rename = (text: string) =>
    text.startsWith(prefix) ? `body.${text.slice(prefix.length)}` : text;
  const fields = error.details?.fields;
  const details = Array.isArray(fields)
    ? {
        ...error.details,
        fields: fields.map((f: { field?: unknown }) =>
          typeof f.field === 'string' ? { ...f, field: rename(f.field) } : f,
        ),
      }
    : error.details;
  return new OrchestraError(error.code, rename(error.message), {
    status: error.status,
    requestId: error.requestId,
    details,
    traceId: error.traceId,
    retryAfterSeconds: error.retryAfterSeconds,
  });
}
