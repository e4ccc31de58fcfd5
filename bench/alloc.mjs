/**
 * Allocation: garbage collections observed while one kind of access runs 2×10^6 times with
 * numeric attributes. A scavenge comes every few MB of allocation (the young generation is
 * 1–16 MiB), so even 8 bytes per access over 2×10^6 accesses shows up as collections; zero
 * collections means no allocation per access. Heap-used deltas are too noisy to show this.
 *
 * Needs a callable `gc()` (see bench/index.mjs) to start every kind from a clean heap.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { DMAAttributes, DMAContext, GuestMemory, IommuDomain, ScatterGatherList } from 'dma-attrs';

const { BIDIRECTIONAL, RELAXED } = DMAAttributes;
const ADDR = 4096;
const IOVA_BASE = 1 << 24;
const MEMORY_SIZE = 1 << 20;
const VALUE32 = 0x12345678;
const PAGE = 4096;

const settle = () =>
  new Promise((resolve) => {
    setTimeout(resolve, 20);
  });

/**
 * The kinds measured. `mustBeZero` kinds are the budget; `byDesign` kinds allocate on purpose
 * and are reported as such, with the reason.
 */
function kinds() {
  const memory = new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'tso' });
  const ctx = new DMAContext(memory);
  const domain = new IommuDomain();
  domain.map(IOVA_BASE, 0, MEMORY_SIZE, BIDIRECTIONAL);
  const iommuCtx = new DMAContext(memory, { iommu: domain });
  const buf8 = new Uint8Array(8);
  const buf64 = new Uint8Array(64);
  const buf4k = new Uint8Array(4096);
  const sink = { value: 0 };
  // The batch's function is made once: a closure per call would be the benchmark's allocation.
  const fourReads = () => {
    for (let index = 0; index < 4; index++) iommuCtx.read(IOVA_BASE + ADDR, buf64);
  };
  const list = new ScatterGatherList(ctx);
  list.add(ADDR, 32);
  list.add(ADDR + 256, 32);
  // Small integers at ADDR (no V8 heap number to return), a large one at ADDR + 64.
  const prepare = () => {
    ctx.writeU32LE(ADDR, VALUE32);
    ctx.writeU32LE(ADDR + 64, 0xabababab);
  };
  const zero = (kind, access) => ({ kind, access, expect: 'zero' });
  return {
    sink,
    prepare,
    list: [
      zero('read 8B', () => ctx.read(ADDR, buf8)),
      zero('read 8B relaxed', () => ctx.read(ADDR, buf8, RELAXED)),
      zero('read 64B', () => ctx.read(ADDR, buf64)),
      zero('read 64B relaxed', () => ctx.read(ADDR, buf64, RELAXED)),
      zero('write 8B', () => ctx.write(ADDR, buf8)),
      zero('write 8B relaxed', () => ctx.write(ADDR, buf8, RELAXED)),
      zero('write 64B', () => ctx.write(ADDR, buf64)),
      zero('write 64B relaxed', () => ctx.write(ADDR, buf64, RELAXED)),
      zero('write 4KiB', () => ctx.write(ADDR, buf4k)),
      zero('set 64B', () => ctx.set(ADDR + 128, 0xab, 64)),
      zero('set 64B relaxed', () => ctx.set(ADDR + 128, 0xab, 64, RELAXED)),
      // The word read holds a value below 2^30 (written by `prepare`): see the last kind.
      zero('readU32LE', () => (sink.value ^= ctx.readU32LE(ADDR))),
      zero('readU32LE relaxed', () => (sink.value ^= ctx.readU32LE(ADDR, RELAXED))),
      zero('writeU32LE', () => ctx.writeU32LE(ADDR, VALUE32)),
      zero('writeU32LE relaxed', () => ctx.writeU32LE(ADDR, VALUE32, RELAXED)),
      zero("barrier('full')", () => ctx.barrier('full')),
      zero('IOMMU read 64B (IOTLB hit)', () => iommuCtx.read(IOVA_BASE + ADDR, buf64)),
      zero('IOMMU write 64B (IOTLB hit)', () => iommuCtx.write(IOVA_BASE + ADDR, buf64)),
      // The general path: two IOMMU pages, a scatter-gather list, a batch.
      zero('IOMMU read 64B across pages', () => iommuCtx.read(IOVA_BASE + PAGE - 32, buf64)),
      zero(
        'IOMMU readU32LE (IOTLB hit)',
        () => (sink.value ^= iommuCtx.readU32LE(IOVA_BASE + ADDR)),
      ),
      zero('IOMMU batch of 4 reads 64B', () => iommuCtx.batch(fourReads)),
      {
        kind: 'gather 2 × 32B',
        access: () => list.gather(buf64),
        expect: 'by design',
        note: 'an access of several pieces makes one view of guest memory per piece (internal/copy.ts)',
      },
      {
        kind: 'readU32LE of a value ≥ 2^31',
        access: () => (sink.value ^= ctx.readU32LE(ADDR + 64)),
        expect: 'by design',
        note: 'V8 returns a u32 ≥ 2^31 from a call it does not inline as a heap number (16 B)',
      },
      {
        kind: 'read 4KiB',
        access: () => ctx.read(ADDR, buf4k),
        expect: 'by design',
        note: 'reads above 192 B make one view of guest memory per access (internal/copy.ts)',
      },
    ],
  };
}

