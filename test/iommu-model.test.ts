/**
 * Model-based test of the IOMMU path: random command sequences (fast-check `fc.commands`)
 * of domain map / unmap / translate and context read / write / rw / set / map-view (with
 * writes through the view and view unmaps) / fixed-width / valid, run against an
 * IommuDomain + DMAContext and against a reference model written here from SPEC §5–§7: a
 * Map from IOVA page to { guest page, permission } and a byte array for guest memory.
 *
 * The IOVA space is 16 pages and guest memory has a hole and an end within reach of every
 * mapping, so that overlaps, capacity errors, unmapped and permission faults, accesses
 * behind the IOMMU that land in the hole, and IOTLB invalidations all happen often. After
 * every command the two must agree on the result, the error code (and the fault's address,
 * length, attributes, reason and refused access), the fault the listener received, the
 * caller's buffer, and every byte of guest memory.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  IommuDomain,
  type IommuFault,
} from '../src/index.js';

// The bits as SPEC §2 gives them, written here so that the model shares no constant with
// the code under test.
const R = 0b001;
const W = 0b010;
const X = 0b100;

const PAGE = 4096;
const IOVA_PAGES = 16;
/** RAM at guest pages 0..5 and 8..11: pages 6 and 7 are a hole, and nothing lies from 12 on. */
const RAM = [
  { base: 0, size: 6 * PAGE },
  { base: 8 * PAGE, size: 4 * PAGE },
] as const;
const RAM_END = 12 * PAGE;
/** Mappings may target guest pages up to 13, two pages past the end of RAM. */
const GPA_PAGES = 14;

type Code =
  | 'ERR_DMA_INVALID_ATTRIBUTES'
  | 'ERR_DMA_INVALID_ARGUMENT'
  | 'ERR_DMA_UNASSIGNED'
  | 'ERR_DMA_IOMMU_UNMAPPED'
  | 'ERR_DMA_IOMMU_PERMISSION'
  | 'ERR_DMA_IOMMU_OVERLAP'
  | 'ERR_DMA_VIRTQUEUE';

/** What a refused access carries (SPEC §7 and §5). */
interface Fault {
  readonly addr: number;
  readonly length: number | undefined;
  readonly attrs: number;
  readonly reason: 'unmapped' | 'permission' | undefined;
  readonly access: 'read' | 'write' | undefined;
}

/** What one command did: a value, or an error with its code (and fault fields). */
type Outcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly code: Code; readonly fault?: Fault };

// ---------------------------------------------------------------------------------------
// The reference model

interface Entry {
  readonly gpaPage: number;
  readonly perm: number;
  /** Which `map` call (or split) made it: the table counts mappings, not pages. */
  readonly id: number;
}

interface ModelView {
  readonly gpa: number;
  readonly length: number;
}

class Model {
  readonly pages = new Map<number, Entry>();
  /** Guest memory by guest-physical address; bytes in the hole are never used. */
  readonly ram = new Uint8Array(RAM_END);
  readonly views: ModelView[] = [];
  nextId = 1;

  constructor(readonly maxMappings: number) {}

  get mappingCount(): number {
    return new Set([...this.pages.values()].map((entry) => entry.id)).size;
  }
}

function isRamPage(page: number): boolean {
  return (page >= 0 && page < 6) || (page >= 8 && page < 12);
}

/** Bytes of RAM from `gpa` to the end of its region; 0 in a hole. */
function ramExtent(gpa: number): number {
  for (const region of RAM) {
    if (gpa >= region.base && gpa < region.base + region.size)
      return region.base + region.size - gpa;
  }
  return 0;
}

