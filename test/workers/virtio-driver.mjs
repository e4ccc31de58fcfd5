/**
 * The driver side of a split virtqueue, for test/virtio-workers.test.ts, written from the
 * virtio 1.2 specification (§2.7) and not from the library's device code: this file imports
 * no part of `dma-attrs/virtio`.
 *
 * It owns the descriptor table and the available ring, as a guest's driver does:
 *
 * - a request is 3 to 600 bytes split over 2 or 3 readable buffers, its response buffer 1 or
 *   2 writable buffers with a few bytes of slack; in `indirect` mode they are described by a
 *   VIRTQ_DESC_F_INDIRECT table, one table per request slot; descriptors (and the heads the
 *   device returns) come from a free list, so heads and `next` links vary;
 * - descriptors, buffers and the ring entry are written RELAXED, then `avail.idx` with release
 *   (`ctx.writeU16LE` without RELAXED); then `memory.barrier('full')` (virtio_mb) before
 *   reading whether the device wants a kick: `vring_need_event(avail_event, new, old)` with
 *   EVENT_IDX, else `!(used.flags & VIRTQ_USED_F_NO_NOTIFY)`; a kick is `Atomics.add` and
 *   `Atomics.notify` on the doorbell word KICK;
 * - `used.idx` is read with acquire, used elements and response bytes RELAXED after it; every
 *   response is checked: the id is a head in flight, the length is request + 4, each byte is
 *   the request byte + 1, the last 4 bytes the FNV-1a of the request, the slack untouched;
 * - before sleeping it asks for an interrupt (`used_event = last_used` with EVENT_IDX, else
 *   clearing VIRTQ_AVAIL_F_NO_INTERRUPT), `memory.barrier('full')`, and re-checks `used.idx`;
 *   while busy it sets NO_INTERRUPT (without EVENT_IDX) or leaves `used_event` behind;
 * - every wait is an `Atomics.wait` on the interrupt word IRQ with a timeout. The watchdog: a
 *   wait that ends by timeout while `used.idx` shows entries it has not seen, and no interrupt
 *   arrives in a further grace period, is a lost notification (counted, then recovered from).
 *
 * For the test of the watchdogs themselves, `dropKickEvery: n` skips every n-th kick the
 * device asked for.
 *
 * It stops the device (STOP, then a kick) when every request has completed, and posts
 * `{ type: 'done', stats }`, or `{ type: 'error', message, stats }` on a stall or a
 * protocol error.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, GuestMemory } from '../../dist/index.js';

const { READ, WRITE, RELAXED } = DMAAttributes;
const R = READ | RELAXED;
const W = WRITE | RELAXED;

// virtio 1.2 §2.7.5, §2.7.6, §2.7.8 values, written out here on purpose.
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const AVAIL_F_NO_INTERRUPT = 1;
const USED_F_NO_NOTIFY = 1;

// Words of the doorbell SharedArrayBuffer (the same in virtio-device.mjs and the test).
const KICK = 0;
const IRQ = 1;
const STOP = 2;

const {
  memory: memoryHandle,
  doorbell,
  size,
  desc: DESC,
  avail: AVAIL,
  used: USED,
  slots: SLOTS,
  tables: TABLES,
  eventIdx,
  indirect,
  total,
  inflight,
  seed,
  waitMs,
  graceMs,
  stallMs,
  dropKickEvery = 0,
} = workerData;

const memory = GuestMemory.fromHandle(memoryHandle);
const ctx = new DMAContext(memory);
const words = new Int32Array(doorbell);

const SLOT_BYTES = 8192;
const READ_PIECE = [0, 1024, 2048];
const WRITE_PIECE = [4096, 5120];
const MAX_REQUEST = 600;
const SLACK = 8;
const CANARY = 0xa5;

const USED_EVENT = AVAIL + 4 + 2 * size;
const AVAIL_EVENT = USED + 4 + 8 * size;

const stats = {
  completed: 0,
  corrupted: 0,
  kicks: 0,
  kicksSuppressed: 0,
  sleeps: 0,
  interrupts: 0,
  timeouts: 0,
  lostInterrupts: 0,
  lateInterrupts: 0,
  descriptors: 0,
  readablePieces: [0, 0, 0, 0],
  writablePieces: [0, 0, 0],
  maxInFlight: 0,
  firstError: '',
  kicksNeeded: 0,
  kicksDropped: 0,
};

// xorshift32, seeded: the request contents and their splits.
let rng = seed >>> 0 || 1;
function random() {
  rng ^= rng << 13;
  rng >>>= 0;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  rng >>>= 0;
  return rng;
}
function randomInt(lo, hi) {
  return lo + (random() % (hi - lo + 1));
}

function fnv1a(bytes, length) {
  let h = 0x811c9dc5;
  for (let i = 0; i < length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function corrupt(message) {
  stats.corrupted++;
  if (stats.firstError === '') stats.firstError = message;
}

// Descriptor free list (the main table), and the per-slot bookkeeping.
const freeDesc = [];
for (let i = size - 1; i >= 0; i--) freeDesc.push(i);
const freeSlots = [];
for (let i = inflight - 1; i >= 0; i--) freeSlots.push(i);
/** head -> slot + 1 (0: not in flight). */
const headSlot = new Int32Array(size);
const slotState = [];
for (let i = 0; i < inflight; i++) {
  slotState.push({
    head: -1,
    seq: 0,
    request: new Uint8Array(MAX_REQUEST),
    length: 0,
    descs: [],
    write: [], // [{ addr, length }]
    writable: 0,
  });
}
const response = new Uint8Array(MAX_REQUEST + 4 + SLACK);
const canary = new Uint8Array(MAX_REQUEST + 4 + SLACK).fill(CANARY);

