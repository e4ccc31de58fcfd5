/**
 * The web demo's page: runs each variant of the virtio demo (examples/virtio) with the driver
 * and the device in two module Web Workers on one shared `GuestMemory`, or, on a page that is
 * not cross-origin isolated (no `SharedArrayBuffer`), both in this thread on unshared memory.
 * The table fills while a variant runs. For automated tests the page exposes `window.demo`:
 * `{ isolated, variants, run(variant, seconds) }`.
 */
/* global window, document, Worker, setInterval, clearInterval */
import { GuestMemory } from 'dma-attrs';
import {
  DESCRIPTIONS,
  DOORBELL_WORDS,
  GO,
  IRQ,
  MEMORY_SIZE,
  STOP,
  VARIANTS,
  summarize,
} from '../virtio/protocol.mjs';
import { runSingleThread } from '../virtio/single-thread.mjs';

const isolated = globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';

// ---- Two workers on one shared memory ------------------------------------------------------

/** A promise with its resolve and reject. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((onResolve, onReject) => {
    resolve = onResolve;
    reject = onReject;
  });
  promise.catch(() => {}); // awaited later, or never if the other worker failed first
  return { promise, resolve, reject };
}

/** Starts a worker: `ready` once it has the memory, then its final `counts`. */
function startWorker(worker, message, progress) {
  const ready = deferred();
  const counts = deferred();
  worker.onmessage = ({ data }) => {
    if (data.ready) ready.resolve();
    else if (data.progress) progress(data.progress);
    else if (data.counts) counts.resolve(data.counts);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    const error = new Error(`a worker failed: ${event.message ?? 'it could not be loaded'}`);
    ready.reject(error);
    counts.reject(error);
  };
  worker.postMessage(message);
  return { ready: ready.promise, counts: counts.promise };
}

/** One variant on two workers: the same steps as `runVariant` in examples/virtio/virtqueue.mjs. */
async function runWorkers(variant, seconds, report) {
  const memory = new GuestMemory({ size: MEMORY_SIZE });
  const doorbell = new SharedArrayBuffer(4 * DOORBELL_WORDS);
  const door = new Int32Array(doorbell);
  const message = { variant, handle: memory.handle(), doorbell, watchdogMs: 2 };
  let started = 0;
  let deviceCounts;
  let driverCounts;
  const progress = (counts) => {
    if (counts.role === 'device') deviceCounts = counts;
    else driverCounts = counts;
    if (started > 0 && deviceCounts !== undefined && driverCounts !== undefined) {
      report(summarize(deviceCounts, driverCounts, (performance.now() - started) / 1000));
    }
  };
  const device = new Worker(new URL('./device-worker.mjs', import.meta.url), { type: 'module' });
  const driver = new Worker(new URL('./driver-worker.mjs', import.meta.url), { type: 'module' });
  let hardTimer;
  let stopTimer;
  try {
    const fromDevice = startWorker(device, message, progress);
    const fromDriver = startWorker(driver, message, progress);
    // The watchdogs make a hang impossible by design; this bound makes it impossible in fact.
    const hardLimit = new Promise((_, reject) => {
      hardTimer = setTimeout(
        () => reject(new Error(`variant ${variant} did not finish in time`)),
        seconds * 1000 + 15_000,
      );
    });
    await Promise.race([Promise.all([fromDevice.ready, fromDriver.ready]), hardLimit]);
    started = performance.now();
    Atomics.store(door, GO, 1);
    Atomics.notify(door, GO);
    stopTimer = setTimeout(() => {
      Atomics.store(door, STOP, 1);
      Atomics.notify(door, IRQ);
    }, seconds * 1000);
    const [deviceFinal, driverFinal] = await Promise.race([
      Promise.all([fromDevice.counts, fromDriver.counts]),
      hardLimit,
    ]);
    return summarize(deviceFinal, driverFinal, (performance.now() - started) / 1000);
  } finally {
    clearTimeout(hardTimer);
    clearTimeout(stopTimer);
    device.terminate();
    driver.terminate();
  }
}

