/**
 * Growth of an adopted backing while the memory is in use (SPEC §4.1, issue 10): an unshared
 * `WebAssembly.Memory` grown between accesses and from inside the library's own callbacks, a
 * shared one and a growable `SharedArrayBuffer` grown by one worker while another DMAs into
 * them, a resizable `ArrayBuffer` shrunk below a region and grown back, a detached
 * `ArrayBuffer`, and random interleavings of accesses and resizes.
 *
 * Every access, of every kind, is checked against a reference model (test/workers/
 * growth-ops.mjs) that mirrors the whole backing and knows where every guest byte lives
 * without asking the library: the bytes read or written, the outcome, that a failed access
 * is a DMAFault with the predicted code and changed no byte of guest memory or of the
 * caller's buffer, and that no byte outside the regions ever changes. The workers import the
 * built package from dist/, which `npm test` builds before vitest runs.
 */
import { Buffer } from 'node:buffer';
import { existsSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
  type GuestMemoryHandle,
} from '../src/index.js';
import {
  BackingModel,
  CONTROL,
  IommuModel,
  KINDS,
  describeOp,
  mapDomain,
  pattern,
  prng,
  randomOp,
  runOp,
  type Env,
  type Mapping,
  type Op,
  type OpKind,
  type Region,
} from './workers/growth-ops.mjs';
import { bounded, startWorker, stopWorkersAfterEach } from './support/workers.js';

const { READ, WRITE, BIDIRECTIONAL } = DMAAttributes;

/** The `WebAssembly.Memory` surface these tests use (the TypeScript lib in use has no type for it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}
const WasmMemoryCtor = (
  globalThis as unknown as {
    WebAssembly: {
      Memory: new (descriptor: {
        initial: number;
        maximum: number;
        shared?: boolean;
      }) => WasmMemory;
    };
  }
).WebAssembly.Memory;
const WASM_PAGE = 65536;

interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void;
}
const ResizableArrayBufferCtor = ArrayBuffer as unknown as new (
  byteLength: number,
  options: { maxByteLength: number },
) => ResizableArrayBuffer;

interface GrowableSharedArrayBuffer extends SharedArrayBuffer {
  grow(byteLength: number): void;
}
const GrowableSharedArrayBufferCtor = SharedArrayBuffer as unknown as new (
  byteLength: number,
  options: { maxByteLength: number },
) => GrowableSharedArrayBuffer;

beforeAll(() => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the growth workers import dist/index.js: run `npx tsup` first');
  }
});

stopWorkersAfterEach();

// ---------------------------------------------------------------------------------------
// The layout of the WebAssembly memories: two guest-adjacent regions apart in the backing.

/**
 * Guest RAM [0x1000, 0x5000) in two regions: the second starts where the first ends in guest
 * space but 0x6000 bytes further on in the backing, so an access across 0x3000 is two
 * backing pieces. Both lie in the first two wasm pages; growth adds pages after them.
 */
const REGIONS: readonly Region[] = [
  { base: 0x1000, size: 0x2000, offset: 0x8000 },
  { base: 0x3000, size: 0x2000, offset: 0x10000 },
];

/**
 * An IOMMU view of it: IOVA 0x40000 covers the first region's last page and the second's
 * first (crossing at IOVA 0x41000), 0x42000 the first region's first page (so an access
 * across IOVA 0x42000 jumps back in guest space), 0x43000 a read-only page, 0x44000 a
 * mapping onto a hole, and 0x45000 nothing.
 */
const MAPPINGS: readonly Mapping[] = [
  { iova: 0x40000, gpa: 0x2000, size: 0x2000, perm: BIDIRECTIONAL },
  { iova: 0x42000, gpa: 0x1000, size: 0x1000, perm: BIDIRECTIONAL },
  { iova: 0x43000, gpa: 0x4000, size: 0x1000, perm: READ },
  { iova: 0x44000, gpa: 0x6000, size: 0x1000, perm: BIDIRECTIONAL },
];
/** Guest-physical addresses near every edge: hole to RAM, region to region, RAM to hole. */
const GPAS = [0x0ff8, 0x1000, 0x1800, 0x2ff0, 0x3000, 0x3ff8, 0x4ff0, 0x5000];
/** IOVAs near every edge of the mappings above. */
const IOVAS = [0x40000, 0x40ff0, 0x41ff8, 0x42ff8, 0x43ff0, 0x44ff8, 0x45000];
/** Where the shared memories keep their fence word: in the wasm heap, outside the regions. */
const FENCE = 0x40;

/** The outcomes seen, to show that a test exercised faults as well as successes. */
type Outcomes = Record<string, number>;

/** Runs `op` through `env`, expects the library and the model to agree, and returns the outcome. */
function check(env: Env, op: Op, outcomes?: Outcomes): string {
  const result = runOp(env, op);
  expect(result.problem, describeOp(op)).toBeUndefined();
  if (outcomes !== undefined) outcomes[result.outcome] = (outcomes[result.outcome] ?? 0) + 1;
  return result.outcome;
}

/** One access of every kind at `addr` (`gpa` for the vCPU's own), the lists crossing at `cross`. */
function everyKind(addr: number, gpa: number, cross: number, seed: number, length = 24): Op[] {
  return KINDS.map((kind, index) => ({
    kind,
    addr: kind === 'cpuRead' || kind === 'cpuWrite' ? gpa : addr,
    length,
    seed: seed * 131 + index,
    relaxed: index % 3 === 0,
    ranges: [
      [addr, 12],
      [cross - 8, 16],
      [addr + 40, 7],
    ],
  }));
}

