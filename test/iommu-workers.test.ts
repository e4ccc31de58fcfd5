/**
 * One IOMMU domain shared by real worker_threads: mappings made in any thread are seen by
 * every thread's accesses, and once `unmap` returns no access anywhere uses the old mapping
 * and no write that was in flight lands afterwards. The workers (test/workers/iommu-*.mjs)
 * import the built package from dist/, which `npm test` builds before vitest runs.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAFault,
  GuestMemory,
  IommuDomain,
  type IommuFault,
} from '../src/index.js';
import {
  BUSY,
  DONE,
  ERROR,
  IDLE,
  ROUND,
  STARTED,
  UNMAPPED,
  controlBytes,
  workerWord,
} from './workers/iommu-control.mjs';
import { Peer, bounded, startWorker, stopWorkersAfterEach } from './support/workers.js';

const { READ, WRITE, BIDIRECTIONAL } = DMAAttributes;
const PAGE = 4096;
const TIMEOUT_MS = 30_000;
/** How long the main thread waits for a worker at any one step of a round. */
const WAIT_MS = 5_000;

/** The device and the unmapping thread only race when two CPUs run them at once. */
const PARALLEL = availableParallelism() >= 2;

beforeAll(() => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the IOMMU workers import dist/index.js: run `npx tsup` first');
  }
});

stopWorkersAfterEach();

// ---------------------------------------------------------------------------------------
// Sharing: one request per message to a device thread holding the same domain.

interface Reply {
  id: number;
  ok: boolean;
  code?: string;
  message?: string;
  pageSize?: number;
  mappingCount?: number;
  removed?: number;
  bytes?: number[];
  value?: number;
  translation?: { gpa: number; length: number; perm: number };
  faults?: IommuFault[];
}

/** Guest memory, a domain with a recording listener and a context in the main thread, and a peer attached to both. */
async function shared() {
  const memory = new GuestMemory({ size: 0x40000 });
  const mainFaults: IommuFault[] = [];
  const domain = new IommuDomain({
    onFault: (fault) => {
      mainFaults.push(fault);
    },
  });
  const ctx = new DMAContext(memory, { iommu: domain });
  const peer = new Peer<Reply>('iommu-peer.mjs', WAIT_MS);
  const attached = await peer.ok({
    op: 'attach',
    memory: memory.handle(),
    domain: domain.handle(),
  });
  expect(attached).toMatchObject({ pageSize: PAGE, mappingCount: 0 });
  return { memory, domain, ctx, peer, mainFaults };
}

function peek(memory: GuestMemory, gpa: number, length: number): number[] {
  const bytes = new Uint8Array(length);
  memory.read(gpa, bytes);
  return [...bytes];
}

function pattern(length: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => (i * 7 + seed) & 0xff);
}

