import Type, { type Static } from 'typebox';

// Files and paths of an instance's workspace (issue 22): `/v1/instances/{id}/files…` and
// the design's path service, `/v1/instances/{id}/paths…`. Every path a client gives is
// relative to the workspace and is resolved inside it; one that leads out is refused.

export const WorkspacePath = Type.String({
  maxLength: 4096,
  description:
    'A path relative to the instance’s workspace ("" or "." is the workspace itself). Absolute paths, `..` that climbs out and symbolic links that lead out are refused.',
});

export const FILE_TYPES = ['file', 'directory', 'symlink', 'other'] as const;
export const FileType = Type.Enum([...FILE_TYPES]);
export type FileType = Static<typeof FileType>;

export const FileEntry = Type.Object(
  {
    path: Type.String({ description: 'Relative to the workspace.' }),
    name: Type.String(),
    type: FileType,
    /** Bytes (a directory's own entry size; a link's target length). */
    size: Type.Integer(),
    /** Permission bits, as octal digits such as `644`. */
    mode: Type.String(),
    modified_at: Type.String({ format: 'date-time' }),
    /** A symbolic link's target, as stored. */
    target: Type.Optional(Type.String()),
    /** SHA-256 of the content, hex (files; on `stat` with `hash=true`, and after a write). */
    sha256: Type.Optional(Type.String()),
  },
  { $id: 'FileEntry' },
);
export type FileEntry = Static<typeof FileEntry>;

export const MAX_FILE_LIST_LIMIT = 1000;

export const ListFilesQuery = Type.Object(
  {
    path: Type.Optional(WorkspacePath),
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_FILE_LIST_LIMIT, description: '100 by default.' }),
    ),
    cursor: Type.Optional(Type.String({ maxLength: 8192 })),
  },
  { additionalProperties: false },
);

export const FilePathQuery = Type.Object({ path: WorkspacePath }, { additionalProperties: false });

export const StatFileQuery = Type.Object(
  {
    path: WorkspacePath,
    hash: Type.Optional(
      Type.Boolean({ description: 'Also give a file’s SHA-256 (reads the whole file).' }),
    ),
  },
  { additionalProperties: false },
);

export const WriteFileQuery = Type.Object(
  {
    path: WorkspacePath,
    parents: Type.Optional(
      Type.Boolean({ description: 'Create missing parent directories (true by default).' }),
    ),
  },
  { additionalProperties: false },
);

export const DeleteFileQuery = Type.Object(
  {
    path: WorkspacePath,
    recursive: Type.Optional(
      Type.Boolean({ description: 'Delete a directory and all it holds (else it must be empty).' }),
    ),
  },
  { additionalProperties: false },
);

export const MoveFile = Type.Object(
  {
    from: WorkspacePath,
    to: WorkspacePath,
    overwrite: Type.Optional(
      Type.Boolean({
        description: 'Replace a file at `to` (never a directory); false by default.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type MoveFile = Static<typeof MoveFile>;

export const MakeDirectory = Type.Object(
  {
    path: WorkspacePath,
    parents: Type.Optional(
      Type.Boolean({ description: 'Create missing parents, and accept one that exists.' }),
    ),
  },
  { additionalProperties: false },
);
export type MakeDirectory = Static<typeof MakeDirectory>;

export const MAX_SEARCH_RESULTS = 10_000;

export const SearchFilesQuery = Type.Object(
  {
    query: Type.String({ minLength: 1, maxLength: 1000, description: 'What to look for.' }),
    path: Type.Optional(WorkspacePath),
    regex: Type.Optional(
      Type.Boolean({ description: '`query` is a regular expression (ripgrep’s syntax).' }),
    ),
    case_sensitive: Type.Optional(Type.Boolean({ description: 'True by default.' })),
    glob: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 256 }), {
        maxItems: 20,
        description: 'Only files that match these globs (`!` excludes), as ripgrep’s `-g`.',
      }),
    ),
    max_results: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_SEARCH_RESULTS, description: '1000 by default.' }),
    ),
  },
  { additionalProperties: false },
);

export const SearchMatch = Type.Object({
  path: Type.String(),
  line: Type.Integer({ description: 'From 1.' }),
  column: Type.Integer({ description: 'Byte offset in the line of the first match, from 1.' }),
  text: Type.String({ description: 'The line (at most 1000 characters).' }),
});