/** The environment of one context: the library's classes come from src/. */
function envOf(
  ctx: DMAContext,
  memory: GuestMemory,
  model: BackingModel,
  current: () => Uint8Array,
  mappings?: readonly Mapping[],
  diffLimit?: number,
): Env {
  return {
    ctx,
    memory,
    model,
    iommu: mappings === undefined ? undefined : new IommuModel(mappings),
    ScatterGatherList,
    DMAError,
    DMAFault,
    current,
    ...(diffLimit === undefined ? {} : { diffLimit }),
  };
}

/** Every region's bytes read through `memory.read`, against the model. */
function expectRegions(memory: GuestMemory, model: BackingModel): void {
  for (const region of model.regions) {
    const seen = new Uint8Array(region.size);
    memory.read(region.base, seen);
    expect(
      Buffer.from(seen).equals(Buffer.from(model.gather([[region.base, region.size]]))),
      `region at 0x${region.base.toString(16)}`,
    ).toBe(true);
  }
}

function expectCode(action: () => unknown, code: string): DMAError {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(DMAError);
  expect((caught as DMAError).code).toBe(code);
  return caught as DMAError;
}

// ---------------------------------------------------------------------------------------
// 1. An unshared WebAssembly.Memory, in one thread.

/** An unshared wasm memory, painted, adopted, with a model of it. */
function unsharedWasm(maxPages: number, options: { dirtyLog?: { clients: string[] } } = {}) {
  const wasm = new WasmMemoryCtor({ initial: 2, maximum: maxPages });
  const current = () => new Uint8Array(wasm.buffer);
  const model = new BackingModel(REGIONS, wasm.buffer.byteLength, maxPages * WASM_PAGE);
  model.paint(current(), 3);
  const memory = new GuestMemory({ backing: wasm, regions: REGIONS, ...options });
  return { wasm, current, model, memory };
}

/** Grows `wasm` by a page and checks what the memory shows of it. */
function growAndCheck(wasm: WasmMemory, memory: GuestMemory, model: BackingModel): void {
  const old = wasm.buffer;
  const before = old.byteLength;
  expect(wasm.grow(1)).toBe(before / WASM_PAGE);
  expect(old.byteLength).toBe(0); // the old ArrayBuffer is detached
  expect(memory.buffer).toBe(wasm.buffer);
  expect(memory.buffer.byteLength).toBe(before + WASM_PAGE);
  expect(memory.regions).toEqual(REGIONS);
  model.resize(wasm.buffer.byteLength);
  expect(model.diff(new Uint8Array(wasm.buffer))).toBeUndefined();
  expectRegions(memory, model);
}

