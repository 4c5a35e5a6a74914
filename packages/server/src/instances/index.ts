// The instances module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './files.ts';
export * from './instance-service.ts';
export * from './migrations.ts';
export * from './module.ts';
export { isInside, lexicalInside, resolveInside } from './paths.ts';
export * from './port-routes.ts';
export * from './port-shares.ts';
export * from './process-driver.ts';
export * from './routes.ts';
export * from './settings.ts';
export * from './tables.ts';
export * from './uploads.ts';
