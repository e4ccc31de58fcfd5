/**
 * Which bytes a guest range means: the one place where a guest-physical range becomes
 * pieces of the backing store (QEMU's FlatView, vm-memory's region lookup). Every access
 * goes through here: the DMA context's accessors, scatter-gather, `memory.read`/`write`.
 *
 * Regions are merged into spans, runs of regions that are adjacent in guest space and
 * contiguous in the backing, so that an access crossing from one region into such a
 * neighbour is still a single piece. A guest-adjacent region elsewhere in the backing is a
 * span of its own, and an access crossing into it is two pieces.
 *
 * The views of the backing are rebuilt when its buffer changes under them: an unshared
 * `WebAssembly.Memory` that grew (its old `ArrayBuffer` is detached), a resizable
 * `ArrayBuffer` that shrank or grew again, an `ArrayBuffer` transferred away. Only unshared
 * backings can do that: a shared buffer never shrinks or detaches, and a grown one leaves
 * the old views valid, so the views of a shared backing are never checked at all. The views
 * of an unshared one have a fixed length, so a change only makes them shorter: a detached
 * view, or one a resizable buffer no longer covers, has length 0, and the fast path's one
 * extra test is that length. The slow path ({@link FlatView.resolve}) asks the buffer itself
 * with the builtin getters whether it changed, and rebuilds the views first if it did.
 *
 * That test lives in a subclass per kind of unshared backing, {@link DetachableFlatView} and
 * {@link ResizableFlatView}, each with its own `locate`, so that no one site ever reads the
 * length of both kinds of view: V8 11 (Node 20) answers a detached view's old length from
 * optimised code whose feedback also holds views of resizable buffers. The copies
 * (internal/copy.ts) never index guest bytes as elements besides, so that a view that went
 * stale anyway makes them throw rather than lose a byte silently.
 *
 * @module
 */
import { DMAError } from './errors.js';
import { arrayBufferByteLength, sharedByteLength } from './internal/intrinsics.js';

/** One RAM region as laid out: `size` bytes at guest address `base`, at `offset` in the backing. */
export interface PlacedRegion {
  readonly base: number;
  readonly size: number;
  readonly offset: number;
}

/** Where the backing's bytes are now: a fixed buffer, or a `WebAssembly.Memory`'s current one. */
export type CurrentBuffer = () => ArrayBuffer | SharedArrayBuffer;

const EMPTY = new ArrayBuffer(0);

/** The byte length of a buffer now (0 when detached), without calling anything of a caller's. */
function currentLength(buffer: ArrayBufferLike): number {
  const shared = sharedByteLength(buffer);
  return shared >= 0 ? shared : arrayBufferByteLength(buffer);
}

/**
 * Sorts the regions, rejects overlaps in guest space, and merges runs that are adjacent in
 * guest space and contiguous in the backing into spans.
 */
function spansOf(regions: readonly PlacedRegion[]): {
  bases: number[];
  ends: number[];
  offsets: number[];
} {
  const bases: number[] = [];
  const ends: number[] = [];
  const offsets: number[] = [];
  for (const [index, region] of regions.entries()) {
    const previous = regions[index - 1];
    if (previous !== undefined && region.base < previous.base + previous.size) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        `regions overlap: [${previous.base}, ${previous.base + previous.size}) and [${region.base}, ${region.base + region.size})`,
      );
    }
    const last = ends.length - 1;
    const end = ends[last];
    if (
      end === region.base &&
      (offsets[last] as number) + (end - (bases[last] as number)) === region.offset
    ) {
      ends[last] = region.base + region.size;
    } else {
      bases.push(region.base);
      ends.push(region.base + region.size);
      offsets.push(region.offset);
    }
  }
  return { bases, ends, offsets };
}

/**
 * Places regions in a buffer the library allocates: in guest order, each span at an offset
 * congruent to its guest base modulo 8, so that natural alignment in the guest is natural
 * alignment for `Atomics`.
 *
 * @returns the placed regions, sorted by base, and the buffer length they need.
 */
export function place(regions: readonly { base: number; size: number }[]): {
  regions: PlacedRegion[];
  byteLength: number;
} {
  const sorted = [...regions].sort((a, b) => a.base - b.base);
  const placed: PlacedRegion[] = [];
  let byteLength = 0;
  for (const [index, region] of sorted.entries()) {
    const previous = sorted[index - 1];
    if (previous === undefined || previous.base + previous.size !== region.base) {
      byteLength += ((region.base % 8) - (byteLength % 8) + 8) % 8;
    }
    placed.push({ base: region.base, size: region.size, offset: byteLength });
    byteLength += region.size;
  }
  return { regions: placed, byteLength };
}

/**
 * A guest memory's address space: its spans, and the views of the backing the accessors
 * read and write. The views are public fields because the accessors and the copy routines
 * (internal/copy.ts) use them on every access; nothing outside the library ever sees this
 * object.
 */