/**
 * Counts GC events per kind of access.
 *
 * @param {{ accesses: number, filter: RegExp, progress: (line: string) => void }} options
 * @returns {Promise<{ accesses: number, kinds: Array<object> }>}
 */
export async function runAllocation({ accesses, filter, progress }) {
  let collections = 0;
  const observer = new PerformanceObserver((list) => {
    collections += list.getEntries().length;
  });
  observer.observe({ entryTypes: ['gc'] });
  const { list, sink, prepare } = kinds();
  const rows = [];
  try {
    for (const { kind, access, expect, note } of list) {
      if (!filter.test(kind)) continue;
      // Warm-up: optimised code and type feedback first, so that a deoptimisation's
      // own allocations are not charged to the access.
      for (let call = 0; call < 1e5; call++) access();
      prepare();
      globalThis.gc();
      await settle();
      collections = 0;
      for (let call = 0; call < accesses; call++) access();
      // GC entries are delivered asynchronously: let the observer catch up.
      await settle();
      const gcEvents = collections;
      rows.push({
        kind,
        accesses,
        gcEvents,
        expect,
        met: expect === 'zero' ? gcEvents === 0 : null,
        ...(note === undefined ? {} : { note }),
      });
      progress(
        `allocation: ${kind.padEnd(28)} ${String(gcEvents).padStart(4)} GC events in ${accesses} accesses${expect === 'zero' ? '' : ` (${expect})`}`,
      );
    }
  } finally {
    observer.disconnect();
  }
  if (sink.value === 0.5) progress('unreachable');
  return { accesses, kinds: rows };
}

// ---- The virtio device (issue 12) ----------------------------------------------------------

/**
 * A guest driver for the virtio demo's ring that runs in the device's thread, allocating
 * nothing: it keeps `inFlight` requests on the ring, refilling each with a fresh payload
 * before publishing it, and takes completions off the used ring. Barriers are not needed:
 * nothing runs between its stores and the device's loads but this thread.
 */