describe('an unshared WebAssembly.Memory that grows while in use', () => {
  it('every kind of access, with and without an IOMMU, is right before and after each grow', () => {
    const { wasm, current, model, memory } = unsharedWasm(16);
    expect(memory.shared).toBe(false);
    expect(memory.backing).toBe(wasm);
    expect(memory.buffer).toBe(wasm.buffer);
    expect(memory.offsetOf(0x2ff8, 8)).toBe(0x9ff8);
    expect(memory.offsetOf(0x2ff8, 16)).toBe(-1); // two backing pieces
    const domain = new IommuDomain();
    mapDomain(domain, MAPPINGS);
    const plain = envOf(new DMAContext(memory), memory, model, current);
    const behind = envOf(
      new DMAContext(memory, { iommu: domain }),
      memory,
      model,
      current,
      MAPPINGS,
    );
    const outcomes: Outcomes = {};
    const next = prng(7);
    for (let round = 0; round < 10; round++) {
      // Across the two regions (two backing pieces): every kind must succeed.
      for (const op of everyKind(0x2ff8, 0x2ff8, 0x3000, round)) {
        expect(check(plain, op, outcomes), describeOp(op)).toBe('ok');
      }
      for (const op of everyKind(0x40ff8, 0x2ff8, 0x41000, round + 100)) {
        expect(check(behind, op, outcomes), describeOp(op)).toBe('ok');
      }
      // Near the other edges, where some fault; the model says which.
      for (const op of everyKind(
        GPAS[round % GPAS.length] as number,
        GPAS[(round + 3) % GPAS.length] as number,
        0x3000,
        round + 200,
      )) {
        check(plain, op, outcomes);
      }
      for (const op of everyKind(
        IOVAS[round % IOVAS.length] as number,
        GPAS[(round + 5) % GPAS.length] as number,
        0x42000,
        round + 300,
      )) {
        check(behind, op, outcomes);
      }
      for (let i = 0; i < 40; i++) {
        check(plain, randomOp(next, GPAS, GPAS), outcomes);
        check(behind, randomOp(next, IOVAS, GPAS), outcomes);
      }
      growAndCheck(wasm, memory, model);
    }
    expect(wasm.buffer.byteLength).toBe(12 * WASM_PAGE);
    for (const code of [
      'ok',
      'ERR_DMA_UNASSIGNED',
      'ERR_DMA_IOMMU_UNMAPPED',
      'ERR_DMA_IOMMU_PERMISSION',
    ]) {
      expect(outcomes[code], `outcome ${code}`).toBeGreaterThan(0);
    }
  });

  it('growth inside a trace callback or an IOMMU fault listener does not break the next access', () => {
    const MAX_PAGES = 48;
    const { wasm, current, model, memory } = unsharedWasm(MAX_PAGES);
    let grows = 0;
    let growInTrace = true;
    const growIfRoom = (): void => {
      if (wasm.buffer.byteLength < MAX_PAGES * WASM_PAGE) {
        wasm.grow(1);
        grows++;
      }
    };
    let events = 0;
    // A trace runs once the access's bytes have moved: the next access meets the new buffer.
    const trace = (): void => {
      if (growInTrace && ++events % 3 === 0) growIfRoom();
    };
    // A fault listener runs inside the access that faults, before it throws.
    const domain = new IommuDomain({ onFault: growIfRoom });
    mapDomain(domain, MAPPINGS);
    const plain = envOf(new DMAContext(memory, { trace }), memory, model, current, undefined);
    const behind = envOf(
      new DMAContext(memory, { iommu: domain, trace }),
      memory,
      model,
      current,
      MAPPINGS,
    );
    const outcomes: Outcomes = {};
    const next = prng(11);
    let traceGrows = 0;
    for (let i = 0; i < 400; i++) {
      const env = i % 2 === 0 ? plain : behind;
      const op = i % 2 === 0 ? randomOp(next, GPAS, GPAS) : randomOp(next, IOVAS, GPAS);
      // A map's view is made before its trace runs; growth there would detach the view it
      // returns (see the map tests below), so these maps run without it.
      growInTrace = !op.kind.startsWith('map');
      const before = grows;
      check(env, op, outcomes);
      if (growInTrace && grows > before) traceGrows++;
      expect(memory.buffer).toBe(wasm.buffer);
    }
    growInTrace = false;
    expect(traceGrows).toBeGreaterThan(10);
    expect(outcomes.ERR_DMA_IOMMU_UNMAPPED).toBeGreaterThan(0);
    expect(grows).toBeGreaterThan(20);
    expect(model.diff(current())).toBeUndefined();
    expectRegions(memory, model);
  });

  it('a view mapped before a grow belongs to the old buffer; unmap and later maps still work', () => {
    const { wasm, current, model, memory } = unsharedWasm(8);
    const ctx = new DMAContext(memory);
    const env = envOf(ctx, memory, model, current);
    const data = pattern(32, 9);
    const view = ctx.map(0x2fe0, 64, WRITE);
    expect(view.length).toBe(32); // the first region ends at 0x3000
    view.set(data);
    model.scatter([[0x2fe0, 32]], data);
    wasm.grow(1);
    expect(view.length).toBe(0); // JavaScript detached the old buffer, and the view with it
    ctx.unmap(view);
    // What the device wrote through the view before the grow is in the new buffer.
    expect(model.diff(current())).toBeUndefined();
    expectRegions(memory, model);
    for (const op of everyKind(0x2ff8, 0x1800, 0x3000, 1).filter((op) =>
      op.kind.startsWith('map'),
    )) {
      expect(check(env, op)).toBe('ok');
    }
  });

  it('a WRITE view unmapped after a grow with its accessed length marks its pages dirty', () => {
    // The view is detached (length 0) by the grow, but the bytes the device wrote through
    // it are guest memory: unmap(view, accessedLength) is how the device reports them (§4.2).
    const { wasm, memory } = unsharedWasm(8, { dirtyLog: { clients: ['code'] } });
    const log = memory.dirtyLog('code');
    const ctx = new DMAContext(memory);
    const view = ctx.map(0x1800, 32, WRITE);
    view.set(pattern(32, 4));
    wasm.grow(1);
    expect(view.length).toBe(0);
    ctx.unmap(view, 32);
    expect(log.collect()).toEqual([0x1000]);
    const seen = new Uint8Array(32);
    memory.read(0x1800, seen);
    expect([...seen]).toEqual([...pattern(32, 4)]);
  });

  it('a map whose own trace callback grows the memory: no other error, and the next accesses work', () => {
    const { wasm, current, model, memory } = unsharedWasm(8);
    let grow = true;
    const ctx = new DMAContext(memory, {
      trace: (event) => {
        if (grow && event.op === 'map') wasm.grow(1);
      },
    });
    let view: Uint8Array | undefined;
    let caught: unknown;
    try {
      view = ctx.map(0x1800, 16, BIDIRECTIONAL);
    } catch (error) {
      caught = error;
    }
    grow = false;
    if (caught !== undefined) expect(caught).toBeInstanceOf(DMAError);
    expect(wasm.buffer.byteLength).toBe(3 * WASM_PAGE);
    if (view !== undefined) {
      // The view was made before the trace ran, over the buffer the grow then detached.
      expect([0, 16]).toContain(view.length);
      ctx.unmap(view);
    }
    const env = envOf(ctx, memory, model, current);
    for (const op of everyKind(0x2ff8, 0x1800, 0x3000, 5)) expect(check(env, op)).toBe('ok');
  });
});

// ---------------------------------------------------------------------------------------
// 2 and 3. A shared backing grown by one worker while another DMAs into it.

interface DmaReport {
  batches: number;
  observed: number[];
  problems: string[];
  outcomes: Outcomes;
  bufferLength: number;
  isShared: boolean;
  length: number;
  mirror: Uint8Array;
}

interface GrowReport {
  grows?: number;
  byteLength?: number;
  error?: string;
}

/** The first message of `worker`; rejects if it fails or exits first. */
function reportOf<T>(worker: Worker, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.once('message', (message: T) => {
      resolve(message);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      reject(new Error(`${what} exited with code ${code} before reporting`));
    });
  });
}

