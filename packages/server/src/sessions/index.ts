// The sessions module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './migrations.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './session-service.ts';
export * from './streams.ts';
export * from './tables.ts';
