// The config module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './config-service.ts';
export * from './environment-routes.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './settings.ts';
