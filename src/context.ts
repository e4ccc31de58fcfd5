/**
 * The DMA context: one device's window on guest memory, with one set of accessors whose
 * ordering barrier follows from the attributes of each access.
 *
 * @module
 */
import {
  DMAAttributes,
  formatAttributes,
  toAttributes,
  type DMAAttributesLike,
} from './attributes.js';
import {
  ACQUIRE,
  FULL,
  NONE,
  RELEASE,
  STRENGTH_NAMES,
  parseStrength,
  strengthCode,
  type BarrierStrength,
  type Fence,
} from './barrier.js';
import type { AddressMap } from './address.js';
import { DMAError, DMAFault } from './errors.js';
import {
  ADDRESS_LIMIT,
  checkAddress,
  bufferLength,
  checkLength,
  checkRange,
  invalidArgument,
  notInstance,
} from './internal/check.js';
import { copyIn, copyOut, copyPieces, guestStore, type GuestStore } from './internal/copy.js';
import { describe } from './internal/describe.js';
import { uint8Length } from './internal/intrinsics.js';
import { iommuAccess, isIommuDomain, type IommuDomain } from './iommu.js';
import { isGuestMemory, memoryParts, unassigned, type GuestMemory } from './memory.js';

const { READ, WRITE, RELAXED } = DMAAttributes;
const DIRECTIONS = READ | WRITE;
const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** What a {@link DMATraceEvent} records. `rw` and fixed-width accessors trace as `read` or `write`. */
export type DMATraceOp = 'read' | 'write' | 'set' | 'map' | 'unmap' | 'barrier';

/**
 * One traced access or barrier. An accessor traces its barrier events where it issues them:
 * a release barrier event comes before the access event, an acquire barrier event after it,
 * a full barrier on both sides. `none` barriers are not traced.
 */
export interface DMATraceEvent {
  /** The operation. */
  readonly op: DMATraceOp;
  /** The address of the access (an IOVA with an IOMMU); 0 for an explicit barrier. */
  readonly addr: number;
  /** Bytes accessed (for `unmap`, the accessed length); 0 for an explicit barrier. */
  readonly length: number;
  /** The access's attributes with implied direction bits; 0 for an explicit barrier. */
  readonly attrs: number;
  /** The strength the operation asks for, whatever the memory's policy emits for it. */
  readonly barrier: BarrierStrength;
}

/** Receives trace events; see {@link DMAContextOptions.trace}. */
export type DMATrace = (event: DMATraceEvent) => void;

/** Options of a {@link DMAContext}. */
export interface DMAContextOptions {
  /**
   * The IOMMU domain between the device and memory: addresses become IOVAs, translated and
   * permission-checked page by page.
   */
  iommu?: IommuDomain;
  /**
   * Called once per access and per barrier, synchronously, in program order. An access's
   * events (the barrier before it, the access, the barrier after it) are delivered once its
   * bytes have moved and, with an IOMMU, once it has left its in-flight slot: a listener never
   * runs in the middle of an access, so whatever it does (an `unmap`, another access, a
   * detach of the caller's buffer) meets no access half done. A failed access traces nothing.
   * Without it the hot path pays one branch.
   */
  trace?: DMATrace;
}

/** What `map` remembers so that `unmap` knows which barrier to issue. */
interface Mapping {
  readonly addr: number;
  readonly attrs: number;
}

function invalidAttributes(message: string): DMAError {
  return new DMAError('ERR_DMA_INVALID_ATTRIBUTES', message);
}

/**
 * The bits of an accessor with an implied direction (`read`, `write`, `set`, fixed-width):
 * numbers are checked with a mask so that the hot path neither allocates nor calls zod.
 */
function impliedBits(attrs: DMAAttributesLike | undefined, implied: number, op: string): number {
  let bits: number;
  if (typeof attrs === 'number' && (attrs & 7) === attrs) bits = attrs;
  else if (attrs === undefined) return implied;
  else bits = toAttributes(attrs);
  if ((bits & DIRECTIONS & ~implied) !== 0) throw impliedConflict(attrs, bits, implied, op);
  return bits | implied;
}

/**
 * The error for attributes that name the direction opposite to the implied one. Kept out of
 * {@link impliedBits}: V8 inlines by bytecode size, and a message template in the hot path
 * would use up the budget that the copy needs (see docs/performance.md).
 */
function impliedConflict(
  attrs: DMAAttributesLike,
  bits: number,
  implied: number,
  op: string,
): DMAError {
  const other = DIRECTIONS & ~implied;
  return invalidAttributes(
    `${op} implies ${implied === READ ? 'READ' : 'WRITE'}; attrs ${describe(attrs)} (${formatAttributes(bits)}) also set ${other === READ ? 'READ' : 'WRITE'}`,
  );
}

/** The bits of an accessor that takes its direction from the caller. */
function directedBits(attrs: DMAAttributesLike, op: string, exactlyOne: boolean): number {
  const bits = typeof attrs === 'number' && (attrs & 7) === attrs ? attrs : toAttributes(attrs);
  const direction = bits & DIRECTIONS;
  if (direction === 0 || (exactlyOne && direction === DIRECTIONS)) {
    throw invalidAttributes(
      `${op} needs ${exactlyOne ? 'exactly one of READ or WRITE' : 'READ, WRITE or BIDIRECTIONAL'}; received attrs ${describe(attrs)}`,
    );
  }
  return bits;
}

