// The terminals module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './attach.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './settings.ts';
export * from './tables.ts';
export * from './terminal-service.ts';
