/**
 * A device that DMAs into guest memory while another thread (test/workers/growth-grower.mjs)
 * grows its backing, for test/growth.test.ts. It attaches with `GuestMemory.fromHandle`,
 * makes one context without an IOMMU and one behind a domain of its own, and runs batches of
 * random accesses of every kind (test/workers/growth-ops.mjs), each checked against a mirror
 * of the backing that this thread alone writes. After each batch it compares the whole
 * backing with the mirror and counts the batch in `BATCHES`; it records which growth counts
 * (`GROWS`) it saw at the start of a batch, and that `memory.buffer` never got shorter.
 *
 * It stops `batchesAfterLast` batches after the last growth, at the first disagreement, on
 * `STOP`, or at its limits (`maxBatches`, `waitMs`), and reports what it saw and its mirror.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
} from '../../dist/index.js';
import {
  BackingModel,
  CONTROL,
  IommuModel,
  mapDomain,
  prng,
  randomOp,
  runOp,
} from './growth-ops.mjs';

const {
  handle,
  control,
  regions,
  mappings,
  iovas,
  gpas,
  ignored,
  maxLength,
  seed,
  grows,
  batchesAfterLast,
  maxBatches,
  opsPerBatch,
  waitMs,
  diffLimit,
} = workerData;
const words = new Int32Array(control);
const backing = handle.backing;

/** The backing's bytes now, seen without the library. */
function current() {
  return new Uint8Array(backing instanceof SharedArrayBuffer ? backing : backing.buffer);
}

const memory = GuestMemory.fromHandle(handle);
const domain = new IommuDomain();
mapDomain(domain, mappings);
const start = current();
const model = new BackingModel(regions, start.length, maxLength);
model.mirror.set(start);
model.ignored.push(...ignored);

const common = { memory, model, ScatterGatherList, DMAError, DMAFault, current, diffLimit };
const envs = [
  { ...common, ctx: new DMAContext(memory), iommu: undefined, addrs: gpas },
  {
    ...common,
    ctx: new DMAContext(memory, { iommu: domain }),
    iommu: new IommuModel(mappings),
    addrs: iovas,
  },
];

const next = prng(seed);
const observed = new Set();
const problems = [];
const outcomes = {};
let batches = 0;
let afterLast = 0;
let bufferLength = memory.buffer.byteLength;
const deadline = performance.now() + waitMs;

try {
  while (batches < maxBatches && problems.length === 0) {
    if (Atomics.load(words, CONTROL.STOP) !== 0) break;
    if (performance.now() > deadline) {
      problems.push(`still running after ${waitMs} ms (${batches} batches)`);
      break;
    }
    const grown = Atomics.load(words, CONTROL.GROWS);
    observed.add(grown);
    for (let i = 0; i < opsPerBatch && problems.length === 0; i++) {
      const env = envs[i & 1];
      const result = runOp(env, randomOp(next, env.addrs, gpas));
      outcomes[result.outcome] = (outcomes[result.outcome] ?? 0) + 1;
      if (result.problem !== undefined) problems.push(result.problem);
    }
    const length = memory.buffer.byteLength;
    if (length < bufferLength)
      problems.push(`memory.buffer shrank from ${bufferLength} to ${length}`);
    bufferLength = length;
    const bytes = current();
    model.resize(bytes.length);
    const difference = model.diff(bytes);
    if (difference !== undefined && problems.length === 0)
      problems.push(`after batch ${batches}: ${difference}`);
    batches++;
    Atomics.store(words, CONTROL.BATCHES, batches);
    Atomics.notify(words, CONTROL.BATCHES);
    if (grown === grows && ++afterLast >= batchesAfterLast) break;
  }
} catch (error) {
  problems.push(`the worker threw: ${error instanceof Error ? error.stack : String(error)}`);
}
if (problems.length > 0) Atomics.store(words, CONTROL.STOP, 1);
parentPort.postMessage({
  batches,
  observed: [...observed].sort((a, b) => a - b),
  problems,
  outcomes,
  bufferLength: memory.buffer.byteLength,
  isShared: memory.buffer instanceof SharedArrayBuffer,
  length: model.length,
  mirror: model.mirror.slice(0, model.length),
});
