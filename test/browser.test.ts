/**
 * The library in a real browser: Debian's Chromium driven by playwright-core (see
 * test/support/browser.ts). The page (test/browser/) imports the package by its own name,
 * `dma-attrs`, which resolves through package.json's exports to dist/ (built by `npm test`
 * before vitest); Vite bundles it with its module workers into a temporary folder, served
 * cross-origin isolated (COOP/COEP) or, for the §4.3 fallback, without those headers.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Lib from '../src/index.js';
import { launchChromium, noChromium, serveFolder, type Served } from './support/browser.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PAGE_DIR = join(ROOT, 'test', 'browser');
const DIST_INDEX = join(ROOT, 'dist', 'index.js');
const DEMO_SERVE = join(ROOT, 'examples', 'web', 'serve.mjs');

const LITMUS_ITERATIONS = 100_000;
const TIMING_CALLS = 1_000_000;
const TIMING_RUNS = 5;
const EVALUATE_TIMEOUT_MS = 30_000;

/** What the test page's `window.tests` functions return (see test/browser/page.mjs). */
interface AccessorsReport {
  failures: string[];
  checks: number;
  area: number[];
  shared?: boolean;
}
interface FaultReport {
  thrown: boolean;
  isDMAFault: boolean;
  isDMAError: boolean;
  code: string;
  access: string;
  reason: string;
  addr: number;
  length: number;
  message: string;
  readBack: number[];
  after: number[];
}
interface LitmusReport {
  counts: Record<string, number>;
  forbidden: number;
  milliseconds: number;
}
interface Timings {
  shared: boolean;
  policy: string;
  read: number;
  barrier: number;
}
interface Thrown {
  thrown: boolean;
  isDMAError: boolean;
  name: string;
  code: string;
  message: string;
}
interface DemoResult {
  packets: number;
  lost: number;
  packetsPerSecond: number;
  corrupted: number;
  threads: number;
}

/** Rejects after `ms` with a message naming `what`, unless `promise` settles first. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} did not finish within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type PageTests = Record<string, ((...args: unknown[]) => unknown) | undefined>;

/** Calls `window.tests[name](...args)` in the page, bounded by `ms`. */
function call<T>(
  page: Page,
  name: string,
  args: unknown[] = [],
  ms = EVALUATE_TIMEOUT_MS,
): Promise<T> {
  const evaluation = page.evaluate(
    async ([fn, fnArgs]) => {
      const tests = (globalThis as unknown as { tests?: PageTests }).tests;
      const test = tests?.[fn];
      if (test === undefined) throw new Error(`the page has no tests.${fn}`);
      return await test(...fnArgs);
    },
    [name, args] as const,
  );
  return within(evaluation as Promise<T>, ms, `tests.${name} in the page`);
}

/** ns per call, best of `runs` runs of `calls` calls. */
function bestOf(runs: number, calls: number, body: (n: number) => void): number {
  let best = Infinity;
  for (let run = 0; run < runs; run++) {
    const started = performance.now();
    body(calls);
    best = Math.min(best, performance.now() - started);
  }
  return (best * 1e6) / calls;
}

