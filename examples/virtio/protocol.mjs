/**
 * What the driver and the device of the virtio demo agree on, in any JavaScript environment
 * (Node worker threads, browser Web Workers, or one thread): the guest-physical layout, the
 * doorbell words, the payload format, `vring_need_event`, how a side's loop is driven, and
 * how the two sides' counts make one result. No Node built-in is imported here or by the
 * loops (driver-loop.mjs, device-loop.mjs); the Node-only parts (worker_threads, CPU pinning)
 * are in virtqueue.mjs, pin.mjs, driver.mjs and device.mjs.
 *
 * See virtqueue.mjs for the variants and for how notifications and lost notifications work.
 */

/** The variants, in the order `npm run demo` runs them. */
export const VARIANTS = ['legacy', 'attrs', 'attrs-no-full', 'relaxed', 'raw'];

/** What each variant's device is, in a line (the demo's tables). */
export const DESCRIPTIONS = {
  legacy: 'hand-written ring on dma-attrs/legacy: a full barrier before every access',
  attrs: "SplitVirtqueue (dma-attrs/virtio), barrier('full') where virtio needs virtio_mb()",
  'attrs-no-full': "SplitVirtqueue without barrier('full'), index stores plain: the bug",
  relaxed: 'hand-written ring, every access RELAXED, no barrier',
  raw: 'hand-written ring on typed arrays and Atomics, correct barriers: no library',
};

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
  return variant === 'legacy' || variant === 'attrs' || variant === 'raw';
}

/**
 * The device's work on one request, the same in every variant: checks the request in
 * `payload` (its checksum; a corrupted one gives -1) and overwrites it with the response.
 *
 * @param {Uint8Array} payload `PAYLOAD_SIZE` bytes: the request in, the response out.
 * @returns {number} the request's sequence number, or -1 when its checksum fails.
 */
export function respond(payload) {
  const seq = verifyPayload(payload, 0);
  fillPayload(payload, 0, seq < 0 ? 0xffffffff : seq, RESPONSE_SALT);
  return seq;
}

// ---- Driving a side's loop -----------------------------------------------------------------

/**
 * Blocks until the main thread sets `GO`. Only where `Atomics.wait` is allowed: a worker.
 *
 * @param {Int32Array} door the doorbell words.
 */
export function waitForGo(door) {
  while (Atomics.load(door, GO) === 0) Atomics.wait(door, GO, 0, 100);
}

/**
 * Runs a side's loop (`driverLoop` or `deviceLoop`, generators) to its end in a thread that may
 * block. Each value the loop yields is the doorbell value it last saw on `word`: the loop has
 * nothing to do until that word changes, so this sleeps on it, for `watchdogMs` at most.
 *
 * @param {Generator<number, object>} loop
 * @param {Int32Array} door the doorbell words.
 * @param {number} word `IRQ` for the driver, `KICK` for the device.
 * @param {number} watchdogMs the bound of every sleep.
 * @returns {object} the loop's counts.
 */
export function drive(loop, door, word, watchdogMs) {
  let step = loop.next();
  while (step.done !== true) {
    Atomics.wait(door, word, step.value, watchdogMs);
    step = loop.next();
  }
  return step.value;
}

// ---- One result from both sides' counts ----------------------------------------------------

/**
 * The counts of a run, from the driver's and the device's (the final ones, or the latest
 * progress reports while the run goes on).
 *
 * @param {object} device what `deviceLoop` returns or reports.
 * @param {object} driver what `driverLoop` returns or reports.
 * @param {number} seconds how long the run took (so far).
 */
export function summarize(device, driver, seconds) {
  const firstLoss = Math.min(device.firstLostAt ?? Infinity, driver.firstLostAt ?? Infinity);
  return {
    seconds,
    ring: device.ring,
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
    packetsPerSecond: seconds > 0 ? driver.completed / seconds : 0,
  };
}
