/**
 * The macro benchmark: the virtio ring of the demo (examples/virtio) streaming requests
 * between a driver worker and a device worker for a fixed time, repeated, per variant.
 *
 * The seed's thread measured throughput through an emulated NIC and saw only noise. Two
 * things remove most of it: dividing packets by the process CPU time the run got (the
 * workers and this thread), and repeating each variant with the runs interleaved
 * (legacy, attrs, relaxed, raw, legacy, …) so that a burst of load elsewhere on the machine
 * hits every variant alike. The tables show the median and the min–max of the runs.
 *
 * Issue 12 adds `raw`, the same device hand-written on typed arrays and `Atomics` with
 * correct barriers (examples/virtio/raw-ring.mjs): the code an emulator author writes without
 * the library, against which `attrs` (the library's `SplitVirtqueue`) is measured, run by run
 * (goal: ≥ 0.9× its packets per CPU-second), and the device's allocations per packet
 * (bench/alloc.mjs, `runVirtioAllocation`; goal: no GC over 10^6 packets).
 */
import { runVirtioAllocation, VIRTIO_ALLOCATION_VARIANTS } from './alloc.mjs';

/** The variants compared: the 2012 barriers, the attributes API, and no barrier at all. */
export const MACRO_VARIANTS = ['legacy', 'attrs', 'relaxed'];

/** The device without the library, run beside `MACRO_VARIANTS` and reported apart. */
export const MACRO_BASELINE = 'raw';

/** Issue 12's goal: the `SplitVirtqueue` device's packets per CPU-second over `raw`'s. */
export const ATTRS_OVER_RAW_GOAL = 0.9;

/** The median of numbers (the mean of the middle two for an even count). */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[middle]
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function spread(values) {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** One variant's row: every run, and the spreads over them. */
function row(variant, results) {
  return {
    variant,
    runs: results.map((result) => ({
      packets: result.packets,
      seconds: result.seconds,
      cpuSeconds: result.cpuSeconds,
      packetsPerSecond: result.packetsPerSecond,
      packetsPerCpuSecond: result.packetsPerCpuSecond,
      lostNotifications: result.lostNotifications,
      corrupted: result.corrupted,
    })),
    packetsPerSecond: spread(results.map((result) => result.packetsPerSecond)),
    packetsPerCpuSecond: spread(results.map((result) => result.packetsPerCpuSecond)),
    lostNotifications: results.reduce((sum, result) => sum + result.lostNotifications, 0),
    corrupted: results.reduce((sum, result) => sum + result.corrupted, 0),
  };
}

/**
 * Runs every variant and the `raw` baseline `runs` times for `durationMs` each, interleaved,
 * then counts the device's allocations per variant (`allocationPackets` packets each).
 *
 * @param {{ runs: number, durationMs: number, barrierPolicy: string,
 *   allocationPackets?: number, allocationVariants?: string[],
 *   progress: (line: string) => void }} options
 * @returns {Promise<object>} `{ runs, durationMs, barrierPolicy, variants: [...], raw,
 *   attrsOverRaw, allocation }`, or `{ skipped }` when the demo is not available. `variants`
 *   holds `MACRO_VARIANTS`' rows, `raw` the baseline's (same shape); `attrsOverRaw` is attrs'
 *   packets per CPU-second over raw's, per round (median, min, max) and its goal.
 */
export async function runMacro({
  runs,
  durationMs,
  barrierPolicy,
  allocationPackets = 1e6,
  allocationVariants = VIRTIO_ALLOCATION_VARIANTS,
  progress,
}) {
  let runVariant;
  try {
    ({ runVariant } = await import('../examples/virtio/virtqueue.mjs'));
  } catch (error) {
    const reason = `the virtio demo (examples/virtio) could not be loaded: ${error instanceof Error ? error.message : String(error)}`;
    progress(`macro: skipped, ${reason}`);
    return { skipped: reason };
  }
  const order = [...MACRO_VARIANTS, MACRO_BASELINE];
  const perVariant = new Map(order.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of order) {
      const result = await runVariant({ variant, durationMs, barrierPolicy });
      perVariant.get(variant).push(result);
      progress(
        `macro: ${variant.padEnd(8)} run ${run + 1}/${runs}: ${Math.round(result.packetsPerSecond).toLocaleString('en-US')} packets/s, ${Math.round(result.packetsPerCpuSecond).toLocaleString('en-US')} packets/CPU-s`,
      );
    }
  }
  const resolvedPolicy = perVariant.get('attrs')[0]?.barrierPolicy ?? barrierPolicy;
  const variants = MACRO_VARIANTS.map((variant) => row(variant, perVariant.get(variant)));
  const raw = row(MACRO_BASELINE, perVariant.get(MACRO_BASELINE));
  // Per round: attrs and raw ran one after the other, so they saw about the same load.
  const rawRuns = perVariant.get(MACRO_BASELINE);
  const ratios = perVariant
    .get('attrs')
    .map(
      (result, index) => result.packetsPerCpuSecond / (rawRuns[index]?.packetsPerCpuSecond || 1),
    );
  const ratio = spread(ratios);
  const attrsOverRaw = {
    ...ratio,
    goal: ATTRS_OVER_RAW_GOAL,
    met: ratio.median >= ATTRS_OVER_RAW_GOAL,
  };
  const allocation = await runVirtioAllocation({
    packets: allocationPackets,
    variants: allocationVariants,
    progress,
  });
  return {
    runs,
    durationMs,
    barrierPolicy: resolvedPolicy,
    variants,
    raw,
    attrsOverRaw,
    allocation,
  };
}
