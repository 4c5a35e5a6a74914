import type { ChatCompletion, CreateChatCompletion, Task } from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import type { TaskService } from '../tasks/index.ts';
import type { TemplateService } from '../templates/index.ts';

/** Fields of OpenAI's request that a hosted agent decides itself: refused, not ignored. */
const REFUSED_FIELDS = ['tools', 'tool_choice', 'functions', 'function_call', 'response_format'];

/** What a chat completion's run streams: pieces of the answer, then its end. */
export type ChatItem =
  | { kind: 'delta'; text: string }
  | { kind: 'end'; task: Task; usage: ChatCompletion['usage'] };

/** The answer of a succeeded task as the assistant message's text. */
export function answerText(result: unknown): string {
  return typeof result === 'string' ? result : JSON.stringify(result ?? null);
}

/**
 * The OpenAI-compatible endpoint: a chat completion is a task of a hosted agent's template,
 * with `{"messages": …}` as its input, followed to its end through the task's stream.
 */
export class ChatService {
  readonly #tasks: TaskService;
  readonly #templates: TemplateService;

  constructor(deps: { tasks: TaskService; templates: TemplateService }) {
    this.#tasks = deps.tasks;
    this.#templates = deps.templates;
  }

  /** Checks the request and submits its task. */
  async submit(principal: Principal, body: CreateChatCompletion): Promise<Task> {
    for (const field of REFUSED_FIELDS) {
      if ((body as Record<string, unknown>)[field] !== undefined) {
        throw fieldError(
          `body.${field}`,
          'is decided by the hosted agent’s template (its tools and output schema), not by the request',
        );
      }
    }
    const template = await this.#templates.get(principal, body.model);
    if (template.kind !== 'llm') {
      throw fieldError(
        'body.model',
        `"${body.model}" is a template of kind ${template.kind}; name a hosted agent (a template of kind llm)`,
      );
    }
    const sessionId = body.metadata?.session_id;
    const { task } = await this.#tasks.create(principal, {
      template: template.name,
      input: { messages: body.messages },
      ...(sessionId !== undefined ? { session_id: sessionId } : {}),
    });
    return task;
  }

  /**
   * The task's answer as it streams, then its end with the usage of every model call; ends
   * early when `signal` aborts.
   */
  async *follow(principal: Principal, task: Task, signal: AbortSignal): AsyncIterable<ChatItem> {
    const usage = { input: 0, output: 0, cached: 0 };
    for await (const item of this.#tasks.events(principal, task.id, 0, signal)) {
      if (!('offset' in item)) continue;
      const data = item.data as { data?: unknown; name?: string } | null;
      if (item.type === 'task.output' && typeof data?.data === 'string') {
        yield { kind: 'delta', text: data.data };
      } else if (item.type === 'task.custom' && data?.name === 'llm.model_call') {
        const call = data.data as {
          usage?: { input_tokens?: number; output_tokens?: number; cached_input_tokens?: number };
        };
        usage.input += call.usage?.input_tokens ?? 0;
        usage.output += call.usage?.output_tokens ?? 0;
        usage.cached += call.usage?.cached_input_tokens ?? 0;
      }
    }
    if (signal.aborted) return;
    yield {
      kind: 'end',
      task: await this.#tasks.get(principal, task.id),
      usage: {
        prompt_tokens: usage.input,
        completion_tokens: usage.output,
        total_tokens: usage.input + usage.output,
        prompt_tokens_details: { cached_tokens: usage.cached },
      },
    };
  }

  /** Why a chat completion has no answer: the task did not succeed. */
  failure(task: Task): ApiError {
    const error = task.error;
    return new ApiError(
      'AGENT_RUN_FAILED',
      `The hosted agent's task ${task.id} ended ${task.state}${error ? `: ${error.code}: ${error.message}` : ''}`,
      { details: { task_id: task.id, state: task.state, error: error ?? null } },
    );
  }
}
