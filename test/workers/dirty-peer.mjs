/**
 * A device in another thread sharing guest memory and its dirty log with the main thread,
 * for test/dirty.test.ts. It attaches to the memory the main thread posts as a handle, then
 * runs one request per message and answers each with `{ id, ok, ... }`: the result, or the
 * code of the error it got. Requests name the log's client; the log methods take their
 * arguments as an array so that omitted arguments stay omitted.
 */
import { DMAAttributes, DMAContext, GuestMemory, ScatterGatherList } from '../../dist/index.js';
import { serve } from './serve.mjs';

/** @type {GuestMemory | undefined} */
let memory;
/** @type {DMAContext | undefined} */
let ctx;

/** Every write path the library has, one after another, each at its own address. */
function writeEveryPath(at) {
  const bytes = Uint8Array.of(1, 2, 3, 4);
  ctx.write(at.write, bytes);
  ctx.rw(at.rw, bytes, DMAAttributes.WRITE);
  ctx.set(at.set, 0x5a, 3);
  ctx.writeU8(at.writeU8, 1);
  ctx.writeU16LE(at.writeU16LE, 0x1234);
  ctx.writeU16BE(at.writeU16BE, 0x1234);
  ctx.writeU32LE(at.writeU32LE, 0x12345678);
  ctx.writeU32BE(at.writeU32BE, 0x12345678);
  ctx.writeU64LE(at.writeU64LE, 0x0102030405060708n);
  ctx.writeU64BE(at.writeU64BE, 0x0102030405060708n);
  new ScatterGatherList(ctx).add(at.scatter, 2).scatter(Uint8Array.of(9, 9));
  const view = ctx.map(at.map, 8, DMAAttributes.WRITE);
  view.fill(7);
  ctx.unmap(view, 1);
  memory.write(at.memoryWrite, bytes);
}

/** Runs one request; returns the reply's payload. */
function run(request) {
  switch (request.op) {
    case 'attach': {
      memory = GuestMemory.fromHandle(request.handle);
      ctx = new DMAContext(memory);
      const log = memory.dirtyLog(request.client);
      return { client: log.client, pageSize: log.pageSize };
    }
    case 'write':
      ctx.write(request.addr, Uint8Array.from(request.bytes));
      return {};
    case 'read': {
      const bytes = new Uint8Array(request.length);
      ctx.read(request.addr, bytes);
      memory.read(request.addr, bytes);
      ctx.readU32LE(request.addr);
      return { bytes: [...bytes] };
    }
    case 'everyPath':
      writeEveryPath(request.at);
      return {};
    case 'collect':
      return { pages: memory.dirtyLog(request.client).collect(...request.args) };
    case 'clear':
      memory.dirtyLog(request.client).clear(...request.args);
      return {};
    case 'mark':
      memory.dirtyLog(request.client).mark(...request.args);
      return {};
    case 'isDirty':
      return { dirty: memory.dirtyLog(request.client).isDirty(...request.args) };
    case 'wholeSpace': {
      // Ranges over the whole guest address space: the log must bound its work by the pages
      // it has, not by the range (the main thread bounds how long it waits for the answer).
      const log = memory.dirtyLog(request.client);
      const top = 2 ** 53 - 1; // the longest length there is
      const dirty = log.isDirty(0, top);
      const far = log.isDirty(2 ** 52, 2 ** 52);
      const pages = log.collect(0, top);
      log.clear(0, top);
      log.clear(2 ** 40, top - 2 ** 40);
      return { dirty, far, pages, after: log.collect() };
    }
    default:
      throw new Error(`unknown request ${String(request.op)}`);
  }
}

serve(run);
