/**
 * Grows a backing from its own thread while test/workers/growth-dma.mjs does DMA into it,
 * for test/growth.test.ts. `target` is a shared `WebAssembly.Memory` (grown one page at a
 * time) or a growable `SharedArrayBuffer` (grown by `step` bytes at a time).
 *
 * It waits for the DMA worker's first batch, then grows `grows` times; after each growth it
 * publishes the count in `GROWS` and, but for the last, waits until the DMA worker has
 * finished at least `batchesBetween` more batches, so that accesses certainly ran between
 * any two growths (the DMA worker never waits for it: growth lands at any point of its
 * accesses). Every wait is bounded by `waitMs`; `STOP` ends it early. It reports
 * `{ grows, byteLength }` or `{ error }`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CONTROL } from './growth-ops.mjs';

const { target, control, grows, step, batchesBetween, waitMs } = workerData;
const words = new Int32Array(control);

/** The current byte length of the target. */
function byteLength() {
  return target instanceof SharedArrayBuffer ? target.byteLength : target.buffer.byteLength;
}

/** Waits until the DMA worker has finished `batches` batches. */
function waitForBatches(batches) {
  const deadline = performance.now() + waitMs;
  for (;;) {
    if (Atomics.load(words, CONTROL.STOP) !== 0) return false;
    const seen = Atomics.load(words, CONTROL.BATCHES);
    if (seen >= batches) return true;
    if (performance.now() > deadline) {
      throw new Error(`waited ${waitMs} ms for batch ${batches}; the DMA worker is at ${seen}`);
    }
    Atomics.wait(words, CONTROL.BATCHES, seen, 20);
  }
}

try {
  let done = 0;
  if (waitForBatches(1)) {
    for (; done < grows; done++) {
      if (target instanceof SharedArrayBuffer) target.grow(target.byteLength + step);
      else target.grow(1);
      Atomics.store(words, CONTROL.GROWS, done + 1);
      const last = done + 1 === grows;
      if (!last && !waitForBatches(Atomics.load(words, CONTROL.BATCHES) + batchesBetween)) {
        done++;
        break;
      }
    }
  }
  parentPort.postMessage({ grows: done, byteLength: byteLength() });
} catch (error) {
  Atomics.store(words, CONTROL.STOP, 1);
  parentPort.postMessage({
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
}
