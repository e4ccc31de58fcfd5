/**
 * Guest memories of every kind for the suites that run against all of them (SPEC §4, §4.1):
 * memory the library allocates, and memory adopted from a backing the test owns (a
 * `SharedArrayBuffer`, an `ArrayBuffer`, a shared or an unshared `WebAssembly.Memory`), with
 * the regions at non-zero offsets, out of guest order, and with canary bytes before, between
 * and after them that no access may ever change. The test places the regions itself, so that
 * it knows where every guest byte lives without asking the library.
 */
import { GuestMemory, type GuestMemoryOptions } from '../../src/index.js';

/** The `WebAssembly.Memory` surface the tests use (the TypeScript lib in use has no type for it). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}

/** The `WebAssembly.Memory` constructor, typed for the tests. */
export const WasmMemoryCtor = (
  globalThis as unknown as {
    WebAssembly: {
      Memory: (new (descriptor: {
        initial: number;
        maximum?: number;
        shared?: boolean;
      }) => WasmMemory) & { readonly prototype: object };
    };
  }
).WebAssembly.Memory;

/** One wasm page. */
export const WASM_PAGE = 65536;

/** What a memory's bytes live in: allocated by the library, or adopted from the test. */
export type MemoryKind =
  | 'allocated'
  | 'SharedArrayBuffer'
  | 'ArrayBuffer'
  | 'shared WebAssembly.Memory'
  | 'unshared WebAssembly.Memory';

/** The backings a memory may adopt. */
export const ADOPTED_KINDS = [
  'SharedArrayBuffer',
  'ArrayBuffer',
  'shared WebAssembly.Memory',
  'unshared WebAssembly.Memory',
] as const satisfies readonly MemoryKind[];

/** Every kind: allocated first, then the adopted ones. */
export const MEMORY_KINDS: readonly MemoryKind[] = ['allocated', ...ADOPTED_KINDS];

/** The kind with its article, for test names: "an ArrayBuffer", "a shared WebAssembly.Memory". */
export function kindLabel(kind: MemoryKind): string {
  if (kind === 'allocated') return 'allocated memory';
  return `${/^[AEIOU]|^unshared/.test(kind) ? 'an' : 'a'} ${kind}`;
}

/** Whether an adopted memory of this kind is shared (follows from the backing, §4.1). */
export function isSharedBacking(kind: MemoryKind): boolean {
  return kind === 'SharedArrayBuffer' || kind === 'shared WebAssembly.Memory';
}

export type Backing = SharedArrayBuffer | ArrayBuffer | WasmMemory;

/** A RAM region as the test gives it. */
export interface Region {
  readonly base: number;
  readonly size: number;
}

/** A RAM region with its offset in the backing. */
export interface PlacedRegion extends Region {
  readonly offset: number;
}

/** How the test lays regions out in a backing it owns. */
export interface Layout {
  /** Canary bytes before the first region (at least 16; the fence may live there). */
  readonly lead?: number;
  /** Canary bytes at least between two regions (before alignment). */
  readonly gap?: number;
  /** Canary bytes at least after the last region. */
  readonly tail?: number;
  /**
   * The order of the regions in the backing, as indices into the regions sorted by base;
   * by default the reverse of guest order, so that no offset follows from a base.
   */
  readonly order?: readonly number[];
  /**
   * Bases of regions placed right after the region before them in `order` (no canary
   * between): with a guest-adjacent predecessor, the two are one piece of the backing.
   */
  readonly joined?: readonly number[];
}

/**
 * Places `regions` in a backing: in `layout.order`, each after a canary gap unless joined,
 * at an offset congruent to its base modulo 8 (§4.1).
 *
 * @returns the placed regions sorted by base, and the bytes used up to the end of the tail.
 */
