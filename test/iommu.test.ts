/**
 * The IOMMU (SPEC §5), the context's translation through it (§6), scatter-gather lists, and
 * the all-or-nothing rule for faults (§7). Every failing access is checked against a
 * snapshot of all of guest memory and of the caller's buffer.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
  type DMAErrorCode,
  type DMAFaultAccess,
  type DMATraceEvent,
  type IommuDomainHandle,
  type IommuDomainOptions,
  type IommuFault,
} from '../src/index.js';

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;
const PAGE = 4096;

/** RAM at guest pages 0..7 and 16..23; pages 8..15 are a hole, and nothing lies past 24. */
const REGIONS = [
  { base: 0, size: 8 * PAGE },
  { base: 16 * PAGE, size: 8 * PAGE },
];
const HOLE_PAGE = 10;

// ---------------------------------------------------------------------------------------
// Helpers

/** Deterministic non-zero bytes, so that a stray zero or a stray copy shows. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = (seed * 2654435761) | 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = ((state >>> 0) % 255) + 1;
  }
  return bytes;
}

/** Guest memory with REGIONS, every RAM byte non-zero and different from its neighbours. */
function newMemory(seed = 1): GuestMemory {
  const memory = new GuestMemory({ regions: REGIONS });
  for (const [index, region] of REGIONS.entries()) {
    memory.write(region.base, pattern(region.size, seed * 10 + index));
  }
  return memory;
}

/** Every byte of the memory's backing store. */
function snapshot(memory: GuestMemory): Uint8Array {
  return new Uint8Array(memory.buffer).slice();
}

/** The index of the first byte where `a` and `b` differ, or -1 when they are equal. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index;
  return a.length === b.length ? -1 : length;
}

/** Guest memory holds exactly `expected` (a snapshot); compared without vitest's slow deep equality. */
function expectMemoryIs(memory: GuestMemory, expected: Uint8Array): void {
  expect(firstDifference(snapshot(memory), expected), 'first changed byte').toBe(-1);
}

/** What the vCPU reads at `gpa`, bypassing the IOMMU. */
function guestBytes(memory: GuestMemory, gpa: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  memory.read(gpa, bytes);
  return bytes;
}

function thrown(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw');
}

function expectCode(action: () => unknown, code: DMAErrorCode): DMAError {
  const error = thrown(action);
  expect(error).toBeInstanceOf(DMAError);
  expect((error as DMAError).code).toBe(code);
  return error as DMAError;
}

interface ExpectedFault {
  readonly code: DMAErrorCode;
  readonly addr: number;
  readonly length: number;
  readonly attrs: number;
  readonly reason?: 'unmapped' | 'permission';
  readonly access?: DMAFaultAccess;
}

function expectFault(action: () => unknown, expected: ExpectedFault): DMAFault {
  const error = thrown(action);
  expect(error).toBeInstanceOf(DMAFault);
  const fault = error as DMAFault;
  expect({
    code: fault.code,
    addr: fault.addr,
    length: fault.length,
    attrs: fault.attrs,
    reason: fault.reason,
    access: fault.access,
  }).toStrictEqual({
    code: expected.code,
    addr: expected.addr,
    length: expected.length,
    attrs: expected.attrs,
    reason: expected.reason,
    access: expected.access,
  });
  return fault;
}

/** The record the listener must have received for a thrown IOMMU fault. */
function recordOf(fault: DMAFault): IommuFault {
  return {
    iova: fault.addr,
    length: fault.length,
    attrs: fault.attrs,
    reason: fault.reason ?? 'unmapped',
    ...(fault.access === undefined ? {} : { access: fault.access }),
  };
}

/** A domain whose listener keeps every fault. */
function recordingDomain(options: Omit<IommuDomainOptions, 'onFault'> = {}): {
  domain: IommuDomain;
  faults: IommuFault[];
} {
  const faults: IommuFault[] = [];
  const domain = new IommuDomain({
    ...options,
    onFault: (fault) => {
      faults.push(fault);
    },
  });
  return { domain, faults };
}

/** The whole table as seen through `translate`, one entry per IOVA page in [0, pages). */
function table(
  domain: IommuDomain,
  pages: number,
): ({ gpa: number; perm: number; length: number } | null)[] {
  const rows: ({ gpa: number; perm: number; length: number } | null)[] = [];
  for (let page = 0; page < pages; page++) {
    const iova = page * domain.pageSize;
    try {
      rows.push({ ...domain.translate(iova, READ) });
    } catch (error) {
      if (!(error instanceof DMAFault)) throw error;
      if (error.reason === 'unmapped') rows.push(null);
      else rows.push({ ...domain.translate(iova, WRITE) });
    }
  }
  return rows;
}

function permName(perm: number): string {
  return perm === READ ? 'READ' : perm === WRITE ? 'WRITE' : 'BIDIRECTIONAL';
}

/** The direction a mapping with `perm` refuses to an access that needs `need`, if any. */
function refused(perm: number, need: number): DMAFaultAccess | undefined {
  if ((need & READ) !== 0 && (perm & READ) === 0) return 'read';
  if ((need & WRITE) !== 0 && (perm & WRITE) === 0) return 'write';
  return undefined;
}

// ---------------------------------------------------------------------------------------
// The domain on its own

describe('IommuDomain: construction', () => {
  it('has a 4096-byte page size by default', () => {
    expect(new IommuDomain().pageSize).toBe(4096);
    expect(new IommuDomain({}).pageSize).toBe(4096);
  });

  it.each([4096, 8192, 16384, 65536, 2 ** 21, 2 ** 30])(
    'accepts the power-of-two page size %i and maps in its units',
    (pageSize) => {
      const domain = new IommuDomain({ pageSize });
      expect(domain.pageSize).toBe(pageSize);
      domain.map(pageSize, 2 * pageSize, pageSize, READ);
      expect(domain.translate(pageSize + 5, READ)).toEqual({
        gpa: 2 * pageSize + 5,
        length: pageSize - 5,
        perm: READ,
      });
      if (pageSize > 4096) {
        expectCode(() => {
          domain.map(4 * pageSize + 4096, 0, pageSize, READ);
        }, 'ERR_DMA_INVALID_ARGUMENT');
        expectCode(() => {
          domain.map(4 * pageSize, 4096, pageSize, READ);
        }, 'ERR_DMA_INVALID_ARGUMENT');
        expectCode(() => {
          domain.map(4 * pageSize, 0, 4096, READ);
        }, 'ERR_DMA_INVALID_ARGUMENT');
        expectCode(() => domain.unmap(pageSize, 4096), 'ERR_DMA_INVALID_ARGUMENT');
      }
    },
  );

  it.each([
    0,
    1,
    512,
    2048,
    4095,
    4097,
    6144,
    12288,
    -4096,
    4096.5,
    NaN,
    Infinity,
    2 ** 53,
    '4096',
    null,
  ])('rejects the page size %s with ERR_DMA_INVALID_ARGUMENT', (pageSize) => {
    expectCode(() => new IommuDomain({ pageSize: pageSize as number }), 'ERR_DMA_INVALID_ARGUMENT');
  });

  it('rejects a listener that is not a function and a bad capacity', () => {
    expectCode(
      () => new IommuDomain({ onFault: 'log' as unknown as () => void }),
      'ERR_DMA_INVALID_ARGUMENT',
    );
    for (const maxMappings of [0, -1, 1.5, NaN, 2 ** 24 + 1, null, '8'] as unknown[]) {
      expectCode(
        () => new IommuDomain({ maxMappings: maxMappings as number }),
        'ERR_DMA_INVALID_ARGUMENT',
      );
    }
  });
});

