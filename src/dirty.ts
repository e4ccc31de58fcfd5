/**
 * The dirty log: one bitmap per client (QEMU's per-client dirty bitmaps, vm-memory's
 * `AtomicBitmap`), shared by every thread that holds the memory, so that a JIT learns which
 * code pages a DMA overwrote and a migration which pages changed.
 *
 * Bits are guest-physical pages, kept per segment of RAM: a run of regions whose pages touch,
 * so that a machine with RAM below 4 GiB and above it does not pay for the hole. A write
 * marks after its bytes are stored, with one atomic read-modify-write per bitmap word (so at
 * most one per page) per client; `collect` takes the bits with an atomic exchange. A write
 * that completed before a `collect` began is therefore reported by that `collect` or a later
 * one, from any thread: the mark is ordered after the store, and the exchange either sees it
 * or comes before it.
 *
 * The mark is a read-modify-write even when the bit is already set. A plain load that sees the
 * bit and skips the store would report the page just as well, but the collector's exchange
 * would then read from some earlier writer's mark, not this one's: it would not synchronize
 * with this write, so a migration copying the page after `collect` could copy it without this
 * write's bytes, and nothing would report the page again.
 *
 * @module
 */
import { DMAError } from './errors.js';
import {
  ADDRESS_LIMIT,
  checkAddress,
  checkLength,
  checkRange,
  invalidArgument,
  isPowerOfTwo,
} from './internal/check.js';

/** How to give a {@link GuestMemory} a dirty log. */
export interface DirtyLogOptions {
  /** The clients, each with a bitmap of its own (`'code'`, `'migration'`, `'display'`). */
  readonly clients: readonly string[];
  /** The page size of the log: a power of two from 64 to 2^30; 4096 by default. */
  readonly pageSize?: number;
}

/** The most clients a log may have: a bound on the marking loop of every write. */
const MAX_CLIENTS = 32;
const MIN_PAGE_SIZE = 64;
const MAX_PAGE_SIZE = 2 ** 30;
/** The most bitmap words a log may have in all (1 GiB of bitmap). */
const MAX_WORDS = 2 ** 28;

/** A log's validated options. */
export interface DirtyLayout {
  readonly clients: readonly string[];
  readonly pageSize: number;
}

/** Reads `dirtyLog` options once: the client list, each client once, and the page size. */
export function readDirtyOptions(options: unknown, what = 'dirtyLog'): DirtyLayout {
  if (typeof options !== 'object' || options === null) {
    invalidArgument(what, 'an object { clients, pageSize? }', options);
  }
  const { clients, pageSize: givenPageSize } = options as Record<string, unknown>;
  if (!Array.isArray(clients)) {
    invalidArgument(`${what}.clients`, `an array of 1 to ${MAX_CLIENTS} names`, clients);
  }
  const count: unknown = clients.length;
  if (typeof count !== 'number' || count < 1 || count > MAX_CLIENTS) {
    invalidArgument(`${what}.clients`, `an array of 1 to ${MAX_CLIENTS} names`, clients);
  }
  const names: string[] = [];
  for (let index = 0; index < count; index++) {
    const name: unknown = (clients as unknown[])[index];
    if (typeof name !== 'string' || name.length === 0) {
      invalidArgument(`${what}.clients[${index}]`, 'a non-empty string', name);
    }
    if (names.includes(name)) {
      invalidArgument(`${what}.clients[${index}]`, 'a name not given before', name);
    }
    names.push(name);
  }
  const pageSize = givenPageSize === undefined ? 4096 : givenPageSize;
  if (
    typeof pageSize !== 'number' ||
    !isPowerOfTwo(pageSize) ||
    pageSize < MIN_PAGE_SIZE ||
    pageSize > MAX_PAGE_SIZE
  ) {
    invalidArgument(`${what}.pageSize`, 'a power of two from 64 to 2^30', pageSize);
  }
  return { clients: Object.freeze(names), pageSize };
}

/** Pages of RAM with bits: pages `first` to `last`, bits from `bit` on. */
interface Segment {
  readonly first: number;
  readonly last: number;
  readonly bit: number;
}

/** The bits of a log over some RAM regions: a segment per run of touching pages. */
function segmentsOf(
  regions: readonly { base: number; size: number }[],
  pageSize: number,
): { segments: Segment[]; bits: number } {
  const runs: { first: number; last: number }[] = [];
  for (const region of regions) {
    const first = Math.floor(region.base / pageSize);
    const last = Math.floor((region.base + region.size - 1) / pageSize);
    const previous = runs[runs.length - 1];
    if (previous !== undefined && first <= previous.last + 1) {
      runs[runs.length - 1] = { first: previous.first, last: Math.max(previous.last, last) };
    } else {
      runs.push({ first, last });
    }
  }
  const segments: Segment[] = [];
  let bits = 0;
  for (const run of runs) {
    segments.push({ first: run.first, last: run.last, bit: bits });
    bits += run.last - run.first + 1;
  }
  return { segments, bits };
}

