import type { TaskWaitingForApproval } from '@orchestra/protocol';
import type { Logger } from 'pino';
import { ApiError } from '../platform/errors.ts';
import type { TaskRuntime } from '../tasks/index.ts';
import type { ApprovalOutcome } from '../tools/index.ts';

/** Tasks looked at per tenant when one approval is decided, and per sweep. */
const BATCH = 500;

interface WaitingTask {
  tenant_id: string;
  id: string;
  waiting: TaskWaitingForApproval;
}

/**
 * Puts hosted tasks that wait for approvals (`awaiting_approval`) back in the queue once
 * none of their approvals is pending: at once on the node where the last one was decided
 * or expired, and by a sweep on every node, for a decision whose node stopped before it
 * resumed the task. Resuming is one guarded update, so two nodes never resume a task twice.
 */
export class ApprovalWaits {
  readonly #runtime: Pick<TaskRuntime, 'awaitingApproval' | 'resume'>;
  readonly #outcome: (tenantId: string, approvalId: string) => Promise<ApprovalOutcome>;
  readonly #log: Logger;
  /** Where the sweep goes on from: it pages through the waiting tasks, run after run. */
  #sweepAfter: string | undefined;

  constructor(deps: {
    runtime: Pick<TaskRuntime, 'awaitingApproval' | 'resume'>;
    outcome: (tenantId: string, approvalId: string) => Promise<ApprovalOutcome>;
    log: Logger;
  }) {
    this.#runtime = deps.runtime;
    this.#outcome = deps.outcome;
    this.#log = deps.log;
  }

  /** Approval `approvalId` of the tenant was decided or expired: resumes the tasks it held. */
  async settled(tenantId: string, approvalId: string): Promise<void> {
    let after: string | undefined;
    for (;;) {
      const page = await this.#runtime.awaitingApproval({ tenantId, after, limit: BATCH });
      for (const task of page) {
        if (task.waiting.approvals.some((a) => a.id === approvalId))
          await this.#resumeIfDecided(task);
      }
      if (page.length < BATCH) return;
      after = page[page.length - 1]?.id;
    }
  }

  /** One page of the sweep. Resolves to how many tasks it resumed. */
  async sweep(): Promise<number> {
    const page = await this.#runtime.awaitingApproval({ after: this.#sweepAfter, limit: BATCH });
    this.#sweepAfter = page.length < BATCH ? undefined : page[page.length - 1]?.id;
    let resumed = 0;
    for (const task of page) if (await this.#resumeIfDecided(task)) resumed += 1;
    return resumed;
  }

  async #resumeIfDecided(task: WaitingTask): Promise<boolean> {
    for (const approval of task.waiting.approvals) {
      try {
        if ((await this.#outcome(task.tenant_id, approval.id)) === 'pending') return false;
      } catch (err) {
        // An approval that no longer exists holds nothing: the run learns it on resuming.
        if (!(err instanceof ApiError && err.code === 'TOOL_APPROVAL_NOT_FOUND')) throw err;
      }
    }
    const resumed = await this.#runtime.resume(task.tenant_id, task.id);
    if (resumed) {
      this.#log.info(
        { tenant_id: task.tenant_id, task_id: task.id },
        'task resumed after approvals',
      );
    }
    return resumed;
  }
}