/** The strength `map` issues after mapping: acquire for READ, full for BIDIRECTIONAL. */
function mapStrength(bits: number): number {
  if ((bits & RELAXED) !== 0 || (bits & READ) === 0) return NONE;
  return (bits & WRITE) === 0 ? ACQUIRE : FULL;
}

/** The strength `unmap` issues before releasing: release for WRITE, full for BIDIRECTIONAL. */
function unmapStrength(bits: number): number {
  if ((bits & RELAXED) !== 0 || (bits & WRITE) === 0) return NONE;
  return (bits & READ) === 0 ? RELEASE : FULL;
}

function swap16(value: number): number {
  return ((value & 0xff) << 8) | (value >>> 8);
}

function swap32(value: number): number {
  return (
    (((value & 0xff) << 24) |
      ((value & 0xff00) << 8) |
      ((value >>> 8) & 0xff00) |
      (value >>> 24)) >>>
    0
  );
}

const swapView = new DataView(new ArrayBuffer(8));
function swap64(value: bigint): bigint {
  swapView.setBigUint64(0, value, true);
  return swapView.getBigUint64(0, false);
}

/** True when `addr` is a safe non-negative integer and `addr + length` stays within 2^53. */
function isAddressRange(addr: unknown, length: number): addr is number {
  return (
    typeof addr === 'number' &&
    addr >= 0 &&
    addr % 1 === 0 &&
    addr < ADDRESS_LIMIT &&
    length <= ADDRESS_LIMIT - addr
  );
}

/** The fault for an IOVA range that the IOMMU maps onto a hole in guest-physical space. */
function unassignedBehindIommu(
  iova: number,
  length: number,
  attrs: number,
  gpa: number,
  runLength: number,
): DMAFault {
  return new DMAFault(
    'ERR_DMA_UNASSIGNED',
    `IOVA range [0x${iova.toString(16)}, 0x${(iova + length).toString(16)}) maps to guest range [0x${gpa.toString(16)}, 0x${(gpa + runLength).toString(16)}), which is not all RAM`,
    iova,
    length,
    attrs,
  );
}

const WIDTH_LIMIT = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

/** Whether a value is a genuine {@link DMAContext} (a private-field brand check). */
export let isDMAContext: (value: unknown) => value is DMAContext;
/**
 * `ctx.rw` for a caller that has already validated the buffer and its length and the
 * attribute bits (the legacy helpers), so that the buffer's `length` is not read twice.
 */
export let transferKnownLength: (
  ctx: DMAContext,
  addr: number,
  buf: Uint8Array,
  length: number,
  bits: number,
) => void;

/**
 * A device's DMA window on a {@link GuestMemory}. Every accessor takes attributes and
 * issues the barrier they call for: acquire after a READ, release before a WRITE, nothing
 * for RELAXED (see {@link barrierFor}). A failed access changes no byte of guest memory
 * and no byte of the caller's buffer.
 *
 * @example
 * ```ts
 * const ctx = new DMAContext(memory);
 * const desc = new Uint8Array(16);
 * ctx.read(descAddr, desc);                               // acquire after: the payload read below sees data at least as new
 * ctx.read(payloadAddr, payload, DMAAttributes.RELAXED);  // ordered by the acquire above
 * ctx.write(statusAddr, status, DMAAttributes.RELAXED);
 * ctx.writeU16LE(usedIdxAddr, nextUsed);                  // release before: the guest sees status first
 * ```
 */
export class DMAContext {
  readonly #memory: GuestMemory;
  readonly #bytes: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;
  readonly #view: DataView;
  /** The backing store as the copies see it (see internal/copy.ts). */
  readonly #guest: GuestStore;
  readonly #fence: Fence;
  /** Where guest ranges live in the backing store. */
  readonly #map: AddressMap;
  readonly #trace: DMATrace | undefined;
  readonly #iommu: IommuDomain | undefined;
  readonly #mappings = new WeakMap<Uint8Array, Mapping>();
  /**
   * The backing pieces of the access being resolved, `[offset0, length0, ...]`, reused by
   * every checked access: no caller code runs between resolving and moving, so no two
   * accesses ever use it at once.
   */
  readonly #pieces: number[] = [];

