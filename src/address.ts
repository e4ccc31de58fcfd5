/**
 * Which bytes a guest range means: the one place where a guest-physical range becomes an
 * offset in the backing store (QEMU's FlatView, vm-memory's region lookup). Regions are laid
 * out in the backing buffer once, adjacent regions merged into spans, so that an access that
 * crosses from one region into an adjacent one is still a single piece.
 *
 * @module
 */
import { DMAError } from './errors.js';
import type { GuestMemoryRegion } from './memory.js';

/** Contiguous guest RAM as laid out in the backing buffer. */
interface Layout {
  readonly regions: readonly GuestMemoryRegion[];
  readonly map: AddressMap;
  readonly byteLength: number;
}

/**
 * Sorts the regions, rejects overlaps, and merges adjacent regions into spans that are
 * contiguous in the backing buffer too, so that an access crossing from one region into an
 * adjacent one is still a single copy. Each span starts at a backing offset congruent to its
 * guest base modulo 8: natural alignment in the guest is then natural alignment for
 * `Atomics`.
 */
export function layOut(given: GuestMemoryRegion[]): Layout {
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
    map: new AddressMap(bases, ends, offsets),
    byteLength,
  };
}

/**
 * The spans of a memory: merged runs of adjacent regions, each with its guest base, guest end
 * and backing offset. The first span is kept in fields of its own: it is the whole memory for
 * the common single-region machine, and the fast path of every access.
 */
export class AddressMap {
  readonly #spanBase: Float64Array;
  readonly #spanEnd: Float64Array;
  readonly #spanOffset: Float64Array;
  readonly #base0: number;
  readonly #end0: number;
  readonly #offset0: number;

  constructor(bases: readonly number[], ends: readonly number[], offsets: readonly number[]) {
    this.#spanBase = Float64Array.from(bases);
    this.#spanEnd = Float64Array.from(ends);
    this.#spanOffset = Float64Array.from(offsets);
    this.#base0 = bases[0] ?? 0;
    this.#end0 = ends[0] ?? 0;
    this.#offset0 = offsets[0] ?? 0;
  }

  /**
   * The backing offset of `length` bytes of RAM at `gpa`, or -1 when the range is not
   * all RAM. Unchecked: callers validate `gpa` and `length` as safe non-negative integers.
   */
  locate(gpa: number, length: number): number {
    if (gpa >= this.#base0 && gpa + length <= this.#end0) {
      return this.#offset0 + (gpa - this.#base0);
    }
    return this.#spanBase.length === 1 ? -1 : this.#locateBeyondFirst(gpa, length);
  }

  /** {@link AddressMap.locate} past the first span, kept out of line to keep it small. */
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
   * Unchecked, as {@link AddressMap.locate}.
   */
  extent(gpa: number): number {
    const bases = this.#spanBase;
    for (let index = 0; index < bases.length; index++) {
      const end = this.#spanEnd[index] as number;
      if (gpa >= (bases[index] as number) && gpa < end) return end - gpa;
    }
    return 0;
  }
}
