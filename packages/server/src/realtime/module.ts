import { randomUUID } from 'node:crypto';
import { defineModule } from '../module.ts';
import { SettingsError } from '../platform/settings.ts';
import { RealtimeHub } from './hub.ts';
import { realtimeMigrations } from './migrations.ts';
import { realtimeRoutes } from './routes.ts';
import { checkRealtimeSettings, REALTIME_SETTINGS } from './settings.ts';
import { RealtimeTokens } from './tokens.ts';
import { TopicService } from './topic-service.ts';
import { HistoryRules, reserveTopicNamespaces } from './topics.ts';

export interface RealtimeInterface {
  tokens: RealtimeTokens;
  topics: TopicService;
  /** This node's realtime WebSocket connections. */
  hub: RealtimeHub;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    realtime: RealtimeInterface;
  }
}

/** Topics: publish, subscribe over WebSocket or SSE, history, presence, realtime tokens. */
export const realtimeModule = defineModule({
  name: 'realtime',
  needs: ['events', 'gateway'],
  migrations: realtimeMigrations,
  tables: ['topics', 'topic_presence', 'realtime_keys'],
  settings: REALTIME_SETTINGS,
  checkSettings: checkRealtimeSettings,
  errors: ['TOPIC_NOT_FOUND', 'ALREADY_SUBSCRIBED', 'NOT_SUBSCRIBED', 'SUBSCRIPTION_LIMIT_REACHED'],
  topics: [{ name: 'system', description: 'reserved for the server' }],
  jobs: ['realtime-sweep'],
  async create({
    store,
    bus,
    log,
    jobs,
    metrics,
    secrets,
    settings,
    rateLimiter,
    need,
    declarations,
  }) {
    reserveTopicNamespaces(declarations.flatMap((d) => d.topics ?? []));
    let rules: HistoryRules;
    try {
      rules = new HistoryRules({
        rules: settings.topicHistory,
        maxMessages: settings.topicHistoryMaxMessages,
        maxAgeMs: settings.topicHistoryMaxAgeMs,
        retentionMs: settings.eventRetentionMs,
      });
    } catch (err) {
      throw new SettingsError(`ORCHESTRA_TOPIC_HISTORY: ${(err as Error).message}`);
    }
    const { limits } = need('gateway');
    const tokens = new RealtimeTokens({ store, secrets });
    await tokens.start();
    const topics = new TopicService({
      jobs,
      store,
      events: need('events').events,
      bus,
      rules,
      log,
      nodeId: `${settings.instanceId}:${randomUUID()}`,
      limits,
    });
    const hub = new RealtimeHub({
      topics,
      bus,
      log,
      rateLimiter,
      metrics,
      settings: {
        maxFrameBytes: settings.realtimeMaxFrameBytes,
        maxSubscriptions: settings.realtimeMaxSubscriptions,
        maxQueueBytes: settings.realtimeMaxQueueBytes,
        historyMaxBytes: settings.responseMaxBytes,
        compression: settings.realtimeCompression,
        pingIntervalMs: settings.realtimePingIntervalMs,
        subscribesPerSecond: settings.realtimeSubscribesPerSecond,
        bytesPerToken: settings.rateLimitBytesPerToken,
        instanceId: settings.instanceId,
      },
    });
    return { tokens, topics, hub };
  },
  start({ topics, hub }) {
    topics.start();
    hub.start();
  },
  async stop({ topics, hub }) {
    await hub.close();
    await topics.stop();
  },
  routes:
    ({ hub, topics, tokens }, { shutdown }) =>
    async (app) => {
      await app.register(realtimeRoutes, { hub, topics, tokens, shutdown });
    },
});
