/**
 * A virtio split virtqueue with event-index notification suppression (VIRTIO_F_EVENT_IDX),
 * run on real threads: the driver (the guest) in one worker, the device in another, both on
 * one shared `GuestMemory`. This module holds what both sides agree on (the guest-physical
 * layout, the doorbell words, the payload format, `vring_need_event`) and `runVariant`, which
 * starts the two workers, lets them move packets for a while and collects their counts.
 *
 * Variants differ only in how the two sides order their accesses:
 *
 * - `legacy`: the device uses `dma-attrs/legacy`, a full barrier before every access;
 * - `attrs`: the attributes API as intended, plus `barrier('full')` between publishing an
 *   index and reading the other side's event index (virtio's `virtio_mb()`);
 * - `attrs-no-full`: the same without those full barriers: the bug;
 * - `relaxed`: every access RELAXED, no barrier at all.
 *
 * The guest driver follows the same discipline as the device in each variant: its
 * `virtio_wmb()`, `virtio_rmb()` and `virtio_mb()` are `memory.barrier('release' | 'acquire' |
 * 'full')`, what an emulated `SFENCE`/`LFENCE`/`MFENCE` would issue, and `attrs-no-full` lacks
 * the `virtio_mb()` just as the device lacks `barrier('full')`.
 *
 * Both sides publish their indices with plain 16-bit stores after the barrier their variant
 * implies (release, or nothing in `relaxed`), never with an `Atomics.store`: on x64 that is an
 * `xchg`, a full fence, and it would hide the very store→load reordering `attrs-no-full` is
 * there to show (see device.mjs). Nothing that fences (no `Atomics` store or read-modify-write)
 * sits between publishing an index and reading the other side's event index; the bookkeeping
 * below (`AVAIL_DECIDED`, `USED_DECIDED`, kicks, interrupts) comes after the decision.
 *
 * Notifications live outside guest memory, in a small "doorbell" SharedArrayBuffer: a kick
 * is `Atomics.add` + `Atomics.notify` on the kick word, an interrupt the same on the
 * interrupt word. Each side sleeps with a bounded `Atomics.wait` (the watchdog); when it wakes
 * without a notification while work is pending, and the other side has already decided not
 * to notify for that work, a notification was lost: it is counted, and the side recovers by
 * processing the pending work.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { GuestMemory } from 'dma-attrs';

/** The variants, in the order `npm run demo` runs them. */
export const VARIANTS = ['legacy', 'attrs', 'attrs-no-full', 'relaxed'];

// ---- The guest-physical layout -------------------------------------------------------------

/** Ring entries (descriptors, avail and used slots). A power of two. */
export const QUEUE_SIZE = 128;
/** Requests in flight at most: each uses two descriptors (request out, response in). */
export const REQUEST_SLOTS = QUEUE_SIZE / 2;
/** Bytes of a request payload and of a response payload. */
export const PAYLOAD_SIZE = 64;

/** The descriptor table: `{ addr: u64, len: u32, flags: u16, next: u16 }` per entry. */
export const DESC_TABLE = 0x0000;
export const DESC_SIZE = 16;
/** The available ring: `flags: u16, idx: u16, ring: u16[QUEUE_SIZE], used_event: u16`. */
export const AVAIL_RING = 0x1000;
export const AVAIL_IDX = AVAIL_RING + 2;
export const AVAIL_ENTRIES = AVAIL_RING + 4;
export const USED_EVENT = AVAIL_ENTRIES + 2 * QUEUE_SIZE;
/** The used ring: `flags: u16, idx: u16, ring: { id: u32, len: u32 }[QUEUE_SIZE], avail_event: u16`. */
export const USED_RING = 0x2000;
export const USED_IDX = USED_RING + 2;
export const USED_ENTRIES = USED_RING + 4;
export const AVAIL_EVENT = USED_ENTRIES + 8 * QUEUE_SIZE;
/** Request slot `r` has its request at `BUFFERS + r * 2 * PAYLOAD_SIZE`, its response after it. */
export const BUFFERS = 0x3000;
export const MEMORY_SIZE = BUFFERS + REQUEST_SLOTS * 2 * PAYLOAD_SIZE;

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;

// ---- The doorbell: Int32 words outside guest memory ----------------------------------------

/** Kicks (driver → device). */
export const KICK = 0;
/** Interrupts (device → driver). */
export const IRQ = 1;
/** Set by the main thread: both sides start. */
export const GO = 2;
/** Set by the main thread: the driver stops submitting and drains. */
export const STOP = 3;
/** Set by the driver once drained: the device stops. */
export const DONE = 4;
/** Avail entries published so far for which the driver has made its kick decision. */
export const AVAIL_DECIDED = 5;
/** Used entries published so far for which the device has made its interrupt decision. */
export const USED_DECIDED = 6;
/** Test hook: the driver drops this many kicks it decided to send (a lost notification). */
export const DROP_KICKS = 7;
/** Test hook: the device drops this many interrupts it decided to send. */
export const DROP_INTERRUPTS = 8;
export const DOORBELL_WORDS = 16;