function sameThreadGuest(memory, protocol, inFlight) {
  const { MEMORY_SIZE, REQUEST_SLOTS, BUFFERS, PAYLOAD_SIZE, DESC_TABLE, DESC_SIZE } = protocol;
  const { AVAIL_ENTRIES, AVAIL_IDX, USED_IDX, USED_ENTRIES, QUEUE_SIZE } = protocol;
  const { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, REQUEST_SALT, fillPayload } = protocol;
  const base = memory.offsetOf(0, MEMORY_SIZE);
  const bytes = new Uint8Array(memory.buffer, base, MEMORY_SIZE);
  const u16 = new Uint16Array(memory.buffer, base, MEMORY_SIZE >> 1);
  const u32 = new Uint32Array(memory.buffer, base, MEMORY_SIZE >> 2);
  // Two descriptors per request slot, written once: request (device-readable), response.
  for (let slot = 0; slot < REQUEST_SLOTS; slot++) {
    const word = (DESC_TABLE + DESC_SIZE * 2 * slot) >> 2;
    const request = BUFFERS + slot * 2 * PAYLOAD_SIZE;
    u32.set([request, 0, PAYLOAD_SIZE, VRING_DESC_F_NEXT | ((2 * slot + 1) << 16)], word);
    u32.set([request + PAYLOAD_SIZE, 0, PAYLOAD_SIZE, VRING_DESC_F_WRITE], word + 4);
  }
  let availIdx = 0;
  let lastUsed = 0;
  let seq = 0;
  let bad = 0;
  return {
    /** Publishes `inFlight` requests. */
    submit() {
      for (let request = 0; request < inFlight; request++) {
        const slot = availIdx % inFlight;
        fillPayload(bytes, BUFFERS + slot * 2 * PAYLOAD_SIZE, seq, REQUEST_SALT);
        seq = (seq + 1) >>> 0;
        u16[(AVAIL_ENTRIES >> 1) + (availIdx & (QUEUE_SIZE - 1))] = 2 * slot;
        availIdx = (availIdx + 1) & 0xffff;
      }
      u16[AVAIL_IDX >> 1] = availIdx;
    },
    /** Takes the completions; returns how many (a response of the wrong length is `bad`). */
    reap() {
      const used = u16[USED_IDX >> 1];
      const count = (used - lastUsed) & 0xffff;
      for (let index = 0; index < count; index++) {
        const entry = (USED_ENTRIES >> 2) + 2 * ((lastUsed + index) & (QUEUE_SIZE - 1));
        if (u32[entry + 1] !== PAYLOAD_SIZE) bad++;
      }
      lastUsed = used;
      return count;
    },
    get bad() {
      return bad;
    },
  };
}

/**
 * The bytes `run(rounds)` allocates per packet, and where: V8's sampling heap profiler
 * (through node:inspector) samples one allocation in every 64 bytes on average, keeping those
 * collected since, and scales its samples to an estimate of all allocations. Sites are the
 * allocating functions (the innermost frame V8 reports; inlining can hide callers) that
 * account for at least 1 byte per packet, largest first.
 *
 * @param {(rounds: number) => void} run
 * @param {number} rounds
 * @param {number} packets the packets `run(rounds)` moves.
 * @returns {Promise<{ bytesPerPacket: number | null,
 *   sites: { site: string, bytesPerPacket: number }[] }>}
 *   `bytesPerPacket` null without an inspector.
 */
async function sampleAllocations(run, rounds, packets) {
  let session;
  try {
    const { Session } = await import('node:inspector/promises');
    session = new Session();
    session.connect();
  } catch {
    return { bytesPerPacket: null, sites: [] };
  }
  try {
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 64,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    run(rounds);
    const { profile } = await session.post('HeapProfiler.stopSampling');
    const bySite = new Map();
    let total = 0;
    const pending = [profile.head];
    while (pending.length > 0) {
      const node = pending.pop();
      pending.push(...node.children);
      if (node.selfSize === 0) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      // Only what the ring and the library allocate: not the profiler's own messages.
      if (url.startsWith('node:') || url === '') continue;
      const site = `${functionName || '(anonymous)'} (${url.split('/').pop()}:${lineNumber + 1})`;
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
      total += node.selfSize;
    }
    const sites = [...bySite]
      .map(([site, bytes]) => ({ site, bytesPerPacket: bytes / packets }))
      .filter((entry) => entry.bytesPerPacket >= 1)
      .sort((a, b) => b.bytesPerPacket - a.bytesPerPacket);
    return { bytesPerPacket: total / packets, sites };
  } finally {
    session.disconnect();
  }
}