export const SearchResult = Type.Object(
  {
    matches: Type.Array(SearchMatch),
    /** More matched than `max_results`, or the search ran out of time. */
    truncated: Type.Boolean(),
  },
  { $id: 'SearchResult' },
);
export type SearchResult = Static<typeof SearchResult>;

export const FILE_EVENT_TYPES = ['file.created', 'file.changed', 'file.deleted'] as const;

export const PATH_KINDS = [
  'project_root',
  'workspace',
  'user_data',
  'extensions',
  'logs',
  'temp',
] as const;

export const InstancePathSet = Type.Object({
  project_root: Type.String(),
  workspace: Type.String(),
  user_data: Type.String(),
  extensions: Type.String(),
  logs: Type.String(),
  temp: Type.String(),
});

export const PathInfo = Type.Object(
  {
    instance_id: Type.String(),
    driver: Type.String(),
    /** Absolute, as the instance’s processes see them. */
    paths: InstancePathSet,
  },
  { $id: 'PathInfo' },
);
export type PathInfo = Static<typeof PathInfo>;

export const MAX_PATHS_PER_CHECK = 100;

export const ValidatePaths = Type.Object(
  {
    paths: Type.Optional(
      Type.Array(WorkspacePath, {
        maxItems: MAX_PATHS_PER_CHECK,
        description: 'Workspace paths to check as well (they need not exist).',
      }),
    ),
  },
  { additionalProperties: false },
);

export const PathValidation = Type.Object(
  {
    overall_status: Type.Enum(['valid', 'invalid']),
    layout: Type.Array(
      Type.Object({
        path_type: Type.String(),
        path: Type.String(),
        exists: Type.Boolean(),
        accessible: Type.Boolean(),
        status: Type.Enum(['valid', 'invalid']),
      }),
    ),
    paths: Type.Array(
      Type.Object({
        path: Type.String(),
        valid: Type.Boolean(),
        /** Why it is not, or where it leads. */
        reason: Type.Optional(Type.String()),
        /** Where it resolves to, relative to the workspace. */
        resolved: Type.Optional(Type.String()),
      }),
    ),
    checked_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'PathValidation' },
);
export type PathValidation = Static<typeof PathValidation>;

export const TestPaths = Type.Object(
  {
    paths: Type.Array(WorkspacePath, { minItems: 1, maxItems: MAX_PATHS_PER_CHECK }),
  },
  { additionalProperties: false },
);

export const PathTestResult = Type.Object(
  {
    results: Type.Array(
      Type.Object({
        path: Type.String(),
        inside: Type.Boolean({ description: 'It resolves inside the workspace.' }),
        exists: Type.Boolean(),
        type: Type.Union([FileType, Type.Null()]),
        readable: Type.Boolean(),
        writable: Type.Boolean(),
        reason: Type.Optional(Type.String()),
      }),
    ),
  },
  { $id: 'PathTestResult' },
);
export type PathTestResult = Static<typeof PathTestResult>;

export const MAX_STRUCTURE_ENTRIES = 20_000;

export const ProjectStructureQuery = Type.Object(
  {
    path: Type.Optional(WorkspacePath),
    depth: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 32, description: 'Levels shown; 8 by default.' }),
    ),
    max_entries: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_STRUCTURE_ENTRIES,
        description: 'Most entries in the tree; 5000 by default.',
      }),
    ),
    ignored: Type.Optional(
      Type.Boolean({
        description:
          'Include what `.gitignore` (and `.ignore`) files exclude; false by default. `.git` is never shown.',
      }),
    ),
  },
  { additionalProperties: false },
);

export interface StructureNode {
  name: string;
  path: string;
  type: 'file' | 'directory';
  /** Bytes; a directory's is the total of the files below it that are shown. */
  size: number;
  children?: StructureNode[];
}

export const StructureNodeSchema = Type.Object(
  {
    name: Type.String(),
    path: Type.String(),
    type: Type.Enum(['file', 'directory']),
    size: Type.Integer(),
    children: Type.Optional(Type.Array(Type.Ref('StructureNode'))),
  },
  { $id: 'StructureNode' },
);

export const ProjectStructure = Type.Object(
  {
    root: Type.Ref('StructureNode'),
    files: Type.Integer(),
    directories: Type.Integer(),
    total_size: Type.Integer(),
    /** Entries were left out (`depth` or `max_entries`). */
    truncated: Type.Boolean(),
  },
  { $id: 'ProjectStructure' },
);
export type ProjectStructure = {
  root: StructureNode;
  files: number;
  directories: number;
  total_size: number;
  truncated: boolean;
};
