// The tasks module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './dispatcher.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './runtime.ts';
export * from './settings.ts';
export { taskStream } from './stream.ts';
export * from './task-service.ts';
export * from './task-stats.ts';