export class FlatView {
  /** Bytes of the backing from offset 0 to the end of the last span (or less, after a shrink). */
  bytes: Uint8Array;
  /** The same bytes for word loads and stores. */
  view: DataView;
  /** The same bytes as u16, u32 and u64 words, for `Atomics`. */
  u16: Uint16Array;
  u32: Uint32Array;
  u64: BigUint64Array;
  /**
   * The same bytes as signed 32-bit words where the backing is shared, for the copies: a
   * `SharedArrayBuffer` never detaches or shrinks, so an element load in range cannot
   * silently answer `undefined`. Undefined for an unshared backing (see copy.ts).
   */
  words: Int32Array | undefined;
  /** `bytes.buffer`, kept because the getter is a slow builtin call. */
  buffer: ArrayBufferLike;
  /** `bytes.byteOffset`: always 0, as the spans' offsets are offsets in the buffer. */
  readonly byteOffset = 0;

  readonly #spanBase: Float64Array;
  readonly #spanEnd: Float64Array;
  readonly #spanOffset: Float64Array;
  readonly #base0: number;
  readonly #end0: number;
  /** The first span's backing offset minus its guest base. */
  readonly #delta0: number;
  /**
   * Where the first span ends for the fast path: its guest end, or less where the views end
   * sooner (after a shrink). Updated by {@link FlatView.refresh}.
   */
  #fastEnd0 = 0;
  readonly #single: boolean;
  /** Where the last span ends in the backing: how far the views ever need to reach. */
  readonly #limit: number;
  readonly #current: CurrentBuffer;
  /** Whether the backing can change under the views: it is unshared. */
  readonly #mayChange: boolean;
  /** How many bytes the views cover: a plain number, never a view's `length`. */
  #available = 0;
  /** The buffer the views were made on, and its length then. */
  #source: ArrayBufferLike = EMPTY;
  #sourceLength = 0;

  /**
   * @param regions - the placed regions, sorted by base, each already checked to lie
   * inside the backing's current length.
   * @param current - the backing's buffer as it is now.
   * @param mayChange - whether the backing is unshared, and so may detach or shrink.
   */
  constructor(regions: readonly PlacedRegion[], current: CurrentBuffer, mayChange: boolean) {
    const { bases, ends, offsets } = spansOf(regions);
    this.#spanBase = Float64Array.from(bases);
    this.#spanEnd = Float64Array.from(ends);
    this.#spanOffset = Float64Array.from(offsets);
    this.#base0 = bases[0] ?? 0;
    this.#end0 = ends[0] ?? 0;
    this.#delta0 = (offsets[0] ?? 0) - this.#base0;
    this.#single = bases.length === 1;
    let limit = 0;
    for (const region of regions) limit = Math.max(limit, region.offset + region.size);
    this.#limit = limit;
    this.#current = current;
    this.#mayChange = mayChange;
    // Assigned by refresh; repeated here so that every field has its shape from the start.
    this.bytes = new Uint8Array(EMPTY);
    this.view = new DataView(EMPTY);
    this.u16 = new Uint16Array(EMPTY);
    this.u32 = new Uint32Array(EMPTY);
    this.u64 = new BigUint64Array(EMPTY);
    this.words = undefined;
    this.buffer = EMPTY;
    this.refresh();
  }

