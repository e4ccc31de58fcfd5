/**
 * The IOMMU: a domain maps IOVA pages to guest-physical pages with per-direction
 * permissions. Its table lives in shared memory so that every thread holding a handle sees
 * the same mappings; each thread keeps its own IOTLB, and `unmap` both invalidates every
 * IOTLB and waits for accesses already in flight (like a VT-d invalidation wait).
 *
 * @module
 */
import { formatAttributes, toAttributes, type DMAAttributesLike } from './attributes.js';
import { BIDIRECTIONAL, READ, RELAXED } from './internal/bits.js';
import {
  COUNT,
  GENERATION,
  GENERATION_HALF,
  GENERATION_MASK,
  HEADER_WORDS,
  LOCK,
  NEXT_HINT,
  NEXT_OWNER,
  SLOTS,
  SLOT_ABANDONED,
  SLOT_FREE,
  STALL_MS,
  TLB_SIZE,
} from './internal/iommu-layout.js';
import { resolveBarrierPolicy } from './barrier.js';
import { DMAError, DMAFault, type DMAFaultAccess, type DMAFaultReason } from './errors.js';
import {
  ADDRESS_LIMIT,
  checkAddress,
  invalidArgument,
  isPowerOfTwo,
  isSafeIndex,
} from './internal/check.js';
import { describe } from './internal/describe.js';
import { sharedByteLength } from './internal/intrinsics.js';

/** What a domain's `onFault` listener receives for every refused access. */
export interface IommuFault {
  /** The IOVA of the refused access. */
  readonly iova: number;
  /** The length in bytes of the refused access. */
  readonly length: number;
  /** The attributes of the refused access. */
  readonly attrs: number;
  /** `'unmapped'` when no mapping covers a byte; `'permission'` when one lacks a direction. */
  readonly reason: DMAFaultReason;
  /** For permission faults, the direction that was refused. */
  readonly access?: DMAFaultAccess;
}

/** Receives the domain's faults, like VT-d fault recording. It may not break the domain. */
export type IommuFaultListener = (fault: IommuFault) => void;

/** Options of a new {@link IommuDomain}. */
export interface IommuDomainOptions {
  /** The page size: a power of two of at least 4096 (the default). */
  pageSize?: number;
  /** Called with every fault, in the thread where the fault happened. */
  onFault?: IommuFaultListener;
  /**
   * How many separate mappings the shared table holds (default 65536, as VFIO's default
   * `dma_entry_limit`). Adjacent mappings still count one each.
   */
  maxMappings?: number;
}

/** Options of {@link IommuDomain.fromHandle}. */
export interface IommuDomainHandleOptions {
  /** Called with every fault seen in this thread. */
  onFault?: IommuFaultListener;
}

/** A structured-cloneable description of an {@link IommuDomain}, for `postMessage`. */
export interface IommuDomainHandle {
  /** Marks the object as an IOMMU domain handle. */
  readonly kind: 'dma-attrs:iommu-domain';
  /** The domain's page size. */
  readonly pageSize: number;
  /** The capacity of the shared table. */
  readonly maxMappings: number;
  /** The shared table, lock, generation and in-flight slots. */
  readonly buffer: SharedArrayBuffer;
}

/** The result of {@link IommuDomain.translate}. */
export interface IommuTranslation {
  /** The guest-physical address the IOVA maps to. */
  readonly gpa: number;
  /** How many bytes from `iova` are mapped contiguously (in IOVA and guest-physical space) with the needed permission. */
  readonly length: number;
  /** The permission of the mapping at `iova`. */
  readonly perm: number;
}

/** Whether a plain store is a release on this host (x86-TSO): the `tso` policy's premise. */
const RELEASE_IS_PLAIN = resolveBarrierPolicy('auto') === 'tso';

/** What a slot holds while an access runs under `generation`. */
function inFlight(generation: number): number {
  return (generation & GENERATION_MASK) + 1;
}

/** Whether a slot value is an access that started under a generation before `generation`. */
function startedBefore(value: number, generation: number): boolean {
  if (value === SLOT_FREE || value === SLOT_ABANDONED) return false;
  const age = (generation - (value - 1)) & GENERATION_MASK;
  return age !== 0 && age < GENERATION_HALF;
}

/** Which direction a mapping with `perm` refuses to an access that needs `need`. */
function refusedAccess(perm: number, need: number): DMAFaultAccess {
  return (need & READ) !== 0 && (perm & READ) === 0 ? 'read' : 'write';
}

/**
 * A deadline for spinning on other threads: `STALL_MS` from the first check that finds it
 * still waiting. Only a thread that died inside an access or a table update (a terminated
 * worker) can hold things up that long, and waiting for it forever would hang every other
 * thread. `expired` looks at the clock once every 1024 spins.
 */
class Stall {
  #deadline = 0;
  #spins = 0;

