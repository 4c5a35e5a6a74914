import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  Checkpoint,
  CheckpointDiff,
  CheckpointRef,
  CreateCheckpoint,
  DiffQuery,
  errorResponses,
  InstanceRef,
  Page,
  PageQuery,
  RestoreCheckpoint,
  RestoreResult,
} from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { responseBudget } from '../platform/pagination.ts';
import type { CheckpointService } from './checkpoint-service.ts';

const NODE_NOTE =
  'Any node takes it: in a cluster it goes on to the node that runs the instance (502 NODE_UNREACHABLE when that node does not answer; 409 WORKSPACE_INSTANCE_STATE, with `details.node_id`, when that node is gone), in any state once its workspace exists.';

/** `/v1/instances/{id}/checkpoints`: save, list, diff and restore the workspace. */
export const checkpointRoutes: FastifyPluginAsyncTypebox<{
  checkpoints: CheckpointService;
}> = async (app, { checkpoints }) => {
  app.addSchema(Checkpoint);
  app.addSchema(CheckpointDiff);
  app.addSchema(RestoreResult);

  app.post(
    '/v1/instances/:instance/checkpoints',
    {
      schema: {
        tags: ['instances'],
        operationId: 'createCheckpoint',
        summary: 'Save the workspace as a checkpoint',
        description: `A commit of a shadow git repository outside the workspace: the user’s own \`.git\` is not touched, \`.gitignore\` is respected, files larger than ORCHESTRA_CHECKPOINT_MAX_FILE_BYTES are left out (listed in \`skipped\`). \`tree\` identifies the content: two checkpoints of the same files have the same tree. ${NODE_NOTE}`,
        params: InstanceRef,
        body: CreateCheckpoint,
        response: { 201: Type.Ref('Checkpoint'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return checkpoints.create(principalOf(request), request.params.instance, request.body ?? {});
    },
  );

  app.get(
    '/v1/instances/:instance/checkpoints',
    {
      schema: {
        tags: ['instances'],
        operationId: 'listCheckpoints',
        summary: 'List an instance’s checkpoints, newest first',
        params: InstanceRef,
        querystring: Type.Object(
          {
            ...PageQuery,
            task_id: Type.Optional(
              Type.String({ maxLength: 64, description: 'Only the checkpoints of this task.' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Checkpoint')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      checkpoints.list(principalOf(request), request.params.instance, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/instances/:instance/checkpoints/:checkpoint',
    {
      schema: {
        tags: ['instances'],
        operationId: 'getCheckpoint',
        summary: 'Read a checkpoint',
        params: CheckpointRef,
        response: { 200: Type.Ref('Checkpoint'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      checkpoints.get(principalOf(request), request.params.instance, request.params.checkpoint),
  );

  app.get(
    '/v1/instances/:instance/checkpoints/:checkpoint/diff',
    {
      schema: {
        tags: ['instances'],
        operationId: 'diffCheckpoint',
        summary: 'What changed since a checkpoint',
        description: `Against the workspace as it is now (\`against=working\`, the default) or another checkpoint: each file’s status and line counts (null for binary files), and the unified diff (1 MiB at most). \`path\` narrows it to a file or directory. ${NODE_NOTE}`,
        params: CheckpointRef,
        querystring: DiffQuery,
        response: { 200: Type.Ref('CheckpointDiff'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      checkpoints.diff(
        principalOf(request),
        request.params.instance,
        request.params.checkpoint,
        request.query,
      ),
  );

  app.post(
    '/v1/instances/:instance/checkpoints/:checkpoint/restore',
    {
      schema: {
        tags: ['instances'],
        operationId: 'restoreCheckpoint',
        summary: 'Restore a checkpoint, whole or for some paths',
        description: `First saves the workspace as it is (\`before\`: restore that to undo). Whole, the workspace becomes exactly the checkpoint’s files (what \`.gitignore\` or the size rule leave out stays as it is); with \`paths\`, only those files and directories (one the checkpoint does not hold is deleted). ${NODE_NOTE}`,
        params: CheckpointRef,
        body: RestoreCheckpoint,
        response: { 200: Type.Ref('RestoreResult'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) =>
      checkpoints.restore(
        principalOf(request),
        request.params.instance,
        request.params.checkpoint,
        request.body ?? {},
      ),
  );
};