/**
 * Starts the DMA worker on `handle` and the grower on `target`, and waits (bounded) for both
 * reports. The grower grows `grows` times, waiting for `BATCHES_BETWEEN` batches of accesses
 * after each growth but the last, so accesses certainly run between growths.
 */
async function growWhileDMA(
  handle: GuestMemoryHandle,
  target: WasmMemory | GrowableSharedArrayBuffer,
  grows: number,
  step: number,
  maxLength: number,
  ignored: [number, number][],
): Promise<{ dma: DmaReport; grower: GrowReport }> {
  const control = new SharedArrayBuffer(CONTROL.BYTES);
  const dmaWorker = startWorker('growth-dma.mjs', {
    handle,
    control,
    regions: REGIONS,
    mappings: MAPPINGS,
    iovas: IOVAS,
    gpas: GPAS,
    ignored,
    maxLength,
    seed: 0x600d,
    grows,
    batchesAfterLast: 4,
    maxBatches: 2000,
    opsPerBatch: 16,
    waitMs: 20_000,
    diffLimit: 0x20000,
  });
  const growerWorker = startWorker('growth-grower.mjs', {
    target,
    control,
    grows,
    step,
    batchesBetween: 3,
    waitMs: 10_000,
  });
  try {
    const [dma, grower] = await bounded(
      Promise.all([
        reportOf<DmaReport>(dmaWorker, 'growth-dma.mjs'),
        reportOf<GrowReport>(growerWorker, 'growth-grower.mjs'),
      ]),
      25_000,
      'the DMA and growing workers to report',
    );
    return { dma, grower };
  } finally {
    Atomics.store(new Int32Array(control), CONTROL.STOP, 1);
  }
}