  expired(): boolean {
    if ((++this.#spins & 1023) !== 0) return false;
    const now = Date.now();
    if (this.#deadline === 0) this.#deadline = now + STALL_MS;
    return now > this.#deadline;
  }
}

function isMaxMappings(value: unknown): value is number {
  return isSafeIndex(value) && value >= 1 && value <= 1 << 24;
}

/**
 * The domain's table. Without `SharedArrayBuffer` (a page that is not cross-origin
 * isolated) it is an `ArrayBuffer`: the domain then works within its thread and has no
 * handle (SPEC §4.3).
 */
function allocateShared(byteLength: number): ArrayBufferLike {
  return typeof SharedArrayBuffer === 'function'
    ? new SharedArrayBuffer(byteLength)
    : new ArrayBuffer(byteLength);
}

/** The fault of a refused access, not yet reported to any listener. */
function refusal(
  iova: number,
  length: number,
  attrs: number,
  reason: DMAFaultReason,
  access: DMAFaultAccess | undefined,
): DMAFault {
  const range = `[0x${iova.toString(16)}, 0x${(iova + length).toString(16)})`;
  return reason === 'unmapped'
    ? new DMAFault(
        'ERR_DMA_IOMMU_UNMAPPED',
        `IOMMU: IOVA range ${range} (${formatAttributes(attrs)}) is not mapped`,
        iova,
        length,
        attrs,
        reason,
      )
    : new DMAFault(
        'ERR_DMA_IOMMU_PERMISSION',
        `IOMMU: ${access ?? 'write'} refused for IOVA range ${range} (${formatAttributes(attrs)}): the mapping does not allow it`,
        iova,
        length,
        attrs,
        reason,
        access,
      );
}

/** The size of a domain's shared buffer for a table of `maxMappings`. */
function bufferSize(maxMappings: number): number {
  return (HEADER_WORDS + SLOTS) * 4 + maxMappings * 28;
}

/** What {@link IommuDomain.fromHandle} validated, for the constructor call it makes. */
interface Adopted {
  readonly pageSize: number;
  readonly maxMappings: number;
  readonly buffer: ArrayBufferLike;
}

/**
 * The options objects {@link IommuDomain.fromHandle} made, with what it validated. Keyed by
 * the object itself: no caller can forge an entry, and nothing is left behind when the
 * constructor throws.
 */
const adoptions = new WeakMap<object, Adopted>();

/** The in-flight protocol and the IOTLB, for the DMA context: see {@link IommuDomain}. */
export interface IommuAccess {
  /** Marks the start of an access; returns the slot to give back to `leave`. */
  enter(domain: IommuDomain): number;
  /** Marks the end of an access started with `enter`. */
  leave(domain: IommuDomain, slot: number): void;
  /** Starts a batch: enters the in-flight protocol once for the accesses of a batch. */
  begin(domain: IommuDomain): number;
  /**
   * Called before each access of a batch: the slot to keep holding, the same unless an
   * `unmap` happened since the batch last looked, in which case the batch re-enters (a new
   * slot under the new generation, a fresh IOTLB).
   */
  recheck(domain: IommuDomain, slot: number): number;
  /** Ends a batch started with `begin`. */
  end(domain: IommuDomain, slot: number): void;
  /** The gpa of an IOTLB hit with the needed permission, or -1. */
  lookup(domain: IommuDomain, iova: number, length: number, need: number): number;
  /** The domain's IOTLB epoch: it moves whenever the IOTLB is dropped. */
  epoch(domain: IommuDomain): number;
  /**
   * The IOTLB entry of the last hit, as `out[0..3]` = IOVA start, IOVA end, gpa - IOVA,
   * permission bits; `out[1]` is -1 when there is none.
   */
  lastHit(domain: IommuDomain, out: number[]): void;
  /** Translates a whole access into `out` (gpa, length pairs), or returns its unreported fault. */
  translateRange(
    domain: IommuDomain,
    iova: number,
    length: number,
    attrs: number,
    out: number[],
  ): DMAFault | undefined;
  /** Reports a fault to the domain's listener and returns it, for throwing. */
  report(domain: IommuDomain, fault: DMAFault): DMAFault;
  /** Translates one IOVA for `map`, reporting a fault. */
  translateAccess(
    domain: IommuDomain,
    iova: number,
    length: number,
    attrs: number,
  ): IommuTranslation;
}

/** Whether a value is a genuine {@link IommuDomain} (a private-field brand check). */
export let isIommuDomain: (value: unknown) => value is IommuDomain;
/** The internal side of every domain; see {@link IommuAccess}. */
export let iommuAccess: IommuAccess;

/**
 * An IOMMU domain: the IOVA space one device (or group of devices) sees. Give it to a
 * {@link DMAContext} with the `iommu` option, and every access is translated and checked
 * against the permission of each page it touches.
 *
 * @example
 * ```ts
 * const domain = new IommuDomain({ onFault: (fault) => console.warn('IOMMU fault', fault) });
 * domain.map(0x10000, 0x200000, 0x4000, DMAAttributes.WRITE); // RX buffers: device may only write
 * const nic = new DMAContext(memory, { iommu: domain });
 * nic.write(0x10000, packet);                                  // lands at gpa 0x200000
 * nic.read(0x10000, probe);                                     // DMAFault ERR_DMA_IOMMU_PERMISSION
 * ```
 */
export class IommuDomain {
  readonly #pageSize: number;
  readonly #maxMappings: number;
  /** `1 / pageSize`, exact since the page size is a power of two. */
  readonly #pageInverse: number;
  readonly #buffer: ArrayBufferLike;
  readonly #header: Int32Array;
  readonly #slots: Int32Array;
  /** Mapping `i`: IOVA start `3i`, IOVA end `3i + 1`, guest-physical start `3i + 2`. */
  readonly #ranges: Float64Array;
  readonly #perms: Int32Array;
  readonly #onFault: IommuFaultListener | undefined;
  /** The slot this object tries first; another is taken when it is busy. */
  #hint: number;
  /** Set by {@link IommuDomain.close}. */
  #closed = false;
  /** What this object writes into the table lock while it holds it: never 0 (free). */
  readonly #owner: number;
  /** The generation the IOTLB entries were filled under. */
  #tlbGeneration = 0;
  readonly #tlbStart = new Float64Array(TLB_SIZE).fill(-1);
  readonly #tlbEnd = new Float64Array(TLB_SIZE);
  readonly #tlbDelta = new Float64Array(TLB_SIZE);
  readonly #tlbPerm = new Int32Array(TLB_SIZE);
  /**
   * How many times the IOTLB was dropped (an `unmap` seen, or `close`): a translation kept
   * outside the domain (a context's window) is good while this has not moved. A plain count,
   * never wrapped, so that no old value comes back.
   */
  #epoch = 0;
  // The IOTLB entry of the last hit, in plain fields: a device's accesses in a row mostly land
  // in one mapping, and these loads are cheaper than the page index and four array loads.
  #lastStart = -1;
  #lastEnd = -1;
  #lastDelta = 0;
  #lastPerm = 0;
  /**
   * The slots this object's batches hold ({@link DMAContext.batch}), one count per slot: its
   * own `unmap` does not wait for them, since no access of this thread is in flight while it
   * runs one, and the batch re-enters under the new generation at its next access.
   */
  readonly #batches = new Uint8Array(SLOTS);

  /** The page size in bytes. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The capacity of the shared table. */
  get maxMappings(): number {
    return this.#maxMappings;
  }

  /**
   * @param options - see {@link IommuDomainOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a bad page size, capacity or listener.
   */
  constructor(options: IommuDomainOptions = {}) {
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object', options);
    }
    const adopted = adoptions.get(options);
    // Each option is read once, into a local that is then validated and used.
    const onFault: unknown = options.onFault;
    if (onFault !== undefined && typeof onFault !== 'function')
      invalidArgument('onFault', 'a function', onFault);
    this.#onFault = onFault as IommuFaultListener | undefined;
    if (adopted !== undefined) {
      this.#pageSize = adopted.pageSize;
      this.#maxMappings = adopted.maxMappings;
      this.#buffer = adopted.buffer;
    } else {
      // Only undefined means "the default": a null from JavaScript is a wrong type.
      const givenPageSize: unknown = options.pageSize;
      const pageSize = givenPageSize === undefined ? 4096 : givenPageSize;
      if (!isPowerOfTwo(pageSize) || pageSize < 4096) {
        invalidArgument('pageSize', 'a power of two of at least 4096', pageSize);
      }
      const givenMaxMappings: unknown = options.maxMappings;
      const maxMappings = givenMaxMappings === undefined ? 65536 : givenMaxMappings;
      if (!isMaxMappings(maxMappings)) {
        invalidArgument('maxMappings', 'an integer from 1 to 2^24', maxMappings);
      }
      this.#pageSize = pageSize;
      this.#maxMappings = maxMappings;
      this.#buffer = allocateShared(bufferSize(maxMappings));
    }
    this.#pageInverse = 1 / this.#pageSize;
    const headerBytes = HEADER_WORDS * 4;
    const slotBytes = SLOTS * 4;
    const rangeBytes = this.#maxMappings * 24;
    this.#header = new Int32Array(this.#buffer, 0, HEADER_WORDS);
    this.#slots = new Int32Array(this.#buffer, headerBytes, SLOTS);
    this.#ranges = new Float64Array(this.#buffer, headerBytes + slotBytes, this.#maxMappings * 3);
    this.#perms = new Int32Array(
      this.#buffer,
      headerBytes + slotBytes + rangeBytes,
      this.#maxMappings,
    );
    this.#hint = Atomics.add(this.#header, NEXT_HINT, 1) & (SLOTS - 1);
    // 2^31 objects later the ids repeat, which only matters if two of them wait on one dead
    // holder at once; 0 is skipped, since it means "free".
    this.#owner = (Atomics.add(this.#header, NEXT_OWNER, 1) & 0x7fffffff) + 1;
  }

  /**
   * Recreates, in another thread, the domain a {@link IommuDomain.handle} describes: the
   * same shared table, with this thread's own IOTLB and fault listener.
   *
   * @param handle - what {@link IommuDomain.handle} returned, after `postMessage`.
   * @param options - this thread's `onFault` listener.
   * @returns a domain sharing its table with the original.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for anything that is not a handle.
   */
  static fromHandle(
    handle: IommuDomainHandle,
    options: IommuDomainHandleOptions = {},
  ): IommuDomain {
    if (typeof handle !== 'object' || (handle as unknown) === null) {
      invalidArgument('handle', 'an object made by IommuDomain.handle()', handle);
    }
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object', options);
    }
    // Read once: a getter that answers differently the second time cannot matter.
    const { kind, pageSize, maxMappings, buffer } = handle as unknown as Partial<
      Record<string, unknown>
    >;
    const onFault = options.onFault;
    const byteLength = sharedByteLength(buffer);
    if (
      kind !== 'dma-attrs:iommu-domain' ||
      !isPowerOfTwo(pageSize) ||
      pageSize < 4096 ||
      !isMaxMappings(maxMappings) ||
      byteLength !== bufferSize(maxMappings)
    ) {
      invalidArgument('handle', 'an object made by IommuDomain.handle()', handle);
    }
    const own: IommuDomainOptions = onFault === undefined ? {} : { onFault };
    adoptions.set(own, { pageSize, maxMappings, buffer: buffer as SharedArrayBuffer });
    return new IommuDomain(own);
  }

