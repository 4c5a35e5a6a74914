import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';

// Usage (`/v1/usage`): what hosted agents' model calls used, by day, template, model, key…

export const USAGE_GROUPS = [
  'day',
  'template',
  'model',
  'provider',
  'key',
  'session',
  'task',
] as const;
export const UsageGroup = Type.Enum([...USAGE_GROUPS], {
  description:
    'What a row sums: a UTC day, a template, a provider and model (`provider/model`), a provider, the API key that submitted the task, a session, or a task.',
});
export type UsageGroup = Static<typeof UsageGroup>;

export const UsageQuery = {
  from: Type.Optional(
    Type.String({
      format: 'date-time',
      description: 'From this time (inclusive). Default: the start of the current UTC month.',
    }),
  ),
  to: Type.Optional(
    Type.String({ format: 'date-time', description: 'To this time (exclusive). Default: now.' }),
  ),
  group_by: Type.Optional(UsageGroup),
  format: Type.Optional(
    Type.Enum(['json', 'csv'], { description: '`csv`: the rows as CSV, with a header line.' }),
  ),
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 10_000,
      description: 'Most rows, largest cost first (then most tokens). Default 1000.',
    }),
  ),
};

export const UsageTotals = Type.Object({
  input_tokens: Type.Integer({ description: 'Prompt tokens, cached ones included.' }),
  output_tokens: Type.Integer(),
  cached_input_tokens: Type.Integer(),
  cost_usd: Type.Number({
    description: 'From the providers’ price tables; unpriced models count 0.',
  }),
  model_calls: Type.Integer(),
  tool_calls: Type.Integer({ description: 'Tool calls the model asked for.' }),
  duration_ms: Type.Integer({ description: 'Time spent in model calls.' }),
});
export type UsageTotals = Static<typeof UsageTotals>;

export const UsageRow = Type.Intersect([
  Type.Object({
    key: Type.Union([Type.String(), Type.Null()], {
      description: 'The group; null for calls outside a session (by session), of no template…',
    }),
  }),
  UsageTotals,
]);
export type UsageRow = Static<typeof UsageRow>;

export const UsageReport = Type.Object(
  {
    from: Timestamp,
    to: Timestamp,
    group_by: UsageGroup,
    rows: Type.Array(UsageRow),
    /** More groups exist than `limit`: the rows are the largest. */
    truncated: Type.Boolean(),
    total: UsageTotals,
  },
  { $id: 'UsageReport' },
);
export type UsageReport = Static<typeof UsageReport>;