/** What every concurrent-growth run must show; then the final content, from the main thread. */
function checkGrowth(
  report: { dma: DmaReport; grower: GrowReport },
  grows: number,
  memory: GuestMemory,
  current: () => Uint8Array,
  finalLength: number,
  ignored: [number, number][],
): void {
  const { dma, grower } = report;
  console.log('growth while DMAing:', {
    batches: dma.batches,
    observed: dma.observed.length,
    outcomes: dma.outcomes,
    grows: grower.grows,
    byteLength: grower.byteLength,
  });
  expect(grower.error).toBeUndefined();
  expect(dma.problems).toEqual([]);
  expect(grower.grows).toBe(grows);
  // The DMA worker started batches at every growth count from 0 to the last.
  expect(dma.observed).toEqual(Array.from({ length: grows + 1 }, (_, i) => i));
  expect(dma.isShared).toBe(true);
  expect(dma.outcomes.ok).toBeGreaterThan(0);
  expect(dma.outcomes.ERR_DMA_UNASSIGNED).toBeGreaterThan(0);
  // Every thread sees the growth: the worker's memory, the main thread's.
  expect(grower.byteLength).toBe(finalLength);
  expect(dma.bufferLength).toBe(finalLength);
  expect(memory.buffer.byteLength).toBe(finalLength);
  expect(current().length).toBe(finalLength);

  // The final content, from the main thread: the backing is what the worker's mirror says.
  const model = new BackingModel(REGIONS, dma.length, finalLength);
  model.mirror.set(dma.mirror);
  model.ignored.push(...ignored);
  expect(dma.length).toBe(finalLength);
  expect(model.diff(current())).toBeUndefined();
  expectRegions(memory, model);
  // And the main thread's own DMA, across the two regions, lands in the grown backing.
  const ctx = new DMAContext(memory);
  ctx.write(0x2ffc, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
  expect([...current().subarray(0x9ffc, 0xa000)]).toEqual([1, 2, 3, 4]);
  expect([...current().subarray(0x10000, 0x10004)]).toEqual([5, 6, 7, 8]);
  expect(ctx.readU64LE(0x2ffc)).toBe(0x0807060504030201n);
}

describe('a shared backing grown from one worker while another DMAs through a handle', () => {
  it('a shared WebAssembly.Memory grown page by page to its maximum', async () => {
    const GROWS = 24;
    const maxLength = (2 + GROWS) * WASM_PAGE;
    const wasm = new WasmMemoryCtor({ initial: 2, maximum: 2 + GROWS, shared: true });
    const current = () => new Uint8Array(wasm.buffer);
    new BackingModel(REGIONS, wasm.buffer.byteLength, maxLength).paint(current(), 5);
    const memory = new GuestMemory({
      backing: wasm,
      regions: REGIONS,
      fence: { buffer: wasm, byteOffset: FENCE },
    });
    expect(memory.shared).toBe(true);
    expect(memory.fenceLocation).toEqual({ buffer: wasm, byteOffset: FENCE });
    const handle = memory.handle();
    expect(handle.backing).toBe(wasm);
    const ignored: [number, number][] = [[FENCE, 4]];
    const report = await growWhileDMA(handle, wasm, GROWS, 0, maxLength, ignored);
    checkGrowth(report, GROWS, memory, current, maxLength, ignored);
    expect(wasm.buffer.byteLength).toBe(maxLength);
    expect(memory.buffer).toBe(wasm.buffer);
  });

  it('a growable SharedArrayBuffer grown by uneven steps', async () => {
    const GROWS = 24;
    const STEP = 0x2ff8;
    const initial = 0x20000;
    const maxLength = initial + GROWS * STEP;
    const backing = new GrowableSharedArrayBufferCtor(initial, { maxByteLength: maxLength });
    const current = () => new Uint8Array(backing);
    new BackingModel(REGIONS, initial, maxLength).paint(current(), 6);
    const memory = new GuestMemory({ backing, regions: REGIONS });
    expect(memory.shared).toBe(true);
    expect(memory.buffer).toBe(backing);
    const handle = memory.handle();
    expect(handle.backing).toBe(backing);
    const report = await growWhileDMA(handle, backing, GROWS, STEP, maxLength, []);
    checkGrowth(report, GROWS, memory, current, maxLength, []);
  });
});

// ---------------------------------------------------------------------------------------
// 4. A resizable ArrayBuffer shrunk below a region, and grown back.

/**
 * Two guest-adjacent regions: [0x1000, 0x2000) at backing offset 0x1000, and
 * [0x2000, 0x3000) at 0x4000. Shrinking the backing to 0x3000 loses the whole second
 * region; to 0x4800, its upper half.
 */
const R_REGIONS: readonly Region[] = [
  { base: 0x1000, size: 0x1000, offset: 0x1000 },
  { base: 0x2000, size: 0x1000, offset: 0x4000 },
];
/** IOVA 0x10000 covers both regions (crossing at 0x11000), 0x12000 the second again. */
const R_MAPPINGS: readonly Mapping[] = [
  { iova: 0x10000, gpa: 0x1000, size: 0x2000, perm: BIDIRECTIONAL },
  { iova: 0x12000, gpa: 0x2000, size: 0x1000, perm: BIDIRECTIONAL },
];

function resizable() {
  const backing = new ResizableArrayBufferCtor(0x6000, { maxByteLength: 0x8000 });
  const current = () => new Uint8Array(backing);
  const model = new BackingModel(R_REGIONS, 0x6000, 0x8000);
  model.paint(current(), 8);
  const memory = new GuestMemory({ backing, regions: R_REGIONS });
  const domain = new IommuDomain();
  mapDomain(domain, R_MAPPINGS);
  const plain = envOf(new DMAContext(memory), memory, model, current);
  const behind = envOf(
    new DMAContext(memory, { iommu: domain }),
    memory,
    model,
    current,
    R_MAPPINGS,
  );
  return { backing, current, model, memory, plain, behind };
}

/** An op of `kind` at `addr`, `length` bytes (ranges for the lists). */
function op(kind: OpKind, addr: number, length: number, seed = 1, ranges?: [number, number][]): Op {
  return { kind, addr, length, seed, relaxed: false, ...(ranges === undefined ? {} : { ranges }) };
}

describe('a resizable ArrayBuffer shrunk below a region', () => {
  it('accesses touching the lost bytes are ERR_DMA_UNASSIGNED and change nothing; the rest works; grown back, they work on zeros', () => {
    const { backing, current, model, memory, plain, behind } = resizable();
    // Some known content everywhere first.
    for (const [addr, seed] of [
      [0x1800, 1],
      [0x1ff8, 2],
      [0x2400, 3],
    ] as const) {
      expect(check(plain, op('write', addr, 64, seed))).toBe('ok');
    }

    backing.resize(0x3000); // the second region is entirely beyond the end now
    expect(memory.buffer).toBe(backing);
    expect(memory.buffer.byteLength).toBe(0x3000);
    expect(memory.regions).toEqual(R_REGIONS);
    const lost: [Env, Op][] = [
      [plain, op('read', 0x2000, 16)],
      [plain, op('read', 0x1ff8, 16)], // starts in the live region
      [plain, op('rwRead', 0x2800, 8)],
      [plain, op('cpuRead', 0x2ff0, 16)],
      [
        plain,
        op('gather', 0, 0, 1, [
          [0x1100, 8],
          [0x1ff8, 16],
        ]),
      ],
      [plain, op('write', 0x2000, 16)],
      [plain, op('rwWrite', 0x1ffc, 8)],
      [plain, op('cpuWrite', 0x1ff0, 0x20)],
      [plain, op('set', 0x1ffe, 4)],
      // Three pieces, the first two in the live region, the last running into the lost one:
      // nothing moves at all.
      [
        plain,
        op('scatter', 0, 0, 2, [
          [0x1100, 8],
          [0x1200, 8],
          [0x1ffc, 8],
        ]),
      ],
      [
        plain,
        op('scatter', 0, 0, 3, [
          [0x1300, 8],
          [0x2100, 8],
        ]),
      ],
      [plain, op('writeU8', 0x2000, 1)],
      [plain, op('writeU32LE', 0x2800, 4)],
      [plain, op('writeU64BE', 0x1ffc, 8)], // crosses into the lost region
      [plain, op('writeU16BE', 0x2ffe, 2)],
      [plain, op('readU8', 0x2fff, 1)],
      [plain, op('readU32BE', 0x1ffe, 4)],
      [plain, op('readU64LE', 0x2008, 8)],
      [plain, op('mapRead', 0x2000, 16)],
      [plain, op('mapWrite', 0x2800, 16)],
      [plain, op('mapBoth', 0x2ff0, 64)],
      [behind, op('write', 0x11000, 16)],
      [behind, op('read', 0x10ff8, 16)],
      [behind, op('writeU32LE', 0x12000, 4)],
      [behind, op('readU16LE', 0x12ffe, 2)],
      [behind, op('set', 0x10ffc, 8)],
      [behind, op('mapWrite', 0x12000, 16)],
      [
        behind,
        op('scatter', 0, 0, 4, [
          [0x10100, 8],
          [0x10ff8, 16],
        ]),
      ],
      [
        behind,
        op('gather', 0, 0, 4, [
          [0x10100, 8],
          [0x12000, 16],
        ]),
      ],
    ];
    for (const [env, lostOp] of lost) {
      expect(check(env, lostOp), describeOp(lostOp)).toBe('ERR_DMA_UNASSIGNED');
    }
    // valid says so, and never throws.
    for (const [env, addr] of [
      [plain, 0x2000],
      [plain, 0x1ff8],
      [behind, 0x11000],
    ] as const) {
      expect(check(env, op('valid', addr, 16, 0))).toBe('ok');
      expect(env.ctx.valid(addr, 16, READ)).toBe(false);
    }
    // The region still inside works, every kind of access, and a map ends at its end.
    for (const liveOp of everyKind(0x1800, 0x1800, 0x1f00, 1)) {
      expect(check(plain, liveOp), describeOp(liveOp)).toBe('ok');
    }
    for (const liveOp of everyKind(0x10800, 0x1c00, 0x10f00, 2)) {
      expect(check(behind, liveOp), describeOp(liveOp)).toBe('ok');
    }
    expect(plain.ctx.map(0x1ff0, 0x20, READ).length).toBe(0x10);

    backing.resize(0x6000); // back: the second region's bytes are zero, and work again
    expect(memory.buffer.byteLength).toBe(0x6000);
    const zeros = new Uint8Array(0x1000).fill(0xff);
    plain.ctx.read(0x2000, zeros);
    expect(zeros.every((byte) => byte === 0)).toBe(true);
    for (const env of [plain, behind]) {
      const [addr, cross] = env === plain ? [0x1ff8, 0x2000] : [0x10ff8, 0x11000];
      for (const backOp of everyKind(addr, 0x1ff8, cross, 3)) {
        expect(check(env, backOp), describeOp(backOp)).toBe('ok');
      }
    }
    expect(model.diff(current())).toBeUndefined();
    expectRegions(memory, model);
  });

  it('cut through a region: accesses touching bytes past the end fault, the bytes before it answer right or fault, never anything else', () => {
    const { backing, current, model, memory, plain, behind } = resizable();
    backing.resize(0x4800); // the second region's upper half, [0x2800, 0x3000), is gone
    for (const [env, cutOp] of [
      [plain, op('read', 0x27f8, 16)],
      [plain, op('write', 0x2800, 4)],
      [plain, op('writeU64LE', 0x27fc, 8)],
      [plain, op('set', 0x2ff0, 16)],
      [
        plain,
        op('scatter', 0, 0, 5, [
          [0x2100, 8],
          [0x27f8, 16],
        ]),
      ],
      [plain, op('mapRead', 0x2800, 1)],
      [plain, op('cpuWrite', 0x27ff, 2)],
      [behind, op('write', 0x127f8, 16)],
      [behind, op('mapWrite', 0x12800, 8)],
    ] as const) {
      expect(check(env, cutOp), describeOp(cutOp)).toBe('ERR_DMA_UNASSIGNED');
    }
    // Before the end, in the cut region: right bytes or ERR_DMA_UNASSIGNED (the model allows
    // both: the contract promises only regions wholly inside); a map there is at most as
    // long as the bytes left.
    for (const cutOp of everyKind(0x2400, 0x2400, 0x2600, 6)) check(plain, cutOp);
    for (const cutOp of everyKind(0x12400, 0x2400, 0x12600, 7)) check(behind, cutOp);
    check(plain, op('mapBoth', 0x27f0, 0x40));
    // The first region is wholly inside: everything works.
    for (const liveOp of everyKind(0x1800, 0x1800, 0x1f00, 8)) {
      expect(check(plain, liveOp), describeOp(liveOp)).toBe('ok');
    }

    backing.resize(0); // nothing left at all
    for (const goneOp of everyKind(0x1800, 0x1800, 0x2000, 9)) {
      expect(check(plain, goneOp), describeOp(goneOp)).toBe(
        goneOp.kind === 'valid' ? 'ok' : 'ERR_DMA_UNASSIGNED',
      );
    }
    backing.resize(0x8000); // the maximum: both regions back, all zero
    for (const backOp of everyKind(0x1ff8, 0x1ff8, 0x2000, 10)) {
      expect(check(plain, backOp), describeOp(backOp)).toBe('ok');
    }
    expect(model.diff(current())).toBeUndefined();
    expectRegions(memory, model);
  });
});

// ---------------------------------------------------------------------------------------
// 5. A detached ArrayBuffer.

describe('a detached ArrayBuffer backing', () => {
  it('every access, of every kind, with or without an IOMMU, is ERR_DMA_UNASSIGNED', () => {
    const regions: readonly Region[] = [
      { base: 0, size: 0x1000, offset: 0 },
      { base: 0x1000, size: 0x1000, offset: 0x2000 },
    ];
    const mappings: readonly Mapping[] = [
      { iova: 0x10000, gpa: 0, size: 0x2000, perm: BIDIRECTIONAL },
    ];
    const backing = new ArrayBuffer(0x4000);
    const current = () => (backing.byteLength === 0 ? new Uint8Array(0) : new Uint8Array(backing));
    const model = new BackingModel(regions, 0x4000, 0x4000);
    model.paint(current(), 9);
    const memory = new GuestMemory({ backing, regions });
    const domain = new IommuDomain();
    mapDomain(domain, mappings);
    const plain = envOf(new DMAContext(memory), memory, model, current);
    const behind = envOf(
      new DMAContext(memory, { iommu: domain }),
      memory,
      model,
      current,
      mappings,
    );
    // Working, and with a view mapped, until the buffer is transferred away.
    expect(check(plain, op('write', 0x0ff8, 16))).toBe('ok');
    const view = plain.ctx.map(0x800, 16, READ);
    structuredClone(backing, { transfer: [backing] });
    expect(backing.byteLength).toBe(0);
    expect(memory.buffer.byteLength).toBe(0);
    plain.ctx.unmap(view);

    for (const [env, addr, cross] of [
      [plain, 0x0ff8, 0x1000],
      [plain, 0x0800, 0x1000],
      [behind, 0x10ff8, 0x11000],
      [behind, 0x11800, 0x11000],
    ] as const) {
      for (const goneOp of everyKind(addr, addr < 0x10000 ? addr : 0x1800, cross, addr)) {
        expect(check(env, goneOp), describeOp(goneOp)).toBe(
          goneOp.kind === 'valid' ? 'ok' : 'ERR_DMA_UNASSIGNED',
        );
      }
      expect(env.ctx.valid(addr, 1, READ)).toBe(false);
    }
    // A memory cannot adopt it now: its regions lie beyond its (zero) length.
    expectCode(() => new GuestMemory({ backing, regions }), 'ERR_DMA_INVALID_ARGUMENT');
  });
});

// ---------------------------------------------------------------------------------------
// 6. Random interleavings of accesses and resizes against the model.

/**
 * Three regions: [0x1000, 0x2000) at backing offset 0x2000, [0x2000, 0x3000) at 0x5000
 * (guest-adjacent, apart in the backing), a hole, and [0x5000, 0x5800) at 0x7000.
 */
const P_REGIONS: readonly Region[] = [
  { base: 0x1000, size: 0x1000, offset: 0x2000 },
  { base: 0x2000, size: 0x1000, offset: 0x5000 },
  { base: 0x5000, size: 0x800, offset: 0x7000 },
];
/** 0x10000 and 0x11000 swap the first two regions; 0x12000 is read-only over the third and a hole; 0x13000 is unmapped. */
const P_MAPPINGS: readonly Mapping[] = [
  { iova: 0x10000, gpa: 0x2000, size: 0x1000, perm: BIDIRECTIONAL },
  { iova: 0x11000, gpa: 0x1000, size: 0x1000, perm: BIDIRECTIONAL },
  { iova: 0x12000, gpa: 0x5000, size: 0x1000, perm: READ },
];
const P_GPAS = [
  0xff8, 0x1000, 0x1800, 0x1ff0, 0x2000, 0x2800, 0x2ff0, 0x3000, 0x4ff8, 0x5000, 0x57f0, 0x5800,
];
const P_IOVAS = [0x10000, 0x10800, 0x10ff0, 0x11ff0, 0x12000, 0x127f0, 0x12ff0, 0x13000];
/** Backing lengths at and around the regions' edges. */
const P_LENGTHS = [
  0, 0x2000, 0x27ff, 0x2800, 0x3000, 0x5000, 0x5001, 0x5800, 0x6000, 0x7000, 0x7400, 0x7800, 0x8000,
  0xa000,
];

type Command =
  { type: 'op'; viaIommu: boolean; op: Op } | { type: 'resize'; length: number } | { type: 'grow' };

const near = (points: readonly number[]) =>
  fc
    .tuple(fc.nat(points.length - 1), fc.integer({ min: -16, max: 16 }))
    .map(([index, delta]) => Math.max(0, (points[index] as number) + delta));

const opCommand: fc.Arbitrary<Command> = fc.boolean().chain((viaIommu) => {
  const addrs = viaIommu ? P_IOVAS : P_GPAS;
  return fc
    .record({
      kind: fc.constantFrom(...KINDS),
      addr: near(addrs),
      gpa: near(P_GPAS),
      length: fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 1, max: 48 }) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 0x1800 }) },
      ),
      seed: fc.nat(),
      relaxed: fc.boolean(),
      ranges: fc.array(fc.tuple(near(addrs), fc.integer({ min: 1, max: 40 })), {
        minLength: 1,
        maxLength: 4,
      }),
    })
    .map(({ gpa, ...op }): Command => ({
      type: 'op',
      viaIommu,
      op: op.kind === 'cpuRead' || op.kind === 'cpuWrite' ? { ...op, addr: gpa } : op,
    }));
});

