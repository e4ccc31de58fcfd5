/**
 * A device in another thread sharing an IOMMU domain with the main thread, for
 * test/iommu-workers.test.ts. It attaches to the guest memory and the domain the main thread
 * posts as handles, with its own `onFault` listener, then runs one request per message
 * (map, unmap, DMA read or write, translate) and answers each with `{ id, ok, ... }`: the
 * result, or the code of the error it got.
 */
import { parentPort } from 'node:worker_threads';
import { DMAContext, GuestMemory, IommuDomain } from '../../dist/index.js';
import { serve } from './serve.mjs';

/** @type {IommuDomain | undefined} */
let domain;
/** @type {GuestMemory | undefined} */
let memory;
/** @type {DMAContext | undefined} */
let ctx;
/** @type {SharedArrayBuffer | undefined} */
let domainBuffer;
/** Every fault this thread's listener received since the last `faults` request. */
let faults = [];

/** Runs one request; returns the reply's payload. */
function run(request) {
  switch (request.op) {
    case 'attach':
      domainBuffer = request.domain.buffer;
      domain = IommuDomain.fromHandle(request.domain, {
        onFault: (fault) => {
          faults.push({ ...fault });
        },
      });
      memory = GuestMemory.fromHandle(request.memory);
      ctx = new DMAContext(memory, { iommu: domain });
      return { pageSize: domain.pageSize, mappingCount: domain.mappingCount };
    case 'map':
      domain.map(request.iova, request.gpa, request.size, request.perm);
      return {};
    case 'unmap':
      return { removed: domain.unmap(request.iova, request.size) };
    case 'translate':
      return { translation: { ...domain.translate(request.iova, request.attrs) } };
    case 'read': {
      const bytes = new Uint8Array(request.length);
      ctx.read(request.iova, bytes);
      return { bytes: [...bytes] };
    }
    case 'write':
      ctx.write(request.iova, Uint8Array.from(request.bytes));
      return {};
    case 'readU32LE':
      return { value: ctx.readU32LE(request.iova) };
    case 'hang': {
      // What a thread that dies inside an access leaves behind: an in-flight slot. No caller
      // code runs inside an access any more, so the slot is written here as IommuDomain's
      // enter writes it (src/iommu.ts: 16 header words, the generation in word 1, then 256
      // slots holding (generation & 0x3fffffff) + 1); then the thread blocks until the main
      // thread terminates it.
      const words = new Int32Array(domainBuffer);
      Atomics.store(words, 16 + 255, (Atomics.load(words, 1) & 0x3fffffff) + 1);
      parentPort.postMessage({ hanging: true });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
      return {};
    }
    case 'faults': {
      const seen = faults;
      faults = [];
      return { faults: seen };
    }
    default:
      throw new Error(`unknown request ${String(request.op)}`);
  }
}

serve(run);
