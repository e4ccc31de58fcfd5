/**
 * The device side of the virtio demo.
 *
 * It pops requests from the available ring, reads each request's two-descriptor chain and
 * request payload (READ), checks the payload's checksum and sequence number, writes a
 * response payload and a used element (WRITE), publishes the used index, and interrupts the
 * driver when `vring_need_event(used_event, ...)` says so. When it runs out of work it
 * publishes `avail_event` and re-checks the available index before sleeping: both of those
 * "publish my index, then read the other side's" steps need a full barrier.
 *
 * Environment-neutral: no Node built-in. The loop is a generator that yields where it would
 * sleep, so that a worker (Node's device.mjs, the browser's device-worker.mjs) blocks on the
 * doorbell there with `runDevice`, and a single thread can interleave it with the driver
 * (single-thread.mjs).
 */
import { DMAAttributes, DMAContext, GuestMemory } from 'dma-attrs';
import {
  DMADirection,
  dmaBarrier,
  dmaMemoryMap,
  dmaMemoryRead,
  dmaMemoryWrite,
} from 'dma-attrs/legacy';
import {
  AVAIL_DECIDED,
  AVAIL_ENTRIES,
  AVAIL_EVENT,
  AVAIL_IDX,
  AVAIL_RING,
  BUFFERS,
  DESC_SIZE,
  DESC_TABLE,
  DONE,
  DROP_INTERRUPTS,
  IRQ,
  KICK,
  PAYLOAD_SIZE,
  QUEUE_SIZE,
  REQUEST_SLOTS,
  RESPONSE_SALT,
  USED_DECIDED,
  USED_ENTRIES,
  USED_EVENT,
  USED_IDX,
  USED_RING,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  drive,
  fillPayload,
  hasFullBarrier,
  needEvent,
  verifyPayload,
  waitForGo,
} from './protocol.mjs';

/**
 * The device's loop, from `GO` until the driver sets `DONE`.
 *
 * @param {object} options
 * @param {GuestMemory} [options.memory] the guest memory (or give `handle`).
 * @param {object} [options.handle] `memory.handle()`, for a memory made in another thread.
 * @param {SharedArrayBuffer | ArrayBuffer} options.doorbell the doorbell words.
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed'} options.variant
 * @param {number} [options.spinLimit] doorbell polls before each sleep (default 2000).
 * @param {(counts: object) => void} [options.report] given the counts so far, every `reportMs`.
 * @param {number} [options.reportMs] default 100.
 * @returns {Generator<number, object>} yields the kick count it last saw when it has nothing
 *   to do until a kick; returns the counts.
 */