describe('IommuDomain: map, unmap, translate', () => {
  it('translates an IOVA inside a mapping to the same offset in the guest page', () => {
    const domain = new IommuDomain();
    domain.map(0x10000, 0x3000, 0x2000, BIDIRECTIONAL);
    expect(domain.mappingCount).toBe(1);
    expect(domain.translate(0x10000, READ)).toEqual({ gpa: 0x3000, length: 0x2000, perm: 3 });
    expect(domain.translate(0x11234, WRITE)).toEqual({ gpa: 0x4234, length: 0xdcc, perm: 3 });
    expect(domain.translate(0x11fff, BIDIRECTIONAL | RELAXED)).toEqual({
      gpa: 0x4fff,
      length: 1,
      perm: 3,
    });
    expect(domain.unmap(0x10000, 0x2000)).toBe(0x2000);
    expect(domain.mappingCount).toBe(0);
    expectFault(() => domain.translate(0x10000, READ), {
      code: 'ERR_DMA_IOMMU_UNMAPPED',
      addr: 0x10000,
      length: 1,
      attrs: READ,
      reason: 'unmapped',
    });
  });

  it('lets several IOVAs map the same guest page', () => {
    const domain = new IommuDomain();
    domain.map(0, 0x5000, PAGE, READ);
    domain.map(PAGE * 7, 0x5000, PAGE, WRITE);
    expect(domain.translate(8, READ).gpa).toBe(0x5008);
    expect(domain.translate(PAGE * 7 + 8, WRITE).gpa).toBe(0x5008);
  });

  it.each([
    ['iova not page-aligned', 1, 0, PAGE],
    ['iova one below a page', PAGE - 1, 0, PAGE],
    ['gpa not page-aligned', 0, 0x800, PAGE],
    ['gpa one past a page', 0, PAGE + 1, PAGE],
    ['size not a page multiple', 0, 0, PAGE + 1],
    ['size below a page', 0, 0, 2048],
    ['size zero', 0, 0, 0],
    ['negative iova', -PAGE, 0, PAGE],
    ['negative gpa', 0, -PAGE, PAGE],
    ['negative size', 0, 0, -PAGE],
    ['fractional iova', 0.5, 0, PAGE],
    ['NaN size', 0, 0, NaN],
    ['Infinity gpa', 0, Infinity, PAGE],
    ['iova 2^53', 2 ** 53, 0, PAGE],
    ['iova + size past 2^53', 2 ** 53 - PAGE, 0, 2 * PAGE],
    ['gpa + size past 2^53', 0, 2 ** 53 - PAGE, 2 * PAGE],
    ['a string iova', '4096', 0, PAGE],
    ['a bigint size', 0, 0, 4096n],
  ])(
    'map rejects %s with ERR_DMA_INVALID_ARGUMENT and changes nothing',
    (_label, iova, gpa, size) => {
      const domain = new IommuDomain();
      domain.map(8 * PAGE, 0, PAGE, READ);
      expectCode(() => {
        domain.map(iova as number, gpa, size as number, READ);
      }, 'ERR_DMA_INVALID_ARGUMENT');
      expect(domain.mappingCount).toBe(1);
      expect(table(domain, 10)).toEqual([
        ...Array<null>(8).fill(null),
        { gpa: 0, perm: READ, length: PAGE },
        null,
      ]);
    },
  );

  it.each([
    ['RELAXED', RELAXED],
    ['READ|RELAXED', READ | RELAXED],
    ['BIDIRECTIONAL|RELAXED', BIDIRECTIONAL | RELAXED],
    ['no direction', 0],
    ['flags with relaxed', { write: true, relaxed: true }],
    ['empty flags', {}],
    ['flags with every key false', { read: false, write: false, relaxed: false }],
    ['an unknown bit', 8],
    ['an unknown flag', { raed: true }],
    ['a string', 'READ'],
  ])('map rejects the permission %s with ERR_DMA_INVALID_ATTRIBUTES', (_label, perm) => {
    const domain = new IommuDomain();
    expectCode(() => {
      domain.map(0, 0, PAGE, perm as number);
    }, 'ERR_DMA_INVALID_ATTRIBUTES');
    expect(domain.mappingCount).toBe(0);
  });

  it.each([
    [{ read: true }, READ],
    [{ write: true }, WRITE],
    [{ read: true, write: true }, BIDIRECTIONAL],
    [{ read: true, write: false, relaxed: false }, READ],
  ])('takes the flags object %j as the permission %i', (flags, perm) => {
    const domain = new IommuDomain();
    domain.map(0, PAGE, PAGE, flags);
    const need = perm === WRITE ? WRITE : READ;
    expect(domain.translate(0, need)).toEqual({ gpa: PAGE, length: PAGE, perm });
  });

  it.each([
    ['the same range', 4, 2],
    ['a range inside it', 5, 1],
    ['a range around it', 3, 4],
    ['its first page and the page before', 3, 2],
    ['its last page and the page after', 5, 2],
    ['only its last page', 5, 1],
  ])(
    'mapping over %s is ERR_DMA_IOMMU_OVERLAP and leaves the table unchanged',
    (_label, page, pages) => {
      const domain = new IommuDomain();
      domain.map(4 * PAGE, 0, 2 * PAGE, WRITE);
      domain.map(8 * PAGE, 16 * PAGE, PAGE, READ);
      const before = table(domain, 12);
      expectCode(() => {
        domain.map(page * PAGE, 20 * PAGE, pages * PAGE, BIDIRECTIONAL);
      }, 'ERR_DMA_IOMMU_OVERLAP');
      expect(domain.mappingCount).toBe(2);
      expect(table(domain, 12)).toEqual(before);
    },
  );

  it('maps right next to a mapping on either side without overlap', () => {
    const domain = new IommuDomain();
    domain.map(4 * PAGE, 0, PAGE, READ);
    domain.map(3 * PAGE, 9 * PAGE, PAGE, READ);
    domain.map(5 * PAGE, 9 * PAGE, PAGE, READ);
    expect(domain.mappingCount).toBe(3);
  });

  it('unmapping the middle of a mapping splits it in two', () => {
    const domain = new IommuDomain();
    domain.map(0, 10 * PAGE, 5 * PAGE, BIDIRECTIONAL);
    expect(domain.unmap(2 * PAGE, PAGE)).toBe(PAGE);
    expect(domain.mappingCount).toBe(2);
    expect(table(domain, 6)).toEqual([
      { gpa: 10 * PAGE, perm: 3, length: 2 * PAGE },
      { gpa: 11 * PAGE, perm: 3, length: PAGE },
      null,
      { gpa: 13 * PAGE, perm: 3, length: 2 * PAGE },
      { gpa: 14 * PAGE, perm: 3, length: PAGE },
      null,
    ]);
  });

  it('unmapping the head of a mapping keeps its tail at the same guest pages', () => {
    const domain = new IommuDomain();
    domain.map(PAGE, 10 * PAGE, 3 * PAGE, READ);
    expect(domain.unmap(0, 2 * PAGE)).toBe(PAGE);
    expect(table(domain, 5)).toEqual([
      null,
      null,
      { gpa: 11 * PAGE, perm: READ, length: 2 * PAGE },
      { gpa: 12 * PAGE, perm: READ, length: PAGE },
      null,
    ]);
  });

  it('unmapping the tail of a mapping keeps its head', () => {
    const domain = new IommuDomain();
    domain.map(PAGE, 10 * PAGE, 3 * PAGE, WRITE);
    expect(domain.unmap(3 * PAGE, 4 * PAGE)).toBe(PAGE);
    expect(table(domain, 5)).toEqual([
      null,
      { gpa: 10 * PAGE, perm: WRITE, length: 2 * PAGE },
      { gpa: 11 * PAGE, perm: WRITE, length: PAGE },
      null,
      null,
    ]);
  });

  it('unmap over several mappings and gaps removes them all and counts only mapped bytes', () => {
    const domain = new IommuDomain();
    domain.map(PAGE, 0, 2 * PAGE, READ);
    domain.map(5 * PAGE, 0, PAGE, WRITE);
    domain.map(7 * PAGE, 0, 3 * PAGE, READ);
    expect(domain.unmap(2 * PAGE, 6 * PAGE)).toBe(PAGE + PAGE + PAGE);
    expect(table(domain, 11).map((row) => row?.gpa ?? null)).toEqual([
      null,
      0,
      null,
      null,
      null,
      null,
      null,
      null,
      PAGE,
      2 * PAGE,
      null,
    ]);
  });

  it('unmap of a range with no mapping returns 0 and changes nothing', () => {
    const domain = new IommuDomain();
    domain.map(4 * PAGE, 0, PAGE, READ);
    expect(domain.unmap(0, 4 * PAGE)).toBe(0);
    expect(domain.unmap(5 * PAGE, 100 * PAGE)).toBe(0);
    expect(domain.mappingCount).toBe(1);
    expect(domain.translate(4 * PAGE, READ).gpa).toBe(0);
  });

  it.each([
    ['unaligned iova', 1, PAGE],
    ['unaligned size', 0, 100],
    ['zero size', 0, 0],
    ['negative iova', -PAGE, PAGE],
    ['iova + size past 2^53', 2 ** 53 - PAGE, 2 * PAGE],
    ['NaN', NaN, PAGE],
  ])('unmap rejects %s with ERR_DMA_INVALID_ARGUMENT', (_label, iova, size) => {
    const domain = new IommuDomain();
    domain.map(0, 0, 4 * PAGE, READ);
    expectCode(() => domain.unmap(iova, size), 'ERR_DMA_INVALID_ARGUMENT');
    expect(domain.translate(0, READ).length).toBe(4 * PAGE);
  });

  it('translate length runs across adjacent mappings contiguous in guest space with the needed bit', () => {
    const domain = new IommuDomain();
    domain.map(0, 10 * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(PAGE, 11 * PAGE, 2 * PAGE, READ); // contiguous in both spaces
    domain.map(3 * PAGE, 13 * PAGE, PAGE, WRITE); // contiguous, but write-only
    domain.map(4 * PAGE, 14 * PAGE, PAGE, BIDIRECTIONAL); // contiguous again
    domain.map(5 * PAGE, 30 * PAGE, PAGE, BIDIRECTIONAL); // IOVA-adjacent, not gpa-contiguous
    domain.map(7 * PAGE, 17 * PAGE, PAGE, BIDIRECTIONAL); // gpa-contiguous to page 6, IOVA gap
    domain.map(6 * PAGE, 16 * PAGE, PAGE, BIDIRECTIONAL);

    expect(domain.translate(100, READ)).toEqual({
      gpa: 10 * PAGE + 100,
      length: 3 * PAGE - 100,
      perm: 3,
    });
    expect(domain.translate(100, WRITE)).toEqual({
      gpa: 10 * PAGE + 100,
      length: PAGE - 100,
      perm: 3,
    });
    expect(domain.translate(3 * PAGE, WRITE)).toEqual({
      gpa: 13 * PAGE,
      length: 2 * PAGE,
      perm: WRITE,
    });
    expect(domain.translate(4 * PAGE + 1, READ)).toEqual({
      gpa: 14 * PAGE + 1,
      length: PAGE - 1,
      perm: 3,
    });
    expect(domain.translate(5 * PAGE, BIDIRECTIONAL)).toEqual({
      gpa: 30 * PAGE,
      length: PAGE,
      perm: 3,
    });
    // Pages 6 and 7 were mapped separately, in reverse order, and still form one run.
    expect(domain.translate(6 * PAGE + 8, READ)).toEqual({
      gpa: 16 * PAGE + 8,
      length: 2 * PAGE - 8,
      perm: 3,
    });
  });

  it('translate rejects attributes without a direction and bad IOVAs', () => {
    const domain = new IommuDomain();
    domain.map(0, 0, PAGE, BIDIRECTIONAL);
    expectCode(() => domain.translate(0, 0), 'ERR_DMA_INVALID_ATTRIBUTES');
    expectCode(() => domain.translate(0, RELAXED), 'ERR_DMA_INVALID_ATTRIBUTES');
    expectCode(() => domain.translate(0, { relaxed: true }), 'ERR_DMA_INVALID_ATTRIBUTES');
    expectCode(() => domain.translate(0, 16), 'ERR_DMA_INVALID_ATTRIBUTES');
    for (const iova of [-1, 0.5, NaN, 2 ** 53, '0']) {
      expectCode(() => domain.translate(iova as number, READ), 'ERR_DMA_INVALID_ARGUMENT');
    }
  });

  it('a full table refuses one more mapping, and a split that needs an entry, changing nothing', () => {
    const domain = new IommuDomain({ maxMappings: 2 });
    domain.map(0, 0, 3 * PAGE, READ);
    domain.map(4 * PAGE, 0, PAGE, WRITE);
    const before = table(domain, 6);
    expectCode(() => {
      domain.map(10 * PAGE, 0, PAGE, READ);
    }, 'ERR_DMA_INVALID_ARGUMENT');
    expectCode(() => domain.unmap(PAGE, PAGE), 'ERR_DMA_INVALID_ARGUMENT');
    expect(domain.mappingCount).toBe(2);
    expect(table(domain, 6)).toEqual(before);
    // Trimming a head needs no new entry; removing a mapping frees one.
    expect(domain.unmap(0, PAGE)).toBe(PAGE);
    expect(domain.unmap(4 * PAGE, PAGE)).toBe(PAGE);
    domain.map(10 * PAGE, 0, PAGE, READ);
    expect(domain.mappingCount).toBe(2);
  });
});

describe('IommuDomain: faults', () => {
  it('an unmapped IOVA is a DMAFault ERR_DMA_IOMMU_UNMAPPED with reason "unmapped", reported once', () => {
    const { domain, faults } = recordingDomain();
    domain.map(0, 0, PAGE, READ);
    const fault = expectFault(() => domain.translate(PAGE + 12, WRITE | RELAXED), {
      code: 'ERR_DMA_IOMMU_UNMAPPED',
      addr: PAGE + 12,
      length: 1,
      attrs: WRITE | RELAXED,
      reason: 'unmapped',
    });
    expect(faults).toEqual([recordOf(fault)]);
    expect(faults[0]).not.toHaveProperty('access');
  });

  it.each([
    [READ, WRITE, 'write'],
    [READ, BIDIRECTIONAL, 'write'],
    [WRITE, READ, 'read'],
    [WRITE, BIDIRECTIONAL, 'read'],
  ] as const)(
    'a %i mapping asked for %i refuses the %s with ERR_DMA_IOMMU_PERMISSION',
    (perm, need, access) => {
      const { domain, faults } = recordingDomain();
      domain.map(0, 0, PAGE, perm);
      const fault = expectFault(() => domain.translate(40, need), {
        code: 'ERR_DMA_IOMMU_PERMISSION',
        addr: 40,
        length: 1,
        attrs: need,
        reason: 'permission',
        access,
      });
      expect(fault.message).toContain(access);
      expect(faults).toEqual([recordOf(fault)]);
    },
  );

  it('a listener that throws does not break the domain', () => {
    let calls = 0;
    const domain = new IommuDomain({
      onFault: () => {
        calls++;
        throw new Error('listener bug');
      },
    });
    const memory = newMemory();
    const ctx = new DMAContext(memory, { iommu: domain });
    domain.map(0, 0, PAGE, READ);
    const before = snapshot(memory);
    expectFault(
      () => {
        ctx.write(8, pattern(4, 1));
      },
      {
        code: 'ERR_DMA_IOMMU_PERMISSION',
        addr: 8,
        length: 4,
        attrs: WRITE,
        reason: 'permission',
        access: 'write',
      },
    );
    expectFault(() => ctx.readU32LE(PAGE), {
      code: 'ERR_DMA_IOMMU_UNMAPPED',
      addr: PAGE,
      length: 4,
      attrs: READ,
      reason: 'unmapped',
    });
    expect(calls).toBe(2);
    expectMemoryIs(memory, before);
    // Later accesses, maps and unmaps work as before.
    domain.map(PAGE, 2 * PAGE, PAGE, WRITE);
    ctx.write(PAGE + 4, Uint8Array.of(9, 8, 7));
    expect(guestBytes(memory, 2 * PAGE + 4, 3)).toEqual(Uint8Array.of(9, 8, 7));
    expect(ctx.readU8(3)).toBe(guestBytes(memory, 3, 1)[0]);
    expect(domain.unmap(0, 2 * PAGE)).toBe(2 * PAGE);
    expectCode(() => ctx.readU8(3), 'ERR_DMA_IOMMU_UNMAPPED');
    expect(calls).toBe(3);
  });

  it('every context fault reaches the listener with the fields of the thrown fault', () => {
    const { domain, faults } = recordingDomain();
    const ctx = new DMAContext(newMemory(), { iommu: domain });
    domain.map(0, 0, PAGE, READ);
    domain.map(PAGE, PAGE, PAGE, WRITE);
    const actions: (() => unknown)[] = [
      () => {
        ctx.write(10, new Uint8Array(3));
      },
      () => {
        ctx.read(PAGE + 10, new Uint8Array(3), RELAXED);
      },
      () => {
        ctx.read(PAGE - 4, new Uint8Array(8));
      },
      () => {
        ctx.set(2 * PAGE, 0, 5);
      },
      () => ctx.map(PAGE, 9, BIDIRECTIONAL),
      () => ctx.readU64BE(3 * PAGE),
      () => {
        ctx.writeU16LE(PAGE - 1, 0xffff, { relaxed: true });
      },
    ];
    for (const action of actions) {
      faults.length = 0;
      const error = thrown(action);
      expect(error).toBeInstanceOf(DMAFault);
      expect(faults).toEqual([recordOf(error as DMAFault)]);
    }
  });

  it('valid() reports no fault to the listener', () => {
    const { domain, faults } = recordingDomain();
    const ctx = new DMAContext(newMemory(), { iommu: domain });
    domain.map(0, 0, PAGE, READ);
    expect(ctx.valid(0, 8, WRITE)).toBe(false);
    expect(ctx.valid(PAGE, 8, READ)).toBe(false);
    expect(ctx.valid(PAGE - 4, 8, READ)).toBe(false);
    expect(ctx.valid(0, 8, READ)).toBe(true);
    expect(faults).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// The per-direction rules

type Width = 1 | 2 | 4 | 8;

/** What an access did, checked only when it succeeded. */
interface Prepared {
  /** The caller's buffer, if the access has one. */
  readonly buffer?: Uint8Array;
  readonly call: (ctx: DMAContext, iova: number) => unknown;
  /** Checks the access's effect; `before` is the guest bytes it touched, as they were. */
  readonly verify: (memory: GuestMemory, gpa: number, before: Uint8Array, result: unknown) => void;
}

interface Access {
  readonly name: string;
  /** The direction bits the access needs from the mapping. */
  readonly need: number;
  /** The attributes the access carries, as its fault reports them. */
  readonly attrs: number;
  readonly length: number;
  readonly prepare: (ctx: DMAContext) => Prepared;
}

const LENGTH = 16;

function readInto(
  name: string,
  attrs: number,
  call: (ctx: DMAContext, iova: number, buf: Uint8Array) => void,
): Access {
  return {
    name,
    need: READ,
    attrs,
    length: LENGTH,
    prepare: () => {
      const buffer = pattern(LENGTH, 77);
      return {
        buffer,
        call: (ctx, iova) => {
          call(ctx, iova, buffer);
        },
        verify: (_memory, _gpa, before) => {
          expect(buffer).toEqual(before);
        },
      };
    },
  };
}

function writeFrom(
  name: string,
  attrs: number,
  call: (ctx: DMAContext, iova: number, data: Uint8Array) => void,
): Access {
  return {
    name,
    need: WRITE,
    attrs,
    length: LENGTH,
    prepare: () => {
      const buffer = pattern(LENGTH, 78);
      return {
        buffer,
        call: (ctx, iova) => {
          call(ctx, iova, buffer);
        },
        verify: (memory, gpa) => {
          expect(guestBytes(memory, gpa, LENGTH)).toEqual(pattern(LENGTH, 78));
        },
      };
    },
  };
}

function decode(bytes: Uint8Array, width: Width, little: boolean): number | bigint {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 1) return view.getUint8(0);
  if (width === 2) return view.getUint16(0, little);
  if (width === 4) return view.getUint32(0, little);
  return view.getBigUint64(0, little);
}

function encode(value: number | bigint, width: Width, little: boolean): Uint8Array {
  const bytes = new Uint8Array(width);
  const view = new DataView(bytes.buffer);
  if (width === 1) view.setUint8(0, value as number);
  else if (width === 2) view.setUint16(0, value as number, little);
  else if (width === 4) view.setUint32(0, value as number, little);
  else view.setBigUint64(0, value as bigint, little);
  return bytes;
}

const VALUES = { 1: 0xa5, 2: 0xa55a, 4: 0xdeadbeef, 8: 0x0123456789abcdefn } as const;

const LOADS: readonly [
  string,
  Width,
  boolean,
  (ctx: DMAContext, iova: number) => number | bigint,
][] = [
  ['readU8', 1, true, (ctx, iova) => ctx.readU8(iova)],
  ['readU16LE', 2, true, (ctx, iova) => ctx.readU16LE(iova)],
  ['readU16BE', 2, false, (ctx, iova) => ctx.readU16BE(iova)],
  ['readU32LE', 4, true, (ctx, iova) => ctx.readU32LE(iova)],
  ['readU32BE', 4, false, (ctx, iova) => ctx.readU32BE(iova)],
  ['readU64LE', 8, true, (ctx, iova) => ctx.readU64LE(iova)],
  ['readU64BE', 8, false, (ctx, iova) => ctx.readU64BE(iova)],
];

const STORES: readonly [string, Width, boolean, (ctx: DMAContext, iova: number) => void][] = [
  [
    'writeU8',
    1,
    true,
    (ctx, iova) => {
      ctx.writeU8(iova, VALUES[1]);
    },
  ],
  [
    'writeU16LE',
    2,
    true,
    (ctx, iova) => {
      ctx.writeU16LE(iova, VALUES[2]);
    },
  ],
  [
    'writeU16BE',
    2,
    false,
    (ctx, iova) => {
      ctx.writeU16BE(iova, VALUES[2]);
    },
  ],
  [
    'writeU32LE',
    4,
    true,
    (ctx, iova) => {
      ctx.writeU32LE(iova, VALUES[4]);
    },
  ],
  [
    'writeU32BE',
    4,
    false,
    (ctx, iova) => {
      ctx.writeU32BE(iova, VALUES[4]);
    },
  ],
  [
    'writeU64LE',
    8,
    true,
    (ctx, iova) => {
      ctx.writeU64LE(iova, VALUES[8]);
    },
  ],
  [
    'writeU64BE',
    8,
    false,
    (ctx, iova) => {
      ctx.writeU64BE(iova, VALUES[8]);
    },
  ],
];

function mapAccess(name: string, attrs: number): Access {
  return {
    name,
    need: attrs & BIDIRECTIONAL,
    attrs,
    length: LENGTH,
    prepare: () => ({
      call: (ctx, iova) => ctx.map(iova, LENGTH, attrs),
      verify: (memory, gpa, before, result) => {
        const view = result as Uint8Array;
        expect(view.length).toBe(LENGTH);
        expect(Uint8Array.from(view)).toEqual(before);
        const ctx = contexts.get(memory) as DMAContext;
        if ((attrs & WRITE) !== 0) view.fill(0x3c);
        ctx.unmap(view);
        if ((attrs & WRITE) !== 0) {
          expect(guestBytes(memory, gpa, LENGTH)).toEqual(new Uint8Array(LENGTH).fill(0x3c));
        }
      },
    }),
  };
}

/** The context of each memory in the rules table, for `unmap` in the map checks. */
const contexts = new WeakMap<GuestMemory, DMAContext>();

const ACCESSES: readonly Access[] = [
  readInto('ctx.read', READ, (ctx, iova, buf) => {
    ctx.read(iova, buf);
  }),
  readInto('ctx.read RELAXED', READ | RELAXED, (ctx, iova, buf) => {
    ctx.read(iova, buf, RELAXED);
  }),
  readInto('ctx.rw READ', READ, (ctx, iova, buf) => {
    ctx.rw(iova, buf, READ);
  }),
  readInto('ctx.rw { read, relaxed }', READ | RELAXED, (ctx, iova, buf) => {
    ctx.rw(iova, buf, { read: true, relaxed: true });
  }),
  writeFrom('ctx.write', WRITE, (ctx, iova, data) => {
    ctx.write(iova, data);
  }),
  writeFrom('ctx.write { relaxed }', WRITE | RELAXED, (ctx, iova, data) => {
    ctx.write(iova, data, { relaxed: true });
  }),
  writeFrom('ctx.rw WRITE', WRITE, (ctx, iova, data) => {
    ctx.rw(iova, data, WRITE);
  }),
  {
    name: 'ctx.set',
    need: WRITE,
    attrs: WRITE,
    length: LENGTH,
    prepare: () => ({
      call: (ctx, iova) => {
        ctx.set(iova, 0x5a, LENGTH);
      },
      verify: (memory, gpa) => {
        expect(guestBytes(memory, gpa, LENGTH)).toEqual(new Uint8Array(LENGTH).fill(0x5a));
      },
    }),
  },
  ...LOADS.map(([name, width, little, call]): Access => ({
    name: `ctx.${name}`,
    need: READ,
    attrs: READ,
    length: width,
    prepare: () => ({
      call,
      verify: (_memory, _gpa, before, result) => {
        expect(result).toBe(decode(before, width, little));
      },
    }),
  })),
  ...STORES.map(([name, width, little, call]): Access => ({
    name: `ctx.${name}`,
    need: WRITE,
    attrs: WRITE,
    length: width,
    prepare: () => ({
      call,
      verify: (memory, gpa) => {
        expect(guestBytes(memory, gpa, width)).toEqual(encode(VALUES[width], width, little));
      },
    }),
  })),
  mapAccess('ctx.map READ', READ),
  mapAccess('ctx.map WRITE', WRITE),
  mapAccess('ctx.map BIDIRECTIONAL', BIDIRECTIONAL),
  mapAccess('ctx.map BIDIRECTIONAL|RELAXED', BIDIRECTIONAL | RELAXED),
];

const IOVA = 4 * PAGE;
const GPA = 2 * PAGE;
const OFFSET = 8;

/** Runs `access` at IOVA + OFFSET with IOVA mapped to GPA with `perm` (or not mapped). */
function runRule(access: Access, perm: number | undefined): void {
  const memory = newMemory(3);
  const { domain, faults } = recordingDomain();
  const ctx = new DMAContext(memory, { iommu: domain });
  contexts.set(memory, ctx);
  if (perm !== undefined) domain.map(IOVA, GPA, PAGE, perm);
  const prepared = access.prepare(ctx);
  const memoryBefore = snapshot(memory);
  const bufferBefore = prepared.buffer?.slice();
  const touched = guestBytes(memory, GPA + OFFSET, access.length);
  const denied = perm === undefined ? 'unmapped' : refused(perm, access.need);
  if (denied === undefined) {
    const result = prepared.call(ctx, IOVA + OFFSET);
    prepared.verify(memory, GPA + OFFSET, touched, result);
    expect(faults).toEqual([]);
    return;
  }
  const fault = expectFault(() => prepared.call(ctx, IOVA + OFFSET), {
    code: denied === 'unmapped' ? 'ERR_DMA_IOMMU_UNMAPPED' : 'ERR_DMA_IOMMU_PERMISSION',
    addr: IOVA + OFFSET,
    length: access.length,
    attrs: access.attrs,
    reason: denied === 'unmapped' ? 'unmapped' : 'permission',
    ...(denied === 'unmapped' ? {} : { access: denied }),
  });
  expect(faults).toEqual([recordOf(fault)]);
  expectMemoryIs(memory, memoryBefore);
  expect(prepared.buffer).toEqual(bufferBefore);
}

describe('the per-direction rules', () => {
  for (const perm of [READ, WRITE, BIDIRECTIONAL]) {
    describe(`through a ${permName(perm)} mapping`, () => {
      for (const access of ACCESSES) {
        const denied = refused(perm, access.need);
        it(`${access.name} ${denied === undefined ? 'is allowed and moves the right bytes' : `faults refusing the ${denied} and changes no byte`}`, () => {
          runRule(access, perm);
        });
      }
      for (const attrs of [
        READ,
        WRITE,
        BIDIRECTIONAL,
        READ | RELAXED,
        { write: true, relaxed: true },
      ]) {
        const bits = typeof attrs === 'number' ? attrs : WRITE | RELAXED;
        const allowed = refused(perm, bits & BIDIRECTIONAL) === undefined;
        it(`ctx.valid ${JSON.stringify(attrs)} is ${String(allowed)} and reports nothing`, () => {
          const { domain, faults } = recordingDomain();
          const ctx = new DMAContext(newMemory(), { iommu: domain });
          domain.map(IOVA, GPA, PAGE, perm);
          expect(ctx.valid(IOVA + OFFSET, LENGTH, attrs)).toBe(allowed);
          expect(ctx.valid(IOVA, PAGE, attrs)).toBe(allowed);
          expect(ctx.valid(IOVA + PAGE - 1, 2, attrs)).toBe(false); // runs off the mapping
          expect(faults).toEqual([]);
        });
      }
    });
  }

  describe('with no mapping', () => {
    for (const access of ACCESSES) {
      it(`${access.name} faults ERR_DMA_IOMMU_UNMAPPED and changes no byte`, () => {
        runRule(access, undefined);
      });
    }
    it('ctx.valid is false for every direction and reports nothing', () => {
      const { domain, faults } = recordingDomain();
      const ctx = new DMAContext(newMemory(), { iommu: domain });
      for (const attrs of [READ, WRITE, BIDIRECTIONAL, READ | RELAXED]) {
        expect(ctx.valid(IOVA, LENGTH, attrs)).toBe(false);
      }
      expect(faults).toEqual([]);
    });
  });
});

// ---------------------------------------------------------------------------------------
// The context through an IOMMU

/** A memory, a domain with a listener, and a context that translates through it. */
function setup(seed = 5): {
  memory: GuestMemory;
  domain: IommuDomain;
  faults: IommuFault[];
  ctx: DMAContext;
} {
  const memory = newMemory(seed);
  const { domain, faults } = recordingDomain();
  return { memory, domain, faults, ctx: new DMAContext(memory, { iommu: domain }) };
}

describe('DMAContext with an IOMMU', () => {
  it('a write through an IOVA lands at the mapped guest address and nowhere else', () => {
    const { memory, domain, ctx } = setup();
    domain.map(3 * PAGE, 17 * PAGE, PAGE, WRITE);
    const before = snapshot(memory);
    const data = pattern(100, 9);
    ctx.write(3 * PAGE + 50, data);
    expect(guestBytes(memory, 17 * PAGE + 50, 100)).toEqual(data);
    const after = snapshot(memory);
    // Only those 100 bytes changed: restore them and the snapshots agree.
    memory.write(17 * PAGE + 50, before.subarray(9 * PAGE + 50, 9 * PAGE + 150));
    expectMemoryIs(memory, before);
    expect(firstDifference(after, before)).not.toBe(-1);
  });

  it('page-crossing accesses are split across non-contiguous guest pages', () => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 5 * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(PAGE, 2 * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(2 * PAGE, 20 * PAGE, PAGE, BIDIRECTIONAL);
    const data = pattern(PAGE + 100, 11);
    ctx.write(PAGE - 50, data);
    expect(guestBytes(memory, 6 * PAGE - 50, 50)).toEqual(data.subarray(0, 50));
    expect(guestBytes(memory, 2 * PAGE, PAGE)).toEqual(data.subarray(50, PAGE + 50));
    expect(guestBytes(memory, 20 * PAGE, 50)).toEqual(data.subarray(PAGE + 50));
    const back = new Uint8Array(PAGE + 100);
    ctx.read(PAGE - 50, back);
    expect(back).toEqual(data);
    ctx.set(2 * PAGE - 3, 0xee, 6);
    expect(guestBytes(memory, 3 * PAGE - 3, 3)).toEqual(Uint8Array.of(0xee, 0xee, 0xee));
    expect(guestBytes(memory, 20 * PAGE, 3)).toEqual(Uint8Array.of(0xee, 0xee, 0xee));
    expect(guestBytes(memory, 20 * PAGE + 3, 1)[0]).toBe(data[PAGE + 53]);
  });

  describe('misaligned fixed-width accesses across non-contiguous pages move the right bytes', () => {
    const cases: [Width, number][] = [];
    for (const width of [2, 4, 8] as const) {
      for (let split = 1; split < width; split++) cases.push([width, split]);
    }
    it.each(cases)('width %i with %i byte(s) in the first page', (width, split) => {
      const { memory, domain, ctx } = setup();
      domain.map(6 * PAGE, 18 * PAGE, PAGE, BIDIRECTIONAL);
      domain.map(7 * PAGE, 3 * PAGE, PAGE, BIDIRECTIONAL);
      const iova = 7 * PAGE - split;
      const joined = (): Uint8Array => {
        const bytes = new Uint8Array(width);
        bytes.set(guestBytes(memory, 19 * PAGE - split, split), 0);
        bytes.set(guestBytes(memory, 3 * PAGE, width - split), split);
        return bytes;
      };
      for (const little of [true, false]) {
        const original = joined();
        const load = LOADS.find(([, w, l]) => w === width && l === little);
        const store = STORES.find(([, w, l]) => w === width && l === little);
        if (load === undefined || store === undefined) throw new Error('no accessor');
        expect(load[3](ctx, iova)).toBe(decode(original, width, little));
        const before = snapshot(memory);
        store[3](ctx, iova);
        expect(joined()).toEqual(encode(VALUES[width], width, little));
        expect(load[3](ctx, iova)).toBe(VALUES[width]);
        // Nothing outside the word changed.
        memory.write(19 * PAGE - split, original.subarray(0, split));
        memory.write(3 * PAGE, original.subarray(split));
        expectMemoryIs(memory, before);
      }
    });
  });

  /** Page 0 BIDIRECTIONAL at gpa page 5; page 1 as the case says. */
  const SECOND_PAGES = [
    { label: 'an unmapped page', map: undefined, gpa: 0 },
    { label: 'a READ-only page', map: READ, gpa: 1 },
    { label: 'a WRITE-only page', map: WRITE, gpa: 1 },
    { label: 'a page mapped onto a memory hole', map: BIDIRECTIONAL, gpa: HOLE_PAGE },
  ] as const;

  interface Crossing {
    readonly name: string;
    readonly need: number;
    readonly attrs: number;
    readonly iova: number;
    readonly length: number;
    readonly buffer?: Uint8Array;
    readonly call: (ctx: DMAContext) => unknown;
  }

  function crossings(): Crossing[] {
    const buffer = pattern(64, 21);
    const sgBuffer = pattern(48, 22);
    return [
      {
        name: 'read',
        need: READ,
        attrs: READ,
        iova: PAGE - 32,
        length: 64,
        buffer,
        call: (ctx) => {
          ctx.read(PAGE - 32, buffer);
        },
      },
      {
        name: 'write',
        need: WRITE,
        attrs: WRITE,
        iova: PAGE - 32,
        length: 64,
        buffer,
        call: (ctx) => {
          ctx.write(PAGE - 32, buffer);
        },
      },
      {
        name: 'rw READ|RELAXED',
        need: READ,
        attrs: READ | RELAXED,
        iova: PAGE - 32,
        length: 64,
        buffer,
        call: (ctx) => {
          ctx.rw(PAGE - 32, buffer, READ | RELAXED);
        },
      },
      {
        name: 'set',
        need: WRITE,
        attrs: WRITE,
        iova: PAGE - 1,
        length: 2,
        call: (ctx) => {
          ctx.set(PAGE - 1, 0, 2);
        },
      },
      {
        name: 'readU64LE',
        need: READ,
        attrs: READ,
        iova: PAGE - 7,
        length: 8,
        call: (ctx) => ctx.readU64LE(PAGE - 7),
      },
      {
        name: 'writeU32BE',
        need: WRITE,
        attrs: WRITE,
        iova: PAGE - 2,
        length: 4,
        call: (ctx) => {
          ctx.writeU32BE(PAGE - 2, 0);
        },
      },
      {
        name: 'writeU16LE RELAXED',
        need: WRITE,
        attrs: WRITE | RELAXED,
        iova: PAGE - 1,
        length: 2,
        call: (ctx) => {
          ctx.writeU16LE(PAGE - 1, 0, RELAXED);
        },
      },
      {
        name: 'scatter (bad element last)',
        need: WRITE,
        attrs: WRITE,
        iova: PAGE + 8,
        length: 16,
        buffer: sgBuffer,
        call: (ctx) => {
          new ScatterGatherList(ctx)
            .add(0, 16)
            .add(64, 16)
            .add(PAGE + 8, 16)
            .scatter(sgBuffer);
        },
      },
      {
        name: 'gather (bad element last)',
        need: READ,
        attrs: READ,
        iova: PAGE + 8,
        length: 16,
        buffer: sgBuffer,
        call: (ctx) => {
          new ScatterGatherList(ctx)
            .add(0, 16)
            .add(64, 16)
            .add(PAGE + 8, 16)
            .gather(sgBuffer);
        },
      },
    ];
  }

  for (const second of SECOND_PAGES) {
    for (const crossing of crossings()) {
      const denied = second.map === undefined ? 'unmapped' : refused(second.map, crossing.need);
      const hole = second.gpa === HOLE_PAGE;
      if (denied === undefined && !hole) continue;
      it(`a ${crossing.name} from a mapped page into ${second.label} changes no byte of memory or buffer`, () => {
        const { memory, domain, faults, ctx } = setup(7);
        domain.map(0, 5 * PAGE, PAGE, BIDIRECTIONAL);
        if (second.map !== undefined) domain.map(PAGE, second.gpa * PAGE, PAGE, second.map);
        // Warm the IOTLB on the good page first.
        ctx.read(0, new Uint8Array(8));
        ctx.write(PAGE - 8, new Uint8Array(8));
        const memoryBefore = snapshot(memory);
        const bufferBefore = crossing.buffer?.slice();
        const code: DMAErrorCode =
          denied === 'unmapped'
            ? 'ERR_DMA_IOMMU_UNMAPPED'
            : denied === undefined
              ? 'ERR_DMA_UNASSIGNED'
              : 'ERR_DMA_IOMMU_PERMISSION';
        const fault = expectFault(() => crossing.call(ctx), {
          code,
          addr: crossing.iova,
          length: crossing.length,
          attrs: crossing.attrs,
          ...(denied === undefined
            ? {}
            : { reason: denied === 'unmapped' ? 'unmapped' : 'permission' }),
          ...(denied === undefined || denied === 'unmapped' ? {} : { access: denied }),
        });
        expect(faults).toEqual(denied === undefined ? [] : [recordOf(fault)]);
        expectMemoryIs(memory, memoryBefore);
        expect(crossing.buffer).toEqual(bufferBefore);
      });
    }
  }

  it('one mapping that runs from RAM into a hole: a crossing access faults ERR_DMA_UNASSIGNED even after an IOTLB hit', () => {
    const { memory, domain, faults, ctx } = setup();
    domain.map(0, 7 * PAGE, 2 * PAGE, BIDIRECTIONAL); // gpa page 7 is RAM, page 8 the hole
    ctx.write(PAGE - 16, new Uint8Array(8)); // fills the IOTLB with the whole mapping
    const before = snapshot(memory);
    const data = pattern(32, 4);
    expectFault(
      () => {
        ctx.write(PAGE - 16, data);
      },
      {
        code: 'ERR_DMA_UNASSIGNED',
        addr: PAGE - 16,
        length: 32,
        attrs: WRITE,
      },
    );
    expectFault(
      () => {
        ctx.writeU32LE(PAGE + 4, 1);
      },
      {
        code: 'ERR_DMA_UNASSIGNED',
        addr: PAGE + 4,
        length: 4,
        attrs: WRITE,
      },
    );
    expectMemoryIs(memory, before);
    expect(faults).toEqual([]);
    expect(ctx.valid(PAGE - 16, 32, WRITE)).toBe(false);
    expect(ctx.valid(PAGE - 16, 16, WRITE)).toBe(true);
  });

  it('an IOVA mapped onto a memory hole is ERR_DMA_UNASSIGNED for accesses and map()', () => {
    const { memory, domain, faults, ctx } = setup();
    domain.map(2 * PAGE, HOLE_PAGE * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(3 * PAGE, 30 * PAGE, PAGE, BIDIRECTIONAL); // past the end of RAM
    const before = snapshot(memory);
    const buf = pattern(8, 2);
    for (const iova of [2 * PAGE + 8, 3 * PAGE]) {
      expectFault(
        () => {
          ctx.read(iova, buf);
        },
        {
          code: 'ERR_DMA_UNASSIGNED',
          addr: iova,
          length: 8,
          attrs: READ,
        },
      );
      expectFault(
        () => {
          ctx.set(iova, 1, 3);
        },
        {
          code: 'ERR_DMA_UNASSIGNED',
          addr: iova,
          length: 3,
          attrs: WRITE,
        },
      );
      expectFault(() => ctx.readU16BE(iova), {
        code: 'ERR_DMA_UNASSIGNED',
        addr: iova,
        length: 2,
        attrs: READ,
      });
      expectFault(() => ctx.map(iova, 8, WRITE), {
        code: 'ERR_DMA_UNASSIGNED',
        addr: iova,
        length: 8,
        attrs: WRITE,
      });
      expect(ctx.valid(iova, 8, READ)).toBe(false);
    }
    expect(buf).toEqual(pattern(8, 2));
    expectMemoryIs(memory, before);
    expect(faults).toEqual([]);
  });

  it('map() returns a view that stops where the contiguous mapping ends', () => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 2 * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(PAGE, 3 * PAGE, PAGE, BIDIRECTIONAL); // gpa-contiguous with page 0
    domain.map(2 * PAGE, 17 * PAGE, PAGE, BIDIRECTIONAL); // not contiguous
    domain.map(3 * PAGE, 18 * PAGE, PAGE, READ); // contiguous, but read-only
    const whole = ctx.map(100, 4 * PAGE, WRITE);
    expect(whole.length).toBe(2 * PAGE - 100);
    whole.fill(0x11);
    ctx.unmap(whole);
    expect(guestBytes(memory, 2 * PAGE + 100, 2 * PAGE - 100)).toEqual(
      new Uint8Array(2 * PAGE - 100).fill(0x11),
    );
    const third = ctx.map(2 * PAGE + 10, 3 * PAGE, WRITE);
    expect(third.length).toBe(PAGE - 10); // the READ-only page 3 does not join a WRITE view
    ctx.unmap(third);
    const readable = ctx.map(2 * PAGE + 10, 3 * PAGE, READ);
    expect(readable.length).toBe(2 * PAGE - 10);
    expect(Uint8Array.from(readable)).toEqual(guestBytes(memory, 17 * PAGE + 10, 2 * PAGE - 10));
    ctx.unmap(readable);
    const short = ctx.map(10, 5, BIDIRECTIONAL);
    expect(short.length).toBe(5);
    ctx.unmap(short);
  });

  it('map() stops where guest RAM ends even when the mapping goes on', () => {
    const { domain, ctx } = setup();
    domain.map(0, 7 * PAGE, 2 * PAGE, READ); // gpa page 8 is the hole
    const view = ctx.map(PAGE - 20, 100, READ);
    expect(view.length).toBe(20);
    ctx.unmap(view);
  });

  it('domain.unmap invalidates the IOTLB: an access after it faults though the one before hit', () => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 3 * PAGE, PAGE, BIDIRECTIONAL);
    ctx.write(16, Uint8Array.of(1, 2, 3, 4));
    ctx.write(16, Uint8Array.of(5, 6, 7, 8)); // an IOTLB hit
    expect(ctx.readU32LE(16)).toBe(0x08070605);
    expect(domain.unmap(0, PAGE)).toBe(PAGE);
    const before = snapshot(memory);
    expectFault(
      () => {
        ctx.write(16, Uint8Array.of(9, 9, 9, 9));
      },
      {
        code: 'ERR_DMA_IOMMU_UNMAPPED',
        addr: 16,
        length: 4,
        attrs: WRITE,
        reason: 'unmapped',
      },
    );
    expectCode(() => ctx.readU32LE(16), 'ERR_DMA_IOMMU_UNMAPPED');
    expectMemoryIs(memory, before);
    // Mapped again elsewhere: the access follows the new mapping, not the old one.
    domain.map(0, 4 * PAGE, PAGE, BIDIRECTIONAL);
    ctx.writeU32LE(16, 0xcafef00d);
    expect(decode(guestBytes(memory, 4 * PAGE + 16, 4), 4, true)).toBe(0xcafef00d);
    expect(guestBytes(memory, 3 * PAGE + 16, 4)).toEqual(Uint8Array.of(5, 6, 7, 8));
    // Mapped again read-only: the cached write permission is gone too.
    domain.unmap(0, PAGE);
    domain.map(0, 4 * PAGE, PAGE, READ);
    expectCode(() => {
      ctx.writeU32LE(16, 1);
    }, 'ERR_DMA_IOMMU_PERMISSION');
    expect(ctx.readU32LE(16)).toBe(0xcafef00d);
  });

  it('unmapping one page of a cached multi-page mapping faults that page only', () => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 16 * PAGE, 4 * PAGE, BIDIRECTIONAL);
    for (let page = 0; page < 4; page++) ctx.writeU8(page * PAGE + 1, page + 1);
    domain.unmap(2 * PAGE, PAGE);
    expectCode(() => ctx.readU8(2 * PAGE + 1), 'ERR_DMA_IOMMU_UNMAPPED');
    expectCode(() => {
      ctx.writeU8(2 * PAGE + 1, 0);
    }, 'ERR_DMA_IOMMU_UNMAPPED');
    expect([0, 1, 3].map((page) => ctx.readU8(page * PAGE + 1))).toEqual([1, 2, 4]);
    expect(guestBytes(memory, 18 * PAGE + 1, 1)[0]).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------
// Isolation

describe('isolation between domains', () => {
  it('two domains over one memory never see each other’s mappings', () => {
    const memory = newMemory();
    const a = recordingDomain();
    const b = recordingDomain();
    const ctxA = new DMAContext(memory, { iommu: a.domain });
    const ctxB = new DMAContext(memory, { iommu: b.domain });
    a.domain.map(PAGE, 2 * PAGE, PAGE, BIDIRECTIONAL);
    b.domain.map(PAGE, 20 * PAGE, PAGE, BIDIRECTIONAL);
    a.domain.map(5 * PAGE, 6 * PAGE, PAGE, BIDIRECTIONAL); // only in A
    ctxA.write(PAGE + 4, Uint8Array.of(0xaa, 0xaa));
    ctxB.write(PAGE + 4, Uint8Array.of(0xbb, 0xbb));
    expect(guestBytes(memory, 2 * PAGE + 4, 2)).toEqual(Uint8Array.of(0xaa, 0xaa));
    expect(guestBytes(memory, 20 * PAGE + 4, 2)).toEqual(Uint8Array.of(0xbb, 0xbb));
    expect(ctxA.readU16LE(PAGE + 4)).toBe(0xaaaa);
    expect(ctxB.readU16LE(PAGE + 4)).toBe(0xbbbb);
    expect(a.domain.translate(PAGE, READ).gpa).toBe(2 * PAGE);
    expect(b.domain.translate(PAGE, READ).gpa).toBe(20 * PAGE);

    ctxA.write(5 * PAGE, Uint8Array.of(1));
    const before = snapshot(memory);
    const fault = expectFault(
      () => {
        ctxB.write(5 * PAGE, Uint8Array.of(2));
      },
      {
        code: 'ERR_DMA_IOMMU_UNMAPPED',
        addr: 5 * PAGE,
        length: 1,
        attrs: WRITE,
        reason: 'unmapped',
      },
    );
    expectMemoryIs(memory, before);
    expect(b.faults).toEqual([recordOf(fault)]);
    expect(a.faults).toEqual([]);
    // Unmapping in B does not touch A.
    b.domain.unmap(0, 16 * PAGE);
    expect(ctxA.readU16LE(PAGE + 4)).toBe(0xaaaa);
    expect(a.domain.mappingCount).toBe(2);
  });

  it('random permissions in two domains: every access lacking permission faults and changes no byte', () => {
    const PAGES = 6;
    const permArb = fc.constantFrom<number | undefined>(undefined, READ, WRITE, BIDIRECTIONAL);
    const ramPageArb = fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 16, max: 23 }));
    const domainArb = fc.array(fc.tuple(permArb, ramPageArb), {
      minLength: PAGES,
      maxLength: PAGES,
    });
    const accessArb = fc.record({
      which: fc.constantFrom(0, 1),
      kind: fc.constantFrom('read', 'write', 'set', 'u32', 'store32'),
      iova: fc.integer({ min: 0, max: PAGES * PAGE - 1 }),
      length: fc.integer({ min: 1, max: PAGE + 8 }),
    });
    let denied = 0;
    let allowed = 0;
    fc.assert(
      fc.property(
        domainArb,
        domainArb,
        fc.array(accessArb, { minLength: 1, maxLength: 12 }),
        (tableA, tableB, accesses) => {
          const memory = newMemory(2);
          const sides = [tableA, tableB].map((pages) => {
            const { domain, faults } = recordingDomain();
            pages.forEach(([perm, gpaPage], page) => {
              if (perm !== undefined) domain.map(page * PAGE, gpaPage * PAGE, PAGE, perm);
            });
            return { pages, faults, ctx: new DMAContext(memory, { iommu: domain }) };
          });
          for (const access of accesses) {
            const side = sides[access.which] as (typeof sides)[number];
            const need = access.kind === 'read' || access.kind === 'u32' ? READ : WRITE;
            const length = access.kind === 'u32' || access.kind === 'store32' ? 4 : access.length;
            const first = Math.floor(access.iova / PAGE);
            const last = Math.floor((access.iova + length - 1) / PAGE);
            let expected:
              { reason: 'unmapped' | 'permission'; access?: DMAFaultAccess } | undefined;
            for (let page = first; page <= last && expected === undefined; page++) {
              const perm = side.pages[page]?.[0];
              if (perm === undefined) expected = { reason: 'unmapped' };
              else if ((perm & need) !== need)
                expected = { reason: 'permission', access: need === READ ? 'read' : 'write' };
            }
            const buffer = pattern(length, access.iova);
            const memoryBefore = snapshot(memory);
            side.faults.length = 0;
            const run = (): unknown => {
              if (access.kind === 'read') {
                side.ctx.read(access.iova, buffer);
                return undefined;
              }
              if (access.kind === 'write') {
                side.ctx.write(access.iova, buffer);
                return undefined;
              }
              if (access.kind === 'set') {
                side.ctx.set(access.iova, 0, length);
                return undefined;
              }
              if (access.kind === 'u32') return side.ctx.readU32LE(access.iova);
              side.ctx.writeU32LE(access.iova, 0x12345678);
              return undefined;
            };
            if (expected === undefined) {
              allowed++;
              run();
              continue;
            }
            denied++;
            const fault = expectFault(run, {
              code:
                expected.reason === 'unmapped'
                  ? 'ERR_DMA_IOMMU_UNMAPPED'
                  : 'ERR_DMA_IOMMU_PERMISSION',
              addr: access.iova,
              length,
              attrs: need,
              ...expected,
            });
            expect(side.faults).toEqual([recordOf(fault)]);
            expectMemoryIs(memory, memoryBefore);
            expect(buffer).toEqual(pattern(length, access.iova));
          }
        },
      ),
      { numRuns: 150 },
    );
    expect(denied).toBeGreaterThan(300);
    expect(allowed).toBeGreaterThan(100);
  });
});

// ---------------------------------------------------------------------------------------
// Scatter-gather

describe('ScatterGatherList', () => {
  it('gathers and scatters over several ranges without an IOMMU, across a region boundary', () => {
    const memory = newMemory();
    const ctx = new DMAContext(memory);
    const sg = new ScatterGatherList(ctx)
      .add(100, 10)
      .add(8 * PAGE - 5, 5)
      .add(16 * PAGE, 20)
      .add(7, 0);
    expect(sg.length).toBe(35);
    expect(sg.count).toBe(4);
    const expected = new Uint8Array(35);
    expected.set(guestBytes(memory, 100, 10), 0);
    expected.set(guestBytes(memory, 8 * PAGE - 5, 5), 10);
    expected.set(guestBytes(memory, 16 * PAGE, 20), 15);
    const buf = new Uint8Array(35);
    sg.gather(buf);
    expect(buf).toEqual(expected);
    const data = pattern(35, 8);
    sg.scatter(data);
    expect(guestBytes(memory, 100, 10)).toEqual(data.subarray(0, 10));
    expect(guestBytes(memory, 8 * PAGE - 5, 5)).toEqual(data.subarray(10, 15));
    expect(guestBytes(memory, 16 * PAGE, 20)).toEqual(data.subarray(15));
  });

  it('gathers and scatters through an IOMMU, ranges crossing non-contiguous pages', () => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 6 * PAGE, PAGE, BIDIRECTIONAL);
    domain.map(PAGE, PAGE, PAGE, BIDIRECTIONAL);
    domain.map(4 * PAGE, 19 * PAGE, PAGE, BIDIRECTIONAL);
    const sg = new ScatterGatherList(ctx).add(PAGE - 6, 12).add(4 * PAGE + 100, 8);
    const data = pattern(20, 31);
    sg.scatter(data);
    expect(guestBytes(memory, 7 * PAGE - 6, 6)).toEqual(data.subarray(0, 6));
    expect(guestBytes(memory, PAGE, 6)).toEqual(data.subarray(6, 12));
    expect(guestBytes(memory, 19 * PAGE + 100, 8)).toEqual(data.subarray(12));
    const back = new Uint8Array(20);
    sg.gather(back, RELAXED);
    expect(back).toEqual(data);
  });

  it.each([
    ['unmapped', 'ERR_DMA_IOMMU_UNMAPPED'],
    ['read-only', 'ERR_DMA_IOMMU_PERMISSION'],
    ['hole', 'ERR_DMA_UNASSIGNED'],
  ] as const)('one %s element stops the whole scatter before any byte moves', (kind, code) => {
    const { memory, domain, ctx } = setup();
    domain.map(0, 0, 2 * PAGE, BIDIRECTIONAL);
    if (kind === 'read-only') domain.map(3 * PAGE, 3 * PAGE, PAGE, READ);
    if (kind === 'hole') domain.map(3 * PAGE, HOLE_PAGE * PAGE, PAGE, BIDIRECTIONAL);
    const sg = new ScatterGatherList(ctx)
      .add(0, 8)
      .add(PAGE - 4, 8)
      .add(3 * PAGE, 8)
      .add(16, 8);
    const data = pattern(32, 3);
    const before = snapshot(memory);
    expectCode(() => {
      sg.scatter(data);
    }, code);
    expectMemoryIs(memory, before);
    if (kind !== 'read-only') {
      const buf = pattern(32, 4);
      expectCode(() => {
        sg.gather(buf);
      }, code);
      expect(buf).toEqual(pattern(32, 4));
    }
  });

  it('a gather with one element in a memory hole fills nothing without an IOMMU', () => {
    const memory = newMemory();
    const ctx = new DMAContext(memory);
    const sg = new ScatterGatherList(ctx).add(0, 4).add(8 * PAGE - 2, 4);
    const buf = pattern(8, 6);
    const before = snapshot(memory);
    expectCode(() => {
      sg.gather(buf);
    }, 'ERR_DMA_UNASSIGNED');
    expectCode(() => {
      sg.scatter(buf);
    }, 'ERR_DMA_UNASSIGNED');
    expect(buf).toEqual(pattern(8, 6));
    expectMemoryIs(memory, before);
  });

  it.each([0, 15, 17, 32])(
    'a buffer of %i bytes for a 16-byte list is ERR_DMA_INVALID_ARGUMENT',
    (length) => {
      const memory = newMemory();
      const ctx = new DMAContext(memory);
      const sg = new ScatterGatherList(ctx).add(0, 10).add(PAGE, 6);
      const buf = pattern(length, 1);
      const before = snapshot(memory);
      expectCode(() => {
        sg.gather(buf);
      }, 'ERR_DMA_INVALID_ARGUMENT');
      expectCode(() => {
        sg.scatter(buf);
      }, 'ERR_DMA_INVALID_ARGUMENT');
      expect(buf).toEqual(pattern(length, 1));
      expectMemoryIs(memory, before);
    },
  );

  describe('issues the barrier once per list operation', () => {
    for (const iommu of [false, true]) {
      const label = iommu ? 'with an IOMMU' : 'without an IOMMU';
      const traced = (): { ctx: DMAContext; events: DMATraceEvent[]; sg: ScatterGatherList } => {
        const events: DMATraceEvent[] = [];
        const memory = newMemory();
        const domain = new IommuDomain();
        domain.map(0, 0, 4 * PAGE, BIDIRECTIONAL);
        const ctx = new DMAContext(memory, {
          ...(iommu ? { iommu: domain } : {}),
          trace: (event) => {
            events.push(event);
          },
        });
        const sg = new ScatterGatherList(ctx)
          .add(0, 8)
          .add(PAGE - 4, 8)
          .add(3 * PAGE, 16);
        return { ctx, events, sg };
      };
      const barriers = (events: DMATraceEvent[]): DMATraceEvent[] =>
        events.filter((event) => event.op === 'barrier');

      it(`gather ${label}: one acquire, after the last element`, () => {
        const { events, sg } = traced();
        sg.gather(new Uint8Array(32));
        expect(barriers(events).map((event) => event.barrier)).toEqual(['acquire']);
        expect(events.map((event) => event.op)).toEqual(['read', 'read', 'read', 'barrier']);
      });

      it(`scatter ${label}: one release, before the first element`, () => {
        const { events, sg } = traced();
        sg.scatter(new Uint8Array(32));
        expect(barriers(events).map((event) => event.barrier)).toEqual(['release']);
        expect(events.map((event) => event.op)).toEqual(['barrier', 'write', 'write', 'write']);
      });

      it(`RELAXED gather and scatter ${label}: no barrier`, () => {
        const { events, sg } = traced();
        sg.gather(new Uint8Array(32), RELAXED);
        sg.scatter(new Uint8Array(32), { relaxed: true });
        expect(barriers(events)).toEqual([]);
        expect(events.map((event) => event.op)).toEqual([
          'read',
          'read',
          'read',
          'write',
          'write',
          'write',
        ]);
      });
    }
  });

  it.each([
    ['gather', WRITE],
    ['gather', BIDIRECTIONAL],
    ['gather', { write: true }],
    ['scatter', READ],
    ['scatter', READ | RELAXED],
    ['scatter', { read: true, write: true }],
  ] as const)(
    '%s with attributes %j of the wrong direction is ERR_DMA_INVALID_ATTRIBUTES',
    (op, attrs) => {
      const memory = newMemory();
      const events: DMATraceEvent[] = [];
      const ctx = new DMAContext(memory, {
        trace: (event) => {
          events.push(event);
        },
      });
      const sg = new ScatterGatherList(ctx).add(0, 4).add(PAGE, 4);
      const buf = pattern(8, 12);
      const before = snapshot(memory);
      expectCode(() => {
        if (op === 'gather') sg.gather(buf, attrs);
        else sg.scatter(buf, attrs);
      }, 'ERR_DMA_INVALID_ATTRIBUTES');
      expect(buf).toEqual(pattern(8, 12));
      expectMemoryIs(memory, before);
      expect(events).toEqual([]);
    },
  );
});