export function placeRegions(
  regions: readonly Region[],
  layout: Layout = {},
): { placed: PlacedRegion[]; span: number } {
  const sorted = [...regions].sort((a, b) => a.base - b.base);
  const order = layout.order ?? sorted.map((_, index) => sorted.length - 1 - index);
  const gap = layout.gap ?? 24;
  const offsets = new Map<number, number>();
  let cursor = layout.lead ?? 40;
  let first = true;
  for (const index of order) {
    const region = sorted[index];
    if (region === undefined) throw new Error(`layout order names region ${index}`);
    if (!first && !(layout.joined ?? []).includes(region.base)) cursor += gap;
    first = false;
    cursor += (((region.base - cursor) % 8) + 8) % 8;
    offsets.set(region.base, cursor);
    cursor += region.size;
  }
  return {
    placed: sorted.map((region) => ({ ...region, offset: offsets.get(region.base) as number })),
    span: cursor + (layout.tail ?? 40),
  };
}

/** A memory made for a test, with everything the test knows about where its bytes are. */
export interface MadeMemory {
  readonly kind: MemoryKind;
  readonly memory: GuestMemory;
  readonly shared: boolean;
  /** The backing as given to the constructor; undefined for allocated memory. */
  readonly backing: Backing | undefined;
  /** Every region with its backing offset, sorted by base. */
  readonly placed: readonly PlacedRegion[];
  /** The fence word the test placed in the backing, if any. */
  readonly fence:
    { readonly buffer: SharedArrayBuffer | WasmMemory; readonly byteOffset: number } | undefined;
  /** Bytes of the backing from 0 that hold every region and canary the per-access checks look at. */
  readonly span: number;
  /**
   * Ranges `[start, end)` of the backing outside every region and the fence word: bytes no
   * access may change. The last one runs to the end of the backing (for a wasm memory, far
   * beyond `span`).
   */
  readonly canaries: readonly (readonly [number, number])[];
  /**
   * The parts of {@link MadeMemory.canaries} within {@link NEAR} bytes of a region's first or
   * last byte: where an access that overshoots its piece would land. Cheap enough to check
   * after every access; the rest is for a check at the end of a run.
   */
  readonly nearCanaries: readonly (readonly [number, number])[];
  /** A view of every byte of the backing as it is now. */
  bytes(): Uint8Array;
  /** The backing offset of guest byte `gpa`, from the test's own layout, or -1 in a hole. */
  offsetOf(gpa: number): number;
  /**
   * How many bytes from `gpa` are one piece of the backing (0 in a hole): guest-adjacent
   * regions count only when the second starts where the first ends in the backing.
   */
  pieceExtent(gpa: number): number;
}

/** How far beyond a region's edges the per-access canary check looks. */
export const NEAR = 64;

/** Options for {@link makeMemory}. */
export interface MakeOptions {
  readonly barrierPolicy?: 'strict' | 'tso' | 'auto';
  /** For allocated memory: the `shared` option. For adopted memory: pass the matching `shared`. */
  readonly shared?: boolean;
  /** For adopted memory: how to place the regions. */
  readonly layout?: Layout;
  /** For a shared backing: place the fence word in it (the default), or let the library make one. */
  readonly fenceInBacking?: boolean;
  /** Passed through. */
  readonly dirtyLog?: { readonly clients: readonly string[]; readonly pageSize?: number };
  /** Regions of allocated memory: as given (default), or split as for adopted memory. */
  readonly allocatedRegions?: readonly Region[];
}

/** Makes a backing of `kind` of at least `byteLength` bytes. */
export function makeBacking(kind: Exclude<MemoryKind, 'allocated'>, byteLength: number): Backing {
  const pages = Math.max(1, Math.ceil(byteLength / WASM_PAGE));
  switch (kind) {
    case 'SharedArrayBuffer':
      return new SharedArrayBuffer(byteLength);
    case 'ArrayBuffer':
      return new ArrayBuffer(byteLength);
    case 'shared WebAssembly.Memory':
      return new WasmMemoryCtor({ initial: pages, maximum: pages + 1, shared: true });
    case 'unshared WebAssembly.Memory':
      return new WasmMemoryCtor({ initial: pages });
  }
}

