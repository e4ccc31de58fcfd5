/**
 * One side of one `dma-attrs litmus` run, in a worker thread. The two sides meet at a
 * rendezvous before every iteration (spinning, so that two cores really run the iteration at
 * the same time), then make their two accesses on fresh zeroed words and record what they
 * loaded. The rendezvous lives in its own SharedArrayBuffer, never in guest memory, so it
 * orders nothing under test.
 *
 * The library is loaded through the package's own name at run time, so the worker exercises
 * the built package, the one users get.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import type * as Library from '../index.js';
import type { LitmusWorkerData } from './patterns.js';

/** The package's own name: a variable, so that neither tsc nor the bundler resolves it. */
const PACKAGE = 'dma-attrs';

const SPINS = 4096;
const SLEEP_MS = 20;

/** Returns once the cell's value is at least `target`: spins first, then sleeps. */
function waitAtLeast(cell: Int32Array, target: number): void {
  let spins = 0;
  for (;;) {
    const seen = Atomics.load(cell, 0);
    if (seen >= target) return;
    if (++spins === SPINS) {
      spins = 0;
      Atomics.add(cell, 1, 1);
      Atomics.wait(cell, 0, seen, SLEEP_MS);
      Atomics.sub(cell, 1, 1);
    }
  }
}

/** Adds one to the cell and wakes a sleeping waiter. */
function arrive(cell: Int32Array): void {
  Atomics.add(cell, 0, 1);
  // A sleeper announces itself before it checks the value (both seq-cst): either it sees our
  // add and does not sleep, or we see it here and wake it.
  if (Atomics.load(cell, 1) !== 0) Atomics.notify(cell, 0);
}

/** Runs this side's iterations and reports to the parent. */
async function main(): Promise<void> {
  const { DMAAttributes, DMAContext, GuestMemory } = (await import(PACKAGE)) as typeof Library;
  const data = workerData as LitmusWorkerData;
  const { side, pattern, barrier, iterations, xBase, yBase } = data;
  const ctx = new DMAContext(GuestMemory.fromHandle(data.handle as Library.GuestMemoryHandle));
  const cell = new Int32Array(data.rendezvous);
  const outcomes = new Uint8Array(data.outcomes);
  const { READ, WRITE, RELAXED } = DMAAttributes;
  const ONE = Uint8Array.of(1, 0, 0, 0);
  const loaded = new Uint8Array(4);
  const ordered = barrier === 'acquire-release';
  const full = barrier === 'full';

  // Acquire-release runs use `write` (WRITE: release before) and `read` (READ: acquire after),
  // byte copies with exactly the barrier the attributes imply. The fixed-width accessors would
  // be `Atomics` operations, which ECMAScript makes sequentially consistent: they would hide
  // what acquire and release alone allow.
  function store(addr: number): void {
    if (ordered) ctx.write(addr, ONE, WRITE);
    else ctx.writeU32LE(addr, 1, RELAXED);
  }

  function load(addr: number): number {
    if (!ordered) return ctx.readU32LE(addr, RELAXED);
    ctx.read(addr, loaded, READ);
    return (loaded[0] as number) | ((loaded[1] as number) << 8);
  }

  function between(): void {
    if (full) ctx.barrier('full');
  }

  const own = side === 0 ? xBase : yBase;
  const other = side === 0 ? yBase : xBase;
  const resultBase = side * iterations;
  for (let i = 0; i < iterations; i++) {
    arrive(cell);
    waitAtLeast(cell, 2 * (i + 1));
    const offset = 4 * i;
    let result = 0;
    if (pattern === 'sb') {
      store(own + offset);
      between();
      result = load(other + offset);
    } else if (pattern === 'lb') {
      result = load(other + offset);
      between();
      store(own + offset);
    } else if (side === 0) {
      // MP writer: x is the data, y the flag.
      store(xBase + offset);
      between();
      store(yBase + offset);
    } else {
      const flag = load(yBase + offset);
      between();
      result = flag | (load(xBase + offset) << 1);
    }
    outcomes[resultBase + i] = result;
  }
  parentPort?.postMessage({ side });
}

// No top-level await: the bundler may also emit this entry as CommonJS.
main().catch((error: unknown) => {
  throw error;
});
