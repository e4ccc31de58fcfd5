/**
 * Guest memory: RAM regions at guest-physical addresses in one backing buffer that vCPU
 * workers and device workers share (one the library allocates, or the emulator's own: a
 * `SharedArrayBuffer`, an `ArrayBuffer` or a `WebAssembly.Memory`), the fence word every
 * agent orders itself on, and the dirty log.
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
import {
  DetachableFlatView,
  FlatView,
  ResizableFlatView,
  place,
  type CurrentBuffer,
  type PlacedRegion,
} from './address.js';
import {
  DirtyBitmap,
  dirtyLogsOf,
  readDirtyOptions,
  type DirtyLog,
  type DirtyLogOptions,
} from './dirty.js';
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
import { copyIn, copyOut, copyPieces, emptyList } from './internal/copy.js';
import { describe } from './internal/describe.js';
import {
  arrayBufferByteLength,
  isResizable,
  sharedByteLength,
  wasmMemoryBuffer,
} from './internal/intrinsics.js';

/** One RAM region: `size` bytes at guest-physical address `base`. */
export interface GuestMemoryRegion {
  /** The guest-physical address of the first byte. */
  readonly base: number;
  /** The size in bytes (at least 1). */
  readonly size: number;
  /**
   * Where the region's first byte lives in the backing. Required with
   * {@link GuestMemoryOptions.backing}, and congruent to `base` modulo 8; not given
   * otherwise (the library places the regions). Always present in
   * {@link GuestMemory.regions}.
   */
  readonly offset?: number;
}

/**
 * A `WebAssembly.Memory`, described by what the library uses of it, so that the types need
 * neither the DOM library nor Node's. The value is brand-checked at run time: only a
 * genuine `WebAssembly.Memory` is accepted.
 */
export interface WebAssemblyMemory {
  /** The memory's buffer now: detached and replaced by `grow` when unshared. */
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** Grows the memory by `delta` pages of 64 KiB. */
  grow(delta: number): number;
}

/** What a memory can live in: a buffer the emulator already owns. */
export type GuestMemoryBacking = SharedArrayBuffer | ArrayBuffer | WebAssemblyMemory;

/** Where a memory's shared fence word lives: 4 bytes, 4-aligned, in a shared buffer. */
export interface FenceLocation {
  /** A `SharedArrayBuffer`, or a shared `WebAssembly.Memory` (its wasm code fences there too). */
  readonly buffer: SharedArrayBuffer | WebAssemblyMemory;
  /** The byte offset of the word in `buffer`. */
  readonly byteOffset: number;
}

/** How to build a {@link GuestMemory}: give either `size` or `regions`. */
export interface GuestMemoryOptions {
  /** One RAM region of this many bytes at guest address 0 (without `backing`). */
  size?: number;
  /** RAM regions; they may leave holes but must not overlap in guest space. */
  regions?: readonly GuestMemoryRegion[];
  /**
   * The emulator's own buffer to adopt instead of allocating one: never copied or
   * reallocated, and it may grow while in use. Every region then needs an `offset`, and
   * `offset + size` must lie inside the backing's current length. Sharing follows from it.
   */
  backing?: GuestMemoryBacking;
  /**
   * Back the memory with a `SharedArrayBuffer` (the default where it exists). Unshared
   * memory has one agent, so its barriers cost nothing. With `backing`, sharing follows
   * from the backing; a value that contradicts it is an error.
   */
  shared?: boolean;
  /** How barriers become instructions; `'auto'` by default. */
  barrierPolicy?: BarrierPolicy;
  /**
   * Where the shared fence word lives, for example in the wasm heap so that wasm vCPU code
   * can fence on it with `i32.atomic.rmw.add`. A word of its own by default.
   */
  fence?: FenceLocation;
  /** Keep a dirty log for these clients; see {@link GuestMemory.dirtyLog}. */
  dirtyLog?: DirtyLogOptions;
}

/**
 * A structured-cloneable description of a shared {@link GuestMemory}: post it to a
 * worker and call {@link GuestMemory.fromHandle} there to get the same memory.
 */