/** The spec's attribute rule (§2) for what the generators produce: 0..7 or a flag object. */
function attributeBits(like: unknown): number | undefined {
  if (typeof like === 'number')
    return Number.isInteger(like) && like >= 0 && like <= 7 ? like : undefined;
  if (typeof like !== 'object' || like === null) return undefined;
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

/** A non-negative safe integer multiple of the page size. */
function isPageMultiple(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0 && value % PAGE === 0;
}

function refusedAccess(perm: number, need: number): 'read' | 'write' {
  return (need & R) !== 0 && (perm & R) === 0 ? 'read' : 'write';
}

function error(code: Code, fault?: Fault): Outcome {
  return fault === undefined ? { ok: false, code } : { ok: false, code, fault };
}

/**
 * An access of `length` bytes at `iova` needing the direction bits of `attrs`: every page
 * is first checked against the IOMMU table (the first refused page decides the fault), then
 * every translated byte against RAM. Returns the guest-physical runs, or the error.
 */
function modelAccess(
  model: Model,
  iova: number,
  length: number,
  attrs: number,
): { runs: [number, number][] } | { error: Outcome } {
  if (length === 0) return { runs: [] };
  const need = attrs & (R | W);
  const first = Math.floor(iova / PAGE);
  const last = Math.floor((iova + length - 1) / PAGE);
  for (let page = first; page <= last; page++) {
    const entry = model.pages.get(page);
    if (entry === undefined) {
      return {
        error: error('ERR_DMA_IOMMU_UNMAPPED', {
          addr: iova,
          length,
          attrs,
          reason: 'unmapped',
          access: undefined,
        }),
      };
    }
    if ((entry.perm & need) !== need) {
      return {
        error: error('ERR_DMA_IOMMU_PERMISSION', {
          addr: iova,
          length,
          attrs,
          reason: 'permission',
          access: refusedAccess(entry.perm, need),
        }),
      };
    }
  }
  const runs: [number, number][] = [];
  for (let page = first; page <= last; page++) {
    const entry = model.pages.get(page) as Entry;
    const start = Math.max(iova, page * PAGE);
    const end = Math.min(iova + length, (page + 1) * PAGE);
    if (!isRamPage(entry.gpaPage)) {
      return {
        error: error('ERR_DMA_UNASSIGNED', {
          addr: iova,
          length,
          attrs,
          reason: undefined,
          access: undefined,
        }),
      };
    }
    runs.push([entry.gpaPage * PAGE + (start - page * PAGE), end - start]);
  }
  return { runs };
}

/** How many bytes from `iova` are mapped contiguously in both spaces with `need`. */
function modelRun(model: Model, iova: number, need: number): number {
  let page = Math.floor(iova / PAGE);
  let bytes = (page + 1) * PAGE - iova;
  for (;;) {
    const next = model.pages.get(page + 1);
    const current = model.pages.get(page) as Entry;
    if (next?.gpaPage !== current.gpaPage + 1 || (next.perm & need) !== need) break;
    bytes += PAGE;
    page++;
  }
  return bytes;
}

// Byte order by arithmetic (no DataView), as in test/model.test.ts.
function encodeValue(value: number | bigint, width: number, little: boolean): number[] {
  const bytes: number[] = [];
  let rest = BigInt(value);
  for (let index = 0; index < width; index++) {
    bytes.push(Number(rest & 0xffn));
    rest >>= 8n;
  }
  return little ? bytes : bytes.reverse();
}

function decodeValue(bytes: readonly number[], width: number, little: boolean): number | bigint {
  const ordered = little ? [...bytes].reverse() : bytes;
  const value = ordered.reduce((sum, byte) => (sum << 8n) | BigInt(byte), 0n);
  return width === 8 ? value : Number(value);
}

function gatherModel(model: Model, runs: readonly [number, number][]): number[] {
  return runs.flatMap(([gpa, length]) => Array.from(model.ram.subarray(gpa, gpa + length)));
}

function scatterModel(
  model: Model,
  runs: readonly [number, number][],
  bytes: ArrayLike<number>,
): void {
  let position = 0;
  for (const [gpa, length] of runs) {
    for (let index = 0; index < length; index++)
      model.ram[gpa + index] = bytes[position + index] as number;
    position += length;
  }
}

// ---------------------------------------------------------------------------------------
// The system under test

interface Real {
  readonly memory: GuestMemory;
  readonly domain: IommuDomain;
  readonly ctx: DMAContext;
  readonly faults: IommuFault[];
  readonly views: Uint8Array[];
}

/** Deterministic bytes for buffers, so that commands carry a seed rather than kilobytes. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = (seed * 2654435761) | 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index;
  return a.length === b.length ? -1 : length;
}

function attempt(action: () => unknown): Outcome {
  try {
    return { ok: true, value: action() };
  } catch (caught) {
    if (!(caught instanceof DMAError)) throw caught;
    if (!(caught instanceof DMAFault)) return { ok: false, code: caught.code };
    return {
      ok: false,
      code: caught.code,
      fault: {
        addr: caught.addr,
        length: caught.length,
        attrs: caught.attrs,
        reason: caught.reason,
        access: caught.access,
      },
    };
  }
}

// ---------------------------------------------------------------------------------------
// Comparing one command

const tally = {
  commands: 0,
  runs: 0,
  outcomes: {} as Record<string, number>,
  pageCrossingSuccesses: 0,
  viewWrites: 0,
  shortViews: 0,
  /** Maps and splitting unmaps refused because the table was full. */
  tableFull: 0,
  /** Unmaps that split a mapping in two. */
  splits: 0,
};

/**
 * Compares the library's outcome with the model's, and the listener's records with the
 * fault: exactly one record equal to an IOMMU fault's fields, none otherwise. `reports` is
 * false where no record may appear (`valid`, domain map/unmap).
 */
