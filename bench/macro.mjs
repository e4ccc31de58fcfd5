/**
 * The macro benchmark: the virtio ring of the demo (examples/virtio) streaming requests
 * between a driver worker and a device worker for a fixed time, repeated, per variant.
 *
 * The seed's thread measured throughput through an emulated NIC and saw only noise. Two
 * things remove most of it: dividing packets by the process CPU time the run got (the
 * workers and this thread), and repeating each variant with the runs interleaved
 * (legacy, attrs, relaxed, legacy, …) so that a burst of load elsewhere on the machine
 * hits every variant alike. The tables show the median and the min–max of the runs.
 */

/** The variants compared: the 2012 barriers, the attributes API, and no barrier at all. */
export const MACRO_VARIANTS = ['legacy', 'attrs', 'relaxed'];

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

/**
 * Runs every variant `runs` times for `durationMs` each.
 *
 * @param {{ runs: number, durationMs: number, barrierPolicy: string,
 *   progress: (line: string) => void }} options
 * @returns {Promise<object>} `{ runs, durationMs, barrierPolicy, variants: [...] }`, or
 *   `{ skipped }` when the demo is not available.
 */
export async function runMacro({ runs, durationMs, barrierPolicy, progress }) {
  let runVariant;
  try {
    ({ runVariant } = await import('../examples/virtio/virtqueue.mjs'));
  } catch (error) {
    const reason = `the virtio demo (examples/virtio) could not be loaded: ${error instanceof Error ? error.message : String(error)}`;
    progress(`macro: skipped, ${reason}`);
    return { skipped: reason };
  }
  const perVariant = new Map(MACRO_VARIANTS.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of MACRO_VARIANTS) {
      const result = await runVariant({ variant, durationMs, barrierPolicy });
      perVariant.get(variant).push(result);
      progress(
        `macro: ${variant.padEnd(8)} run ${run + 1}/${runs}: ${Math.round(result.packetsPerSecond).toLocaleString('en-US')} packets/s, ${Math.round(result.packetsPerCpuSecond).toLocaleString('en-US')} packets/CPU-s`,
      );
    }
  }
  let resolvedPolicy = barrierPolicy;
  const variants = MACRO_VARIANTS.map((variant) => {
    const results = perVariant.get(variant);
    resolvedPolicy = results[0]?.barrierPolicy ?? resolvedPolicy;
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
  });
  return { runs, durationMs, barrierPolicy: resolvedPolicy, variants };
}
