// The agents module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './agent-service.ts';
export * from './agent-stats.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './pool.ts';
export * from './routes.ts';
export * from './settings.ts';