describe.skipIf(noChromium !== undefined)(
  `in Chromium${noChromium === undefined ? '' : ` (skipped: ${noChromium})`}`,
  () => {
    let outDir = '';
    let browser: Browser | undefined;
    let isolated: Served | undefined;
    let page: Page;
    const pageErrors: string[] = [];

    /** A fresh page at `url`, its uncaught errors and console errors collected. */
    async function open(url: string): Promise<Page> {
      if (browser === undefined) throw new Error('Chromium did not start');
      const opened = await browser.newPage();
      opened.on('pageerror', (error) => pageErrors.push(`${url}: ${error.message}`));
      opened.on('console', (message) => {
        if (message.type() === 'error') pageErrors.push(`${url}: console: ${message.text()}`);
      });
      await opened.goto(url, { timeout: EVALUATE_TIMEOUT_MS });
      await opened.waitForFunction(() => 'tests' in globalThis, undefined, { timeout: 10_000 });
      return opened;
    }

    beforeAll(async () => {
      if (!existsSync(DIST_INDEX)) {
        throw new Error(
          `${DIST_INDEX} is missing: the browser tests bundle the built package (run \`npm run build\`; \`npm test\` builds before vitest)`,
        );
      }
      outDir = mkdtempSync(join(tmpdir(), 'dma-attrs-browser-'));
      const { build } = await import('vite');
      const [launched] = await Promise.all([
        launchChromium(),
        build({
          root: PAGE_DIR,
          configFile: false,
          logLevel: 'warn',
          publicDir: false,
          build: { outDir, emptyOutDir: true, minify: false, target: 'es2022' },
          worker: { format: 'es' },
        }),
      ]);
      browser = launched;
      isolated = await serveFolder(outDir, true);
      page = await open(isolated.url);
    });

    afterAll(async () => {
      await browser?.close();
      await isolated?.close();
      if (outDir !== '') rmSync(outDir, { recursive: true, force: true });
    });

    it('serves the page cross-origin isolated, with SharedArrayBuffer', async () => {
      const env = await call<{ crossOriginIsolated: boolean; sharedArrayBuffer: string }>(
        page,
        'environment',
      );
      expect(env.crossOriginIsolated).toBe(true);
      expect(env.sharedArrayBuffer).toBe('function');
    });

    it('runs every accessor in the page on shared memory', async () => {
      const report = await call<AccessorsReport>(page, 'accessorsInPage');
      expect(report.shared).toBe(true);
      expect(report.failures).toEqual([]);
      expect(report.checks).toBeGreaterThan(20);
      expect(report.area.slice(0, 32)).toEqual([
        0xab, 0, 0x34, 0x12, 0x12, 0x34, 0, 0, 0xef, 0xbe, 0xad, 0xde, 0xde, 0xad, 0xbe, 0xef, 8, 7,
        6, 5, 4, 3, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8,
      ]);
    });

    it('pops, answers and pushes a descriptor chain with dma-attrs/virtio in the page', async () => {
      const report = await call<Record<string, unknown>>(page, 'virtqueue');
      expect(report).toEqual({
        head: 0,
        readable: 4,
        writable: 4,
        request: [1, 2, 3, 4],
        response: [2, 3, 4, 5],
        usedIdx: 1,
        usedId: 0,
        usedLength: 4,
        empty: true,
      });
    });

    it('runs every accessor in a module worker on the page’s memory', async () => {
      const report = await call<{
        crossOriginIsolated: boolean;
        accessors: AccessorsReport;
        area: number[];
        expected: number[];
      }>(page, 'accessorsInWorker');
      expect(report.crossOriginIsolated).toBe(true);
      expect(report.accessors.failures).toEqual([]);
      expect(report.accessors.checks).toBeGreaterThan(20);
      // The page sees the worker's bytes in its own memory.
      expect(report.area).toEqual(report.expected);
      expect(report.area.slice(96, 112)).toEqual([
        0x11, 0x12, 0x13, 0x14, 0, 0, 0, 0, 0x15, 0x16, 0x17, 0x18, 0, 0, 0, 0,
      ]);
    });

    function expectPermissionFault(report: FaultReport): void {
      expect(report.readBack).toEqual([9, 8, 7, 6]);
      expect(report.thrown).toBe(true);
      expect(report.isDMAFault).toBe(true);
      expect(report.isDMAError).toBe(true);
      expect(report.code).toBe('ERR_DMA_IOMMU_PERMISSION');
      expect(report.reason).toBe('permission');
      expect(report.access).toBe('write');
      expect(report.addr).toBe(0x40000);
      expect(report.length).toBe(4);
      // The refused write moved no byte.
      expect(report.after).toEqual([9, 8, 7, 6]);
    }

    it('raises a DMAFault for a write through a READ-only IOMMU mapping, in the page', async () => {
      expectPermissionFault(await call<FaultReport>(page, 'faultInPage'));
    });

    it('raises a DMAFault for a write through a READ-only IOMMU mapping, in a worker', async () => {
      expectPermissionFault(await call<FaultReport>(page, 'faultInWorker'));
    });

    it(`message passing with barrier('full') between two module workers: no stale data in ${LITMUS_ITERATIONS} iterations`, async () => {
      const mp = await call<LitmusReport>(page, 'litmus', ['mp', LITMUS_ITERATIONS, true], 60_000);
      console.log(
        `browser MP litmus, barrier('full'), ${LITMUS_ITERATIONS} iterations in ${Math.round(mp.milliseconds)} ms:`,
        mp.counts,
      );
      expect(mp.forbidden).toBe(0);
      expect(mp.counts['flag=1,data=0']).toBeUndefined();
      const total = Object.values(mp.counts).reduce((sum, n) => sum + n, 0);
      expect(total).toBe(LITMUS_ITERATIONS);
      // The reader did see the flag set (otherwise the test would be empty).
      expect(mp.counts['flag=1,data=1'] ?? 0).toBeGreaterThan(0);
    });

    it(`store buffering with barrier('full') between two module workers: no (0,0) in ${LITMUS_ITERATIONS} iterations`, async () => {
      const sb = await call<LitmusReport>(page, 'litmus', ['sb', LITMUS_ITERATIONS, true], 60_000);
      const unfenced = await call<LitmusReport>(
        page,
        'litmus',
        ['sb', LITMUS_ITERATIONS, false],
        60_000,
      );
      console.log(
        `browser SB litmus, barrier('full'), ${LITMUS_ITERATIONS} iterations in ${Math.round(sb.milliseconds)} ms:`,
        sb.counts,
      );
      console.log(
        `browser SB litmus, unfenced (observation only), ${LITMUS_ITERATIONS} iterations in ${Math.round(unfenced.milliseconds)} ms: (0,0) ${unfenced.counts['0,0'] ?? 0} times`,
        unfenced.counts,
      );
      expect(sb.forbidden).toBe(0);
      expect(sb.counts['0,0']).toBeUndefined();
      const total = Object.values(sb.counts).reduce((sum, n) => sum + n, 0);
      expect(total).toBe(LITMUS_ITERATIONS);
    });

    it("times a 64 B RELAXED read and barrier('full') in the page and in Node (reported, not asserted)", async () => {
      const inPage = await call<Timings>(page, 'timings', [TIMING_CALLS, TIMING_RUNS]);
      const lib = (await import(pathToFileURL(DIST_INDEX).href)) as typeof Lib;
      const memory = new lib.GuestMemory({ size: 1 << 16 });
      const ctx = new lib.DMAContext(memory);
      const buf = new Uint8Array(64);
      const { RELAXED } = lib.DMAAttributes;
      const node = {
        shared: memory.shared,
        policy: memory.barrierPolicy,
        read: bestOf(TIMING_RUNS, TIMING_CALLS, (n) => {
          for (let i = 0; i < n; i++) ctx.read(0x100, buf, RELAXED);
        }),
        barrier: bestOf(TIMING_RUNS, TIMING_CALLS, (n) => {
          for (let i = 0; i < n; i++) ctx.barrier('full');
        }),
      };
      const format = (t: Timings): string =>
        `64 B RELAXED read ${t.read.toFixed(1)} ns, barrier('full') ${t.barrier.toFixed(1)} ns (policy ${t.policy}, shared ${String(t.shared)})`;
      console.log(`timings, best of ${TIMING_RUNS} x ${TIMING_CALLS} calls:`);
      console.log(`  Chromium page: ${format(inPage)}`);
      console.log(`  Node ${process.version}: ${format(node)}`);
      expect(inPage.read).toBeGreaterThan(0);
      expect(inPage.barrier).toBeGreaterThan(0);
    });

    it('without COOP/COEP: no SharedArrayBuffer, unshared memory and IommuDomain work, handle() is a DMAError naming cross-origin isolation', async () => {
      const plain = await serveFolder(outDir, false);
      try {
        const fallbackPage = await open(plain.url);
        const report = await call<{
          crossOriginIsolated: boolean;
          sharedArrayBuffer: string;
          shared: boolean;
          readBack: number[];
          u32: number;
          translated: { gpa: number; length: number };
          faultCode: string;
          memoryHandle: Thrown;
          domainHandle: Thrown;
        }>(fallbackPage, 'fallback');
        await fallbackPage.close();
        expect(report.crossOriginIsolated).toBe(false);
        expect(report.sharedArrayBuffer).toBe('undefined');
        expect(report.shared).toBe(false);
        expect(report.readBack).toEqual([1, 2, 3]);
        expect(report.u32).toBe(0xcafef00d);
        expect(report.translated).toEqual({ gpa: 0x1010, length: 4096 - 0x10 });
        expect(report.faultCode).toBe('ERR_DMA_IOMMU_PERMISSION');
        for (const thrown of [report.memoryHandle, report.domainHandle]) {
          expect(thrown.thrown).toBe(true);
          expect(thrown.isDMAError).toBe(true);
          expect(thrown.name).not.toBe('ReferenceError');
          expect(thrown.code).toBe('ERR_DMA_INVALID_ARGUMENT');
          expect(thrown.message).toMatch(/cross-origin isolation/);
        }
      } finally {
        await plain.close();
      }
    });

    it.skipIf(!existsSync(DEMO_SERVE))(
      `runs the web demo's attrs variant for 2 s in two workers without a lost notification${existsSync(DEMO_SERVE) ? '' : ' (skipped: examples/web/serve.mjs does not exist yet)'}`,
      async () => {
        const { serveDemo } = (await import(pathToFileURL(DEMO_SERVE).href)) as {
          serveDemo: (options: {
            isolated: boolean;
          }) => Promise<{ url: string; close: () => Promise<void> }>;
        };
        const demo = await within(serveDemo({ isolated: true }), 30_000, 'serveDemo');
        try {
          if (browser === undefined) throw new Error('Chromium did not start');
          const demoPage = await browser.newPage();
          demoPage.on('pageerror', (error) => pageErrors.push(`demo: ${error.message}`));
          await demoPage.goto(demo.url, { timeout: EVALUATE_TIMEOUT_MS });
          await demoPage.waitForFunction(() => 'demo' in globalThis, undefined, {
            timeout: 10_000,
          });
          const evaluation = demoPage.evaluate(() => {
            const { demo: api } = globalThis as unknown as {
              demo: { run(variant: string, seconds: number): Promise<unknown> };
            };
            return api.run('attrs', 2);
          });
          const result = (await within(evaluation, 30_000, "demo.run('attrs', 2)")) as DemoResult;
          await demoPage.close();
          console.log('web demo, attrs, 2 s:', result);
          expect(result.packets).toBeGreaterThan(0);
          expect(result.lost).toBe(0);
          expect(result.corrupted).toBe(0);
          // Cross-origin isolated, the driver and the device run in two workers.
          expect(result.threads).toBe(2);
        } finally {
          await demo.close();
        }
      },
    );

    it('left no uncaught error or console error in the pages', () => {
      expect(pageErrors).toEqual([]);
    });
  },
);
