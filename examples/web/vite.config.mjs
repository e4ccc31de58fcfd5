/**
 * Vite's configuration for the web demo: `buildDemo()` in serve.mjs builds with it into
 * examples/web/dist, and `serveDemo()` previews that folder. The page and its two workers
 * import the library by its own name, `dma-attrs`, which resolves through the package's
 * `exports` to the built dist/ (run `npx tsup` or `npm run build` first); the workers are
 * bundled as ES modules, since Chromium gives no import map to a module worker.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  logLevel: 'warn',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  worker: { format: 'es' },
  // `npx vite examples/web` serves the page cross-origin isolated too.
  server: {
    headers: {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
    },
  },
});