function compare(
  label: string,
  real: Real,
  actual: Outcome,
  expected: Outcome,
  reports: boolean | 'checked by the caller' = true,
): void {
  const key = actual.ok ? 'ok' : actual.code;
  tally.outcomes[key] = (tally.outcomes[key] ?? 0) + 1;
  expect(actual, label).toEqual(expected);
  if (reports === 'checked by the caller') return;
  const fault = actual.ok ? undefined : actual.fault;
  const expectedRecords =
    reports && fault?.reason !== undefined
      ? [
          {
            iova: fault.addr,
            length: fault.length,
            attrs: fault.attrs,
            reason: fault.reason,
            ...(fault.access === undefined ? {} : { access: fault.access }),
          },
        ]
      : [];
  expect(real.faults, `${label}: listener`).toEqual(expectedRecords);
  real.faults.length = 0;
}

/** Every byte of guest RAM agrees with the model. */
function compareMemory(label: string, model: Model, real: Real): void {
  for (const region of RAM) {
    const bytes = new Uint8Array(region.size);
    real.memory.read(region.base, bytes);
    const at = firstDifference(bytes, model.ram.subarray(region.base, region.base + region.size));
    expect(at === -1 ? -1 : region.base + at, `${label}: first guest byte that differs`).toBe(-1);
  }
}

class Step implements fc.Command<Model, Real> {
  constructor(
    readonly label: string,
    readonly body: (model: Model, real: Real) => void,
    readonly needsView = false,
  ) {}

  check(model: Readonly<Model>): boolean {
    return !this.needsView || model.views.length > 0;
  }

  run(model: Model, real: Real): void {
    tally.commands++;
    this.body(model, real);
    compareMemory(this.label, model, real);
  }

  toString(): string {
    return this.label;
  }
}

// ---------------------------------------------------------------------------------------
// The commands

const hex = (value: number): string => `0x${value.toString(16)}`;

const offsetArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(0, 1, PAGE - 1, PAGE - 2, PAGE - 3, PAGE - 4, PAGE - 8, PAGE / 2),
  },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: PAGE - 1 }) },
);
/**
 * Where an access goes: usually into a page the model has mapped (the `pick`-th, resolved
 * when the command runs), else any of the 16 mappable pages and two pages past them.
 */
interface Locator {
  readonly mapped: boolean;
  readonly pick: number;
  readonly page: number;
  readonly offset: number;
}

const iovaArb: fc.Arbitrary<Locator> = fc.record({
  mapped: fc.oneof(
    { weight: 3, arbitrary: fc.constant(true) },
    { weight: 2, arbitrary: fc.constant(false) },
  ),
  pick: fc.nat(),
  page: fc.integer({ min: 0, max: IOVA_PAGES + 1 }),
  offset: offsetArb,
});

function locate(model: Model, where: Locator): number {
  const mapped = [...model.pages.keys()].sort((a, b) => a - b);
  const page =
    where.mapped && mapped.length > 0 ? (mapped[where.pick % mapped.length] as number) : where.page;
  return page * PAGE + where.offset;
}

function show(where: Locator): string {
  return where.mapped
    ? `<mapped page #${where.pick}>+${hex(where.offset)}`
    : hex(where.page * PAGE + where.offset);
}

const lengthArb = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 64 }) },
  { weight: 3, arbitrary: fc.integer({ min: 65, max: 2 * PAGE + PAGE / 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(PAGE, 2 * PAGE) },
);
/** Usually aligned; sometimes off by an amount that breaks page alignment. */
const misalignArb = fc.oneof(
  { weight: 20, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.constantFrom(1, 512, PAGE / 2, -PAGE, 0.5) },
);

const VALID_PERMS: readonly unknown[] = [
  R,
  W,
  R | W,
  { read: true },
  { write: true },
  { read: true, write: true },
];
const BAD_PERMS: readonly unknown[] = [
  X,
  R | X,
  R | W | X,
  0,
  { relaxed: true },
  {},
  { write: true, relaxed: true },
  8,
  { reed: true },
];

const mapArb = fc
  .record({
    iovaPage: fc.integer({ min: 0, max: IOVA_PAGES - 1 }),
    gpaPage: fc.integer({ min: 0, max: GPA_PAGES - 1 }),
    pages: fc.oneof(
      { weight: 30, arbitrary: fc.integer({ min: 1, max: 6 }) },
      { weight: 1, arbitrary: fc.constant(0) },
    ),
    perm: fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(...VALID_PERMS) },
      { weight: 1, arbitrary: fc.constantFrom(...BAD_PERMS) },
    ),
    iovaSkew: misalignArb,
    gpaSkew: misalignArb,
    sizeSkew: misalignArb,
  })
  .map(({ iovaPage, gpaPage, pages, perm, iovaSkew, gpaSkew, sizeSkew }) => {
    const iova = iovaPage * PAGE + iovaSkew;
    const gpa = gpaPage * PAGE + gpaSkew;
    const size = pages * PAGE + sizeSkew;
    const label = `domain.map(${hex(iova)}, ${hex(gpa)}, ${hex(size)}, ${JSON.stringify(perm)})`;
    return new Step(label, (model, real) => {
      const actual = attempt(() => {
        real.domain.map(iova, gpa, size, perm as number);
      });
      const expected = ((): Outcome => {
        const bits = attributeBits(perm);
        if (bits === undefined || (bits & (R | W)) === 0 || (bits & X) !== 0)
          return error('ERR_DMA_INVALID_ATTRIBUTES');
        if (!isPageMultiple(iova) || !isPageMultiple(gpa) || !isPageMultiple(size) || size === 0) {
          return error('ERR_DMA_INVALID_ARGUMENT');
        }
        const first = iova / PAGE;
        const count = size / PAGE;
        for (let page = first; page < first + count; page++) {
          if (model.pages.has(page)) return error('ERR_DMA_IOMMU_OVERLAP');
        }
        if (model.mappingCount >= model.maxMappings) {
          tally.tableFull++;
          return error('ERR_DMA_INVALID_ARGUMENT');
        }
        const id = model.nextId++;
        for (let index = 0; index < count; index++) {
          model.pages.set(first + index, { gpaPage: gpa / PAGE + index, perm: bits, id });
        }
        return { ok: true, value: undefined };
      })();
      compare(label, real, actual, expected, false);
      expect(real.domain.mappingCount).toBe(model.mappingCount);
    });
  });

