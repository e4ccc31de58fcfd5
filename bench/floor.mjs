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
