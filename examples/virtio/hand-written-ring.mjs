/**
 * The device's side of the ring for the `legacy` and `relaxed` variants: the demo's own
 * virtqueue code, written before `SplitVirtqueue` existed, on a `DMAContext`.
 *
 * - `legacy` is the 2012 device model (`dma-attrs/legacy`): the rings accessed with plain CPU
 *   loads and stores (QEMU's lduw_phys/stw_phys) through a mapped view, a full barrier
 *   (`dmaBarrier`) before each, `dmaMemoryRead`/`dmaMemoryWrite` for descriptors and payloads.
 * - `relaxed` is the attributes API with every access RELAXED and no barrier at all.
 *
 * Both publish their indices (used.idx, avail_event) with a plain aligned 16-bit store on a
 * mapped view, after the barrier their variant implies (legacy's, or none): never with an
 * `Atomics.store`, which V8 compiles to `xchg` on x64, a full fence that would hide the
 * store→load reordering this demo is about. Environment-neutral: no Node built-in.
 *
 * A ring of the demo (see device-loop.mjs for the loop that drives it) has `serve()`,
 * `needsInterrupt()`, `enableKicks()`, `disableKicks()` and the counts `availTotal`,
 * `usedTotal`, `corrupted`, `nextAvail` and `broken`.
 */
import { DMAAttributes, DMAContext } from 'dma-attrs';
import {
  DMADirection,
  dmaBarrier,
  dmaMemoryMap,
  dmaMemoryRead,
  dmaMemoryWrite,
} from 'dma-attrs/legacy';
import {
  AVAIL_ENTRIES,
  AVAIL_EVENT,
  AVAIL_IDX,
  AVAIL_RING,
  BUFFERS,
  DESC_SIZE,
  DESC_TABLE,
  MEMORY_SIZE,
  PAYLOAD_SIZE,
  QUEUE_SIZE,
  USED_ENTRIES,
  USED_EVENT,
  USED_IDX,
  USED_RING,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  needEvent,
  respond,
} from './protocol.mjs';

/**
 * The hand-written device ring on `memory`.
 *
 * @param {import('dma-attrs').GuestMemory} memory the guest memory.
 * @param {'legacy' | 'relaxed'} variant
 * @returns {object} the ring (see the module's comment).
 */
