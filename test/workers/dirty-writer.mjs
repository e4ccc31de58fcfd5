/**
 * The writing side of the dirty-log race in test/dirty.test.ts. The writers take pages in
 * ascending order from one shared counter, each page once (so they are always on
 * neighbouring pages, in the same bitmap word), and rotate through the first `paths` of the write paths: `ctx.write`, `writeU32LE`, `set`,
 * `memory.write`, `scatter`, a WRITE `map` + `unmap`, and `write` behind an IOMMU whose
 * IOVA is the guest address plus `iovaOffset`. Around each write it takes a tick of the
 * shared clock (an `Atomics.add`, so ticks of all threads are totally ordered): `begin`
 * before the write starts, `end` after it has returned; it records `[page, begin, end]`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  DMAAttributes,
  DMAContext,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
} from '../../dist/index.js';
import { advance, waitAtLeast } from './litmus-sync.mjs';

const {
  handle,
  domain,
  iovaOffset,
  participants,
  pageSize,
  pages,
  clock,
  next,
  start,
  done,
  records,
  budgetMs,
  paths,
} = workerData;

const memory = GuestMemory.fromHandle(handle);
const ctx = new DMAContext(memory);
const behindIommu = new DMAContext(memory, { iommu: IommuDomain.fromHandle(domain) });
const sg = new ScatterGatherList(ctx);
const clockWord = new Int32Array(clock);
const nextPage = new Int32Array(next);
const startCell = new Int32Array(start);
const doneCell = new Int32Array(done);
const log = new Int32Array(records);
const bytes = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);

/** One write of at most 8 bytes at `gpa`, which lies at least 8 bytes before its page's end. */
function writeOnce(path, gpa, count) {
  switch (path) {
    case 0:
      ctx.write(gpa, bytes.subarray(0, 1 + (count % 8)));
      return;
    case 1:
      ctx.writeU32LE(gpa - (gpa % 4), count >>> 0);
      return;
    case 2:
      ctx.set(gpa, count & 0xff, 1 + (count % 5));
      return;
    case 3:
      memory.write(gpa, bytes.subarray(0, 3));
      return;
    case 4:
      sg.clear();
      sg.add(gpa, 2);
      sg.scatter(bytes.subarray(0, 2));
      return;
    case 5: {
      const view = ctx.map(gpa, 4, DMAAttributes.WRITE);
      view[0] = count & 0xff;
      ctx.unmap(view, 1);
      return;
    }
    default:
      behindIommu.write(gpa + iovaOffset, bytes.subarray(0, 2));
  }
}

advance(startCell, 1);
waitAtLeast(startCell, participants);
const deadline = performance.now() + budgetMs;
let count = 0;
for (;;) {
  if ((count & 63) === 0 && performance.now() > deadline) break;
  // The next page of all: the writers take neighbouring pages, so they mark the same
  // bitmap word at the same time.
  const page = Atomics.add(nextPage, 0, 1);
  if (page >= pages) break;
  const begin = Atomics.add(clockWord, 0, 1);
  writeOnce(count % paths, page * pageSize + ((count * 8) % (pageSize - 8)), count);
  const end = Atomics.add(clockWord, 0, 1);
  Atomics.store(log, 3 * count, page);
  Atomics.store(log, 3 * count + 1, begin);
  Atomics.store(log, 3 * count + 2, end);
  count++;
}
advance(doneCell, 1);
parentPort.postMessage({ writes: count });
