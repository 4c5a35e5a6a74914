import OpenAI from 'openai';
import type {
  ChatCompletionChunk,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageParam,
} from 'openai/resources/chat/completions';
import { ClientCache, listedModels, watchedCall } from './adapter-support.ts';
import type {
  ChatMessage,
  FinishReason,
  ModelAdapter,
  ModelCallOptions,
  ModelRequest,
  ModelResponse,
  ModelToolCall,
  ProviderEndpoint,
} from './model-call.ts';

/** Servers that take no key still get one: the client refuses to start without. */
const NO_KEY = 'no-key';

function finishOf(reason: string | null | undefined): FinishReason {
  switch (reason) {
    case 'stop':
    case 'length':
    case 'tool_calls':
    case 'content_filter':
      return reason;
    case 'function_call':
      return 'tool_calls';
    default:
      return 'other';
  }
}

function messageOf(m: ChatMessage): ChatCompletionMessageParam {
  switch (m.role) {
    case 'system':
    case 'user':
      return { role: m.role, content: m.content };
    case 'assistant':
      return m.tool_calls !== undefined && m.tool_calls.length > 0
        ? {
            role: 'assistant',
            content: m.content === '' ? null : m.content,
            tool_calls: m.tool_calls.map((c) => ({
              id: c.id,
              type: 'function' as const,
              function: { name: c.name, arguments: c.arguments },
            })),
          }
        : { role: 'assistant', content: m.content };
    case 'tool':
      return { role: 'tool', tool_call_id: m.tool_call_id, content: m.content };
  }
}

function messagesOf(request: ModelRequest): ChatCompletionMessageParam[] {
  return request.messages.map(messageOf);
}

function paramsOf(request: ModelRequest): ChatCompletionCreateParamsNonStreaming {
  const params: ChatCompletionCreateParamsNonStreaming = {
    model: request.model,
    messages: messagesOf(request),
  };
  if (request.tools !== undefined && request.tools.length > 0) {
    params.tools = request.tools.map((t) => ({
      type: 'function' as const,
      function: { name: t.name, description: t.description, parameters: t.parameters },
    }));
  }
  if (request.temperature !== undefined) params.temperature = request.temperature;
  if (request.top_p !== undefined) params.top_p = request.top_p;
  // `max_tokens` rather than `max_completion_tokens`: compatible servers know the older name.
  if (request.max_tokens !== undefined) params.max_tokens = request.max_tokens;
  if (request.stop !== undefined && request.stop.length > 0) params.stop = request.stop;
  if (request.response_schema !== undefined) {
    params.response_format = {
      type: 'json_schema',
      json_schema: { name: request.response_schema.name, schema: request.response_schema.schema },
    };
  }
  return params;
}

/** OpenAI Chat Completions, through the official `openai` client. */
export class OpenAiAdapter implements ModelAdapter {
  readonly #clients = new ClientCache<OpenAI>(
    (endpoint) =>
      new OpenAI({
        apiKey: endpoint.apiKey ?? NO_KEY,
        baseURL: endpoint.baseUrl,
        // Nothing from this process's environment (OPENAI_ORG_ID…) may reach a tenant's provider.
        organization: null,
        project: null,
        webhookSecret: null,
        defaultHeaders: endpoint.headers,
        maxRetries: endpoint.maxRetries,
        timeout: endpoint.timeoutMs,
      }),
  );

  async call(
    endpoint: ProviderEndpoint,
    request: ModelRequest,
    options: ModelCallOptions,
  ): Promise<Omit<ModelResponse, 'provider'>> {
    const client = this.#clients.get(endpoint);
    const params = paramsOf(request);
    return watchedCall(endpoint, request.model, options.signal, async (watch) => {
      if (options.stream === false) {
        const answer = await client.chat.completions.create(params, { signal: watch.signal });
        const choice = answer.choices[0];
        const message = choice?.message;
        return {
          model: answer.model || request.model,
          text: message?.content ?? '',
          tool_calls: (message?.tool_calls ?? []).flatMap((c) =>
            c.type === 'function'
              ? [{ id: c.id, name: c.function.name, arguments: c.function.arguments }]
              : [],
          ),
          finish: finishOf(choice?.finish_reason),
          usage: {
            input_tokens: answer.usage?.prompt_tokens ?? 0,
            output_tokens: answer.usage?.completion_tokens ?? 0,
            cached_input_tokens: answer.usage?.prompt_tokens_details?.cached_tokens ?? 0,
          },
          response_id: answer.id ?? null,
        };
      }
      const stream = await client.chat.completions.create(
        { ...params, stream: true, stream_options: { include_usage: true } },
        { signal: watch.signal },
      );
      watch.started();
      let text = '';
      let model = request.model;
      let id: string | null = null;
      let finish: FinishReason = 'other';
      let finished = false;
      let usage: ChatCompletionChunk['usage'] = null;
      const calls: { id: string; name: string; arguments: string }[] = [];
      for await (const chunk of stream) {
        watch.progress();
        id ??= chunk.id ?? null;
        if (chunk.model) model = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (choice === undefined) continue;
        const delta = choice.delta;
        if (delta.content) {
          text += delta.content;
          options.onText?.(delta.content);
        }
        for (const part of delta.tool_calls ?? []) {
          let call = calls[part.index];
          if (call === undefined) {
            call = { id: '', name: '', arguments: '' };
            calls[part.index] = call;
          }
          if (part.id) call.id = part.id;
          if (part.function?.name) call.name += part.function.name;
          if (part.function?.arguments) call.arguments += part.function.arguments;
        }
        if (choice.finish_reason) {
          finish = finishOf(choice.finish_reason);
          finished = true;
        }
      }
      watch.ended(finished);
      const toolCalls: ModelToolCall[] = calls.filter((c) => c !== undefined);
      return {
        model,
        text,
        tool_calls: toolCalls,
        finish,
        usage: {
          input_tokens: usage?.prompt_tokens ?? 0,
          output_tokens: usage?.completion_tokens ?? 0,
          cached_input_tokens: usage?.prompt_tokens_details?.cached_tokens ?? 0,
        },
        response_id: id,
      };
    });
  }

  listModels(endpoint: ProviderEndpoint, signal?: AbortSignal): Promise<string[]> {
    const client = this.#clients.get(endpoint);
    return listedModels(endpoint, signal, (signal) => client.models.list({ signal }));
  }
}
