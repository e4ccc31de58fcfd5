/**
 * The device's side of the ring for the `raw` variant: the same device as the others, written
 * the way an emulator author writes it without dma-attrs, on plain typed-array views of the
 * guest memory's buffer and `Atomics`, with the orderings virtio needs and no more:
 *
 * - `avail.idx` is an `Atomics.load` (acquire): the ring entries, descriptors and request
 *   payloads the driver wrote before publishing it are then read with plain loads;
 * - the used elements and responses are plain stores, then `used.idx` is an `Atomics.store`
 *   (release: the driver that sees the index sees them);
 * - that `Atomics.store` is also the full fence between publishing an index and reading the
 *   other side's event index (`used_event` after `used.idx`, `avail.idx` after `avail_event`):
 *   `Atomics` operations are sequentially consistent, so a store and a later `Atomics.load`
 *   of another word are never reordered (V8 emits `xchg` on x64, `stlr` then `ldar` on
 *   arm64). No separate fence is needed, and none is issued.
 *
 * It checks what the others check (descriptor lengths, flags and addresses, checksums,
 * sequence numbers) and copies the request out of guest memory before looking at it, as a
 * device must (the guest can change it underneath). Environment-neutral: no Node built-in.
 * The ring's interface is handWrittenRing's (see hand-written-ring.mjs).
 */
import {
  AVAIL_ENTRIES,
  AVAIL_EVENT,
  AVAIL_IDX,
  BUFFERS,
  DESC_SIZE,
  DESC_TABLE,
  MEMORY_SIZE,
  PAYLOAD_SIZE,
  QUEUE_SIZE,
  USED_ENTRIES,
  USED_EVENT,
  USED_IDX,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  needEvent,
  respond,
} from './protocol.mjs';

const MASK = QUEUE_SIZE - 1;

/**
 * The raw device ring on `memory`.
 *
 * @param {import('dma-attrs').GuestMemory} memory the guest memory (one region from 0).
 * @returns {object} the ring (see hand-written-ring.mjs for its interface).
 */
export function rawRing(memory) {
  const base = memory.offsetOf(0, MEMORY_SIZE);
  if (base < 0 || base % 4 !== 0) {
    throw new RangeError(`rawRing: the guest memory must hold ${MEMORY_SIZE} bytes from 0`);
  }
  const bytes = new Uint8Array(memory.buffer, base, MEMORY_SIZE);
  const u16 = new Uint16Array(memory.buffer, base, MEMORY_SIZE >> 1);
  const u32 = new Uint32Array(memory.buffer, base, MEMORY_SIZE >> 2);
  const payload = new Uint8Array(PAYLOAD_SIZE);

  const ring = {
    name: 'raw',
    availTotal: 0,
    usedTotal: 0,
    corrupted: 0,
    broken: false,
    nextAvail: 0, // u16
    serve,
    needsInterrupt,
    enableKicks,
    disableKicks() {},
  };
  let expectedSeq = 0;
  let usedIdx = 0; // u16
  let signalledUsed = 0; // u16

  /** The address of a valid payload buffer in descriptor `index` with `flags`, or -1. */
  function buffer(index, flags) {
    const word = (DESC_TABLE + DESC_SIZE * index) >> 2;
    const addr = u32[word];
    if (u32[word + 1] !== 0 || u32[word + 2] !== PAYLOAD_SIZE) return -1;
    if (u16[(word + 3) * 2] !== flags) return -1;
    return addr >= BUFFERS && addr + PAYLOAD_SIZE <= MEMORY_SIZE ? addr : -1;
  }

  /** Serves one request: returns the bytes written to its response buffer (0 when corrupted). */
  function serveChain(head) {
    if (head >= QUEUE_SIZE) return 0;
    const request = buffer(head, VRING_DESC_F_NEXT);
    // `next`, the u16 after `flags` in the descriptor's last word.
    const next = u16[(((DESC_TABLE + DESC_SIZE * head) >> 2) + 3) * 2 + 1];
    if (request < 0 || next >= QUEUE_SIZE) return 0;
    const response = buffer(next, VRING_DESC_F_WRITE);
    if (response < 0) return 0;
    for (let index = 0; index < PAYLOAD_SIZE; index++) payload[index] = bytes[request + index];
    const seq = respond(payload);
    if (seq < 0 || seq !== expectedSeq) ring.corrupted++;
    expectedSeq = (seq < 0 ? expectedSeq : seq) + 1;
    bytes.set(payload, response);
    return PAYLOAD_SIZE;
  }

  function serve() {
    // Acquire: what the driver wrote before publishing the index.
    const avail = Atomics.load(u16, AVAIL_IDX >> 1);
    let pending = (avail - ring.nextAvail) & 0xffff;
    if (pending > QUEUE_SIZE) {
      ring.corrupted++;
      return 0;
    }
    const count = pending;
    for (; pending > 0; pending--) {
      const head = u16[(AVAIL_ENTRIES >> 1) + (ring.nextAvail & MASK)];
      const len = serveChain(head);
      if (len === 0) ring.corrupted++;
      const element = (USED_ENTRIES >> 2) + 2 * (usedIdx & MASK);
      u32[element] = head;
      u32[element + 1] = len;
      ring.nextAvail = (ring.nextAvail + 1) & 0xffff;
      usedIdx = (usedIdx + 1) & 0xffff;
    }
    // Release: the elements and responses before the index. Also the full fence before
    // needsInterrupt's load (see the module's comment).
    if (count > 0) Atomics.store(u16, USED_IDX >> 1, usedIdx);
    ring.availTotal += count;
    ring.usedTotal += count;
    return count;
  }

  function needsInterrupt() {
    const notify = needEvent(Atomics.load(u16, USED_EVENT >> 1), usedIdx, signalledUsed);
    signalledUsed = usedIdx;
    return notify;
  }

  function enableKicks() {
    // The Atomics.store orders itself before the Atomics.load that follows.
    Atomics.store(u16, AVAIL_EVENT >> 1, ring.nextAvail);
    return Atomics.load(u16, AVAIL_IDX >> 1) !== ring.nextAvail;
  }

  return ring;
}
