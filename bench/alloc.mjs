/**
 * Allocation: garbage collections observed while one kind of access runs 2×10^6 times with
 * numeric attributes. A scavenge comes every few MB of allocation (the young generation is
 * 1–16 MiB), so even 8 bytes per access over 2×10^6 accesses shows up as collections; zero
 * collections means no allocation per access. Heap-used deltas are too noisy to show this.
 *
 * Needs a callable `gc()` (see bench/index.mjs) to start every kind from a clean heap.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { DMAAttributes, DMAContext, GuestMemory, IommuDomain } from 'dma-attrs';

const { BIDIRECTIONAL, RELAXED } = DMAAttributes;
const ADDR = 4096;
const IOVA_BASE = 1 << 24;
const MEMORY_SIZE = 1 << 20;
const VALUE32 = 0x12345678;

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
