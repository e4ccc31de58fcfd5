/**
 * Builds and serves the web demo (`npm run demo:web` runs this file after building the library).
 *
 *   node examples/web/serve.mjs     build, serve cross-origin isolated on 127.0.0.1, print the URL
 *
 * For tests: `buildDemo()` builds the page into examples/web/dist and returns that folder;
 * `serveDemo({ isolated })` builds it when needed and serves it with Vite's preview server, with
 * the COOP/COEP headers that make it cross-origin isolated unless `isolated` is false.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { build, preview } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));
const configFile = join(here, 'vite.config.mjs');
const outDir = join(here, 'dist');
/** The library's build (the page imports `dma-attrs`) and the sources of the page. */
const sources = [here, join(here, '../virtio'), join(here, '../../dist')];

/** The headers that make a page cross-origin isolated, so that it has SharedArrayBuffer. */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

let building;

/**
 * Builds the page and its two workers with Vite into examples/web/dist. The library must be
 * built first (`npx tsup`): the page imports it as `dma-attrs`, from dist/.
 *
 * @returns {Promise<string>} the absolute path of the built folder.
 */
export async function buildDemo() {
  building ??= build({ configFile, logLevel: 'warn' }).finally(() => {
    building = undefined;
  });
  await building;
  return outDir;
}

/** Whether the built page is missing or older than a source or the library's build. */
function stale() {
  const built = join(outDir, 'index.html');
  if (!existsSync(built)) return true;
  const builtAt = statSync(built).mtimeMs;
  return sources.some(
    (folder) =>
      existsSync(folder) &&
      readdirSync(folder).some(
        (name) => /\.(m?js|html)$/.test(name) && statSync(join(folder, name)).mtimeMs > builtAt,
      ),
  );
}

/**
 * Serves the built demo on 127.0.0.1 (a free port), building it first when needed.
 *
 * @param {{ isolated?: boolean }} [options] `isolated: false` leaves out COOP/COEP, so the
 *   page is not cross-origin isolated and runs its single-threaded fallback.
 * @returns {Promise<{ url: string, close: () => Promise<void> }>} `url` ends with `/`.
 */
export async function serveDemo({ isolated = true } = {}) {
  if (stale()) await buildDemo();
  const server = await preview({
    configFile,
    logLevel: 'silent',
    preview: {
      host: '127.0.0.1',
      port: 0,
      strictPort: false,
      open: false,
      headers: isolated ? ISOLATION_HEADERS : {},
    },
  });
  const url = server.resolvedUrls?.local[0];
  if (url === undefined) {
    await server.close();
    throw new Error('vite preview of the web demo gave no URL');
  }
  return { url, close: () => server.close() };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await buildDemo();
  const { url, close } = await serveDemo();
  console.log(`dma-attrs web demo (cross-origin isolated): ${url}`);
  console.log('Ctrl-C stops the server.');
  process.once('SIGINT', () => {
    void close().then(() => process.exit(0));
  });
}