// ---------------------------------------------------------------------------------------
// Handles

describe('IommuDomain handles in one thread', () => {
  it('fromHandle(handle()) shares the table both ways, IOTLB included', () => {
    const memory = newMemory();
    const original = recordingDomain({ pageSize: 8192 });
    const copyFaults: IommuFault[] = [];
    const copy = IommuDomain.fromHandle(structuredClone(original.domain.handle()), {
      onFault: (fault) => {
        copyFaults.push(fault);
      },
    });
    expect(copy.pageSize).toBe(8192);
    original.domain.map(0, 8192, 8192, BIDIRECTIONAL);
    expect(copy.translate(8, WRITE)).toEqual({ gpa: 8200, length: 8184, perm: 3 });
    copy.map(8192, 16 * PAGE, 8192, READ);
    expect(original.domain.translate(8192, READ).gpa).toBe(16 * PAGE);
    expect(original.domain.mappingCount).toBe(2);

    const ctxCopy = new DMAContext(memory, { iommu: copy });
    ctxCopy.writeU32LE(8, 0x01020304); // fills the copy's IOTLB
    expect(ctxCopy.readU32LE(8)).toBe(0x01020304);
    expect(original.domain.unmap(0, 8192)).toBe(8192);
    const fault = expectFault(() => ctxCopy.readU32LE(8), {
      code: 'ERR_DMA_IOMMU_UNMAPPED',
      addr: 8,
      length: 4,
      attrs: READ,
      reason: 'unmapped',
    });
    // The fault is reported to the listener of the object it happened through.
    expect(copyFaults).toEqual([recordOf(fault)]);
    expect(original.faults).toEqual([]);
    expect(copy.mappingCount).toBe(1);
  });

  const handle = new IommuDomain().handle();
  it.each([
    ['null', null],
    ['undefined', undefined],
    ['an empty object', {}],
    ['a wrong kind', { ...handle, kind: 'dma-attrs:guest-memory' }],
    ['an ArrayBuffer table', { ...handle, buffer: new ArrayBuffer(handle.buffer.byteLength) }],
    ['a page size that is not a power of two', { ...handle, pageSize: 5000 }],
    [
      'a capacity that does not match the table',
      { ...handle, maxMappings: handle.maxMappings + 1 },
    ],
    ['a table of the wrong size', { ...handle, buffer: new SharedArrayBuffer(64) }],
    ['a guest memory handle', newMemory().handle()],
    ['a string', 'dma-attrs:iommu-domain'],
  ])('fromHandle rejects %s with ERR_DMA_INVALID_ARGUMENT', (_label, bad) => {
    expectCode(() => IommuDomain.fromHandle(bad as IommuDomainHandle), 'ERR_DMA_INVALID_ARGUMENT');
  });
});

