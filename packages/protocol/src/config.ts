import Type, { type Static } from 'typebox';
import { Timestamp } from './common.ts';

// The config center (`/v1/config`, `/v1/config-schemas`, `/v1/config-environments`):
// hierarchical keys per environment, with history, schemas and watch.

/** Who made a config change. */
export const ConfigActor = Type.Object(
  {
    type: Type.Union([Type.Literal('api_key'), Type.Literal('jwt')]),
    /** The API key id, or `jwt:<tenant>:<subject>`. */
    id: Type.String({ description: 'The API key id, or `jwt:<tenant>:<subject>`.' }),
    /** The key's name or the token's subject. */
    name: Type.String({ description: 'The key’s name or the token’s subject.' }),
  },
  { description: 'Who made the change.' },
);
/** Who made a config change. */
export type ConfigActor = Static<typeof ConfigActor>;

export const ConfigItem = Type.Object(
  {
    key: Type.String(),
    env: Type.String(),
    value: Type.Unknown({ description: 'Any JSON value.' }),
    /** Changes to the key so far, deletes included (its ETag). */
    version: Type.Integer({
      description:
        'Changes to this key so far, deletes included; the ETag, and what If-Match compares.',
    }),
    /** The revision of its last change. Revisions increase, but not by one. */
    revision: Type.Integer({
      description:
        'The config store’s revision of the last change. Revisions increase with every change but are not contiguous.',
    }),
    updated_at: Timestamp,
    updated_by: ConfigActor,
    /** The lease the key is bound to; it goes when the lease ends. */
    lease: Type.Union([Type.String(), Type.Null()], {
      description: 'The lease the key is bound to; it goes when the lease ends.',
    }),
  },
  { $id: 'ConfigItem' },
);
/** A key of the config center with its value, version and revision. */
export type ConfigItem = Static<typeof ConfigItem>;

/** The schemas `Type.Ref` names in this file, for `Static`. */
type ConfigRefs = { ConfigItem: typeof ConfigItem; ConfigSchema: typeof ConfigSchema };

export const ConfigPage = Type.Object({
  items: Type.Array(Type.Ref('ConfigItem')),
  /** The revision every page of this listing shows. */
  revision: Type.Integer({ description: 'The revision every page of this listing shows.' }),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});
/** A page of `GET /v1/config`. */
export type ConfigPage = Static<typeof ConfigPage, ConfigRefs>;

export const ConfigDeleted = Type.Object({
  key: Type.String(),
  env: Type.String(),
  deleted: Type.Literal(true),
  /** The version the delete made. */
  version: Type.Integer({ description: 'The version the delete made.' }),
  revision: Type.Integer(),
});
/** What deleting a key (or reverting it to a delete) answers. */
export type ConfigDeleted = Static<typeof ConfigDeleted>;

export const ConfigHistoryEntry = Type.Object({
  version: Type.Integer(),
  revision: Type.Integer(),
  type: Type.Union([Type.Literal('put'), Type.Literal('delete')]),
  /** What a put wrote. */
  value: Type.Optional(Type.Unknown({ description: 'What a put wrote.' })),
  at: Timestamp,
  by: ConfigActor,
  reason: Type.Union([Type.String(), Type.Null()]),
});
/** One change of a key. */
export type ConfigHistoryEntry = Static<typeof ConfigHistoryEntry>;

export const ConfigHistoryPage = Type.Object({
  items: Type.Array(ConfigHistoryEntry, { description: 'Newest first.' }),
  /** Pass as `before` for older entries; null when there are none. */
  next_before: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Pass as `before` for older entries; null when there are none.',
  }),
});
/** A page of a key's history, newest first. */
export type ConfigHistoryPage = Static<typeof ConfigHistoryPage>;

const JsonChange = Type.Object({
  op: Type.Union([Type.Literal('add'), Type.Literal('remove'), Type.Literal('replace')]),
  /** JSON Pointer into the value; "" is the whole value. */
  path: Type.String({ description: 'JSON Pointer into the value; "" is the whole value.' }),
  value: Type.Optional(Type.Unknown()),
  old_value: Type.Optional(Type.Unknown()),
});

export const ConfigDiff = Type.Object({
  key: Type.String(),
  env: Type.String(),
  from: ConfigHistoryEntry,
  to: ConfigHistoryEntry,
  changes: Type.Array(JsonChange),
});
/** The changes from one version of a key to another. */
export type ConfigDiff = Static<typeof ConfigDiff>;

export const PutConfig = Type.Object(
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
/** The body of `PUT /v1/config/{key}`. */
export type PutConfig = Static<typeof PutConfig>;

export const RevertConfig = Type.Object(
  {
    version: Type.Integer({ minimum: 1, description: 'The version whose value to write again.' }),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 500 })),
  },
  { additionalProperties: false },
);
/** The body of `POST /v1/config/{key}/revert`. */
export type RevertConfig = Static<typeof RevertConfig>;

export const ConfigSchema = Type.Object(
  {
    prefix: Type.String(),
    schema: Type.Record(Type.String(), Type.Unknown()),
    updated_at: Timestamp,
    updated_by: ConfigActor,
  },
  { $id: 'ConfigSchema' },
);
/** A JSON Schema attached to a key prefix. */
export type ConfigSchema = Static<typeof ConfigSchema>;

export const ConfigSchemaList = Type.Object({ items: Type.Array(Type.Ref('ConfigSchema')) });
/** What `GET /v1/config-schemas` answers. */
export type ConfigSchemaList = Static<typeof ConfigSchemaList, ConfigRefs>;

export const PutConfigSchema = Type.Object(
  { schema: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema.' }) },
  { additionalProperties: false },
);
/** The body of `PUT /v1/config-schemas/{prefix}`. */
export type PutConfigSchema = Static<typeof PutConfigSchema>;

/** An item of `GET /v1/config/watch` (`WatchEvent` in the server's config-service.ts). */
export const ConfigWatchEvent = Type.Union(
  [
    Type.Object({
      type: Type.Literal('put'),
      key: Type.String(),
      value: Type.Unknown(),
      /** null when the key did not exist. */
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
    /** The revision asked for is gone: the whole state under the prefix, in pages until `more` is false. */
    Type.Object({
      type: Type.Literal('resync'),
      /** The revision the snapshot shows. */
      revision: Type.Integer({ description: 'The revision the snapshot shows.' }),
      items: Type.Array(Type.Ref('ConfigItem')),
      /** More pages of this snapshot follow. */
      more: Type.Boolean({ description: 'More pages of this snapshot follow.' }),
    }),
  ],
  { $id: 'ConfigWatchEvent' },
);
/** What a config watch yields: a put, a delete, or a page of a resync. */
export type ConfigWatchEvent = Static<typeof ConfigWatchEvent, ConfigRefs>;

export const ConfigEnvironment = Type.Object({
  /** Its name, as `env` takes it. */
  env: Type.String({ description: 'The environment’s name, as `env` takes it.' }),
  /** How many keys it holds now. */
  keys: Type.Integer({ description: 'How many keys it holds now.' }),
});
/** An environment that holds keys. */
export type ConfigEnvironment = Static<typeof ConfigEnvironment>;
