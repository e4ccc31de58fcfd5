/**
 * Guest memory: RAM regions at guest-physical addresses, backed by one buffer that vCPU
 * workers and device workers share, plus the fence word every agent orders itself on.
 *
 * @module
 */
import {
  Fence,
  parseStrength,
  resolveBarrierPolicy,
  type BarrierPolicy,
  type BarrierStrength,
} from './barrier.js';
import { DMAError, DMAFault } from './errors.js';
import {
  ADDRESS_LIMIT,
  checkAddress,
  checkBuffer,
  checkLength,
  checkRange,
  invalidArgument,
  isSafeIndex,
} from './internal/check.js';
import { describe } from './internal/describe.js';

/** One RAM region: `size` bytes at guest-physical address `base`. */
export interface GuestMemoryRegion {
  /** The guest-physical address of the first byte. */
  readonly base: number;
  /** The size in bytes (at least 1). */
  readonly size: number;
}

/** How to build a {@link GuestMemory}: give either `size` or `regions`. */
export interface GuestMemoryOptions {
  /** One RAM region of this many bytes at guest address 0. */
  size?: number;
  /** RAM regions; they may leave holes but must not overlap. */
  regions?: readonly GuestMemoryRegion[];
  /**
   * Back the memory with a `SharedArrayBuffer` (the default where it exists). Unshared
   * memory has one agent, so its barriers cost nothing.
   */
  shared?: boolean;
  /** How barriers become instructions; `'auto'` by default. */
  barrierPolicy?: BarrierPolicy;
}

/**
 * A structured-cloneable description of a shared {@link GuestMemory}: post it to a
 * worker and call {@link GuestMemory.fromHandle} there to get the same memory.
 */
export interface GuestMemoryHandle {
  /** Marks the object as a guest memory handle. */
  readonly kind: 'dma-attrs:guest-memory';
  /** The RAM regions, sorted by base. */
  readonly regions: readonly GuestMemoryRegion[];
  /** The backing store of all regions. */
  readonly buffer: SharedArrayBuffer;
  /** The shared fence word's buffer. */
  readonly fence: SharedArrayBuffer;
  /** The policy resolved where the memory was made, so every thread emits the same. */
  readonly barrierPolicy: 'strict' | 'tso';
}

/** Contiguous guest RAM as laid out in the backing buffer. */
interface Layout {
  readonly regions: readonly GuestMemoryRegion[];
  /** Merged runs of adjacent regions: guest base, guest end, backing offset. */
  readonly spanBase: Float64Array;
  readonly spanEnd: Float64Array;
  readonly spanOffset: Float64Array;
  readonly byteLength: number;
}

function readRegions(options: GuestMemoryOptions): GuestMemoryRegion[] {
  if (options.regions !== undefined && options.size !== undefined) {
    throw new DMAError('ERR_DMA_INVALID_ARGUMENT', 'give either size or regions, not both');
  }
  if (options.regions === undefined) {
    if (!isSafeIndex(options.size) || options.size === 0) {
      invalidArgument('size', 'a positive safe integer', options.size);
    }
    return [{ base: 0, size: options.size }];
  }
  if (!Array.isArray(options.regions) || options.regions.length === 0) {
    invalidArgument('regions', 'a non-empty array of { base, size }', options.regions);
  }
  return options.regions.map((region: unknown, index) => {
    if (typeof region !== 'object' || region === null) {
      invalidArgument(`regions[${index}]`, 'an object { base, size }', region);
    }
    const { base, size } = region as Record<string, unknown>;
    if (!isSafeIndex(base))
      invalidArgument(`regions[${index}].base`, 'a non-negative safe integer', base);
    if (!isSafeIndex(size) || size === 0)
      invalidArgument(`regions[${index}].size`, 'a positive safe integer', size);
    // A subtraction, which is exact for safe integers; the sum would round.
    if (size > ADDRESS_LIMIT - base) {
      invalidArgument(
        `regions[${index}]`,
        'to end at or below 2^53',
        `base ${base} + size ${size}`,
      );
    }
    return { base, size };
  });
}