export function* deviceLoop(options) {
  const { doorbell, variant, spinLimit = 2000, report } = options;
  const { reportMs = 100 } = options;
  const memory = options.memory ?? GuestMemory.fromHandle(options.handle);
  const ctx = new DMAContext(memory);
  const door = new Int32Array(doorbell);
  const { READ, WRITE, RELAXED } = DMAAttributes;
  const legacy = variant === 'legacy';
  const relaxed = variant === 'relaxed';
  const full = hasFullBarrier(variant);
  /** Attributes of the ring-index and event-index accesses. */
  const readIndex = relaxed ? READ | RELAXED : READ;

  // The 2012 device model accessed the rings with plain CPU loads and stores (QEMU's
  // lduw_phys/stw_phys) and put a full barrier before each; here: a mapped view of each ring
  // (dmaMemoryMap issues no barrier) and dmaBarrier() before every access through it.
  //
  // The other variants publish their indices (used.idx, avail_event) through a RELAXED mapped
  // view too, after the barrier the WRITE attribute implies: `ctx.barrier('release')` (none in
  // `relaxed`), then a plain aligned Uint16Array store. That is exactly what WRITE promises,
  // release and no more. `ctx.writeU16LE(addr, v, WRITE)` would be an `Atomics.store`, which V8
  // compiles to `xchg` on x64: a full fence, stronger than WRITE promises, that happens to close
  // the store→load race this demo is about, so `attrs-no-full` would show nothing on x64 while
  // staying wrong by contract. A RELAXED `writeU16LE` is a DataView store, which unoptimized V8
  // code may perform byte by byte: an index could tear, so the demo uses a Uint16Array element
  // store, one aligned 16-bit store, instead (host byte order: little-endian, as the driver
  // assumes too).
  // The release barrier emits nothing under `tso` (the default `auto` on x64) and a `lock xadd`
  // under `strict`; either way it comes before the store, so it cannot keep the store from
  // waiting in the store buffer while the load that follows it reads the other side's event
  // index. Only `barrier('full')` between the two does (measured: docs/memory-model.md).
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
    // Mapped once for the whole run: a RELAXED map issues no barrier.
    const used = ctx.map(USED_RING, AVAIL_EVENT + 2 - USED_RING, WRITE | RELAXED);
    usedWords = new Uint16Array(used.buffer, used.byteOffset, used.length >> 1);
  }

  function readAvailIdx() {
    if (legacy) {
      dmaBarrier(ctx, DMADirection.TO_DEVICE);
      return availWords[(AVAIL_IDX - AVAIL_RING) >> 1];
    }
    return ctx.readU16LE(AVAIL_IDX, readIndex);
  }

  function readUsedEvent() {
    if (legacy) {
      dmaBarrier(ctx, DMADirection.TO_DEVICE);
      return availWords[(USED_EVENT - AVAIL_RING) >> 1];
    }
    return ctx.readU16LE(USED_EVENT, readIndex);
  }

  function readAvailEntry(index) {
    if (legacy) {
      dmaBarrier(ctx, DMADirection.TO_DEVICE);
      return availWords[(AVAIL_ENTRIES - AVAIL_RING + 2 * index) >> 1];
    }
    return ctx.readU16LE(AVAIL_ENTRIES + 2 * index, readIndex);
  }

  /** Publishes an index in the used-ring area: a plain store after the variant's barrier. */
  function publishIndex(addr, value) {
    if (legacy) dmaBarrier(ctx, DMADirection.FROM_DEVICE);
    else if (!relaxed) ctx.barrier('release'); // what WRITE implies; see the view's comment
    usedWords[(addr - USED_RING) >> 1] = value;
  }

  function writeUsedIdx(value) {
    publishIndex(USED_IDX, value);
  }

  function writeAvailEvent(value) {
    publishIndex(AVAIL_EVENT, value);
  }

  /** virtio_mb(): between publishing an index and reading the other side's event index. */
  function fullBarrier() {
    if (legacy) dmaBarrier(ctx, DMADirection.FROM_DEVICE);
    else if (full) ctx.barrier('full');
  }

  // Buffers reused for every request: no allocation per packet.
  const desc = new Uint8Array(DESC_SIZE);
  const descView = new DataView(desc.buffer);
  const payload = new Uint8Array(PAYLOAD_SIZE);
  const used = new Uint8Array(8);
  const usedView = new DataView(used.buffer);
  const descAttrs = relaxed ? READ | RELAXED : READ;
  // The payload read is ordered by the acquire after the descriptor read; the response and
  // used element are published by the release before the used-index store.
  const payloadReadAttrs = READ | RELAXED;
  const payloadWriteAttrs = WRITE | RELAXED;

  function readDesc(index) {
    const addr = DESC_TABLE + DESC_SIZE * index;
    if (legacy) dmaMemoryRead(ctx, addr, desc, DESC_SIZE);
    else ctx.read(addr, desc, descAttrs);
    return {
      addr: Number(descView.getBigUint64(0, true)),
      len: descView.getUint32(8, true),
      flags: descView.getUint16(12, true),
      next: descView.getUint16(14, true),
    };
  }

  function validBuffer(d, flags) {
    return (
      d.len === PAYLOAD_SIZE &&
      d.flags === flags &&
      d.addr >= BUFFERS &&
      d.addr + PAYLOAD_SIZE <= BUFFERS + REQUEST_SLOTS * 2 * PAYLOAD_SIZE
    );
  }

  let corrupted = 0;
  let expectedSeq = 0;

  /** Serves one request: returns the bytes written to its response buffer (0 when corrupted). */
  function serve(head) {
    if (head >= QUEUE_SIZE) {
      corrupted++;
      return 0;
    }
    const out = readDesc(head);
    if (!validBuffer(out, VRING_DESC_F_NEXT) || out.next >= QUEUE_SIZE) {
      corrupted++;
      return 0;
    }
    const inDesc = readDesc(out.next);
    if (!validBuffer(inDesc, VRING_DESC_F_WRITE)) {
      corrupted++;
      return 0;
    }
    if (legacy) dmaMemoryRead(ctx, out.addr, payload, PAYLOAD_SIZE);
    else ctx.read(out.addr, payload, payloadReadAttrs);
    const seq = verifyPayload(payload, 0);
    // Requests are published in sequence order: a stale or torn request fails one check or the other.
    if (seq < 0 || seq !== expectedSeq) corrupted++;
    expectedSeq = (seq < 0 ? expectedSeq : seq) + 1;
    fillPayload(payload, 0, seq < 0 ? 0xffffffff : seq, RESPONSE_SALT);
    if (legacy) dmaMemoryWrite(ctx, inDesc.addr, payload, PAYLOAD_SIZE);
    else ctx.write(inDesc.addr, payload, payloadWriteAttrs);
    return PAYLOAD_SIZE;
  }

  function writeUsedElem(slot, id, len) {
    usedView.setUint32(0, id, true);
    usedView.setUint32(4, len, true);
    const addr = USED_ENTRIES + 8 * slot;
    if (legacy) dmaMemoryWrite(ctx, addr, used, 8);
    else ctx.write(addr, used, payloadWriteAttrs);
  }

  let lastAvail = 0; // u16: the next avail ring index to serve
  let availTotal = 0; // requests served, as a plain count
  let usedIdx = 0; // u16
  let usedTotal = 0;
  let interrupts = 0;
  let droppedInterrupts = 0;
  let lostKicks = 0;
  let watchdogWakeups = 0;
  let firstLostAt;
  let kickSeen = Atomics.load(door, KICK);

  function counts() {
    return {
      role: 'device',
      served: availTotal,
      corrupted,
      interrupts,
      droppedInterrupts,
      lostKicks,
      watchdogWakeups,
      firstLostAt,
    };
  }

  // Progress is looked at every 128 rounds: the clock is not free.
  let nextReport = report === undefined ? 0 : performance.now() + reportMs;
  let rounds = 0;

  function interrupt() {
    if (Atomics.load(door, DROP_INTERRUPTS) > 0 && Atomics.sub(door, DROP_INTERRUPTS, 1) > 0) {
      droppedInterrupts++;
      return;
    }
    interrupts++;
    Atomics.add(door, IRQ, 1);
    Atomics.notify(door, IRQ);
  }

  for (;;) {
    if (report !== undefined && (++rounds & 127) === 0) {
      const now = performance.now();
      if (now >= nextReport) {
        nextReport = now + reportMs;
        report(counts());
      }
    }
    let avail = readAvailIdx();
    if (avail === lastAvail) {
      if (Atomics.load(door, DONE) !== 0) break;
      // Ask for a kick when the driver publishes entry `lastAvail`, then look again: the
      // driver may have published before it could see the new avail_event. Store, then load:
      // only a full barrier keeps the load from being satisfied before the store is visible.
      writeAvailEvent(lastAvail);
      fullBarrier();
      avail = readAvailIdx();
      if (avail === lastAvail) {
        // Spin on the doorbell a little before sleeping, as an adaptive futex does: a kick
        // then costs a cache-line transfer, not a wake-up. Only the doorbell is watched, never
        // the ring, so a kick that is never sent still stalls the device until the watchdog.
        for (let spin = 0; spin < spinLimit && Atomics.load(door, KICK) === kickSeen; spin++);
        yield kickSeen;
        const kickNow = Atomics.load(door, KICK);
        if (kickNow !== kickSeen) {
          kickSeen = kickNow;
          continue;
        }
        // The watchdog: no kick. Look again, ordered whatever the variant; if work is pending
        // that the driver has finished deciding about, the kick for it was lost.
        watchdogWakeups++;
        const decided = Atomics.load(door, AVAIL_DECIDED);
        if (Atomics.load(door, KICK) !== kickSeen) continue;
        memory.barrier('full');
        avail = ctx.readU16LE(AVAIL_IDX);
        const pending = (avail - lastAvail) & 0xffff;
        if (pending !== 0 && decided - (availTotal + pending) >= 0) {
          lostKicks++;
          firstLostAt ??= availTotal;
        }
        continue;
      }
    }
    let pending = (avail - lastAvail) & 0xffff;
    if (pending > QUEUE_SIZE) {
      // A torn or stale index: not something a ring can hold. Count it and read again.
      corrupted++;
      continue;
    }
    const oldUsed = usedIdx;
    for (; pending > 0; pending--) {
      const head = readAvailEntry(lastAvail & (QUEUE_SIZE - 1));
      const len = serve(head);
      writeUsedElem(usedIdx & (QUEUE_SIZE - 1), head, len);
      lastAvail = (lastAvail + 1) & 0xffff;
      availTotal++;
      usedIdx = (usedIdx + 1) & 0xffff;
      usedTotal++;
    }
    // WRITE: the release before the store publishes the used elements and responses first.
    writeUsedIdx(usedIdx);
    // Publish, then read the driver's used_event: the store→load pair that needs `full`.
    fullBarrier();
    if (needEvent(readUsedEvent(), usedIdx, oldUsed)) interrupt();
    Atomics.store(door, USED_DECIDED, usedTotal);
  }
  return counts();
}

/**
 * The device in a worker (Node or browser): waits for `GO`, runs `deviceLoop`, sleeping on the
 * kick word for `watchdogMs` at most whenever it has nothing to do.
 *
 * @param {object} options those of `deviceLoop`, and `watchdogMs` (default 2).
 * @returns {object} the device's counts.
 */
export function runDevice(options) {
  const door = new Int32Array(options.doorbell);
  const loop = deviceLoop(options);
  waitForGo(door);
  return drive(loop, door, KICK, options.watchdogMs ?? 2);
}
