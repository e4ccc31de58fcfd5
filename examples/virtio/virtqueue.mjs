/**
 * A virtio split virtqueue with event-index notification suppression (VIRTIO_F_EVENT_IDX),
 * run on real threads: the driver (the guest) in one worker, the device in another, both on
 * one shared `GuestMemory`. This module is Node's: `runVariant` starts the two workers
 * (driver.mjs and device.mjs, thin wrappers around the environment-neutral driver-loop.mjs and
 * device-loop.mjs), lets them move packets for a while and collects their counts. What both
 * sides agree on (the guest-physical layout, the doorbell words, the payload format,
 * `vring_need_event`) is in protocol.mjs, re-exported here; the browser demo (examples/web)
 * uses protocol.mjs and the loops, never this module.
 *
 * Variants differ in the device's ring code and in how the two sides order their accesses:
 *
 * - `legacy`: the demo's hand-written ring on `dma-attrs/legacy`, a full barrier before every
 *   access;
 * - `attrs`: the library's `SplitVirtqueue` (dma-attrs/virtio), whose orderings include
 *   `barrier('full')` between publishing an index and reading the other side's event index
 *   (virtio's `virtio_mb()`);
 * - `attrs-no-full`: the same `SplitVirtqueue` on a context that skips those full barriers and
 *   stores the indices plainly (queue-ring.mjs): the bug;
 * - `relaxed`: the hand-written ring, every access RELAXED, no barrier at all;
 * - `raw`: the same device hand-written on typed arrays and `Atomics` with correct barriers,
 *   no library: what `SplitVirtqueue` is measured against.
 *
 * The guest driver follows the same discipline as the device in each variant: its
 * `virtio_wmb()`, `virtio_rmb()` and `virtio_mb()` are `memory.barrier('release' | 'acquire' |
 * 'full')`, what an emulated `SFENCE`/`LFENCE`/`MFENCE` would issue, and `attrs-no-full` lacks
 * the `virtio_mb()` just as the device lacks `barrier('full')`.
 *
 * The driver, and the devices of `legacy`, `attrs-no-full` and `relaxed`, publish their indices
 * with plain 16-bit stores after the barrier their variant implies (release, or nothing in
 * `relaxed`), never with an `Atomics.store`: on x64 that is an `xchg`, a full fence, and it
 * would hide the very store→load reordering `attrs-no-full` is there to show. (`attrs` and
 * `raw` do use `Atomics.store`, as the library and a careful author do; their full barriers
 * are there too.) Nothing that fences (no `Atomics` store or read-modify-write) sits between
 * publishing an index and reading the other side's event index; the bookkeeping below
 * (`AVAIL_DECIDED`, `USED_DECIDED`, kicks, interrupts) comes after the decision.
 *
 * Notifications live outside guest memory, in a small "doorbell" SharedArrayBuffer: a kick
 * is `Atomics.add` + `Atomics.notify` on the kick word, an interrupt the same on the
 * interrupt word. Each side sleeps with a bounded `Atomics.wait` (the watchdog); when it wakes
 * without a notification while work is pending, and the other side has already decided not
 * to notify for that work, a notification was lost: it is counted, and the side recovers by
 * processing the pending work.
 */
import { Worker } from 'node:worker_threads';
import { GuestMemory } from 'dma-attrs';
import { allowedCpus } from './pin.mjs';
import {
  DOORBELL_WORDS,
  DROP_INTERRUPTS,
  DROP_KICKS,
  GO,
  IRQ,
  MEMORY_SIZE,
  REQUEST_SLOTS,
  STOP,
  VARIANTS,
  summarize,
} from './protocol.mjs';

// What both sides agree on, and the pinning, for those who import them from here.
export * from './protocol.mjs';
export { allowedCpus, pinThisThread } from './pin.mjs';

// ---- Running a variant ---------------------------------------------------------------------

/**
 * Runs one variant: a driver worker and a device worker on one shared guest memory.
 *
 * @param {object} options
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed' | 'raw'} options.variant
 * @param {number} [options.durationMs] how long the driver submits requests (default 2000).
 * @param {'strict' | 'tso' | 'auto'} [options.barrierPolicy] the guest memory's policy ('auto').
 * @param {number} [options.watchdogMs] the bound of every `Atomics.wait` (default 2): how long a
 *   lost notification stalls a side, and so how many a run can show per second.
 * @param {number} [options.dropKicks] test hook: kicks the driver drops (default 0).
 * @param {number} [options.dropInterrupts] test hook: interrupts the device drops (default 0).
 * @param {number} [options.maxInFlight] requests the driver keeps in flight at most (default 4).
 * @param {number} [options.batch] requests the driver publishes at a time (default 1).
 * @param {number} [options.spinLimit] doorbell polls before each sleep (default 2000).
 * @param {boolean} [options.plainIndexStores] test hook for `attrs`: the device's
 *   `SplitVirtqueue` stores its indices as `attrs-no-full` does, full barriers kept (default
 *   false; see queue-ring.mjs).
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
    plainIndexStores = false,
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
    plainIndexStores,
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
    return {
      variant,
      barrierPolicy: memory.barrierPolicy,
      pinned: device.pinned && driver.pinned,
      ...summarize(device, driver, seconds),
      cpuSeconds,
      packetsPerCpuSecond: cpuSeconds > 0 ? driver.completed / cpuSeconds : 0,
    };
  } finally {
    clearTimeout(hardTimer);
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}