const unmapArb = fc
  .record({
    iovaPage: fc.integer({ min: 0, max: IOVA_PAGES - 1 }),
    pages: fc.oneof(
      { weight: 20, arbitrary: fc.integer({ min: 1, max: 2 }) },
      { weight: 10, arbitrary: fc.integer({ min: 3, max: 5 }) },
      { weight: 2, arbitrary: fc.constant(IOVA_PAGES) },
      { weight: 1, arbitrary: fc.constant(0) },
    ),
    iovaSkew: misalignArb,
    sizeSkew: misalignArb,
  })
  .map(({ iovaPage, pages, iovaSkew, sizeSkew }) => {
    const iova = iovaPage * PAGE + iovaSkew;
    const size = pages * PAGE + sizeSkew;
    const label = `domain.unmap(${hex(iova)}, ${hex(size)})`;
    return new Step(label, (model, real) => {
      const actual = attempt(() => real.domain.unmap(iova, size));
      const expected = ((): Outcome => {
        if (!isPageMultiple(iova) || !isPageMultiple(size) || size === 0)
          return error('ERR_DMA_INVALID_ARGUMENT');
        const first = iova / PAGE;
        const end = first + size / PAGE;
        const before = model.pages.get(first - 1);
        const after = model.pages.get(end);
        const splits = after !== undefined && before?.id === after.id;
        if (splits && model.mappingCount >= model.maxMappings) {
          tally.tableFull++;
          return error('ERR_DMA_INVALID_ARGUMENT');
        }
        if (splits) tally.splits++;
        let removed = 0;
        for (let page = first; page < end; page++) {
          if (model.pages.delete(page)) removed += PAGE;
        }
        if (splits) {
          const id = model.nextId++;
          for (let page = end; model.pages.get(page)?.id === after.id; page++) {
            model.pages.set(page, {
              ...after,
              gpaPage: (model.pages.get(page) as Entry).gpaPage,
              id,
            });
          }
        }
        return { ok: true, value: removed };
      })();
      compare(label, real, actual, expected, false);
      expect(real.domain.mappingCount).toBe(model.mappingCount);
    });
  });

const TRANSLATE_ATTRS: readonly unknown[] = [
  R,
  W,
  R | W,
  R | X,
  W | X,
  { read: true },
  { write: true, relaxed: true },
];

