/**
 * One side of the message-passing litmus test. The writer puts sequence number `seq` in
 * every u32 word of a 64-byte payload in slot `seq % SLOTS`, then stores `seq` to the flag;
 * the reader loads the flag, then the slot the flag names, and counts payload words older
 * than the flag (stale reads). Once the reader has seen flag f it never reads a flag below f
 * again, so after copying the slot of f it acknowledges f - 1; the writer never overwrites the
 * slot of a sequence number above the acknowledgement. A word that differs from the flag can
 * then only come from reordering, never from a lapped ring.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAContext, GuestMemory } from '../../dist/index.js';
import { publish, waitAtLeast } from './litmus-sync.mjs';

const { handle, ack, role, iterations, flagAddr, slotBase, slots } = workerData;
const ctx = new DMAContext(GuestMemory.fromHandle(handle));
const ackCell = new Int32Array(ack);
const PAYLOAD_WORDS = 16;
const words = new Uint32Array(PAYLOAD_WORDS);
const payload = new Uint8Array(words.buffer);

const started = performance.now();
if (role === 'writer') {
  for (let seq = 1; seq <= iterations; seq++) {
    // The slot of `seq` last held `seq - slots`; the reader must be done with that one.
    waitAtLeast(ackCell, seq - slots);
    words.fill(seq);
    ctx.write(slotBase + (seq % slots) * 64, payload);
    // WRITE: the release before this store keeps the payload above from moving after it.
    ctx.writeU32LE(flagAddr, seq);
  }
  parentPort.postMessage({ role, milliseconds: performance.now() - started });
} else {
  let reads = 0;
  let staleReads = 0;
  let otherReads = 0;
  let flagRegressions = 0;
  let lastFlag = 0;
  let firstStale;
  for (;;) {
    // READ: the acquire after this load keeps the payload read below from moving before it.
    const flag = ctx.readU32LE(flagAddr);
    if (flag === 0) continue;
    ctx.read(slotBase + (flag % slots) * 64, payload);
    reads++;
    let stale = false;
    let other = false;
    for (let index = 0; index < PAYLOAD_WORDS; index++) {
      const word = words[index];
      if (word < flag) stale = true;
      else if (word !== flag) other = true;
    }
    if (stale) {
      staleReads++;
      firstStale ??= { flag, payload: Array.from(words) };
    }
    if (other) otherReads++;
    if (flag < lastFlag) flagRegressions++;
    lastFlag = flag;
    publish(ackCell, flag - 1);
    if (flag === iterations) break;
  }
  parentPort.postMessage({
    role,
    milliseconds: performance.now() - started,
    reads,
    staleReads,
    otherReads,
    flagRegressions,
    firstStale,
  });
}