// ---- The page ------------------------------------------------------------------------------

const rows = new Map();
const results = document.getElementById('results');
for (const variant of VARIANTS) {
  const row = document.createElement('tr');
  row.innerHTML = `<td><code>${variant}</code><div class="what">${DESCRIPTIONS[variant]}</div></td>
    <td class="threads">${isolated ? '2 workers' : 'single thread'}</td>
    <td class="number">–</td><td class="number">–</td><td class="number">–</td><td class="number">–</td>`;
  results.append(row);
  rows.set(variant, row);
}

const status = document.getElementById('status');
if (isolated) {
  status.textContent =
    'This page is cross-origin isolated: the driver and the device run in two Web Workers on one SharedArrayBuffer.';
} else {
  status.classList.add('fallback');
  status.textContent =
    'This page is not cross-origin isolated (crossOriginIsolated is false, so there is no ' +
    'SharedArrayBuffer): two workers cannot share guest memory. It runs the single-threaded ' +
    "fallback instead: the driver and the device take turns in the page's own thread on " +
    'unshared memory, where no notification can be lost. Serve the page with ' +
    'Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp ' +
    'for the two-worker demo.';
}

const format = (value) => Math.round(value).toLocaleString('en-US');

function show(variant, counts) {
  const cells = rows.get(variant).children;
  cells[2].textContent = format(counts.packets);
  cells[3].textContent = format(counts.lostNotifications);
  cells[3].classList.toggle('bad', counts.lostNotifications > 0);
  cells[4].textContent = format(counts.packetsPerSecond);
  cells[5].textContent = format(counts.corrupted);
  cells[5].classList.toggle('bad', counts.corrupted > 0);
}

const progressBar = document.getElementById('progress');
const progressLabel = document.getElementById('progress-label');

async function runOne(variant, seconds) {
  if (!VARIANTS.includes(variant)) {
    throw new TypeError(
      `unknown variant ${JSON.stringify(variant)}; expected ${VARIANTS.join(', ')}`,
    );
  }
  if (!(seconds > 0)) throw new TypeError(`seconds must be positive, not ${seconds}`);
  const row = rows.get(variant);
  row.classList.add('running');
  const started = performance.now();
  const tick = () => {
    const elapsed = Math.min(seconds, (performance.now() - started) / 1000);
    progressBar.value = elapsed / seconds;
    progressLabel.textContent = `running ${variant}: ${elapsed.toFixed(1)} s of ${seconds} s`;
  };
  tick();
  const ticker = setInterval(tick, 100);
  try {
    const counts = isolated
      ? await runWorkers(variant, seconds, (partial) => show(variant, partial))
      : await runSingleThread({ variant, seconds, report: (partial) => show(variant, partial) });
    show(variant, counts);
    return {
      variant,
      packets: counts.packets,
      lost: counts.lostNotifications,
      packetsPerSecond: counts.packetsPerSecond,
      corrupted: counts.corrupted,
      threads: isolated ? 2 : 1,
      seconds: counts.seconds,
      lostKicks: counts.lostKicks,
      lostInterrupts: counts.lostInterrupts,
    };
  } finally {
    clearInterval(ticker);
    row.classList.remove('running');
    progressBar.value = 1;
    progressLabel.textContent = `${variant} done`;
  }
}

// One run at a time: two would compete for the same CPUs.
let queue = Promise.resolve();
function run(variant, seconds = 2) {
  const result = queue.then(() => runOne(variant, seconds));
  queue = result.catch(() => {});
  return result;
}

const runAll = document.getElementById('run-all');
runAll.addEventListener('click', async () => {
  runAll.disabled = true;
  try {
    for (const variant of VARIANTS) await run(variant, 2);
    progressLabel.textContent = 'all variants done';
  } catch (error) {
    progressLabel.textContent = `failed: ${error.message}`;
  } finally {
    runAll.disabled = false;
  }
});

window.demo = { isolated, variants: [...VARIANTS], run };