const translateArb = fc
  .record({
    iova: iovaArb,
    attrs: fc.oneof(
      { weight: 10, arbitrary: fc.constantFrom(...TRANSLATE_ATTRS) },
      { weight: 1, arbitrary: fc.constantFrom(0, X, { relaxed: true }, 9) },
    ),
  })
  .map(
    ({ iova: where, attrs }) =>
      new Step(`domain.translate(${show(where)}, ${JSON.stringify(attrs)})`, (model, real) => {
        const iova = locate(model, where);
        const actual = attempt(() => ({ ...real.domain.translate(iova, attrs as number) }));
        const expected = ((): Outcome => {
          const bits = attributeBits(attrs);
          if (bits === undefined || (bits & (R | W)) === 0)
            return error('ERR_DMA_INVALID_ATTRIBUTES');
          const need = bits & (R | W);
          const entry = model.pages.get(Math.floor(iova / PAGE));
          if (entry === undefined) {
            return error('ERR_DMA_IOMMU_UNMAPPED', {
              addr: iova,
              length: undefined,
              attrs: bits,
              reason: 'unmapped',
              access: undefined,
            });
          }
          if ((entry.perm & need) !== need) {
            return error('ERR_DMA_IOMMU_PERMISSION', {
              addr: iova,
              length: undefined,
              attrs: bits,
              reason: 'permission',
              access: refusedAccess(entry.perm, need),
            });
          }
          return {
            ok: true,
            value: {
              gpa: entry.gpaPage * PAGE + (iova % PAGE),
              length: modelRun(model, iova, need),
              perm: entry.perm,
            },
          };
        })();
        // The spec leaves the length a translate fault reports open: only the listener must agree.
        const comparable: Outcome =
          !actual.ok && actual.fault !== undefined
            ? { ...actual, fault: { ...actual.fault, length: undefined } }
            : actual;
        compare(
          `domain.translate(${hex(iova)}, ${JSON.stringify(attrs)})`,
          real,
          comparable,
          expected,
          'checked by the caller',
        );
        const record = real.faults;
        if (!actual.ok && actual.fault !== undefined) {
          expect(record).toEqual([
            {
              iova: actual.fault.addr,
              length: actual.fault.length,
              attrs: actual.fault.attrs,
              reason: actual.fault.reason,
              ...(actual.fault.access === undefined ? {} : { access: actual.fault.access }),
            },
          ]);
        } else {
          expect(record).toEqual([]);
        }
        record.length = 0;
      }),
  );

type AccessKind = 'read' | 'write' | 'rw' | 'set';

const READ_ATTRS: readonly unknown[] = [undefined, R, X, R | X, { relaxed: true }, { read: true }];
const WRITE_ATTRS: readonly unknown[] = [
  undefined,
  W,
  X,
  W | X,
  { relaxed: true },
  { write: true },
];
const RW_ATTRS: readonly unknown[] = [
  R,
  W,
  R | X,
  W | X,
  { write: true },
  { read: true, relaxed: true },
];

/** The attributes an accessor runs with (SPEC §6), or undefined when they are refused. */
function accessBits(kind: AccessKind, attrs: unknown): number | undefined {
  if (kind === 'rw') {
    const bits = attributeBits(attrs);
    if (bits === undefined) return undefined;
    const direction = bits & (R | W);
    return direction === R || direction === W ? bits : undefined;
  }
  const implied = kind === 'read' ? R : W;
  if (attrs === undefined) return implied;
  const bits = attributeBits(attrs);
  if (bits === undefined || (bits & (R | W) & ~implied) !== 0) return undefined;
  return bits | implied;
}

const accessArb = fc
  .constantFrom<AccessKind>('read', 'write', 'rw', 'set')
  .chain((kind) =>
    fc.record({
      kind: fc.constant(kind),
      iova: iovaArb,
      length: lengthArb,
      seed: fc.nat(),
      attrs: fc.oneof(
        {
          weight: 12,
          arbitrary: fc.constantFrom(
            ...(kind === 'read' ? READ_ATTRS : kind === 'rw' ? RW_ATTRS : WRITE_ATTRS),
          ),
        },
        {
          weight: 1,
          arbitrary: fc.constantFrom(kind === 'read' ? W : R, R | W, { read: true, write: true }),
        },
      ),
    }),
  )
  .map(({ kind, iova: where, length, seed, attrs }) => {
    const step = `ctx.${kind}(${show(where)}, ${length} bytes, ${JSON.stringify(attrs)})`;
    return new Step(step, (model, real) => {
      const iova = locate(model, where);
      const label = `ctx.${kind}(${hex(iova)}, ${length} bytes, ${JSON.stringify(attrs)})`;
      const buffer = pattern(length, seed);
      const original = buffer.slice();
      const value = seed & 0xff;
      const actual = attempt(() => {
        if (kind === 'read') real.ctx.read(iova, buffer, attrs as number);
        else if (kind === 'write') real.ctx.write(iova, buffer, attrs as number);
        else if (kind === 'rw') real.ctx.rw(iova, buffer, attrs as number);
        else real.ctx.set(iova, value, length, attrs as number);
      });
      const bits = accessBits(kind, attrs);
      let bufferAfter: ArrayLike<number> = original;
      const expected = ((): Outcome => {
        if (bits === undefined) return error('ERR_DMA_INVALID_ATTRIBUTES');
        const result = modelAccess(model, iova, length, bits);
        if ('error' in result) return result.error;
        if ((bits & R) !== 0) bufferAfter = gatherModel(model, result.runs);
        else
          scatterModel(
            model,
            result.runs,
            kind === 'set' ? new Uint8Array(length).fill(value) : original,
          );
        if (result.runs.length > 1) tally.pageCrossingSuccesses++;
        return { ok: true, value: undefined };
      })();
      compare(label, real, actual, expected);
      expect(firstDifference(buffer, bufferAfter), `${label}: first buffer byte that differs`).toBe(
        -1,
      );
    });
  });

