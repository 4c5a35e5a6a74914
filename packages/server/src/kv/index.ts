// The kv module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './embedded.ts';
export * from './etcd.ts';
export * from './kv.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './settings.ts';
export * from './topic-relay.ts';