/**
 * Sorts the regions, rejects overlaps, and merges adjacent regions into spans that are
 * contiguous in the backing buffer too, so that an access crossing from one region into an
 * adjacent one is still a single copy. Each span starts at a backing offset congruent to its
 * guest base modulo 8: natural alignment in the guest is then natural alignment for
 * `Atomics`.
 */
function layOut(given: GuestMemoryRegion[]): Layout {
  const regions = [...given].sort((a, b) => a.base - b.base);
  const bases: number[] = [];
  const ends: number[] = [];
  const offsets: number[] = [];
  let byteLength = 0;
  for (const [index, region] of regions.entries()) {
    const previous = regions[index - 1];
    if (previous !== undefined && region.base < previous.base + previous.size) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        `regions overlap: [${previous.base}, ${previous.base + previous.size}) and [${region.base}, ${region.base + region.size})`,
      );
    }
    const last = ends.length - 1;
    if (last >= 0 && ends[last] === region.base) {
      ends[last] = region.base + region.size;
    } else {
      byteLength += ((region.base % 8) - (byteLength % 8) + 8) % 8;
      bases.push(region.base);
      ends.push(region.base + region.size);
      offsets.push(byteLength);
    }
    byteLength += region.size;
  }
  return {
    regions: Object.freeze(regions.map((region) => Object.freeze({ ...region }))),
    spanBase: Float64Array.from(bases),
    spanEnd: Float64Array.from(ends),
    spanOffset: Float64Array.from(offsets),
    byteLength,
  };
}

function allocate(byteLength: number, shared: boolean): ArrayBuffer | SharedArrayBuffer {
  try {
    return shared ? new SharedArrayBuffer(byteLength) : new ArrayBuffer(byteLength);
  } catch (error) {
    throw new DMAError(
      'ERR_DMA_INVALID_ARGUMENT',
      `cannot allocate ${byteLength} bytes of guest RAM: ${error instanceof Error ? error.message : describe(error)}`,
    );
  }
}

/** Set by {@link GuestMemory.fromHandle} for the one synchronous constructor call it makes. */
let adopting: GuestMemoryHandle | undefined;

/**
 * Guest RAM: one or more regions at guest-physical addresses, with holes between them
 * where nothing answers. By default it lives in a `SharedArrayBuffer` so that vCPU and
 * device workers use the same bytes; {@link GuestMemory.handle} carries it to a worker.
 *
 * @example
 * ```ts
 * const memory = new GuestMemory({ regions: [{ base: 0, size: 0xa0000 }, { base: 0x100000, size: 1 << 24 }] });
 * worker.postMessage(memory.handle());
 * // in the worker:
 * const same = GuestMemory.fromHandle(handle);
 * ```
 */
export class GuestMemory {
  /** The RAM regions, sorted by base. */
  readonly regions: readonly GuestMemoryRegion[];
  /** Whether the memory is a `SharedArrayBuffer` that other threads may use. */
  readonly shared: boolean;
  /** The resolved barrier policy. */
  readonly barrierPolicy: 'strict' | 'tso';
  /**
   * The backing store of all regions; see {@link GuestMemory.offsetOf} for where a guest
   * address lives in it. Emulators use it to make their own views (a framebuffer, say).
   */
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** A byte view of {@link GuestMemory.buffer}. @internal */
  readonly bytes: Uint8Array;
  /** The barrier emitter on this memory's fence word. @internal */
  readonly fence: Fence;
  readonly #spanBase: Float64Array;
  readonly #spanEnd: Float64Array;
  readonly #spanOffset: Float64Array;
  readonly #base0: number;
  readonly #end0: number;
  readonly #offset0: number;
  readonly #fenceBuffer: SharedArrayBuffer | undefined;

