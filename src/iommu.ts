/**
 * The IOMMU: a domain maps IOVA pages to guest-physical pages with per-direction
 * permissions. Its table lives in shared memory so that every thread holding a handle sees
 * the same mappings; each thread keeps its own IOTLB, and `unmap` both invalidates every
 * IOTLB and waits for accesses already in flight (like a VT-d invalidation wait).
 *
 * @module
 */
import {
  DMAAttributes,
  formatAttributes,
  toAttributes,
  type DMAAttributesLike,
} from './attributes.js';
import { resolveBarrierPolicy } from './barrier.js';
import { DMAError, DMAFault, type DMAFaultAccess, type DMAFaultReason } from './errors.js';
import { ADDRESS_LIMIT, checkAddress, invalidArgument, isSafeIndex } from './internal/check.js';
import { describe } from './internal/describe.js';

const { READ, WRITE, RELAXED } = DMAAttributes;
const DIRECTIONS = READ | WRITE;

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

// Layout of the shared buffer, in 32-bit words for the header and slots.
const LOCK = 0;
const GENERATION = 1;
const COUNT = 2;
const HEADER_WORDS = 16;
/** Threads (domain objects) that can use one domain at once. */
const SLOTS = 256;
const SLOT_FREE = 0;
const SLOT_IDLE = 1;
/** Whether a plain store is a release on this host (x86-TSO): the `tso` policy's premise. */
const RELEASE_IS_PLAIN = resolveBarrierPolicy('auto') === 'tso';
/** How long `unmap` and the table lock wait for a thread before taking it for dead. */
const STALL_MS = 1000;
/** Direct-mapped IOTLB entries per thread. */
const TLB_SIZE = 64;

const registry =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry<{ slots: Int32Array; slot: number }>(({ slots, slot }) => {
        Atomics.store(slots, slot, SLOT_FREE);
      })
    : undefined;

/** Which direction a mapping with `perm` refuses to an access that needs `need`. */
function refusedAccess(perm: number, need: number): DMAFaultAccess {
  return (need & READ) !== 0 && (perm & READ) === 0 ? 'read' : 'write';
}

/**
 * Spins until `ready()` or until `STALL_MS` have passed. Only a thread that died inside an
 * access or a table update (a terminated worker) can hold things up that long, and waiting
 * for it forever would hang every other thread.
 */
function spinUntil(ready: () => boolean): boolean {
  let deadline = 0;
  for (let spins = 0; ; spins++) {
    if (ready()) return true;
    if ((spins & 1023) === 1023) {
      const now = Date.now();
      if (deadline === 0) deadline = now + STALL_MS;
      else if (now > deadline) return false;
    }
  }
}

function isPowerOfTwo(value: number): boolean {
  return isSafeIndex(value) && value > 0 && Math.log2(value) % 1 === 0;
}