function bufferOf(backing: Backing): ArrayBuffer | SharedArrayBuffer {
  return backing instanceof ArrayBuffer || backing instanceof SharedArrayBuffer
    ? backing
    : backing.buffer;
}

/** The byte ranges of `[0, length)` outside `taken` (sorted, disjoint ranges). */
function complement(
  taken: readonly (readonly [number, number])[],
  length: number,
): [number, number][] {
  const free: [number, number][] = [];
  let cursor = 0;
  for (const [start, end] of [...taken].sort((a, b) => a[0] - b[0])) {
    if (start > cursor) free.push([cursor, start]);
    cursor = Math.max(cursor, end);
  }
  if (cursor < length) free.push([cursor, length]);
  return free;
}

/**
 * Makes a memory of `kind` with `regions`. Adopted memory gets its regions at the offsets of
 * `options.layout`; a shared backing gets its fence word in the first canary gap after a
 * region (or in the lead). Allocated memory reports its offsets through `memory.regions`.
 */
export function makeMemory(
  kind: MemoryKind,
  regions: readonly Region[],
  options: MakeOptions = {},
): MadeMemory {
  let memory: GuestMemory;
  let backing: Backing | undefined;
  let placed: readonly PlacedRegion[];
  let span: number;
  let fence: MadeMemory['fence'];
  if (kind === 'allocated') {
    memory = new GuestMemory({
      regions: options.allocatedRegions ?? regions,
      ...(options.barrierPolicy === undefined ? {} : { barrierPolicy: options.barrierPolicy }),
      ...(options.shared === undefined ? {} : { shared: options.shared }),
      ...(options.dirtyLog === undefined ? {} : { dirtyLog: options.dirtyLog }),
    });
    placed = memory.regions.map(({ base, size, offset }) => ({ base, size, offset }));
    span = memory.buffer.byteLength;
  } else {
    const layout = placeRegions(regions, options.layout);
    placed = layout.placed;
    span = layout.span;
    backing = makeBacking(kind, span);
    const shared = isSharedBacking(kind);
    if (shared && options.fenceInBacking !== false) {
      fence = {
        buffer: backing as SharedArrayBuffer | WasmMemory,
        byteOffset: fenceOffset(placed),
      };
    }
    memory = new GuestMemory({
      backing,
      regions: placed,
      ...(options.barrierPolicy === undefined ? {} : { barrierPolicy: options.barrierPolicy }),
      ...(options.shared === undefined ? {} : { shared }),
      ...(fence === undefined ? {} : { fence }),
      ...(options.dirtyLog === undefined ? {} : { dirtyLog: options.dirtyLog }),
    } satisfies GuestMemoryOptions);
  }
  const taken: [number, number][] = placed.map(({ size, offset }) => [offset, offset + size]);
  if (fence !== undefined) taken.push([fence.byteOffset, fence.byteOffset + 4]);
  const fixedBacking = backing;
  const bytes =
    fixedBacking === undefined
      ? (): Uint8Array => new Uint8Array(memory.buffer)
      : (): Uint8Array => new Uint8Array(bufferOf(fixedBacking));
  const canaries = complement(taken, bytes().length);
  const nearCanaries = canaries.flatMap(([start, end]) =>
    complement(
      complement(
        placed.flatMap(({ offset, size }) => [
          [offset - NEAR, offset] as const,
          [offset + size, offset + size + NEAR] as const,
        ]),
        end,
      ),
      end,
    ).flatMap(([nearStart, nearEnd]) =>
      Math.max(start, nearStart) < Math.min(end, nearEnd)
        ? [[Math.max(start, nearStart), Math.min(end, nearEnd)] as const]
        : [],
    ),
  );
  const regionAt = (gpa: number): PlacedRegion | undefined => {
    for (const region of placed) {
      if (gpa >= region.base && gpa < region.base + region.size) return region;
    }
    return undefined;
  };
  return {
    kind,
    memory,
    shared: kind === 'allocated' ? memory.shared : isSharedBacking(kind),
    backing,
    placed,
    fence,
    span,
    canaries,
    nearCanaries,
    bytes,
    offsetOf: (gpa) => {
      const region = regionAt(gpa);
      return region === undefined ? -1 : region.offset + (gpa - region.base);
    },
    pieceExtent: (gpa) => {
      let region = regionAt(gpa);
      if (region === undefined) return 0;
      const start = region.offset + (gpa - region.base);
      for (;;) {
        const guestEnd: number = region.base + region.size;
        const next: PlacedRegion | undefined = regionAt(guestEnd);
        if (next?.base !== guestEnd || next.offset !== region.offset + region.size) break;
        region = next;
      }
      return region.offset + region.size - start;
    },
  };
}

