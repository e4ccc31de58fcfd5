/**
 * A device thread for test/iommu-slots.test.ts. It attaches to the guest memory and the IOMMU
 * domain from the handles in `workerData` (never calling `domain.close()`), with its own
 * DMAContext, and then does what `workerData.mode` says:
 *
 * - `'cycle'`: a few accesses through the mappings the main thread made (a write and its
 *   read-back within one page, one across two pages mapped to non-contiguous guest-physical
 *   pages, a u32 write and read), each checked; then posts `{ done: true, ok, error? }` and
 *   stays alive, idle (outside any access), until the main thread terminates it.
 * - `'fresh'`: maps a new page itself, writes and reads through it, unmaps it, and tries an
 *   access to the old IOVA, which must fault; posts what it saw.
 * - `'loop'`: posts `{ ready: true }`, then loops on IOMMU accesses (IOTLB hits within one
 *   page and split accesses across non-contiguous pages) until the main thread terminates it,
 *   so that it may die inside an access. `control[worker]` counts its accesses.
 *
 * Every byte it writes is derived from `workerData.seed`, so the main thread can check where
 * each worker's bytes landed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, DMAError, GuestMemory, IommuDomain } from '../../dist/index.js';

const { mode, seed, iova, span, pageSize } = workerData;
const memory = GuestMemory.fromHandle(workerData.memory);
const domain = IommuDomain.fromHandle(workerData.domain);
const ctx = new DMAContext(memory, { iommu: domain });

/** `length` bytes derived from `salt`, never all equal. */
function pattern(length, salt) {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 13 + salt * 7 + (i >> 8) * 3 + 1) & 0xff;
  return bytes;
}

function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function codeOf(run) {
  try {
    run();
  } catch (error) {
    return error instanceof DMAError ? error.code : `not a DMAError: ${String(error)}`;
  }
  return 'no fault';
}

function describeError(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** A write and its read-back at `at`, checked. */
function roundTrip(at, length, salt) {
  const data = pattern(length, salt);
  ctx.write(at, data);
  const back = new Uint8Array(length);
  ctx.read(at, back);
  if (!same(back, data)) throw new Error(`read-back at 0x${at.toString(16)} differs`);
}

if (mode === 'cycle') {
  try {
    // Within one page (an IOTLB hit the second time), then across the boundary of two
    // pages that the main thread mapped to non-contiguous guest pages.
    roundTrip(iova + 16, 48, seed);
    roundTrip(iova + 16, 48, seed + 1);
    roundTrip(iova + pageSize - 40, 80, seed + 2);
    const word = (Math.imul(seed, 0x9e3779b1) | 1) >>> 0;
    ctx.writeU32LE(iova + 8, word);
    if (ctx.readU32LE(iova + 8) !== word) throw new Error('u32 read-back differs');
    parentPort.postMessage({ done: true, ok: true });
  } catch (error) {
    parentPort.postMessage({ done: true, ok: false, error: describeError(error) });
  }
  // Stay alive (a listener keeps the port referenced) until the main thread terminates this
  // thread: it must not end on its own, and it never calls domain.close().
  parentPort.on('message', () => undefined);
} else if (mode === 'fresh') {
  const { gpa } = workerData;
  const result = { ok: true, codes: {} };
  try {
    domain.map(iova, gpa, pageSize, DMAAttributes.BIDIRECTIONAL);
    roundTrip(iova + 100, 200, seed);
    roundTrip(iova + 300, 2, seed + 1);
    result.removed = domain.unmap(iova, pageSize);
    result.codes.write = codeOf(() => {
      ctx.write(iova + 100, Uint8Array.of(0xee));
    });
    result.codes.read = codeOf(() => {
      ctx.read(iova + 100, new Uint8Array(4));
    });
    result.codes.readU32LE = codeOf(() => ctx.readU32LE(iova + 300));
  } catch (error) {
    result.ok = false;
    result.error = describeError(error);
  }
  parentPort.postMessage(result);
} else if (mode === 'loop') {
  const counts = new Int32Array(workerData.control);
  const small = pattern(64, seed);
  const large = pattern(span, seed + 1);
  const back = new Uint8Array(span);
  parentPort.postMessage({ ready: true });
  for (let sequence = 0; ; sequence++) {
    switch (sequence & 3) {
      case 0:
        ctx.write(iova + ((sequence >>> 2) & 63) * 8, small);
        break;
      case 1:
        ctx.read(iova + 512, back.subarray(0, 64));
        break;
      case 2:
        ctx.write(iova + 8, large);
        break;
      default:
        ctx.read(iova + 8, back);
        break;
    }
    Atomics.add(counts, workerData.worker, 1);
  }
} else {
  throw new Error(`unknown mode ${String(mode)}`);
}
