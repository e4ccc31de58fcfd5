/**
 * A device that DMAs into one IOVA page in a tight loop, for the coherence test in
 * test/iommu-workers.test.ts. It attaches to the guest memory and the IOMMU domain from their
 * handles, with its own DMAContext, then runs the rounds the main thread opens:
 *
 *   1. wait until `control[ROUND]` names a new round (a negative round means: report and stop);
 *   2. until `control[UNMAPPED]` equals the round, alternate `ctx.write` of a whole-page
 *      pattern and `ctx.writeU32LE` at the IOVA, announcing the round's first success in
 *      `STARTED`; a fault here is an access that started between the unmap and the flag;
 *   3. once it has seen the flag, make `attemptsAfterFlag` more accesses, every one of which
 *      must fault with ERR_DMA_IOMMU_UNMAPPED; count the ones that do not;
 *   4. record the round in `DONE`.
 *
 * With `batch` > 0 the device makes its accesses in batches of up to that many
 * (`ctx.batch`), and the accesses after the flag run in the batch that saw it. An unmap can
 * return while a batch stays open only through the batch's generation check (its next access
 * gives the old slot back); `flagsInOpenBatch` counts the rounds where the flag reached a
 * batch that had made a successful access, so was open before the unmap took effect. With
 * `stale` (the control), the device also keeps the direct view `ctx.map` gave it at the
 * round's start and writes through it after the flag: a write after the unmap that the main
 * thread's canary check must catch.
 *
 * Every byte the device writes is below 0x80, so the main thread's canary (every byte 0x80 or
 * above) shows any write that lands after the unmap. `BUSY` is 1 while an access runs, for
 * the main thread to sample when it calls unmap. All the control words live in their own
 * SharedArrayBuffer, outside guest memory.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, DMAError, GuestMemory, IommuDomain } from '../../dist/index.js';

const { WRITE } = DMAAttributes;
import { BUSY, DONE, ERROR, ROUND, STARTED, UNMAPPED, workerWord } from './iommu-control.mjs';

const {
  memory,
  domain: domainHandle,
  control,
  worker,
  iova,
  pageSize,
  attemptsAfterFlag,
  batch = 0,
  stale = false,
} = workerData;
const words = new Int32Array(control);
const busy = workerWord(worker, BUSY);
const started = workerWord(worker, STARTED);
const done = workerWord(worker, DONE);
/** No wait in a round may take this long; the main thread's waits are shorter. */
const STALL_MS = 15_000;

const stats = {
  worker,
  rounds: 0,
  accesses: 0,
  successes: 0,
  /** Accesses that started after the unmap but before this thread saw the flag: they faulted. */
  faultsBeforeFlag: 0,
  /** Rounds with at least one such access. */
  roundsFaultedBeforeFlag: 0,
  faultsAfterFlag: 0,
  /** Accesses started after seeing the flag that did not fault: must stay 0. */
  successesAfterFlag: 0,
  /** Faults this thread's onFault listener received, and those that were not `unmapped`. */
  listenerFaults: 0,
  listenerOtherFaults: 0,
  /**
   * Batch mode: rounds whose flag was seen by a batch that had made a successful access, so
   * was open before the unmap took effect.
   */
  flagsInOpenBatch: 0,
};

const domain = IommuDomain.fromHandle(domainHandle, {
  onFault: (fault) => {
    stats.listenerFaults++;
    const inPage = fault.iova >= iova && fault.iova + fault.length <= iova + pageSize;
    if (fault.reason !== 'unmapped' || !inPage) stats.listenerOtherFaults++;
  },
});
const ctx = new DMAContext(GuestMemory.fromHandle(memory), { iommu: domain });

// Two whole-page patterns, every byte below 0x80.
const patterns = [0, 1].map((which) => {
  const bytes = new Uint8Array(pageSize);
  for (let i = 0; i < pageSize; i++) bytes[i] = (i * 7 + which * 13 + worker * 29) & 0x7f;
  return bytes;
});

/** One DMA write; true when it succeeded, false when the IOMMU refused it as unmapped. */
function access(sequence) {
  stats.accesses++;
  Atomics.store(words, busy, 1);
  try {
    if ((sequence & 1) === 0) {
      ctx.write(iova, patterns[(sequence >>> 1) & 1]);
    } else {
      const offset = ((sequence >>> 1) * 4) % pageSize;
      ctx.writeU32LE(iova + offset, Math.imul(sequence, 0x01010101) & 0x7f7f7f7f);
    }
    return true;
  } catch (error) {
    if (error instanceof DMAError && error.code === 'ERR_DMA_IOMMU_UNMAPPED') return false;
    throw error;
  } finally {
    Atomics.store(words, busy, 0);
  }
}

function waitForRound(previous) {
  const deadline = performance.now() + STALL_MS;
  for (;;) {
    const round = Atomics.load(words, ROUND);
    if (round !== previous) return round;
    if (performance.now() > deadline) throw new Error(`no round after round ${previous}`);
    Atomics.wait(words, ROUND, previous, 100);
  }
}

/** Runs `body` as one batch of accesses in batch mode, else as it is. */
function inBatch(body) {
  return batch > 0 ? ctx.batch(body) : body();
}

/** The accesses after the flag: every one must fault. */
function afterFlag() {
  for (let attempt = 0; attempt < attemptsAfterFlag; attempt++) {
    if (access(sequence++)) stats.successesAfterFlag++;
    else stats.faultsAfterFlag++;
  }
}

let sequence = 0;

function runRounds() {
  for (let round = 0; ;) {
    round = waitForRound(round);
    if (round < 0) return;
    let announced = false;
    let faultedBeforeFlag = false;
    let flagged = false;
    let view;
    const deadline = performance.now() + STALL_MS;
    while (!flagged) {
      // One batch (or, without batches, one access) at a time; the flag is checked between
      // accesses, and the accesses after it run in the batch that saw it.
      const stopped = inBatch(() => {
        let succeeded = false;
        for (let made = 0; made < Math.max(batch, 1); made++) {
          if (Atomics.load(words, UNMAPPED) === round) {
            flagged = true;
            if (batch > 0 && succeeded) stats.flagsInOpenBatch++;
            afterFlag();
            return false;
          }
          if (access(sequence++)) {
            stats.successes++;
            succeeded = true;
            if (!announced) {
              announced = true;
              if (stale) view = ctx.map(iova, pageSize, WRITE);
              Atomics.store(words, started, round);
              Atomics.notify(words, started);
            }
          } else {
            stats.faultsBeforeFlag++;
            faultedBeforeFlag = true;
          }
          if ((sequence & 255) === 0) {
            // The main thread gave up on the run (a timeout or another worker's error).
            if (Atomics.load(words, ROUND) < 0) return true;
            if (performance.now() > deadline) throw new Error(`round ${round}: no unmap flag`);
          }
        }
        return false;
      });
      if (stopped) return;
    }
    // The control: a write through a view kept from before the unmap lands after it.
    if (view !== undefined) view[round % pageSize] = round & 0x7f;
    if (faultedBeforeFlag) stats.roundsFaultedBeforeFlag++;
    stats.rounds++;
    Atomics.store(words, done, round);
    Atomics.notify(words, done);
  }
}

parentPort.postMessage({ ready: true });
try {
  runRounds();
  parentPort.postMessage({ stats });
} catch (error) {
  Atomics.store(words, ERROR, worker + 1);
  parentPort.postMessage({
    stats,
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
}
