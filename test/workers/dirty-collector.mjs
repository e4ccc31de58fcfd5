/**
 * The collecting side of the dirty-log race in test/dirty.test.ts. It collects client
 * `client` over and over until every writer is done (then once more): every `wholeEvery`-th
 * time the whole memory, otherwise a window of `windowPages` pages around the next page the
 * writers will take, so that it keeps clearing the very bitmap words the writers are setting bits in.
 * Around each collect it takes a tick of the shared clock (`begin` before it starts, `end`
 * after it returned) and records `[begin, end, count, ...page indices]`.
 *
 * `mode: 'collect'` uses `log.collect`. `mode: 'isDirty-then-clear'` is the broken
 * collector of the control: it asks `isDirty` page by page, then `clear`s the range, so a
 * page written between its `isDirty` and the `clear` is cleared without being reported.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from '../../dist/index.js';
import { advance, waitAtLeast } from './litmus-sync.mjs';

const {
  handle,
  client,
  mode,
  writers,
  participants,
  pageSize,
  pages,
  clock,
  next,
  start,
  done,
  windowPages,
  wholeEvery,
  budgetMs,
} = workerData;

const log = GuestMemory.fromHandle(handle).dirtyLog(client);
const clockWord = new Int32Array(clock);
const nextPage = new Int32Array(next);
const startCell = new Int32Array(start);
const doneCell = new Int32Array(done);

/** The broken collector: not one atomic snapshot-and-clear, but a scan and then a clear. */
function scanThenClear(gpa, length) {
  const found = [];
  for (let addr = gpa; addr < gpa + length; addr += pageSize) {
    if (log.isDirty(addr, pageSize)) found.push(addr);
  }
  log.clear(gpa, length);
  return found;
}

const out = [];
advance(startCell, 1);
waitAtLeast(startCell, participants);
const deadline = performance.now() + budgetMs;
for (let n = 0; ; n++) {
  const finished = Atomics.load(doneCell, 0) >= writers;
  const whole = n % wholeEvery === 0;
  let gpa = 0;
  let length = pages * pageSize;
  if (!whole) {
    const hot = Atomics.load(nextPage, 0);
    const low = Math.max(0, Math.min(pages - windowPages, hot - (windowPages >> 1)));
    gpa = low * pageSize;
    length = windowPages * pageSize;
  }
  const begin = Atomics.add(clockWord, 0, 1);
  let found;
  if (mode === 'collect') found = whole ? log.collect() : log.collect(gpa, length);
  else found = scanThenClear(gpa, length);
  const end = Atomics.add(clockWord, 0, 1);
  out.push(begin, end, found.length);
  for (const addr of found) out.push(addr / pageSize);
  if (finished || performance.now() > deadline) break;
}
const flat = Int32Array.from(out);
parentPort.postMessage({ records: flat }, [flat.buffer]);
