import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The console is built into dist/, which the server serves at `/` (decision 0008).
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  logLevel: 'warn',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
    rolldownOptions: {
      // The SDK's ConfigClient can keep a file snapshot in Node (a dynamic import the console
      // never reaches): left out of the bundle rather than shimmed.
      external: [/^node:/],
    },
  },
});