// ---------------------------------------------------------------------------------------
// Batches: one entry into the in-flight protocol for several accesses

describe('DMAContext.batch', () => {
  /** The domain's 256 in-flight slots, as the shared buffer holds them after the header. */
  const slotsOf = (domain: IommuDomain): Int32Array =>
    new Int32Array(domain.handle().buffer, 16 * 4, 256);
  const held = (domain: IommuDomain): number[] =>
    [...slotsOf(domain)].flatMap((value, slot) => (value !== 0 ? [slot] : []));

  function mapped(): { memory: GuestMemory; domain: IommuDomain; ctx: DMAContext } {
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(0x10_0000, 2 * PAGE, PAGE, BIDIRECTIONAL);
    return { memory, domain, ctx: new DMAContext(memory, { iommu: domain }) };
  }

  it('returns what fn returns, and runs fn once', () => {
    const { ctx } = mapped();
    let calls = 0;
    expect(
      ctx.batch(() => {
        calls++;
        return ctx.readU32LE(0x10_0000, RELAXED);
      }),
    ).toBe(ctx.readU32LE(0x10_0000, RELAXED));
    expect(calls).toBe(1);
  });

  it('without an IOMMU just calls fn', () => {
    const memory = newMemory();
    const ctx = new DMAContext(memory);
    const data = pattern(64, 5);
    ctx.batch(() => {
      ctx.write(128, data);
    });
    const back = new Uint8Array(64);
    memory.read(128, back);
    expect(back).toEqual(data);
  });

  it.each([undefined, null, 42, 'fn', {}])('rejects %p for fn, naming it', (fn) => {
    const { ctx } = mapped();
    expect(() => ctx.batch(fn as never)).toThrow(
      expect.objectContaining({
        code: 'ERR_DMA_INVALID_ARGUMENT',
        message: expect.stringContaining(`fn`) as string,
      }) as Error,
    );
  });

  it('holds one slot for the whole batch, nested batches included, and gives it back', () => {
    const { domain, ctx } = mapped();
    const buf = new Uint8Array(16);
    const seen: number[][] = [];
    ctx.batch(() => {
      ctx.read(0x10_0000, buf);
      seen.push(held(domain));
      ctx.writeU32LE(0x10_0010, 7, RELAXED);
      ctx.batch(() => {
        ctx.readU64LE(0x10_0020);
        seen.push(held(domain));
      });
      seen.push(held(domain));
    });
    expect(seen[0]).toHaveLength(1);
    expect(seen).toEqual([seen[0], seen[0], seen[0]]);
    expect(held(domain)).toEqual([]);
  });

  it('gives the slot back when fn throws, and the throw goes through', () => {
    const { domain, ctx } = mapped();
    const boom = new Error('boom');
    expect(() =>
      ctx.batch(() => {
        ctx.read(0x10_0000, new Uint8Array(8));
        throw boom;
      }),
    ).toThrow(boom);
    expect(held(domain)).toEqual([]);
  });

  it('faults inside a batch as outside it, changing no byte, and the batch goes on', () => {
    const { memory, ctx } = mapped();
    const before = snapshot(memory);
    const buf = pattern(32, 9);
    let fault: unknown;
    ctx.batch(() => {
      try {
        ctx.write(0x20_0000, buf);
      } catch (error) {
        fault = error;
      }
      ctx.write(0x10_0000, buf);
    });
    expect(fault).toBeInstanceOf(DMAFault);
    expect((fault as DMAFault).code).toBe('ERR_DMA_IOMMU_UNMAPPED');
    const after = snapshot(memory);
    expect(after.subarray(2 * PAGE, 2 * PAGE + 32)).toEqual(buf);
    after.set(before.subarray(2 * PAGE, 2 * PAGE + 32), 2 * PAGE);
    expect(after).toEqual(before);
  });

  it('an unmap from inside the batch takes effect at the next access, without waiting for the batch', () => {
    const { domain, ctx } = mapped();
    const buf = new Uint8Array(8);
    const slots = slotsOf(domain);
    let afterUnmap: unknown;
    ctx.batch(() => {
      ctx.read(0x10_0000, buf); // fills the IOTLB
      domain.unmap(0x10_0000, PAGE);
      // The unmap did not wait out the stall limit and abandon the batch's slot (-1).
      expect([...slots].includes(-1)).toBe(false);
      try {
        ctx.read(0x10_0000, buf);
      } catch (error) {
        afterUnmap = error;
      }
      expect(held(domain)).toHaveLength(1);
    });
    expect((afterUnmap as DMAFault).code).toBe('ERR_DMA_IOMMU_UNMAPPED');
    expect(held(domain)).toEqual([]);
  });

  it('traces every access of a batch as it traces single accesses', () => {
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(0x10_0000, 2 * PAGE, PAGE, BIDIRECTIONAL);
    const events: DMATraceEvent[] = [];
    const ctx = new DMAContext(memory, { iommu: domain, trace: (event) => events.push(event) });
    ctx.batch(() => {
      ctx.read(0x10_0000, new Uint8Array(4));
      ctx.writeU16LE(0x10_0008, 1);
    });
    expect(events.map((event) => [event.op, event.barrier])).toEqual([
      ['read', 'acquire'],
      ['barrier', 'acquire'],
      ['barrier', 'release'],
      ['write', 'release'],
    ]);
  });
});