const VIEW_ATTRS: readonly unknown[] = [
  R,
  W,
  R | W,
  R | X,
  W | X,
  R | W | X,
  { write: true },
  { read: true, write: true },
];

const mapViewArb = fc
  .record({
    iova: iovaArb,
    length: fc.integer({ min: 1, max: 3 * PAGE }),
    attrs: fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(...VIEW_ATTRS) },
      { weight: 1, arbitrary: fc.constantFrom(0, X, { relaxed: true }) },
    ),
  })
  .map(({ iova: where, length, attrs }) => {
    const step = `ctx.map(${show(where)}, ${length}, ${JSON.stringify(attrs)})`;
    return new Step(step, (model, real) => {
      const iova = locate(model, where);
      const label = `ctx.map(${hex(iova)}, ${length}, ${JSON.stringify(attrs)})`;
      let view: Uint8Array | undefined;
      const actual = attempt(() => {
        view = real.ctx.map(iova, length, attrs as number);
        return view.length;
      });
      let expectedView: ModelView | undefined;
      const expected = ((): Outcome => {
        const bits = attributeBits(attrs);
        if (bits === undefined || (bits & (R | W)) === 0)
          return error('ERR_DMA_INVALID_ATTRIBUTES');
        const need = bits & (R | W);
        const entry = model.pages.get(Math.floor(iova / PAGE));
        if (entry === undefined) {
          return error('ERR_DMA_IOMMU_UNMAPPED', {
            addr: iova,
            length,
            attrs: bits,
            reason: 'unmapped',
            access: undefined,
          });
        }
        if ((entry.perm & need) !== need) {
          return error('ERR_DMA_IOMMU_PERMISSION', {
            addr: iova,
            length,
            attrs: bits,
            reason: 'permission',
            access: refusedAccess(entry.perm, need),
          });
        }
        const gpa = entry.gpaPage * PAGE + (iova % PAGE);
        const extent = ramExtent(gpa);
        if (extent === 0) {
          return error('ERR_DMA_UNASSIGNED', {
            addr: iova,
            length,
            attrs: bits,
            reason: undefined,
            access: undefined,
          });
        }
        const mapped = Math.min(length, modelRun(model, iova, need), extent);
        if (mapped < length) tally.shortViews++;
        expectedView = { gpa, length: mapped };
        return { ok: true, value: mapped };
      })();
      compare(label, real, actual, expected);
      if (view !== undefined && expectedView !== undefined) {
        const { gpa, length: mapped } = expectedView;
        expect(
          firstDifference(view, model.ram.subarray(gpa, gpa + mapped)),
          `${label}: view contents`,
        ).toBe(-1);
        real.views.push(view);
        model.views.push(expectedView);
      }
    });
  });

const viewWriteArb = fc
  .record({
    pick: fc.nat(),
    offset: fc.nat(),
    length: fc.integer({ min: 1, max: 300 }),
    seed: fc.nat(),
  })
  .map(
    ({ pick, offset, length, seed }) =>
      new Step(
        `write through view #${pick} at +${offset}, ${length} bytes`,
        (model, real) => {
          const index = pick % model.views.length;
          const view = real.views[index] as Uint8Array;
          const modelView = model.views[index] as ModelView;
          const at = offset % modelView.length;
          const bytes = pattern(Math.min(length, modelView.length - at), seed);
          view.set(bytes, at);
          model.ram.set(bytes, modelView.gpa + at);
          tally.viewWrites++;
        },
        true,
      ),
  );

const unmapViewArb = fc
  .record({ pick: fc.nat(), accessed: fc.option(fc.nat(), { freq: 3 }), twice: fc.boolean() })
  .map(
    ({ pick, accessed, twice }) =>
      new Step(
        `ctx.unmap(view #${pick}, ${String(accessed)})${twice ? ' twice' : ''}`,
        (model, real) => {
          const index = pick % model.views.length;
          const view = real.views[index] as Uint8Array;
          const accessedLength = accessed === null ? undefined : accessed % (view.length + 1);
          compare(
            'ctx.unmap',
            real,
            attempt(() => {
              real.ctx.unmap(view, accessedLength);
            }),
            { ok: true, value: undefined },
          );
          real.views.splice(index, 1);
          model.views.splice(index, 1);
          if (twice)
            compare(
              'ctx.unmap again',
              real,
              attempt(() => {
                real.ctx.unmap(view);
              }),
              error('ERR_DMA_INVALID_ARGUMENT'),
            );
        },
        true,
      ),
  );

