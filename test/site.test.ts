/**
 * The typedoc site as a reader meets it, in Debian's Chromium (see test/support/browser.ts):
 * built from typedoc.json into a temporary folder, served on 127.0.0.1, crawled from
 * index.html. Every same-origin link must reach a file and every `#anchor` an element of its
 * target page; no page may log a console error (a missing favicon aside); the search box must
 * find `RELAXED` and `barrier` and lead to a page about them; and the DMAContext page must show
 * its members in the categories of its TSDoc.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, noChromium, serveFolder, type Served } from './support/browser.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TYPEDOC = join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc');
const BUILD_TIMEOUT_MS = 120_000;
const NAVIGATION_TIMEOUT_MS = 15_000;
/** The site has about 80 pages; a crawl that reaches this many has lost its way. */
const MAX_PAGES = 300;
/** Tabs crawling at once: one per core of a small CI machine; more only contend. */
const TABS = 2;
/** The only console error a page may log: the browser asking for a favicon the site lacks. */
const FAVICON = '/favicon.ico';

/** What a visited page holds: the references it makes and the anchors it offers. */
interface Visited {
  /** `href`/`src` values as written, with the element that carries them. */
  references: { tag: string; value: string }[];
  /** Every `id` and `name` on the page. */
  anchors: string[];
}

/** The slice of the DOM the page-side callbacks use (the test compiles without the DOM lib). */
interface DomElement {
  readonly tagName: string;
  readonly id: string;
  getAttribute(name: string): string | null;
}
interface DomDocument {
  querySelectorAll(selector: string): Iterable<DomElement>;
}

/** Collects, in the page, what {@link Visited} records. */
function readPage(): Visited {
  const doc = (globalThis as unknown as { document: DomDocument }).document;
  const references: Visited['references'] = [];
  for (const element of doc.querySelectorAll('a[href], link[href], script[src], img[src]')) {
    const value = element.getAttribute('href') ?? element.getAttribute('src');
    if (value !== null) references.push({ tag: element.tagName.toLowerCase(), value });
  }
  const anchors: string[] = [];
  for (const element of doc.querySelectorAll('[id], [name]')) {
    if (element.id !== '') anchors.push(element.id);
    const name = element.getAttribute('name');
    if (name !== null) anchors.push(name);
  }
  return { references, anchors };
}

/** The URL without its fragment, a folder meaning its index.html. */
function fileOf(url: URL): string {
  const file = new URL(url);
  file.hash = '';
  file.search = '';
  if (file.pathname.endsWith('/')) file.pathname += 'index.html';
  return file.href;
}

function isPage(file: string): boolean {
  return file.endsWith('.html');
}

