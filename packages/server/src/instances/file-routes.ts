import type { Readable } from 'node:stream';
import type {
  FastifyPluginAsyncTypebox,
  TypeBoxTypeProvider,
} from '@fastify/type-provider-typebox';
import {
  DeleteFileQuery,
  errorResponses,
  eventStreamResponse,
  FileEntry,
  FilePathQuery,
  InstanceRef,
  ListFilesQuery,
  MakeDirectory,
  MoveFile,
  PathInfo,
  PathTestResult,
  PathValidation,
  ProjectStructure,
  ProjectStructureQuery,
  SearchFilesQuery,
  SearchResult,
  StatFileQuery,
  StructureNodeSchema,
  TestPaths,
  ValidatePaths,
  WriteFileQuery,
} from '@orchestra/protocol';
import type { FastifyRequest } from 'fastify';
import Type from 'typebox';
import { FollowStreamQuery, ResumeHeaders, serveFollowedStream } from '../events/index.ts';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { principalOf } from '../platform/http.ts';
import type { InstanceService } from './instance-service.ts';

const FileEvent = Type.Object(
  {
    offset: Type.Integer(),
    type: Type.String({
      description:
        '`file.created`, `file.changed` or `file.deleted` (`path`, and `kind`: file, directory, symlink, other, or null once deleted); `files.incomplete` (`reason`) when the workspace is too large to watch whole.',
    }),
    time: Type.String({ format: 'date-time' }),
    data: Type.Record(Type.String(), Type.Unknown()),
  },
  { $id: 'FileEvent' },
);

const Binary = { type: 'string', format: 'binary' } as const;

const WriteHeaders = Type.Object({
  'if-match': Type.Optional(
    Type.String({
      maxLength: 100,
      description:
        'The SHA-256 (hex, as the ETag of a read gives it) the file must have now, else 412; `*`: it must exist.',
    }),
  ),
  'if-none-match': Type.Optional(
    Type.Literal('*', { description: '`*`: refuse (409) if something is at the path already.' }),
  ),
});

const RangeHeaders = Type.Object({
  range: Type.Optional(
    Type.String({ maxLength: 100, description: 'One range of bytes: `bytes=a-b`, `a-` or `-n`.' }),
  ),
});

/**
 * `/v1/instances/{id}/files…` (read, write, list, stat, move, delete, search, tar, change
 * feed) and the design's path service, `/v1/instances/{id}/paths…`.
 */
