import { fileURLToPath } from 'node:url';

/** Directory of the console's static files, served by the server at `/`. */
export const consoleAssetsDir: string = fileURLToPath(new URL('../public/', import.meta.url));