// ---- Payloads ------------------------------------------------------------------------------

/** FNV-1a, 32 bits, over `length` bytes of `bytes` from `offset`. */
export function checksum(bytes, offset, length) {
  let hash = 0x811c9dc5;
  for (let index = offset; index < offset + length; index++) {
    hash = Math.imul(hash ^ (bytes[index] ?? 0), 0x01000193);
  }
  return hash >>> 0;
}

/**
 * Fills a payload: `seq` as a u32, then bytes derived from `seq` and `salt`, then the FNV-1a
 * checksum of everything before it as a u32 (little-endian throughout).
 */
export function fillPayload(bytes, offset, seq, salt) {
  bytes[offset] = seq & 0xff;
  bytes[offset + 1] = (seq >>> 8) & 0xff;
  bytes[offset + 2] = (seq >>> 16) & 0xff;
  bytes[offset + 3] = (seq >>> 24) & 0xff;
  let state = (seq * 2654435761 + salt) >>> 0;
  for (let index = 4; index < PAYLOAD_SIZE - 4; index++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    bytes[offset + index] = state >>> 24;
  }
  const sum = checksum(bytes, offset, PAYLOAD_SIZE - 4);
  bytes[offset + PAYLOAD_SIZE - 4] = sum & 0xff;
  bytes[offset + PAYLOAD_SIZE - 3] = (sum >>> 8) & 0xff;
  bytes[offset + PAYLOAD_SIZE - 2] = (sum >>> 16) & 0xff;
  bytes[offset + PAYLOAD_SIZE - 1] = (sum >>> 24) & 0xff;
}

/** The sequence number of a payload whose checksum verifies, or -1. */
export function verifyPayload(bytes, offset) {
  const stored =
    ((bytes[offset + PAYLOAD_SIZE - 4] ?? 0) |
      ((bytes[offset + PAYLOAD_SIZE - 3] ?? 0) << 8) |
      ((bytes[offset + PAYLOAD_SIZE - 2] ?? 0) << 16) |
      ((bytes[offset + PAYLOAD_SIZE - 1] ?? 0) << 24)) >>>
    0;
  if (stored !== checksum(bytes, offset, PAYLOAD_SIZE - 4)) return -1;
  return (
    ((bytes[offset] ?? 0) |
      ((bytes[offset + 1] ?? 0) << 8) |
      ((bytes[offset + 2] ?? 0) << 16) |
      ((bytes[offset + 3] ?? 0) << 24)) >>>
    0
  );
}

/** Salts, so that a response is never mistaken for the request it answers. */
export const REQUEST_SALT = 0x5eed;
export const RESPONSE_SALT = 0xface;

/**
 * `vring_need_event()` from the virtio spec: should the side that moved its index from
 * `oldIdx` to `newIdx` notify the other, whose event index is `eventIdx`? All u16 arithmetic.
 */
