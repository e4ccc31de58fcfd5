/**
 * A device in another thread, for test/memory.test.ts. It attaches to the guest memory the
 * main thread posts as a handle, then runs one DMA request per message and answers each
 * with `{ id, ok, ... }`: the bytes it read, or the code of the error it got.
 */
import { DMAContext, GuestMemory } from '../../dist/index.js';
import { serve } from './serve.mjs';

/** @type {DMAContext | undefined} */
let ctx;

/** Runs one request against the attached memory; returns the reply's payload. */
function run(request) {
  switch (request.op) {
    case 'attach': {
      const memory = GuestMemory.fromHandle(request.handle);
      ctx = new DMAContext(memory);
      return {
        regions: memory.regions.map(({ base, size, offset }) => ({ base, size, offset })),
        shared: memory.shared,
        barrierPolicy: memory.barrierPolicy,
        isShared: memory.buffer instanceof SharedArrayBuffer,
      };
    }
    case 'read': {
      const bytes = new Uint8Array(request.length);
      ctx.read(request.addr, bytes);
      return { bytes: [...bytes] };
    }
    case 'write':
      ctx.write(request.addr, Uint8Array.from(request.bytes));
      return {};
    case 'writeU32LE':
      ctx.writeU32LE(request.addr, request.value);
      return {};
    case 'barrier':
      ctx.memory.barrier(request.strength);
      return {};
    default:
      throw new Error(`unknown request ${String(request.op)}`);
  }
}

serve(run);
