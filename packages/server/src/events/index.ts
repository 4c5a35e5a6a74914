// The events module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './event-log.ts';
export * from './http-stream.ts';
export * from './jetstream-export.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './retention.ts';
export * from './settings.ts';