type Width = 1 | 2 | 4 | 8;
const MAX = { 1: 0xff, 2: 0xffff, 4: 0xffffffff } as const;

const fixedArb = fc
  .tuple(fc.constantFrom<Width>(1, 2, 4, 8), fc.boolean(), fc.boolean())
  .chain(([width, little, store]) =>
    fc.record({
      width: fc.constant(width),
      little: fc.constant(little),
      store: fc.constant(store),
      iova: iovaArb,
      relaxed: fc.boolean(),
      value:
        width === 8
          ? fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
          : fc.integer({ min: 0, max: MAX[width] }),
    }),
  )
  .map(({ width, little, store, iova: where, relaxed, value }) => {
    const name = `${store ? 'write' : 'read'}U${width * 8}${width === 1 ? '' : little ? 'LE' : 'BE'}`;
    const step = `ctx.${name}(${show(where)}${store ? `, ${String(value)}` : ''}${relaxed ? ', RELAXED' : ''})`;
    return new Step(step, (model, real) => {
      const iova = locate(model, where);
      const label = `ctx.${name}(${hex(iova)}${store ? `, ${String(value)}` : ''}${relaxed ? ', RELAXED' : ''})`;
      const attrs = relaxed ? X : undefined;
      const ctx = real.ctx;
      const actual = attempt(() => {
        if (!store) {
          if (width === 1) return ctx.readU8(iova, attrs);
          if (width === 2) return little ? ctx.readU16LE(iova, attrs) : ctx.readU16BE(iova, attrs);
          if (width === 4) return little ? ctx.readU32LE(iova, attrs) : ctx.readU32BE(iova, attrs);
          return little ? ctx.readU64LE(iova, attrs) : ctx.readU64BE(iova, attrs);
        }
        if (width === 1) ctx.writeU8(iova, value as number, attrs);
        else if (width === 2 && little) ctx.writeU16LE(iova, value as number, attrs);
        else if (width === 2) ctx.writeU16BE(iova, value as number, attrs);
        else if (width === 4 && little) ctx.writeU32LE(iova, value as number, attrs);
        else if (width === 4) ctx.writeU32BE(iova, value as number, attrs);
        else if (little) ctx.writeU64LE(iova, value as bigint, attrs);
        else ctx.writeU64BE(iova, value as bigint, attrs);
        return undefined;
      });
      const bits = (store ? W : R) | (relaxed ? X : 0);
      const expected = ((): Outcome => {
        const result = modelAccess(model, iova, width, bits);
        if ('error' in result) return result.error;
        if (result.runs.length > 1) tally.pageCrossingSuccesses++;
        if (!store)
          return { ok: true, value: decodeValue(gatherModel(model, result.runs), width, little) };
        scatterModel(model, result.runs, encodeValue(value, width, little));
        return { ok: true, value: undefined };
      })();
      compare(label, real, actual, expected);
    });
  });

const validArb = fc
  .record({ iova: iovaArb, length: lengthArb, attrs: fc.constantFrom(...VIEW_ATTRS) })
  .map(({ iova: where, length, attrs }) => {
    const step = `ctx.valid(${show(where)}, ${length}, ${JSON.stringify(attrs)})`;
    return new Step(step, (model, real) => {
      const iova = locate(model, where);
      const label = `ctx.valid(${hex(iova)}, ${length}, ${JSON.stringify(attrs)})`;
      const bits = attributeBits(attrs) as number;
      const actual = attempt(() => real.ctx.valid(iova, length, attrs as number));
      const expected: Outcome = {
        ok: true,
        value: 'runs' in modelAccess(model, iova, length, bits),
      };
      compare(label, real, actual, expected, false);
    });
  });

/** Every IOVA page read back through `translate` in both directions. */
const auditArb = fc.constant(
  new Step('audit the whole table', (model, real) => {
    for (let page = 0; page <= IOVA_PAGES; page++) {
      for (const need of [R, W]) {
        const entry = model.pages.get(page);
        const actual = attempt(() => ({ ...real.domain.translate(page * PAGE, need) }));
        const expected = ((): { ok: boolean; code?: Code; value?: unknown } => {
          if (entry === undefined) return { ok: false, code: 'ERR_DMA_IOMMU_UNMAPPED' };
          if ((entry.perm & need) === 0) return { ok: false, code: 'ERR_DMA_IOMMU_PERMISSION' };
          const length = modelRun(model, page * PAGE, need);
          return { ok: true, value: { gpa: entry.gpaPage * PAGE, length, perm: entry.perm } };
        })();
        expect(actual, `translate page ${page} for ${need === R ? 'READ' : 'WRITE'}`).toMatchObject(
          expected,
        );
        real.faults.length = 0;
      }
    }
    expect(real.domain.mappingCount).toBe(model.mappingCount);
  }),
);

