/**
 * A device reads a descriptor and writes a completion, in the shape of a virtio split ring
 * cut down to one request.
 *
 * The main thread plays the guest's vCPU: it puts a payload and a descriptor in guest
 * memory and publishes the descriptor by bumping `avail.idx`. A worker plays the device: it
 * sees the index move, reads the descriptor and the payload it points to, checksums the
 * payload, and completes the request by writing a used element and bumping `used.idx`. The
 * guest polls `used.idx` and checks what the device wrote.
 *
 * Run it with `npm run example`, or `npx tsup && node examples/descriptor-completion.mjs`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { TextDecoder, TextEncoder } from 'node:util';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, GuestMemory } from 'dma-attrs';

// Guest-physical layout.
const AVAIL_IDX = 0x0000; // u16, written by the guest: descriptors posted so far
const USED_IDX = 0x0040; // u16, written by the device: requests completed so far
const USED_ELEM = 0x0080; // { id: u32, status: u32, checksum: u32 }
const DESC = 0x1000; // { addr: u64, len: u32, flags: u16, id: u16 }
const PAYLOAD = 0x2000;

const DESC_F_WRITE = 0x2; // the buffer is for the device to write, not to read
const STATUS_OK = 0;
const STATUS_BAD_DESCRIPTOR = 1;
const REQUEST_ID = 7;
const DEADLINE_MS = 5000;

/** FNV-1a, 32 bits: the "work" the device does on the payload. */
function checksum(bytes) {
  let hash = 0x811c9dc5;
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash;
}

/** Polls until `read()` returns something other than `old`, or throws at the deadline. */
async function waitForChange(read, old, what) {
  const deadline = performance.now() + DEADLINE_MS;
  for (;;) {
    const value = read();
    if (value !== old) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

const hex = (value) => `0x${value.toString(16)}`;

async function device() {
  const ctx = new DMAContext(GuestMemory.fromHandle(workerData.handle));

  // READ: the acquire after this load keeps the descriptor read below from being satisfied
  // with memory older than the index that announced the descriptor.
  const availIdx = await waitForChange(() => ctx.readU16LE(AVAIL_IDX), 0, 'avail.idx');

  // READ: the descriptor's fields decide the payload read. The acquire after this read is
  // what keeps that payload read, which is RELAXED, from moving before it.
  const desc = new Uint8Array(16);
  ctx.read(DESC, desc);
  const view = new DataView(desc.buffer);
  const addr = Number(view.getBigUint64(0, true));
  const len = view.getUint32(8, true);
  const flags = view.getUint16(12, true);
  const id = view.getUint16(14, true);
  console.log(
    `device: avail.idx = ${availIdx}; descriptor ${id}: addr ${hex(addr)}, len ${len}, flags ${hex(flags)}`,
  );

  let status = STATUS_BAD_DESCRIPTOR;
  let sum = 0;
  if ((flags & DESC_F_WRITE) === 0) {
    // RELAXED: a bulk copy that needs no barrier of its own; the acquire above orders it.
    const payload = new Uint8Array(len);
    ctx.read(addr, payload, DMAAttributes.RELAXED);
    sum = checksum(payload);
    status = STATUS_OK;
    console.log(`device: payload "${new TextDecoder().decode(payload)}", checksum ${hex(sum)}`);
  }

  // RELAXED: the used element is published by the used.idx store below, whose release
  // orders it (and the payload read above) first. The guest may reuse the payload buffer
  // as soon as it sees used.idx move.
  const used = new Uint8Array(12);
  const usedView = new DataView(used.buffer);
  usedView.setUint32(0, id, true);
  usedView.setUint32(4, status, true);
  usedView.setUint32(8, sum, true);
  ctx.write(USED_ELEM, used, DMAAttributes.RELAXED);

  // WRITE: the release before this store keeps everything above from moving after it, so
  // a guest that sees the new used.idx sees the used element too. Aligned and not relaxed,
  // the store is one Atomics.store on the index word, which the guest loads with Atomics.
  ctx.writeU16LE(USED_IDX, 1);
  console.log(`device: completed request ${id} with status ${status}; used.idx = 1`);
}

async function guest() {
  const memory = new GuestMemory({ size: 0x4000 });
  // The vCPU reads and stores the ring indices as single 16-bit words, with Atomics, as an
  // emulated CPU's aligned 16-bit store would be.
  const words = new Uint16Array(memory.buffer);
  const availWord = memory.offsetOf(AVAIL_IDX, 2) / 2;
  const usedWord = memory.offsetOf(USED_IDX, 2) / 2;

  const payload = new TextEncoder().encode('hello from the guest');
  memory.write(PAYLOAD, payload);
  const desc = new Uint8Array(16);
  const view = new DataView(desc.buffer);
  view.setBigUint64(0, BigInt(PAYLOAD), true);
  view.setUint32(8, payload.length, true);
  view.setUint16(12, 0, true); // device-readable
  view.setUint16(14, REQUEST_ID, true);
  memory.write(DESC, desc);

  const worker = new Worker(new URL(import.meta.url), {
    workerData: { handle: memory.handle() },
  });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const failed = new Promise((_, reject) => worker.once('error', reject));
  failed.catch(() => {}); // raced below; a later error shows as the exit code

  // The guest's smp_wmb(): the payload and descriptor before the index that publishes them.
  // It fences on the memory's fence word, the same word the device's barriers use.
  memory.barrier('release');
  Atomics.store(words, availWord, 1);
  console.log(`guest: posted descriptor ${REQUEST_ID} (${payload.length} bytes); avail.idx = 1`);

  try {
    const usedIdx = await Promise.race([
      waitForChange(() => Atomics.load(words, usedWord), 0, 'used.idx'),
      failed,
    ]);
    // The guest's smp_rmb(): the used element after the index that published it.
    memory.barrier('acquire');
    const used = new Uint8Array(12);
    memory.read(USED_ELEM, used);
    const usedView = new DataView(used.buffer);
    const id = usedView.getUint32(0, true);
    const status = usedView.getUint32(4, true);
    const sum = usedView.getUint32(8, true);
    // Let the device's output through first, so the transcript reads in order.
    const code = await exited;
    if (code !== 0) throw new Error(`the device exited with code ${code}`);
    console.log(`guest: used.idx = ${usedIdx}; used element: id ${id}, status ${status}`);
    if (id !== REQUEST_ID || status !== STATUS_OK || sum !== checksum(payload)) {
      throw new Error(`bad completion: id ${id}, status ${status}, checksum ${hex(sum)}`);
    }
    console.log(`guest: request ${id} completed: status OK, checksum ${hex(sum)} matches`);
  } finally {
    await worker.terminate();
  }
}

if (isMainThread) {
  guest().catch((error) => {
    console.error(`guest: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  });
} else {
  await device();
}