/** Set by {@link IommuDomain.fromHandle} for the one synchronous constructor call it makes. */
let adopting: IommuDomainHandle | undefined;

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
  /** The page size in bytes. */
  readonly pageSize: number;
  /** The capacity of the shared table. */
  readonly maxMappings: number;
  /** `1 / pageSize`, exact since the page size is a power of two. */
  readonly #pageInverse: number;
  readonly #buffer: SharedArrayBuffer;
  readonly #header: Int32Array;
  readonly #slots: Int32Array;
  /** Mapping `i`: IOVA start `3i`, IOVA end `3i + 1`, guest-physical start `3i + 2`. */
  readonly #ranges: Float64Array;
  readonly #perms: Int32Array;
  readonly #onFault: IommuFaultListener | undefined;
  /** This thread's in-flight slot: holds the generation an access runs under, or idle. */
  readonly #slot: number;
  /** Nesting depth of accesses in this thread (a trace callback may start another). */
  #depth = 0;
  /** The generation the IOTLB entries were filled under. */
  #tlbGeneration = 0;
  readonly #tlbStart = new Float64Array(TLB_SIZE).fill(-1);
  readonly #tlbEnd = new Float64Array(TLB_SIZE);
  readonly #tlbDelta = new Float64Array(TLB_SIZE);
  readonly #tlbPerm = new Int32Array(TLB_SIZE);

  /**
   * @param options - see {@link IommuDomainOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a bad page size, capacity or listener.
   */
  constructor(options: IommuDomainOptions = {}) {
    const handle = adopting;
    adopting = undefined;
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object', options);
    }
    const onFault: unknown = options.onFault;
    if (onFault !== undefined && typeof onFault !== 'function')
      invalidArgument('onFault', 'a function', onFault);
    this.#onFault = onFault as IommuFaultListener | undefined;
    if (handle !== undefined) {
      this.pageSize = handle.pageSize;
      this.maxMappings = handle.maxMappings;
      this.#buffer = handle.buffer;
    } else {
      // Only undefined means "the default": a null from JavaScript is a wrong type.
      const givenPageSize: unknown = options.pageSize;
      const pageSize = givenPageSize === undefined ? 4096 : givenPageSize;
      if (!isSafeIndex(pageSize) || !isPowerOfTwo(pageSize) || pageSize < 4096) {
        invalidArgument('pageSize', 'a power of two of at least 4096', pageSize);
      }
      const givenMaxMappings: unknown = options.maxMappings;
      const maxMappings = givenMaxMappings === undefined ? 65536 : givenMaxMappings;
      if (!isSafeIndex(maxMappings) || maxMappings < 1 || maxMappings > 1 << 24) {
        invalidArgument('maxMappings', 'an integer from 1 to 2^24', maxMappings);
      }
      this.pageSize = pageSize;
      this.maxMappings = maxMappings;
      this.#buffer = new SharedArrayBuffer((HEADER_WORDS + SLOTS) * 4 + maxMappings * 28);
    }
    this.#pageInverse = 1 / this.pageSize;
    const headerBytes = HEADER_WORDS * 4;
    const slotBytes = SLOTS * 4;
    const rangeBytes = this.maxMappings * 24;
    this.#header = new Int32Array(this.#buffer, 0, HEADER_WORDS);
    this.#slots = new Int32Array(this.#buffer, headerBytes, SLOTS);
    this.#ranges = new Float64Array(this.#buffer, headerBytes + slotBytes, this.maxMappings * 3);
    this.#perms = new Int32Array(
      this.#buffer,
      headerBytes + slotBytes + rangeBytes,
      this.maxMappings,
    );
    this.#slot = this.#claimSlot();
    registry?.register(this, { slots: this.#slots, slot: this.#slot });
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
    const candidate = handle as Partial<IommuDomainHandle> | null;
    if (
      candidate?.kind !== 'dma-attrs:iommu-domain' ||
      !(candidate.buffer instanceof SharedArrayBuffer) ||
      !isPowerOfTwo(candidate.pageSize ?? 0) ||
      !isSafeIndex(candidate.maxMappings) ||
      candidate.buffer.byteLength !== (HEADER_WORDS + SLOTS) * 4 + candidate.maxMappings * 28
    ) {
      invalidArgument('handle', 'an object made by IommuDomain.handle()', handle);
    }
    adopting = candidate as IommuDomainHandle;
    return new IommuDomain(options);
  }

  /**
   * A structured-cloneable description of this domain for `postMessage`.
   *
   * @returns the handle.
   */
  handle(): IommuDomainHandle {
    return {
      kind: 'dma-attrs:iommu-domain',
      pageSize: this.pageSize,
      maxMappings: this.maxMappings,
      buffer: this.#buffer,
    };
  }

  /** How many separate mappings the table holds now. */
  get mappingCount(): number {
    return Atomics.load(this.#header, COUNT);
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
    const bits = toAttributes(perm, 'perm');
    if ((bits & DIRECTIONS) === 0 || (bits & RELAXED) !== 0) {
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
      const count = this.#header[COUNT] as number;
      const at = this.#firstEndingAfter(iova, count);
      if (at < count && (this.#ranges[at * 3] as number) < iova + size) {
        throw new DMAError(
          'ERR_DMA_IOMMU_OVERLAP',
          `IOVA range [0x${iova.toString(16)}, 0x${(iova + size).toString(16)}) overlaps the mapping at 0x${(this.#ranges[at * 3] as number).toString(16)}`,
        );
      }
      if (count >= this.maxMappings) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          `the IOMMU table is full: it holds maxMappings = ${this.maxMappings} mappings`,
        );
      }
      this.#ranges.copyWithin((at + 1) * 3, at * 3, count * 3);
      this.#perms.copyWithin(at + 1, at, count);
      this.#ranges[at * 3] = iova;
      this.#ranges[at * 3 + 1] = iova + size;
      this.#ranges[at * 3 + 2] = gpa;
      this.#perms[at] = bits & DIRECTIONS;
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
      let count = this.#header[COUNT] as number;
      const ranges = this.#ranges;
      let at = this.#firstEndingAfter(iova, count);
      // A mapping that straddles both ends splits in two: check there is room first, so that
      // a failed unmap changes nothing.
      if (
        at < count &&
        (ranges[at * 3] as number) < iova &&
        (ranges[at * 3 + 1] as number) > end &&
        count >= this.maxMappings
      ) {
        throw new DMAError(
          'ERR_DMA_INVALID_ARGUMENT',
          `unmapping the middle of a mapping needs one more entry, but the table is full (maxMappings = ${this.maxMappings})`,
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
    checkAddress(iova, 'iova');
    const bits = toAttributes(attrs);
    const need = bits & DIRECTIONS;
    if (need === 0) {
      throw new DMAError(
        'ERR_DMA_INVALID_ATTRIBUTES',
        `translate needs READ, WRITE or BIDIRECTIONAL; received attrs ${describe(attrs)}`,
      );
    }
    return this.translateAccess(iova, 1, bits);
  }

  /**
   * {@link IommuDomain.translate} for validated arguments, with the access's length for the
   * fault it reports.
   * @internal
   */
  translateAccess(iova: number, length: number, attrs: number): IommuTranslation {
    const need = attrs & DIRECTIONS;
    let found: number;
    let gpa = 0;
    let contiguous = 0;
    let perm = 0;
    this.#lock();
    try {
      const count = this.#header[COUNT] as number;
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
    if (found < 0) throw this.fault(iova, length, attrs, 'unmapped', undefined);
    if ((perm & need) !== need) {
      throw this.fault(iova, length, attrs, 'permission', refusedAccess(perm, need));
    }
    return { gpa, length: contiguous, perm };
  }

  /**
   * Marks the start of an access in this thread and returns the generation it runs under.
   * `unmap` waits for accesses marked under an older generation. The store-then-load here
   * pairs with `unmap`'s add-then-load: under sequential consistency one of the two sees
   * the other, so either `unmap` waits for this access or this access sees the new table.
   * @internal
   */
  enter(): number {
    let generation = this.#tlbGeneration;
    if (this.#depth++ === 0) {
      for (;;) {
        Atomics.store(this.#slots, this.#slot, generation + 2);
        // On x86 the xchg of Atomics.store already orders this load after the store, and an
        // aligned 32-bit load cannot tear: a plain load saves a builtin call per access.
        const current = RELEASE_IS_PLAIN
          ? (this.#header[GENERATION] as number)
          : Atomics.load(this.#header, GENERATION);
        if (current === generation) break;
        generation = current;
      }
      if (generation !== this.#tlbGeneration) {
        this.#tlbStart.fill(-1);
        this.#tlbGeneration = generation;
      }
    }
    return generation;
  }

  /**
   * Marks the end of an access started with {@link IommuDomain.enter}. This is a release:
   * the access's bytes must be visible before `unmap` sees the slot idle. On x86 every store
   * is a release (the `tso` argument of barrier.ts), so a plain store does, and saves the
   * `xchg` that `Atomics.store` costs; elsewhere it is `Atomics.store`.
   * @internal
   */
  leave(): void {
    if (--this.#depth !== 0) return;
    if (RELEASE_IS_PLAIN) this.#slots[this.#slot] = SLOT_IDLE;
    else Atomics.store(this.#slots, this.#slot, SLOT_IDLE);
  }

  /**
   * The guest-physical address of an access that fits in one IOTLB entry with the needed
   * permission, or -1 (a miss, a page crossing or a fault: the caller takes the slow path).
   * Call between {@link IommuDomain.enter} and {@link IommuDomain.leave}.
   * @internal
   */
  lookup(iova: number, length: number, need: number): number {
    const index = this.#tlbIndex(iova);
    const start = this.#tlbStart[index] as number;
    if (
      start >= 0 &&
      iova >= start &&
      iova + length <= (this.#tlbEnd[index] as number) &&
      ((this.#tlbPerm[index] as number) & need) === need
    ) {
      return iova + (this.#tlbDelta[index] as number);
    }
    return -1;
  }

  /**
   * Translates a whole access into guest-physical segments `[gpa0, length0, gpa1, ...]`,
   * checking every byte's mapping and permission before returning, and fills the IOTLB.
   * Call between {@link IommuDomain.enter} and {@link IommuDomain.leave}. With `report`
   * false (for `valid`, a mere question) a refusal returns undefined and records no fault.
   * @throws {@link DMAFault} for an unmapped or refused byte (reported to `onFault`).
   * @internal
   */
  segments(iova: number, length: number, attrs: number, report = true): number[] | undefined {
    const need = attrs & DIRECTIONS;
    const result: number[] = [];
    let failure: DMAFaultReason | undefined;
    let refused: DMAFaultAccess | undefined;
    this.#lock();
    try {
      const count = this.#header[COUNT] as number;
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
        const last = result.length - 2;
        if (last >= 0 && (result[last] as number) + (result[last + 1] as number) === gpa) {
          result[last + 1] = (result[last + 1] as number) + (segmentEnd - cursor);
        } else {
          result.push(gpa, segmentEnd - cursor);
        }
        cursor = segmentEnd;
      }
    } finally {
      this.#unlock();
    }
    if (failure === undefined) return result;
    if (report) throw this.fault(iova, length, attrs, failure, refused);
    return undefined;
  }

  /**
   * Builds the fault for a refused access and reports it to the listener, whose own errors
   * are swallowed: a faulty listener must not turn a guest fault into a device crash.
   * @internal
   */
  fault(
    iova: number,
    length: number,
    attrs: number,
    reason: DMAFaultReason,
    access: DMAFaultAccess | undefined,
  ): DMAFault {
    const range = `[0x${iova.toString(16)}, 0x${(iova + length).toString(16)})`;
    const error =
      reason === 'unmapped'
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
    const listener = this.#onFault;
    if (listener !== undefined) {
      try {
        listener(
          access === undefined
            ? { iova, length, attrs, reason }
            : { iova, length, attrs, reason, access },
        );
      } catch {
        // The listener is the embedder's logging; its failure is not the access's.
      }
    }
    return error;
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
    if (!isSafeIndex(value) || value % this.pageSize !== 0) {
      invalidArgument(
        what,
        `a non-negative safe integer multiple of the page size ${this.pageSize}`,
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

  #claimSlot(): number {
    for (let slot = 0; slot < SLOTS; slot++) {
      if (Atomics.compareExchange(this.#slots, slot, SLOT_FREE, SLOT_IDLE) === SLOT_FREE)
        return slot;
    }
    throw new DMAError(
      'ERR_DMA_INVALID_ARGUMENT',
      `an IOMMU domain can be used by at most ${SLOTS} domain objects (threads) at once`,
    );
  }

  /** Waits until no thread is in an access that started under a generation before `generation`. */
  #drain(generation: number): void {
    const slots = this.#slots;
    for (let slot = 0; slot < SLOTS; slot++) {
      if (slot === this.#slot) continue;
      // FREE and IDLE are not in an access; an access marks its slot with generation + 2.
      let value = SLOT_IDLE;
      const drained = spinUntil(() => {
        value = Atomics.load(slots, slot);
        return value === SLOT_FREE || value === SLOT_IDLE || value - 2 >= generation;
      });
      // Given up on: mark the access finished, or every later unmap would wait for it again.
      // Fails harmlessly if the thread has moved on since.
      if (!drained) Atomics.compareExchange(slots, slot, value, SLOT_IDLE);
    }
  }

  #lock(): void {
    const header = this.#header;
    // Critical sections are a few hundred instructions: spin rather than wait, since a
    // browser's main thread may not block. A lock held past the stall limit belongs to a
    // thread that died holding it, and is taken over.
    if (Atomics.compareExchange(header, LOCK, 0, 1) === 0) return;
    if (!spinUntil(() => Atomics.compareExchange(header, LOCK, 0, 1) === 0))
      Atomics.store(header, LOCK, 1);
  }

  #unlock(): void {
    Atomics.store(this.#header, LOCK, 0);
  }
}
