import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Directory of the built console (`vite build`), served by the server at `/`. */
export const consoleAssetsDir: string = fileURLToPath(new URL('../dist/', import.meta.url));

/** Whether the console has been built (npm install and npm start build it; decision 0008). */
export function consoleBuilt(): boolean {
  return existsSync(fileURLToPath(new URL('../dist/index.html', import.meta.url)));
}
