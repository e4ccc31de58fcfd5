/**
 * Model-based property test: random sequences of DMA operations, valid and invalid, run
 * against a GuestMemory and against a plain reference model of memory written here from
 * the spec alone (its own hole and bounds logic, its own byte order encoding). After every
 * operation the two must agree on the result, on the error code, on the caller's buffer,
 * on every byte of guest memory, on every live mapped view, and on the traced access.
 *
 * The same sequences run on memory the library allocates and on memory adopted from a
 * backing of every kind (SPEC §4.1), with the regions at offsets the test chose: out of
 * guest order, guest-adjacent regions apart in the backing (an access crossing them is two
 * pieces, a map stops at the first), and canary bytes before, between and after the regions
 * that no access, successful or failed, may change.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DMAContext,
  DMAError,
  GuestMemory,
  type DMAAttributesLike,
  type DMATraceEvent,
} from '../src/index.js';
import {
  ADOPTED_KINDS,
  damagedCanary,
  fillCanaries,
  isSharedBacking,
  kindLabel,
  makeMemory,
  type Layout,
  type MadeMemory,
  type MemoryKind,
} from './support/memories.js';

// The attribute bits as the spec (§2) gives them, written here rather than imported so
// that the model does not share a constant with the code under test.
const R = 0b001;
const W = 0b010;
const X = 0b100;
const LIMIT = 2n ** 53n;

type Code = 'ERR_DMA_INVALID_ATTRIBUTES' | 'ERR_DMA_INVALID_ARGUMENT' | 'ERR_DMA_UNASSIGNED';

/**
 * The regions, given unsorted: 0x1003 (odd base) runs straight into 0x1040, and 0x1085
 * into 0x10b2, so accesses may cross from one into the next; 5 bytes of hole lie between
 * 0x1080 and 0x1085, a large hole before 0x2000, and a single-byte hole at 0x2020.
 */
const REGIONS = [
  { base: 0x2021, size: 7 },
  { base: 0x1040, size: 64 },
  { base: 0x1003, size: 61 },
  { base: 0x10b2, size: 19 },
  { base: 0x1085, size: 45 },
  { base: 0x2000, size: 32 },
] as const;
const SORTED = [...REGIONS].sort((a, b) => a.base - b.base);
const TOTAL = SORTED.reduce((sum, region) => sum + region.size, 0);
const ANCHORS = [
  0,
  0x1000,
  ...SORTED.flatMap((region) => [region.base, region.base + region.size]),
];

/** Plain reference memory: one array of numbers per region, and byte-by-byte bounds. */
class ReferenceMemory {
  readonly regions = SORTED.map((region) => ({
    base: region.base,
    end: region.base + region.size,
    bytes: new Array<number>(region.size).fill(0),
  }));

  regionOf(addr: number): { base: number; bytes: number[] } | undefined {
    return this.regions.find((region) => addr >= region.base && addr < region.end);
  }

  /** Every byte of [addr, addr + length) is in some region. Stops at the first hole byte. */
  isRam(addr: number, length: number): boolean {
    for (let index = 0; index < length; index++) {
      if (this.regionOf(addr + index) === undefined) return false;
    }
    return true;
  }

  /** How many bytes from addr are RAM without a hole byte in between. */
  contiguous(addr: number): number {
    let count = 0;
    while (this.regionOf(addr + count) !== undefined) count++;
    return count;
  }

  /** How many distinct regions [addr, addr + length) touches (RAM only). */
  regionsTouched(addr: number, length: number): number {
    const seen = new Set<number>();
    for (let index = 0; index < length; index++) {
      const region = this.regionOf(addr + index);
      if (region !== undefined) seen.add(region.base);
    }
    return seen.size;
  }

  get(addr: number): number {
    const region = this.regionOf(addr);
    if (region === undefined) throw new Error(`model: read of hole byte 0x${addr.toString(16)}`);
    return region.bytes[addr - region.base] as number;
  }

  put(addr: number, value: number): void {
    const region = this.regionOf(addr);
    if (region === undefined) throw new Error(`model: write of hole byte 0x${addr.toString(16)}`);
    region.bytes[addr - region.base] = value;
  }

  slice(addr: number, length: number): number[] {
    return Array.from({ length }, (_, index) => this.get(addr + index));
  }

  store(addr: number, bytes: ArrayLike<number>): void {
    for (let index = 0; index < bytes.length; index++)
      this.put(addr + index, bytes[index] as number);
  }
}

