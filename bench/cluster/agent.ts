/**
 * One agent process of bench/cluster.ts, driven over IPC (`serveLoadRequests`): `start`
 * runs an SDK AgentWorker whose handler answers at once, `count` says how many tasks it ran.
 */
import { AgentWorker } from '../../packages/sdk/src/index.ts';
import { serveLoadRequests } from '../common.ts';

export interface AgentConfig {
  urls: string[];
  apiKey: string;
  agentId: string;
  capability: string;
  concurrency: number;
}

export type AgentRequest =
  | { type: 'start'; config: AgentConfig }
  | { type: 'count' }
  | { type: 'stop' };

let worker: AgentWorker | undefined;
let handled = 0;
let lastError: string | null = null;

serveLoadRequests<AgentRequest>(async (request) => {
  switch (request.type) {
    case 'start': {
      const { config } = request;
      worker = new AgentWorker({
        url: config.urls,
        apiKey: config.apiKey,
        agentId: config.agentId,
        capabilities: [config.capability],
        concurrency: config.concurrency,
        reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
        handler: async (input) => {
          handled += 1;
          return { echo: input };
        },
        onStatus: (status) => {
          if (status.type === 'error') lastError = status.error.message;
        },
      });
      // Resolves once registered.
      await worker.start();
      return null;
    }
    case 'count':
      return { handled, lastError };
    case 'stop':
      await worker?.stop({ drain: false });
      setImmediate(() => process.exit(0));
      return null;
  }
});