describe('an IOMMU domain handle in a worker_threads Worker', () => {
  it("the worker's reads and writes go through a mapping made in the main thread", async () => {
    const { memory, domain, peer } = await shared();
    domain.map(0x10000, 0x20000, 2 * PAGE, BIDIRECTIONAL);

    // A write that crosses the page boundary, split by the worker's context.
    const data = pattern(32, 3);
    await peer.ok({ op: 'write', iova: 0x10ff0, bytes: data });
    expect(peek(memory, 0x20ff0, 32)).toEqual(data);

    const guest = pattern(24, 11);
    memory.write(0x21100, Uint8Array.from(guest));
    expect((await peer.ok({ op: 'read', iova: 0x11100, length: 24 })).bytes).toEqual(guest);
    expect((await peer.ok({ op: 'translate', iova: 0x10000, attrs: READ })).translation).toEqual({
      gpa: 0x20000,
      length: 2 * PAGE,
      perm: BIDIRECTIONAL,
    });
  });

  it('main-thread accesses go through a mapping made in the worker, with its permission', async () => {
    const { memory, domain, ctx, peer, mainFaults } = await shared();
    await peer.ok({ op: 'map', iova: 0x30000, gpa: 0x28000, size: PAGE, perm: WRITE });
    expect(domain.mappingCount).toBe(1);
    expect(domain.translate(0x30000, WRITE)).toEqual({ gpa: 0x28000, length: PAGE, perm: WRITE });

    const data = Uint8Array.from(pattern(16, 5));
    ctx.write(0x30010, data);
    expect(peek(memory, 0x28010, 16)).toEqual([...data]);

    // The worker mapped it write-only: the main thread's read is refused.
    expect(() => {
      ctx.read(0x30010, new Uint8Array(4));
    }).toThrow(expect.objectContaining({ code: 'ERR_DMA_IOMMU_PERMISSION', access: 'read' }));
    expect(mainFaults).toEqual([
      { iova: 0x30010, length: 4, attrs: READ, reason: 'permission', access: 'read' },
    ]);
  });

  it("an unmap in the worker makes main-thread accesses fault, though main's IOTLB held the page", async () => {
    const { memory, domain, ctx, peer, mainFaults } = await shared();
    domain.map(0x10000, 0x20000, PAGE, WRITE);
    ctx.write(0x10000, Uint8Array.of(1, 2, 3, 4)); // fills the main thread's IOTLB
    ctx.writeU32LE(0x10004, 0x05060708);
    expect(peek(memory, 0x20000, 8)).toEqual([1, 2, 3, 4, 8, 7, 6, 5]);

    expect((await peer.ok({ op: 'unmap', iova: 0x10000, size: PAGE })).removed).toBe(PAGE);
    expect(domain.mappingCount).toBe(0);

    let fault: unknown;
    try {
      ctx.write(0x10000, Uint8Array.of(9, 9, 9, 9));
    } catch (error) {
      fault = error;
    }
    expect(fault).toBeInstanceOf(DMAFault);
    expect(fault).toMatchObject({ code: 'ERR_DMA_IOMMU_UNMAPPED', addr: 0x10000, length: 4 });
    expect(() => {
      ctx.writeU32LE(0x10004, 0);
    }).toThrow(expect.objectContaining({ code: 'ERR_DMA_IOMMU_UNMAPPED' }));
    expect(peek(memory, 0x20000, 8)).toEqual([1, 2, 3, 4, 8, 7, 6, 5]);
    expect(mainFaults).toEqual([
      { iova: 0x10000, length: 4, attrs: WRITE, reason: 'unmapped' },
      { iova: 0x10004, length: 4, attrs: WRITE, reason: 'unmapped' },
    ]);
    // The faults were the main thread's: the worker's listener heard nothing.
    expect((await peer.ok({ op: 'faults' })).faults).toEqual([]);
  });

  it('a remap in the worker sends main-thread accesses to the new page, not the cached one', async () => {
    const { memory, domain, ctx, peer } = await shared();
    domain.map(0x10000, 0x20000, PAGE, WRITE);
    ctx.writeU32LE(0x10040, 0x11111111);
    await peer.ok({ op: 'unmap', iova: 0x10000, size: PAGE });
    await peer.ok({ op: 'map', iova: 0x10000, gpa: 0x22000, size: PAGE, perm: WRITE });
    ctx.writeU32LE(0x10040, 0x22222222);
    expect(peek(memory, 0x20040, 4)).toEqual([0x11, 0x11, 0x11, 0x11]);
    expect(peek(memory, 0x22040, 4)).toEqual([0x22, 0x22, 0x22, 0x22]);
  });

  it("an unmap in the main thread makes the worker's accesses fault, reported to the worker's listener", async () => {
    const { memory, domain, peer, mainFaults } = await shared();
    domain.map(0x10000, 0x20000, PAGE, WRITE);
    await peer.ok({ op: 'write', iova: 0x10000, bytes: [1, 2, 3] });
    expect(domain.unmap(0x10000, PAGE)).toBe(PAGE);

    const refused = await peer.request({ op: 'write', iova: 0x10000, bytes: [7, 7, 7] });
    expect(refused).toMatchObject({ ok: false, code: 'ERR_DMA_IOMMU_UNMAPPED' });
    expect(peek(memory, 0x20000, 3)).toEqual([1, 2, 3]);
    expect((await peer.ok({ op: 'faults' })).faults).toEqual([
      { iova: 0x10000, length: 3, attrs: WRITE, reason: 'unmapped' },
    ]);
    expect(mainFaults).toEqual([]);
  });
});

