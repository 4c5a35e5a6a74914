import type {
  FastifyPluginAsyncTypebox,
  TypeBoxTypeProvider,
} from '@fastify/type-provider-typebox';
import { errorResponses, WorkspaceUpload, WorkspaceUploadRef } from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import { bodyStream, refuseDeclaredTooLarge } from './file-routes.ts';
import type { InstanceService } from './instance-service.ts';

/** `/v1/workspace-uploads`: tar archives and git bundles that templates start instances from. */
export const uploadRoutes: FastifyPluginAsyncTypebox<{ instances: InstanceService }> = async (
  app,
  { instances },
) => {
  app.addSchema(WorkspaceUpload);
  const uploads = instances.uploads;

  app.get(
    '/v1/workspace-uploads',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listWorkspaceUploads',
        summary: 'List uploaded bases, newest first',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('WorkspaceUpload')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      uploads.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/workspace-uploads/:upload',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getWorkspaceUpload',
        summary: 'Read an uploaded base’s record',
        params: WorkspaceUploadRef,
        response: { 200: Type.Ref('WorkspaceUpload'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => uploads.get(principalOf(request), request.params.upload),
  );

  app.delete(
    '/v1/workspace-uploads/:upload',
    {
      schema: {
        tags: ['instances'],
        operationId: 'deleteWorkspaceUpload',
        summary: 'Delete an uploaded base',
        description:
          '409 WORKSPACE_UPLOAD_IN_USE while a workspace template or an instance starts from it (an instance may need it again: a restart elsewhere lays it out anew).',
        params: WorkspaceUploadRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await uploads.delete(principalOf(request), request.params.upload, (tenantId, id) =>
        instances.uploadUser(tenantId, id),
      );
      reply.status(204);
      return null;
    },
  );

  // The body is a stream of bytes: no parser reads it.
  await app.register(async (plain) => {
    const raw = plain.withTypeProvider<TypeBoxTypeProvider>();
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    raw.addHook('preHandler', async (request) =>
      refuseDeclaredTooLarge(request, instances.files.maxUploadBytes),
    );
    raw.post(
      '/v1/workspace-uploads',
      {
        schema: {
          tags: ['instances'],
          operationId: 'createWorkspaceUpload',
          summary: 'Upload a base for workspace templates',
          description:
            'The body is a tar archive (plain, gzip, bzip2, xz or zstd) or a git bundle (`git bundle create … --all`); its first bytes say which (400 BAD_REQUEST for anything else). A template starts instances from it with `"base": {"type": "upload", "upload": "wup_…"}` (and `ref` for a branch of a bundle). Kept in the store, so every node of a cluster can lay it out. 413 past ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES.',
          querystring: Type.Object(
            {
              name: Type.Optional(
                Type.String({
                  minLength: 1,
                  maxLength: 200,
                  description: 'What to call it; the upload’s id by default.',
                }),
              ),
            },
            { additionalProperties: false },
          ),
          response: { 201: Type.Ref('WorkspaceUpload'), ...errorResponses },
        },
        config: {
          auth: WRITE_ROLES,
          rawBody: {
            contentTypes: ['application/x-tar', 'application/gzip', 'application/octet-stream'],
            description: 'A tar archive, plain or compressed, or a git bundle.',
          },
        },
      },
      async (request, reply) => {
        const upload = await uploads.create(
          principalOf(request),
          request.query.name ?? '',
          bodyStream(request),
        );
        reply.status(201);
        return upload;
      },
    );
  });
};