  /**
   * @param options - `size` for one region at address 0, or `regions`; see {@link GuestMemoryOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad sizes, overlapping regions
   * or an unknown policy.
   */
  constructor(options: GuestMemoryOptions) {
    const handle = adopting;
    adopting = undefined;
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object { size } or { regions }', options);
    }
    const layout = layOut(readRegions(options));
    this.regions = layout.regions;
    this.#spanBase = layout.spanBase;
    this.#spanEnd = layout.spanEnd;
    this.#spanOffset = layout.spanOffset;
    this.#base0 = layout.spanBase[0] ?? 0;
    this.#end0 = layout.spanEnd[0] ?? 0;
    this.#offset0 = layout.spanOffset[0] ?? 0;
    if (handle !== undefined) {
      if (layout.byteLength !== handle.buffer.byteLength) {
        invalidArgument('handle', 'a buffer whose size matches its regions', handle);
      }
      this.shared = true;
      this.barrierPolicy = handle.barrierPolicy;
      this.buffer = handle.buffer;
      this.#fenceBuffer = handle.fence;
    } else {
      const canShare = typeof SharedArrayBuffer === 'function';
      // Only undefined means "the default": a null from JavaScript is a wrong type.
      const given: unknown = options.shared;
      const shared = given === undefined ? canShare : given;
      if (typeof shared !== 'boolean') invalidArgument('shared', 'a boolean', shared);
      if (shared && !canShare) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          'shared memory was asked for but SharedArrayBuffer is not available here',
        );
      }
      this.shared = shared;
      this.barrierPolicy = resolveBarrierPolicy(options.barrierPolicy);
      this.buffer = allocate(layout.byteLength, shared);
      // A cache line of its own, so that fencing never contends with guest data.
      this.#fenceBuffer = shared ? new SharedArrayBuffer(64) : undefined;
    }
    this.bytes = new Uint8Array(this.buffer);
    this.fence = new Fence(
      this.#fenceBuffer === undefined ? undefined : new Int32Array(this.#fenceBuffer, 0, 1),
      this.barrierPolicy,
    );
  }

  /**
   * Recreates, in another thread, the memory a {@link GuestMemory.handle} describes: the
   * same bytes, the same fence word, the same policy.
   *
   * @param handle - what {@link GuestMemory.handle} returned, after `postMessage`.
   * @returns a memory sharing everything with the original.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for anything that is not a handle.
   */
  static fromHandle(handle: GuestMemoryHandle): GuestMemory {
    const candidate = handle as Partial<GuestMemoryHandle> | null;
    if (
      candidate?.kind !== 'dma-attrs:guest-memory' ||
      !(candidate.buffer instanceof SharedArrayBuffer) ||
      !(candidate.fence instanceof SharedArrayBuffer) ||
      (candidate.barrierPolicy !== 'strict' && candidate.barrierPolicy !== 'tso')
    ) {
      invalidArgument('handle', 'an object made by GuestMemory.handle()', handle);
    }
    adopting = candidate as GuestMemoryHandle;
    return new GuestMemory({ regions: candidate.regions ?? [] });
  }

  /**
   * A structured-cloneable description of this memory for `postMessage`.
   *
   * @returns the handle.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` when the memory is not shared
   * (cloning would copy the bytes, not share them).
   */
  handle(): GuestMemoryHandle {
    if (!(this.buffer instanceof SharedArrayBuffer) || this.#fenceBuffer === undefined) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'only shared memory has a handle: this memory was made with shared: false',
      );
    }
    return {
      kind: 'dma-attrs:guest-memory',
      regions: this.regions.map((region) => ({ ...region })),
      buffer: this.buffer,
      fence: this.#fenceBuffer,
      barrierPolicy: this.barrierPolicy,
    };
  }

  /**
   * Issues a barrier of the given strength on this memory's fence word. vCPU emulation and
   * other devices call it to order themselves against DMA; it is what
   * `DMAContext.barrier` does.
   *
   * @param strength - `none`, `acquire`, `release` or `full`.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for another strength.
   */
  barrier(strength: BarrierStrength): void {
    this.fence.emit(parseStrength(strength));
  }

  /**
   * The backing offset of `length` bytes of RAM at `gpa`, or -1 when the range is not
   * all RAM. Unchecked: callers validate `gpa` and `length` as safe non-negative integers.
   * @internal
   */
  locate(gpa: number, length: number): number {
    if (gpa >= this.#base0 && gpa + length <= this.#end0) {
      return this.#offset0 + (gpa - this.#base0);
    }
    return this.#spanBase.length === 1 ? -1 : this.#locateBeyondFirst(gpa, length);
  }

  /** {@link GuestMemory.locate} past the first span, kept out of line to keep it small. */
  #locateBeyondFirst(gpa: number, length: number): number {
    const bases = this.#spanBase;
    for (let index = 1; index < bases.length; index++) {
      const base = bases[index] as number;
      if (gpa >= base && gpa + length <= (this.#spanEnd[index] as number)) {
        return (this.#spanOffset[index] as number) + (gpa - base);
      }
    }
    return -1;
  }

  /**
   * How many bytes of RAM are contiguous from `gpa` (0 when `gpa` is in a hole).
   * Unchecked, as {@link GuestMemory.locate}.
   * @internal
   */
  extent(gpa: number): number {
    const bases = this.#spanBase;
    for (let index = 0; index < bases.length; index++) {
      const end = this.#spanEnd[index] as number;
      if (gpa >= (bases[index] as number) && gpa < end) return end - gpa;
    }
    return 0;
  }

  /**
   * Where `length` bytes at guest address `gpa` live in {@link GuestMemory.buffer}.
   *
   * @param gpa - a guest-physical address.
   * @param length - a byte count.
   * @returns the byte offset in the buffer, or -1 when the range touches a hole.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  offsetOf(gpa: number, length: number): number {
    checkAddress(gpa, 'gpa');
    checkLength(length);
    checkRange(gpa, length);
    return this.locate(gpa, length);
  }

  /**
   * The vCPU's own read: copies guest memory at `gpa` into `buf` with no IOMMU and no
   * barrier, as a CPU load would.
   *
   * @param gpa - a guest-physical address.
   * @param buf - receives `buf.length` bytes.
   * @throws {@link DMAFault} `ERR_DMA_UNASSIGNED` when the range touches a hole;
   * {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad arguments. Nothing is copied then.
   */
  read(gpa: number, buf: Uint8Array): void {
    const offset = this.#cpuOffset(gpa, buf);
    const length = buf.length;
    if (length !== 0) buf.set(this.bytes.subarray(offset, offset + length));
  }

  /**
   * The vCPU's own write: copies `data` into guest memory at `gpa` with no IOMMU and no
   * barrier, as a CPU store would.
   *
   * @param gpa - a guest-physical address.
   * @param data - the bytes to store.
   * @throws {@link DMAFault} `ERR_DMA_UNASSIGNED` when the range touches a hole;
   * {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad arguments. Nothing is copied then.
   */
  write(gpa: number, data: Uint8Array): void {
    const offset = this.#cpuOffset(gpa, data);
    this.bytes.set(data, offset);
  }

  #cpuOffset(gpa: number, buf: Uint8Array): number {
    checkAddress(gpa, 'gpa');
    checkBuffer(buf);
    const length = buf.length;
    checkRange(gpa, length);
    if (length === 0) return 0;
    const offset = this.locate(gpa, length);
    if (offset < 0) throw unassigned(gpa, length, 0);
    return offset;
  }
}

/**
 * The fault for a guest-physical range that is not all RAM.
 * @internal
 */
export function unassigned(gpa: number, length: number, attrs: number): DMAFault {
  return new DMAFault(
    'ERR_DMA_UNASSIGNED',
    `guest range [0x${gpa.toString(16)}, 0x${(gpa + length).toString(16)}) of ${length} bytes is not all RAM: it touches a hole`,
    gpa,
    length,
    attrs,
  );
}