describe('a thread that dies inside an access', () => {
  it('holds up one unmap for the stall limit, not every unmap after it', async () => {
    const { domain, peer } = await shared();
    domain.map(0x10000, 0x20000, PAGE, WRITE);
    const hanging = new Promise((resolve) => {
      peer.worker.on('message', (message: { hanging?: boolean }) => {
        if (message.hanging === true) resolve(true);
      });
    });
    void peer.request({ op: 'hang', iova: 0x10000 }).catch(() => undefined);
    await bounded(hanging, WAIT_MS, 'the worker to block inside its access');
    await peer.worker.terminate();

    // The dead thread's slot still says "in an access": the first unmap waits the stall
    // limit (1 s) for it, then gives up.
    let started = performance.now();
    domain.unmap(0x10000, PAGE);
    expect(performance.now() - started).toBeGreaterThanOrEqual(900);

    // Later unmaps do not wait for it again.
    domain.map(0x10000, 0x20000, PAGE, WRITE);
    started = performance.now();
    domain.unmap(0x10000, PAGE);
    expect(performance.now() - started).toBeLessThan(500);
  });
});

// ---------------------------------------------------------------------------------------
// Coherence: devices DMA in a tight loop while the main thread unmaps under them.

const IOVA = 0x100000;
const GPA_BASE = 0x10000;
/** Guest-physical pages the rounds cycle through, so a stale mapping to an old one shows too. */
const GPA_PAGES = 8;
/** Accesses each worker makes after it has seen the flag; every one must fault. */
const ATTEMPTS_AFTER_FLAG = 64;
/** The longest the main thread lets the devices run between their first success and the unmap. */
const RUN_MICROS = 200;

interface LoopStats {
  worker: number;
  rounds: number;
  accesses: number;
  successes: number;
  faultsBeforeFlag: number;
  roundsFaultedBeforeFlag: number;
  faultsAfterFlag: number;
  successesAfterFlag: number;
  listenerFaults: number;
  listenerOtherFaults: number;
  flagsInOpenBatch: number;
}

interface LoopReport {
  stats: LoopStats;
  error?: string;
}

interface CoherenceReport {
  rounds: number;
  milliseconds: number;
  /** Rounds in which some worker was inside an access when the main thread called unmap. */
  busyAtUnmap: number;
  /** Microseconds from calling unmap to the canary being written, mean and max. */
  unmapMicros: { mean: number; max: number };
  /** Rounds whose page showed no device write before the unmap (the mapping did not route there). */
  roundsWithoutDeviceData: number;
  /** What the canary checks found: a page byte that differs from what the main thread put there. */
  canaryFailures: string[];
  workers: LoopReport[];
}

/** Starts a DMA loop worker; `ready` resolves once it is attached, `report` when it stops. */
function startLoop(workerData: Record<string, unknown>): {
  ready: Promise<void>;
  report: Promise<LoopReport>;
} {
  const worker = startWorker('iommu-dma-loop.mjs', workerData);
  const failed = new Promise<never>((_resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => {
      reject(new Error(`iommu-dma-loop.mjs exited with code ${code} before reporting`));
    });
  });
  failed.catch(() => undefined);
  const messages: ((message: unknown) => void)[] = [];
  worker.on('message', (message: unknown) => {
    messages.shift()?.(message);
  });
  const ready = new Promise<void>((resolve) => {
    messages.push(() => {
      resolve();
    });
  });
  const report = new Promise<LoopReport>((resolve) => {
    messages.push((message) => {
      resolve(message as LoopReport);
    });
  });
  return {
    ready: bounded(Promise.race([ready, failed]), WAIT_MS, 'a DMA loop worker to start'),
    report: Promise.race([report, failed]),
  };
}

class WorkerFailed extends Error {}

/**
 * Blocks until every worker's `field` word holds `round`, a worker fails, or the wait limit
 * passes. It sleeps in `Atomics.wait` rather than spinning, so that the main thread leaves
 * the CPUs to the devices: a device preempted inside an access holds up the next unmap.
 */
function waitForWorkers(
  words: Int32Array,
  workers: number,
  field: number,
  round: number,
  what: string,
): void {
  const deadline = performance.now() + WAIT_MS;
  for (let worker = 0; worker < workers; worker++) {
    const index = workerWord(worker, field);
    for (;;) {
      const value = Atomics.load(words, index);
      if (value === round) break;
      if (Atomics.load(words, ERROR) !== 0) throw new WorkerFailed(what);
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      Atomics.wait(words, index, value, 10);
    }
  }
}

