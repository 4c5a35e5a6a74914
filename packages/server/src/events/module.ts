import type { Logger } from 'pino';
import { NatsBus } from '../bus/nats.ts';
import { defineModule } from '../module.ts';
import type { Settings } from '../platform/settings.ts';
import { EventLog } from './event-log.ts';
import { exportStreamName, JetStreamEventExport } from './jetstream-export.ts';
import { eventLogMigrations } from './migrations.ts';
import { EventRetention } from './retention.ts';
import { EVENTS_SETTINGS } from './settings.ts';

export interface EventsInterface {
  events: EventLog;
  /** Copies events to JetStream, on one node, when NATS export is on. */
  exporter: JetStreamEventExport | undefined;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    events: EventsInterface;
  }
}

/** The event log every stream (tasks, sessions, topics) is kept in; retention and export. */
export const eventsModule = defineModule({
  name: 'events',
  // The export runs on the node that holds the registry's claim.
  later: ['registry'],
  migrations: eventLogMigrations,
  tables: ['event_streams', 'events', 'event_export_pending', 'event_export_offsets'],
  settings: EVENTS_SETTINGS,
  jobs: ['event-follow-poll', 'event-retention', 'event-export'],
  async create({ store, bus, jobs, settings, log, metrics, later }, lifecycle) {
    const exported = bus instanceof NatsBus && settings.natsExportEvents;
    if (bus instanceof NatsBus && exported) await ensureExportStream(bus, settings, log);
    const events = new EventLog({
      jobs,
      store,
      bus,
      exported,
      maxReadBytes: settings.responseMaxBytes,
    });
    const retention = new EventRetention({
      events,
      retentionMs: settings.eventRetentionMs,
      log,
      jobs,
    });
    await retention.start();
    lifecycle.add('event retention', () => retention.stop());
    const registry = later('registry');
    const exporter =
      bus instanceof NatsBus && exported
        ? new JetStreamEventExport({
            store,
            connection: bus.connection,
            prefix: settings.natsPrefix,
            claim: (key) => registry().nodes.claim(key),
            log,
            jobs,
          })
        : undefined;
    if (exporter) metrics.eventExport = exporter;
    return { events, exporter };
  },
  start({ exporter }) {
    exporter?.start();
  },
  stop: ({ exporter }) => exporter?.stop(),
});

/** The JetStream stream of exported events, or a start-up error that says what to do. */
async function ensureExportStream(bus: NatsBus, settings: Settings, log: Logger): Promise<void> {
  try {
    await JetStreamEventExport.ensureStream(bus.connection, {
      prefix: settings.natsPrefix,
      maxAgeMs: settings.eventRetentionMs,
      replicas: settings.natsStreamReplicas,
    });
  } catch (err) {
    throw new Error(
      `ORCHESTRA_NATS_EXPORT_EVENTS: could not create the JetStream stream ` +
        `${exportStreamName(settings.natsPrefix)}: ${(err as Error).message}. Start nats-server ` +
        'with JetStream (-js), or set ORCHESTRA_NATS_EXPORT_EVENTS=false.',
      { cause: err },
    );
  }
  log.info(
    { stream: exportStreamName(settings.natsPrefix), subjects: `${settings.natsPrefix}.export.>` },
    'events exported to JetStream',
  );
}
