/**
 * The device side for test/virtio-workers.test.ts: a `SplitVirtqueue` from the built
 * `dma-attrs/virtio` on its own DMAContext over the guest memory's handle, serving the
 * requests of test/workers/virtio-driver.mjs:
 *
 * - pop every available chain, `chain.read` the request (its whole readable part), answer
 *   each byte + 1 followed by the FNV-1a of the request (4 bytes, little-endian) with
 *   `chain.write`, `push(chain, written)`; after a batch (and every few pushes inside a long
 *   one) `needsNotification()` decides whether to interrupt the driver (`Atomics.add` and
 *   `Atomics.notify` on the doorbell word IRQ);
 * - when idle, `enableNotification()`; if it reports no new work, sleep on the doorbell word
 *   KICK with a bounded `Atomics.wait`. The watchdog: a wait that ends by timeout while
 *   `avail.idx` shows chains the device has not popped, and no kick arrives in a further
 *   grace period, is a lost kick (counted, then recovered from);
 * - check what the library returns against what the driver builds: readable descriptors
 *   before writable ones, the lengths summing to `readableLength` / `writableLength`, 3 to 5
 *   descriptors per chain (after an indirect table is expanded), `read` and `write` copying
 *   the whole request and response.
 *
 * For the test of the watchdogs themselves, `dropInterruptEvery: n` skips every n-th
 * interrupt that `needsNotification()` asked for.
 *
 * It stops when the driver sets STOP, and posts `{ type: 'done', stats }`, or
 * `{ type: 'error', message, stats }` on an exception or a stall.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAContext, GuestMemory } from '../../dist/index.js';
import { SplitVirtqueue } from '../../dist/virtio.js';

const KICK = 0;
const IRQ = 1;
const STOP = 2;

const {
  memory: memoryHandle,
  doorbell,
  size,
  desc,
  avail,
  used,
  eventIdx,
  indirect,
  waitMs,
  graceMs,
  stallMs,
  dropInterruptEvery = 0,
} = workerData;

const memory = GuestMemory.fromHandle(memoryHandle);
const ctx = new DMAContext(memory);
const words = new Int32Array(doorbell);
const vq = new SplitVirtqueue(ctx, { size, desc, avail, used, eventIdx, indirect });

const MAX_REQUEST = 4096;
const request = new Uint8Array(MAX_REQUEST);
const reply = new Uint8Array(MAX_REQUEST + 4);
/** Interrupt checks inside a long batch, every this many pushes. */
const NOTIFY_EVERY = 4;

const stats = {
  chains: 0,
  bad: 0,
  firstError: '',
  descriptorsPerChain: [0, 0, 0, 0, 0, 0, 0],
  interrupts: 0,
  interruptsSuppressed: 0,
  sleeps: 0,
  kicks: 0,
  timeouts: 0,
  lostKicks: 0,
  lateKicks: 0,
  enableFoundWork: 0,
  needed: 0,
  dropped: 0,
};

function bad(message) {
  stats.bad++;
  if (stats.firstError === '') stats.firstError = message;
}

function fnv1a(bytes, length) {
  let h = 0x811c9dc5;
  for (let i = 0; i < length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function serve(chain) {
  const n = chain.readableLength;
  const descriptors = chain.descriptors;
  let readable = 0;
  let writable = 0;
  let sawWritable = false;
  for (const d of descriptors) {
    if (d.writable) {
      sawWritable = true;
      writable += d.length;
    } else {
      if (sawWritable) bad(`chain ${chain.head}: a readable descriptor after a writable one`);
      readable += d.length;
    }
  }
  const count = descriptors.length;
  stats.descriptorsPerChain[Math.min(count, 6)]++;
  if (count < 3 || count > 5) bad(`chain ${chain.head}: ${count} descriptors`);
  if (readable !== n || writable !== chain.writableLength) {
    bad(
      `chain ${chain.head}: lengths ${readable}/${writable}, chain says ${n}/${chain.writableLength}`,
    );
  }
  if (n > MAX_REQUEST || chain.writableLength < n + 4) {
    bad(`chain ${chain.head}: request ${n} bytes, ${chain.writableLength} writable`);
    vq.push(chain, 0);
    return;
  }
  const got = chain.read(request.subarray(0, n));
  if (got !== n) bad(`chain ${chain.head}: read ${got} of ${n} bytes`);
  for (let i = 0; i < n; i++) reply[i] = (request[i] + 1) & 0xff;
  const sum = fnv1a(request, n);
  reply[n] = sum & 0xff;
  reply[n + 1] = (sum >>> 8) & 0xff;
  reply[n + 2] = (sum >>> 16) & 0xff;
  reply[n + 3] = (sum >>> 24) & 0xff;
  const written = chain.write(reply.subarray(0, n + 4));
  if (written !== n + 4) bad(`chain ${chain.head}: wrote ${written} of ${n + 4} bytes`);
  vq.push(chain, written);
}

function interruptIfNeeded() {
  if (vq.needsNotification()) {
    if (dropInterruptEvery > 0 && ++stats.needed % dropInterruptEvery === 0) {
      stats.dropped++; // the watchdog test's sabotage: an interrupt the device owed, not sent
      return;
    }
    stats.interrupts++;
    Atomics.add(words, IRQ, 1);
    Atomics.notify(words, IRQ);
  } else {
    stats.interruptsSuppressed++;
  }
}

let popped = 0; // chains popped, mod 2^16: the device's view of avail.idx

function run() {
  let lastProgress = performance.now();
  for (;;) {
    let batch = 0;
    let chain;
    while ((chain = vq.pop()) !== undefined) {
      popped = (popped + 1) & 0xffff;
      stats.chains++;
      serve(chain);
      if (++batch % NOTIFY_EVERY === 0) interruptIfNeeded();
    }
    if (batch > 0) {
      if (batch % NOTIFY_EVERY !== 0) interruptIfNeeded();
      lastProgress = performance.now();
      continue;
    }
    if (vq.broken) throw new Error('the queue reports itself broken');
    if (Atomics.load(words, STOP) !== 0) return;
    if (performance.now() - lastProgress > stallMs) {
      throw new Error(`stalled: no chain for ${stallMs} ms after ${stats.chains} chains`);
    }
    // Idle: ask for kicks, re-check, sleep. The kick word is read before enabling, so a kick
    // sent after the re-check changes it and the wait returns at once.
    const kick = Atomics.load(words, KICK);
    if (vq.enableNotification()) {
      stats.enableFoundWork++;
      vq.disableNotification();
      continue;
    }
    stats.sleeps++;
    const woke = Atomics.wait(words, KICK, kick, waitMs);
    if (woke === 'timed-out') {
      stats.timeouts++;
      const availIdx = ctx.readU16LE(avail + 2);
      if (availIdx !== popped && Atomics.load(words, STOP) === 0) {
        const late = Atomics.wait(words, KICK, kick, graceMs);
        if (late === 'timed-out' && Atomics.load(words, KICK) === kick) stats.lostKicks++;
        else stats.lateKicks++;
      }
    } else {
      stats.kicks++;
    }
    vq.disableNotification();
  }
}

try {
  run();
  parentPort.postMessage({ type: 'done', stats });
} catch (error) {
  parentPort.postMessage({
    type: 'error',
    message: String(error?.stack ?? error),
    code: error?.code,
    stats,
  });
}