/**
 * Runs `rounds` rounds against `workers` DMA loop workers. Each round: map the IOVA page to
 * the next guest-physical page (filled with 0xff, which no device writes), open the round,
 * wait until every worker has had a successful access, let them run up to RUN_MICROS more,
 * then unmap; as soon as unmap returns, cover the page with the round's canary (every byte
 * 0x80 or above, which no device writes) and raise the flag. Once every worker has finished
 * the round, every guest-physical page must hold exactly what the main thread last put there.
 */
async function coherence(
  workers: number,
  rounds: number,
  mode: { batch?: number; stale?: boolean } = {},
): Promise<CoherenceReport> {
  const memory = new GuestMemory({ size: GPA_BASE + GPA_PAGES * PAGE });
  const domain = new IommuDomain();
  const control = new SharedArrayBuffer(controlBytes(workers));
  const words = new Int32Array(control);
  const loops = Array.from({ length: workers }, (_, worker) =>
    startLoop({
      memory: memory.handle(),
      domain: domain.handle(),
      control,
      worker,
      iova: IOVA,
      pageSize: PAGE,
      attemptsAfterFlag: ATTEMPTS_AFTER_FLAG,
      ...mode,
    }),
  );
  await Promise.all(loops.map((loop) => loop.ready));

  const expected = Array.from({ length: GPA_PAGES }, () => new Uint8Array(PAGE));
  const seen = new Uint8Array(PAGE);
  const canary = new Uint8Array(PAGE);
  const canaryFailures: string[] = [];
  let busyAtUnmap = 0;
  let roundsWithoutDeviceData = 0;
  let unmapTotal = 0;
  let unmapMax = 0;
  let completed = 0;
  const started = performance.now();
  try {
    for (let round = 1; round <= rounds; round++) {
      const page = round % GPA_PAGES;
      const gpa = GPA_BASE + page * PAGE;
      const before = expected[page] as Uint8Array;
      before.fill(0xff);
      memory.write(gpa, before);
      for (let i = 0; i < PAGE; i++) canary[i] = 0x80 | ((round * 31 + i) & 0x7f);
      domain.map(IOVA, gpa, PAGE, WRITE);

      Atomics.store(words, ROUND, round);
      Atomics.notify(words, ROUND);
      waitForWorkers(words, workers, STARTED, round, `round ${round} to start`);
      Atomics.wait(words, IDLE, 0, (Math.random() * RUN_MICROS) / 1000);

      // Every worker has written through this round's mapping: the page must show it.
      memory.read(gpa, seen);
      if (seen.every((byte) => byte === 0xff)) roundsWithoutDeviceData++;

      let busy = false;
      for (let worker = 0; worker < workers; worker++) {
        if (Atomics.load(words, workerWord(worker, BUSY)) === 1) busy = true;
      }
      const unmapStart = performance.now();
      domain.unmap(IOVA, PAGE);
      memory.write(gpa, canary);
      const unmapMicros = (performance.now() - unmapStart) * 1000;
      Atomics.store(words, UNMAPPED, round);
      if (busy) busyAtUnmap++;
      unmapTotal += unmapMicros;
      unmapMax = Math.max(unmapMax, unmapMicros);

      waitForWorkers(words, workers, DONE, round, `round ${round} to finish`);
      before.set(canary);
      for (let other = 0; other < GPA_PAGES; other++) {
        const want = expected[other] as Uint8Array;
        memory.read(GPA_BASE + other * PAGE, seen);
        const offset = seen.findIndex((byte, i) => byte !== want[i]);
        if (offset >= 0) {
          canaryFailures.push(
            `round ${round}: gpa 0x${(GPA_BASE + other * PAGE + offset).toString(16)} holds 0x${(seen[offset] as number).toString(16)}, expected 0x${(want[offset] as number).toString(16)}`,
          );
          want.set(seen); // report each corruption once
        }
      }
      completed = round;
    }
  } catch (error) {
    if (!(error instanceof WorkerFailed)) throw error;
  } finally {
    Atomics.store(words, ROUND, -1);
    Atomics.notify(words, ROUND);
  }
  const milliseconds = performance.now() - started;
  const reports = await bounded(
    Promise.all(loops.map((loop) => loop.report)),
    WAIT_MS,
    'the DMA loop workers to report',
  );
  return {
    rounds: completed,
    milliseconds: Math.round(milliseconds),
    busyAtUnmap,
    unmapMicros: {
      mean: Math.round((unmapTotal / Math.max(completed, 1)) * 10) / 10,
      max: Math.round(unmapMax * 10) / 10,
    },
    roundsWithoutDeviceData,
    canaryFailures,
    workers: reports,
  };
}

