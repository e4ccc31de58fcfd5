/* global self */
/**
 * One side of a litmus test between two module workers on one guest memory, in the browser.
 *
 * - `sb` (store buffering): side 0 stores x[i] = 1 and loads y[i], side 1 stores y[i] = 1 and
 *   loads x[i], with `barrier('full')` in between when `fence` is set; (0, 0) is forbidden
 *   then. Outcome of side s for iteration i goes to outcomes[s * n + i].
 * - `mp` (message passing): side 0 stores data[i] = 1, `barrier('full')`, flag[i] = 1; side 1
 *   loads flag[i] (a few times, until it sees 1), `barrier('full')`, loads data[i]; it records
 *   flag * 2 + data at outcomes[n + i], and 2 (flag seen, data not) is forbidden.
 *
 * Every access under test is RELAXED: only `barrier('full')` orders them. The two sides meet
 * at a rendezvous before every iteration, on a cell outside guest memory (see
 * test/workers/litmus-sync.mjs). Every wait gives up after WAIT_LIMIT_MS without progress.
 */
import { DMAAttributes, DMAContext, GuestMemory } from 'dma-attrs';

const { RELAXED } = DMAAttributes;
const SPINS = 4096;
const SLEEP_MS = 20;
const WAIT_LIMIT_MS = 5000;
const FLAG_TRIES = 64;

/** Adds one to the cell, waking a sleeper. */
function advance(cell) {
  Atomics.add(cell, 0, 1);
  if (Atomics.load(cell, 1) !== 0) Atomics.notify(cell, 0);
}

/** Returns once the cell is at least `target`; throws after WAIT_LIMIT_MS without progress. */
function waitAtLeast(cell, target) {
  let spins = 0;
  let started = 0;
  for (;;) {
    const seen = Atomics.load(cell, 0);
    if (seen >= target) return;
    if (++spins === SPINS) {
      spins = 0;
      const now = performance.now();
      if (started === 0) started = now;
      else if (now - started > WAIT_LIMIT_MS) {
        throw new Error(
          `rendezvous: no progress for ${WAIT_LIMIT_MS} ms (at ${seen}, waiting for ${target})`,
        );
      }
      Atomics.add(cell, 1, 1);
      Atomics.wait(cell, 0, seen, SLEEP_MS);
      Atomics.sub(cell, 1, 1);
    }
  }
}

self.onmessage = ({ data }) => {
  const { kind, side, handle, rendezvous, outcomes, iterations, xBase, yBase, fence } = data;
  try {
    const ctx = new DMAContext(GuestMemory.fromHandle(handle));
    const cell = new Int32Array(rendezvous);
    const out = new Uint8Array(outcomes);
    const started = performance.now();
    if (kind === 'sb') {
      const storeBase = side === 0 ? xBase : yBase;
      const loadBase = side === 0 ? yBase : xBase;
      const resultBase = side * iterations;
      for (let i = 0; i < iterations; i++) {
        advance(cell);
        waitAtLeast(cell, 2 * (i + 1));
        ctx.writeU32LE(storeBase + 4 * i, 1, RELAXED);
        if (fence) ctx.barrier('full');
        out[resultBase + i] = ctx.readU32LE(loadBase + 4 * i, RELAXED);
      }
    } else if (side === 0) {
      // x is the data, y the flag.
      for (let i = 0; i < iterations; i++) {
        advance(cell);
        waitAtLeast(cell, 2 * (i + 1));
        ctx.writeU32LE(xBase + 4 * i, 1, RELAXED);
        ctx.barrier('full');
        ctx.writeU32LE(yBase + 4 * i, 1, RELAXED);
      }
    } else {
      for (let i = 0; i < iterations; i++) {
        advance(cell);
        waitAtLeast(cell, 2 * (i + 1));
        let flag = 0;
        for (let tries = 0; tries < FLAG_TRIES && flag === 0; tries++) {
          flag = ctx.readU32LE(yBase + 4 * i, RELAXED);
        }
        ctx.barrier('full');
        out[iterations + i] = flag * 2 + ctx.readU32LE(xBase + 4 * i, RELAXED);
      }
    }
    self.postMessage({ side, milliseconds: performance.now() - started });
  } catch (error) {
    self.postMessage({ side, error: String(error?.stack ?? error) });
  }
};
