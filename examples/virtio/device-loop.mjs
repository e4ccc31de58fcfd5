/**
 * The device side of the virtio demo.
 *
 * The loop serves what the driver made available, decides whether to interrupt the driver
 * (`vring_need_event(used_event, ...)`), and when it runs out of work asks for a kick
 * (publishes `avail_event`) and looks at the available index once more before sleeping: both
 * of those "publish my index, then read the other side's" steps need a full barrier. The ring
 * accesses are the variant's ring:
 *
 * - `attrs`, `attrs-no-full`: the library's `SplitVirtqueue` (queue-ring.mjs);
 * - `legacy`, `relaxed`: the demo's own hand-written ring on a `DMAContext`
 *   (hand-written-ring.mjs);
 * - `raw`: the same device on plain typed arrays and `Atomics`, no library (raw-ring.mjs).
 *
 * A ring has `serve()` (serve what is available, publish `used.idx`; returns how many),
 * `needsInterrupt()`, `enableKicks()` (publish `avail_event`, full barrier, look again: true
 * when work arrived), `disableKicks()`, and the counts `availTotal`, `usedTotal`,
 * `corrupted`, `nextAvail`, `broken`. This loop owns everything else: the doorbell, the
 * spinning, the watchdog that counts lost kicks, the progress reports.
 *
 * Environment-neutral: no Node built-in. The loop is a generator that yields where it would
 * sleep, so that a worker (Node's device.mjs, the browser's device-worker.mjs) blocks on the
 * doorbell there with `runDevice`, and a single thread can interleave it with the driver
 * (single-thread.mjs).
 */
import { DMAContext, GuestMemory } from 'dma-attrs';
import { handWrittenRing } from './hand-written-ring.mjs';
import {
  AVAIL_DECIDED,
  AVAIL_IDX,
  DONE,
  DROP_INTERRUPTS,
  IRQ,
  KICK,
  USED_DECIDED,
  VARIANTS,
  drive,
  waitForGo,
} from './protocol.mjs';
import { queueRing } from './queue-ring.mjs';
import { rawRing } from './raw-ring.mjs';

/**
 * The device ring of a variant.
 *
 * @param {GuestMemory} memory
 * @param {string} variant one of `VARIANTS`.
 * @param {{ plainIndexStores?: boolean }} [options] see `queueRing`.
 * @returns {object} the ring (see the module's comment).
 */
export function deviceRing(memory, variant, options = {}) {
  switch (variant) {
    case 'attrs':
    case 'attrs-no-full':
      return queueRing(memory, variant, options);
    case 'legacy':
    case 'relaxed':
      return handWrittenRing(memory, variant);
    case 'raw':
      return rawRing(memory);
    default:
      throw new TypeError(
        `unknown variant ${JSON.stringify(variant)}; expected ${VARIANTS.join(', ')}`,
      );
  }
}

/**
 * The device's loop, from `GO` until the driver sets `DONE`.
 *
 * @param {object} options
 * @param {GuestMemory} [options.memory] the guest memory (or give `handle`).
 * @param {object} [options.handle] `memory.handle()`, for a memory made in another thread.
 * @param {SharedArrayBuffer | ArrayBuffer} options.doorbell the doorbell words.
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed' | 'raw'} options.variant
 * @param {boolean} [options.plainIndexStores] test hook for `attrs`: see `queueRing`.
 * @param {number} [options.spinLimit] doorbell polls before each sleep (default 2000).
 * @param {(counts: object) => void} [options.report] given the counts so far, every `reportMs`.
 * @param {number} [options.reportMs] default 100.
 * @returns {Generator<number, object>} yields the kick count it last saw when it has nothing
 *   to do until a kick; returns the counts.
 */
export function* deviceLoop(options) {
  const { doorbell, variant, spinLimit = 2000, report } = options;
  const { reportMs = 100, plainIndexStores = false } = options;
  const memory = options.memory ?? GuestMemory.fromHandle(options.handle);
  const door = new Int32Array(doorbell);
  const ring = deviceRing(memory, variant, { plainIndexStores });
  // The watchdog's own look at the ring: ordered, whatever the variant.
  const watchdogCtx = new DMAContext(memory);

  let interrupts = 0;
  let droppedInterrupts = 0;
  let lostKicks = 0;
  let watchdogWakeups = 0;
  let firstLostAt;
  let kickSeen = Atomics.load(door, KICK);

  function counts() {
    return {
      role: 'device',
      ring: ring.name,
      served: ring.availTotal,
      corrupted: ring.corrupted,
      broken: ring.broken,
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
    if (ring.serve() > 0) {
      // The ring published used.idx; now it reads used_event: the store→load pair that
      // needs `full`. Nothing that fences (no Atomics bookkeeping) sits between the two.
      if (ring.needsInterrupt()) interrupt();
      Atomics.store(door, USED_DECIDED, ring.usedTotal);
      continue;
    }
    if (ring.broken || Atomics.load(door, DONE) !== 0) break;
    // Ask for a kick when the driver publishes entry `nextAvail`, then look again: the
    // driver may have published before it could see the new avail_event.
    if (ring.enableKicks()) continue;
    // Spin on the doorbell a little before sleeping, as an adaptive futex does: a kick then
    // costs a cache-line transfer, not a wake-up. Only the doorbell is watched, never the
    // ring, so a kick that is never sent still stalls the device until the watchdog.
    for (let spin = 0; spin < spinLimit && Atomics.load(door, KICK) === kickSeen; spin++);
    yield kickSeen;
    const kickNow = Atomics.load(door, KICK);
    if (kickNow !== kickSeen) {
      kickSeen = kickNow;
      ring.disableKicks();
      continue;
    }
    // The watchdog: no kick. Look again, ordered whatever the variant; if work is pending
    // that the driver has finished deciding about, the kick for it was lost.
    watchdogWakeups++;
    const decided = Atomics.load(door, AVAIL_DECIDED);
    if (Atomics.load(door, KICK) !== kickSeen) continue;
    memory.barrier('full');
    const pending = (watchdogCtx.readU16LE(AVAIL_IDX) - ring.nextAvail) & 0xffff;
    if (pending !== 0 && decided - (ring.availTotal + pending) >= 0) {
      lostKicks++;
      firstLostAt ??= ring.availTotal;
    }
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