  /**
   * A structured-cloneable description of this domain for `postMessage`.
   *
   * @returns the handle.
   */
  handle(): IommuDomainHandle {
    this.#checkOpen();
    if (!(typeof SharedArrayBuffer === 'function' && this.#buffer instanceof SharedArrayBuffer)) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'an IOMMU domain has a handle only where SharedArrayBuffer exists: a browser page needs cross-origin isolation (Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp), or use Node.js',
      );
    }
    return {
      kind: 'dma-attrs:iommu-domain',
      pageSize: this.#pageSize,
      maxMappings: this.#maxMappings,
      buffer: this.#buffer,
    };
  }

  /** How many separate mappings the table holds now. */
  get mappingCount(): number {
    return this.#count(Atomics.load(this.#header, COUNT));
  }

  /**
   * Maps `size` bytes of IOVA space at `iova` to guest-physical `gpa` with permission `perm`.
   *
   * @param iova - the IOVA, a multiple of the page size.
   * @param gpa - the guest-physical address, a multiple of the page size.
   * @param size - the byte count, a positive multiple of the page size.
   * @param perm - READ, WRITE or BIDIRECTIONAL (a number or flags; RELAXED is not a permission).
   * @throws {@link DMAError} `ERR_DMA_IOMMU_OVERLAP` when any page is already mapped;
   * `ERR_DMA_INVALID_ARGUMENT` for unaligned or unsafe numbers or a full table;
   * `ERR_DMA_INVALID_ATTRIBUTES` for a bad permission. The table is unchanged then.
   */
  map(iova: number, gpa: number, size: number, perm: DMAAttributesLike): void {
    this.#checkOpen();
    const bits = toAttributes(perm, 'perm');
    if ((bits & BIDIRECTIONAL) === 0 || (bits & RELAXED) !== 0) {
      throw new DMAError(
        'ERR_DMA_INVALID_ATTRIBUTES',
        `perm must be READ, WRITE or BIDIRECTIONAL; received ${describe(perm)} (${formatAttributes(bits)})`,
      );
    }
    this.#checkAligned(iova, 'iova');
    this.#checkAligned(gpa, 'gpa');
    this.#checkAligned(size, 'size');
    if (size === 0) invalidArgument('size', 'a positive multiple of the page size', size);
    // Subtractions, which are exact for safe integers; the sums would round.
    if (size > ADDRESS_LIMIT - iova || size > ADDRESS_LIMIT - gpa) {
      invalidArgument(
        'iova + size and gpa + size',
        'at most 2^53',
        `iova ${iova}, gpa ${gpa}, size ${size}`,
      );
    }
    this.#lock();
    try {
      const count = this.#count(this.#header[COUNT] as number);
      const at = this.#firstEndingAfter(iova, count);
      if (at < count && (this.#ranges[at * 3] as number) < iova + size) {
        throw new DMAError(
          'ERR_DMA_IOMMU_OVERLAP',
          `IOVA range [0x${iova.toString(16)}, 0x${(iova + size).toString(16)}) overlaps the mapping at 0x${(this.#ranges[at * 3] as number).toString(16)}`,
        );
      }
      if (count >= this.#maxMappings) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          `the IOMMU table is full: it holds maxMappings = ${this.#maxMappings} mappings`,
        );
      }
      this.#ranges.copyWithin((at + 1) * 3, at * 3, count * 3);
      this.#perms.copyWithin(at + 1, at, count);
      this.#ranges[at * 3] = iova;
      this.#ranges[at * 3 + 1] = iova + size;
      this.#ranges[at * 3 + 2] = gpa;
      this.#perms[at] = bits & BIDIRECTIONAL;
      this.#header[COUNT] = count + 1;
    } finally {
      this.#unlock();
    }
  }

