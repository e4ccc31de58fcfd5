/**
 * The virtio demo in one thread, for where there are no threads to share memory with: a
 * browser page that is not cross-origin isolated has no `SharedArrayBuffer`. The driver's and
 * the device's loops take turns on an unshared `GuestMemory` (every barrier a no-op, SPEC
 * §3): each runs until it would sleep, then the other. Nothing can be reordered between
 * them, so no variant loses a notification here; what this shows is that the protocol is
 * right and what the accesses cost without a second thread. Environment-neutral.
 */
import { GuestMemory } from 'dma-attrs';
import { deviceLoop } from './device-loop.mjs';
import { driverLoop } from './driver-loop.mjs';
import { DOORBELL_WORDS, GO, MEMORY_SIZE, VARIANTS, summarize } from './protocol.mjs';

/**
 * Runs one variant with the driver and the device interleaved in this thread. Every `sliceMs`
 * it gives the event loop a turn (a page stays responsive and can show `report`'s progress).
 *
 * @param {object} options
 * @param {'legacy' | 'attrs' | 'attrs-no-full' | 'relaxed' | 'raw'} options.variant
 * @param {number} [options.seconds] how long the driver submits requests (default 2).
 * @param {(result: object) => void} [options.report] given the result so far, every `reportMs`.
 * @param {number} [options.reportMs] default 100.
 * @param {number} [options.sliceMs] default 25.
 * @returns {Promise<object>} the result: `summarize`'s counts, plus `variant` and `threads: 1`.
 */
export async function runSingleThread(options) {
  const { variant, seconds = 2, report, reportMs = 100, sliceMs = 25 } = options;
  if (!VARIANTS.includes(variant)) {
    throw new TypeError(
      `unknown variant ${JSON.stringify(variant)}; expected ${VARIANTS.join(', ')}`,
    );
  }
  const memory = new GuestMemory({ size: MEMORY_SIZE, shared: false });
  const doorbell = new ArrayBuffer(4 * DOORBELL_WORDS);
  let deviceCounts;
  let driverCounts;
  const started = performance.now();
  const result = () => ({
    variant,
    threads: 1,
    ...summarize(deviceCounts, driverCounts, (performance.now() - started) / 1000),
  });
  const progress =
    report === undefined
      ? undefined
      : (counts) => {
          if (counts.role === 'device') deviceCounts = counts;
          else driverCounts = counts;
          if (deviceCounts !== undefined && driverCounts !== undefined) report(result());
        };
  // No spinning: nothing can change the doorbell while this side spins on it.
  const common = { memory, doorbell, variant, spinLimit: 0, report: progress, reportMs };
  const device = deviceLoop(common);
  const driver = driverLoop({ ...common, seconds });
  new Int32Array(doorbell)[GO] = 1;

  let deviceStep = device.next();
  let driverStep = driver.next();
  let sliceEnd = performance.now() + sliceMs;
  while (deviceStep.done !== true || driverStep.done !== true) {
    if (driverStep.done !== true) driverStep = driver.next();
    if (deviceStep.done !== true) deviceStep = device.next();
    if (performance.now() >= sliceEnd) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      sliceEnd = performance.now() + sliceMs;
    }
  }
  deviceCounts = deviceStep.value;
  driverCounts = driverStep.value;
  return result();
}