const commandsArb = fc.commands(
  [
    mapArb,
    mapArb,
    mapArb,
    unmapArb,
    unmapArb,
    translateArb,
    accessArb,
    accessArb,
    accessArb,
    accessArb,
    mapViewArb,
    mapViewArb,
    viewWriteArb,
    viewWriteArb,
    unmapViewArb,
    fixedArb,
    fixedArb,
    fixedArb,
    validArb,
    auditArb,
  ],
  { maxCommands: 120, size: 'max' },
);

const setupArb = fc.record({
  maxMappings: fc.constantFrom(3, 4, 6, 65536),
  seed: fc.nat(),
});

// ---------------------------------------------------------------------------------------

const RUNS = 400;

describe('IOMMU + DMA context against a reference model', () => {
  it('the reference model encodes byte order and finds contiguous runs as the spec says', () => {
    expect(encodeValue(0x01020304, 4, true)).toEqual([4, 3, 2, 1]);
    expect(encodeValue(0x0102, 2, false)).toEqual([1, 2]);
    expect(decodeValue([1, 2, 3, 4, 5, 6, 7, 8], 8, false)).toBe(0x0102030405060708n);
    expect(decodeValue([0xff, 0xff, 0xff, 0xff], 4, true)).toBe(0xffffffff);
    const model = new Model(8);
    model.pages.set(0, { gpaPage: 3, perm: R | W, id: 1 });
    model.pages.set(1, { gpaPage: 4, perm: R, id: 2 });
    model.pages.set(2, { gpaPage: 9, perm: R, id: 2 });
    expect(modelRun(model, 10, R)).toBe(2 * PAGE - 10);
    expect(modelRun(model, 10, W)).toBe(PAGE - 10);
    expect(model.mappingCount).toBe(2);
    expect(modelAccess(model, PAGE - 2, 4, W)).toEqual({
      error: error('ERR_DMA_IOMMU_PERMISSION', {
        addr: PAGE - 2,
        length: 4,
        attrs: W,
        reason: 'permission',
        access: 'write',
      }),
    });
    expect(modelAccess(model, PAGE - 2, 4, R)).toEqual({
      runs: [
        [4 * PAGE - 2, 2],
        [4 * PAGE, 2],
      ],
    });
    expect(ramExtent(5 * PAGE + 1)).toBe(PAGE - 1);
    expect(ramExtent(6 * PAGE)).toBe(0);
  });

  it('random command sequences never diverge from the model (≥ 10,000 commands)', () => {
    fc.assert(
      fc.property(setupArb, commandsArb, ({ maxMappings, seed }, commands) => {
        tally.runs++;
        const memory = new GuestMemory({ regions: RAM });
        const model = new Model(maxMappings);
        for (const region of RAM) {
          const bytes = pattern(region.size, seed + region.base);
          memory.write(region.base, bytes);
          model.ram.set(bytes, region.base);
        }
        const faults: IommuFault[] = [];
        const domain = new IommuDomain({
          maxMappings,
          onFault: (fault) => {
            faults.push(fault);
          },
        });
        const real: Real = {
          memory,
          domain,
          ctx: new DMAContext(memory, { iommu: domain }),
          faults,
          views: [],
        };
        fc.modelRun(() => ({ model, real }), commands);
      }),
      { numRuns: RUNS },
    );
    console.info(
      `iommu model: ${tally.commands} commands in ${tally.runs} runs`,
      JSON.stringify(tally),
    );
    expect(tally.commands).toBeGreaterThanOrEqual(10_000);
    // The generator reached every outcome the test claims to compare.
    const { outcomes } = tally;
    expect(outcomes.ok).toBeGreaterThan(2_000);
    expect(outcomes.ERR_DMA_IOMMU_UNMAPPED).toBeGreaterThan(500);
    expect(outcomes.ERR_DMA_IOMMU_PERMISSION).toBeGreaterThan(300);
    expect(outcomes.ERR_DMA_IOMMU_OVERLAP).toBeGreaterThan(200);
    expect(outcomes.ERR_DMA_UNASSIGNED).toBeGreaterThan(200);
    expect(outcomes.ERR_DMA_INVALID_ARGUMENT).toBeGreaterThan(100);
    expect(outcomes.ERR_DMA_INVALID_ATTRIBUTES).toBeGreaterThan(100);
    expect(tally.pageCrossingSuccesses).toBeGreaterThan(200);
    expect(tally.viewWrites).toBeGreaterThan(100);
    expect(tally.shortViews).toBeGreaterThan(100);
    expect(tally.tableFull).toBeGreaterThan(40);
    expect(tally.splits).toBeGreaterThan(25);
  });
});