describe.skipIf(noChromium !== undefined)(
  `the reference site in Chromium${noChromium === undefined ? '' : ` (skipped: ${noChromium})`}`,
  () => {
    let site = '';
    let served: Served | undefined;
    let browser: Browser | undefined;
    let origin = '';
    /** Every same-origin file referenced anywhere, with the pages that reference it. */
    const referencedBy = new Map<string, Set<string>>();
    /** Every `file#anchor` a link asks for, with the pages that link to it. */
    const anchorLinks = new Map<string, Set<string>>();
    const visited = new Map<string, Visited>();
    const consoleErrors: string[] = [];
    /** HTTP status of each file, asked once. */
    const statuses = new Map<string, number>();

    beforeAll(async () => {
      site = mkdtempSync(join(tmpdir(), 'dma-attrs-site-'));
      // typedoc.json as `npm run docs` uses it, warnings being errors, into the temporary folder.
      await promisify(execFile)(process.execPath, [TYPEDOC, '--out', site], {
        cwd: ROOT,
        timeout: BUILD_TIMEOUT_MS,
      });
      served = await serveFolder(site, false);
      origin = new URL(served.url).origin;
      browser = await launchChromium();
    }, BUILD_TIMEOUT_MS + 30_000);

    afterAll(async () => {
      await browser?.close();
      await served?.close();
      if (site !== '') rmSync(site, { recursive: true, force: true });
    });

    async function newPage(): Promise<Page> {
      if (browser === undefined) throw new Error('Chromium did not start');
      const page = await browser.newPage();
      page.setDefaultTimeout(NAVIGATION_TIMEOUT_MS);
      return page;
    }

    /**
     * The file's HTTP status. Vite's preview server answers any request that accepts HTML
     * with index.html when the file is missing (a single-page-app fallback), so the request
     * accepts anything but HTML: a missing file is then a 404.
     */
    async function status(file: string): Promise<number> {
      let known = statuses.get(file);
      if (known === undefined) {
        const response = await fetch(file, { headers: { accept: 'application/octet-stream' } });
        await response.arrayBuffer();
        known = response.status;
        statuses.set(file, known);
      }
      return known;
    }

    function note(map: Map<string, Set<string>>, key: string, from: string): void {
      let sources = map.get(key);
      if (sources === undefined) map.set(key, (sources = new Set()));
      sources.add(from);
    }

    /** A tab whose console errors and uncaught exceptions are recorded against its page. */
    async function crawlerTab(): Promise<{
      page: Page;
      visit: (file: string) => Promise<string[]>;
    }> {
      const page = await newPage();
      let current = '';
      page.on('console', (message) => {
        if (message.type() !== 'error') return;
        const source = message.location().url;
        if (source.endsWith(FAVICON)) return;
        consoleErrors.push(`${current}: ${message.text()} (${source})`);
      });
      page.on('pageerror', (error) => consoleErrors.push(`${current}: ${error.message}`));
      /** Opens one page, records it, and returns the same-origin pages it links to. */
      const visit = async (file: string): Promise<string[]> => {
        current = file;
        await page.goto(file, { waitUntil: 'load' });
        // The sidebar is drawn from navigation.js after load; its links are checked too.
        await page.waitForSelector('#tsd-nav-container a', { state: 'attached' });
        const record = await page.evaluate(readPage);
        visited.set(file, record);
        const pages: string[] = [];
        for (const { tag, value } of record.references) {
          const target = new URL(value, file);
          if (target.origin !== origin) continue;
          const linked = fileOf(target);
          note(referencedBy, linked, file);
          if (tag !== 'a') continue;
          if (target.hash.length > 1) note(anchorLinks, `${linked}${target.hash}`, file);
          if (isPage(linked)) pages.push(linked);
        }
        return pages;
      };
      return { page, visit };
    }

    /**
     * Visits every same-origin page reachable from index.html, breadth first, a few tabs at a
     * time in one browser.
     */
    async function crawl(): Promise<void> {
      const tabs = await Promise.all(Array.from({ length: TABS }, crawlerTab));
      const seen = new Set<string>();
      let wave = [fileOf(new URL('index.html', served?.url))];
      seen.add(wave[0] as string);
      while (wave.length > 0 && visited.size < MAX_PAGES) {
        const next: string[] = [];
        let index = 0;
        await Promise.all(
          tabs.map(async ({ visit }) => {
            for (let file = wave[index++]; file !== undefined; file = wave[index++]) {
              if ((await status(file)) !== 200) continue;
              for (const linked of await visit(file)) {
                if (!seen.has(linked)) {
                  seen.add(linked);
                  next.push(linked);
                }
              }
            }
          }),
        );
        wave = next.slice(0, MAX_PAGES - visited.size + 1);
      }
      await Promise.all(tabs.map(({ page }) => page.close()));
    }

    it('every same-origin link and anchor resolves, and no page logs a console error', async () => {
      await crawl();
      expect(visited.size, 'pages crawled').toBeGreaterThan(50);
      expect(visited.size, `the crawl stops at ${MAX_PAGES} pages`).toBeLessThan(MAX_PAGES);

      const missing: string[] = [];
      for (const [file, from] of referencedBy) {
        const code = await status(file);
        if (code !== 200) missing.push(`${file} (HTTP ${code}) from ${[...from].join(', ')}`);
      }
      expect.soft(missing, 'links to missing files').toEqual([]);

      const brokenAnchors: string[] = [];
      for (const [link, from] of anchorLinks) {
        const url = new URL(link);
        const target = visited.get(fileOf(url));
        const anchor = decodeURIComponent(url.hash.slice(1));
        if (target === undefined) {
          // A fragment into a file that is not a page (an SVG sprite, say) is not crawled.
          if (isPage(fileOf(url))) brokenAnchors.push(`${link}: page not visited`);
        } else if (!target.anchors.includes(anchor)) {
          brokenAnchors.push(`${link} from ${[...from].join(', ')}`);
        }
      }
      expect.soft(brokenAnchors, 'links to missing anchors').toEqual([]);
      expect(anchorLinks.size, 'anchored links checked').toBeGreaterThan(100);

      expect.soft(consoleErrors, 'console errors').toEqual([]);
    });

    it.each(['RELAXED', 'barrier'])(
      'the search box finds %s, and its first result opens the page about it',
      async (term) => {
        const page = await newPage();
        const errors: string[] = [];
        page.on('pageerror', (error) => errors.push(error.message));
        await page.goto(new URL('index.html', served?.url).href);
        await page.click('#tsd-search-trigger');
        await page.fill('#tsd-search-input', term);
        const results = page.locator('#tsd-search-results li a');
        await results.first().waitFor();
        const names = (await results.allInnerTexts()).map((name) => name.toLowerCase());
        expect(names.length).toBeGreaterThan(0);
        // The index is case-insensitive: RELAXED also finds DMAFlags.relaxed, first.
        expect(names.every((name) => name.includes(term.toLowerCase()))).toBe(true);
        const href = await results.first().getAttribute('href');
        expect(href).not.toBeNull();
        const expected = new URL(href ?? '', page.url());
        await results.first().click();
        await page.waitForURL(expected.href);
        const content = await page.locator('.col-content').innerText();
        expect(content.toLowerCase()).toContain(term.toLowerCase());
        if (expected.hash.length > 1) {
          // It lands on the member itself, not only on its page.
          expect(await page.locator(`[id="${expected.hash.slice(1)}"]`).count()).toBe(1);
        }
        expect(errors).toEqual([]);
        await page.close();
      },
    );

    it('the DMAContext page groups its members: transfers, fixed-width, map and unmap, barriers, batches', async () => {
      const page = await newPage();
      await page.goto(new URL('classes/dma-attrs.DMAContext.html', served?.url).href);
      const headings = await page.locator('.tsd-index-panel h3.tsd-index-heading').allInnerTexts();
      expect(headings.map((heading) => heading.trim())).toEqual([
        'Transfers',
        'Fixed-width',
        'Map and unmap',
        'Barriers',
        'Batches',
        'Other',
      ]);
      const members = async (category: string): Promise<string[]> =>
        (
          await page
            .locator('.tsd-index-section', { has: page.getByRole('heading', { name: category }) })
            .locator('a.tsd-index-link')
            .allInnerTexts()
        )
          .map((name) => name.trim())
          .sort();
      expect(await members('Transfers')).toEqual(['read', 'rw', 'set', 'valid', 'write']);
      expect(await members('Map and unmap')).toEqual(['map', 'unmap']);
      expect(await members('Barriers')).toEqual(['barrier']);
      expect(await members('Batches')).toEqual(['batch']);
      const widths = ['U8', 'U16LE', 'U16BE', 'U32LE', 'U32BE', 'U64LE', 'U64BE'];
      expect(await members('Fixed-width')).toEqual(
        [
          ...widths.map((width) => `read${width}`),
          ...widths.map((width) => `write${width}`),
        ].sort(),
      );
      await page.close();
    });
  },
);