/** Runs `commands` on a fresh memory adopted from `make()`; throws at the first disagreement. */
function runCommands(
  commands: readonly Command[],
  make: () => {
    backing: ArrayBuffer | WasmMemory;
    current: () => Uint8Array;
    maxLength: number;
    resize: (command: Command) => void;
  },
): void {
  const { backing, current, maxLength, resize } = make();
  const model = new BackingModel(P_REGIONS, current().length, maxLength);
  model.paint(current(), 12);
  const memory = new GuestMemory({ backing, regions: P_REGIONS });
  const domain = new IommuDomain();
  mapDomain(domain, P_MAPPINGS);
  const plain = envOf(new DMAContext(memory), memory, model, current);
  const behind = envOf(
    new DMAContext(memory, { iommu: domain }),
    memory,
    model,
    current,
    P_MAPPINGS,
  );
  for (const command of commands) {
    if (command.type !== 'op') {
      resize(command);
      model.resize(current().length);
      if (memory.buffer.byteLength !== current().length) {
        throw new Error(
          `memory.buffer is ${memory.buffer.byteLength} bytes, the backing ${current().length}`,
        );
      }
      continue;
    }
    const result = runOp(command.viaIommu ? behind : plain, command.op);
    if (result.problem !== undefined) throw new Error(result.problem);
  }
  model.resize(current().length);
  const difference = model.diff(current());
  if (difference !== undefined) throw new Error(difference);
}