/** The spec's address rule: a non-negative safe integer. */
function isAddress(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The spec's range rule, computed exactly with bigints: addr + length must not pass 2^53. */
function rangeFits(addr: number, length: number): boolean {
  return BigInt(addr) + BigInt(length) <= LIMIT;
}

/** The spec's attribute rule (§2): an integer 0..7, or an object of boolean read/write/relaxed. */
function attributeBits(like: unknown): number | undefined {
  if (typeof like === 'number')
    return Number.isInteger(like) && like >= 0 && like <= 7 ? like : undefined;
  if (typeof like !== 'object' || like === null || Array.isArray(like)) return undefined;
  let bits = 0;
  for (const [key, value] of Object.entries(like)) {
    if (typeof value !== 'boolean') return undefined;
    if (key === 'read') bits |= value ? R : 0;
    else if (key === 'write') bits |= value ? W : 0;
    else if (key === 'relaxed') bits |= value ? X : 0;
    else return undefined;
  }
  return bits;
}

/** Little-endian bytes of an unsigned integer, by division (no typed arrays, no DataView). */
function encodeNumber(value: number, width: number, little: boolean): number[] {
  const bytes: number[] = [];
  let rest = value;
  for (let index = 0; index < width; index++) {
    bytes.push(rest % 256);
    rest = Math.floor(rest / 256);
  }
  return little ? bytes : bytes.reverse();
}

function decodeNumber(bytes: readonly number[], little: boolean): number {
  const ordered = little ? [...bytes].reverse() : bytes;
  return ordered.reduce((value, byte) => value * 256 + byte, 0);
}

function encodeBigint(value: bigint, little: boolean): number[] {
  const bytes: number[] = [];
  for (let index = 0n; index < 8n; index++) bytes.push(Number((value >> (8n * index)) & 0xffn));
  return little ? bytes : bytes.reverse();
}

function decodeBigint(bytes: readonly number[], little: boolean): bigint {
  const ordered = little ? [...bytes].reverse() : bytes;
  return ordered.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
}

// ---------------------------------------------------------------------------------------
// Operations

type Width = 1 | 2 | 4 | 8;

type BufferSpec =
  | { readonly kind: 'plain' | 'offset' | 'node' | 'shared'; readonly bytes: Uint8Array }
  | {
      readonly kind: 'alias';
      readonly pick: number;
      readonly offset: number;
      readonly length: number;
      /** When set, the access goes to this distance from the view's own address, so they overlap. */
      readonly near: number | null;
    }
  | { readonly kind: 'bad'; readonly make: number };

type UnmapTarget =
  | { readonly kind: 'live' | 'stale' | 'subarray'; readonly pick: number }
  | { readonly kind: 'foreign' }
  | { readonly kind: 'bad'; readonly make: number };

/** `valid` and `map`: an address, a length and attributes naming any direction. */
interface RangeOperation {
  readonly op: 'valid' | 'map';
  readonly addr: unknown;
  readonly length: unknown;
  readonly attrs: unknown;
}

type Operation =
  | {
      readonly op: 'rw' | 'read' | 'write';
      readonly addr: unknown;
      readonly buf: BufferSpec;
      readonly attrs: unknown;
    }
  | { readonly op: 'cpuRead' | 'cpuWrite'; readonly addr: unknown; readonly buf: BufferSpec }
  | {
      readonly op: 'set';
      readonly addr: unknown;
      readonly value: unknown;
      readonly length: unknown;
      readonly attrs: unknown;
    }
  | RangeOperation
  | {
      readonly op: 'viewWrite';
      readonly pick: number;
      readonly offset: number;
      readonly bytes: Uint8Array;
    }
  | { readonly op: 'unmap'; readonly target: UnmapTarget; readonly accessed: unknown }
  | {
      readonly op: 'load';
      readonly width: Width;
      readonly little: boolean;
      readonly addr: unknown;
      readonly attrs: unknown;
    }
  | {
      readonly op: 'store';
      readonly width: Width;
      readonly little: boolean;
      readonly addr: unknown;
      readonly value: unknown;
      readonly attrs: unknown;
    };

/** Things that are not a Uint8Array, made fresh for each use. */
const BAD_BUFFERS: readonly (() => unknown)[] = [
  () => Uint16Array.of(1, 2),
  () => Int8Array.of(1, 2, 3),
  () => Uint8ClampedArray.of(1, 2, 3),
  () => new ArrayBuffer(4),
  () => new DataView(new ArrayBuffer(4)),
  () => [1, 2, 3],
  () => '1234',
  () => null,
  () => undefined,
  () => 4,
  () => ({ length: 4, 0: 1 }),
];

const BAD_NUMBERS: readonly unknown[] = [
  -1,
  -4096,
  1.5,
  0x1003 + 0.5,
  Number.NaN,
  Infinity,
  -Infinity,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 64,
  '4099',
  4099n,
  null,
  true,
  {},
  [4099],
];

const addressArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...ANCHORS), fc.integer({ min: -10, max: 10 }))
      .map(([anchor, delta]) => Math.max(0, anchor + delta)),
  },
  {
    weight: 8,
    arbitrary: fc
      .tuple(fc.constantFrom(...SORTED), fc.nat())
      .map(([region, offset]) => region.base + (offset % region.size)),
  },
  { weight: 2, arbitrary: fc.integer({ min: 0xff8, max: 0x2030 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(2 ** 53 - 1, 2 ** 53 - 2, 2 ** 53 - 8, 2 ** 40, 0xffffffff),
  },
  { weight: 1, arbitrary: fc.constantFrom(...BAD_NUMBERS, undefined) },
);

const lengthArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 24 }) },
  { weight: 3, arbitrary: fc.integer({ min: 25, max: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom(2 ** 32, 2 ** 40, 2 ** 53 - 1, 2 ** 53 - 0x1000) },
  { weight: 1, arbitrary: fc.constantFrom(...BAD_NUMBERS, undefined) },
);

const BAD_ATTRIBUTES: readonly unknown[] = [
  8,
  15,
  -1,
  1.5,
  Number.NaN,
  Infinity,
  2 ** 32 + 1,
  '1',
  'READ',
  1n,
  null,
  true,
  [],
  [1],
  { relaxd: true },
  { read: 1 },
  { read: 'true' },
  { Read: true },
  { read: true, extra: false },
  { write: null },
];

/**
 * Attributes for one accessor: often one it accepts (so that most operations get as far as
 * the memory), else any number 0..7 or flag object (which may name the wrong direction, or
 * none), else something that is not attributes at all.
 */
function attributesArb(accepted: readonly unknown[]): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 10, arbitrary: fc.constantFrom(...accepted) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 7 }) },
    {
      weight: 2,
      arbitrary: fc.record(
        { read: fc.boolean(), write: fc.boolean(), relaxed: fc.boolean() },
        { requiredKeys: [] },
      ),
    },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.constantFrom(...BAD_ATTRIBUTES) },
  );
}

const readAttributesArb = attributesArb([
  undefined,
  R,
  X,
  R | X,
  0,
  {},
  { relaxed: true },
  { read: true },
]);
const writeAttributesArb = attributesArb([
  undefined,
  W,
  X,
  W | X,
  0,
  {},
  { relaxed: true },
  { write: true },
]);
const rwAttributesArb = attributesArb([
  R,
  W,
  R | X,
  W | X,
  { read: true },
  { write: true, relaxed: true },
]);
const anyDirectionAttributesArb = attributesArb([
  R,
  W,
  R | W,
  R | X,
  W | X,
  R | W | X,
  { read: true, write: true },
  { write: true },
]);