// The context keeps the translation of its last IOTLB hit (the window, cut to the first RAM
// span) and serves later accesses inside it without the lookup. These pin down that the window
// is never wider, more permissive or longer-lived than the IOTLB entry it copies.
describe('the translation a context keeps from its last IOTLB hit', () => {
  const IOVA = 0x10_0000;
  const inBatch = (ctx: DMAContext, fn: () => void): void => {
    ctx.batch(fn);
  };
  const alone = (_ctx: DMAContext, fn: () => void): void => {
    fn();
  };
  /** Two reads at `addr`: the first fills the IOTLB, the second hits it and keeps it. */
  const keep = (ctx: DMAContext, addr: number): void => {
    ctx.read(addr, new Uint8Array(8), RELAXED);
    ctx.readU32LE(addr, RELAXED);
  };
  const runs = [
    ['inside a batch', inBatch],
    ['on single accesses', alone],
  ] as const;

  it.each(runs)(
    'stops at the end of the first RAM span (%s): the hole past it faults, changing no byte',
    (_, run) => {
      const memory = newMemory();
      const domain = new IommuDomain();
      // IOVA pages 0 and 1 are guest pages 6 and 7, the last of the first span; pages 2 and 3
      // are guest pages 8 and 9, in the hole. One mapping, so one IOTLB run across all four.
      domain.map(IOVA, 6 * PAGE, 4 * PAGE, BIDIRECTIONAL);
      const ctx = new DMAContext(memory, { iommu: domain });
      const before = snapshot(memory);
      const buf = pattern(8, 3);
      const codes: string[] = [];
      run(ctx, () => {
        keep(ctx, IOVA);
        for (const [addr, length] of [
          [IOVA + 2 * PAGE - 4, 8], // straddles the span's end
          [IOVA + 2 * PAGE, 8], // in the hole
        ] as const) {
          try {
            ctx.write(addr, buf.subarray(0, length), RELAXED);
            codes.push('written');
          } catch (error) {
            codes.push((error as DMAError).code);
          }
          try {
            ctx.writeU32LE(addr + 4, 7, RELAXED);
            codes.push('written');
          } catch (error) {
            codes.push((error as DMAError).code);
          }
        }
      });
      expect(codes).toEqual([
        'ERR_DMA_UNASSIGNED',
        'ERR_DMA_UNASSIGNED',
        'ERR_DMA_UNASSIGNED',
        'ERR_DMA_UNASSIGNED',
      ]);
      expectMemoryIs(memory, before);
    },
  );

  it.each(runs)('never lets through a direction the mapping lacks (%s)', (_, run) => {
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(IOVA, 2 * PAGE, PAGE, READ);
    const ctx = new DMAContext(memory, { iommu: domain });
    const before = snapshot(memory);
    const codes: string[] = [];
    run(ctx, () => {
      keep(ctx, IOVA + 8);
      for (const write of [
        () => {
          ctx.write(IOVA + 16, pattern(8, 4), RELAXED);
        },
        () => {
          ctx.writeU32LE(IOVA + 16, 7, RELAXED);
        },
        () => {
          ctx.writeU16LE(IOVA + 16, 7);
        },
      ]) {
        try {
          write();
          codes.push('written');
        } catch (error) {
          codes.push((error as DMAError).code);
        }
      }
    });
    expect(codes).toEqual(Array(3).fill('ERR_DMA_IOMMU_PERMISSION'));
    expectMemoryIs(memory, before);
  });

  it.each(runs)(
    'uses the new translation after an unmap and a map of the same IOVA (%s)',
    (_, run) => {
      const memory = newMemory();
      const domain = new IommuDomain();
      domain.map(IOVA, 2 * PAGE, PAGE, BIDIRECTIONAL);
      const ctx = new DMAContext(memory, { iommu: domain });
      const seen: number[] = [];
      const written = pattern(8, 6);
      run(ctx, () => {
        keep(ctx, IOVA + 8);
        seen.push(ctx.readU32LE(IOVA + 8, RELAXED));
        domain.unmap(IOVA, PAGE);
        domain.map(IOVA, 5 * PAGE, PAGE, BIDIRECTIONAL);
        seen.push(ctx.readU32LE(IOVA + 8, RELAXED));
        ctx.write(IOVA + 16, written, RELAXED);
      });
      const word = (gpa: number): number =>
        new DataView(guestBytes(memory, gpa, 4).slice().buffer).getUint32(0, true);
      expect(seen).toEqual([word(2 * PAGE + 8), word(5 * PAGE + 8)]);
      expect(seen[0]).not.toBe(seen[1]);
      expect(guestBytes(memory, 5 * PAGE + 16, 8)).toEqual(written);
    },
  );

  it.each(runs)('ends with close(): the next access is refused (%s)', (_, run) => {
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(IOVA, 2 * PAGE, PAGE, BIDIRECTIONAL);
    const ctx = new DMAContext(memory, { iommu: domain });
    const codes: string[] = [];
    run(ctx, () => {
      keep(ctx, IOVA);
      domain.close();
      for (const access of [
        () => {
          ctx.read(IOVA, new Uint8Array(8), RELAXED);
        },
        () => ctx.readU32LE(IOVA + 8, RELAXED),
      ]) {
        try {
          access();
          codes.push('read');
        } catch (error) {
          codes.push((error as DMAError).code);
        }
      }
    });
    expect(codes).toEqual(['ERR_DMA_INVALID_ARGUMENT', 'ERR_DMA_INVALID_ARGUMENT']);
  });

  it("follows another domain object's unmap and map made while a batch holds it", () => {
    // The other object shares the table but not this one's IOTLB, so only the shared unmap
    // generation tells this context that its window is stale. Its unmap waits out the stall
    // limit (1 s) for the batch's slot, on this very thread, then goes on.
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(IOVA, 2 * PAGE, PAGE, BIDIRECTIONAL);
    const other = IommuDomain.fromHandle(domain.handle());
    const ctx = new DMAContext(memory, { iommu: domain });
    const seen: number[] = [];
    ctx.batch(() => {
      keep(ctx, IOVA + 8);
      seen.push(ctx.readU32LE(IOVA + 8, RELAXED));
      other.unmap(IOVA, PAGE);
      other.map(IOVA, 5 * PAGE, PAGE, BIDIRECTIONAL);
      seen.push(ctx.readU32LE(IOVA + 8, RELAXED));
      ctx.writeU32LE(IOVA + 16, 0x1234_5678, RELAXED);
    });
    const word = (gpa: number): number =>
      new DataView(guestBytes(memory, gpa, 4).slice().buffer).getUint32(0, true);
    expect(seen).toEqual([word(2 * PAGE + 8), word(5 * PAGE + 8)]);
    expect(seen[0]).not.toBe(seen[1]);
    expect(word(5 * PAGE + 16)).toBe(0x1234_5678);
  });

  it.each(runs)('moves unaligned words byte for byte (%s)', (_, run) => {
    const memory = newMemory();
    const domain = new IommuDomain();
    domain.map(IOVA, 2 * PAGE, PAGE, BIDIRECTIONAL);
    const ctx = new DMAContext(memory, { iommu: domain });
    const read: (number | bigint)[] = [];
    run(ctx, () => {
      keep(ctx, IOVA);
      read.push(ctx.readU16LE(IOVA + 33, RELAXED), ctx.readU32LE(IOVA + 66, RELAXED));
      read.push(ctx.readU64LE(IOVA + 100, RELAXED));
      ctx.writeU16LE(IOVA + 129, 0xa1b2, RELAXED);
      ctx.writeU32LE(IOVA + 162, 0xc3d4_e5f6, RELAXED);
      ctx.writeU64LE(IOVA + 196, 0x0102_0304_0506_0708n, RELAXED);
    });
    const view = (gpa: number, length: number): DataView =>
      new DataView(guestBytes(memory, gpa, length).slice().buffer);
    const base = 2 * PAGE;
    expect(read).toEqual([
      view(base + 33, 2).getUint16(0, true),
      view(base + 66, 4).getUint32(0, true),
      view(base + 100, 8).getBigUint64(0, true),
    ]);
    expect(view(base + 129, 2).getUint16(0, true)).toBe(0xa1b2);
    expect(view(base + 162, 4).getUint32(0, true)).toBe(0xc3d4_e5f6);
    expect(view(base + 196, 8).getBigUint64(0, true)).toBe(0x0102_0304_0506_0708n);
  });

  it.each(['read', 'write'] as const)(
    'a %s in the window of an open batch faults after an unmap made through another handle in this thread',
    (op) => {
      const memory = newMemory();
      const original = new IommuDomain();
      original.map(IOVA, 2 * PAGE, PAGE, BIDIRECTIONAL);
      // Another object on the same table: its IOTLB is its own, as in another thread, so
      // only the batch's generation check can tell it that the mapping went away.
      const copy = IommuDomain.fromHandle(original.handle());
      const ctx = new DMAContext(memory, { iommu: copy });
      const buf = pattern(64, 9);
      let fault: unknown;
      let before: Uint8Array | undefined;
      ctx.batch(() => {
        keep(ctx, IOVA);
        ctx.write(IOVA + 64, pattern(64, 4), RELAXED); // in the window, before the unmap
        // The batch holds its slot, so this waits for the stall limit (about 1 s) first.
        expect(original.unmap(IOVA, PAGE)).toBe(PAGE);
        before = snapshot(memory);
        const held = buf.slice();
        try {
          if (op === 'read') ctx.read(IOVA + 64, buf, RELAXED);
          else ctx.write(IOVA + 64, buf, RELAXED);
        } catch (error) {
          fault = error;
        }
        expect(buf).toEqual(held);
      });
      expect(fault).toBeInstanceOf(DMAFault);
      expect((fault as DMAFault).code).toBe('ERR_DMA_IOMMU_UNMAPPED');
      expect(snapshot(memory)).toEqual(before);
    },
  );

  it('marks the dirty log at the guest-physical page of a write served by it', () => {
    const memory = new GuestMemory({ size: 8 * PAGE, dirtyLog: { clients: ['code'] } });
    const code = memory.dirtyLog('code');
    const domain = new IommuDomain();
    domain.map(IOVA, 3 * PAGE, 2 * PAGE, BIDIRECTIONAL);
    const ctx = new DMAContext(memory, { iommu: domain });
    ctx.batch(() => {
      keep(ctx, IOVA);
      ctx.write(IOVA + PAGE + 64, pattern(8, 7), RELAXED);
      ctx.writeU32LE(IOVA + 128, 9, RELAXED);
    });
    expect(code.collect()).toEqual([3 * PAGE, 4 * PAGE]);
  });
});