/** Bits `low` to `high` (0–31, low ≤ high) of a word. */
function maskOf(low: number, high: number): number {
  return ((0xffffffff >>> (31 - (high - low))) << low) | 0;
}

/**
 * Every client's bitmap of one memory, in one `Int32Array` (client after client), on a
 * `SharedArrayBuffer` for shared memory so that workers mark and collect the same bits.
 */
export class DirtyBitmap {
  readonly clients: readonly string[];
  readonly pageSize: number;
  /** Words per client. */
  readonly stride: number;
  readonly words: Int32Array;
  readonly #segments: readonly Segment[];
  readonly #inverse: number;
  readonly #first0: number;
  readonly #last0: number;

  /**
   * @param layout - the validated options.
   * @param regions - the memory's regions, sorted by base.
   * @param buffer - the bitmap words when adopting them from a handle; allocated otherwise.
   * @param shared - allocate the bitmap in a `SharedArrayBuffer`.
   */
  constructor(
    layout: DirtyLayout,
    regions: readonly { base: number; size: number }[],
    buffer: ArrayBufferLike | undefined,
    shared: boolean,
  ) {
    this.clients = layout.clients;
    this.pageSize = layout.pageSize;
    // Exact: the page size is a power of two.
    this.#inverse = 1 / layout.pageSize;
    const { segments, bits } = segmentsOf(regions, layout.pageSize);
    this.#segments = segments;
    this.#first0 = segments[0]?.first ?? 0;
    this.#last0 = segments[0]?.last ?? -1;
    this.stride = Math.ceil(bits / 32);
    const words = this.stride * layout.clients.length;
    if (words > MAX_WORDS) {
      invalidArgument(
        'dirtyLog.pageSize',
        `pages few enough for ${MAX_WORDS * 4} bytes of bitmap`,
        layout.pageSize,
      );
    }
    if (buffer !== undefined) {
      this.words = new Int32Array(buffer, 0, words);
    } else {
      this.words = new Int32Array(
        shared ? new SharedArrayBuffer(words * 4) : new ArrayBuffer(words * 4),
      );
    }
  }

  /** The bytes of bitmap a handle must carry. */
  static byteLength(
    layout: DirtyLayout,
    regions: readonly { base: number; size: number }[],
  ): number {
    return Math.ceil(segmentsOf(regions, layout.pageSize).bits / 32) * 4 * layout.clients.length;
  }

  /**
   * Marks, for every client, the pages of `length` (at least 1) bytes of RAM at `gpa`, after
   * the caller stored them. The common case, a range in the first segment within one word,
   * is one read-modify-write per client.
   */
  mark(gpa: number, length: number): void {
    const first = Math.floor(gpa * this.#inverse);
    const last = Math.floor((gpa + length - 1) * this.#inverse);
    if (first >= this.#first0 && last <= this.#last0) {
      const bit = first - this.#first0;
      const lastBit = bit + (last - first);
      if (bit >>> 5 === lastBit >>> 5) {
        const mask = maskOf(bit & 31, lastBit & 31);
        const words = this.words;
        for (let word = bit >>> 5; word < words.length; word += this.stride) {
          Atomics.or(words, word, mask);
        }
        return;
      }
    }
    for (let client = 0; client < this.clients.length; client++) {
      this.markClient(client, first, last);
    }
  }

  /** Sets the bits of pages `first` to `last` (RAM pages only) in one client's bitmap. */
  markClient(client: number, first: number, last: number): void {
    this.#eachWord(first, last, (word, mask) => {
      Atomics.or(this.words, client * this.stride + word, mask);
    });
  }

  /**
   * Calls `visit(word, mask, page)` for each bitmap word that pages `first` to `last` touch,
   * in ascending order, with the mask of their bits in it and the page of its bit 0. Bounded
   * by the bitmap, however large the range.
   */
  #eachWord(
    first: number,
    last: number,
    visit: (word: number, mask: number, page: number) => void,
  ): void {
    for (const segment of this.#segments) {
      const low = Math.max(first, segment.first);
      const high = Math.min(last, segment.last);
      if (low > high) continue;
      let bit = segment.bit + (low - segment.first);
      const lastBit = segment.bit + (high - segment.first);
      while (bit <= lastBit) {
        const word = bit >>> 5;
        const top = Math.min(lastBit, word * 32 + 31);
        visit(word, maskOf(bit & 31, top & 31), segment.first + (word * 32 - segment.bit));
        bit = top + 1;
      }
    }
  }

  /** The pages `first` to `last` of a range given by a log's caller, checked. */
  pagesOf(gpa: unknown, length: unknown): [number, number] {
    if (gpa === undefined && length === undefined) return [0, ADDRESS_LIMIT];
    checkAddress(gpa, 'gpa');
    checkLength(length);
    checkRange(gpa, length);
    if (length === 0) return [1, 0];
    return [Math.floor(gpa / this.pageSize), Math.floor((gpa + length - 1) / this.pageSize)];
  }

  /** Whether any page from `first` to `last` is dirty for the client. */
  isDirty(client: number, first: number, last: number): boolean {
    let dirty = false;
    this.#eachWord(first, last, (word, mask) => {
      if ((Atomics.load(this.words, client * this.stride + word) & mask) !== 0) dirty = true;
    });
    return dirty;
  }

  /** Takes and clears the client's bits of pages `first` to `last`; their guest addresses, ascending. */
  collect(client: number, first: number, last: number): number[] {
    const found: number[] = [];
    this.#eachWord(first, last, (word, mask, page) => {
      const index = client * this.stride + word;
      const taken =
        mask === -1
          ? Atomics.exchange(this.words, index, 0)
          : Atomics.and(this.words, index, ~mask) & mask;
      for (let bits = taken; bits !== 0; bits &= bits - 1) {
        found.push((page + (31 - Math.clz32(bits & -bits))) * this.pageSize);
      }
    });
    return found;
  }

  /** Clears the client's bits of pages `first` to `last`. */
  clear(client: number, first: number, last: number): void {
    this.#eachWord(first, last, (word, mask) => {
      Atomics.and(this.words, client * this.stride + word, ~mask);
    });
  }
}