  /**
   * Removes every mapping of the `size` bytes at `iova` (pages not mapped are skipped). When
   * it returns, no access in any thread that starts afterwards uses the old mappings, and
   * every access that was in flight has finished.
   *
   * @param iova - the IOVA, a multiple of the page size.
   * @param size - the byte count, a positive multiple of the page size.
   * @returns how many bytes were mapped and are now unmapped.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for unaligned or unsafe numbers, or
   * when splitting a mapping would overflow the table.
   */
  unmap(iova: number, size: number): number {
    this.#checkOpen();
    this.#checkAligned(iova, 'iova');
    this.#checkAligned(size, 'size');
    if (size === 0) invalidArgument('size', 'a positive multiple of the page size', size);
    if (size > ADDRESS_LIMIT - iova)
      invalidArgument('iova + size', 'at most 2^53', `iova ${iova}, size ${size}`);
    const end = iova + size;
    let removed = 0;
    let generation: number;
    this.#lock();
    try {
      let count = this.#count(this.#header[COUNT] as number);
      const ranges = this.#ranges;
      let at = this.#firstEndingAfter(iova, count);
      // A mapping that straddles both ends splits in two: check there is room first, so that
      // a failed unmap changes nothing.
      if (
        at < count &&
        (ranges[at * 3] as number) < iova &&
        (ranges[at * 3 + 1] as number) > end &&
        count >= this.#maxMappings
      ) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          `unmapping the middle of a mapping needs one more entry, but the table is full (maxMappings = ${this.#maxMappings})`,
        );
      }
      while (at < count && (ranges[at * 3] as number) < end) {
        const start = ranges[at * 3] as number;
        const stop = ranges[at * 3 + 1] as number;
        const gpa = ranges[at * 3 + 2] as number;
        const cutStart = Math.max(start, iova);
        const cutEnd = Math.min(stop, end);
        removed += cutEnd - cutStart;
        if (start < cutStart && stop > cutEnd) {
          ranges.copyWithin((at + 1) * 3, at * 3, count * 3);
          this.#perms.copyWithin(at + 1, at, count);
          ranges[at * 3 + 1] = cutStart;
          ranges[(at + 1) * 3] = cutEnd;
          ranges[(at + 1) * 3 + 2] = gpa + (cutEnd - start);
          count++;
          break;
        } else if (start < cutStart) {
          ranges[at * 3 + 1] = cutStart;
          at++;
        } else if (stop > cutEnd) {
          ranges[at * 3] = cutEnd;
          ranges[at * 3 + 2] = gpa + (cutEnd - start);
          break;
        } else {
          ranges.copyWithin(at * 3, (at + 1) * 3, count * 3);
          this.#perms.copyWithin(at, at + 1, count);
          count--;
        }
      }
      this.#header[COUNT] = count;
      generation = Atomics.add(this.#header, GENERATION, 1) + 1;
    } finally {
      this.#unlock();
    }
    this.#drain(generation);
    return removed;
  }

  /**
   * Translates one IOVA for an access with these attributes.
   *
   * @param iova - the IOVA.
   * @param attrs - READ, WRITE or BIDIRECTIONAL (RELAXED is allowed and ignored).
   * @returns the guest-physical address, the contiguous length and the permission.
   * @throws {@link DMAFault} `ERR_DMA_IOMMU_UNMAPPED` or `ERR_DMA_IOMMU_PERMISSION` (also
   * reported to `onFault`); {@link DMAError} for bad arguments.
   */
  translate(iova: number, attrs: DMAAttributesLike): IommuTranslation {
    // Attributes first, then arguments: the documented order of every accessor.
    const bits = toAttributes(attrs);
    const need = bits & BIDIRECTIONAL;
    if (need === 0) {
      throw new DMAError(
        'ERR_DMA_INVALID_ATTRIBUTES',
        `translate needs READ, WRITE or BIDIRECTIONAL; received attrs ${describe(attrs)}`,
      );
    }
    checkAddress(iova, 'iova');
    return this.#translateAccess(iova, 1, bits);
  }

  /**
   * Ends this object's use of the domain: every later call on it (and every access of a
   * context that uses it) is `ERR_DMA_INVALID_ARGUMENT`, and its IOTLB is dropped. The
   * shared table and the other threads' objects are untouched. Nothing shared needs to be
   * given back: an in-flight slot is held only during an access, so a thread that ends
   * without calling this (a terminated worker) leaves nothing behind. Calling it twice is
   * harmless.
   */
  close(): void {
    this.#closed = true;
    this.#flushTlb();
  }

  /** Whether {@link IommuDomain.close} was called on this object. */
  get closed(): boolean {
    return this.#closed;
  }

  /** {@link IommuDomain.translate} for validated arguments, with the access's length for its fault. */
  #translateAccess(iova: number, length: number, attrs: number): IommuTranslation {
    this.#checkOpen();
    const need = attrs & BIDIRECTIONAL;
    let found: number;
    let gpa = 0;
    let contiguous = 0;
    let perm = 0;
    this.#lock();
    try {
      const count = this.#count(this.#header[COUNT] as number);
      found = this.#find(iova, count);
      if (found >= 0) {
        perm = this.#perms[found] as number;
        gpa =
          (this.#ranges[found * 3 + 2] as number) + (iova - (this.#ranges[found * 3] as number));
        if ((perm & need) === need) contiguous = this.#contiguousEnd(found, need, count) - iova;
      }
    } finally {
      this.#unlock();
    }
    if (found < 0) throw this.#report(refusal(iova, length, attrs, 'unmapped', undefined));
    if ((perm & need) !== need) {
      throw this.#report(refusal(iova, length, attrs, 'permission', refusedAccess(perm, need)));
    }
    return { gpa, length: contiguous, perm };
  }

  /**
   * Marks the start of an access: takes a free in-flight slot, writes the generation the
   * access runs under, and drops the IOTLB if an `unmap` happened since it was filled.
   * `unmap` waits for every slot that holds an older generation. The write-then-load here
   * pairs with `unmap`'s add-then-load: under sequential consistency one of the two sees the
   * other, so either `unmap` waits for this access or this access sees the new table. The
   * generation is checked on every access, nested or not, so no access can start on an
   * IOTLB entry older than an `unmap` that has returned.
   */
  #enter(): number {
    const slots = this.#slots;
    let generation = this.#tlbGeneration;
    let slot = this.#hint;
    if (Atomics.compareExchange(slots, slot, SLOT_FREE, inFlight(generation)) !== SLOT_FREE) {
      slot = this.#claimOther(inFlight(generation));
    }
    for (;;) {
      // On x86 the locked cmpxchg (or xchg) above already orders this load after the write,
      // and an aligned 32-bit load cannot tear: a plain load saves a builtin call per access.
      const current = RELEASE_IS_PLAIN
        ? (this.#header[GENERATION] as number)
        : Atomics.load(this.#header, GENERATION);
      if (current === generation) break;
      generation = current;
      Atomics.store(slots, slot, inFlight(generation));
    }
    if (generation !== this.#tlbGeneration) {
      this.#flushTlb();
      this.#tlbGeneration = generation;
    }
    return slot;
  }

  /**
   * Marks the end of an access started with {@link IommuDomain.#enter}. This is a release:
   * the access's bytes must be visible before `unmap` sees the slot free. On x86 every store
   * is a release (the `tso` argument of barrier.ts), so a plain store does, and saves the
   * `xchg` that `Atomics.store` costs; elsewhere it is `Atomics.store`.
   */
  #leave(slot: number): void {
    if (RELEASE_IS_PLAIN) this.#slots[slot] = SLOT_FREE;
    else Atomics.store(this.#slots, slot, SLOT_FREE);
  }

  /** {@link IommuAccess.begin}. */
  #begin(): number {
    const slot = this.#enter();
    this.#batches[slot] = 1;
    return slot;
  }

  /**
   * {@link IommuAccess.recheck}: one load of the generation on the fast path. When it moved,
   * an `unmap` may be waiting for this slot: the batch gives it back (unless the unmap's stall
   * limit already took it) and enters afresh, which drops the IOTLB. Between two accesses of
   * a batch no access is in flight, so giving the slot back there is safe.
   */
  #recheck(slot: number): number {
    const current = RELEASE_IS_PLAIN
      ? (this.#header[GENERATION] as number)
      : Atomics.load(this.#header, GENERATION);
    if (current === this.#tlbGeneration) return slot;
    this.#batches[slot] = 0;
    Atomics.compareExchange(this.#slots, slot, inFlight(this.#tlbGeneration), SLOT_FREE);
    return this.#begin();
  }

  /** {@link IommuAccess.end}. */
  #end(slot: number): void {
    this.#batches[slot] = 0;
    this.#leave(slot);
  }

  /**
   * Takes another slot when the preferred one is busy: first a free one, then one that an
   * `unmap` abandoned, waiting up to the stall limit for either.
   */
  #claimOther(value: number): number {
    const slots = this.#slots;
    const stall = new Stall();
    for (;;) {
      for (const wanted of [SLOT_FREE, SLOT_ABANDONED]) {
        for (let step = 1; step <= SLOTS; step++) {
          const slot = (this.#hint + step) & (SLOTS - 1);
          if (Atomics.compareExchange(slots, slot, wanted, value) === wanted) {
            this.#hint = slot;
            return slot;
          }
        }
      }
      if (stall.expired()) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          `all ${SLOTS} in-flight slots of the IOMMU domain stayed busy for ${STALL_MS} ms: too many threads are inside an access at once`,
        );
      }
    }
  }

  /**
   * The guest-physical address of an access that fits in one IOTLB entry with the needed
   * permission, or -1 (a miss, a page crossing or a fault: the caller takes the slow path).
   * Call between enter and leave.
   */
  #lookup(iova: number, length: number, need: number): number {
    if (
      iova >= this.#lastStart &&
      iova + length <= this.#lastEnd &&
      (this.#lastPerm & need) === need
    ) {
      // Empty, #lastEnd is -1: no access ends there.
      return iova + this.#lastDelta;
    }
    return this.#lookupTable(iova, length, need);
  }

  /** {@link IommuDomain.#lookup} past the last hit: the direct-mapped IOTLB. */
  #lookupTable(iova: number, length: number, need: number): number {
    const index = this.#tlbIndex(iova);
    const start = this.#tlbStart[index] as number;
    if (
      start >= 0 &&
      iova >= start &&
      iova + length <= (this.#tlbEnd[index] as number) &&
      ((this.#tlbPerm[index] as number) & need) === need
    ) {
      this.#lastStart = start;
      this.#lastEnd = this.#tlbEnd[index] as number;
      this.#lastDelta = this.#tlbDelta[index] as number;
      this.#lastPerm = this.#tlbPerm[index] as number;
      return iova + (this.#tlbDelta[index] as number);
    }
    return -1;
  }

  /** Drops the IOTLB and the last hit. */
  #flushTlb(): void {
    this.#epoch += 1;
    this.#tlbStart.fill(-1);
    this.#lastStart = -1;
    this.#lastEnd = -1;
  }

  /**
   * Translates a whole access into guest-physical segments pushed onto `out` as
   * `gpa, length` pairs, checking every byte's mapping and permission, and fills the IOTLB.
   * Returns the fault of a refused byte without reporting it: the caller reports it once it
   * has left the access, so that a listener never runs inside one.
   */
  #translateRange(
    iova: number,
    length: number,
    attrs: number,
    out: number[],
  ): DMAFault | undefined {
    this.#checkOpen();
    const need = attrs & BIDIRECTIONAL;
    let failure: DMAFaultReason | undefined;
    let refused: DMAFaultAccess | undefined;
    const first = out.length;
    this.#lock();
    try {
      const count = this.#count(this.#header[COUNT] as number);
      let cursor = iova;
      const end = iova + length;
      while (cursor < end) {
        const found = this.#find(cursor, count);
        if (found < 0) {
          failure = 'unmapped';
          break;
        }
        const perm = this.#perms[found] as number;
        if ((perm & need) !== need) {
          failure = 'permission';
          refused = refusedAccess(perm, need);
          break;
        }
        const start = this.#ranges[found * 3] as number;
        const stop = this.#ranges[found * 3 + 1] as number;
        const delta = (this.#ranges[found * 3 + 2] as number) - start;
        const index = this.#tlbIndex(cursor);
        this.#tlbStart[index] = start;
        this.#tlbEnd[index] = stop;
        this.#tlbDelta[index] = delta;
        this.#tlbPerm[index] = perm;
        const segmentEnd = Math.min(stop, end);
        const gpa = cursor + delta;
        const last = out.length - 2;
        if (last >= first && (out[last] as number) + (out[last + 1] as number) === gpa) {
          out[last + 1] = (out[last + 1] as number) + (segmentEnd - cursor);
        } else {
          out.push(gpa, segmentEnd - cursor);
        }
        cursor = segmentEnd;
      }
    } finally {
      this.#unlock();
    }
    return failure === undefined ? undefined : refusal(iova, length, attrs, failure, refused);
  }

  /**
   * Reports a fault to the listener, whose own errors are swallowed: a faulty listener must
   * not turn a guest fault into a device crash. Returns the fault, for throwing.
   */
  #report(fault: DMAFault): DMAFault {
    const listener = this.#onFault;
    if (listener !== undefined) {
      const { addr: iova, length, attrs, reason, access } = fault;
      try {
        listener(
          access === undefined
            ? { iova, length, attrs, reason: reason ?? 'unmapped' }
            : { iova, length, attrs, reason: reason ?? 'permission', access },
        );
      } catch {
        // The listener is the embedder's logging; its failure is not the access's.
      }
    }
    return fault;
  }

  /**
   * The table's mapping count, within `[0, maxMappings]`. Only the library writes the table,
   * but a forged handle can bring any bytes: clamping the count bounds every walk of it.
   */
  #count(stored: number): number {
    return stored > 0 ? Math.min(stored, this.#maxMappings) : 0;
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'this IommuDomain object was closed; make another with IommuDomain.fromHandle(domain.handle())',
      );
    }
  }

  static {
    isIommuDomain = (value: unknown): value is IommuDomain =>
      typeof value === 'object' && value !== null && #slots in value;
    iommuAccess = {
      enter: (domain) => domain.#enter(),
      leave: (domain, slot) => {
        domain.#leave(slot);
      },
      begin: (domain) => domain.#begin(),
      recheck: (domain, slot) => domain.#recheck(slot),
      end: (domain, slot) => {
        domain.#end(slot);
      },
      lookup: (domain, iova, length, need) => domain.#lookup(iova, length, need),
      epoch: (domain) => domain.#epoch,
      lastHit: (domain, out) => {
        out[0] = domain.#lastStart;
        out[1] = domain.#lastEnd;
        out[2] = domain.#lastDelta;
        out[3] = domain.#lastPerm;
      },
      translateRange: (domain, iova, length, attrs, out) =>
        domain.#translateRange(iova, length, attrs, out),
      report: (domain, fault) => domain.#report(fault),
      translateAccess: (domain, iova, length, attrs) =>
        domain.#translateAccess(iova, length, attrs),
    };
  }

  /**
   * The IOTLB slot of an IOVA's page. A multiplication by the exact inverse of the page size
   * (a power of two) rather than a division; `& (TLB_SIZE - 1)` keeps the low bits of the
   * page number even above 2^32.
   */
  #tlbIndex(iova: number): number {
    return Math.floor(iova * this.#pageInverse) & (TLB_SIZE - 1);
  }

  #checkAligned(value: number, what: string): void {
    if (!isSafeIndex(value) || value % this.#pageSize !== 0) {
      invalidArgument(
        what,
        `a non-negative safe integer multiple of the page size ${this.#pageSize}`,
        value,
      );
    }
  }

  /** Index of the first mapping whose end is above `iova`. Call with the lock held. */
  #firstEndingAfter(iova: number, count: number): number {
    let low = 0;
    let high = count;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.#ranges[middle * 3 + 1] as number) <= iova) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** Index of the mapping containing `iova`, or -1. Call with the lock held. */
  #find(iova: number, count: number): number {
    const at = this.#firstEndingAfter(iova, count);
    return at < count && (this.#ranges[at * 3] as number) <= iova ? at : -1;
  }

  /** End of the run of mappings from `found` that are contiguous in both spaces and allow `need`. */
  #contiguousEnd(found: number, need: number, count: number): number {
    let at = found;
    let end = this.#ranges[at * 3 + 1] as number;
    while (at + 1 < count) {
      const next = at + 1;
      const gpaEnd =
        (this.#ranges[at * 3 + 2] as number) + (end - (this.#ranges[at * 3] as number));
      if (
        (this.#ranges[next * 3] as number) !== end ||
        (this.#ranges[next * 3 + 2] as number) !== gpaEnd ||
        ((this.#perms[next] as number) & need) !== need
      )
        break;
      at = next;
      end = this.#ranges[at * 3 + 1] as number;
    }
    return end;
  }

  /**
   * Waits until no access is in flight that started under a generation before `generation`.
   * One stall limit for the whole scan: slots still busy when it has passed belong to threads
   * that died inside an access, and are marked abandoned so that no later unmap waits for
   * them again. (The compare-exchange fails harmlessly if the thread has moved on since.)
   */
  #drain(generation: number): void {
    const slots = this.#slots;
    const batches = this.#batches;
    const stall = new Stall();
    for (let slot = 0; slot < SLOTS; slot++) {
      // A batch of this thread's: it is not inside an access while this thread unmaps.
      if (batches[slot] !== 0) continue;
      for (;;) {
        const value = Atomics.load(slots, slot);
        if (!startedBefore(value, generation)) break;
        if (stall.expired()) {
          Atomics.compareExchange(slots, slot, value, SLOT_ABANDONED);
          break;
        }
      }
    }
  }

  /**
   * Takes the table lock. Critical sections are a few hundred instructions: spin rather than
   * wait, since a browser's main thread may not block. The lock word names its holder, so a
   * holder that kept it past the stall limit (a thread that died holding it) is taken over
   * with a compare-exchange on that very holder: of the threads waiting on it, exactly one
   * wins, and the others wait for the winner afresh. (A plain store here let every waiter
   * take over at once and edit the table together.)
   */
  #lock(): void {
    const header = this.#header;
    const owner = this.#owner;
    let holder = Atomics.compareExchange(header, LOCK, 0, owner);
    if (holder === 0) return;
    let stall = new Stall();
    for (;;) {
      const seen = Atomics.compareExchange(header, LOCK, 0, owner);
      if (seen === 0) return;
      if (seen !== holder) {
        holder = seen;
        stall = new Stall();
      } else if (stall.expired()) {
        if (Atomics.compareExchange(header, LOCK, holder, owner) === holder) return;
        stall = new Stall();
      }
    }
  }

  #unlock(): void {
    Atomics.store(this.#header, LOCK, 0);
  }
}

/**
 * `domain[Symbol.dispose]()` is {@link IommuDomain.close}, so that `using domain = ...` ends a
 * domain object's use where the runtime has explicit resource management (Node.js 20.4 and
 * later). Defined only where `Symbol.dispose` exists.
 */
const disposeSymbol = (Symbol as { dispose?: symbol }).dispose;
if (typeof disposeSymbol === 'symbol') {
  Object.defineProperty(IommuDomain.prototype, disposeSymbol, {
    value: function dispose(this: IommuDomain): void {
      this.close();
    },
    writable: true,
    configurable: true,
  });
}
