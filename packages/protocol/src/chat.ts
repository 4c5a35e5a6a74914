import Type, { type Static } from 'typebox';

// The OpenAI-compatible endpoint (`POST /v1/chat/completions`): any OpenAI client talks to a
// hosted agent (a template of kind `llm`) as if it were a model. Only what the endpoint uses
// is described; other fields OpenAI clients send are accepted and ignored.

const TextPart = Type.Object(
  { type: Type.Literal('text'), text: Type.String({ maxLength: 1_000_000 }) },
  { additionalProperties: true },
);

export const ChatMessageContent = Type.Union([
  Type.String({ maxLength: 1_000_000 }),
  Type.Array(TextPart, { maxItems: 100 }),
  Type.Null(),
]);

export const ChatCompletionMessage = Type.Object(
  {
    role: Type.Enum(['system', 'developer', 'user', 'assistant', 'tool'], {
      description:
        '`system` and `developer` messages follow the template’s system prompt; `tool` messages are kept as text.',
    }),
    content: Type.Optional(ChatMessageContent),
    name: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: true },
);
export type ChatCompletionMessage = Static<typeof ChatCompletionMessage>;

export const CreateChatCompletion = Type.Object(
  {
    model: Type.String({
      minLength: 1,
      maxLength: 120,
      description: 'The name (or `tpl_…` id) of a template of kind `llm`: the hosted agent to ask.',
    }),
    messages: Type.Array(ChatCompletionMessage, {
      minItems: 1,
      maxItems: 1000,
      description: 'The conversation; the task’s input is `{"messages": …}` as given.',
    }),
    stream: Type.Optional(Type.Boolean()),
    stream_options: Type.Optional(
      Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: true }),
    ),
    n: Type.Optional(Type.Integer({ minimum: 1, maximum: 1, description: 'Only 1.' })),
    metadata: Type.Optional(
      Type.Object(
        {
          session_id: Type.Optional(
            Type.String({
              maxLength: 64,
              description: 'Run the task in this session: its memory and multitask strategy apply.',
            }),
          ),
        },
        { additionalProperties: true },
      ),
    ),
  },
  {
    additionalProperties: true,
    description:
      'An OpenAI Chat Completions request. The template decides the model, tools, sampling and limits; `tools`, `tool_choice` and `response_format` of the request are refused.',
  },
);
export type CreateChatCompletion = Static<typeof CreateChatCompletion>;

const ChatUsage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  prompt_tokens_details: Type.Object({ cached_tokens: Type.Integer() }),
});

export const ChatCompletion = Type.Object(
  {
    /** The task's id. */
    id: Type.String({ description: 'The id of the task that ran the conversation.' }),
    object: Type.Literal('chat.completion'),
    created: Type.Integer(),
    model: Type.String(),
    choices: Type.Array(
      Type.Object({
        index: Type.Integer(),
        message: Type.Object({
          role: Type.Literal('assistant'),
          content: Type.String(),
          refusal: Type.Null(),
        }),
        finish_reason: Type.Enum(['stop', 'length']),
        logprobs: Type.Null(),
      }),
    ),
    usage: ChatUsage,
  },
  { $id: 'ChatCompletion' },
);
export type ChatCompletion = Static<typeof ChatCompletion>;