const bufferArb: fc.Arbitrary<BufferSpec> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constantFrom(
        'plain' as const,
        'offset' as const,
        'node' as const,
        'shared' as const,
      ),
      bytes: fc.oneof(
        { weight: 5, arbitrary: fc.uint8Array({ maxLength: 24 }) },
        { weight: 1, arbitrary: fc.uint8Array({ minLength: 25, maxLength: 90 }) },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('alias' as const),
      pick: fc.nat(),
      offset: fc.nat(),
      length: fc.nat(),
      near: fc.option(fc.integer({ min: -8, max: 8 }), { freq: 2 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('bad' as const),
      make: fc.nat({ max: BAD_BUFFERS.length - 1 }),
    }),
  },
);

const LIMITS = { 1: 0xff, 2: 0xffff, 4: 0xffffffff } as const;

function numberValueArb(width: 1 | 2 | 4): fc.Arbitrary<unknown> {
  const max = LIMITS[width];
  return fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max }) },
    { weight: 2, arbitrary: fc.constantFrom(0, max, 0x80, max >>> 1, 1) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        max + 1,
        -1,
        0.5,
        Number.NaN,
        Infinity,
        '1',
        1n,
        null,
        undefined,
        true,
      ),
    },
  );
}

const bigintValueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) },
  { weight: 2, arbitrary: fc.constantFrom(0n, 2n ** 64n - 1n, 2n ** 63n, 1n) },
  { weight: 1, arbitrary: fc.constantFrom(2n ** 64n, -1n, 5, '5', null, undefined, 1.5) },
);

const widthArb = fc.constantFrom<Width>(1, 2, 4, 8);

const fixedArb = fc.tuple(widthArb, fc.boolean()).chain(([width, little]) =>
  fc.oneof(
    fc.record({
      op: fc.constant('load' as const),
      width: fc.constant(width),
      little: fc.constant(little),
      addr: addressArb,
      attrs: readAttributesArb,
    }),
    fc.record({
      op: fc.constant('store' as const),
      width: fc.constant(width),
      little: fc.constant(little),
      addr: addressArb,
      value: width === 8 ? bigintValueArb : numberValueArb(width),
      attrs: writeAttributesArb,
    }),
  ),
);

const unmapTargetArb: fc.Arbitrary<UnmapTarget> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('live' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('stale' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('subarray' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('foreign' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('bad' as const),
      make: fc.nat({ max: BAD_BUFFERS.length - 1 }),
    }),
  },
);

const operationArb: fc.Arbitrary<Operation> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.oneof(
      fc.record({
        op: fc.constant('rw' as const),
        addr: addressArb,
        buf: bufferArb,
        attrs: rwAttributesArb,
      }),
      fc.record({
        op: fc.constant('read' as const),
        addr: addressArb,
        buf: bufferArb,
        attrs: readAttributesArb,
      }),
      fc.record({
        op: fc.constant('write' as const),
        addr: addressArb,
        buf: bufferArb,
        attrs: writeAttributesArb,
      }),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constantFrom('cpuRead' as const, 'cpuWrite' as const),
      addr: addressArb,
      buf: bufferArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      addr: addressArb,
      value: numberValueArb(1),
      length: lengthArb,
      attrs: writeAttributesArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constantFrom('valid' as const, 'map' as const),
      addr: addressArb,
      length: lengthArb,
      attrs: anyDirectionAttributesArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('viewWrite' as const),
      pick: fc.nat(),
      offset: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('unmap' as const),
      target: unmapTargetArb,
      accessed: fc.oneof(
        { weight: 3, arbitrary: fc.constant(undefined) },
        { weight: 4, arbitrary: fc.integer({ min: 0, max: 90 }) },
        { weight: 1, arbitrary: fc.constantFrom(-1, 1.5, Number.NaN, null, '2', 2n, 2 ** 53) },
      ),
    }),
  },
  { weight: 4, arbitrary: fixedArb },
);

interface Variant {
  /** Allocated memory: the `shared` option. Adopted memory: whether to pass the matching one. */
  readonly shared: boolean;
  readonly barrierPolicy: 'strict' | 'tso' | 'auto';
  readonly trace: boolean;
  /** Shared backings: the fence word in the backing, or one the library makes. */
  readonly fenceInBacking: boolean;
}

const variantArb: fc.Arbitrary<Variant> = fc.record({
  shared: fc.boolean(),
  barrierPolicy: fc.constantFrom('strict' as const, 'tso' as const, 'auto' as const),
  trace: fc.boolean(),
  fenceInBacking: fc.oneof(
    { weight: 3, arbitrary: fc.constant(true) },
    { weight: 1, arbitrary: fc.constant(false) },
  ),
});

/**
 * Where each backing kind puts the regions (indices into SORTED: 0x1003, 0x1040, 0x1085,
 * 0x10b2, 0x2000, 0x2021). Both guest adjacencies (0x1003 → 0x1040, 0x1085 → 0x10b2) are two
 * pieces somewhere, and one piece (offsets contiguous) elsewhere.
 */
const LAYOUTS: Readonly<Record<Exclude<MemoryKind, 'allocated'>, Layout>> = {
  // Reverse guest order: both adjacencies are two pieces, the second before the first.
  SharedArrayBuffer: {},
  // Guest order, 0x10b2 right after 0x1085: one piece there, two at 0x1040.
  ArrayBuffer: { order: [0, 1, 2, 3, 4, 5], joined: [0x10b2] },
  // Deep in the first wasm page, shuffled, 0x1040 right after 0x1003.
  'shared WebAssembly.Memory': {
    lead: 0x3000,
    order: [4, 0, 1, 5, 3, 2],
    joined: [0x1040],
    gap: 9,
  },
  // Shuffled, with 0x10b2 placed right after 0x1003 (not its guest neighbour: still apart).
  'unshared WebAssembly.Memory': {
    lead: 0x777 * 8,
    order: [5, 2, 0, 3, 4, 1],
    joined: [0x10b2],
    tail: 0x100,
  },
};

// ---------------------------------------------------------------------------------------
// Running one sequence against both memories

