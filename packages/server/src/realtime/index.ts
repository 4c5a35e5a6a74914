// The realtime module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './access.ts';
export * from './hub.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './settings.ts';
export * from './tokens.ts';
export * from './topic-service.ts';
export * from './topics.ts';