function writeDescriptor(at, addr, length, flags, next) {
  ctx.writeU64LE(at, BigInt(addr), W);
  ctx.writeU32LE(at + 8, length, W);
  ctx.writeU16LE(at + 12, flags, W);
  ctx.writeU16LE(at + 14, next, W);
}

let availIdx = 0; // the driver's shadow of avail.idx
let lastUsed = 0;
let inFlight = 0;
let submitted = 0;

/** Builds one request in a free slot; returns its head (the ring entry is written by the caller). */
function prepare(slotIndex) {
  const slot = slotState[slotIndex];
  const base = SLOTS + slotIndex * SLOT_BYTES;
  const seq = submitted;
  const length = randomInt(3, MAX_REQUEST);
  const request = slot.request;
  request[0] = seq & 0xff;
  request[1] = (seq >>> 8) & 0xff;
  request[2] = (seq >>> 16) & 0xff;
  for (let i = 3; i < length; i++) request[i] = random() & 0xff;

  // The readable pieces: 2 or 3 (fewer only when the request is too short to split).
  const readCount = Math.min(randomInt(2, 3), length);
  const cuts = [0];
  for (let p = 1; p < readCount; p++) {
    const prev = cuts[p - 1];
    const left = length - prev - (readCount - p);
    cuts.push(prev + randomInt(1, left));
  }
  cuts.push(length);
  const pieces = [];
  for (let p = 0; p < readCount; p++) {
    const addr = base + READ_PIECE[p];
    const len = cuts[p + 1] - cuts[p];
    ctx.write(addr, request.subarray(cuts[p], cuts[p + 1]), W);
    pieces.push({ addr, length: len, flags: 0 });
  }
  // The writable pieces: 1 or 2, covering response + 4 + slack, pre-filled with the canary.
  const writable = length + 4 + randomInt(0, SLACK);
  const writeCount = randomInt(1, 2);
  const first = writeCount === 1 ? writable : randomInt(1, writable - 1);
  slot.write = [];
  const wlens = writeCount === 1 ? [writable] : [first, writable - first];
  for (let p = 0; p < writeCount; p++) {
    const addr = base + WRITE_PIECE[p];
    ctx.write(addr, canary.subarray(0, wlens[p]), W);
    pieces.push({ addr, length: wlens[p], flags: F_WRITE });
    slot.write.push({ addr, length: wlens[p] });
  }
  stats.readablePieces[readCount]++;
  stats.writablePieces[writeCount]++;

  slot.seq = seq;
  slot.length = length;
  slot.writable = writable;
  slot.descs.length = 0;

  let head;
  if (indirect) {
    // One main descriptor pointing at this slot's table; the table's entries chain by index.
    const table = TABLES + slotIndex * 128;
    for (let p = 0; p < pieces.length; p++) {
      const last = p === pieces.length - 1;
      const piece = pieces[p];
      writeDescriptor(
        table + 16 * p,
        piece.addr,
        piece.length,
        piece.flags | (last ? 0 : F_NEXT),
        last ? 0 : p + 1,
      );
    }
    head = freeDesc.pop();
    slot.descs.push(head);
    writeDescriptor(DESC + 16 * head, table, 16 * pieces.length, F_INDIRECT, 0);
  } else {
    const ids = [];
    for (let p = 0; p < pieces.length; p++) ids.push(freeDesc.pop());
    for (let p = 0; p < pieces.length; p++) {
      const last = p === pieces.length - 1;
      const piece = pieces[p];
      writeDescriptor(
        DESC + 16 * ids[p],
        piece.addr,
        piece.length,
        piece.flags | (last ? 0 : F_NEXT),
        last ? 0 : ids[p + 1],
      );
      slot.descs.push(ids[p]);
    }
    head = ids[0];
  }
  stats.descriptors += slot.descs.length;
  slot.head = head;
  headSlot[head] = slotIndex + 1;
  return head;
}

