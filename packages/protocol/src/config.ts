import Type from 'typebox';
import { Timestamp } from './common.ts';

// The config center (`/v1/config`): hierarchical keys per environment, with history, schemas
// and watch.

const Actor = Type.Object(
  {
    type: Type.Union([Type.Literal('api_key'), Type.Literal('jwt')]),
    id: Type.String({ description: 'The API key id, or `jwt:<tenant>:<subject>`.' }),
    name: Type.String({ description: 'The key’s name or the token’s subject.' }),
  },
  { description: 'Who made the change.' },
);

export const ConfigItemSchema = Type.Object(
  {
    key: Type.String(),
    env: Type.String(),
    value: Type.Unknown({ description: 'Any JSON value.' }),
    version: Type.Integer({
      description:
        'Changes to this key so far, deletes included; the ETag, and what If-Match compares.',
    }),
    revision: Type.Integer({
      description:
        'The config store’s revision of the last change. Revisions increase with every change but are not contiguous.',
    }),
    updated_at: Timestamp,
    updated_by: Actor,
    lease: Type.Union([Type.String(), Type.Null()], {
      description: 'The lease the key is bound to; it goes when the lease ends.',
    }),
  },
  { $id: 'ConfigItem' },
);

export const ConfigPage = Type.Object({
  items: Type.Array(Type.Ref('ConfigItem')),
  revision: Type.Integer({ description: 'The revision every page of this listing shows.' }),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});

export const ConfigDeleted = Type.Object({
  key: Type.String(),
  env: Type.String(),
  deleted: Type.Literal(true),
  version: Type.Integer({ description: 'The version the delete made.' }),
  revision: Type.Integer(),
});

const HistoryEntry = Type.Object({
  version: Type.Integer(),
  revision: Type.Integer(),
  type: Type.Union([Type.Literal('put'), Type.Literal('delete')]),
  value: Type.Optional(Type.Unknown({ description: 'What a put wrote.' })),
  at: Timestamp,
  by: Actor,
  reason: Type.Union([Type.String(), Type.Null()]),
});

export const HistoryPage = Type.Object({
  items: Type.Array(HistoryEntry, { description: 'Newest first.' }),
  next_before: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Pass as `before` for older entries; null when there are none.',
  }),
});

const JsonChange = Type.Object({
  op: Type.Union([Type.Literal('add'), Type.Literal('remove'), Type.Literal('replace')]),
  path: Type.String({ description: 'JSON Pointer into the value; "" is the whole value.' }),
  value: Type.Optional(Type.Unknown()),
  old_value: Type.Optional(Type.Unknown()),
});

export const DiffSchema = Type.Object({
  key: Type.String(),
  env: Type.String(),
  from: HistoryEntry,
  to: HistoryEntry,
  changes: Type.Array(JsonChange),
});

export const PutConfigBody = Type.Object(
  {
    value: Type.Unknown({ description: 'Any JSON value, null included.' }),
    reason: Type.Optional(
      Type.String({ minLength: 1, maxLength: 500, description: 'Kept in history.' }),
    ),
    lease: Type.Optional(
      Type.String({ minLength: 1, maxLength: 64, description: 'Bind the key to this lease.' }),
    ),
  },
  { additionalProperties: false },
);

export const RevertBody = Type.Object(
  {
    version: Type.Integer({ minimum: 1, description: 'The version whose value to write again.' }),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 500 })),
  },
  { additionalProperties: false },
);

export const ConfigSchemaSchema = Type.Object(
  {
    prefix: Type.String(),
    schema: Type.Record(Type.String(), Type.Unknown()),
    updated_at: Timestamp,
    updated_by: Actor,
  },
  { $id: 'ConfigSchema' },
);

export const PutSchemaBody = Type.Object(
  { schema: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema.' }) },
  { additionalProperties: false },
);

/** An item of `GET /v1/config/watch` (`WatchEvent` in config-service.ts). */
export const WatchEventSchema = Type.Union(
  [
    Type.Object({
      type: Type.Literal('put'),
      key: Type.String(),
      value: Type.Unknown(),
      prev_value: Type.Unknown({ description: 'null when the key did not exist.' }),
      version: Type.Integer(),
      revision: Type.Integer(),
    }),
    Type.Object({
      type: Type.Literal('delete'),
      key: Type.String(),
      prev_value: Type.Unknown(),
      revision: Type.Integer(),
    }),
    Type.Object({
      type: Type.Literal('resync'),
      revision: Type.Integer({ description: 'The revision the snapshot shows.' }),
      items: Type.Array(Type.Ref('ConfigItem')),
      more: Type.Boolean({ description: 'More pages of this snapshot follow.' }),
    }),
  ],
  { $id: 'ConfigWatchEvent' },
);

export const ConfigEnvironmentSchema = Type.Object({
  env: Type.String({ description: 'The environment’s name, as `env` takes it.' }),
  keys: Type.Integer({ description: 'How many keys it holds now.' }),
});
