/**
 * What the browser tests share: Debian's Chromium driven by playwright-core (never a
 * downloaded browser), and static serving of a built folder through Vite's preview server,
 * with or without the headers that make a page cross-origin isolated.
 *
 * Chromium lives at /usr/bin/chromium (`.ci/run` installs it with apt-get when missing). Where
 * it cannot be installed, `chromiumPath()` is undefined and the tests skip with that reason.
 */
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';

/** Where Debian puts Chromium. */
export const CHROMIUM = '/usr/bin/chromium';

/** The reason browser tests skip, or undefined when Chromium is there. */
export const noChromium = existsSync(CHROMIUM)
  ? undefined
  : `Chromium is not installed at ${CHROMIUM} (.ci/run installs Debian's chromium with apt-get)`;

/** The headers that make a page cross-origin isolated, so that it has SharedArrayBuffer. */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

/** Starts headless Chromium with the flags this machine needs. */
export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
}

/** A running static server. */
export interface Served {
  /** `http://127.0.0.1:<port>/`. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves a built folder on 127.0.0.1 with Vite's preview server, cross-origin isolated
 * (COOP/COEP) unless `isolated` is false.
 */
export async function serveFolder(folder: string, isolated = true): Promise<Served> {
  const { preview } = await import('vite');
  const server = await preview({
    root: folder,
    logLevel: 'silent',
    configFile: false,
    build: { outDir: folder },
    preview: {
      host: '127.0.0.1',
      port: 0,
      strictPort: false,
      headers: isolated ? ISOLATION_HEADERS : {},
    },
  });
  const url = server.resolvedUrls?.local[0];
  if (url === undefined) throw new Error(`vite preview of ${folder} gave no URL`);
  return {
    url,
    close: () => server.close(),
  };
}