describe('random interleavings of accesses and growth agree with the model', () => {
  it('on a resizable ArrayBuffer, shrunk and grown at random', () => {
    const resizeCommand: fc.Arbitrary<Command> = fc
      .oneof(fc.constantFrom(...P_LENGTHS), fc.integer({ min: 0, max: 0xa000 }))
      .map((length) => ({ type: 'resize', length }));
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof({ weight: 6, arbitrary: opCommand }, { weight: 1, arbitrary: resizeCommand }),
          { minLength: 1, maxLength: 40 },
        ),
        (commands) => {
          runCommands(commands, () => {
            const backing = new ResizableArrayBufferCtor(0x8000, { maxByteLength: 0xa000 });
            return {
              backing,
              current: () => new Uint8Array(backing),
              maxLength: 0xa000,
              resize: (command) => {
                if (command.type === 'resize') backing.resize(command.length);
              },
            };
          });
        },
      ),
      { numRuns: 150 },
    );
  });

  // Fails on Node 20 when the tests before it (the resizable ArrayBuffer ones) have made V8
  // optimize the address layer with views over a resizable ArrayBuffer: see the last test.
  it('on an unshared WebAssembly.Memory, grown at random', () => {
    const MAX_PAGES = 4;
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            { weight: 6, arbitrary: opCommand },
            { weight: 1, arbitrary: fc.constant<Command>({ type: 'grow' }) },
          ),
          { minLength: 1, maxLength: 40 },
        ),
        (commands) => {
          runCommands(commands, () => {
            const wasm = new WasmMemoryCtor({ initial: 1, maximum: MAX_PAGES });
            return {
              backing: wasm,
              current: () => new Uint8Array(wasm.buffer),
              maxLength: MAX_PAGES * WASM_PAGE,
              resize: () => {
                if (wasm.buffer.byteLength < MAX_PAGES * WASM_PAGE) wasm.grow(1);
              },
            };
          });
        },
      ),
      { numRuns: 150 },
    );
  });
});

