/**
 * `npm run demo`: every variant of the virtio demo (see virtqueue.mjs) for a bounded time,
 * one table per variant: packets moved, lost notifications, corrupted payloads, packets per
 * second and per CPU-second (process.cpuUsage over the run: both workers and this thread).
 *
 *   node examples/virtio/run.mjs [--seconds S] [--policy strict|tso|auto] [--json]
 *
 * S is the time per variant (default 8: four variants and worker start-up stay under a
 * minute). Progress goes to stderr.
 */
import { VARIANTS, runVariant } from './virtqueue.mjs';

const argv = process.argv.slice(2);
function option(name, fallback) {
  const index = argv.indexOf(name);
  return index >= 0 && index + 1 < argv.length ? argv[index + 1] : fallback;
}
const seconds = Number(option('--seconds', '8'));
const barrierPolicy = option('--policy', 'auto');
const json = argv.includes('--json');
if (!(seconds > 0 && seconds <= 13)) {
  process.stderr.write(
    'run.mjs: --seconds must be a number in (0, 13] (a minute in total at most)\n',
  );
  process.exit(2);
}

const DESCRIPTIONS = {
  legacy: 'dma-attrs/legacy: a full barrier before every access',
  attrs: "attributes API, barrier('full') where virtio needs virtio_mb()",
  'attrs-no-full': "attributes API without barrier('full'): the bug",
  relaxed: 'every access RELAXED, no barrier',
};

function table(rows) {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`).join('\n');
}

const results = [];
for (const variant of VARIANTS) {
  process.stderr.write(`running ${variant} for ${seconds} s...\n`);
  const result = await runVariant({ variant, durationMs: seconds * 1000, barrierPolicy });
  results.push(result);
  if (json) continue;
  const format = (value) => Math.round(value).toLocaleString('en-US');
  console.log(`\n${variant} (${DESCRIPTIONS[variant]}; policy ${result.barrierPolicy})`);
  console.log(
    table([
      ['packets moved', format(result.packets)],
      [
        'lost notifications',
        `${result.lostNotifications} (kicks ${result.lostKicks}, interrupts ${result.lostInterrupts})`,
      ],
      ['lost notifications per second', (result.lostNotifications / result.seconds).toFixed(1)],
      [
        'corrupted payloads',
        `${result.corrupted} (requests ${result.corruptedRequests}, responses ${result.corruptedResponses})`,
      ],
      ['packets per second', format(result.packetsPerSecond)],
      ['packets per CPU-second', format(result.packetsPerCpuSecond)],
      ['kicks / interrupts sent', `${result.kicks} / ${result.interrupts}`],
      ['watchdog wake-ups', String(result.watchdogWakeups)],
      ['seconds (wall / CPU)', `${result.seconds.toFixed(2)} / ${result.cpuSeconds.toFixed(2)}`],
    ]),
  );
}
if (json) console.log(JSON.stringify(results, null, 2));