/** Tallies that prove the generator reached the cases the test claims to cover. */
interface Tally {
  operations: number;
  libraryCalls: number;
  outcomes: Record<string, number>;
  crossingSuccesses: number;
  holeCrossingFailures: number;
  misalignedFixed: number;
  aliasTransfers: number;
  viewWrites: number;
  /** Successful accesses whose bytes are two or more pieces of the backing. */
  pieceCrossings: number;
  /** Maps cut short at the end of a backing piece although guest RAM goes on. */
  mapsCutAtPiece: number;
}

function freshTally(): Tally {
  return {
    operations: 0,
    libraryCalls: 0,
    outcomes: {},
    crossingSuccesses: 0,
    holeCrossingFailures: 0,
    misalignedFixed: 0,
    aliasTransfers: 0,
    viewWrites: 0,
    pieceCrossings: 0,
    mapsCutAtPiece: 0,
  };
}

let tally: Tally = freshTally();

interface Mapping {
  readonly view: Uint8Array;
  readonly addr: number;
  readonly bits: number;
}

/** What the model says an operation does: fail with a code, or succeed with a value. */
type Expected =
  | { readonly code: Code }
  | {
      readonly code?: undefined;
      readonly value?: unknown;
      /** Bytes the caller's buffer must hold afterwards (reads into it). */
      readonly bufferAfter?: readonly number[];
      /** Applies the operation to the model, after the library ran. */
      readonly apply?: () => void;
      /** The one access event the trace must show. */
      readonly event?: { op: string; addr: number; length: number; attrs: number };
      /** For map: the mapped length. */
      readonly mappedLength?: number;
    };

class Divergence extends Error {}

function diverge(message: string): never {
  throw new Divergence(message);
}

function sameBytes(actual: ArrayLike<number>, expected: ArrayLike<number>): boolean {
  if (actual.length !== expected.length) return false;
  for (let index = 0; index < actual.length; index++) {
    if (actual[index] !== expected[index]) return false;
  }
  return true;
}

/** Snapshot of any value's bytes for the "caller's buffer unchanged" check. */
function snapshot(value: unknown): number[] | undefined {
  if (ArrayBuffer.isView(value))
    return [...new Uint8Array(value.buffer, value.byteOffset, value.byteLength)];
  if (value instanceof ArrayBuffer) return [...new Uint8Array(value)];
  if (Array.isArray(value)) return [...(value as number[])];
  return undefined;
}

class Run {
  readonly model = new ReferenceMemory();
  readonly made: MadeMemory;
  readonly memory: GuestMemory;
  readonly ctx: DMAContext;
  readonly events: DMATraceEvent[] = [];
  readonly traced: boolean;
  readonly live: Mapping[] = [];
  readonly stale: Uint8Array[] = [];
  /** Backing offset of each (sorted) region. */
  readonly offsets: number[];

  constructor(kind: MemoryKind, variant: Variant, seed: Uint8Array) {
    const adopted = kind !== 'allocated';
    this.made = makeMemory(kind, REGIONS, {
      barrierPolicy: variant.barrierPolicy,
      ...(adopted ? { layout: LAYOUTS[kind], fenceInBacking: variant.fenceInBacking } : {}),
      // Adopted memory: `shared` may be left out (it follows from the backing) or agree.
      ...(!adopted || variant.shared
        ? { shared: adopted ? isSharedBacking(kind) : variant.shared }
        : {}),
    });
    this.memory = this.made.memory;
    this.traced = variant.trace;
    this.ctx = variant.trace
      ? new DMAContext(this.memory, { trace: (event) => this.events.push(event) })
      : new DMAContext(this.memory);
    // Allocated memory says where it put the regions; adopted memory has them where the test
    // put them, and must say so.
    this.offsets = SORTED.map((region) => this.made.offsetOf(region.base));
    if (adopted) {
      if (
        JSON.stringify(
          this.memory.regions.map(({ base, size, offset }) => [base, size, offset]),
        ) !==
          JSON.stringify(this.made.placed.map(({ base, size, offset }) => [base, size, offset])) ||
        this.memory.shared !== isSharedBacking(kind) ||
        SORTED.some(
          (region, index) => this.memory.offsetOf(region.base, region.size) !== this.offsets[index],
        )
      ) {
        diverge(
          `${kind}: memory.regions is ${JSON.stringify(this.memory.regions)}, shared ${this.memory.shared}; the test placed ${JSON.stringify(this.made.placed)}`,
        );
      }
      const fence = this.memory.fenceLocation;
      const want = this.made.fence;
      if (
        isSharedBacking(kind) &&
        want !== undefined &&
        (fence?.buffer !== want.buffer || fence.byteOffset !== want.byteOffset)
      ) {
        diverge(`${kind}: memory.fenceLocation is not the fence word the test placed`);
      }
      if (!isSharedBacking(kind) && fence !== undefined)
        diverge(`${kind}: unshared memory has a fence location`);
    }
    fillCanaries(this.made);
    let cursor = 0;
    for (const region of SORTED) {
      const bytes = seed.subarray(cursor, cursor + region.size);
      this.memory.write(region.base, bytes);
      this.model.store(region.base, bytes);
      cursor += region.size;
    }
    this.checkMemory('seeding');
  }

  /** How many bytes from `addr` are RAM and one piece of the backing (the test's own layout). */
  piece(addr: number): number {
    return this.made.pieceExtent(addr);
  }

  /** Whether [addr, addr + length) of RAM is more than one piece of the backing. */
  isSplit(addr: number, length: number): boolean {
    return length > this.piece(addr);
  }

  /**
   * Every byte of every region, every canary byte of the backing, and every live view agree
   * with the model. `everywhere` also checks the far canaries (the rest of a wasm memory).
   */
  checkMemory(after: string, everywhere = false): void {
    const raw = this.made.bytes();
    this.model.regions.forEach((region, index) => {
      const offset = this.offsets[index] as number;
      for (let byte = 0; byte < region.bytes.length; byte++) {
        if (raw[offset + byte] !== region.bytes[byte]) {
          diverge(
            `after ${after}: guest byte 0x${(region.base + byte).toString(16)} is ${raw[offset + byte]}, model says ${region.bytes[byte]}`,
          );
        }
      }
    });
    const damage = damagedCanary(this.made, !everywhere);
    if (damage !== undefined) diverge(`after ${after} on ${this.made.kind}: ${damage}`);
    for (const mapping of this.live) {
      if (!sameBytes(mapping.view, this.model.slice(mapping.addr, mapping.view.length))) {
        diverge(
          `after ${after}: view mapped at 0x${mapping.addr.toString(16)} no longer shows guest memory`,
        );
      }
    }
  }