  /** The guest memory this context accesses. */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /**
   * @param memory - the guest memory to access.
   * @param options - see {@link DMAContextOptions}.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a bad memory or trace.
   */
  constructor(memory: GuestMemory, options: DMAContextOptions = {}) {
    if (!isGuestMemory(memory)) notInstance('memory', 'GuestMemory', memory);
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object { iommu?, trace? }', options);
    }
    // Each option is read once, into a local that is then validated and used.
    const { iommu, trace } = options as Record<string, unknown>;
    if (iommu !== undefined && !isIommuDomain(iommu)) {
      notInstance('iommu', 'IommuDomain', iommu);
    }
    if (trace !== undefined && typeof trace !== 'function')
      invalidArgument('trace', 'a function', trace);
    this.#iommu = iommu;
    this.#memory = memory;
    this.#trace = trace as DMATrace | undefined;
    // The memory's own parts, never its public properties, which a caller could redefine.
    const parts = memoryParts(memory);
    const buffer = parts.bytes.buffer;
    const byteLength = parts.bytes.byteLength;
    // One set of views of the backing store, shared with the copy routines.
    this.#guest = guestStore(parts.bytes);
    this.#bytes = this.#guest.bytes;
    this.#u16 = new Uint16Array(buffer, 0, Math.floor(byteLength / 2));
    this.#u32 = new Uint32Array(buffer, 0, Math.floor(byteLength / 4));
    this.#u64 = new BigUint64Array(buffer, 0, Math.floor(byteLength / 8));
    this.#view = this.#guest.view;
    this.#fence = parts.fence;
    this.#map = parts.map;
  }

  /**
   * Reads guest memory into `buf` or writes `buf` to guest memory, as the attributes say.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param buf - the device's buffer, a genuine `Uint8Array`; the access is its real length.
   * @param attrs - exactly one of READ or WRITE, optionally with RELAXED.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` without exactly one direction;
   * `ERR_DMA_INVALID_ARGUMENT` for a bad address or buffer; {@link DMAFault} when the range
   * is not all accessible. No byte moves then.
   */
  rw(addr: number, buf: Uint8Array, attrs: DMAAttributesLike): void {
    const bits = directedBits(attrs, 'rw', true);
    if ((bits & READ) !== 0) this.#readFast(addr, buf, bits);
    else this.#writeFast(addr, buf, bits);
  }

  /**
   * The device reads guest memory into `buf`. READ is implied; an acquire barrier follows
   * unless `attrs` adds RELAXED.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param buf - receives its real length in bytes; it may be a view of guest memory.
   * @param attrs - optionally RELAXED; a WRITE bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as {@link DMAContext.rw}.
   */
  read(addr: number, buf: Uint8Array, attrs?: DMAAttributesLike): void {
    this.#readFast(addr, buf, impliedBits(attrs, READ, 'read'));
  }

  /**
   * The device writes `data` to guest memory. WRITE is implied; a release barrier comes
   * first unless `attrs` adds RELAXED.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param data - the bytes to write; it may be a view of guest memory.
   * @param attrs - optionally RELAXED; a READ bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as {@link DMAContext.rw}.
   */
  write(addr: number, data: Uint8Array, attrs?: DMAAttributesLike): void {
    this.#writeFast(addr, data, impliedBits(attrs, WRITE, 'write'));
  }

  /**
   * The device fills `length` bytes of guest memory with `value` (a memset). WRITE is implied.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param value - the byte, an integer from 0 to 255.
   * @param length - how many bytes.
   * @param attrs - optionally RELAXED; a READ bit is an error.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a value that is not a byte;
   * otherwise as {@link DMAContext.rw}.
   */
  set(addr: number, value: number, length: number, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'set');
    const strength = strengthCode(bits);
    // The flat fast path (valid numbers, no IOMMU, all RAM), as for read and write; anything
    // else goes the checked way below, which throws the precise error.
    if (
      typeof value === 'number' &&
      (value & 0xff) === value &&
      typeof length === 'number' &&
      (length | 0) === length &&
      length >= 0
    ) {
      const offset = this.#fastOffset(addr, length);
      if (offset >= 0) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        this.#bytes.fill(value, offset, offset + length);
        this.#after(strength, 'set', addr, length, bits);
        return;
      }
    }
    checkAddress(addr);
    if (typeof value !== 'number' || (value & 0xff) !== value) {
      invalidArgument('value', 'an integer from 0 to 255', value);
    }
    checkLength(length);
    checkRange(addr, length);
    const pieces = this.#pieces;
    pieces.length = 0;
    const slot = this.#enter();
    let fault: DMAFault | undefined;
    try {
      fault = this.#resolve(addr, length, bits, pieces);
      if (fault === undefined) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        for (let index = 0; index < pieces.length; index += 2) {
          const start = pieces[index] as number;
          this.#bytes.fill(value, start, start + (pieces[index + 1] as number));
        }
      }
    } finally {
      this.#leave(slot);
    }
    if (fault !== undefined) throw this.#report(fault);
    this.#after(strength, 'set', addr, length, bits);
  }

  /**
   * Whether an access of `length` bytes at `addr` with these attributes would succeed now.
   * A hint only: the guest may change its memory map right after. Issues no barrier.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param length - the byte count.
   * @param attrs - READ, WRITE or BIDIRECTIONAL, optionally with RELAXED.
   * @returns true when the whole range is accessible.
   * @throws {@link DMAError} for bad arguments (never for an inaccessible range).
   */
  valid(addr: number, length: number, attrs: DMAAttributesLike): boolean {
    const bits = directedBits(attrs, 'valid', false);
    checkAddress(addr);
    checkLength(length);
    checkRange(addr, length);
    if (length === 0) return true;
    const iommu = this.#iommu;
    if (iommu === undefined) return this.#map.locate(addr, length) >= 0;
    const segments: number[] = [];
    if (iommuAccess.translateRange(iommu, addr, length, bits, segments) !== undefined) return false;
    for (let index = 0; index < segments.length; index += 2) {
      if (this.#map.locate(segments[index] as number, segments[index + 1] as number) < 0)
        return false;
    }
    return true;
  }

  /**
   * Maps guest memory for direct access: returns a view of up to `length` bytes at `addr`,
   * shorter when the RAM (or, with an IOMMU, the contiguous mapping) ends sooner, never empty.
   * READ maps are followed by an acquire barrier, BIDIRECTIONAL maps by a full one. Give the
   * view back with {@link DMAContext.unmap}.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param length - the wanted length, at least 1.
   * @param attrs - READ, WRITE or BIDIRECTIONAL, optionally with RELAXED.
   * @returns a `Uint8Array` view into guest memory. The view is the guest's memory itself:
   * an IOMMU `unmap` does not revoke it, so give it back before the mapping goes away.
   * @throws {@link DMAFault} `ERR_DMA_UNASSIGNED` when `addr` is in a hole, or with an IOMMU
   * `ERR_DMA_IOMMU_UNMAPPED` / `ERR_DMA_IOMMU_PERMISSION` for the first page;
   * {@link DMAError} for bad arguments.
   */
  map(addr: number, length: number, attrs: DMAAttributesLike): Uint8Array {
    const bits = directedBits(attrs, 'map', false);
    checkAddress(addr);
    if (typeof length !== 'number' || length < 1)
      invalidArgument('length', 'a positive safe integer', length);
    checkLength(length);
    checkRange(addr, length);
    let gpa = addr;
    let mappable = length;
    const iommu = this.#iommu;
    if (iommu !== undefined) {
      const translation = iommuAccess.translateAccess(iommu, addr, length, bits);
      gpa = translation.gpa;
      mappable = Math.min(length, translation.length);
    }
    const extent = this.#map.extent(gpa);
    if (extent === 0) {
      throw iommu === undefined
        ? unassigned(addr, length, bits)
        : unassignedBehindIommu(addr, length, bits, gpa, 1);
    }
    const mappedLength = Math.min(mappable, extent);
    const offset = this.#map.locate(gpa, mappedLength);
    const view = new Uint8Array(this.#guest.buffer, this.#guest.byteOffset + offset, mappedLength);
    this.#mappings.set(view, { addr, attrs: bits });
    // A map issues its barrier after mapping only: acquire for READ, full for BIDIRECTIONAL.
    const strength = mapStrength(bits);
    if (strength !== NONE) this.#fence.emit(strength);
    const trace = this.#trace;
    if (trace !== undefined) {
      this.#traceEvent(trace, 'map', addr, mappedLength, bits, strength);
      if (strength !== NONE) this.#traceBarrier(trace, strength, addr, mappedLength, bits);
    }
    return view;
  }

  /**
   * Gives back a view from {@link DMAContext.map}. WRITE maps get a release barrier before
   * they are released (so the guest sees what the device wrote through the view), and
   * BIDIRECTIONAL maps a full one.
   *
   * @param view - the view `map` returned.
   * @param accessedLength - how many bytes the device actually accessed; the view's length by default.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a view this context did not map,
   * one already unmapped, or an accessed length beyond the view.
   */
  unmap(view: Uint8Array, accessedLength?: number): void {
    const viewLength = bufferLength(view, 'view');
    const mapping = this.#mappings.get(view);
    if (mapping === undefined) {
      invalidArgument('view', 'a view mapped by this context and not yet unmapped', view);
    }
    // Only undefined means "the whole view": a null from JavaScript is a wrong type.
    const given: unknown = accessedLength;
    const length = given === undefined ? viewLength : given;
    checkLength(length, 'accessedLength');
    if (length > viewLength) {
      invalidArgument('accessedLength', `at most the view's length ${viewLength}`, length);
    }
    this.#mappings.delete(view);
    const strength = unmapStrength(mapping.attrs);
    if (strength !== NONE) this.#barrierEvent(strength, mapping.addr, length, mapping.attrs);
    const trace = this.#trace;
    if (trace !== undefined) {
      this.#traceEvent(trace, 'unmap', mapping.addr, length, mapping.attrs, strength);
    }
  }

  /**
   * Issues a barrier on the memory's fence word. `full` is what a store followed by a load
   * needs (publish an index, then read the other side's event index), and what users of
   * RELAXED accesses call to order them.
   *
   * @param strength - `none`, `acquire`, `release` or `full`.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for another strength.
   */
  barrier(strength: BarrierStrength): void {
    const code = parseStrength(strength);
    if (code !== NONE) this.#barrierEvent(code, 0, 0, 0);
  }

  /** Reads a byte. Atomic unless RELAXED. See {@link DMAContext.readU32LE}. */
  readU8(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 1, impliedBits(attrs, READ, 'readU8'), true);
  }

  /** Reads a little-endian u16. See {@link DMAContext.readU32LE}. */
  readU16LE(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 2, impliedBits(attrs, READ, 'readU16LE'), true);
  }

  /** Reads a big-endian u16. See {@link DMAContext.readU32LE}. */
  readU16BE(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 2, impliedBits(attrs, READ, 'readU16BE'), false);
  }

  /**
   * Reads a little-endian u32. Unless RELAXED, an acquire barrier follows, and on a
   * naturally aligned address the load is one `Atomics.load` of that exact word, so a
   * peer's `Atomics.store` to it gives a happens-before edge.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param attrs - optionally RELAXED (the load may then tear); a WRITE bit is an error.
   * @returns the value.
   * @throws {@link DMAError} / {@link DMAFault} as {@link DMAContext.rw}.
   */
  readU32LE(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 4, impliedBits(attrs, READ, 'readU32LE'), true);
  }

  /** Reads a big-endian u32. See {@link DMAContext.readU32LE}. */
  readU32BE(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 4, impliedBits(attrs, READ, 'readU32BE'), false);
  }

  /** Reads a little-endian u64 as a bigint. See {@link DMAContext.readU32LE}. */
  readU64LE(addr: number, attrs?: DMAAttributesLike): bigint {
    return this.#load64(addr, impliedBits(attrs, READ, 'readU64LE'), true);
  }

  /** Reads a big-endian u64 as a bigint. See {@link DMAContext.readU32LE}. */
  readU64BE(addr: number, attrs?: DMAAttributesLike): bigint {
    return this.#load64(addr, impliedBits(attrs, READ, 'readU64BE'), false);
  }

  /** Writes a byte. Atomic unless RELAXED. See {@link DMAContext.writeU32LE}. */
  writeU8(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 1, value, impliedBits(attrs, WRITE, 'writeU8'), true);
  }

  /** Writes a little-endian u16. See {@link DMAContext.writeU32LE}. */
  writeU16LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 2, value, impliedBits(attrs, WRITE, 'writeU16LE'), true);
  }

  /** Writes a big-endian u16. See {@link DMAContext.writeU32LE}. */
  writeU16BE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 2, value, impliedBits(attrs, WRITE, 'writeU16BE'), false);
  }

  /**
   * Writes a little-endian u32. Unless RELAXED, a release barrier comes first, and on a
   * naturally aligned address the store is one `Atomics.store` of that exact word.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param value - an integer from 0 to 2^32 - 1.
   * @param attrs - optionally RELAXED (the store may then tear); a READ bit is an error.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a value that does not fit;
   * otherwise as {@link DMAContext.rw}.
   */
  writeU32LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 4, value, impliedBits(attrs, WRITE, 'writeU32LE'), true);
  }

  /** Writes a big-endian u32. See {@link DMAContext.writeU32LE}. */
  writeU32BE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 4, value, impliedBits(attrs, WRITE, 'writeU32BE'), false);
  }

  /** Writes a little-endian u64 given as a bigint. See {@link DMAContext.writeU32LE}. */
  writeU64LE(addr: number, value: bigint, attrs?: DMAAttributesLike): void {
    this.#store64(addr, value, impliedBits(attrs, WRITE, 'writeU64LE'), true);
  }

  /** Writes a big-endian u64 given as a bigint. See {@link DMAContext.writeU32LE}. */
  writeU64BE(addr: number, value: bigint, attrs?: DMAAttributesLike): void {
    this.#store64(addr, value, impliedBits(attrs, WRITE, 'writeU64BE'), false);
  }

  // ---------------------------------------------------------------------------------------
  // How every access runs: attributes → strength → resolve → barrier → move → barrier, with
  // the trace events delivered once the bytes have moved and the IOMMU slot is given back.
  // No code of the caller's (a getter, a trace or fault listener, a buffer's own methods)
  // runs between the first translation and the last byte moved, so nothing it does (an
  // unmap, a detach, a resize, a re-entrant access) can meet an access half done.

  /** Enters the IOMMU's in-flight protocol for one access; -1 without an IOMMU. */
  #enter(): number {
    const iommu = this.#iommu;
    return iommu === undefined ? -1 : iommuAccess.enter(iommu);
  }

  #leave(slot: number): void {
    if (slot >= 0) iommuAccess.leave(this.#iommu as IommuDomain, slot);
  }

  /** Reports an IOMMU fault to the domain's listener, outside any access. */
  #report(fault: DMAFault): DMAFault {
    return iommuAccess.report(this.#iommu as IommuDomain, fault);
  }

  /**
   * Resolves `length` bytes at `addr` into backing pieces pushed onto `out`, checking every
   * byte first so that a failed access changes nothing: an IOTLB hit is one piece; a miss
   * translates every page. Without an IOMMU, RAM spans are contiguous in the backing store,
   * so a range is one piece or a hole. Returns the IOMMU's refusal unreported (the caller
   * reports it after leaving the access) and throws `ERR_DMA_UNASSIGNED` for a hole. Call
   * between {@link DMAContext.#enter} and {@link DMAContext.#leave}.
   */
  #resolve(addr: number, length: number, bits: number, out: number[]): DMAFault | undefined {
    if (length === 0) return undefined;
    const iommu = this.#iommu;
    if (iommu === undefined) {
      const offset = this.#map.locate(addr, length);
      if (offset < 0) throw unassigned(addr, length, bits);
      out.push(offset, length);
      return undefined;
    }
    const gpa = iommuAccess.lookup(iommu, addr, length, bits & DIRECTIONS);
    const hit = gpa < 0 ? -1 : this.#map.locate(gpa, length);
    if (hit >= 0) {
      out.push(hit, length);
      return undefined;
    }
    const first = out.length;
    const fault = iommuAccess.translateRange(iommu, addr, length, bits, out);
    if (fault !== undefined) return fault;
    for (let index = first; index < out.length; index += 2) {
      const runGpa = out[index] as number;
      const runLength = out[index + 1] as number;
      const offset = this.#map.locate(runGpa, runLength);
      if (offset < 0) throw unassignedBehindIommu(addr, length, bits, runGpa, runLength);
      out[index] = offset;
    }
    return undefined;
  }

  /** Copies between `buf` (its first `length` bytes) and resolved pieces of guest memory. */
  #move(pieces: readonly number[], buf: Uint8Array, length: number, toGuest: boolean): void {
    if (pieces.length === 2) {
      const offset = pieces[0] as number;
      if (toGuest) copyIn(this.#guest, offset, buf, length);
      else copyOut(this.#guest, offset, buf, length);
    } else if (pieces.length > 2) {
      copyPieces(this.#guest, pieces, buf, toGuest);
    }
  }

  /**
   * The common case of a read written flat, so that V8 inlines it whole: no IOMMU, good
   * numbers, all RAM. Anything else takes {@link DMAContext.#transferChecked}, which throws
   * the precise error or walks the IOMMU.
   */
  #readFast(addr: number, buf: Uint8Array, bits: number): void {
    this.#readLength(addr, buf, uint8Length(buf), bits);
  }

  /** {@link DMAContext.#readFast} with the buffer's real length read (-1: not a buffer). */
  #readLength(addr: number, buf: Uint8Array, length: number, bits: number): void {
    if (length >= 0) {
      const offset = this.#fastOffset(addr, length);
      if (offset >= 0) {
        // A read asks for acquire (after) or none: nothing goes before it.
        copyOut(this.#guest, offset, buf, length);
        this.#after(strengthCode(bits), 'read', addr, length, bits);
        return;
      }
    }
    this.#transferChecked(addr, buf, length, bits);
  }

  /**
   * {@link DMAContext.#readFast} for writes. Reads and writes have a fast path each, so that
   * V8 inlines one copy routine into the caller rather than both.
   */
  #writeFast(addr: number, data: Uint8Array, bits: number): void {
    this.#writeLength(addr, data, uint8Length(data), bits);
  }

  /** {@link DMAContext.#writeFast} with the buffer's real length read (-1: not a buffer). */
  #writeLength(addr: number, data: Uint8Array, length: number, bits: number): void {
    if (length >= 0) {
      const offset = this.#fastOffset(addr, length);
      if (offset >= 0) {
        const strength = strengthCode(bits);
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        copyIn(this.#guest, offset, data, length);
        this.#after(strength, 'write', addr, length, bits);
        return;
      }
    }
    this.#transferChecked(addr, data, length, bits);
  }

  /**
   * The backing offset for the flat fast paths, or -1 when they do not apply: an IOMMU, a
   * number that is not a safe address, or a range that is not all RAM.
   */
  #fastOffset(addr: unknown, length: number): number {
    if (this.#iommu !== undefined || !isAddressRange(addr, length)) return -1;
    return length === 0 ? 0 : this.#map.locate(addr, length);
  }

  /**
   * The IOMMU's fast path: an IOTLB hit on one mapping, all RAM, no trace. Returns false,
   * having moved nothing, when it does not apply; the checked path then redoes the access.
   * Nothing between enter and leave here calls the caller's code (the copies use the builtin
   * `set` on a length already read), so only the engine can throw in it (a stack overflow);
   * the `try` gives the slot back even then, and costs nothing measurable here (bench:
   * `iommu write 64B single page`). Every enter checks the generation afresh besides, so no
   * slot left behind could ever serve an IOTLB entry older than an `unmap`.
   */
  #iommuFast(
    iommu: IommuDomain,
    addr: number,
    buf: Uint8Array,
    length: number,
    bits: number,
  ): boolean {
    const slot = iommuAccess.enter(iommu);
    const gpa = iommuAccess.lookup(iommu, addr, length, bits & DIRECTIONS);
    const offset = gpa < 0 ? -1 : this.#map.locate(gpa, length);
    if (offset < 0) {
      iommuAccess.leave(iommu, slot);
      return false;
    }
    const strength = strengthCode(bits);
    try {
      if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
      if ((bits & READ) !== 0) copyOut(this.#guest, offset, buf, length);
      else copyIn(this.#guest, offset, buf, length);
    } finally {
      iommuAccess.leave(iommu, slot);
    }
    if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
    return true;
  }

  /** A transfer off the flat fast path: an IOMMU, bad arguments, a hole. `length` is -1 for a bad buffer. */
  #transferChecked(addr: number, buf: Uint8Array, length: number, bits: number): void {
    const iommu = this.#iommu;
    if (
      iommu !== undefined &&
      this.#trace === undefined &&
      length > 0 &&
      isAddressRange(addr, length) &&
      this.#iommuFast(iommu, addr, buf, length, bits)
    ) {
      return;
    }
    checkAddress(addr);
    if (length < 0) invalidArgument('buf', 'a genuine Uint8Array', buf);
    checkRange(addr, length);
    const toGuest = (bits & READ) === 0;
    const strength = strengthCode(bits);
    const pieces = this.#pieces;
    pieces.length = 0;
    const slot = this.#enter();
    let fault: DMAFault | undefined;
    try {
      fault = this.#resolve(addr, length, bits, pieces);
      if (fault === undefined) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        this.#move(pieces, buf, length, toGuest);
      }
    } finally {
      this.#leave(slot);
    }
    if (fault !== undefined) throw this.#report(fault);
    this.#after(strength, toGuest ? 'write' : 'read', addr, length, bits);
  }

  /**
   * Scatter-gather for {@link ScatterGatherList}: `ranges` is `[addr0, length0, ...]`;
   * every range is resolved before any byte moves, and the barrier is issued once.
   * @internal
   */
  vector(
    ranges: readonly number[],
    total: number,
    buf: Uint8Array,
    attrs: DMAAttributesLike | undefined,
    toGuest: boolean,
  ): void {
    const bits = toGuest
      ? impliedBits(attrs, WRITE, 'scatter')
      : impliedBits(attrs, READ, 'gather');
    const name = toGuest ? 'data' : 'buf';
    const length = bufferLength(buf, name);
    if (length !== total) invalidArgument(`${name}.length`, `the list's length ${total}`, length);
    // The list as it is now: a trace listener below may add to it or clear it.
    const count = ranges.length;
    const strength = strengthCode(bits);
    const pieces = this.#pieces;
    pieces.length = 0;
    const slot = this.#enter();
    let fault: DMAFault | undefined;
    try {
      for (let index = 0; index < count && fault === undefined; index += 2) {
        fault = this.#resolve(ranges[index] as number, ranges[index + 1] as number, bits, pieces);
      }
      if (fault === undefined) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        this.#move(pieces, buf, length, toGuest);
      }
    } finally {
      this.#leave(slot);
    }
    if (fault !== undefined) throw this.#report(fault);
    if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
    const trace = this.#trace;
    if (trace === undefined) return;
    const first = ranges[0] ?? 0;
    const listed = ranges.slice(0, count);
    // One barrier for the whole list: before its first access event, or after its last.
    if ((strength & RELEASE) !== 0) this.#traceBarrier(trace, strength, first, total, bits);
    const op = toGuest ? 'write' : 'read';
    for (let index = 0; index < count; index += 2) {
      this.#traceEvent(
        trace,
        op,
        listed[index] as number,
        listed[index + 1] as number,
        bits,
        strength,
      );
    }
    if ((strength & ACQUIRE) !== 0) this.#traceBarrier(trace, strength, first, total, bits);
  }

  /**
   * A fixed-width access on the checked path (bad numbers, holes, an IOMMU, u64): resolves
   * it, issues the barrier before, moves the word (through {@link DMAContext.#splitWord}
   * when an IOMMU splits a misaligned word across pages), and traces it.
   */
  #fixed(
    addr: number,
    width: number,
    bits: number,
    little: boolean,
    value: number | bigint,
    toGuest: boolean,
  ): number | bigint {
    checkAddress(addr);
    checkRange(addr, width);
    const strength = strengthCode(bits);
    const pieces = this.#pieces;
    pieces.length = 0;
    let result: number | bigint = value;
    const slot = this.#enter();
    let fault: DMAFault | undefined;
    try {
      fault = this.#resolve(addr, width, bits, pieces);
      if (fault === undefined) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        const ordered = strength !== NONE;
        if (pieces.length !== 2) result = this.#splitWord(pieces, width, little, value, toGuest);
        else if (width === 8) {
          result = this.#word64(pieces[0] as number, little, value as bigint, toGuest, ordered);
        } else {
          result = this.#word(
            pieces[0] as number,
            width,
            little,
            value as number,
            toGuest,
            ordered,
          );
        }
      }
    } finally {
      this.#leave(slot);
    }
    if (fault !== undefined) throw this.#report(fault);
    this.#after(strength, toGuest ? 'write' : 'read', addr, width, bits);
    return result;
  }

  /**
   * Loads or stores one word at a backing offset: one `Atomics` operation on that exact
   * location when ordered and naturally aligned (single-copy atomic), else plain bytes.
   */
  #word(
    offset: number,
    width: number,
    little: boolean,
    value: number,
    toGuest: boolean,
    ordered: boolean,
  ): number {
    const atomic = ordered && offset % width === 0;
    const swap = little !== HOST_LITTLE_ENDIAN;
    if (toGuest) {
      if (width === 1) {
        if (atomic) Atomics.store(this.#bytes, offset, value);
        else this.#bytes[offset] = value;
      } else if (width === 2) {
        if (atomic) Atomics.store(this.#u16, offset / 2, swap ? swap16(value) : value);
        else this.#view.setUint16(offset, value, little);
      } else if (atomic) Atomics.store(this.#u32, offset / 4, swap ? swap32(value) : value);
      else this.#view.setUint32(offset, value, little);
      return value;
    }
    if (width === 1)
      return atomic ? Atomics.load(this.#bytes, offset) : (this.#bytes[offset] as number);
    if (width === 2) {
      if (!atomic) return this.#view.getUint16(offset, little);
      const loaded = Atomics.load(this.#u16, offset / 2);
      return swap ? swap16(loaded) : loaded;
    }
    if (!atomic) return this.#view.getUint32(offset, little);
    const loaded = Atomics.load(this.#u32, offset / 4);
    return swap ? swap32(loaded) : loaded;
  }

  /** {@link DMAContext.#word} for u64 values, kept apart so that numbers never meet bigints. */
  #word64(
    offset: number,
    little: boolean,
    value: bigint,
    toGuest: boolean,
    ordered: boolean,
  ): bigint {
    const atomic = ordered && offset % 8 === 0;
    const swap = little !== HOST_LITTLE_ENDIAN;
    if (toGuest) {
      if (atomic) Atomics.store(this.#u64, offset / 8, swap ? swap64(value) : value);
      else this.#view.setBigUint64(offset, value, little);
      return value;
    }
    if (!atomic) return this.#view.getBigUint64(offset, little);
    const loaded = Atomics.load(this.#u64, offset / 8);
    return swap ? swap64(loaded) : loaded;
  }

  /** A word split across IOMMU pages: never naturally aligned, so never atomic. */
  #splitWord(
    pieces: readonly number[],
    width: number,
    little: boolean,
    value: number | bigint,
    toGuest: boolean,
  ): number | bigint {
    const scratch = new Uint8Array(8);
    const view = new DataView(scratch.buffer);
    const bytes = scratch.subarray(0, width);
    if (toGuest) {
      if (width === 2) view.setUint16(0, value as number, little);
      else if (width === 4) view.setUint32(0, value as number, little);
      else view.setBigUint64(0, value as bigint, little);
      copyPieces(this.#guest, pieces, bytes, true);
      return value;
    }
    copyPieces(this.#guest, pieces, bytes, false);
    if (width === 2) return view.getUint16(0, little);
    if (width === 4) return view.getUint32(0, little);
    return view.getBigUint64(0, little);
  }

  /** A fixed-width load: the flat fast path of {@link DMAContext.#readFast}, else {@link DMAContext.#fixed}. */
  #load(addr: number, width: 1 | 2 | 4, bits: number, little: boolean): number {
    const offset = this.#fastOffset(addr, width);
    if (offset < 0) return this.#fixed(addr, width, bits, little, 0, false) as number;
    const strength = strengthCode(bits);
    const value = this.#word(offset, width, little, 0, false, strength !== NONE);
    this.#after(strength, 'read', addr, width, bits);
    return value;
  }

  /** {@link DMAContext.#load} for u64, kept apart so that numbers never meet bigints. */
  #load64(addr: number, bits: number, little: boolean): bigint {
    const offset = this.#fastOffset(addr, 8);
    if (offset < 0) return this.#fixed(addr, 8, bits, little, 0n, false) as bigint;
    const strength = strengthCode(bits);
    const value = this.#word64(offset, little, 0n, false, strength !== NONE);
    this.#after(strength, 'read', addr, 8, bits);
    return value;
  }

  #store(addr: number, width: 1 | 2 | 4, value: number, bits: number, little: boolean): void {
    if (typeof value !== 'number' || value < 0 || value > WIDTH_LIMIT[width] || value % 1 !== 0) {
      invalidArgument('value', `an integer from 0 to ${WIDTH_LIMIT[width]}`, value);
    }
    const offset = this.#fastOffset(addr, width);
    if (offset < 0) {
      this.#fixed(addr, width, bits, little, value, true);
      return;
    }
    const strength = strengthCode(bits);
    if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
    this.#word(offset, width, little, value, true, strength !== NONE);
    this.#after(strength, 'write', addr, width, bits);
  }

  #store64(addr: number, value: bigint, bits: number, little: boolean): void {
    if (typeof value !== 'bigint' || BigInt.asUintN(64, value) !== value) {
      invalidArgument('value', 'a bigint from 0n to 2n ** 64n - 1n', value);
    }
    const offset = this.#fastOffset(addr, 8);
    if (offset < 0) {
      this.#fixed(addr, 8, bits, little, value, true);
      return;
    }
    const strength = strengthCode(bits);
    if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
    this.#word64(offset, little, value, true, strength !== NONE);
    this.#after(strength, 'write', addr, 8, bits);
  }

  /** Emits a barrier and, when tracing, its event. */
  #barrierEvent(strength: number, addr: number, length: number, attrs: number): void {
    this.#fence.emit(strength);
    const trace = this.#trace;
    if (trace !== undefined) this.#traceBarrier(trace, strength, addr, length, attrs);
  }

  /**
   * Ends a finished access: issues the barrier that goes after it (acquire and full, bit 0 of
   * the numeric strength, order later accesses after this one) and, when tracing, delivers
   * its events in program order: the barrier before it (release and full), the access, the
   * barrier after it.
   */
  #after(strength: number, op: DMATraceOp, addr: number, length: number, attrs: number): void {
    const trace = this.#trace;
    if (trace !== undefined) this.#traceAccess(trace, strength, op, addr, length, attrs);
    else if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
  }

  // The tracing halves live apart, so that the untraced hot path stays small enough for V8
  // to inline whole (event objects cost bytecode even when unused).

  #traceAccess(
    trace: DMATrace,
    strength: number,
    op: DMATraceOp,
    addr: number,
    length: number,
    attrs: number,
  ): void {
    // The barrier after the access is issued before any event is delivered: a listener that
    // throws must not cost the access its ordering.
    if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
    if ((strength & RELEASE) !== 0) this.#traceBarrier(trace, strength, addr, length, attrs);
    this.#traceEvent(trace, op, addr, length, attrs, strength);
    if ((strength & ACQUIRE) !== 0) this.#traceBarrier(trace, strength, addr, length, attrs);
  }

  #traceBarrier(
    trace: DMATrace,
    strength: number,
    addr: number,
    length: number,
    attrs: number,
  ): void {
    this.#traceEvent(trace, 'barrier', addr, length, attrs, strength);
  }

  #traceEvent(
    trace: DMATrace,
    op: DMATraceOp,
    addr: number,
    length: number,
    attrs: number,
    strength: number,
  ): void {
    trace({ op, addr, length, attrs, barrier: STRENGTH_NAMES[strength] ?? 'none' });
  }

  static {
    isDMAContext = (value: unknown): value is DMAContext =>
      typeof value === 'object' && value !== null && #pieces in value;
    transferKnownLength = (ctx, addr, buf, length, bits) => {
      if ((bits & READ) !== 0) ctx.#readLength(addr, buf, length, bits);
      else ctx.#writeLength(addr, buf, length, bits);
    };
  }
}