export function needEvent(eventIdx, newIdx, oldIdx) {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Whether the variant issues `barrier('full')` (`virtio_mb()`) where virtio requires it. */
export function hasFullBarrier(variant) {
  return variant === 'legacy' || variant === 'attrs';
}

/**
 * Pins the calling thread to one CPU (Linux, with util-linux's `taskset`); false where that is
 * not possible. The demo pins the driver and the device to different CPUs: two threads that
 * wake each other up tend to be put on one CPU by the scheduler, most of all when another
 * process keeps the other CPU busy, and threads that take turns on one CPU never see each
 * other's stores out of order (a context switch drains the store buffer), so no variant could
 * lose a notification.
 */
export function pinThisThread(cpu) {
  if (cpu === undefined) return false;
  try {
    const tid = readlinkSync('/proc/thread-self').split('/').pop();
    execFileSync('taskset', ['-p', '-c', String(cpu), tid], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The CPUs this process may run on (Linux), or an empty array where that is unknown. */
export function allowedCpus() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1];
    const cpus = [];
    for (const range of list === undefined ? [] : list.split(',')) {
      const [first, last = first] = range.split('-').map(Number);
      for (let cpu = first; cpu <= last; cpu++) cpus.push(cpu);
    }
    return cpus.filter((cpu) => Number.isInteger(cpu));
  } catch {
    return [];
  }
}

// ---- Running a variant ---------------------------------------------------------------------

/**
 * Runs one variant: a driver worker and a device worker on one shared guest memory.
 *
 * @param {object} options
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed'} options.variant
 * @param {number} [options.durationMs] how long the driver submits requests (default 2000).
 * @param {'strict' | 'tso' | 'auto'} [options.barrierPolicy] the guest memory's policy ('auto').
 * @param {number} [options.watchdogMs] the bound of every `Atomics.wait` (default 2): how long a
 *   lost notification stalls a side, and so how many a run can show per second.
 * @param {number} [options.dropKicks] test hook: kicks the driver drops (default 0).
 * @param {number} [options.dropInterrupts] test hook: interrupts the device drops (default 0).
 * @param {number} [options.maxInFlight] requests the driver keeps in flight at most (default 4).
 * @param {number} [options.batch] requests the driver publishes at a time (default 1).
 * @param {number} [options.spinLimit] doorbell polls before each sleep (default 2000).
 * @param {boolean} [options.pin] pin the device and the driver to two different CPUs (default
 *   true; ignored unless the process may run on two CPUs or more); see `pinThisThread`.
 * @returns {Promise<object>} the counts; see the `return` statement.
 */
export async function runVariant(options) {
  const {
    variant,
    durationMs = 2000,
    barrierPolicy = 'auto',
    watchdogMs = 2,
    dropKicks = 0,
    dropInterrupts = 0,
    maxInFlight = 4,
    batch = 1,
    spinLimit = 2000,
    pin = true,
  } = options;
  if (!VARIANTS.includes(variant)) {
    throw new TypeError(
      `unknown variant ${JSON.stringify(variant)}; expected ${VARIANTS.join(', ')}`,
    );
  }
  const memory = new GuestMemory({ size: MEMORY_SIZE, barrierPolicy });
  const doorbell = new SharedArrayBuffer(4 * DOORBELL_WORDS);
  const door = new Int32Array(doorbell);
  Atomics.store(door, DROP_KICKS, dropKicks);
  Atomics.store(door, DROP_INTERRUPTS, dropInterrupts);
  const common = {
    variant,
    handle: memory.handle(),
    doorbell,
    watchdogMs,
    maxInFlight: Math.max(1, Math.min(REQUEST_SLOTS, maxInFlight)),
    batch: Math.max(1, batch),
    spinLimit,
    pin,
  };
  const cpus = pin ? allowedCpus() : [];
  const [deviceCpu, driverCpu] = cpus.length >= 2 ? cpus : [];

  const workers = [];
  const start = (file, cpu) => {
    const worker = new Worker(new URL(file, import.meta.url), {
      workerData: { ...common, cpu },
    });
    workers.push(worker);
    const messages = [];
    let waiting;
    worker.on('message', (message) => {
      messages.push(message);
      waiting?.();
    });
    const failure = new Promise((_, reject) => {
      worker.once('error', reject);
      worker.once('exit', (code) => {
        reject(new Error(`${file} exited with code ${code} before reporting`));
      });
    });
    failure.catch(() => {});
    const next = async () => {
      while (messages.length === 0) {
        await Promise.race([new Promise((resolve) => (waiting = resolve)), failure]);
      }
      return messages.shift();
    };
    return next;
  };

  // A hard bound on the whole run: the watchdogs make a hang impossible by design, this
  // makes it impossible in fact.
  const hardLimitMs = durationMs + 10_000;
  let hardTimer;
  const hardLimit = new Promise((_, reject) => {
    hardTimer = setTimeout(
      () => reject(new Error(`variant ${variant} did not finish within ${hardLimitMs} ms`)),
      hardLimitMs,
    );
  });
  hardLimit.catch(() => {});

  try {
    const nextFromDevice = start('./device.mjs', deviceCpu);
    const nextFromDriver = start('./driver.mjs', driverCpu);
    await Promise.race([Promise.all([nextFromDevice(), nextFromDriver()]), hardLimit]); // ready
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    Atomics.store(door, GO, 1);
    Atomics.notify(door, GO);
    const stopTimer = setTimeout(() => {
      Atomics.store(door, STOP, 1);
      Atomics.notify(door, IRQ);
    }, durationMs);
    const [device, driver] = await Promise.race([
      Promise.all([nextFromDevice(), nextFromDriver()]),
      hardLimit,
    ]);
    clearTimeout(stopTimer);
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const firstLoss = Math.min(device.firstLostAt ?? Infinity, driver.firstLostAt ?? Infinity);
    return {
      variant,
      barrierPolicy: memory.barrierPolicy,
      pinned: device.pinned && driver.pinned,
      seconds,
      packets: driver.completed,
      lostNotifications: device.lostKicks + driver.lostInterrupts,
      lostKicks: device.lostKicks,
      lostInterrupts: driver.lostInterrupts,
      corrupted: device.corrupted + driver.corrupted,
      corruptedRequests: device.corrupted,
      corruptedResponses: driver.corrupted,
      kicks: driver.kicks,
      interrupts: device.interrupts,
      droppedKicks: driver.droppedKicks,
      droppedInterrupts: device.droppedInterrupts,
      watchdogWakeups: device.watchdogWakeups + driver.watchdogWakeups,
      unfinished: driver.unfinished,
      packetsAfterFirstLoss: Number.isFinite(firstLoss) ? driver.completed - firstLoss : 0,
      packetsPerSecond: driver.completed / seconds,
      cpuSeconds,
      packetsPerCpuSecond: cpuSeconds > 0 ? driver.completed / cpuSeconds : 0,
    };
  } finally {
    clearTimeout(hardTimer);
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}