  /** Makes the caller's buffer; for an alias it is a live mapped view (or part of one). */
  makeBuffer(spec: BufferSpec): {
    buf: unknown;
    aliasAddr?: number;
    nearAddr?: number;
    check: () => void;
  } {
    switch (spec.kind) {
      case 'plain':
        return { buf: Uint8Array.from(spec.bytes), check: () => undefined };
      case 'node':
        return { buf: Buffer.from(spec.bytes), check: () => undefined };
      case 'shared': {
        const buf = new Uint8Array(new SharedArrayBuffer(spec.bytes.length));
        buf.set(spec.bytes);
        return { buf, check: () => undefined };
      }
      case 'offset': {
        // A window into a larger buffer, with guard bytes on both sides that must survive.
        const backing = new Uint8Array(spec.bytes.length + 7).fill(0xee);
        const buf = backing.subarray(3, 3 + spec.bytes.length);
        buf.set(spec.bytes);
        const check = (): void => {
          for (const index of [
            0,
            1,
            2,
            backing.length - 4,
            backing.length - 3,
            backing.length - 2,
            backing.length - 1,
          ]) {
            if (backing[index] !== 0xee)
              diverge(`a guard byte beside the caller's buffer was written`);
          }
        };
        return { buf, check };
      }
      case 'alias': {
        const mapping = this.live[spec.pick % Math.max(1, this.live.length)];
        if (mapping === undefined)
          return { buf: new Uint8Array(spec.length % 16), check: () => undefined };
        const offset = spec.offset % mapping.view.length;
        const length = spec.length % (mapping.view.length - offset + 1);
        const aliasAddr = mapping.addr + offset;
        return {
          buf: mapping.view.subarray(offset, offset + length),
          aliasAddr,
          ...(spec.near === null ? {} : { nearAddr: Math.max(0, aliasAddr + spec.near) }),
          check: () => undefined,
        };
      }
      case 'bad':
        return { buf: (BAD_BUFFERS[spec.make] as () => unknown)(), check: () => undefined };
    }
  }

  execute(operation: Operation): void {
    tally.operations++;
    if (operation.op === 'viewWrite') {
      this.viewWrite(operation);
      return;
    }
    tally.libraryCalls++;
    const before = this.events.length;
    let made: ReturnType<Run['makeBuffer']> | undefined;
    let expected: Expected;
    let call: () => unknown;
    const ctx = this.ctx;
    switch (operation.op) {
      case 'rw':
      case 'read':
      case 'write':
      case 'cpuRead':
      case 'cpuWrite': {
        made = this.makeBuffer(operation.buf);
        const { buf } = made;
        const addr = (made.nearAddr ?? operation.addr) as number;
        expected = this.expectTransfer(operation, addr, buf, made.aliasAddr);
        const u8 = buf as Uint8Array;
        if (operation.op === 'rw') {
          const attrs = operation.attrs as DMAAttributesLike;
          call = () => {
            ctx.rw(addr, u8, attrs);
          };
        } else if (operation.op === 'read') {
          const attrs = operation.attrs as DMAAttributesLike | undefined;
          call = () => {
            ctx.read(addr, u8, attrs);
          };
        } else if (operation.op === 'write') {
          const attrs = operation.attrs as DMAAttributesLike | undefined;
          call = () => {
            ctx.write(addr, u8, attrs);
          };
        } else if (operation.op === 'cpuRead') {
          call = () => {
            this.memory.read(addr, u8);
          };
        } else {
          call = () => {
            this.memory.write(addr, u8);
          };
        }
        if (made.aliasAddr !== undefined) tally.aliasTransfers++;
        break;
      }
      case 'set': {
        expected = this.expectSet(operation);
        const { addr, value, length, attrs } = operation;
        call = () => {
          ctx.set(
            addr as number,
            value as number,
            length as number,
            attrs as DMAAttributesLike | undefined,
          );
        };
        break;
      }
      case 'valid': {
        expected = this.expectValid(operation);
        const { addr, length, attrs } = operation;
        call = () => ctx.valid(addr as number, length as number, attrs as DMAAttributesLike);
        break;
      }
      case 'map': {
        expected = this.expectMap(operation);
        const { addr, length, attrs } = operation;
        call = () => ctx.map(addr as number, length as number, attrs as DMAAttributesLike);
        break;
      }
      case 'unmap': {
        const { view, expect: outcome } = this.expectUnmap(operation);
        expected = outcome;
        made = { buf: view, check: () => undefined };
        const accessed = operation.accessed as number | undefined;
        call = () => {
          ctx.unmap(view as Uint8Array, accessed);
        };
        break;
      }
      case 'load': {
        expected = this.expectLoad(operation);
        const addr = operation.addr as number;
        const attrs = operation.attrs as DMAAttributesLike | undefined;
        const { width, little } = operation;
        call = () => load(ctx, width, little, addr, attrs);
        break;
      }
      case 'store': {
        expected = this.expectStore(operation);
        const addr = operation.addr as number;
        const attrs = operation.attrs as DMAAttributesLike | undefined;
        const { width, little, value } = operation;
        call = () => {
          store(ctx, width, little, addr, value, attrs);
        };
        break;
      }
    }

    const bufferBefore = made === undefined ? undefined : snapshot(made.buf);
    let thrown: unknown;
    let threw = false;
    let result: unknown;
    try {
      result = call();
    } catch (error) {
      threw = true;
      thrown = error;
    }
    const label = describeOperation(operation);
    const outcome = threw ? (thrown instanceof DMAError ? thrown.code : 'non-DMAError') : 'ok';
    tally.outcomes[outcome] = (tally.outcomes[outcome] ?? 0) + 1;

    if (threw && !(thrown instanceof DMAError)) {
      diverge(`${label} threw something that is not a DMAError: ${String(thrown)}`);
    }
    if (expected.code !== undefined) {
      if (!threw) diverge(`${label} succeeded; model expects ${expected.code}`);
      if (outcome !== expected.code)
        diverge(`${label} threw ${outcome}; model expects ${expected.code}`);
      // A failed access changes no byte of the caller's buffer and traces nothing.
      if (made !== undefined && bufferBefore !== undefined) {
        const after = snapshot(made.buf);
        if (after === undefined || !sameBytes(after, bufferBefore))
          diverge(`${label} failed but changed the caller's buffer`);
      }
      if (this.events.length !== before)
        diverge(`${label} failed but traced ${this.events.length - before} events`);
    } else {
      if (threw) diverge(`${label} threw ${outcome}; model expects success`);
      this.checkResult(label, operation, expected, result);
      expected.apply?.();
      if (made !== undefined && made.aliasAddr === undefined && !(operation.op === 'unmap')) {
        const after = snapshot(made.buf);
        const want = expected.bufferAfter ?? bufferBefore;
        if (after === undefined || want === undefined || !sameBytes(after, want)) {
          diverge(
            `${label}: caller's buffer is [${after?.join(',')}], model says [${want?.join(',')}]`,
          );
        }
      }
      this.checkTrace(label, before, expected);
    }
    made?.check();
    this.checkMemory(label);
  }