export interface GuestMemoryHandle {
  /** Marks the object as a guest memory handle. */
  readonly kind: 'dma-attrs:guest-memory';
  /** The RAM regions with their offsets, sorted by base. */
  readonly regions: readonly Required<GuestMemoryRegion>[];
  /** The backing of all regions: a `SharedArrayBuffer` or a shared `WebAssembly.Memory`. */
  readonly backing: SharedArrayBuffer | WebAssemblyMemory;
  /** The shared fence word. */
  readonly fence: FenceLocation;
  /** The policy resolved where the memory was made, so every thread emits the same. */
  readonly barrierPolicy: 'strict' | 'tso';
  /** The dirty log's clients, page size and bitmap, when the memory has one. */
  readonly dirtyLog?: {
    /** The clients, in order: client `i`'s bitmap is the `i`-th stretch of `bitmap`. */
    readonly clients: readonly string[];
    /** The log's page size. */
    readonly pageSize: number;
    /** Every client's bits, shared with every thread holding the memory. */
    readonly bitmap: SharedArrayBuffer;
  };
}

/** The most regions a memory may have: enough for any machine, and a bound on every loop. */
const MAX_REGIONS = 4096;

interface GivenRegion {
  readonly base: number;
  readonly size: number;
  readonly offset: number | undefined;
}

/**
 * Reads `size` or `regions` once each, every region and each of its fields once, into a
 * fresh array that is then all the constructor looks at.
 */
function readRegions(size: unknown, regions: unknown, adopting: boolean): GivenRegion[] {
  if (regions !== undefined && size !== undefined) {
    throw new DMAError('ERR_DMA_INVALID_ARGUMENT', 'give either size or regions, not both');
  }
  if (regions === undefined) {
    if (adopting) {
      if (size !== undefined) {
        invalidArgument('size', 'left out with backing: give regions, each with its offset', size);
      }
      invalidArgument('regions', 'given with backing, each with its offset', regions);
    }
    if (!isSafeIndex(size) || size === 0) invalidArgument('size', 'a positive safe integer', size);
    return [{ base: 0, size, offset: undefined }];
  }
  if (!Array.isArray(regions)) {
    invalidArgument('regions', 'a non-empty array of { base, size }', regions);
  }
  const count: unknown = regions.length;
  if (typeof count !== 'number' || count < 1 || count > MAX_REGIONS) {
    invalidArgument('regions', `an array of 1 to ${MAX_REGIONS} regions`, regions);
  }
  const read: GivenRegion[] = [];
  for (let index = 0; index < count; index++) {
    // An index loop, not `map`: a hole in a sparse array is an error at its index.
    const region: unknown = (regions as unknown[])[index];
    if (typeof region !== 'object' || region === null) {
      invalidArgument(`regions[${index}]`, 'an object { base, size }', region);
    }
    const { base, size, offset } = region as Record<string, unknown>;
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
    if (adopting) {
      if (!isSafeIndex(offset)) {
        invalidArgument(
          `regions[${index}].offset`,
          'a non-negative safe integer (with backing, every region needs one)',
          offset,
        );
      }
      if (offset % 8 !== base % 8) {
        invalidArgument(
          `regions[${index}].offset`,
          `congruent to base ${base} modulo 8, so that aligned guest words are aligned for Atomics`,
          offset,
        );
      }
    } else if (offset !== undefined) {
      invalidArgument(`regions[${index}].offset`, 'given only with backing', offset);
    }
    read.push({ base, size, offset: offset });
  }
  return read;
}

/** A backing as validated: how to find its buffer now, and what it was then. */
interface Backing {
  readonly given: GuestMemoryBacking;
  readonly current: CurrentBuffer;
  readonly shared: boolean;
  readonly byteLength: number;
}

const NO_BUFFER = new ArrayBuffer(0);

/**
 * Brand-checks a backing by its builtin getters (never a property a caller can redefine):
 * a `SharedArrayBuffer`, an `ArrayBuffer`, or a `WebAssembly.Memory`, whose buffer is asked
 * afresh each time, since an unshared one detaches it on `grow`.
 */