// ---------------------------------------------------------------------------------------
// A regression test for a library bug found through a V8 JIT bug (Node 20, V8 11.3).

describe('a detach after V8 optimized the address layer on views of a resizable ArrayBuffer too', () => {
  // On Node 20.20 (V8 11.3), TurboFan code for a `typedArray.length` load whose feedback
  // includes views of a resizable ArrayBuffer does not check whether an ordinary view's
  // buffer was detached: it answers the old length. The address layer once trusted
  // `bytes.length` to notice a grown (detached) unshared wasm buffer or a detached
  // ArrayBuffer, so once a process had used both kinds of backing, accesses after a detach
  // went to the dead views: a small write was silently lost, a read answered 0 instead of
  // the guest's byte (or instead of ERR_DMA_UNASSIGNED), and word accesses threw a
  // TypeError from DataView or Atomics. The layer now never trusts a view's length (see
  // src/address.ts).
  it('an unshared wasm memory that grew, and an ArrayBuffer that was detached, still answer right', () => {
    const regions: readonly Region[] = [{ base: 0, size: 0x1000, offset: 0 }];
    const resizableBacking = new ResizableArrayBufferCtor(0x1000, { maxByteLength: 0x2000 });
    const wasm = new WasmMemoryCtor({ initial: 1, maximum: 2 });
    const plainBacking = new ArrayBuffer(0x1000);
    const viaResizable = new DMAContext(new GuestMemory({ backing: resizableBacking, regions }));
    const wasmMemory = new GuestMemory({ backing: wasm, regions });
    const plainMemory = new GuestMemory({ backing: plainBacking, regions });
    const viaWasm = new DMAContext(wasmMemory);
    const viaPlain = new DMAContext(plainMemory);
    viaWasm.write(0x20, Uint8Array.of(0x11, 0x22, 0x33, 0x44));
    // Enough accesses for V8 to optimize the accessors, with both kinds of view.
    const buf = new Uint8Array(4);
    for (let i = 0; i < 200_000; i++) {
      viaResizable.read(0x10, buf);
      viaWasm.read(0x10, buf);
      viaPlain.read(0x10, buf);
    }

    wasm.grow(1);
    const one = new Uint8Array(1);
    viaWasm.read(0x20, one);
    expect(one[0]).toBe(0x11);
    wasmMemory.read(0x21, one);
    expect(one[0]).toBe(0x22);
    viaWasm.write(0x30, Uint8Array.of(9));
    expect(new Uint8Array(wasm.buffer)[0x30]).toBe(9);
    viaWasm.write(0x40, Uint8Array.of(5, 6, 7, 8));
    expect([...new Uint8Array(wasm.buffer, 0x40, 4)]).toEqual([5, 6, 7, 8]);
    expect(viaWasm.readU32LE(0x40)).toBe(0x08070605);

    structuredClone(plainBacking, { transfer: [plainBacking] });
    expect(plainBacking.byteLength).toBe(0);
    const untouched = new Uint8Array(1).fill(0xaa);
    expectCode(() => {
      viaPlain.read(0x20, untouched);
    }, 'ERR_DMA_UNASSIGNED');
    expect(untouched[0]).toBe(0xaa);
    expectCode(() => {
      viaPlain.write(0x20, Uint8Array.of(1));
    }, 'ERR_DMA_UNASSIGNED');
    expectCode(() => {
      viaPlain.writeU32LE(0x20, 1);
    }, 'ERR_DMA_UNASSIGNED');
  });
});
