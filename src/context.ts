/**
 * The DMA context: one device's window on guest memory, with one set of accessors whose
 * ordering barrier follows from the attributes of each access.
 *
 * @module
 */
import { formatAttributes, toAttributes, type DMAAttributesLike } from './attributes.js';
import {
  ACQUIRE,
  BIDIRECTIONAL,
  FULL,
  NONE,
  READ,
  RELAXED,
  RELEASE,
  WRITE,
} from './internal/bits.js';
import {
  STRENGTH_NAMES,
  parseStrength,
  strengthCode,
  type BarrierStrength,
  type Fence,
} from './barrier.js';
import type { FlatView } from './address.js';
import type { DirtyBitmap } from './dirty.js';
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
import {
  CallerWords,
  copyIn,
  copyOut,
  copyPieces,
  copyWords,
  emptyList,
  type GuestStore,
} from './internal/copy.js';
import { describe } from './internal/describe.js';
import { uint8Length } from './internal/intrinsics.js';
import { iommuAccess, isIommuDomain, type IommuDomain } from './iommu.js';
import { isGuestMemory, memoryParts, unassigned, type GuestMemory } from './memory.js';

/**
 * The reads that `#readWords` may copy word by word: at most {@link WORDS_MAX} bytes, above
 * which the scratch buffer and `set` are faster (and above which copyOut makes a view: one
 * allocation either way). On the IOMMU's and the batch's paths also longer than
 * `WORDS_MIN`: shorter ones there keep copyOut's own word path, whose inlined copy is the
 * whole cost of a descriptor read; `read`'s direct path takes the word copy from 4 bytes on,
 * which costs half as much (8 B: 17-19 against 10-15 ns).
 */
const WORDS_MIN = 16;
const WORDS_MAX = 192;

/**
 * The real length of `buf` (-1: not a buffer) for an access with a buffer other than the one
 * `reused` knows the length of, which `reused` then holds: from the buffer's second access in
 * a row on, `reused` knows its length and words, and the access needs neither the brand check
 * nor the length read.
 */
function firstUse(reused: CallerWords, buf: Uint8Array): number {
  reused.note(buf);
  return uint8Length(buf);
}

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

/** What `map` remembers so that `unmap` knows which barrier to issue and which pages to mark. */
interface Mapping {
  readonly addr: number;
  readonly attrs: number;
  /** The guest-physical address of the view's first byte. */
  readonly gpa: number;
  /** The view's length when mapped. */
  readonly length: number;
}

// What an access does with its resolved pieces. The general path takes one of these; each
// accessor's flat fast path is the same steps written out for its own case.
/** Copy guest memory into the caller's buffer. */
const OUT = 0;
/** Copy the caller's buffer into guest memory. */
const IN = 1;
/** Fill guest memory with a byte. */
const FILL = 2;
/** Load one word. */
const LOAD = 3;
/** Store one word. */
const STORE = 4;
type Op = typeof OUT | typeof IN | typeof FILL | typeof LOAD | typeof STORE;
const OP_NAMES: readonly DMATraceOp[] = ['read', 'write', 'set', 'read', 'write'];

/** Whether an op stores into guest memory (and so marks the dirty log). */
function stores(op: Op): boolean {
  return op === IN || op === FILL || op === STORE;
}

function invalidAttributes(message: string): DMAError {
  return new DMAError('ERR_DMA_INVALID_ATTRIBUTES', message);
}

/**
 * The bits of an accessor with an implied direction (`read`, `write`, `set`, fixed-width):
 * a number with no bit but the implied direction and RELAXED is taken as it is, so that the
 * hot path neither allocates nor calls zod; anything else is {@link impliedSlow}. Kept small:
 * it is inlined into every accessor's fast path.
 */
function impliedBits(attrs: DMAAttributesLike | undefined, implied: number, op: string): number {
  // No attributes (an ordered access: a ring index) first, then a number with nothing but
  // the implied direction and RELAXED.
  if (attrs === undefined) return implied;
  if (typeof attrs === 'number' && (attrs & (implied | RELAXED)) === attrs) return attrs | implied;
  return impliedSlow(attrs, implied, op);
}

/** {@link impliedBits} for no attributes, flag objects, and numbers it refuses. */
function impliedSlow(attrs: DMAAttributesLike | undefined, implied: number, op: string): number {
  if (attrs === undefined) return implied;
  const bits = typeof attrs === 'number' && (attrs & 7) === attrs ? attrs : toAttributes(attrs);
  if ((bits & BIDIRECTIONAL & ~implied) !== 0) throw impliedConflict(attrs, bits, implied, op);
  return bits | implied;
}

/**
 * The error for attributes that name the direction opposite to the implied one. Kept out of
 * {@link impliedBits}: V8 inlines by bytecode size, and a message template in the hot path
 * would use up the budget that the copy needs (see `docs/performance.md`).
 */
function impliedConflict(
  attrs: DMAAttributesLike,
  bits: number,
  implied: number,
  op: string,
): DMAError {
  const other = BIDIRECTIONAL & ~implied;
  return invalidAttributes(
    `${op} implies ${implied === READ ? 'READ' : 'WRITE'}; attrs ${describe(attrs)} (${formatAttributes(bits)}) also set ${other === READ ? 'READ' : 'WRITE'}`,
  );
}