function readBacking(backing: unknown, what: string): Backing {
  const sharedLength = sharedByteLength(backing);
  if (sharedLength >= 0) {
    const buffer = backing as SharedArrayBuffer;
    return { given: buffer, current: () => buffer, shared: true, byteLength: sharedLength };
  }
  const plainLength = arrayBufferByteLength(backing);
  if (plainLength >= 0) {
    const buffer = backing as ArrayBuffer;
    return { given: buffer, current: () => buffer, shared: false, byteLength: plainLength };
  }
  const wasmBuffer = wasmMemoryBuffer(backing);
  if (wasmBuffer !== undefined) {
    const memory = backing as WebAssemblyMemory;
    const length = sharedByteLength(wasmBuffer);
    return {
      given: memory,
      current: () => wasmMemoryBuffer(memory) ?? NO_BUFFER,
      shared: length >= 0,
      byteLength: length >= 0 ? length : arrayBufferByteLength(wasmBuffer),
    };
  }
  return invalidArgument(
    what,
    'a SharedArrayBuffer, an ArrayBuffer or a WebAssembly.Memory',
    backing,
  );
}

/** Reads a fence location once and checks it: 4 bytes, 4-aligned, inside a shared buffer. */
function readFence(fence: unknown, what: string): { location: FenceLocation; word: Int32Array } {
  if (typeof fence !== 'object' || fence === null) {
    invalidArgument(what, 'an object { buffer, byteOffset }', fence);
  }
  const { buffer, byteOffset } = fence as Record<string, unknown>;
  const backing = buffer === undefined ? undefined : readBacking(buffer, `${what}.buffer`);
  if (!backing?.shared) {
    invalidArgument(`${what}.buffer`, 'a SharedArrayBuffer or a shared WebAssembly.Memory', buffer);
  }
  if (!isSafeIndex(byteOffset) || byteOffset % 4 !== 0 || byteOffset > backing.byteLength - 4) {
    invalidArgument(
      `${what}.byteOffset`,
      `a multiple of 4 with 4 bytes inside the buffer's ${backing.byteLength} bytes`,
      byteOffset,
    );
  }
  return {
    location: Object.freeze({
      buffer: backing.given as SharedArrayBuffer | WebAssemblyMemory,
      byteOffset,
    }),
    // A shared buffer never shrinks or detaches: this word stays valid after any grow.
    word: new Int32Array(backing.current(), byteOffset, 1),
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

/**
 * The dirty bitmaps {@link GuestMemory.fromHandle} validated as shared buffers, for the
 * constructor call it makes. Keyed by the options object it made: no caller can forge an
 * entry, and nothing is left behind when the constructor throws.
 */
const adoptions = new WeakMap<object, SharedArrayBuffer>();

/** The parts of a memory the DMA context works on; see {@link memoryParts}. */
export interface MemoryParts {
  /** Where guest ranges live in the backing, with its views. */
  readonly flat: FlatView;
  /** The barrier emitter on the memory's fence word. */
  readonly fence: Fence;
  /** The dirty log's bitmaps, or undefined without one. */
  readonly dirty: DirtyBitmap | undefined;
}

/** Whether a value is a genuine {@link GuestMemory} (a private-field brand check). */
export let isGuestMemory: (value: unknown) => value is GuestMemory;
/**
 * The memory's own parts, made by the library and never handed to callers, so that an
 * instance property a caller redefines (`memory.bytes`, `memory.offsetOf`) cannot reach an
 * access.
 */
export let memoryParts: (memory: GuestMemory) => MemoryParts;

/**
 * Guest RAM: one or more regions at guest-physical addresses, with holes between them
 * where nothing answers. By default it lives in a `SharedArrayBuffer` the library
 * allocates so that vCPU and device workers use the same bytes; with `backing` it adopts
 * the emulator's own buffer (its wasm heap, say). {@link GuestMemory.handle} carries it to
 * a worker.
 *
 * @example
 * ```ts
 * const memory = new GuestMemory({ regions: [{ base: 0, size: 0xa0000 }, { base: 0x100000, size: 1 << 24 }] });
 * worker.postMessage(memory.handle());
 * // in the worker:
 * const same = GuestMemory.fromHandle(handle);
 * ```
 *
 * @example Adopting RAM in a wasm heap
 * ```ts
 * // RAM at ramPtr in a shared wasm heap, and the fence word there too:
 * const memory = new GuestMemory({
 *   backing: wasmMemory,
 *   regions: [{ base: 0, size: 256 << 20, offset: ramPtr }],
 *   fence: { buffer: wasmMemory, byteOffset: fencePtr },
 * });
 * ```
 */
export class GuestMemory {
  readonly #regions: readonly Required<GuestMemoryRegion>[];
  readonly #shared: boolean;
  readonly #barrierPolicy: 'strict' | 'tso';
  readonly #backing: GuestMemoryBacking;
  readonly #current: CurrentBuffer;
  readonly #parts: MemoryParts;
  readonly #fenceLocation: FenceLocation | undefined;
  readonly #logs: ReadonlyMap<string, DirtyLog>;
  /** Scratch for {@link GuestMemory.#cpuPieces}. */
  readonly #pieces: number[] = [];

  /** The RAM regions with their backing offsets, sorted by base. */
  get regions(): readonly Required<GuestMemoryRegion>[] {
    return this.#regions;
  }

  /** Whether the memory is shared memory that other threads may use. */
  get shared(): boolean {
    return this.#shared;
  }

  /** The resolved barrier policy. */
  get barrierPolicy(): 'strict' | 'tso' {
    return this.#barrierPolicy;
  }

  /**
   * The backing as given with `backing`, or the buffer the library allocated. A
   * `WebAssembly.Memory` stays itself here; {@link GuestMemory.buffer} is its buffer now.
   */
  get backing(): GuestMemoryBacking {
    return this.#backing;
  }

  /**
   * The backing's buffer as it is now (for a `WebAssembly.Memory`, a new object after each
   * `grow`); see {@link GuestMemory.offsetOf} for where a guest address lives in it.
   * Emulators use it to make their own views (a framebuffer, say).
   */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#current();
  }

  /**
   * The word every barrier of this memory uses, for shared memory: wasm vCPU code and other
   * agents order themselves against DMA with an atomic read-modify-write on it (in wasm,
   * `i32.atomic.rmw.add`; `atomic.fence` does not pair with it). Undefined for unshared
   * memory, whose barriers are free.
   */
  get fenceLocation(): FenceLocation | undefined {
    return this.#fenceLocation;
  }

  /**
   * @param options - `size` for one region at address 0, or `regions`, and optionally
   * `backing`, `fence` and `dirtyLog`; see {@link GuestMemoryOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad sizes or offsets, overlapping
   * regions, a region outside its backing, a bad fence or dirty log, or an unknown policy;
   * the message names the region or option and the value.
   */
  constructor(options: GuestMemoryOptions) {
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object { size } or { regions }', options);
    }
    const adoptedBitmap = adoptions.get(options);
    // Each option is read once, into a local that is then validated and used.
    const {
      size,
      regions: givenRegions,
      shared: givenShared,
      barrierPolicy,
      backing: givenBacking,
      fence: givenFence,
      dirtyLog,
    } = options as Record<string, unknown>;
    const adopting = givenBacking !== undefined;
    const read = readRegions(size, givenRegions, adopting);
    const backing = adopting ? readBacking(givenBacking, 'backing') : undefined;
    const canShare = typeof SharedArrayBuffer === 'function';
    // Only undefined means "the default": a null from JavaScript is a wrong type.
    const shared = givenShared === undefined ? (backing?.shared ?? canShare) : givenShared;
    if (typeof shared !== 'boolean') invalidArgument('shared', 'a boolean', shared);
    if (backing !== undefined && shared !== backing.shared) {
      invalidArgument(
        'shared',
        `${backing.shared} or left out: sharing follows from the backing`,
        shared,
      );
    }
    if (shared && !canShare) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'shared memory was asked for but SharedArrayBuffer is not available here',
      );
    }
    const placed = backing === undefined ? place(read) : placeInBacking(read, backing);
    this.#barrierPolicy = resolveBarrierPolicy(barrierPolicy);
    this.#shared = shared;
    if (backing === undefined) {
      const buffer = allocate(placed.byteLength, shared);
      this.#backing = buffer;
      this.#current = () => buffer;
    } else {
      this.#backing = backing.given;
      this.#current = backing.current;
    }
    let word: Int32Array | undefined;
    if (givenFence !== undefined) {
      if (!shared) invalidArgument('fence', 'given only for shared memory', givenFence);
      const fence = readFence(givenFence, 'fence');
      this.#fenceLocation = fence.location;
      word = fence.word;
    } else if (shared) {
      // A cache line of its own, so that fencing never contends with guest data.
      const buffer = new SharedArrayBuffer(64);
      this.#fenceLocation = Object.freeze({ buffer, byteOffset: 0 });
      word = new Int32Array(buffer, 0, 1);
    }
    // One class per kind of backing, so that the fast path's view test is sound (address.ts).
    const flat = shared
      ? new FlatView(placed.regions, this.#current, false)
      : isResizable(this.#current())
        ? new ResizableFlatView(placed.regions, this.#current, true)
        : new DetachableFlatView(placed.regions, this.#current, true);
    const dirty = this.#dirtyBitmap(dirtyLog, placed.regions, adoptedBitmap);
    this.#regions = Object.freeze(placed.regions.map((region) => Object.freeze({ ...region })));
    this.#parts = { flat, fence: new Fence(word, this.#barrierPolicy), dirty };
    this.#logs =
      dirty === undefined
        ? new Map()
        : dirtyLogsOf({ bitmap: dirty, checkRam: (gpa, length) => this.#cpuPieces(gpa, length) });
  }

  #dirtyBitmap(
    options: unknown,
    regions: readonly PlacedRegion[],
    adopted: SharedArrayBuffer | undefined,
  ): DirtyBitmap | undefined {
    if (options === undefined) return undefined;
    const layout = readDirtyOptions(options);
    if (
      adopted !== undefined &&
      sharedByteLength(adopted) < DirtyBitmap.byteLength(layout, regions)
    ) {
      invalidArgument('handle.dirtyLog.bitmap', 'a buffer as large as its log needs', adopted);
    }
    return new DirtyBitmap(layout, regions, adopted, this.#shared);
  }

  /** A byte view of the backing up to the end of its last region. @internal */
  get bytes(): Uint8Array {
    const flat = this.#parts.flat;
    flat.refreshIfStale();
    return flat.bytes;
  }

  /**
   * Recreates, in another thread, the memory a {@link GuestMemory.handle} describes: the
   * same bytes, the same fence word, the same policy, the same dirty log.
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
    const { kind, backing, fence, barrierPolicy, regions, dirtyLog } = handle as unknown as Partial<
      Record<string, unknown>
    >;
    if (
      kind !== 'dma-attrs:guest-memory' ||
      (barrierPolicy !== 'strict' && barrierPolicy !== 'tso')
    ) {
      invalidArgument('handle', 'an object made by GuestMemory.handle()', handle);
    }
    if (!readBacking(backing, 'handle.backing').shared) {
      invalidArgument(
        'handle.backing',
        'a SharedArrayBuffer or a shared WebAssembly.Memory',
        backing,
      );
    }
    if (fence === undefined) {
      invalidArgument('handle.fence', 'an object { buffer, byteOffset }', fence);
    }
    const own: GuestMemoryOptions = {
      backing: backing as GuestMemoryBacking,
      regions: regions as GuestMemoryRegion[],
      fence: fence as FenceLocation,
      barrierPolicy,
    };
    if (dirtyLog !== undefined) {
      if (typeof dirtyLog !== 'object' || dirtyLog === null) {
        invalidArgument('handle.dirtyLog', 'an object { clients, pageSize, bitmap }', dirtyLog);
      }
      const { clients, pageSize, bitmap } = dirtyLog as Record<string, unknown>;
      if (sharedByteLength(bitmap) < 0) {
        invalidArgument('handle.dirtyLog.bitmap', 'a SharedArrayBuffer', bitmap);
      }
      own.dirtyLog = readDirtyOptions({ clients, pageSize }, 'handle.dirtyLog');
      adoptions.set(own, bitmap as SharedArrayBuffer);
    }
    return new GuestMemory(own);
  }

  /**
   * A structured-cloneable description of this memory for `postMessage`. It carries the
   * backing itself (a shared `WebAssembly.Memory` too), the regions with their offsets, the
   * fence location and the dirty log.
   *
   * @returns the handle.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` when the memory is not shared
   * (cloning would copy the bytes, not share them).
   */
  handle(): GuestMemoryHandle {
    const fence = this.#fenceLocation;
    if (!this.#shared || fence === undefined) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        typeof SharedArrayBuffer === 'function'
          ? 'only shared memory has a handle: this memory is not shared (made with shared: false or an unshared backing)'
          : 'only shared memory has a handle, and SharedArrayBuffer is not available here: a browser page needs cross-origin isolation (Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)',
      );
    }
    const dirty = this.#parts.dirty;
    return {
      kind: 'dma-attrs:guest-memory',
      regions: this.#regions.map((region) => ({ ...region })),
      backing: this.#backing as SharedArrayBuffer | WebAssemblyMemory,
      fence: { buffer: fence.buffer, byteOffset: fence.byteOffset },
      barrierPolicy: this.#barrierPolicy,
      ...(dirty === undefined
        ? {}
        : {
            dirtyLog: {
              clients: [...dirty.clients],
              pageSize: dirty.pageSize,
              bitmap: dirty.words.buffer as SharedArrayBuffer,
            },
          }),
    };
  }

  /**
   * One client's dirty log: the pages every write through the library (and
   * {@link GuestMemory.write}) touched since the client last collected them.
   *
   * @param client - one of the clients given in `dirtyLog.clients`.
   * @returns the client's log, the same object on every call.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for an unknown client or a memory
   * without a dirty log.
   */
  dirtyLog(client: string): DirtyLog {
    const log = typeof client === 'string' ? this.#logs.get(client) : undefined;
    if (log === undefined) {
      const known = [...this.#logs.keys()];
      invalidArgument(
        'client',
        known.length === 0
          ? 'a client of the dirty log, but this memory has none (give dirtyLog)'
          : `one of ${known.map((name) => JSON.stringify(name)).join(', ')}`,
        client,
      );
    }
    return log;
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
   * @returns the byte offset in the buffer, or -1 when the range is not one contiguous
   * piece of RAM (a hole, or regions apart in the backing).
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  offsetOf(gpa: number, length: number): number {
    checkAddress(gpa, 'gpa');
    checkLength(length);
    checkRange(gpa, length);
    const flat = this.#parts.flat;
    const pieces: number[] = [];
    if (!flat.resolve(gpa, Math.max(length, 1), pieces) || pieces.length !== 3) return -1;
    return pieces[0] as number;
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
    const pieces = this.#cpuPieces(gpa, length);
    const flat = this.#parts.flat;
    if (pieces.length === 3) copyOut(flat, pieces[0] as number, buf, length);
    else copyPieces(flat, pieces, buf, false);
  }

  /**
   * The vCPU's own write: copies `data` into guest memory at `gpa` with no IOMMU and no
   * barrier, as a CPU store would. It marks the dirty log like a DMA write.
   *
   * @param gpa - a guest-physical address.
   * @param data - the bytes to store.
   * @throws {@link DMAFault} `ERR_DMA_UNASSIGNED` when the range touches a hole;
   * {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad arguments. Nothing is copied then.
   */
  write(gpa: number, data: Uint8Array): void {
    checkAddress(gpa, 'gpa');
    const length = bufferLength(data);
    const pieces = this.#cpuPieces(gpa, length);
    const { flat, dirty } = this.#parts;
    if (pieces.length === 3) copyIn(flat, pieces[0] as number, data, length);
    else copyPieces(flat, pieces, data, true);
    if (dirty !== undefined && length !== 0) dirty.mark(gpa, length);
  }

  /**
   * The backing pieces of a CPU access, through the one address layer; throws for a hole.
   * The array is reused by every CPU access: callers move the bytes before any code not the
   * library's runs, so no two accesses use it at once, and none allocates.
   */
  #cpuPieces(gpa: number, length: number): number[] {
    checkRange(gpa, length);
    const pieces = this.#pieces;
    emptyList(pieces);
    if (!this.#parts.flat.resolve(gpa, length, pieces)) throw unassigned(gpa, length, 0);
    return pieces;
  }

  static {
    isGuestMemory = (value: unknown): value is GuestMemory =>
      typeof value === 'object' && value !== null && #parts in value;
    memoryParts = (memory) => memory.#parts;
  }
}

/**
 * Places given regions at their offsets in a backing: each must lie inside the backing's
 * current length. Regions may share backing bytes (aliases); in guest space they may not
 * overlap, which {@link FlatView} checks.
 */
function placeInBacking(
  regions: readonly GivenRegion[],
  backing: Backing,
): { regions: PlacedRegion[]; byteLength: number } {
  const placed: PlacedRegion[] = [];
  for (const [index, region] of regions.entries()) {
    const offset = region.offset as number;
    if (region.size > backing.byteLength - offset) {
      invalidArgument(
        `regions[${index}]`,
        `to lie inside the backing's ${backing.byteLength} bytes`,
        `offset ${offset} + size ${region.size}`,
      );
    }
    placed.push({ base: region.base, size: region.size, offset });
  }
  placed.sort((a, b) => a.base - b.base);
  return { regions: placed, byteLength: backing.byteLength };
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
