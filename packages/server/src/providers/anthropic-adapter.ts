import Anthropic from '@anthropic-ai/sdk';
import type {
  ContentBlockParam,
  MessageCreateParamsNonStreaming,
  MessageParam,
  Usage,
} from '@anthropic-ai/sdk/resources/messages';
import { ClientCache, listedModels, watchedCall } from './adapter-support.ts';
import type {
  FinishReason,
  ModelAdapter,
  ModelCallOptions,
  ModelRequest,
  ModelResponse,
  ModelToolCall,
  ProviderEndpoint,
} from './model-call.ts';

/** The Messages API requires a limit; this one is used when the template sets none. */
export const ANTHROPIC_DEFAULT_MAX_TOKENS = 4096;
const NO_KEY = 'no-key';

function finishOf(reason: string | null | undefined): FinishReason {
  switch (reason) {
    case 'end_turn':
    case 'stop_sequence':
      return 'stop';
    case 'tool_use':
      return 'tool_calls';
    case 'max_tokens':
      return 'length';
    case 'refusal':
      return 'content_filter';
    default:
      return 'other';
  }
}

function parsedArguments(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text === '' ? '{}' : text);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // The model's arguments were not JSON; the loop reports that to it, not the provider.
  }
  return {};
}

/** The conversation as Messages wants it: the system prompt apart, tool results as user turns. */
function conversationOf(request: ModelRequest): { system: string; messages: MessageParam[] } {
  const system: string[] = [];
  const messages: MessageParam[] = [];
  const push = (role: 'user' | 'assistant', blocks: ContentBlockParam[]) => {
    const last = messages[messages.length - 1];
    // Consecutive turns of one role merge: the API wants them alternating.
    if (last !== undefined && last.role === role && Array.isArray(last.content)) {
      last.content.push(...blocks);
    } else {
      messages.push({ role, content: blocks });
    }
  };
  for (const m of request.messages) {
    switch (m.role) {
      case 'system':
        system.push(m.content);
        break;
      case 'user':
        push('user', [{ type: 'text', text: m.content }]);
        break;
      case 'assistant': {
        const blocks: ContentBlockParam[] = [];
        if (m.content !== '') blocks.push({ type: 'text', text: m.content });
        for (const call of m.tool_calls ?? []) {
          blocks.push({
            type: 'tool_use',
            id: call.id,
            name: call.name,
            input: parsedArguments(call.arguments),
          });
        }
        if (blocks.length > 0) push('assistant', blocks);
        break;
      }
      case 'tool':
        push('user', [
          {
            type: 'tool_result',
            tool_use_id: m.tool_call_id,
            content: m.content,
            ...(m.is_error ? { is_error: true } : {}),
          },
        ]);
        break;
    }
  }
  return { system: system.join('\n\n'), messages };
}

function paramsOf(request: ModelRequest): MessageCreateParamsNonStreaming {
  const { system, messages } = conversationOf(request);
  const params: MessageCreateParamsNonStreaming = {
    model: request.model,
    max_tokens: request.max_tokens ?? ANTHROPIC_DEFAULT_MAX_TOKENS,
    messages,
  };
  if (system !== '') params.system = system;
  if (request.tools !== undefined && request.tools.length > 0) {
    params.tools = request.tools.map((t) => ({
      name: t.name,
      description: t.description,
      input_schema: { type: 'object' as const, ...t.parameters },
    }));
  }
  // The client's types dropped these sampling fields; servers compatible with the Messages
  // API still take them, and a template sets them only on purpose.
  const sampling = params as unknown as Record<string, unknown>;
  if (request.temperature !== undefined) sampling.temperature = request.temperature;
  if (request.top_p !== undefined) sampling.top_p = request.top_p;
  if (request.stop !== undefined && request.stop.length > 0) params.stop_sequences = request.stop;
  if (request.response_schema !== undefined) {
    params.output_config = {
      format: { type: 'json_schema', schema: request.response_schema.schema },
    };
  }
  return params;
}

function usageOf(usage: Partial<Usage> | undefined, output?: number) {
  const cached = usage?.cache_read_input_tokens ?? 0;
  return {
    input_tokens: (usage?.input_tokens ?? 0) + cached + (usage?.cache_creation_input_tokens ?? 0),
    output_tokens: output ?? usage?.output_tokens ?? 0,
    cached_input_tokens: cached,
  };
}

/** Anthropic Messages, through the official `@anthropic-ai/sdk` client. */
export class AnthropicAdapter implements ModelAdapter {
  readonly #clients = new ClientCache<Anthropic>(
    (endpoint) =>
      new Anthropic({
        // Given explicitly, so that no key, profile or base URL of this process's environment
        // reaches a tenant's provider.
        apiKey: endpoint.apiKey ?? NO_KEY,
        baseURL: endpoint.baseUrl,
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
        const answer = await client.messages.create(params, { signal: watch.signal });
        let text = '';
        const calls: ModelToolCall[] = [];
        for (const block of answer.content) {
          if (block.type === 'text') text += block.text;
          else if (block.type === 'tool_use') {
            calls.push({ id: block.id, name: block.name, arguments: JSON.stringify(block.input) });
          }
        }
        return {
          model: answer.model || request.model,
          text,
          tool_calls: calls,
          finish: finishOf(answer.stop_reason),
          usage: usageOf(answer.usage),
          response_id: answer.id ?? null,
        };
      }
      const stream = await client.messages.create(
        { ...params, stream: true },
        { signal: watch.signal },
      );
      watch.started();
      let text = '';
      let model = request.model;
      let id: string | null = null;
      let finish: FinishReason = 'other';
      let startUsage: Partial<Usage> | undefined;
      let outputTokens: number | undefined;
      let stopped = false;
      const blocks = new Map<number, { id: string; name: string; arguments: string }>();
      for await (const event of stream) {
        watch.progress();
        switch (event.type) {
          case 'message_start':
            id = event.message.id;
            if (event.message.model) model = event.message.model;
            startUsage = event.message.usage;
            break;
          case 'content_block_start':
            if (event.content_block.type === 'tool_use') {
              blocks.set(event.index, {
                id: event.content_block.id,
                name: event.content_block.name,
                arguments: '',
              });
            }
            break;
          case 'content_block_delta':
            if (event.delta.type === 'text_delta') {
              text += event.delta.text;
              options.onText?.(event.delta.text);
            } else if (event.delta.type === 'input_json_delta') {
              const block = blocks.get(event.index);
              if (block !== undefined) block.arguments += event.delta.partial_json;
            }
            break;
          case 'message_delta':
            finish = finishOf(event.delta.stop_reason);
            outputTokens = event.usage.output_tokens ?? outputTokens;
            break;
          case 'message_stop':
            stopped = true;
            break;
          default:
            break;
        }
      }
      watch.ended(stopped);
      return {
        model,
        text,
        tool_calls: [...blocks.entries()]
          .sort(([a], [b]) => a - b)
          .map(([, b]) => ({ id: b.id, name: b.name, arguments: b.arguments || '{}' })),
        finish,
        usage: usageOf(startUsage, outputTokens),
        response_id: id,
      };
    });
  }

  listModels(endpoint: ProviderEndpoint, signal?: AbortSignal): Promise<string[]> {
    const client = this.#clients.get(endpoint);
    return listedModels(endpoint, signal, (signal) => client.models.list({}, { signal }));
  }
}
