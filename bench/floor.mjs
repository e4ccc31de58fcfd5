/**
 * The floor of the fixed-width rows: a throwaway accessor that makes the checks the contract
 * requires of `readU16LE`, `readU32LE` and `writeU32LE`, and nothing else. It holds its views
 * in private fields (the brand), takes the attributes as a number with only the implied
 * direction and RELAXED (anything else throws), range-checks the address against one region
 * (`lo`, `hi`, a backing `delta`), requires natural alignment, has the trace branch, and makes
 * an ordered access with `Atomics` (its fence left out: under `tso` an acquire or release
 * needs none). It has no IOMMU, no dirty log, no second region and no fallback path.
 *
 * Issue 13 measured such an accessor at 0.7–1.3× a raw typed-array access, and set the
 * library's budget at 1.5×. On this machine it is not near that (docs/performance.md, "The
 * floor: what any accessor with these checks costs"): the rows `floor …` beside `raw …` and
 * `relaxed … tso` show, in every run, how much of the gap to raw code any accessor with these
 * checks pays, and how much is the library's own.
 */

// The attribute bits as literals, as the library's own build inlines them (src/internal/bits.ts).
const READ = 1;
const WRITE = 2;
const RELAXED = 4;

/** The throwaway accessor over one region of a buffer (see the module's comment). */
export class FloorAccessor {
  #u16;
  #u32;
  #lo;
  #hi;
  #delta;
  /** @type {((addr: number) => void) | undefined} */
  #trace;

  /**
   * @param {ArrayBufferLike} buffer the guest memory's backing.
   * @param {number} lo the region's first guest address.
   * @param {number} size the region's bytes.
   * @param {number} delta the backing offset of guest address 0 of the region, minus `lo`.
   */
  constructor(buffer, lo, size, delta) {
    this.#u16 = new Uint16Array(buffer);
    this.#u32 = new Uint32Array(buffer);
    this.#lo = lo;
    this.#hi = lo + size;
    this.#delta = delta;
    this.#trace = undefined;
  }

  /** The attributes as bits: undefined is ordered; a number may add only RELAXED. */
  static #bits(attrs, implied) {
    if (attrs === undefined) return implied;
    if (typeof attrs === 'number' && (attrs & (implied | RELAXED)) === attrs) {
      return attrs | implied;
    }
    throw new TypeError(`bad attributes ${String(attrs)}`);
  }

  /** The element index of `addr` for a `width`-byte access, or a throw. */
  #index(addr, width) {
    if (typeof addr !== 'number' || !(addr >= this.#lo) || addr + width > this.#hi) {
      throw new RangeError(`address ${String(addr)} is outside the region`);
    }
    const offset = addr + this.#delta;
    if ((offset & (width - 1)) !== 0 || (offset | 0) !== offset) {
      throw new RangeError(`address ${addr} is not aligned to ${width}`);
    }
    if (this.#trace !== undefined) this.#trace(addr);
    return offset / width;
  }

  /** @param {number} addr @param {number} [attrs] */
  readU16LE(addr, attrs) {
    const bits = FloorAccessor.#bits(attrs, READ);
    const index = this.#index(addr, 2);
    return bits === READ ? Atomics.load(this.#u16, index) : this.#u16[index];
  }

  /** @param {number} addr @param {number} [attrs] */
  readU32LE(addr, attrs) {
    const bits = FloorAccessor.#bits(attrs, READ);
    const index = this.#index(addr, 4);
    return bits === READ ? Atomics.load(this.#u32, index) : this.#u32[index];
  }

  /** @param {number} addr @param {number} value @param {number} [attrs] */
  writeU32LE(addr, value, attrs) {
    const bits = FloorAccessor.#bits(attrs, WRITE);
    const index = this.#index(addr, 4);
    if (typeof value !== 'number' || value >>> 0 !== value) {
      throw new RangeError(`value ${String(value)} is not a u32`);
    }
    if (bits === WRITE) Atomics.store(this.#u32, index, value);
    else this.#u32[index] = value;
  }
}

/** The in-flight slot's free value, and the IOTLB window's permission bits. */
const SLOT_FREE = 0;

/**
 * The floor of the IOMMU rows: {@link FloorAccessor}'s `readU32LE` behind the least an IOTLB
 * hit needs under the library's unmap protocol (src/iommu.ts): take an in-flight slot with one
 * `Atomics.compareExchange` (the store-load fence that pairs with `unmap`), load the shared
 * generation and compare it with the one the IOTLB was filled under, check that the address
 * lies in one cached entry with the needed permission, access, and give the slot back with a
 * plain store (a release on x86, as the library does there). It has one IOTLB entry, never
 * misses, never flushes and has no fault path.
 */
export class FloorIommuAccessor {
  #u32;
  #slots;
  #generation;
  #tlbGeneration = 0;
  #lo;
  #hi;
  #delta;
  #perm = READ | WRITE;
  /** @type {((addr: number) => void) | undefined} */
  #trace;

  /**
   * @param {ArrayBufferLike} buffer the guest memory's backing.
   * @param {number} iova the IOVA where the one mapping starts (guest address 0).
   * @param {number} size the mapping's bytes.
   */
  constructor(buffer, iova, size) {
    this.#u32 = new Uint32Array(buffer);
    const shared = new Int32Array(new SharedArrayBuffer(64));
    this.#slots = shared.subarray(0, 8);
    this.#generation = shared.subarray(8, 9);
    this.#lo = iova;
    this.#hi = iova + size;
    this.#delta = -iova;
    this.#trace = undefined;
  }

  /** @param {number} addr @param {number} [attrs] */
  readU32LE(addr, attrs) {
    const bits = attrs === undefined ? READ : attrs | READ;
    if (typeof attrs === 'number' && (attrs & (READ | RELAXED)) !== attrs) {
      throw new TypeError(`bad attributes ${String(attrs)}`);
    }
    if (typeof addr !== 'number' || !(addr >= 0)) {
      throw new RangeError(`address ${String(addr)} is not an IOVA`);
    }
    const slots = this.#slots;
    if (Atomics.compareExchange(slots, 0, SLOT_FREE, 1) !== SLOT_FREE) {
      throw new Error('the floor has one slot');
    }
    if (this.#generation[0] !== this.#tlbGeneration) throw new Error('the floor never flushes');
    if (addr < this.#lo || addr + 4 > this.#hi || (this.#perm & READ) === 0) {
      slots[0] = SLOT_FREE;
      throw new RangeError(`IOVA ${addr} misses the floor's one entry`);
    }
    const offset = addr + this.#delta;
    if ((offset & 3) !== 0 || (offset | 0) !== offset) {
      slots[0] = SLOT_FREE;
      throw new RangeError(`address ${addr} is not aligned to 4`);
    }
    if (this.#trace !== undefined) this.#trace(addr);
    const value = bits === READ ? Atomics.load(this.#u32, offset / 4) : this.#u32[offset / 4];
    slots[0] = SLOT_FREE;
    return value;
  }
}