/** The device rings the virtio allocation count runs, in order. */
export const VIRTIO_ALLOCATION_VARIANTS = ['raw', 'attrs', 'legacy', 'relaxed'];

/**
 * Allocation of the virtio demo's device, per variant: its ring (examples/virtio: the library's
 * `SplitVirtqueue` for `attrs`, hand-written code for the others) serves `packets` requests
 * from a same-thread guest (4 in flight, as in the demo) on shared memory, and the GC events
 * during them are counted. Then which allocations they are: V8's sampling heap profiler over
 * 10^5 more packets (see `sampleAllocations`) gives the bytes per packet and the functions
 * that allocate them. The guest allocates nothing, which the `raw` row shows.
 *
 * @param {{ packets: number, variants?: string[], progress: (line: string) => void }} options
 * @returns {Promise<object>} `{ packets, inFlight, variants: [{ variant, ring, gcEvents,
 *   bytesPerPacket, sites, nsPerPacket, corrupted }] }`, or `{ skipped }` without the demo.
 *   `bytesPerPacket` is null where the profiler is not available.
 */
export async function runVirtioAllocation({
  packets,
  variants = VIRTIO_ALLOCATION_VARIANTS,
  progress,
}) {
  let protocol;
  let deviceRing;
  try {
    protocol = await import('../examples/virtio/protocol.mjs');
    ({ deviceRing } = await import('../examples/virtio/device-loop.mjs'));
  } catch (error) {
    const reason = `the virtio demo (examples/virtio) could not be loaded: ${error instanceof Error ? error.message : String(error)}`;
    progress(`virtio allocation: skipped, ${reason}`);
    return { skipped: reason };
  }
  const inFlight = 4;
  let collections = 0;
  const observer = new PerformanceObserver((list) => {
    collections += list.getEntries().length;
  });
  observer.observe({ entryTypes: ['gc'] });
  const rows = [];
  try {
    for (const variant of variants) {
      const memory = new GuestMemory({ size: protocol.MEMORY_SIZE, barrierPolicy: 'auto' });
      const ring = deviceRing(memory, variant);
      const guest = sameThreadGuest(memory, protocol, inFlight);
      const round = (rounds) => {
        for (let index = 0; index < rounds; index++) {
          guest.submit();
          ring.serve();
          ring.needsInterrupt();
          ring.enableKicks();
          guest.reap();
        }
      };
      // Warm-up: optimised code first, so that compilation's allocations are not counted.
      round(1e5 / inFlight);
      globalThis.gc();
      await settle();
      collections = 0;
      const started = performance.now();
      round(packets / inFlight);
      const nsPerPacket = ((performance.now() - started) * 1e6) / packets;
      await settle();
      const gcEvents = collections;
      const { bytesPerPacket, sites } = await sampleAllocations(round, 1e5 / inFlight, 1e5);
      const row = {
        variant,
        ring: ring.name,
        packets,
        gcEvents,
        bytesPerPacket,
        sites,
        nsPerPacket,
        corrupted: ring.corrupted + guest.bad,
      };
      rows.push(row);
      progress(
        `virtio allocation: ${variant.padEnd(8)} ${String(gcEvents).padStart(4)} GC events in ${packets} packets, ${row.bytesPerPacket === null ? 'bytes not sampled' : `${row.bytesPerPacket.toFixed(1)} B/packet`}${sites.length > 0 ? ` (${sites.map((entry) => `${entry.site} ${entry.bytesPerPacket.toFixed(0)} B`).join(', ')})` : ''}, ${nsPerPacket.toFixed(0)} ns/packet (guest and device, one thread)`,
      );
    }
  } finally {
    observer.disconnect();
  }
  return { packets, inFlight, variants: rows };
}