  checkResult(
    label: string,
    operation: Operation,
    expected: Exclude<Expected, { code: Code }>,
    result: unknown,
  ): void {
    if (operation.op === 'map') {
      if (!(result instanceof Uint8Array)) diverge(`${label} did not return a Uint8Array`);
      if (result.length !== expected.mappedLength) {
        diverge(
          `${label} returned a view of ${result.length} bytes; model says ${expected.mappedLength}`,
        );
      }
      const addr = operation.addr as number;
      if (!sameBytes(result, this.model.slice(addr, result.length)))
        diverge(`${label} view does not show guest memory`);
      this.live.push({ view: result, addr, bits: expected.event?.attrs ?? -1 });
      return;
    }
    if (!Object.is(result, expected.value)) {
      diverge(`${label} returned ${String(result)}; model says ${String(expected.value)}`);
    }
  }

  checkTrace(label: string, before: number, expected: Exclude<Expected, { code: Code }>): void {
    if (!this.traced) return;
    const events = this.events.slice(before);
    this.events.length = 0;
    const accesses = events.filter((event) => event.op !== 'barrier');
    if (expected.event === undefined) {
      if (events.length !== 0) diverge(`${label} traced ${events.length} events; it is no access`);
      return;
    }
    const [access] = accesses;
    const want = expected.event;
    if (
      accesses.length !== 1 ||
      access?.op !== want.op ||
      access.addr !== want.addr ||
      access.length !== want.length ||
      access.attrs !== want.attrs
    ) {
      diverge(
        `${label} traced ${JSON.stringify(accesses)}; model expects one ${JSON.stringify(want)}`,
      );
    }
  }

  viewWrite(operation: Extract<Operation, { op: 'viewWrite' }>): void {
    const mapping = this.live[operation.pick % Math.max(1, this.live.length)];
    if (mapping === undefined) return;
    tally.viewWrites++;
    const offset = operation.offset % mapping.view.length;
    const bytes = operation.bytes.subarray(0, mapping.view.length - offset);
    mapping.view.set(bytes, offset);
    this.model.store(mapping.addr + offset, bytes);
    this.checkMemory('a write through a mapped view');
  }

  /** Attribute rules per accessor (§6): an implied direction, or one/any direction given. */
  static impliedBits(attrs: unknown, direction: number): number | undefined {
    if (attrs === undefined) return direction;
    const bits = attributeBits(attrs);
    if (bits === undefined) return undefined;
    const other = (R | W) & ~direction;
    return (bits & other) !== 0 ? undefined : bits | direction;
  }

  static directedBits(attrs: unknown, exactlyOne: boolean): number | undefined {
    const bits = attributeBits(attrs);
    if (bits === undefined) return undefined;
    const direction = bits & (R | W);
    if (direction === 0 || (exactlyOne && direction === (R | W))) return undefined;
    return bits;
  }

  /** The guest-range part of every access: range within 2^53, then all RAM. */
  rangeOutcome(addr: number, length: number): Code | undefined {
    if (!rangeFits(addr, length)) return 'ERR_DMA_INVALID_ARGUMENT';
    if (length === 0 || this.model.isRam(addr, length)) {
      if (length > 0 && this.model.regionsTouched(addr, length) > 1) tally.crossingSuccesses++;
      if (length > 0 && this.isSplit(addr, length)) tally.pieceCrossings++;
      return undefined;
    }
    if (this.model.regionOf(addr) !== undefined) tally.holeCrossingFailures++;
    return 'ERR_DMA_UNASSIGNED';
  }