function checkCoherence(report: CoherenceReport, rounds: number): void {
  const summary = {
    ...report,
    canaryFailures: report.canaryFailures.slice(0, 5),
    workers: report.workers.map(({ stats, error }) => ({ ...stats, error })),
  };
  console.log(`IOMMU coherence, ${report.workers.length} worker(s):`, summary);
  for (const { stats, error } of report.workers) {
    expect(error, `worker ${stats.worker}`).toBeUndefined();
  }
  expect(report.rounds).toBe(rounds);
  expect(report.canaryFailures).toEqual([]);
  expect(report.roundsWithoutDeviceData).toBe(0);
  for (const { stats } of report.workers) {
    expect(stats.rounds).toBe(rounds);
    expect(stats.successesAfterFlag).toBe(0);
    expect(stats.faultsAfterFlag).toBe(rounds * ATTEMPTS_AFTER_FLAG);
    expect(stats.successes).toBeGreaterThanOrEqual(rounds);
    // Every fault reached this thread's listener, and each was the unmapped page.
    expect(stats.listenerFaults).toBe(stats.faultsBeforeFlag + stats.faultsAfterFlag);
    expect(stats.listenerOtherFaults).toBe(0);
  }
  if (PARALLEL) {
    // The devices were inside an access when unmap was called: the drain was exercised.
    expect(report.busyAtUnmap).toBeGreaterThan(0);
  }
}

describe('IOMMU coherence: unmap under a device DMAing in another thread', () => {
  const ONE_WORKER_ROUNDS = 500;
  it(
    `no access started after the unmap succeeds and no write lands after it returns (${ONE_WORKER_ROUNDS} rounds)`,
    async () => {
      checkCoherence(await coherence(1, ONE_WORKER_ROUNDS), ONE_WORKER_ROUNDS);
    },
    TIMEOUT_MS,
  );

  const TWO_WORKER_ROUNDS = 300;
  it(
    `holds with two devices DMAing into the page at once (${TWO_WORKER_ROUNDS} rounds)`,
    async () => {
      checkCoherence(await coherence(2, TWO_WORKER_ROUNDS), TWO_WORKER_ROUNDS);
    },
    TIMEOUT_MS,
  );

  // The device's accesses in batches (ctx.batch): one enter per batch of up to BATCH
  // accesses. An unmap can return while a batch stays open only through the batch's
  // generation check (without it, unmap waits for the batch to end, and the flag is only
  // ever seen by a fresh batch): most rounds must see the flag in a batch open across the
  // unmap, and every access after it must still fault.
  const BATCH = 4096;
  const BATCH_ROUNDS = 300;
  const checkBatches = (report: CoherenceReport, rounds: number): void => {
    checkCoherence(report, rounds);
    for (const { stats } of report.workers) {
      expect(stats.flagsInOpenBatch).toBeGreaterThan(rounds / 2);
    }
  };
  it(
    `holds when the device's accesses run in batches (${BATCH_ROUNDS} rounds)`,
    async () => {
      checkBatches(await coherence(1, BATCH_ROUNDS, { batch: BATCH }), BATCH_ROUNDS);
    },
    TIMEOUT_MS,
  );
  it(
    `holds with two devices in batches (${BATCH_ROUNDS} rounds)`,
    async () => {
      checkBatches(await coherence(2, BATCH_ROUNDS, { batch: BATCH }), BATCH_ROUNDS);
    },
    TIMEOUT_MS,
  );

  // The control: the same run with a device that writes after the unmap, through a direct
  // view it kept from before: the canary check must see it in every round.
  const CONTROL_ROUNDS = 20;
  it(
    `control: a write after the unmap is caught by the canary check (${CONTROL_ROUNDS} rounds)`,
    async () => {
      const report = await coherence(1, CONTROL_ROUNDS, { batch: BATCH, stale: true });
      expect(report.rounds).toBe(CONTROL_ROUNDS);
      expect(report.canaryFailures).toHaveLength(CONTROL_ROUNDS);
    },
    TIMEOUT_MS,
  );
});