/** The bits of an accessor that takes its direction from the caller. */
function directedBits(attrs: DMAAttributesLike, op: string, exactlyOne: boolean): number {
  const bits = typeof attrs === 'number' && (attrs & 7) === attrs ? attrs : toAttributes(attrs);
  const direction = bits & BIDIRECTIONAL;
  if (direction === 0 || (exactlyOne && direction === BIDIRECTIONAL)) {
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
 * A context's flat fast span, for the library's own devices (the virtqueue) to make RELAXED
 * accesses directly: guest bytes `[lo, hi)` are at backing offset `addr + delta` in views of
 * a shared backing that never change, with no IOMMU and no trace on the context, on a
 * little-endian host, every offset an int32. A RELAXED access the context would make on its
 * fast path is exactly a plain element access of these views (then a dirty mark for a
 * write); an ordered u16 access or a barrier only where `ordered` says that the context's
 * accessors are the library's own, exactly as they make it.
 * @internal
 */
export interface DirectSpan {
  readonly lo: number;
  readonly hi: number;
  /** `delta % 8 === 0`: an aligned guest word is an aligned element. */
  readonly delta: number;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  /** The views the copies take. */
  readonly store: GuestStore;
  /** The memory's dirty log: a direct write marks it after storing. */
  readonly dirty: DirtyBitmap | undefined;
  /**
   * The context's `readU16LE`, `writeU16LE` and `barrier` are the library's own (no subclass
   * or instance overrides them, nothing replaced them on the prototype): then an ordered
   * aligned u16 access in the span may also be made directly, as those accessors make it
   * (`fence`/`fenceMask`, `Atomics.load`/`Atomics.store`, the dirty mark).
   */
  readonly ordered: boolean;
  /** The word the context's barriers fence on, undefined for memory one agent sees. */
  readonly fence: Int32Array | undefined;
  /** Bit `1 << strength` is set for each strength that costs the fence RMW. */
  readonly fenceMask: number;
}

/**
 * The context's {@link DirectSpan}, or undefined where it has none (an IOMMU, a trace, a
 * backing that may change, a big-endian host).
 * @internal
 */
export let directSpan: (ctx: DMAContext) => DirectSpan | undefined;

/** The library's own accessors, as the class defines them, for {@link DirectSpan.ordered}. */
let OWN_READ_U16: unknown;
let OWN_WRITE_U16: unknown;
let OWN_BARRIER: unknown;

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
  /** The memory's address layer: where guest ranges live, and the views of the backing. */
  readonly #flat: FlatView;
  /** The caller's last buffer read into, as words (see `#readWords`). */
  readonly #lastRead = new CallerWords();
  readonly #fence: Fence;
  /** The memory's dirty log, or undefined: every write marks it after its bytes are stored. */
  readonly #dirty: DirtyBitmap | undefined;
  readonly #trace: DMATrace | undefined;
  readonly #iommu: IommuDomain | undefined;
  readonly #mappings = new WeakMap<Uint8Array, Mapping>();
  /**
   * The backing pieces of the access being resolved, `[offset0, length0, gpa0, ...]`, reused
   * by every checked access: no caller code runs between resolving and moving, so no two
   * accesses ever use it at once.
   */
  readonly #pieces: number[] = [];
  /** The guest-physical runs an IOMMU translation produced, `[gpa0, length0, ...]`. */
  readonly #runs: number[] = [];
  /** `[addr, length]` of a single access on the general path, which takes a list of ranges. */
  readonly #single: number[] = [0, 0];
  /** The in-flight slot {@link DMAContext.batch} holds, or -1 outside a batch. */
  #batchSlot = -1;
  /**
   * The flat fast path, resolved at construction: guest bytes `[#lo, #hi)` are at backing
   * offset `addr + #delta` in views that never change (a shared backing's first span), for a
   * context with no IOMMU and no trace. `#hi` is -1 otherwise, which fails every test, so
   * that one comparison stands for all of those conditions on the hot path.
   */
  readonly #lo: number;
  readonly #hi: number;
  readonly #delta: number;
  /**
   * `#hi` for the fixed-width accessors' element access, which needs a little-endian host;
   * -1 on a big-endian one. A field rather than a test of `HOST_LITTLE_ENDIAN`: a bundled
   * module constant is a `var`, which V8 loads and converts to a boolean on every call.
   */
  readonly #wordHi: number;
  /**
   * With an IOMMU and no trace on a shared backing: the first span as `[lo, hi, delta]`
   * (see `FlatView.fixedSpan`), the guest range that a window can cover; else undefined.
   */
  readonly #windowSpan: readonly [number, number, number] | undefined;
  /**
   * The window: the IOTLB entry of the last IOMMU hit, cut to `#windowSpan`. IOVAs
   * `[#winLo, #winHi)` with permission `#winPerm` are at guest-physical `addr + #winGpa` and
   * backing offset `addr + #winOffset`, for as long as the domain's IOTLB epoch is
   * `#winEpoch` (it moves whenever the IOTLB is dropped, so the window is exactly as good
   * as the IOTLB entry it copies). An access inside it, once entered (or rechecked, in a
   * batch), skips the IOTLB lookup and the address layer. `#winHi` is -1 when there is none.
   */
  #winLo = 0;
  #winHi = -1;
  #winGpa = 0;
  #winOffset = 0;
  #winPerm = 0;
  #winEpoch = -1;
  /** Scratch for `iommuAccess.lastHit`. */
  readonly #hit: number[] = [0, -1, 0, 0];
  /** The views of the fast path, a shared backing's: element access never meets a detached one. */
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;

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
    const flat = parts.flat;
    this.#flat = flat;
    this.#fence = parts.fence;
    this.#dirty = parts.dirty;
    const span = trace === undefined ? flat.fixedSpan() : undefined;
    const [lo, hi, delta] = (iommu === undefined ? span : undefined) ?? [0, -1, 0];
    this.#windowSpan = iommu === undefined ? undefined : span;
    this.#lo = lo;
    this.#hi = hi;
    this.#wordHi = HOST_LITTLE_ENDIAN ? hi : -1;
    this.#delta = delta;
    this.#u16 = flat.u16;
    this.#u32 = flat.u32;
    this.#u64 = flat.u64;
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
   * @category Transfers
   */
  rw(addr: number, buf: Uint8Array, attrs: DMAAttributesLike): void {
    const bits = directedBits(attrs, 'rw', true);
    if ((bits & READ) !== 0) {
      const known = this.#lastRead.lengthOf(buf);
      this.#readLength(addr, buf, known >= 0 ? known : firstUse(this.#lastRead, buf), bits);
    } else {
      this.#writeLength(addr, buf, uint8Length(buf), bits);
    }
  }

  /**
   * The device reads guest memory into `buf`. READ is implied; an acquire barrier follows
   * unless `attrs` adds RELAXED.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param buf - receives its real length in bytes; it may be a view of guest memory.
   * @param attrs - optionally RELAXED; a WRITE bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as {@link DMAContext.rw}.
   * @category Transfers
   */
  read(addr: number, buf: Uint8Array, attrs?: DMAAttributesLike): void {
    // The attributes first: a flag object's getter may detach or shrink `buf`, so its length
    // is read after them, when no code of the caller's runs before the copy.
    const bits = impliedBits(attrs, READ, 'read');
    let length = this.#lastRead.lengthOf(buf);
    const reused = length >= 0;
    if (!reused) length = firstUse(this.#lastRead, buf);
    if (length >= 0 && this.#inSpan(addr, length)) {
      const offset = addr + this.#delta;
      if (!reused || !this.#readWords(offset, length)) {
        copyOut(this.#flat, offset, buf, length);
      }
      if (bits === READ) this.#fence.emit(ACQUIRE);
    } else {
      this.#readLength(addr, buf, length, bits);
    }
  }

  /**
   * The device writes `data` to guest memory. WRITE is implied; a release barrier comes
   * first unless `attrs` adds RELAXED.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param data - the bytes to write; it may be a view of guest memory.
   * @param attrs - optionally RELAXED; a READ bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as {@link DMAContext.rw}.
   * @category Transfers
   */
  write(addr: number, data: Uint8Array, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'write');
    const length = uint8Length(data);
    if (length >= 0 && this.#inSpan(addr, length)) {
      if (bits === WRITE) this.#fence.emit(RELEASE);
      copyIn(this.#flat, addr + this.#delta, data, length);
      this.#marked(addr, length);
    } else {
      this.#writeLength(addr, data, length, bits);
    }
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
   * @category Transfers
   */
  set(addr: number, value: number, length: number, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'set');
    // The flat fast path (valid numbers, no IOMMU, one piece of RAM), as for read and write;
    // anything else goes the general way, after the checks that throw the precise error.
    if (
      typeof value === 'number' &&
      (value & 0xff) === value &&
      typeof length === 'number' &&
      (length | 0) === length &&
      length >= 0
    ) {
      const offset = this.#flatOffset(addr, length);
      if (offset >= 0) {
        const strength = strengthCode(bits);
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        // `fill` throws on a detached view even for no bytes: a zero-length set touches none.
        if (length !== 0) this.#flat.bytes.fill(value, offset, offset + length);
        this.#marked(addr, length);
        this.#after(strength, FILL, addr, length, bits);
        return;
      }
    }
    checkAddress(addr);
    if (typeof value !== 'number' || (value & 0xff) !== value) {
      invalidArgument('value', 'an integer from 0 to 255', value);
    }
    checkLength(length);
    checkRange(addr, length);
    this.#accessOne(FILL, addr, length, bits, undefined, value, true);
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
   * @category Transfers
   */
  valid(addr: number, length: number, attrs: DMAAttributesLike): boolean {
    const bits = directedBits(attrs, 'valid', false);
    checkAddress(addr);
    checkLength(length);
    checkRange(addr, length);
    if (length === 0) return true;
    const iommu = this.#iommu;
    const pieces: number[] = [];
    if (iommu === undefined) return this.#flat.resolve(addr, length, pieces);
    const runs: number[] = [];
    if (iommuAccess.translateRange(iommu, addr, length, bits, runs) !== undefined) return false;
    for (let index = 0; index < runs.length; index += 2) {
      if (!this.#flat.resolve(runs[index] as number, runs[index + 1] as number, pieces)) {
        return false;
      }
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
   * @category Map and unmap
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
    const flat = this.#flat;
    const extent = flat.extent(gpa);
    const mappedLength = Math.min(mappable, extent);
    const offset = extent === 0 ? -1 : flat.locate(gpa, mappedLength);
    if (offset < 0) {
      throw iommu === undefined
        ? unassigned(addr, length, bits)
        : unassignedBehindIommu(addr, length, bits, gpa, 1);
    }
    const view = new Uint8Array(flat.buffer, offset, mappedLength);
    this.#mappings.set(view, { addr, attrs: bits, gpa, length: mappedLength });
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
   * BIDIRECTIONAL maps a full one. The first `accessedLength` bytes of a WRITE or
   * BIDIRECTIONAL map are marked in the dirty log then.
   *
   * @param view - the view `map` returned.
   * @param accessedLength - how many bytes the device actually accessed; the view's length by default.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for a view this context did not map,
   * one already unmapped, or an accessed length beyond the view.
   * @category Map and unmap
   */
  unmap(view: Uint8Array, accessedLength?: number): void {
    bufferLength(view, 'view');
    const mapping = this.#mappings.get(view);
    if (mapping === undefined) {
      invalidArgument('view', 'a view mapped by this context and not yet unmapped', view);
    }
    // The length it was mapped with: a grow of an unshared wasm memory detaches the view (its
    // length is then 0), but what the device stored through it before is in the new buffer.
    const viewLength = mapping.length;
    // Only undefined means "the whole view": a null from JavaScript is a wrong type.
    const given: unknown = accessedLength;
    const length = given === undefined ? viewLength : given;
    checkLength(length, 'accessedLength');
    if (length > viewLength) {
      invalidArgument('accessedLength', `at most the view's length ${viewLength}`, length);
    }
    this.#mappings.delete(view);
    const strength = unmapStrength(mapping.attrs);
    if (strength !== NONE) this.#fence.emit(strength);
    // What the device stored through the view is marked now, never at map: its bytes are in.
    if ((mapping.attrs & WRITE) !== 0) this.#marked(mapping.gpa, length);
    const trace = this.#trace;
    if (trace !== undefined) {
      if (strength !== NONE) {
        this.#traceBarrier(trace, strength, mapping.addr, length, mapping.attrs);
      }
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
   * @category Barriers
   */
  barrier(strength: BarrierStrength): void {
    const code = parseStrength(strength);
    if (code !== NONE) this.#barrierEvent(code, 0, 0, 0);
  }

  /**
   * Runs `fn` as one batch of accesses: with an IOMMU, the context enters the domain's
   * in-flight protocol once for the whole batch and leaves it once, so that each access
   * inside costs an IOTLB lookup and one load of the unmap generation rather than a fence
   * to enter and one to leave. For a device that does several accesses in a row: a
   * descriptor chain, a ring's index and its entries. Without an IOMMU it just calls `fn`.
   *
   * Unmap coherence holds as for single accesses: an `unmap` on another thread waits until
   * the batch has made its next access (which sees the new table and drops the IOTLB) or
   * has ended, so no access that starts after an `unmap` returns uses the old mapping. An
   * `unmap` of the same domain object on this thread, inside the batch (from `fn` or a
   * fault listener), does not wait for it. Keep a batch short: an `unmap` elsewhere waits
   * for it, up to the domain's stall limit (1 s), after which it stops waiting and the batch
   * re-enters at its next access. `fn` runs synchronously: the accesses an async `fn` makes
   * after its first `await` are outside the batch (and take the single-access path). Batches
   * nest; the slot is given back however `fn` ends, a throw included.
   *
   * @param fn - the accesses, called once with no arguments; its result is returned.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` when `fn` is not a function; whatever
   * `fn` throws.
   * @example
   * ```ts
   * const desc = new Uint8Array(16);
   * ctx.batch(() => {
   *   ctx.read(descAddr, desc);
   *   ctx.read(payloadAddr, payload, DMAAttributes.RELAXED);
   *   ctx.writeU8(statusAddr, 0, DMAAttributes.RELAXED);
   * });
   * ```
   * @category Batches
   */
  batch<T>(fn: () => T): T {
    if (typeof fn !== 'function') invalidArgument('fn', 'a function', fn);
    const iommu = this.#iommu;
    if (iommu === undefined || this.#batchSlot >= 0) return fn();
    this.#batchSlot = iommuAccess.begin(iommu);
    try {
      return fn();
    } finally {
      const slot = this.#batchSlot;
      this.#batchSlot = -1;
      iommuAccess.end(iommu, slot);
    }
  }

  /**
   * Reads a byte. Atomic unless RELAXED. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
  readU8(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 1, impliedBits(attrs, READ, 'readU8'), true);
  }

  /**
   * Reads a little-endian u16. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
  readU16LE(addr: number, attrs?: DMAAttributesLike): number {
    const bits = impliedBits(attrs, READ, 'readU16LE');
    const index = this.#wordAt(addr, 2);
    if (index < 0) return this.#load(addr, 2, bits, true);
    return bits === READ
      ? this.#acquired(Atomics.load(this.#u16, index))
      : (this.#u16[index] as number);
  }

  /**
   * Reads a big-endian u16. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
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
   * @category Fixed-width
   */
  readU32LE(addr: number, attrs?: DMAAttributesLike): number {
    const bits = impliedBits(attrs, READ, 'readU32LE');
    const index = this.#wordAt(addr, 4);
    if (index < 0) return this.#load(addr, 4, bits, true);
    return bits === READ
      ? this.#acquired(Atomics.load(this.#u32, index))
      : (this.#u32[index] as number);
  }

  /**
   * Reads a big-endian u32. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
  readU32BE(addr: number, attrs?: DMAAttributesLike): number {
    return this.#load(addr, 4, impliedBits(attrs, READ, 'readU32BE'), false);
  }

  /**
   * Reads a little-endian u64 as a bigint. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
  readU64LE(addr: number, attrs?: DMAAttributesLike): bigint {
    const bits = impliedBits(attrs, READ, 'readU64LE');
    const index = this.#wordAt(addr, 8);
    if (index < 0) return this.#load64(addr, bits, true);
    return bits === READ
      ? this.#acquired(Atomics.load(this.#u64, index))
      : (this.#u64[index] as bigint);
  }

  /**
   * Reads a big-endian u64 as a bigint. See {@link DMAContext.readU32LE}.
   *
   * @category Fixed-width
   */
  readU64BE(addr: number, attrs?: DMAAttributesLike): bigint {
    return this.#load64(addr, impliedBits(attrs, READ, 'readU64BE'), false);
  }

  /**
   * Writes a byte. Atomic unless RELAXED. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
  writeU8(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 1, value, impliedBits(attrs, WRITE, 'writeU8'), true);
  }

  /**
   * Writes a little-endian u16. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
  writeU16LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'writeU16LE');
    const index = this.#wordAt(addr, 2);
    if (index < 0 || typeof value !== 'number' || (value & 0xffff) !== value) {
      this.#store(addr, 2, value, bits, true);
    } else {
      if (bits === WRITE) {
        this.#fence.emit(RELEASE);
        Atomics.store(this.#u16, index, value);
      } else {
        this.#u16[index] = value;
      }
      this.#marked(addr, 2);
    }
  }

  /**
   * Writes a big-endian u16. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
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
   * @category Fixed-width
   */
  writeU32LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'writeU32LE');
    const index = this.#wordAt(addr, 4);
    // `>>> 0` of a number is exact for integers from 0 to 2^32 - 1 and changes any other.
    if (index < 0 || typeof value !== 'number' || value >>> 0 !== value) {
      this.#store(addr, 4, value, bits, true);
    } else {
      if (bits === WRITE) {
        this.#fence.emit(RELEASE);
        Atomics.store(this.#u32, index, value);
      } else {
        this.#u32[index] = value;
      }
      this.#marked(addr, 4);
    }
  }

  /**
   * Writes a big-endian u32. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
  writeU32BE(addr: number, value: number, attrs?: DMAAttributesLike): void {
    this.#store(addr, 4, value, impliedBits(attrs, WRITE, 'writeU32BE'), false);
  }

  /**
   * Writes a little-endian u64 given as a bigint. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
  writeU64LE(addr: number, value: bigint, attrs?: DMAAttributesLike): void {
    const bits = impliedBits(attrs, WRITE, 'writeU64LE');
    const index = this.#wordAt(addr, 8);
    if (index < 0 || typeof value !== 'bigint' || BigInt.asUintN(64, value) !== value) {
      this.#store64(addr, value, bits, true);
    } else {
      if (bits === WRITE) {
        this.#fence.emit(RELEASE);
        Atomics.store(this.#u64, index, value);
      } else {
        this.#u64[index] = value;
      }
      this.#marked(addr, 8);
    }
  }

  /**
   * Writes a big-endian u64 given as a bigint. See {@link DMAContext.writeU32LE}.
   *
   * @category Fixed-width
   */
  writeU64BE(addr: number, value: bigint, attrs?: DMAAttributesLike): void {
    this.#store64(addr, value, impliedBits(attrs, WRITE, 'writeU64BE'), false);
  }

  // ---------------------------------------------------------------------------------------
  // How every access runs: attributes → strength → resolve → barrier → move → mark →
  // barrier, with the trace events delivered once the bytes have moved and the IOMMU slot is
  // given back. `#access` is that path for any access; each accessor's flat fast path (no
  // IOMMU, good numbers, one piece of RAM) is the same steps for its own case, written next
  // to it so that V8 inlines it whole. No code of the caller's (a getter, a trace or fault
  // listener, a buffer's own methods) runs between the first translation and the last byte
  // moved, so nothing it does (an unmap, a detach, a resize, a re-entrant access) can meet
  // an access half done.

  /**
   * The general path of every access, over a list of ranges `[addr0, length0, ...]` (one
   * range for all but scatter-gather), each already validated as numbers: resolves every
   * range before any byte moves, issues the barrier once, moves, marks, and finishes.
   * `total` is the byte count of the list (the width, for a word).
   */
  #access(
    op: Op,
    ranges: readonly number[],
    count: number,
    total: number,
    bits: number,
    buf: Uint8Array | undefined,
    value: number | bigint,
    little: boolean,
  ): number | bigint {
    const strength = strengthCode(bits);
    const pieces = this.#pieces;
    emptyList(pieces);
    let result: number | bigint = value;
    let fault: DMAFault | undefined;
    const slot = this.#enter();
    try {
      for (let index = 0; index < count && fault === undefined; index += 2) {
        fault = this.#resolve(ranges[index] as number, ranges[index + 1] as number, bits, pieces);
      }
      if (fault === undefined) {
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        result = this.#move(op, pieces, buf, total, value, little, strength !== NONE);
      }
    } finally {
      this.#leave(slot);
    }
    if (fault !== undefined) throw this.#report(fault);
    if (stores(op)) this.#markPieces(pieces);
    this.#finish(strength, op, ranges, count, total, bits);
    return result;
  }

  /** {@link DMAContext.#access} for one range. */
  #accessOne(
    op: Op,
    addr: number,
    length: number,
    bits: number,
    buf: Uint8Array | undefined,
    value: number | bigint,
    little: boolean,
  ): number | bigint {
    const single = this.#single;
    single[0] = addr;
    single[1] = length;
    return this.#access(op, single, 2, length, bits, buf, value, little);
  }

  /**
   * Enters the IOMMU's in-flight protocol for one access: the slot to give back, or -1 when
   * there is none to give back (no IOMMU, or a batch that holds one: then only the batch's
   * generation check).
   */
  #enter(): number {
    const iommu = this.#iommu;
    if (iommu === undefined) return -1;
    if (this.#batchSlot < 0) return iommuAccess.enter(iommu);
    this.#batchSlot = iommuAccess.recheck(iommu, this.#batchSlot);
    return -1;
  }

  /** Gives back a slot {@link DMAContext.#enter} returned. */
  #leave(slot: number): void {
    if (slot >= 0) iommuAccess.leave(this.#iommu as IommuDomain, slot);
  }

  /** Reports an IOMMU fault to the domain's listener, outside any access. */
  #report(fault: DMAFault): DMAFault {
    return iommuAccess.report(this.#iommu as IommuDomain, fault);
  }

  /**
   * Resolves `length` bytes at `addr` into backing pieces pushed onto `out`, checking every
   * byte first so that a failed access changes nothing: the IOMMU (an IOTLB hit, or a
   * translation of every page) turns the IOVA range into guest-physical runs, and the
   * address layer turns each into pieces of the backing. Returns the IOMMU's refusal
   * unreported (the caller reports it after leaving the access) and throws
   * `ERR_DMA_UNASSIGNED` for a hole. Call between {@link DMAContext.#enter} and
   * {@link DMAContext.#leave}.
   */
  #resolve(addr: number, length: number, bits: number, out: number[]): DMAFault | undefined {
    if (length === 0) return undefined;
    const flat = this.#flat;
    const iommu = this.#iommu;
    if (iommu === undefined) {
      if (!flat.resolve(addr, length, out)) throw unassigned(addr, length, bits);
      return undefined;
    }
    const gpa = iommuAccess.lookup(iommu, addr, length, bits & BIDIRECTIONAL);
    if (gpa >= 0 && flat.resolve(gpa, length, out)) return undefined;
    const runs = this.#runs;
    emptyList(runs);
    const fault = iommuAccess.translateRange(iommu, addr, length, bits, runs);
    if (fault !== undefined) return fault;
    for (let index = 0; index < runs.length; index += 2) {
      const runGpa = runs[index] as number;
      const runLength = runs[index + 1] as number;
      if (!flat.resolve(runGpa, runLength, out)) {
        throw unassignedBehindIommu(addr, length, bits, runGpa, runLength);
      }
    }
    return undefined;
  }

  /** Does what `op` says with resolved pieces of guest memory. */
  #move(
    op: Op,
    pieces: readonly number[],
    buf: Uint8Array | undefined,
    total: number,
    value: number | bigint,
    little: boolean,
    ordered: boolean,
  ): number | bigint {
    const flat = this.#flat;
    if (op === OUT || op === IN) {
      const bytes = buf as Uint8Array;
      if (pieces.length === 3) {
        if (op === IN) copyIn(flat, pieces[0] as number, bytes, total);
        else copyOut(flat, pieces[0] as number, bytes, total);
      } else if (pieces.length > 3) {
        copyPieces(flat, pieces, bytes, op === IN);
      }
      return value;
    }
    if (op === FILL) {
      for (let index = 0; index < pieces.length; index += 3) {
        const start = pieces[index] as number;
        flat.bytes.fill(value as number, start, start + (pieces[index + 1] as number));
      }
      return value;
    }
    const toGuest = op === STORE;
    // A word split across pieces (IOMMU pages, regions apart in the backing) is never
    // naturally aligned in both, so never atomic.
    if (pieces.length !== 3) return this.#splitWord(pieces, total, little, value, toGuest);
    if (total === 8) {
      return this.#word64(pieces[0] as number, little, value as bigint, toGuest, ordered);
    }
    if (!toGuest) return this.#loadWord(pieces[0] as number, total, little, ordered);
    this.#storeWord(pieces[0] as number, total, little, value as number, ordered);
    return value;
  }

  /** Marks the dirty log for a finished write's pieces (their guest-physical runs). */
  #markPieces(pieces: readonly number[]): void {
    const dirty = this.#dirty;
    if (dirty === undefined) return;
    for (let index = 0; index < pieces.length; index += 3) {
      dirty.mark(pieces[index + 2] as number, pieces[index + 1] as number);
    }
  }

  /** Marks the dirty log for a finished write of `length` bytes at `gpa`: one branch without a log. */
  #marked(gpa: number, length: number): void {
    const dirty = this.#dirty;
    if (dirty !== undefined && length !== 0) dirty.mark(gpa, length);
  }

  /**
   * The backing offset for the flat fast paths, or -1 when they do not apply: an IOMMU, a
   * number that is not a safe address, or a range that is not one piece of RAM inside the
   * current views (the general path then tells a hole from a backing that changed).
   */
  #flatOffset(addr: unknown, length: number): number {
    if (this.#iommu !== undefined || !isAddressRange(addr, length)) return -1;
    return length === 0 ? 0 : this.#flat.locate(addr, length);
  }

  /**
   * A read with the buffer's real length read (-1: not a buffer) and the attributes as bits.
   * The flat fast path is written flat, so that V8 inlines it whole (its budget is about 920
   * bytes of bytecode for the whole chain from `read` down; `docs/performance.md`); anything
   * else is {@link DMAContext.#transfer}.
   */
  #readLength(addr: number, buf: Uint8Array, length: number, bits: number): void {
    if (length >= 0) {
      let offset = this.#flatOffset(addr, length);
      if (offset < 0 && this.#batchSlot >= 0) offset = this.#batchOffset(addr, length, READ);
      if (offset >= 0) {
        // A read asks for acquire (after) or none: nothing goes before it.
        this.#copyOut(offset, buf, length);
        this.#after(strengthCode(bits), OUT, addr, length, bits);
        return;
      }
    }
    this.#transfer(addr, buf, length, bits);
  }

  /**
   * {@link DMAContext.#readLength} for writes. Reads and writes have a fast path each, so
   * that V8 inlines one copy routine into the caller rather than both.
   */
  #writeLength(addr: number, data: Uint8Array, length: number, bits: number): void {
    if (length >= 0) {
      let offset = this.#flatOffset(addr, length);
      let gpa = addr;
      if (offset < 0 && this.#batchSlot >= 0) {
        offset = this.#batchOffset(addr, length, WRITE);
        gpa = addr + this.#winGpa;
      }
      if (offset >= 0) {
        const strength = strengthCode(bits);
        if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
        copyIn(this.#flat, offset, data, length);
        this.#marked(gpa, length);
        this.#after(strength, IN, addr, length, bits);
        return;
      }
    }
    this.#transfer(addr, data, length, bits);
  }

  /**
   * Every read's copy out of guest memory at backing offset `offset`: {@link
   * DMAContext.#readWords} when `#lastRead` knows the buffer, else `copyOut`. Short reads
   * skip the test, so that copyOut's inlined word path stays the whole cost of a descriptor
   * read.
   */
  #copyOut(offset: number, buf: Uint8Array, length: number): void {
    if (
      length <= WORDS_MIN ||
      this.#lastRead.lengthOf(buf) < 0 ||
      !this.#readWords(offset, length)
    ) {
      copyOut(this.#flat, offset, buf, length);
    }
  }

  /**
   * Copies `length` bytes of guest memory at backing offset `offset` into the caller's buffer
   * whose length `#lastRead` knows, which the caller has checked (`read` or `rw` read into it
   * the time before too, see `CallerWords`), word by word, when both are word-aligned, the backing is shared and the
   * copy is at most {@link WORDS_MAX} bytes; else moves nothing and returns false. From 17
   * bytes up to that length a read otherwise goes through the scratch buffer and a
   * builtin `set`, which costs twice the word loop; a write needs neither (its `set` copies
   * straight from the caller's buffer) and never comes here. `length` is the buffer's real
   * length, read for this access, so the words cover it unless the buffer was detached or
   * shrunk since they were made, which leaves them shorter.
   */
  #readWords(offset: number, length: number): boolean {
    const guest = this.#flat.words;
    if (guest === undefined || length > WORDS_MAX) return false;
    if (((offset | length) & 3) !== 0 || (offset | 0) !== offset) return false;
    const words = this.#lastRead.words;
    if (words === undefined || words.length < length >> 2) return false;
    copyWords(guest, offset >> 2, words, 0, length >> 2);
    return true;
  }

  /**
   * Inside a batch (the IOMMU's slot held by `batch`): the batch's generation check, then the
   * backing offset of `length` bytes at IOVA `addr` when nothing traces and they lie in the
   * window with permission `need`; else -1, and the access takes the path it took before
   * (`#transfer`, which checks the generation again). What `#iommuFast` does for an access in
   * the window, without its entry, its `try` and two levels of calls: in a batch there is no
   * slot to take or give back, and the batch's `finally` gives its slot back if a copy throws.
   */
  #batchOffset(addr: number, length: number, need: number): number {
    const iommu = this.#iommu as IommuDomain;
    this.#batchSlot = iommuAccess.recheck(iommu, this.#batchSlot);
    return this.#trace === undefined &&
      length > 0 &&
      isAddressRange(addr, length) &&
      this.#inWindow(iommu, addr, length, need)
      ? addr + this.#winOffset
      : -1;
  }

  /**
   * A transfer off the flat fast path: an IOMMU, bad arguments, several pieces, a hole.
   * `length` is -1 for a bad buffer.
   */
  #transfer(addr: number, buf: Uint8Array, length: number, bits: number): void {
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
    this.#accessOne((bits & READ) !== 0 ? OUT : IN, addr, length, bits, buf, 0, true);
  }

  /**
   * Whether `length` bytes at IOVA `addr` (a validated range) lie in the window with
   * permission `need`. Call after entering (or rechecking, in a batch): that is where the
   * IOTLB is dropped when an `unmap` happened, which moves the epoch.
   */
  #inWindow(iommu: IommuDomain, addr: number, length: number, need: number): boolean {
    return (
      addr >= this.#winLo &&
      addr + length <= this.#winHi &&
      (this.#winPerm & need) === need &&
      iommuAccess.epoch(iommu) === this.#winEpoch
    );
  }

  /** Makes the window from the IOTLB entry an access just hit (see `#winLo`). */
  #openWindow(iommu: IommuDomain): void {
    const span = this.#windowSpan;
    if (span === undefined) return;
    const hit = this.#hit;
    iommuAccess.lastHit(iommu, hit);
    const [start, end, toGpa, perm] = hit as [number, number, number, number];
    const lo = Math.max(start, span[0] - toGpa);
    const hi = Math.min(end, span[1] - toGpa);
    if (end < 0 || hi <= lo) return;
    this.#winLo = lo;
    this.#winHi = hi;
    this.#winGpa = toGpa;
    this.#winOffset = toGpa + span[2];
    this.#winPerm = perm;
    this.#winEpoch = iommuAccess.epoch(iommu);
  }

  /**
   * The IOMMU's fast path: an IOTLB hit on one mapping, one piece of RAM, no trace. Returns
   * false, having moved nothing, when it does not apply; the general path then redoes the
   * access. Nothing between enter and leave here calls the caller's code (the copies use the
   * builtin `set` on a length already read), so only the engine can throw in it (a stack
   * overflow); the `try` gives the slot back even then, and costs nothing measurable here
   * (bench: `iommu write 64B single page`). Every enter checks the generation afresh
   * besides, so no slot left behind could ever serve an IOTLB entry older than an `unmap`.
   */
  #iommuFast(
    iommu: IommuDomain,
    addr: number,
    buf: Uint8Array,
    length: number,
    bits: number,
  ): boolean {
    const slot = this.#enter();
    const need = bits & BIDIRECTIONAL;
    let gpa: number;
    let offset: number;
    if (this.#inWindow(iommu, addr, length, need)) {
      gpa = addr + this.#winGpa;
      offset = addr + this.#winOffset;
    } else {
      gpa = iommuAccess.lookup(iommu, addr, length, need);
      offset = gpa < 0 ? -1 : this.#flat.locate(gpa, length);
      if (offset < 0) {
        this.#leave(slot);
        return false;
      }
      this.#openWindow(iommu);
    }
    const strength = strengthCode(bits);
    const toGuest = (bits & READ) === 0;
    try {
      if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
      if (toGuest) copyIn(this.#flat, offset, buf, length);
      else this.#copyOut(offset, buf, length);
    } finally {
      this.#leave(slot);
    }
    if (toGuest) this.#marked(gpa, length);
    if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
    return true;
  }

  /**
   * Scatter-gather for {@link ScatterGatherList}: `ranges` is `[addr0, length0, ...]`, each
   * validated when added; one access over all of them.
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
    this.#access(toGuest ? IN : OUT, ranges, ranges.length, total, bits, buf, 0, true);
  }

  /**
   * Loads one word at a backing offset: one `Atomics.load` of that exact location when
   * ordered and naturally aligned (single-copy atomic), else a `DataView` load. Loads and
   * stores are apart so that each is small enough for V8 to inline into its fast path.
   */
  #loadWord(offset: number, width: number, little: boolean, ordered: boolean): number {
    const flat = this.#flat;
    // A bit test, not `offset % width`: an offset made from the IOMMU's translations (kept in
    // a Float64Array) is a double, and `%` of a double is a call to fmod in V8, about 15 ns,
    // more than the access. Exact for every integer offset below 2^53: ToInt32 keeps the low
    // bits.
    const atomic = ordered && (offset & (width - 1)) === 0;
    if (width === 1) return atomic ? Atomics.load(flat.bytes, offset) : flat.view.getUint8(offset);
    const swap = little !== HOST_LITTLE_ENDIAN;
    if (width === 2) {
      if (!atomic) return flat.view.getUint16(offset, little);
      const loaded = Atomics.load(flat.u16, offset / 2);
      return swap ? swap16(loaded) : loaded;
    }
    if (!atomic) return flat.view.getUint32(offset, little);
    const loaded = Atomics.load(flat.u32, offset / 4);
    return swap ? swap32(loaded) : loaded;
  }

  /** {@link DMAContext.#loadWord} for stores: one `Atomics.store` when ordered and aligned. */
  #storeWord(
    offset: number,
    width: number,
    little: boolean,
    value: number,
    ordered: boolean,
  ): void {
    const flat = this.#flat;
    const atomic = ordered && (offset & (width - 1)) === 0;
    if (width === 1) {
      if (atomic) Atomics.store(flat.bytes, offset, value);
      else flat.view.setUint8(offset, value);
      return;
    }
    const swap = little !== HOST_LITTLE_ENDIAN;
    if (width === 2) {
      if (atomic) Atomics.store(flat.u16, offset / 2, swap ? swap16(value) : value);
      else flat.view.setUint16(offset, value, little);
    } else if (atomic) Atomics.store(flat.u32, offset / 4, swap ? swap32(value) : value);
    else flat.view.setUint32(offset, value, little);
  }

  /** {@link DMAContext.#loadWord} and {@link DMAContext.#storeWord} for u64 values, kept apart so that numbers never meet bigints. */
  #word64(
    offset: number,
    little: boolean,
    value: bigint,
    toGuest: boolean,
    ordered: boolean,
  ): bigint {
    const atomic = ordered && (offset & 7) === 0;
    const swap = little !== HOST_LITTLE_ENDIAN;
    const flat = this.#flat;
    if (toGuest) {
      if (atomic) Atomics.store(flat.u64, offset / 8, swap ? swap64(value) : value);
      else flat.view.setBigUint64(offset, value, little);
      return value;
    }
    if (!atomic) return flat.view.getBigUint64(offset, little);
    const loaded = Atomics.load(flat.u64, offset / 8);
    return swap ? swap64(loaded) : loaded;
  }

  /** A word split across pieces: staged through bytes, never atomic. */
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
      copyPieces(this.#flat, pieces, bytes, true);
      return value;
    }
    copyPieces(this.#flat, pieces, bytes, false);
    if (width === 2) return view.getUint16(0, little);
    if (width === 4) return view.getUint32(0, little);
    return view.getBigUint64(0, little);
  }

  /**
   * A fixed-width access off the flat fast path (bad numbers, holes, an IOMMU, a word across
   * pieces): validated, then the general path.
   */
  #fixed(
    addr: number,
    width: number,
    bits: number,
    little: boolean,
    value: number | bigint,
    toGuest: boolean,
  ): number | bigint {
    const iommu = this.#iommu;
    if (iommu !== undefined && this.#trace === undefined && isAddressRange(addr, width)) {
      const slot = this.#enter();
      const need = bits & BIDIRECTIONAL;
      let gpa: number;
      let offset: number;
      if (this.#inWindow(iommu, addr, width, need)) {
        gpa = addr + this.#winGpa;
        offset = addr + this.#winOffset;
      } else {
        gpa = iommuAccess.lookup(iommu, addr, width, need);
        offset = gpa < 0 ? -1 : this.#flat.locate(gpa, width);
        if (offset >= 0) this.#openWindow(iommu);
      }
      if (offset >= 0) {
        // The IOMMU's fast path for a word (see #iommuFast): an IOTLB hit on one piece.
        const strength = strengthCode(bits);
        const ordered = strength !== NONE;
        let result = value;
        try {
          if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
          if (width === 8) result = this.#word64(offset, little, value as bigint, toGuest, ordered);
          else if (toGuest) this.#storeWord(offset, width, little, value as number, ordered);
          else result = this.#loadWord(offset, width, little, ordered);
        } finally {
          this.#leave(slot);
        }
        if (toGuest) this.#marked(gpa, width);
        if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
        return result;
      }
      this.#leave(slot);
    }
    checkAddress(addr);
    checkRange(addr, width);
    return this.#accessOne(toGuest ? STORE : LOAD, addr, width, bits, undefined, value, little);
  }

  /**
   * Whether `length` bytes at `addr` take the transfers' fast path: an integer address with
   * the whole range in `[#lo, #hi)` (never with an IOMMU, a trace or a backing that may
   * change). The range then lies within 2^53 and in one piece of RAM.
   */
  #inSpan(addr: unknown, length: number): addr is number {
    return (
      typeof addr === 'number' && addr >= this.#lo && addr + length <= this.#hi && addr % 1 === 0
    );
  }

  /**
   * The element index of a `width`-byte word at `addr` in the fast path's views, or -1: not a
   * number, outside `[#lo, #wordHi)` (and so always with an IOMMU, a trace, a backing that
   * may change, or on a big-endian host: only the little-endian accessors ask), or not a
   * naturally aligned int32 offset in the backing (a fraction, NaN, or a backing beyond
   * 2 GiB: the general path then). Aligned words are single-copy atomic there.
   */
  #wordAt(addr: unknown, width: number): number {
    if (typeof addr !== 'number' || addr < this.#lo || addr + width > this.#wordHi) return -1;
    const offset = addr + this.#delta;
    if ((offset | 0) !== offset || (offset & (width - 1)) !== 0) return -1;
    return offset / width;
  }

  /** Issues the acquire barrier after a fast-path load and passes its value on. */
  #acquired<T>(value: T): T {
    this.#fence.emit(ACQUIRE);
    return value;
  }

  /** A fixed-width load: the flat fast path, else {@link DMAContext.#fixed}. */
  #load(addr: number, width: 1 | 2 | 4, bits: number, little: boolean): number {
    const offset = this.#flatOffset(addr, width);
    if (offset < 0) return this.#fixed(addr, width, bits, little, 0, false) as number;
    const strength = strengthCode(bits);
    const value = this.#loadWord(offset, width, little, strength !== NONE);
    this.#after(strength, LOAD, addr, width, bits);
    return value;
  }

  /** {@link DMAContext.#load} for u64, kept apart so that numbers never meet bigints. */
  #load64(addr: number, bits: number, little: boolean): bigint {
    const offset = this.#flatOffset(addr, 8);
    if (offset < 0) return this.#fixed(addr, 8, bits, little, 0n, false) as bigint;
    const strength = strengthCode(bits);
    const value = this.#word64(offset, little, 0n, false, strength !== NONE);
    this.#after(strength, LOAD, addr, 8, bits);
    return value;
  }

  #store(addr: number, width: 1 | 2 | 4, value: number, bits: number, little: boolean): void {
    if (typeof value !== 'number' || value < 0 || value > WIDTH_LIMIT[width] || value % 1 !== 0) {
      invalidArgument('value', `an integer from 0 to ${WIDTH_LIMIT[width]}`, value);
    }
    const offset = this.#flatOffset(addr, width);
    if (offset < 0) {
      this.#fixed(addr, width, bits, little, value, true);
      return;
    }
    const strength = strengthCode(bits);
    if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
    this.#storeWord(offset, width, little, value, strength !== NONE);
    this.#marked(addr, width);
    this.#after(strength, STORE, addr, width, bits);
  }

  #store64(addr: number, value: bigint, bits: number, little: boolean): void {
    if (typeof value !== 'bigint' || BigInt.asUintN(64, value) !== value) {
      invalidArgument('value', 'a bigint from 0n to 2n ** 64n - 1n', value);
    }
    const offset = this.#flatOffset(addr, 8);
    if (offset < 0) {
      this.#fixed(addr, 8, bits, little, value, true);
      return;
    }
    const strength = strengthCode(bits);
    if ((strength & RELEASE) !== 0) this.#fence.emit(strength);
    this.#word64(offset, little, value, true, strength !== NONE);
    this.#marked(addr, 8);
    this.#after(strength, STORE, addr, 8, bits);
  }

  /** Emits a barrier and, when tracing, its event. */
  #barrierEvent(strength: number, addr: number, length: number, attrs: number): void {
    this.#fence.emit(strength);
    const trace = this.#trace;
    if (trace !== undefined) this.#traceBarrier(trace, strength, addr, length, attrs);
  }

  /**
   * Ends a finished flat fast-path access (a store has marked its pages): issues the barrier
   * that goes after it (acquire and full, bit 0 of the numeric strength, order later
   * accesses after this one) and, when tracing, delivers its events as
   * {@link DMAContext.#finish} does.
   */
  #after(strength: number, op: Op, addr: number, length: number, attrs: number): void {
    if (this.#trace !== undefined) this.#traceOne(strength, op, addr, length, attrs);
    else if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
  }

  /** {@link DMAContext.#finish} for one range, kept out of {@link DMAContext.#after}. */
  #traceOne(strength: number, op: Op, addr: number, length: number, attrs: number): void {
    this.#finish(strength, op, [addr, length], 2, length, attrs);
  }

  /**
   * Ends a finished access over `ranges`: issues the barrier after it, then, when tracing,
   * delivers its events in program order: the barrier before it (release and full, once for
   * the list), one event per range, the barrier after it. The barrier after is issued
   * before any event, so that a listener that throws cannot cost the access its ordering;
   * the ranges are copied first, so that a listener that adds to a list or starts another
   * access cannot change what is traced.
   */
  #finish(
    strength: number,
    op: Op,
    ranges: readonly number[],
    count: number,
    total: number,
    attrs: number,
  ): void {
    if ((strength & ACQUIRE) !== 0) this.#fence.emit(strength);
    const trace = this.#trace;
    if (trace === undefined) return;
    const listed = ranges.slice(0, count);
    const first = listed[0] ?? 0;
    if ((strength & RELEASE) !== 0) this.#traceBarrier(trace, strength, first, total, attrs);
    const name = OP_NAMES[op] as DMATraceOp;
    for (let index = 0; index < count; index += 2) {
      const addr = listed[index] as number;
      this.#traceEvent(trace, name, addr, listed[index + 1] as number, attrs, strength);
    }
    if ((strength & ACQUIRE) !== 0) this.#traceBarrier(trace, strength, first, total, attrs);
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
    OWN_READ_U16 = Reflect.get(DMAContext.prototype, 'readU16LE');
    OWN_WRITE_U16 = Reflect.get(DMAContext.prototype, 'writeU16LE');
    OWN_BARRIER = Reflect.get(DMAContext.prototype, 'barrier');
    directSpan = (ctx) => {
      const lo = ctx.#lo;
      const hi = ctx.#hi;
      const delta = ctx.#delta;
      if (!HOST_LITTLE_ENDIAN || hi < 0 || delta % 8 !== 0 || hi + delta > 0x7fff_ffff) {
        return undefined;
      }
      const fence = ctx.#fence;
      return Object.freeze({
        lo,
        hi,
        delta,
        u16: ctx.#u16,
        u32: ctx.#u32,
        store: ctx.#flat,
        dirty: ctx.#dirty,
        ordered:
          Reflect.get(ctx, 'readU16LE') === OWN_READ_U16 &&
          Reflect.get(ctx, 'writeU16LE') === OWN_WRITE_U16 &&
          Reflect.get(ctx, 'barrier') === OWN_BARRIER,
        fence: fence.word,
        fenceMask: fence.mask,
      });
    };
    transferKnownLength = (ctx, addr, buf, length, bits) => {
      if ((bits & READ) !== 0) ctx.#readLength(addr, buf, length, bits);
      else ctx.#writeLength(addr, buf, length, bits);
    };
  }
}