  expectTransfer(
    operation: Extract<Operation, { op: 'rw' | 'read' | 'write' | 'cpuRead' | 'cpuWrite' }>,
    addr: unknown,
    buf: unknown,
    aliasAddr: number | undefined,
  ): Expected {
    let bits = 0;
    if (operation.op === 'rw' || operation.op === 'read' || operation.op === 'write') {
      const found =
        operation.op === 'rw'
          ? Run.directedBits(operation.attrs, true)
          : Run.impliedBits(operation.attrs, operation.op === 'read' ? R : W);
      if (found === undefined) return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
      bits = found;
    }
    if (!isAddress(addr)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    if (operation.buf.kind === 'bad') return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    const data = buf as Uint8Array;
    const length = data.length;
    const code = this.rangeOutcome(addr, length);
    if (code !== undefined) return { code };
    const intoBuffer =
      operation.op === 'cpuRead' || (operation.op !== 'cpuWrite' && (bits & R) !== 0);
    const isCpu = operation.op === 'cpuRead' || operation.op === 'cpuWrite';
    const event = isCpu
      ? undefined
      : { op: intoBuffer ? 'read' : 'write', addr, length, attrs: bits };
    if (intoBuffer) {
      const source = this.model.slice(addr, length);
      return {
        bufferAfter: source,
        apply: () => {
          if (aliasAddr !== undefined) this.model.store(aliasAddr, source);
        },
        ...(event === undefined ? {} : { event }),
      };
    }
    const written = aliasAddr === undefined ? [...data] : this.model.slice(aliasAddr, length);
    return {
      apply: () => {
        this.model.store(addr, written);
      },
      ...(event === undefined ? {} : { event }),
    };
  }

  expectSet(operation: Extract<Operation, { op: 'set' }>): Expected {
    const bits = Run.impliedBits(operation.attrs, W);
    if (bits === undefined) return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
    const { addr, value, length } = operation;
    if (!isAddress(addr)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) {
      return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    }
    if (!isAddress(length)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    const code = this.rangeOutcome(addr, length);
    if (code !== undefined) return { code };
    return {
      apply: () => {
        this.model.store(addr, new Array<number>(length).fill(value));
      },
      event: { op: 'set', addr, length, attrs: bits },
    };
  }

  expectValid(operation: RangeOperation): Expected {
    if (Run.directedBits(operation.attrs, false) === undefined)
      return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
    const { addr, length } = operation;
    if (!isAddress(addr) || !isAddress(length)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    if (!rangeFits(addr, length)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    return { value: length === 0 || this.model.isRam(addr, length) };
  }

  expectMap(operation: RangeOperation): Expected {
    const bits = Run.directedBits(operation.attrs, false);
    if (bits === undefined) return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
    const { addr, length } = operation;
    if (!isAddress(addr) || !isAddress(length) || length === 0)
      return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    if (!rangeFits(addr, length)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    // A view is one piece of the backing: it stops where the piece ends, even where guest
    // RAM goes on into an adjacent region placed elsewhere in the backing.
    const extent = this.piece(addr);
    if (extent === 0) return { code: 'ERR_DMA_UNASSIGNED' };
    const mappedLength = Math.min(length, extent);
    if (length > extent && this.model.contiguous(addr) > extent) tally.mapsCutAtPiece++;
    if (this.model.regionsTouched(addr, mappedLength) > 1) tally.crossingSuccesses++;
    return { mappedLength, event: { op: 'map', addr, length: mappedLength, attrs: bits } };
  }

  expectUnmap(operation: Extract<Operation, { op: 'unmap' }>): { view: unknown; expect: Expected } {
    const { target, accessed } = operation;
    let view: unknown;
    let mapping: Mapping | undefined;
    switch (target.kind) {
      case 'live':
        mapping = this.live[target.pick % Math.max(1, this.live.length)];
        view = mapping?.view ?? new Uint8Array(4);
        break;
      case 'stale':
        view = this.stale[target.pick % Math.max(1, this.stale.length)] ?? new Uint8Array(4);
        break;
      case 'subarray': {
        const live = this.live[target.pick % Math.max(1, this.live.length)];
        view = live === undefined ? new Uint8Array(4) : live.view.subarray(0);
        break;
      }
      case 'foreign':
        view = new Uint8Array(4);
        break;
      case 'bad':
        view = (BAD_BUFFERS[target.make] as () => unknown)();
        break;
    }
    if (mapping === undefined) return { view, expect: { code: 'ERR_DMA_INVALID_ARGUMENT' } };
    const length = accessed === undefined ? mapping.view.length : accessed;
    if (!isAddress(length) || length > mapping.view.length) {
      return { view, expect: { code: 'ERR_DMA_INVALID_ARGUMENT' } };
    }
    const found = mapping;
    return {
      view,
      expect: {
        apply: () => {
          this.live.splice(this.live.indexOf(found), 1);
          this.stale.push(found.view);
        },
        event: { op: 'unmap', addr: found.addr, length, attrs: found.bits },
      },
    };
  }

  expectLoad(operation: Extract<Operation, { op: 'load' }>): Expected {
    const bits = Run.impliedBits(operation.attrs, R);
    if (bits === undefined) return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
    const { addr, width, little } = operation;
    if (!isAddress(addr)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    const code = this.rangeOutcome(addr, width);
    if (code !== undefined) return { code };
    if (addr % width !== 0) tally.misalignedFixed++;
    const bytes = this.model.slice(addr, width);
    return {
      value: width === 8 ? decodeBigint(bytes, little) : decodeNumber(bytes, little),
      event: { op: 'read', addr, length: width, attrs: bits },
    };
  }

  expectStore(operation: Extract<Operation, { op: 'store' }>): Expected {
    const bits = Run.impliedBits(operation.attrs, W);
    if (bits === undefined) return { code: 'ERR_DMA_INVALID_ATTRIBUTES' };
    const { addr, width, little, value } = operation;
    if (!isAddress(addr)) return { code: 'ERR_DMA_INVALID_ARGUMENT' };
    let bytes: number[];
    if (width === 8) {
      if (typeof value !== 'bigint' || value < 0n || value >= 2n ** 64n)
        return { code: 'ERR_DMA_INVALID_ARGUMENT' };
      bytes = encodeBigint(value, little);
    } else {
      if (
        typeof value !== 'number' ||
        !Number.isInteger(value) ||
        value < 0 ||
        value > LIMITS[width]
      ) {
        return { code: 'ERR_DMA_INVALID_ARGUMENT' };
      }
      bytes = encodeNumber(value, width, little);
    }
    const code = this.rangeOutcome(addr, width);
    if (code !== undefined) return { code };
    if (addr % width !== 0) tally.misalignedFixed++;
    return {
      apply: () => {
        this.model.store(addr, bytes);
      },
      event: { op: 'write', addr, length: width, attrs: bits },
    };
  }
}

function load(
  ctx: DMAContext,
  width: Width,
  little: boolean,
  addr: number,
  attrs: DMAAttributesLike | undefined,
): number | bigint {
  switch (width) {
    case 1:
      return ctx.readU8(addr, attrs);
    case 2:
      return little ? ctx.readU16LE(addr, attrs) : ctx.readU16BE(addr, attrs);
    case 4:
      return little ? ctx.readU32LE(addr, attrs) : ctx.readU32BE(addr, attrs);
    case 8:
      return little ? ctx.readU64LE(addr, attrs) : ctx.readU64BE(addr, attrs);
  }
}

function store(
  ctx: DMAContext,
  width: Width,
  little: boolean,
  addr: number,
  value: unknown,
  attrs: DMAAttributesLike | undefined,
): void {
  switch (width) {
    case 1:
      ctx.writeU8(addr, value as number, attrs);
      return;
    case 2:
      if (little) ctx.writeU16LE(addr, value as number, attrs);
      else ctx.writeU16BE(addr, value as number, attrs);
      return;
    case 4:
      if (little) ctx.writeU32LE(addr, value as number, attrs);
      else ctx.writeU32BE(addr, value as number, attrs);
      return;
    case 8:
      if (little) ctx.writeU64LE(addr, value as bigint, attrs);
      else ctx.writeU64BE(addr, value as bigint, attrs);
      return;
  }
}

function show(value: unknown): string {
  if (typeof value === 'bigint') return `${value.toString()}n`;
  if (typeof value === 'number')
    return Number.isInteger(value) && value >= 0 ? `0x${value.toString(16)}` : String(value);
  if (value instanceof Uint8Array) return `Uint8Array(${value.length})`;
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value);
  } catch {
    return typeof value;
  }
}

function describeOperation(operation: Operation): string {
  const parts = Object.entries(operation)
    .filter(([key]) => key !== 'op')
    .map(([key, value]) => `${key}=${show(value)}`);
  return `${operation.op}(${parts.join(', ')})`;
}

// ---------------------------------------------------------------------------------------

const RUNS = 300;
/** Per adopted kind: enough for 10,000 operations each, a third of the allocated runs. */
const ADOPTED_RUNS = 90;
const MIN_OPERATIONS = 120;

describe('the DMA context against a reference model of guest memory', () => {
  it('the reference model encodes byte order as the spec says', () => {
    expect(encodeNumber(0x01020304, 4, true)).toEqual([4, 3, 2, 1]);
    expect(encodeNumber(0x01020304, 4, false)).toEqual([1, 2, 3, 4]);
    expect(encodeNumber(0xfffe, 2, true)).toEqual([0xfe, 0xff]);
    expect(decodeNumber([0xfe, 0xff], false)).toBe(0xfeff);
    expect(decodeNumber([0xff, 0xff, 0xff, 0xff], true)).toBe(0xffffffff);
    expect(encodeBigint(0x0102030405060708n, true)).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(decodeBigint([1, 2, 3, 4, 5, 6, 7, 8], false)).toBe(0x0102030405060708n);
    expect(decodeBigint([0xff, 0, 0, 0, 0, 0, 0, 0x80], true)).toBe(0x80000000000000ffn);
  });

  it('the reference model sees the holes and adjacencies of the region layout', () => {
    const model = new ReferenceMemory();
    expect(model.isRam(0x1003, 61 + 64)).toBe(true); // 0x1003 runs into 0x1040
    expect(model.regionsTouched(0x103c, 8)).toBe(2);
    expect(model.isRam(0x107c, 8)).toBe(false); // 0x1080..0x1085 is a hole
    expect(model.contiguous(0x1085)).toBe(45 + 19);
    expect(model.isRam(0x201f, 2)).toBe(false); // the one-byte hole at 0x2020
    expect(model.isRam(0x1002, 1)).toBe(false);
    expect(rangeFits(2 ** 53 - 1, 1)).toBe(true);
    expect(rangeFits(2 ** 53 - 1, 2)).toBe(false);
  });

  it('random valid and invalid operations never diverge from the model (≥ 10,000 operations)', () => {
    runAgainstModel('allocated', RUNS);
    expectCoverage(1);
  });

  it.each(ADOPTED_KINDS.map((kind) => [kindLabel(kind), kind] as const))(
    'on memory adopted from %s, at offsets out of guest order with canaries around every region, random operations never diverge from the model (≥ 10,000 operations)',
    (_label, kind) => {
      runAgainstModel(kind, ADOPTED_RUNS);
      expectCoverage(ADOPTED_RUNS / RUNS);
      // The layout made accesses and maps meet the edge of a backing piece inside guest RAM.
      expect(tally.pieceCrossings).toBeGreaterThan(40);
      expect(tally.mapsCutAtPiece).toBeGreaterThan(5);
    },
  );
});

/** Runs `runs` random programs on memory of `kind`, with a fresh tally. */
function runAgainstModel(kind: MemoryKind, runs: number): void {
  tally = freshTally();
  const seedArb = fc.uint8Array({ minLength: TOTAL, maxLength: TOTAL });
  const programArb = fc.array(operationArb, {
    minLength: MIN_OPERATIONS,
    maxLength: MIN_OPERATIONS + 40,
  });
  fc.assert(
    fc.property(variantArb, seedArb, programArb, (variant, seed, program) => {
      const run = new Run(kind, variant, seed);
      for (const operation of program) run.execute(operation);
      run.checkMemory('the whole program', true);
    }),
    { numRuns: runs },
  );
}

/** The generator reached every kind of outcome the test claims to cover (`scale`: share of RUNS). */
function expectCoverage(scale: number): void {
  expect(tally.libraryCalls).toBeGreaterThanOrEqual(10_000);
  expect(tally.outcomes['non-DMAError']).toBeUndefined();
  expect(tally.outcomes.ok).toBeGreaterThan(2_000 * scale);
  expect(tally.outcomes.ERR_DMA_INVALID_ATTRIBUTES).toBeGreaterThan(300 * scale);
  expect(tally.outcomes.ERR_DMA_INVALID_ARGUMENT).toBeGreaterThan(300 * scale);
  expect(tally.outcomes.ERR_DMA_UNASSIGNED).toBeGreaterThan(300 * scale);
  expect(tally.crossingSuccesses).toBeGreaterThan(100 * scale);
  expect(tally.holeCrossingFailures).toBeGreaterThan(100 * scale);
  expect(tally.misalignedFixed).toBeGreaterThan(100 * scale);
  expect(tally.aliasTransfers).toBeGreaterThan(50 * scale);
  expect(tally.viewWrites).toBeGreaterThan(100 * scale);
}
