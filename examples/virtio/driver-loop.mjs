/**
 * The driver side of the virtio demo: the guest. It is vCPU code, not a device: it touches
 * guest memory the way an emulated CPU does, with plain loads and stores on typed-array views
 * of the memory's buffer (aligned element accesses do not tear), and orders them with
 * `memory.barrier()`, which fences on the same word as the device's barriers: `virtio_wmb()`
 * is `release`, `virtio_rmb()` `acquire`, `virtio_mb()` `full`.
 *
 * Each request uses two descriptors: a request payload the device reads, and a response
 * buffer the device writes. The driver keeps up to `maxInFlight` requests in flight, kicks
 * the device when `vring_need_event(avail_event, ...)` says so, and sleeps on the interrupt
 * word when it can submit nothing more, after publishing `used_event` and looking at the used
 * index once more.
 *
 * Environment-neutral: no Node built-in. The loop is a generator that yields where it would
 * sleep, so that a worker (Node's driver.mjs, the browser's driver-worker.mjs) blocks on the
 * doorbell there with `runDriver`, and a single thread can interleave it with the device
 * (single-thread.mjs).
 */
import { GuestMemory } from 'dma-attrs';
import {
  AVAIL_DECIDED,
  AVAIL_ENTRIES,
  AVAIL_EVENT,
  AVAIL_IDX,
  BUFFERS,
  DESC_SIZE,
  DESC_TABLE,
  DONE,
  DROP_KICKS,
  IRQ,
  KICK,
  PAYLOAD_SIZE,
  QUEUE_SIZE,
  REQUEST_SALT,
  REQUEST_SLOTS,
  STOP,
  USED_DECIDED,
  USED_ENTRIES,
  USED_EVENT,
  USED_IDX,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  drive,
  fillPayload,
  hasFullBarrier,
  needEvent,
  verifyPayload,
  waitForGo,
} from './protocol.mjs';

const DRAIN_LIMIT_MS = 3000;

/**
 * The driver's loop, from `GO` until it has drained after `STOP`.
 *
 * @param {object} options
 * @param {GuestMemory} [options.memory] the guest memory (or give `handle`).
 * @param {object} [options.handle] `memory.handle()`, for a memory made in another thread.
 * @param {SharedArrayBuffer | ArrayBuffer} options.doorbell the doorbell words.
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed' | 'raw'} options.variant
 * @param {number} [options.maxInFlight] requests in flight at most (default 4).
 * @param {number} [options.batch] requests published at a time (default 1).
 * @param {number} [options.spinLimit] doorbell polls before each sleep (default 2000).
 * @param {number} [options.seconds] stop submitting after this long (default: when `STOP` is set).
 * @param {(counts: object) => void} [options.report] given the counts so far, every `reportMs`.
 * @param {number} [options.reportMs] default 100.
 * @returns {Generator<number, object>} yields the interrupt count it last saw when it has
 *   nothing to do until an interrupt; returns the counts.
 */