/** What a {@link DirtyLog} needs from its memory: marking checks that the range is RAM. */
export interface DirtyOwner {
  readonly bitmap: DirtyBitmap;
  /** Throws `ERR_DMA_UNASSIGNED` unless `length` bytes at `gpa` are all RAM. */
  readonly checkRam: (gpa: number, length: number) => void;
}

let constructing = false;

/**
 * One client's view of a memory's dirty log, from {@link GuestMemory.dirtyLog}. Pages are
 * guest-physical: page `p` covers `[p * pageSize, (p + 1) * pageSize)`, and ranges may
 * include holes, whose pages are never dirty.
 *
 * @example
 * ```ts
 * const memory = new GuestMemory({ size: 1 << 24, dirtyLog: { clients: ['code'] } });
 * const code = memory.dirtyLog('code');
 * // after device DMA, before running translated code:
 * for (const page of code.collect()) jit.invalidatePage(page);
 * ```
 */
export class DirtyLog {
  readonly #owner: DirtyOwner;
  readonly #client: number;

  /** @internal Made by {@link GuestMemory.dirtyLog} only. */
  constructor(owner: DirtyOwner, client: number) {
    if (!constructing) {
      throw new DMAError(
        'ERR_DMA_INVALID_ARGUMENT',
        'a DirtyLog is made by GuestMemory.dirtyLog(client), not with new',
      );
    }
    this.#owner = owner;
    this.#client = client;
  }

  /** The client whose bitmap this is. */
  get client(): string {
    return this.#owner.bitmap.clients[this.#client] as string;
  }

  /** The log's page size in bytes. */
  get pageSize(): number {
    return this.#owner.bitmap.pageSize;
  }

  /**
   * Whether any page of the range is dirty for this client.
   *
   * @param gpa - a guest-physical address.
   * @param length - a byte count; 0 is never dirty.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  isDirty(gpa: number, length: number): boolean {
    const [first, last] = this.#owner.bitmap.pagesOf(gpa, length);
    return this.#owner.bitmap.isDirty(this.#client, first, last);
  }

  /**
   * Takes this client's dirty pages of the range (all of memory without arguments) and
   * clears them, each with an atomic exchange: a write that completed before the call
   * began is in the result, or in that of a later `collect`.
   *
   * @param gpa - where the range starts; give both or neither.
   * @param length - its byte count.
   * @returns the guest addresses of the dirty pages, ascending.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  collect(gpa?: number, length?: number): number[] {
    const [first, last] = this.#owner.bitmap.pagesOf(gpa, length);
    return this.#owner.bitmap.collect(this.#client, first, last);
  }

  /**
   * Marks the range dirty for this client only: the emulator's own writes.
   *
   * @param gpa - a guest-physical address.
   * @param length - a byte count.
   * @throws {@link DMAFault} `ERR_DMA_UNASSIGNED` unless the range is all RAM;
   * {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  mark(gpa: number, length: number): void {
    const [first, last] = this.#owner.bitmap.pagesOf(gpa, length);
    this.#owner.checkRam(gpa, length);
    if (first <= last) this.#owner.bitmap.markClient(this.#client, first, last);
  }

  /**
   * Clears this client's pages of the range (all of memory without arguments).
   *
   * @param gpa - where the range starts; give both or neither.
   * @param length - its byte count.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  clear(gpa?: number, length?: number): void {
    const [first, last] = this.#owner.bitmap.pagesOf(gpa, length);
    this.#owner.bitmap.clear(this.#client, first, last);
  }
}

/** Makes the log of each client of a bitmap. @internal */
export function dirtyLogsOf(owner: DirtyOwner): ReadonlyMap<string, DirtyLog> {
  const logs = new Map<string, DirtyLog>();
  constructing = true;
  try {
    for (const [index, client] of owner.bitmap.clients.entries()) {
      logs.set(client, new DirtyLog(owner, index));
    }
  } finally {
    constructing = false;
  }
  return logs;
}