export const fileRoutes: FastifyPluginAsyncTypebox<{
  instances: InstanceService;
  shutdown: AbortSignal;
}> = async (app, { instances, shutdown }) => {
  const files = instances.files;
  app.addSchema(FileEntry);
  app.addSchema(SearchResult);
  app.addSchema(FileEvent);
  app.addSchema(PathInfo);
  app.addSchema(PathValidation);
  app.addSchema(PathTestResult);
  app.addSchema(StructureNodeSchema);
  app.addSchema(ProjectStructure);
  const params = { params: InstanceRef };
  const workspace = (request: FastifyRequest<{ Params: { instance: string } }>) =>
    instances.workspace(principalOf(request), request.params.instance);
  const NOTE =
    'Any node takes it: in a cluster it goes on to the node that runs the instance (502 NODE_UNREACHABLE when that node does not answer; 409 WORKSPACE_INSTANCE_STATE, with `details.node_id`, when that node is gone), in any state once its workspace exists.';

  app.get(
    '/v1/instances/:instance/files',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listInstanceFiles',
        summary: 'List a directory of the workspace',
        description: `Its entries by name (bytewise), a link described rather than followed. ${NOTE}`,
        ...params,
        querystring: ListFilesQuery,
        response: {
          200: Type.Object({
            items: Type.Array(Type.Ref('FileEntry')),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.list(await workspace(request), request.query),
  );

  app.get(
    '/v1/instances/:instance/files/stat',
    {
      schema: {
        tags: ['instances'],
        operationId: 'statInstanceFile',
        summary: 'Describe a file, directory or link',
        description: `A link is described, not followed. With \`hash=true\`, a file’s SHA-256 too. ${NOTE}`,
        ...params,
        querystring: StatFileQuery,
        response: { 200: Type.Ref('FileEntry'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      files.stat(await workspace(request), request.query.path, request.query.hash === true),
  );

  app.get(
    '/v1/instances/:instance/files/content',
    {
      schema: {
        tags: ['instances'],
        operationId: 'readInstanceFile',
        summary: 'Read a file',
        description: `Its bytes; a \`Range\` of bytes gets 206 with \`Content-Range\` (416 RANGE_NOT_SATISFIABLE past its end). \`ETag\` is the whole file’s SHA-256: give it as \`If-Match\` to a write to make sure nobody changed the file meanwhile. ${NOTE}`,
        ...params,
        querystring: FilePathQuery,
        headers: RangeHeaders,
        response: {
          200: {
            description: 'The file.',
            content: { 'application/octet-stream': { schema: Binary } },
          },
          206: {
            description: 'The range asked for.',
            content: { 'application/octet-stream': { schema: Binary } },
          },
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const file = await files.read(
        await workspace(request),
        request.query.path,
        request.headers.range,
      );
      reply
        .header('content-type', 'application/octet-stream')
        .header('etag', `"${file.sha256}"`)
        .header('accept-ranges', 'bytes')
        .header('last-modified', new Date(file.modifiedAt).toUTCString());
      if (file.range !== undefined) {
        reply
          .status(206)
          .header('content-range', `bytes ${file.range.start}-${file.range.end}/${file.size}`)
          .header('content-length', file.range.end - file.range.start + 1);
      } else {
        reply.header('content-length', file.size);
      }
      return reply.send(file.stream);
    },
  );

  app.delete(
    '/v1/instances/:instance/files',
    {
      schema: {
        tags: ['instances'],
        operationId: 'deleteInstanceFile',
        summary: 'Delete a file, link or directory',
        description: `A link is deleted, not what it points to. A directory must be empty unless \`recursive=true\` (409 WORKSPACE_DIRECTORY_NOT_EMPTY). ${NOTE}`,
        ...params,
        querystring: DeleteFileQuery,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await files.remove(
        await workspace(request),
        request.query.path,
        request.query.recursive === true,
      );
      reply.status(204);
      return null;
    },
  );

  app.post(
    '/v1/instances/:instance/files/move',
    {
      schema: {
        tags: ['instances'],
        operationId: 'moveInstanceFile',
        summary: 'Move or rename a file or directory',
        description: `The parent of \`to\` must exist. A file at \`to\` is replaced only with \`overwrite: true\`; a directory never (409 WORKSPACE_FILE_EXISTS). ${NOTE}`,
        ...params,
        body: MoveFile,
        response: { 200: Type.Ref('FileEntry'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => files.move(await workspace(request), request.body),
  );

  app.post(
    '/v1/instances/:instance/files/directories',
    {
      schema: {
        tags: ['instances'],
        operationId: 'makeInstanceDirectory',
        summary: 'Make a directory',
        description: `With \`parents: true\`, missing parents too, and one that exists is fine; else its parent must exist and nothing be at the path (409 WORKSPACE_FILE_EXISTS). ${NOTE}`,
        ...params,
        body: MakeDirectory,
        response: { 201: Type.Ref('FileEntry'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return files.makeDirectory(
        await workspace(request),
        request.body.path,
        request.body.parents === true,
      );
    },
  );

  app.get(
    '/v1/instances/:instance/files/search',
    {
      schema: {
        tags: ['instances'],
        operationId: 'searchInstanceFiles',
        summary: 'Search the workspace’s files (ripgrep)',
        description: `Matching lines, file by file. \`.gitignore\` is respected, hidden files are searched, \`.git\` is not. At most \`max_results\` (\`truncated\` says there were more), 30 s at most. 503 SEARCH_UNAVAILABLE without ripgrep on the node. ${NOTE}`,
        ...params,
        querystring: SearchFilesQuery,
        response: { 200: Type.Ref('SearchResult'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.search(await workspace(request), request.query),
  );

  app.get(
    '/v1/instances/:instance/files/archive',
    {
      schema: {
        tags: ['instances'],
        operationId: 'downloadInstanceFiles',
        summary: 'Download a file or directory as a tar archive',
        description: `Links are stored as links. \`path\` "" (the default) is the whole workspace. ${NOTE}`,
        ...params,
        querystring: Type.Object(
          { path: Type.Optional(FilePathQuery.properties.path) },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The archive.',
            content: { 'application/x-tar': { schema: Binary } },
          },
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const { stream, name } = await files.archive(
        await workspace(request),
        request.query.path ?? '',
      );
      reply
        .header('content-type', 'application/x-tar')
        .header('content-disposition', `attachment; filename="${name.replace(/["\\]/g, '_')}"`);
      return reply.send(stream);
    },
  );

  app.get(
    '/v1/instances/:instance/files/events',
    {
      schema: {
        tags: ['instances'],
        operationId: 'streamInstanceFileEvents',
        summary: 'Follow the workspace’s file changes',
        description:
          'Files and directories created, changed and deleted (`.git` left out), by the instance’s processes (watched while it runs) or through this API; as SSE or NDJSON, resumable with `Last-Event-ID` or `after`; with `follow=false`, those there are.',
        ...params,
        querystring: FollowStreamQuery,
        headers: ResumeHeaders,
        response: {
          200: eventStreamResponse(
            Type.Union([Type.Ref('FileEvent'), Type.Ref('StreamGap')]),
            'The changes.',
          ),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const ref = await workspace(request);
      return serveFollowedStream(request, reply, {
        check: (after) => files.openEvents(ref, after),
        read: (after, signal, follow) => files.events(ref, after, { signal, follow }),
        stop: shutdown,
      });
    },
  );

  app.get(
    '/v1/instances/:instance/paths',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getInstancePaths',
        summary: 'The instance’s directory layout (path service)',
        description:
          'Project root, workspace, user data, extensions, logs and temp, as absolute paths the instance’s processes see (`HOME` is user data, `TMPDIR` temp).',
        ...params,
        response: { 200: Type.Ref('PathInfo'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.pathInfo(await workspace(request)),
  );

  app.post(
    '/v1/instances/:instance/paths/validate',
    {
      schema: {
        tags: ['instances'],
        operationId: 'validateInstancePaths',
        summary: 'Check the layout, and whether paths stay inside the workspace',
        description:
          'Each directory of the layout exists and is usable; each of `paths` (which need not exist) resolves inside the workspace, and where to. Never 4xx for a bad path: it is reported `valid: false` with the reason.',
        ...params,
        body: ValidatePaths,
        response: { 200: Type.Ref('PathValidation'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.validate(await workspace(request), request.body?.paths ?? []),
  );

  app.post(
    '/v1/instances/:instance/paths/test',
    {
      schema: {
        tags: ['instances'],
        operationId: 'testInstancePaths',
        summary: 'Test paths of the workspace: inside, existing, kind, readable, writable',
        ...params,
        body: TestPaths,
        response: { 200: Type.Ref('PathTestResult'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.test(await workspace(request), request.body.paths),
  );

  app.get(
    '/v1/instances/:instance/paths/structure',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getInstanceProjectStructure',
        summary: 'The project’s structure: a tree with sizes',
        description:
          'Files and the directories that hold them, with sizes (a directory’s is the total of its files), `.gitignore` respected unless `ignored=true`, `.git` never shown. Empty directories are left out. `truncated` when `depth` or `max_entries` cut it.',
        ...params,
        querystring: ProjectStructureQuery,
        response: { 200: Type.Ref('ProjectStructure'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => files.structure(await workspace(request), request.query),
  );

  // Routes whose body is a stream of bytes (a file, a tar archive): no parser reads it.
  await app.register(async (plain) => {
    const raw = plain.withTypeProvider<TypeBoxTypeProvider>();
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    raw.addHook('preHandler', async (request) =>
      refuseDeclaredTooLarge(request, files.maxUploadBytes),
    );

    raw.put(
      '/v1/instances/:instance/files/content',
      {
        schema: {
          tags: ['instances'],
          operationId: 'writeInstanceFile',
          summary: 'Write a file, atomically',
          description: `The body, whatever its content type, becomes the file: written beside it and renamed into place, so readers see the old content or the new. Missing parents are made unless \`parents=false\`. \`If-Match\` (the SHA-256 a read gave as ETag) guards against lost updates (412 PRECONDITION_FAILED, with the current hash); \`If-None-Match: *\` against replacing a file. 201 when it was created, 200 when replaced; the answer has its SHA-256. 413 past ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES. ${NOTE}`,
          ...params,
          querystring: WriteFileQuery,
          headers: WriteHeaders,
          response: {
            200: Type.Ref('FileEntry'),
            201: Type.Ref('FileEntry'),
            ...errorResponses,
          },
        },
        config: {
          auth: WRITE_ROLES,
          rawBody: {
            contentTypes: ['application/octet-stream', 'text/plain'],
            description: 'The file’s new content (any content type).',
          },
        },
      },
      async (request, reply) => {
        const { entry, created } = await files.write(
          await workspace(request),
          request.query.path,
          bodyStream(request),
          {
            ifMatch: request.headers['if-match'],
            ifNoneMatch: request.headers['if-none-match'],
            parents: request.query.parents !== false,
          },
        );
        reply.status(created ? 201 : 200).header('etag', `"${entry.sha256}"`);
        return entry;
      },
    );

    raw.put(
      '/v1/instances/:instance/files/archive',
      {
        schema: {
          tags: ['instances'],
          operationId: 'uploadInstanceFiles',
          summary: 'Upload a tar archive into a directory of the workspace',
          description: `Extracted into \`path\` (made if missing; the workspace by default) by tar running in the instance’s sandbox, so that nothing in the archive can land outside the instance. Existing files it holds are replaced. 400 BAD_REQUEST for an archive tar cannot read; 413 past ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES. ${NOTE}`,
          ...params,
          querystring: Type.Object(
            { path: Type.Optional(FilePathQuery.properties.path) },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({
              path: Type.String({ description: 'Where it was extracted, in the workspace.' }),
              bytes: Type.Integer({ description: 'The archive’s size.' }),
            }),
            ...errorResponses,
          },
        },
        config: {
          auth: WRITE_ROLES,
          rawBody: {
            contentTypes: ['application/x-tar', 'application/gzip', 'application/octet-stream'],
            description: 'A tar archive, plain or compressed with gzip, bzip2, xz or zstd.',
          },
        },
      },
      async (request) =>
        files.extract(await workspace(request), request.query.path ?? '', bodyStream(request)),
    );
  });
};

/**
 * Refuses a body whose declared length is past `max` before a byte of it is read: Node then
 * reads and drops what the client still sends, and the client gets the 413 rather than a
 * reset connection.
 */
export function refuseDeclaredTooLarge(request: FastifyRequest, max: number): void {
  const declared = Number(request.headers['content-length'] ?? Number.NaN);
  if (declared > max) {
    throw new ApiError(
      'PAYLOAD_TOO_LARGE',
      `The body declares ${declared} bytes; at most ${max} are taken (ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES)`,
    );
  }
}

/** The request's body as the stream the raw parser handed on (empty when none came). */
export function bodyStream(request: FastifyRequest): Readable {
  const body = request.body as Readable | undefined;
  if (body !== undefined && typeof (body as Readable).pipe === 'function') return body;
  return request.raw;
}
