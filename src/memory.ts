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
import { AddressMap, layOut } from './address.js';
import { DMAError, DMAFault } from './errors.js';
import {
  ADDRESS_LIMIT,
  checkAddress,
  bufferLength,
  checkLength,
  checkRange,
  invalidArgument,
  isSafeIndex,
} from './internal/check.js';
import { describe } from './internal/describe.js';
import { setBytes, sharedByteLength } from './internal/intrinsics.js';

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

/** The most regions a memory may have: enough for any machine, and a bound on every loop. */
const MAX_REGIONS = 4096;

/**
 * Reads `size` or `regions` once each, every region and each of its fields once, into a
 * fresh array that is then all the constructor looks at.
 */
function readRegions(size: unknown, regions: unknown): GuestMemoryRegion[] {
  if (regions !== undefined && size !== undefined) {
    throw new DMAError('ERR_DMA_INVALID_ARGUMENT', 'give either size or regions, not both');
  }
  if (regions === undefined) {
    if (!isSafeIndex(size) || size === 0) invalidArgument('size', 'a positive safe integer', size);
    return [{ base: 0, size }];
  }
  if (!Array.isArray(regions)) {
    invalidArgument('regions', 'a non-empty array of { base, size }', regions);
  }
  const count: unknown = regions.length;
  if (typeof count !== 'number' || count < 1 || count > MAX_REGIONS) {
    invalidArgument('regions', `an array of 1 to ${MAX_REGIONS} regions`, regions);
  }
  const read: GuestMemoryRegion[] = [];
  for (let index = 0; index < count; index++) {
    // An index loop, not `map`: a hole in a sparse array is an error at its index.
    const region: unknown = (regions as unknown[])[index];
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
    read.push({ base, size });
  }
  return read;
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

/** What {@link GuestMemory.fromHandle} validated, for the constructor call it makes. */
interface Adopted {
  readonly buffer: SharedArrayBuffer;
  readonly fence: SharedArrayBuffer;
  readonly barrierPolicy: 'strict' | 'tso';
}

/**
 * The options objects {@link GuestMemory.fromHandle} made, with what it validated. Keyed by
 * the object itself: no caller can forge an entry, and nothing is left behind when the
 * constructor throws (a module variable set for "the next constructor call" was, and the
 * next `new GuestMemory({ shared: false })` adopted the forged buffer).
 */
const adoptions = new WeakMap<object, Adopted>();

/** The parts of a memory the DMA context works on; see {@link memoryParts}. */
export interface MemoryParts {
  /** A byte view of the whole backing store. */
  readonly bytes: Uint8Array;
  /** The barrier emitter on the memory's fence word. */
  readonly fence: Fence;
  /** Where guest ranges live in the backing store. */
  readonly map: AddressMap;
}

/** Whether a value is a genuine {@link GuestMemory} (a private-field brand check). */
export let isGuestMemory: (value: unknown) => value is GuestMemory;
/**
 * The memory's own parts, made by the library and never handed to callers, so that an
 * instance property a caller redefines (`memory.bytes`, `memory.locate`) cannot reach an
 * access.
 */
export let memoryParts: (memory: GuestMemory) => MemoryParts;

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
  readonly #regions: readonly GuestMemoryRegion[];
  readonly #shared: boolean;
  readonly #barrierPolicy: 'strict' | 'tso';
  readonly #buffer: ArrayBuffer | SharedArrayBuffer;
  readonly #parts: MemoryParts;
  readonly #map: AddressMap;
  readonly #fenceBuffer: SharedArrayBuffer | undefined;

  /** The RAM regions, sorted by base. */
  get regions(): readonly GuestMemoryRegion[] {
    return this.#regions;
  }

  /** Whether the memory is a `SharedArrayBuffer` that other threads may use. */
  get shared(): boolean {
    return this.#shared;
  }

  /** The resolved barrier policy. */
  get barrierPolicy(): 'strict' | 'tso' {
    return this.#barrierPolicy;
  }

  /**
   * The backing store of all regions; see {@link GuestMemory.offsetOf} for where a guest
   * address lives in it. Emulators use it to make their own views (a framebuffer, say).
   */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#buffer;
  }

  /**
   * @param options - `size` for one region at address 0, or `regions`; see {@link GuestMemoryOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad sizes, overlapping regions
   * or an unknown policy.
   */
  constructor(options: GuestMemoryOptions) {
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object { size } or { regions }', options);
    }
    const handle = adoptions.get(options);
    // Each option is read once, into a local that is then validated and used.
    const {
      size,
      regions,
      shared: givenShared,
      barrierPolicy,
    } = options as Record<string, unknown>;
    const layout = layOut(readRegions(size, regions));
    this.#regions = layout.regions;
    this.#map = layout.map;
    if (handle !== undefined) {
      if (layout.byteLength !== handle.buffer.byteLength) {
        invalidArgument('handle', 'a buffer whose size matches its regions', handle.buffer);
      }
      this.#shared = true;
      this.#barrierPolicy = handle.barrierPolicy;
      this.#buffer = handle.buffer;
      this.#fenceBuffer = handle.fence;
    } else {
      const canShare = typeof SharedArrayBuffer === 'function';
      // Only undefined means "the default": a null from JavaScript is a wrong type.
      const shared = givenShared === undefined ? canShare : givenShared;
      if (typeof shared !== 'boolean') invalidArgument('shared', 'a boolean', shared);
      if (shared && !canShare) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          'shared memory was asked for but SharedArrayBuffer is not available here',
        );
      }
      this.#shared = shared;
      this.#barrierPolicy = resolveBarrierPolicy(barrierPolicy);
      this.#buffer = allocate(layout.byteLength, shared);
      // A cache line of its own, so that fencing never contends with guest data.
      this.#fenceBuffer = shared ? new SharedArrayBuffer(64) : undefined;
    }
    this.#parts = {
      bytes: new Uint8Array(this.#buffer),
      fence: new Fence(
        this.#fenceBuffer === undefined ? undefined : new Int32Array(this.#fenceBuffer, 0, 1),
        this.#barrierPolicy,
      ),
      map: this.#map,
    };
  }

  /** A byte view of {@link GuestMemory.buffer}. @internal */
  get bytes(): Uint8Array {
    return this.#parts.bytes;
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
    if (typeof handle !== 'object' || (handle as unknown) === null) {
      invalidArgument('handle', 'an object made by GuestMemory.handle()', handle);
    }
    // Read once: a getter that answers differently the second time cannot matter.
    const { kind, buffer, fence, barrierPolicy, regions } = handle as unknown as Partial<
      Record<string, unknown>
    >;
    if (
      kind !== 'dma-attrs:guest-memory' ||
      sharedByteLength(buffer) < 0 ||
      // The fence word is the first 4 bytes of its buffer.
      sharedByteLength(fence) < 4 ||
      (barrierPolicy !== 'strict' && barrierPolicy !== 'tso')
    ) {
      invalidArgument('handle', 'an object made by GuestMemory.handle()', handle);
    }
    // The regions are copied (and validated) here, before anything is registered: a getter
    // that throws leaves nothing behind.
    const own: GuestMemoryOptions = { regions: readRegions(undefined, regions) };
    adoptions.set(own, {
      buffer: buffer as SharedArrayBuffer,
      fence: fence as SharedArrayBuffer,
      barrierPolicy,
    });
    return new GuestMemory(own);
  }

  /**
   * A structured-cloneable description of this memory for `postMessage`.
   *
   * @returns the handle.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` when the memory is not shared
   * (cloning would copy the bytes, not share them).
   */
  handle(): GuestMemoryHandle {
    if (!this.#shared || this.#fenceBuffer === undefined) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'only shared memory has a handle: this memory was made with shared: false',
      );
    }
    return {
      kind: 'dma-attrs:guest-memory',
      regions: this.#regions.map((region) => ({ ...region })),
      buffer: this.#buffer as SharedArrayBuffer,
      fence: this.#fenceBuffer,
      barrierPolicy: this.#barrierPolicy,
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
    this.#parts.fence.emit(parseStrength(strength));
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
    return this.#map.locate(gpa, length);
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
    checkAddress(gpa, 'gpa');
    const length = bufferLength(buf);
    const offset = this.#cpuOffset(gpa, length);
    if (length !== 0) setBytes(buf, new Uint8Array(this.#buffer, offset, length));
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
    checkAddress(gpa, 'gpa');
    const length = bufferLength(data);
    const offset = this.#cpuOffset(gpa, length);
    if (length !== 0) this.#parts.bytes.set(data, offset);
  }

  #cpuOffset(gpa: number, length: number): number {
    checkRange(gpa, length);
    if (length === 0) return 0;
    const offset = this.#map.locate(gpa, length);
    if (offset < 0) throw unassigned(gpa, length, 0);
    return offset;
  }

  static {
    isGuestMemory = (value: unknown): value is GuestMemory =>
      typeof value === 'object' && value !== null && #parts in value;
    memoryParts = (memory) => memory.#parts;
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