function needEvent(event, next, old) {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

/** Fills every free slot, publishes avail.idx once, and kicks if the device asks for it. */
function submit() {
  if (submitted >= total || freeSlots.length === 0) return;
  const old = availIdx;
  while (submitted < total && freeSlots.length > 0) {
    const slotIndex = freeSlots.pop();
    const head = prepare(slotIndex);
    ctx.writeU16LE(AVAIL + 4 + 2 * (availIdx % size), head, W);
    availIdx = (availIdx + 1) & 0xffff;
    submitted++;
    inFlight++;
  }
  if (inFlight > stats.maxInFlight) stats.maxInFlight = inFlight;
  ctx.writeU16LE(AVAIL + 2, availIdx); // release: the descriptors and the entries before it
  memory.barrier('full'); // virtio_mb: the idx store before the avail_event / flags load
  const kick = eventIdx
    ? needEvent(ctx.readU16LE(AVAIL_EVENT, R), availIdx, old)
    : (ctx.readU16LE(USED, R) & USED_F_NO_NOTIFY) === 0;
  if (kick && dropKickEvery > 0 && ++stats.kicksNeeded % dropKickEvery === 0) {
    stats.kicksDropped++; // the watchdog test's sabotage: a kick the driver owed, not sent
  } else if (kick) {
    stats.kicks++;
    Atomics.add(words, KICK, 1);
    Atomics.notify(words, KICK);
  } else {
    stats.kicksSuppressed++;
  }
}

/** Completes every used entry the device has published; returns how many. */
function harvest() {
  const usedIdx = ctx.readU16LE(USED + 2); // acquire: the elements and responses after it
  let n = 0;
  while (lastUsed !== usedIdx) {
    const element = USED + 4 + 8 * (lastUsed % size);
    const id = ctx.readU32LE(element, R);
    const written = ctx.readU32LE(element + 4, R);
    lastUsed = (lastUsed + 1) & 0xffff;
    n++;
    const slotIndex = id < size ? headSlot[id] - 1 : -1;
    if (slotIndex < 0) {
      corrupt(`used element ${(lastUsed - 1) & 0xffff}: id ${id} is not a head in flight`);
      continue;
    }
    check(slotState[slotIndex], written);
    headSlot[id] = 0;
    const slot = slotState[slotIndex];
    for (let i = slot.descs.length - 1; i >= 0; i--) freeDesc.push(slot.descs[i]);
    freeSlots.push(slotIndex);
    inFlight--;
    stats.completed++;
  }
  return n;
}

function check(slot, written) {
  const { length, seq, request } = slot;
  if (written !== length + 4) {
    corrupt(`request ${seq}: used.len ${written}, expected ${length + 4}`);
    return;
  }
  let at = 0;
  for (const piece of slot.write) {
    ctx.read(piece.addr, response.subarray(at, at + piece.length), R);
    at += piece.length;
  }
  for (let i = 0; i < length; i++) {
    if (response[i] !== ((request[i] + 1) & 0xff)) {
      corrupt(
        `request ${seq}: response byte ${i} is ${response[i]}, expected ${(request[i] + 1) & 0xff}`,
      );
      return;
    }
  }
  const sum =
    (response[length] |
      (response[length + 1] << 8) |
      (response[length + 2] << 16) |
      (response[length + 3] << 24)) >>>
    0;
  if (sum !== fnv1a(request, length)) {
    corrupt(`request ${seq}: checksum ${sum}, expected ${fnv1a(request, length)}`);
    return;
  }
  for (let i = length + 4; i < slot.writable; i++) {
    if (response[i] !== CANARY) {
      corrupt(`request ${seq}: byte ${i} of the slack was written`);
      return;
    }
  }
}

function setInterrupts(on) {
  if (eventIdx) {
    if (on) ctx.writeU16LE(USED_EVENT, lastUsed, W);
  } else {
    ctx.writeU16LE(AVAIL, on ? 0 : AVAIL_F_NO_INTERRUPT, W);
  }
}

function run() {
  setInterrupts(false);
  const start = performance.now();
  let lastProgress = start;
  while (stats.completed < total) {
    submit();
    if (harvest() > 0) {
      lastProgress = performance.now();
      continue;
    }
    if (performance.now() - lastProgress > stallMs) {
      throw new Error(
        `stalled: no used entry for ${stallMs} ms with ${inFlight} in flight after ${stats.completed} completions`,
      );
    }
    // Nothing used: ask for an interrupt, then re-check before sleeping (the race the
    // full barrier closes: an entry published between the check and the flag).
    const irq = Atomics.load(words, IRQ);
    setInterrupts(true);
    memory.barrier('full');
    if (ctx.readU16LE(USED + 2) !== lastUsed) {
      setInterrupts(false);
      continue;
    }
    stats.sleeps++;
    const woke = Atomics.wait(words, IRQ, irq, waitMs);
    if (woke === 'timed-out') {
      stats.timeouts++;
      if (ctx.readU16LE(USED + 2) !== lastUsed) {
        // The device published entries and has not interrupted: give a late interrupt (a
        // descheduled device thread) a grace period before counting it lost.
        const late = Atomics.wait(words, IRQ, irq, graceMs);
        if (late === 'timed-out' && Atomics.load(words, IRQ) === irq) stats.lostInterrupts++;
        else stats.lateInterrupts++;
      }
    } else {
      stats.interrupts++;
    }
    setInterrupts(false);
  }
  stats.elapsedMs = performance.now() - start;
}

try {
  run();
  Atomics.store(words, STOP, 1);
  Atomics.add(words, KICK, 1);
  Atomics.notify(words, KICK);
  parentPort.postMessage({ type: 'done', stats });
} catch (error) {
  Atomics.store(words, STOP, 1);
  Atomics.add(words, KICK, 1);
  Atomics.notify(words, KICK);
  parentPort.postMessage({ type: 'error', message: String(error?.stack ?? error), stats });
}