/** A 4-aligned word outside every region: in the first gap of at least 12 bytes after one. */
function fenceOffset(placed: readonly PlacedRegion[]): number {
  const byOffset = [...placed].sort((a, b) => a.offset - b.offset);
  for (const [index, region] of byOffset.entries()) {
    const end = region.offset + region.size;
    const next = byOffset[index + 1]?.offset ?? Infinity;
    const word = Math.ceil((end + 4) / 4) * 4;
    if (word + 4 <= next) return word;
  }
  throw new Error('no room for the fence word');
}

/** A non-zero byte for canary offset `offset`: never what an access of zeros would leave. */
export function canaryByte(offset: number): number {
  return ((offset * 151 + 0x5a) % 255) + 1;
}

/** Fills every canary byte of `made` with {@link canaryByte}. */
export function fillCanaries(made: MadeMemory): void {
  const bytes = made.bytes();
  for (const [start, end] of made.canaries) {
    for (let offset = start; offset < end; offset++) bytes[offset] = canaryByte(offset);
  }
}

/**
 * The first canary byte that is not {@link canaryByte} any more, as a message, or undefined.
 * With `near`, only {@link MadeMemory.nearCanaries}.
 */
export function damagedCanary(made: MadeMemory, near = false): string | undefined {
  const bytes = made.bytes();
  for (const [start, end] of near ? made.nearCanaries : made.canaries) {
    for (let offset = start; offset < end; offset++) {
      if (bytes[offset] !== canaryByte(offset)) {
        return `canary byte at backing offset ${offset} (outside every region) is ${bytes[offset]}, was ${canaryByte(offset)}`;
      }
    }
  }
  return undefined;
}

/** A view of `bytes` as a Node `Buffer` (no copy), for native comparison. */
function asBuffer(bytes: Uint8Array, start: number, end: number): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, Math.max(0, end - start));
}

/**
 * Whether two byte arrays of the same length are equal outside `skip` ([start, end)):
 * a native comparison, fast enough for every byte of a wasm memory after every access.
 */
export function sameOutside(
  actual: Uint8Array,
  expected: Uint8Array,
  skip: readonly [number, number] = [0, 0],
): boolean {
  if (actual.length !== expected.length) return false;
  const [from, to] = skip[1] > skip[0] ? skip : [actual.length, actual.length];
  return (
    asBuffer(actual, 0, from).equals(asBuffer(expected, 0, from)) &&
    asBuffer(actual, to, actual.length).equals(asBuffer(expected, to, expected.length))
  );
}

/** Non-zero pseudo-random bytes, made once: {@link fillFrom} copies from them. */
const POOL = (() => {
  const pool = new Uint8Array(2 * WASM_PAGE);
  let state = 0x2545f491;
  for (let index = 0; index < pool.length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    pool[index] = ((state >>> 0) % 255) + 1;
  }
  return pool;
})();

/**
 * Fills `bytes` with non-zero pseudo-random bytes that depend on `seed`, by copying (a JS
 * loop over a 64 KiB wasm page per test would cost more than the test).
 */
export function fillFrom(bytes: Uint8Array, seed: number): void {
  let at = 0;
  let from = (((seed * 2654435761) >>> 0) % WASM_PAGE) | 0;
  while (at < bytes.length) {
    const chunk = Math.min(bytes.length - at, POOL.length - from);
    bytes.set(POOL.subarray(from, from + chunk), at);
    at += chunk;
    from = 0;
  }
}
