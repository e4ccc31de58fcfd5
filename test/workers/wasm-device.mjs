/**
 * The device of the wasm tests (test/wasm-vcpu.test.ts): a DMA context on the guest memory
 * the test adopted from the wasm vCPU's shared `WebAssembly.Memory`, rebuilt here from its
 * handle (which carries the `WebAssembly.Memory` itself). Guest addresses go through the
 * library; only the synchronisation cell (outside guest RAM, in the same wasm memory, shared
 * with the wasm code's own waits) is touched directly, with `Atomics`.
 *
 * Tasks:
 * - `mp`: the reader of message passing. Loads the flag with an ordered `readU32LE`
 *   (acquire), then the slot the flag names with RELAXED reads (alternately one `ctx.read`
 *   of the 64-byte slot and sixteen `readU32LE`s), and counts words older than the flag.
 *   Word j of message k is `k << 4 | j`, so a stale or misplaced word is seen, not guessed.
 *   After the slot of flag f it acknowledges f - 1 in the cell; the vCPU never overwrites the
 *   slot of a message above the acknowledgement (see litmus-mp.mjs).
 * - `sb`: one side of store buffering: meet the vCPU at the cell, store 1 to `storeAddr + 4i`
 *   (RELAXED), optionally `barrier('full')`, load `loadAddr + 4i` (RELAXED) into
 *   `outcomes[i]`.
 *
 * Every wait gives up with an error once the vCPU has made no progress for `idleMs`.
 */
/* global WebAssembly */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, GuestMemory } from '../../dist/index.js';
import { advance, publish } from './litmus-sync.mjs';

const { handle, task, idleMs } = workerData;
const memory = GuestMemory.fromHandle(handle);
const ctx = new DMAContext(memory);
const { RELAXED } = DMAAttributes;

const wasmMemory = handle.backing;
if (!(wasmMemory instanceof WebAssembly.Memory)) {
  throw new Error('wasm-device: the handle does not carry the WebAssembly.Memory');
}
/** The `[value, sleepers]` cell at `byteOffset` in the wasm memory (as in litmus-sync.mjs). */
const cellAt = (byteOffset) => new Int32Array(wasmMemory.buffer, byteOffset, 2);

const SPINS = 4096;
const SLEEP_MS = 20;

/** litmus-sync.mjs's waitAtLeast, giving up after `idleMs` of sleeping without progress. */
function waitAtLeast(cell, target, what) {
  let spins = 0;
  let idle = 0;
  for (;;) {
    const seen = Atomics.load(cell, 0);
    if (seen >= target) return seen;
    if (++spins === SPINS) {
      spins = 0;
      Atomics.add(cell, 1, 1);
      const woken = Atomics.wait(cell, 0, seen, SLEEP_MS);
      Atomics.sub(cell, 1, 1);
      if (woken === 'timed-out' && ++idle * SLEEP_MS >= idleMs) {
        throw new Error(`wasm-device: no progress from the vCPU for ${idleMs} ms (${what})`);
      }
    }
  }
}

/** What the device sees of the memory it rebuilt from the handle. */
function describeMemory() {
  const fence = memory.fenceLocation;
  return {
    regions: memory.regions.map(({ base, size, offset }) => ({ base, size, offset })),
    fenceByteOffset: fence?.byteOffset,
    fenceIsWasmMemory: fence?.buffer instanceof WebAssembly.Memory,
    backingIsWasmMemory: memory.backing instanceof WebAssembly.Memory,
    bufferByteLength: memory.buffer.byteLength,
  };
}

const PAYLOAD_WORDS = 16;

function messagePassing({ ackPtr, messages, flagAddr, slotBase, slots }) {
  const ack = cellAt(ackPtr);
  const words = new Uint32Array(PAYLOAD_WORDS);
  const payload = new Uint8Array(words.buffer);
  let reads = 0;
  let staleReads = 0;
  let otherReads = 0;
  let flagRegressions = 0;
  let lastFlag = 0;
  let firstStale;
  let firstOther;
  let sameFlag = 0;
  let idleSince = 0;
  for (;;) {
    // READ: the acquire after this load keeps the payload reads below from moving before it.
    const flag = ctx.readU32LE(flagAddr);
    if (flag === lastFlag) {
      // Spinning on an unchanged flag: look at the clock now and then, give up when idle.
      if ((++sameFlag & 0xffff) === 0) {
        const now = performance.now();
        if (sameFlag === 0x10000) idleSince = now;
        else if (now - idleSince >= idleMs) {
          throw new Error(`wasm-device: the flag stayed at ${flag} for ${idleMs} ms`);
        }
      }
      if (flag === 0) continue;
    } else {
      sameFlag = 0;
    }
    const slot = slotBase + (flag % slots) * 64;
    if ((reads & 1) === 0) {
      ctx.read(slot, payload, RELAXED);
    } else {
      for (let j = 0; j < PAYLOAD_WORDS; j++) words[j] = ctx.readU32LE(slot + 4 * j, RELAXED);
    }
    reads++;
    let stale = false;
    let other = false;
    for (let j = 0; j < PAYLOAD_WORDS; j++) {
      const word = words[j];
      if (word === ((flag << 4) | j) >>> 0) continue;
      if (word >>> 4 < flag) stale = true;
      else other = true;
    }
    if (stale) {
      staleReads++;
      firstStale ??= { flag, payload: Array.from(words) };
    }
    if (other) {
      otherReads++;
      firstOther ??= { flag, payload: Array.from(words) };
    }
    if (flag < lastFlag) flagRegressions++;
    lastFlag = flag;
    publish(ack, flag - 1);
    if (flag === messages) break;
  }
  return { reads, staleReads, otherReads, flagRegressions, firstStale, firstOther };
}

function storeBuffering({ cellPtr, iterations, storeAddr, loadAddr, outcomes, fence }) {
  const cell = cellAt(cellPtr);
  const loaded = new Uint8Array(outcomes);
  for (let i = 0; i < iterations; i++) {
    advance(cell, 1);
    waitAtLeast(cell, 2 * (i + 1), `store buffering, iteration ${i}`);
    ctx.writeU32LE(storeAddr + 4 * i, 1, RELAXED);
    if (fence) ctx.barrier('full');
    loaded[i] = ctx.readU32LE(loadAddr + 4 * i, RELAXED);
  }
  return { iterations };
}

const started = performance.now();
let report;
if (task === 'mp') report = messagePassing(workerData);
else if (task === 'sb') report = storeBuffering(workerData);
else throw new Error(`wasm-device: unknown task ${task}`);
parentPort.postMessage({
  task,
  ...report,
  memory: describeMemory(),
  milliseconds: performance.now() - started,
});