export function* driverLoop(options) {
  const { doorbell, variant, batch = 1, spinLimit = 2000, seconds, report } = options;
  const { reportMs = 100 } = options;
  const maxInFlight = Math.max(1, Math.min(REQUEST_SLOTS, options.maxInFlight ?? 4));
  const memory = options.memory ?? GuestMemory.fromHandle(options.handle);
  const door = new Int32Array(doorbell);
  const base = memory.offsetOf(0, memory.regions[0].size);
  const bytes = new Uint8Array(memory.buffer, base);
  const words16 = new Uint16Array(memory.buffer, base, bytes.length >> 1);
  const words32 = new Uint32Array(memory.buffer, base, bytes.length >> 2);
  const ordered = variant !== 'relaxed';
  const full = hasFullBarrier(variant);

  function wmb() {
    if (ordered) memory.barrier('release');
  }
  function rmb() {
    if (ordered) memory.barrier('acquire');
  }
  function mb() {
    if (full) memory.barrier('full');
  }

  function writeDesc(index, addr, len, flags, next) {
    const word = (DESC_TABLE + DESC_SIZE * index) >> 2;
    words32[word] = addr; // the buffers sit below 4 GiB: the high half of the u64 stays 0
    words32[word + 1] = 0;
    words32[word + 2] = len;
    words16[(word + 3) << 1] = flags;
    words16[((word + 3) << 1) + 1] = next;
  }

  const freeSlots = [];
  for (let slot = maxInFlight - 1; slot >= 0; slot--) freeSlots.push(slot);
  const slotSeq = new Float64Array(QUEUE_SIZE);
  let nextSeq = 0;
  let availIdx = 0; // u16
  let availTotal = 0;
  let lastUsed = 0; // u16
  let completed = 0;
  let corrupted = 0;
  let kicks = 0;
  let droppedKicks = 0;
  let lostInterrupts = 0;
  let watchdogWakeups = 0;
  let firstLostAt;
  let irqSeen = Atomics.load(door, IRQ);

  function counts() {
    return {
      role: 'driver',
      completed,
      corrupted,
      kicks,
      droppedKicks,
      lostInterrupts,
      watchdogWakeups,
      unfinished: maxInFlight - freeSlots.length,
      firstLostAt,
    };
  }

  function kick() {
    if (Atomics.load(door, DROP_KICKS) > 0 && Atomics.sub(door, DROP_KICKS, 1) > 0) {
      droppedKicks++;
      return;
    }
    kicks++;
    Atomics.add(door, KICK, 1);
    Atomics.notify(door, KICK);
  }

  /** Queues up to `count` requests and publishes them; returns how many. */
  function submit(count) {
    const oldAvail = availIdx;
    let queued = 0;
    for (; queued < count && freeSlots.length > 0; queued++) {
      const slot = freeSlots.pop();
      const head = 2 * slot;
      const request = BUFFERS + slot * 2 * PAYLOAD_SIZE;
      fillPayload(bytes, request, nextSeq, REQUEST_SALT);
      slotSeq[slot] = nextSeq;
      nextSeq = (nextSeq + 1) >>> 0;
      // Poison the response buffer, so that a response the device never wrote cannot pass.
      bytes.fill(0, request + PAYLOAD_SIZE, request + 2 * PAYLOAD_SIZE);
      writeDesc(head, request, PAYLOAD_SIZE, VRING_DESC_F_NEXT, head + 1);
      writeDesc(head + 1, request + PAYLOAD_SIZE, PAYLOAD_SIZE, VRING_DESC_F_WRITE, 0);
      words16[(AVAIL_ENTRIES >> 1) + (availIdx & (QUEUE_SIZE - 1))] = head;
      availIdx = (availIdx + 1) & 0xffff;
    }
    if (queued === 0) return 0;
    availTotal += queued;
    wmb(); // the descriptors, payloads and ring entries before the index that publishes them
    words16[AVAIL_IDX >> 1] = availIdx;
    mb(); // publish avail.idx, then read avail_event: store→load
    if (needEvent(words16[AVAIL_EVENT >> 1], availIdx, oldAvail)) kick();
    Atomics.store(door, AVAIL_DECIDED, availTotal);
    return queued;
  }

  /** Takes every completed request off the used ring and checks its response. */
  function reap() {
    const usedIdx = words16[USED_IDX >> 1];
    const count = (usedIdx - lastUsed) & 0xffff;
    if (count === 0) return 0;
    if (count > maxInFlight) {
      // More completions than requests in flight: a torn or stale index. Count, read again.
      corrupted++;
      return 0;
    }
    rmb(); // the used elements and responses after the index that published them
    for (let index = 0; index < count; index++) {
      const entry = (USED_ENTRIES >> 2) + 2 * ((lastUsed + index) & (QUEUE_SIZE - 1));
      const id = words32[entry];
      const len = words32[entry + 1];
      const slot = id >> 1;
      if ((id & 1) !== 0 || slot >= maxInFlight || freeSlots.includes(slot)) {
        corrupted++;
        continue;
      }
      const seq = verifyPayload(bytes, BUFFERS + slot * 2 * PAYLOAD_SIZE + PAYLOAD_SIZE);
      if (len !== PAYLOAD_SIZE || seq !== slotSeq[slot]) corrupted++;
      freeSlots.push(slot);
      completed++;
    }
    lastUsed = usedIdx;
    return count;
  }

  /** Before sleeping: false if the sleep is not needed after all. */
  function prepareToSleep() {
    // Ask for an interrupt at the next used entry, then look again: the device may have
    // published before it could see the new used_event. Store→load: needs virtio_mb().
    words16[USED_EVENT >> 1] = lastUsed;
    mb();
    if (words16[USED_IDX >> 1] !== lastUsed) return false;
    // Spin on the doorbell first, as the device does (see device-loop.mjs).
    for (let spin = 0; spin < spinLimit && Atomics.load(door, IRQ) === irqSeen; spin++);
    return true;
  }

  /** After sleeping: an interrupt, or the watchdog, which looks for a lost one. */
  function wokeUp() {
    const irqNow = Atomics.load(door, IRQ);
    if (irqNow !== irqSeen) {
      irqSeen = irqNow;
      return;
    }
    watchdogWakeups++;
    const decided = Atomics.load(door, USED_DECIDED);
    if (Atomics.load(door, IRQ) !== irqSeen) return;
    memory.barrier('full');
    const pending = (words16[USED_IDX >> 1] - lastUsed) & 0xffff;
    const inFlight = maxInFlight - freeSlots.length;
    if (pending !== 0 && pending <= inFlight && decided - (completed + pending) >= 0) {
      lostInterrupts++;
      firstLostAt ??= completed;
    }
  }

  // Progress and the time limit are looked at every 128 rounds: the clock is not free.
  const timed = seconds !== undefined || report !== undefined;
  const started = timed ? performance.now() : 0;
  const deadline = seconds === undefined ? Infinity : started + seconds * 1000;
  let nextReport = started + reportMs;
  let rounds = 0;

  let drainDeadline = 0;
  for (;;) {
    if (timed && (++rounds & 127) === 0) {
      const now = performance.now();
      if (now >= deadline) Atomics.store(door, STOP, 1);
      if (report !== undefined && now >= nextReport) {
        nextReport = now + reportMs;
        report(counts());
      }
    }
    const stopping = Atomics.load(door, STOP) !== 0;
    const submitted = stopping ? 0 : submit(batch);
    const reaped = reap();
    if (stopping) {
      if (freeSlots.length === maxInFlight) break;
      if (drainDeadline === 0) drainDeadline = performance.now() + DRAIN_LIMIT_MS;
      else if (performance.now() > drainDeadline) break;
    }
    if (submitted === 0 && reaped === 0 && prepareToSleep()) {
      yield irqSeen;
      wokeUp();
    }
  }

  // Tell the device to finish; the wake-up is not a kick the driver decided on.
  Atomics.store(door, DONE, 1);
  Atomics.add(door, KICK, 1);
  Atomics.notify(door, KICK);
  return counts();
}

/**
 * The driver in a worker (Node or browser): waits for `GO`, runs `driverLoop`, sleeping on
 * the interrupt word for `watchdogMs` at most whenever it has nothing to do.
 *
 * @param {object} options those of `driverLoop`, and `watchdogMs` (default 2).
 * @returns {object} the driver's counts.
 */
export function runDriver(options) {
  const door = new Int32Array(options.doorbell);
  const loop = driverLoop(options);
  waitForGo(door);
  return drive(loop, door, IRQ, options.watchdogMs ?? 2);
}