export function handWrittenRing(memory, variant) {
  if (variant !== 'legacy' && variant !== 'relaxed') {
    throw new TypeError(
      `handWrittenRing: variant ${JSON.stringify(variant)} is not legacy or relaxed`,
    );
  }
  const ctx = new DMAContext(memory);
  const { READ, WRITE, RELAXED } = DMAAttributes;
  const legacy = variant === 'legacy';
  const readAttrs = READ | RELAXED;
  const writeAttrs = WRITE | RELAXED;

  let availWords;
  let usedWords;
  if (legacy) {
    const avail = dmaMemoryMap(
      ctx,
      AVAIL_RING,
      USED_EVENT + 2 - AVAIL_RING,
      DMADirection.TO_DEVICE,
    );
    const used = dmaMemoryMap(
      ctx,
      USED_RING,
      AVAIL_EVENT + 2 - USED_RING,
      DMADirection.FROM_DEVICE,
    );
    availWords = new Uint16Array(avail.buffer, avail.byteOffset, avail.length >> 1);
    usedWords = new Uint16Array(used.buffer, used.byteOffset, used.length >> 1);
  } else {
    // Mapped once for the whole run: a RELAXED map issues no barrier. A RELAXED `writeU16LE`
    // is a DataView store, which unoptimised V8 code may perform byte by byte: an index could
    // tear, so the indices go through this view's aligned element stores instead (host byte
    // order: little-endian, as the driver assumes too).
    const used = ctx.map(USED_RING, AVAIL_EVENT + 2 - USED_RING, WRITE | RELAXED);
    usedWords = new Uint16Array(used.buffer, used.byteOffset, used.length >> 1);
  }

  function readAvail(addr) {
    if (!legacy) return ctx.readU16LE(addr, readAttrs);
    dmaBarrier(ctx, DMADirection.TO_DEVICE);
    return availWords[(addr - AVAIL_RING) >> 1];
  }

  function publishIndex(addr, value) {
    if (legacy) dmaBarrier(ctx, DMADirection.FROM_DEVICE);
    usedWords[(addr - USED_RING) >> 1] = value;
  }

  /** virtio_mb(): between publishing an index and reading the other side's event index. */
  function fullBarrier() {
    if (legacy) dmaBarrier(ctx, DMADirection.FROM_DEVICE);
  }

  // Buffers reused for every request: no allocation per packet.
  const desc = new Uint8Array(DESC_SIZE);
  const descView = new DataView(desc.buffer);
  const payload = new Uint8Array(PAYLOAD_SIZE);
  const usedElem = new Uint8Array(8);
  const usedView = new DataView(usedElem.buffer);
  let descAddr = 0;
  let descLen = 0;
  let descFlags = 0;
  let descNext = 0;

  function readDesc(index) {
    const addr = DESC_TABLE + DESC_SIZE * index;
    if (legacy) dmaMemoryRead(ctx, addr, desc, DESC_SIZE);
    else ctx.read(addr, desc, readAttrs);
    descAddr = descView.getUint32(4, true) === 0 ? descView.getUint32(0, true) : -1;
    descLen = descView.getUint32(8, true);
    descFlags = descView.getUint16(12, true);
    descNext = descView.getUint16(14, true);
  }

  /** Whether the descriptor just read is a payload buffer of the demo, with these flags. */
  function validBuffer(flags) {
    return (
      descLen === PAYLOAD_SIZE &&
      descFlags === flags &&
      descAddr >= BUFFERS &&
      descAddr + PAYLOAD_SIZE <= MEMORY_SIZE
    );
  }

  const ring = {
    name: 'hand-written',
    availTotal: 0,
    usedTotal: 0,
    corrupted: 0,
    broken: false,
    nextAvail: 0, // u16: the next avail ring index to serve
    serve,
    needsInterrupt,
    enableKicks,
    disableKicks() {},
  };
  let expectedSeq = 0;
  let usedIdx = 0; // u16
  let signalledUsed = 0; // u16: used.idx at the last interrupt decision

  /** Serves one request: returns the bytes written to its response buffer (0 when corrupted). */
  function serveChain(head) {
    if (head >= QUEUE_SIZE) return 0;
    readDesc(head);
    if (!validBuffer(VRING_DESC_F_NEXT) || descNext >= QUEUE_SIZE) return 0;
    const requestAddr = descAddr;
    readDesc(descNext);
    if (!validBuffer(VRING_DESC_F_WRITE)) return 0;
    if (legacy) dmaMemoryRead(ctx, requestAddr, payload, PAYLOAD_SIZE);
    else ctx.read(requestAddr, payload, readAttrs);
    const seq = respond(payload);
    // Requests are published in sequence order: a stale or torn request fails one check or
    // the other.
    if (seq < 0 || seq !== expectedSeq) ring.corrupted++;
    expectedSeq = (seq < 0 ? expectedSeq : seq) + 1;
    if (legacy) dmaMemoryWrite(ctx, descAddr, payload, PAYLOAD_SIZE);
    else ctx.write(descAddr, payload, writeAttrs);
    return PAYLOAD_SIZE;
  }

  function serve() {
    const avail = readAvail(AVAIL_IDX);
    let pending = (avail - ring.nextAvail) & 0xffff;
    if (pending > QUEUE_SIZE) {
      // A torn or stale index: not something a ring can hold. Count it; the loop reads again.
      ring.corrupted++;
      return 0;
    }
    const count = pending;
    for (; pending > 0; pending--) {
      const head = readAvail(AVAIL_ENTRIES + 2 * (ring.nextAvail & (QUEUE_SIZE - 1)));
      const len = serveChain(head);
      if (len === 0) ring.corrupted++;
      usedView.setUint32(0, head, true);
      usedView.setUint32(4, len, true);
      const addr = USED_ENTRIES + 8 * (usedIdx & (QUEUE_SIZE - 1));
      if (legacy) dmaMemoryWrite(ctx, addr, usedElem, 8);
      else ctx.write(addr, usedElem, writeAttrs);
      ring.nextAvail = (ring.nextAvail + 1) & 0xffff;
      usedIdx = (usedIdx + 1) & 0xffff;
    }
    if (count > 0) publishIndex(USED_IDX, usedIdx);
    ring.availTotal += count;
    ring.usedTotal += count;
    return count;
  }

  function needsInterrupt() {
    // Published used.idx, now read used_event: the store→load pair that needs `full`.
    fullBarrier();
    const notify = needEvent(readAvail(USED_EVENT), usedIdx, signalledUsed);
    signalledUsed = usedIdx;
    return notify;
  }

  function enableKicks() {
    // Ask for a kick at entry `nextAvail`, then look again: the driver may have published
    // before it could see the new avail_event. Store, then load: only a full barrier keeps
    // the load from being satisfied before the store is visible.
    publishIndex(AVAIL_EVENT, ring.nextAvail);
    fullBarrier();
    return readAvail(AVAIL_IDX) !== ring.nextAvail;
  }

  return ring;
}