  /**
   * Rebuilds the views over the backing's current buffer, up to the end of the last span or
   * the buffer's current length, whichever is shorter. Called when a range lies beyond the
   * views: the buffer was detached, replaced or resized since they were made.
   */
  refresh(): void {
    const buffer = this.#current();
    const sourceLength = currentLength(buffer);
    const length = Math.min(sourceLength, this.#limit);
    const usable = length === 0 ? EMPTY : buffer;
    this.bytes = new Uint8Array(usable, 0, length);
    this.view = new DataView(usable, 0, length);
    this.u16 = new Uint16Array(usable, 0, Math.floor(length / 2));
    this.u32 = new Uint32Array(usable, 0, Math.floor(length / 4));
    this.u64 = new BigUint64Array(usable, 0, Math.floor(length / 8));
    this.words = this.#mayChange ? undefined : new Int32Array(usable, 0, Math.floor(length / 4));
    this.buffer = usable;
    this.#available = length;
    this.#fastEnd0 = Math.min(this.#end0, length - this.#delta0);
    this.#source = buffer;
    this.#sourceLength = sourceLength;
  }

  /**
   * Whether the backing's buffer is no longer what the views were made on: replaced (a
   * wasm `grow`), detached, or resized. Asks the buffer with the builtin getters: a few
   * nanoseconds, so only the slow path and a failed fast path ask.
   */
  stale(): boolean {
    return this.#current() !== this.#source || currentLength(this.#source) !== this.#sourceLength;
  }

  /** Rebuilds the views if the backing changed under them; free for shared backings. */
  refreshIfStale(): void {
    if (this.#mayChange && this.stale()) this.refresh();
  }

  /**
   * The first span as `[base, end, delta]` (guest base, guest end within the views, backing
   * offset minus guest base) when the views can never change (a shared backing: it never
   * detaches or shrinks, and they are never rebuilt), else undefined. A DMA context resolves
   * it once into its own fields, so that its fast paths ask nothing of this object.
   */
  fixedSpan(): readonly [number, number, number] | undefined {
    return this.#mayChange ? undefined : [this.#base0, this.#fastEnd0, this.#delta0];
  }

  /**
   * The backing offset of `length` (at least 1) bytes of RAM at `gpa` when they are one
   * piece inside the views, or -1 (a hole, two pieces, or bytes a shrunk backing no longer
   * has: the slow path, {@link FlatView.resolve}, tells them apart). Unchecked: callers validate `gpa` and
   * `length` as safe non-negative integers.
   */
  locate(gpa: number, length: number): number {
    // One test for "in the first span and inside the views": #fastEnd0 is the nearer end.
    if (gpa >= this.#base0 && gpa + length <= this.#fastEnd0) return gpa + this.#delta0;
    return this.#single ? -1 : this.#locateBeyondFirst(gpa, length);
  }

  /** {@link FlatView.locate} past the first span, kept out of line to keep it small. */
  #locateBeyondFirst(gpa: number, length: number): number {
    const index = this.#spanAt(gpa);
    if (index < 0 || gpa + length > (this.#spanEnd[index] as number)) return -1;
    const offset = (this.#spanOffset[index] as number) + (gpa - (this.#spanBase[index] as number));
    return offset + length <= this.#available ? offset : -1;
  }

  /** The span holding `gpa`, or -1 in a hole. */
  #spanAt(gpa: number): number {
    const bases = this.#spanBase;
    for (let index = 0; index < bases.length; index++) {
      if (gpa >= (bases[index] as number) && gpa < (this.#spanEnd[index] as number)) return index;
    }
    return -1;
  }

  /**
   * Resolves `length` bytes of RAM at `gpa` into backing pieces, pushing
   * `offset, length, gpa` for each onto `out`: one piece per span the range crosses. Returns
   * false, having pushed nothing, when the range touches a hole or bytes the backing no
   * longer has. Rebuilds the views first if the backing changed under them, so that the
   * pieces are good for the views until the caller's next call into code not its own.
   * Unchecked, as {@link FlatView.locate}.
   */
  resolve(gpa: number, length: number, out: number[]): boolean {
    if (length === 0) return true;
    this.refreshIfStale();
    const first = out.length;
    if (this.#resolveIn(gpa, length, out)) return true;
    out.length = first;
    return false;
  }

  #resolveIn(gpa: number, length: number, out: number[]): boolean {
    const available = this.#available;
    let at = gpa;
    let left = length;
    // Each round consumes one span: at most as many rounds as there are spans.
    for (let rounds = 0; left > 0 && rounds < this.#spanBase.length; rounds++) {
      const index = this.#spanAt(at);
      if (index < 0) return false;
      const run = Math.min(left, (this.#spanEnd[index] as number) - at);
      const offset = (this.#spanOffset[index] as number) + (at - (this.#spanBase[index] as number));
      if (offset + run > available) return false;
      out.push(offset, run, at);
      at += run;
      left -= run;
    }
    return left === 0;
  }

  /**
   * How many bytes from `gpa` are one piece of RAM inside the current views (0 in a hole):
   * what `map` can hand out as one view. Rebuilds stale views first. Unchecked.
   */
  extent(gpa: number): number {
    this.refreshIfStale();
    const index = this.#spanAt(gpa);
    if (index < 0) return 0;
    const offset = (this.#spanOffset[index] as number) + (gpa - (this.#spanBase[index] as number));
    const remaining = (this.#spanEnd[index] as number) - gpa;
    return Math.max(0, Math.min(remaining, this.#available - offset));
  }
}

/**
 * The flat view of an unshared backing that can be detached under it: an `ArrayBuffer`
 * (transferred away), an unshared `WebAssembly.Memory` (every `grow` detaches its buffer).
 */
export class DetachableFlatView extends FlatView {
  override locate(gpa: number, length: number): number {
    // A detached view has length 0: the slow path then rebuilds the views and looks again.
    return this.bytes.length === 0 ? -1 : super.locate(gpa, length);
  }
}

/**
 * The flat view of a resizable `ArrayBuffer`, whose fixed-length views go out of bounds
 * (length 0) when it shrinks below them. Apart from {@link DetachableFlatView} so that its
 * length test never sees the other kind of view (see the module's notes on V8).
 */
export class ResizableFlatView extends FlatView {
  override locate(gpa: number, length: number): number {
    return this.bytes.length === 0 ? -1 : super.locate(gpa, length);
  }
}
