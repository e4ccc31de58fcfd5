/**
 * Dirty tracking (SPEC §4.2 and the issue-10 contract): a `GuestMemory` made with a
 * `dirtyLog` keeps one bitmap per client of the guest-physical pages that writes through
 * the library touched.
 *
 * 1. The `DirtyLog` API, case by case: page size and client, `isDirty` / `collect` /
 *    `mark` / `clear` with and without ranges, clients independent, every write path marks
 *    and no read path does, failed and zero-length writes mark nothing, a map marks at
 *    unmap only, behind an IOMMU the translated pages, bad options and arguments.
 * 2. A property test against a reference model written here from the spec: random
 *    sequences of every write and read path, failing accesses and log operations, on
 *    layouts with holes, unaligned bases and adopted backings at offsets, with and without
 *    an IOMMU, and through a second memory made from the handle.
 * 3. Sharing through `memory.handle()` with a worker (test/workers/dirty-peer.mjs).
 * 4. A race between writer workers and a collector worker (test/workers/dirty-writer.mjs,
 *    dirty-collector.mjs): no write is lost, none is reported twice, none is made up; and a
 *    control with a broken collector (isDirty, then clear) that the same check catches.
 *
 * The workers import the built package from dist/, which `npm test` builds first.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  DMAFault,
  DirtyLog,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
  type DMAAttributesLike,
} from '../src/index.js';
import { Peer, bounded, startWorker, stopWorkersAfterEach } from './support/workers.js';

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;
const P = 4096;
const LIMIT = 2 ** 53;

/** Two workers only race when two CPUs run them at once. */
const PARALLEL = availableParallelism() >= 2;

type Options = ConstructorParameters<typeof GuestMemory>[0];
type Backing = NonNullable<Options['backing']>;

// WebAssembly, typed for what these tests use (the project's lib has no WebAssembly types).
interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => {
    readonly buffer: ArrayBuffer | SharedArrayBuffer;
  };
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

function sharedWasmMemory(pages: number): Backing {
  return new Wasm.Memory({ initial: pages, maximum: pages, shared: true }) as unknown as Backing;
}

/** The code of what `run` threw (a non-DMAError is reported as such), or undefined. */
function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return error instanceof DMAError ? error.code : `not a DMAError: ${String(error)}`;
  }
  return undefined;
}

/** What `run` threw; fails the test when it threw nothing or not a DMAError. */
function errorOf(run: () => unknown): DMAError {
  try {
    run();
  } catch (error) {
    if (error instanceof DMAError) return error;
    throw new Error(`expected a DMAError, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected a DMAError, nothing was thrown');
}

/** Bytes 1..length. */
function bytes(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, index) => (index + 1) & 0xff);
}

// ---------------------------------------------------------------------------------------
// 1. The DirtyLog API

const CLIENTS = ['code', 'migration'] as const;

/** RAM at pages 0..3 and 6..7 (pages 4 and 5 are a hole), a log for 'code' and 'migration'. */
function small(pageSize?: number) {
  const memory = new GuestMemory({
    regions: [
      { base: 0, size: 4 * P },
      { base: 6 * P, size: 2 * P },
    ],
    dirtyLog:
      pageSize === undefined ? { clients: [...CLIENTS] } : { clients: [...CLIENTS], pageSize },
  });
  return {
    memory,
    ctx: new DMAContext(memory),
    code: memory.dirtyLog('code'),
    migration: memory.dirtyLog('migration'),
  };
}

type Small = ReturnType<typeof small>;

interface PathCase {
  readonly name: string;
  readonly run: (setup: Small) => void;
  /** The pages (as guest addresses) the write touched; none for a read. */
  readonly pages: readonly number[];
}

/** Every write path, each across a page boundary where its width allows. */
const WRITE_PATHS: readonly PathCase[] = [
  {
    name: 'ctx.write',
    run: ({ ctx }) => {
      ctx.write(P - 2, bytes(4));
    },
    pages: [0, P],
  },
  {
    name: 'ctx.write RELAXED',
    run: ({ ctx }) => {
      ctx.write(2 * P - 1, bytes(2), RELAXED);
    },
    pages: [P, 2 * P],
  },
  {
    name: 'ctx.rw WRITE',
    run: ({ ctx }) => {
      ctx.rw(2 * P + 5, bytes(10), WRITE);
    },
    pages: [2 * P],
  },
  {
    name: 'ctx.set',
    run: ({ ctx }) => {
      ctx.set(P - 1, 0xaa, P + 2);
    },
    pages: [0, P, 2 * P],
  },
  {
    name: 'writeU8',
    run: ({ ctx }) => {
      ctx.writeU8(3 * P, 1);
    },
    pages: [3 * P],
  },
  {
    name: 'writeU16LE',
    run: ({ ctx }) => {
      ctx.writeU16LE(P - 1, 0x1234);
    },
    pages: [0, P],
  },
  {
    name: 'writeU16BE',
    run: ({ ctx }) => {
      ctx.writeU16BE(2 * P, 0x1234);
    },
    pages: [2 * P],
  },
  {
    name: 'writeU32LE',
    run: ({ ctx }) => {
      ctx.writeU32LE(P - 2, 0x12345678);
    },
    pages: [0, P],
  },
  {
    name: 'writeU32BE',
    run: ({ ctx }) => {
      ctx.writeU32BE(6 * P, 0x12345678);
    },
    pages: [6 * P],
  },
  {
    name: 'writeU64LE',
    run: ({ ctx }) => {
      ctx.writeU64LE(7 * P - 4, 1n);
    },
    pages: [6 * P, 7 * P],
  },
  {
    name: 'writeU64BE',
    run: ({ ctx }) => {
      ctx.writeU64BE(8 * P - 8, 2n ** 64n - 1n);
    },
    pages: [7 * P],
  },
  {
    name: 'sg.scatter',
    run: ({ ctx }) => {
      new ScatterGatherList(ctx)
        .add(5, 2)
        .add(7 * P - 1, 2)
        .scatter(bytes(4));
    },
    pages: [0, 6 * P, 7 * P],
  },
  {
    name: 'memory.write',
    run: ({ memory }) => {
      memory.write(3 * P + 100, bytes(3));
    },
    pages: [3 * P],
  },
  {
    name: 'map WRITE + unmap (whole view)',
    run: ({ ctx }) => {
      const view = ctx.map(P - 4, 8, WRITE);
      view.fill(1);
      ctx.unmap(view);
    },
    pages: [0, P],
  },
  {
    name: 'map BIDIRECTIONAL + unmap(view, accessedLength)',
    run: ({ ctx }) => {
      const view = ctx.map(6 * P + 10, P, BIDIRECTIONAL);
      view.fill(1);
      ctx.unmap(view, P - 10);
    },
    pages: [6 * P],
  },
];

/** Every read path (and a map that is not unmapped): none may mark. */
const READ_PATHS: readonly PathCase[] = [
  {
    name: 'ctx.read',
    run: ({ ctx }) => {
      ctx.read(P - 2, new Uint8Array(4));
    },
    pages: [],
  },
  {
    name: 'ctx.rw READ',
    run: ({ ctx }) => {
      ctx.rw(P, new Uint8Array(4), READ);
    },
    pages: [],
  },
  ...(
    [
      'readU8',
      'readU16LE',
      'readU16BE',
      'readU32LE',
      'readU32BE',
      'readU64LE',
      'readU64BE',
    ] as const
  ).map((method): PathCase => ({
    name: method,
    run: ({ ctx }) => ctx[method](P - 1),
    pages: [],
  })),
  {
    name: 'sg.gather',
    run: ({ ctx }) => {
      new ScatterGatherList(ctx)
        .add(0, 4)
        .add(6 * P, 4)
        .gather(new Uint8Array(8));
    },
    pages: [],
  },
  {
    name: 'memory.read',
    run: ({ memory }) => {
      memory.read(0, new Uint8Array(P));
    },
    pages: [],
  },
  { name: 'ctx.valid', run: ({ ctx }) => ctx.valid(0, P, WRITE), pages: [] },
  {
    name: 'map READ + unmap',
    run: ({ ctx }) => {
      const view = ctx.map(0, 2 * P, READ);
      view.fill(1); // a device that writes through a READ mapping is not a DMA write
      ctx.unmap(view);
    },
    pages: [],
  },
  {
    name: 'map WRITE, written through, not yet unmapped',
    run: ({ ctx }) => {
      ctx.map(0, 2 * P, WRITE).fill(1);
    },
    pages: [],
  },
  {
    name: 'map WRITE + unmap(view, 0)',
    run: ({ ctx }) => {
      const view = ctx.map(0, 2 * P, WRITE);
      view.fill(1);
      ctx.unmap(view, 0);
    },
    pages: [],
  },
];

interface FailCase {
  readonly name: string;
  readonly run: (setup: Small) => void;
  readonly code: string;
}

/** Writes that fail: each must change no bitmap bit. */
const FAILED_WRITES: readonly FailCase[] = [
  {
    name: 'write crossing into the hole',
    run: ({ ctx }) => {
      ctx.write(4 * P - 2, bytes(4));
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'write in the hole',
    run: ({ ctx }) => {
      ctx.write(5 * P, bytes(1));
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'write past the end',
    run: ({ ctx }) => {
      ctx.write(8 * P - 1, bytes(2));
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'write at a bad address',
    run: ({ ctx }) => {
      ctx.write(-1, bytes(1));
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'write of something not a Uint8Array',
    run: ({ ctx }) => {
      ctx.write(0, [1, 2] as unknown as Uint8Array);
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'write with READ',
    run: ({ ctx }) => {
      ctx.write(0, bytes(1), READ);
    },
    code: 'ERR_DMA_INVALID_ATTRIBUTES',
  },
  {
    name: 'rw with BIDIRECTIONAL',
    run: ({ ctx }) => {
      ctx.rw(0, bytes(1), BIDIRECTIONAL);
    },
    code: 'ERR_DMA_INVALID_ATTRIBUTES',
  },
  {
    name: 'set of 256',
    run: ({ ctx }) => {
      ctx.set(0, 256, 4);
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'set crossing into the hole',
    run: ({ ctx }) => {
      ctx.set(4 * P - 1, 0, 2);
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'writeU16LE of 0x10000',
    run: ({ ctx }) => {
      ctx.writeU16LE(0, 0x10000);
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'writeU32LE crossing into the hole',
    run: ({ ctx }) => {
      ctx.writeU32LE(4 * P - 2, 0);
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'writeU64LE of a number',
    run: ({ ctx }) => {
      ctx.writeU64LE(0, 1 as unknown as bigint);
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'writeU8 with READ',
    run: ({ ctx }) => {
      ctx.writeU8(0, 1, READ);
    },
    code: 'ERR_DMA_INVALID_ATTRIBUTES',
  },
  {
    name: 'scatter whose second range is in the hole (the first is RAM)',
    run: ({ ctx }) => {
      new ScatterGatherList(ctx)
        .add(0, 4)
        .add(5 * P, 4)
        .scatter(bytes(8));
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'scatter of data of the wrong length',
    run: ({ ctx }) => {
      new ScatterGatherList(ctx).add(0, 4).scatter(bytes(5));
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
  {
    name: 'memory.write crossing into the hole',
    run: ({ memory }) => {
      memory.write(4 * P - 1, bytes(2));
    },
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'map WRITE in the hole',
    run: ({ ctx }) => ctx.map(5 * P, 1, WRITE),
    code: 'ERR_DMA_UNASSIGNED',
  },
  {
    name: 'unmap with an accessedLength beyond the view',
    run: ({ ctx }) => {
      const view = ctx.map(0, 16, WRITE);
      ctx.unmap(view, 17);
    },
    code: 'ERR_DMA_INVALID_ARGUMENT',
  },
];

/** Writes of zero bytes: they succeed and mark nothing. */
const ZERO_LENGTH_WRITES: readonly PathCase[] = [
  {
    name: 'write of an empty buffer',
    run: ({ ctx }) => {
      ctx.write(P, new Uint8Array(0));
    },
    pages: [],
  },
  {
    name: 'set of length 0',
    run: ({ ctx }) => {
      ctx.set(P, 1, 0);
    },
    pages: [],
  },
  {
    name: 'memory.write of an empty buffer',
    run: ({ memory }) => {
      memory.write(P, new Uint8Array(0));
    },
    pages: [],
  },
  {
    name: 'scatter of an empty range',
    run: ({ ctx }) => {
      new ScatterGatherList(ctx).add(P, 0).scatter(new Uint8Array(0));
    },
    pages: [],
  },
];

describe('DirtyLog: the API', () => {
  it('has its client and its page size (4096 by default), one object per client', () => {
    const { memory, code, migration } = small();
    expect(code).toBeInstanceOf(DirtyLog);
    expect(code.client).toBe('code');
    expect(migration.client).toBe('migration');
    expect(code.pageSize).toBe(4096);
    expect(memory.dirtyLog('code')).toBe(code);
    expect(memory.dirtyLog('migration')).toBe(migration);
    expect(code).not.toBe(migration);
    for (const pageSize of [64, 128, 65536, 2 ** 30]) {
      expect(small(pageSize).code.pageSize).toBe(pageSize);
    }
    const many = Array.from({ length: 32 }, (_, index) => `client ${index}`);
    const wide = new GuestMemory({ size: P, dirtyLog: { clients: many } });
    expect(many.map((client) => wide.dirtyLog(client).client)).toEqual(many);
  });

  it('starts clean', () => {
    const { code, migration } = small();
    for (const log of [code, migration]) {
      expect(log.collect()).toEqual([]);
      expect(log.isDirty(0, 8 * P)).toBe(false);
    }
  });

  it('reports the pages a write touched, ascending, once; for every client', () => {
    const { ctx, code, migration } = small();
    ctx.write(7 * P + 5, bytes(1));
    ctx.write(2 * P - 2, bytes(4)); // pages 1 and 2
    expect(code.isDirty(P, 1)).toBe(true);
    expect(code.isDirty(2 * P + P - 1, 1)).toBe(true);
    expect(code.isDirty(0, P)).toBe(false);
    expect(code.isDirty(3 * P, 3 * P)).toBe(false); // page 3 and the hole
    expect(code.isDirty(P, 0)).toBe(false);
    expect(code.isDirty(0, 8 * P)).toBe(true);
    expect(code.collect()).toEqual([P, 2 * P, 7 * P]);
    // Not written since: not reported again, by the whole or a ranged collect.
    expect(code.collect()).toEqual([]);
    expect(code.collect(0, 8 * P)).toEqual([]);
    expect(code.isDirty(0, 8 * P)).toBe(false);
    // The other client's log is its own.
    expect(migration.collect()).toEqual([P, 2 * P, 7 * P]);
    // Written again: reported again.
    ctx.writeU8(P + 1, 1);
    expect(code.collect()).toEqual([P]);
    expect(migration.collect()).toEqual([P]);
  });

  it('takes ranges page by page: a range touching part of a page takes the whole page', () => {
    const { code } = small();
    code.mark(P, 3 * P); // pages 1, 2, 3
    expect(code.isDirty(2 * P - 1, 1)).toBe(true);
    expect(code.isDirty(P - 1, 1)).toBe(false);
    expect(code.isDirty(P - 1, 2)).toBe(true);
    // [0x1800, 0x2800) touches pages 1 and 2.
    expect(code.collect(P + P / 2, P)).toEqual([P, 2 * P]);
    expect(code.collect()).toEqual([3 * P]);
    code.mark(P, 3 * P);
    code.clear(3 * P + P - 1, 1); // the last byte of page 3
    expect(code.collect()).toEqual([P, 2 * P]);
  });

  it('ranged collect and clear leave every page outside the range as it was', () => {
    const { code, migration } = small();
    code.mark(0, 4 * P);
    code.mark(6 * P, 2 * P);
    expect(code.collect(P, 2 * P)).toEqual([P, 2 * P]);
    code.clear(6 * P, P);
    // A range may take in the hole: hole pages are never dirty.
    expect(code.collect(3 * P, 4 * P)).toEqual([3 * P]);
    expect(code.collect(0, 0)).toEqual([]);
    code.clear(0, 0);
    expect(code.collect()).toEqual([0, 7 * P]);
    // Ranges beyond the end of RAM, and beyond every page the log has.
    code.mark(7 * P, 1);
    expect(code.collect(8 * P, 2 ** 40)).toEqual([]);
    code.clear(2 ** 40, 2 ** 20);
    expect(code.isDirty(2 ** 40, 1)).toBe(false);
    expect(code.collect(7 * P, 2 ** 40)).toEqual([7 * P]);
    expect(migration.collect()).toEqual([]);
  });

  it('keeps clients independent: mark, clear and collect on one leave the other', () => {
    const { ctx, code, migration } = small();
    code.mark(0, 1);
    expect(migration.isDirty(0, 8 * P)).toBe(false);
    expect(migration.collect()).toEqual([]);
    expect(code.collect()).toEqual([0]);

    ctx.write(3 * P, bytes(1));
    code.clear();
    expect(code.collect()).toEqual([]);
    expect(migration.isDirty(3 * P, 1)).toBe(true);
    ctx.write(6 * P, bytes(1));
    expect(code.collect(6 * P, P)).toEqual([6 * P]);
    migration.clear(3 * P, P);
    expect(migration.collect()).toEqual([6 * P]);
    migration.mark(P, 1);
    expect(code.isDirty(0, 8 * P)).toBe(false);
    expect(migration.collect()).toEqual([P]);
  });

  it('marks every client for every write path', () => {
    for (const path of WRITE_PATHS) {
      const setup = small();
      path.run(setup);
      expect(setup.code.collect(), path.name).toEqual(path.pages);
      expect(setup.migration.collect(), path.name).toEqual(path.pages);
    }
  });

  it('marks nothing for a read path, a map before its unmap, or an unmap of nothing', () => {
    for (const path of READ_PATHS) {
      const setup = small();
      path.run(setup);
      expect(setup.code.collect(), path.name).toEqual([]);
      expect(setup.migration.collect(), path.name).toEqual([]);
    }
  });

  it('marks nothing for a write that fails, or a write of zero bytes', () => {
    for (const failed of FAILED_WRITES) {
      const setup = small();
      expect(
        codeOf(() => {
          failed.run(setup);
        }),
        failed.name,
      ).toBe(failed.code);
      expect(setup.code.collect(), failed.name).toEqual([]);
      expect(setup.migration.collect(), failed.name).toEqual([]);
    }
    for (const empty of ZERO_LENGTH_WRITES) {
      const setup = small();
      empty.run(setup);
      expect(setup.code.collect(), empty.name).toEqual([]);
      expect(setup.migration.collect(), empty.name).toEqual([]);
    }
  });

  it('marks a map at unmap only: the first accessedLength bytes, WRITE and BIDIRECTIONAL', () => {
    const { ctx, code, migration } = small();
    const view = ctx.map(P - 10, 3 * P, WRITE);
    expect(view.length).toBe(3 * P);
    view.fill(0xee);
    expect(code.isDirty(0, 8 * P)).toBe(false);
    expect(code.collect()).toEqual([]);
    // A failed unmap marks nothing and leaves the view mapped.
    expect(
      codeOf(() => {
        ctx.unmap(view, 3 * P + 1);
      }),
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(
      codeOf(() => {
        ctx.unmap(view, -1);
      }),
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(code.collect()).toEqual([]);
    ctx.unmap(view, 11); // [P - 10, P + 1): pages 0 and 1
    expect(code.collect()).toEqual([0, P]);
    expect(migration.collect()).toEqual([0, P]);

    const both = ctx.map(6 * P + 1, 2 * P, BIDIRECTIONAL);
    expect(both.length).toBe(2 * P - 1); // the region ends there
    ctx.unmap(both);
    expect(code.collect()).toEqual([6 * P, 7 * P]);

    const read = ctx.map(0, P, READ);
    read.fill(1);
    ctx.unmap(read, P);
    expect(code.collect()).toEqual([]);
  });

  it('marks an unmap of a view over adjacent regions by the guest pages it covers', () => {
    const memory = new GuestMemory({
      regions: [
        { base: 0x1000, size: 0x80 },
        { base: 0x1080, size: 0x1f80 }, // adjacent: one view may span both
      ],
      dirtyLog: { clients: ['code'], pageSize: 64 },
    });
    const ctx = new DMAContext(memory);
    const view = ctx.map(0x1070, 0x40, WRITE);
    expect(view.length).toBe(0x40);
    ctx.unmap(view, 0x21); // [0x1070, 0x1091): pages 0x1040, 0x1080
    expect(memory.dirtyLog('code').collect()).toEqual([0x1040, 0x1080]);
  });

  it('marks a range with mark only if it is all RAM; a hole is ERR_DMA_UNASSIGNED', () => {
    const { code, migration } = small();
    for (const [gpa, length] of [
      [4 * P, 1],
      [3 * P, P + 1],
      [5 * P + 100, 2 * P],
      [8 * P, 1],
      [2 ** 40, 1],
    ] as const) {
      const error = errorOf(() => {
        code.mark(gpa, length);
      });
      expect(error, `mark(${gpa}, ${length})`).toBeInstanceOf(DMAFault);
      expect(error.code).toBe('ERR_DMA_UNASSIGNED');
    }
    expect(code.collect()).toEqual([]);
    code.mark(0, 0);
    code.mark(5 * P, 0);
    expect(code.collect()).toEqual([]);
    code.mark(3 * P + P - 1, 1);
    code.mark(6 * P, 2 * P);
    expect(code.collect()).toEqual([3 * P, 6 * P, 7 * P]);
    expect(migration.collect()).toEqual([]);
  });

  it('rejects bad numbers in isDirty, collect, mark and clear with ERR_DMA_INVALID_ARGUMENT', () => {
    const { code } = small();
    code.mark(P, 1);
    const bad: readonly unknown[] = [-1, 1.5, Number.NaN, Infinity, 2 ** 53, '0', null, 1n, {}];
    type Method = (gpa: number, length: number) => unknown;
    const methods: readonly [string, Method][] = [
      ['isDirty', (gpa, length) => code.isDirty(gpa, length)],
      ['collect', (gpa, length) => code.collect(gpa, length)],
      [
        'mark',
        (gpa, length) => {
          code.mark(gpa, length);
        },
      ],
      [
        'clear',
        (gpa, length) => {
          code.clear(gpa, length);
        },
      ],
    ];
    for (const [name, method] of methods) {
      for (const value of bad) {
        const shown = typeof value === 'bigint' ? `${value}n` : String(value);
        expect(
          codeOf(() => method(value as number, P)),
          `${name}(${shown}, ${P})`,
        ).toBe('ERR_DMA_INVALID_ARGUMENT');
        expect(
          codeOf(() => method(0, value as number)),
          `${name}(0, ${shown})`,
        ).toBe('ERR_DMA_INVALID_ARGUMENT');
      }
      // A range that passes 2^53.
      expect(
        codeOf(() => method(LIMIT - 1, 2)),
        `${name}(2^53 - 1, 2)`,
      ).toBe('ERR_DMA_INVALID_ARGUMENT');
    }
    // None of them changed the log.
    expect(code.collect()).toEqual([P]);
  });

  it('names an unknown client (ERR_DMA_INVALID_ARGUMENT)', () => {
    const { memory } = small();
    for (const client of ['nope', 'Code', 'code ', '']) {
      const error = errorOf(() => memory.dirtyLog(client));
      expect(error.code, JSON.stringify(client)).toBe('ERR_DMA_INVALID_ARGUMENT');
      if (client !== '') expect(error.message).toContain(client);
    }
    for (const client of [undefined, 1, null, ['code']]) {
      expect(codeOf(() => memory.dirtyLog(client as unknown as string))).toBe(
        'ERR_DMA_INVALID_ARGUMENT',
      );
    }
  });

  it('has no log on a memory made without one (ERR_DMA_INVALID_ARGUMENT)', () => {
    for (const memory of [
      new GuestMemory({ size: P }),
      new GuestMemory({ size: P, shared: false }),
      new GuestMemory({
        backing: new SharedArrayBuffer(P),
        regions: [{ base: 0, size: P, offset: 0 }],
      }),
    ]) {
      expect(codeOf(() => memory.dirtyLog('code'))).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(memory.shared ? memory.handle().dirtyLog : undefined).toBeUndefined();
    }
  });

  it('rejects bad dirtyLog options with ERR_DMA_INVALID_ARGUMENT naming the value', () => {
    const make = (dirtyLog: unknown) => () =>
      new GuestMemory({ size: P, dirtyLog } as unknown as Options);
    const tooMany = Array.from({ length: 33 }, (_, index) => `c${index}`);
    const badClients: readonly [string, unknown, string | undefined][] = [
      ['no clients', {}, undefined],
      ['clients: []', { clients: [] }, undefined],
      ['33 clients', { clients: tooMany }, undefined],
      ['a duplicate', { clients: ['dup-name', 'dup-name'] }, 'dup-name'],
      ['an empty name', { clients: ['code', ''] }, undefined],
      ['a number', { clients: ['code', 7] }, '7'],
      ['a string, not an array', { clients: 'code' }, undefined],
      ['null', { clients: null }, 'null'],
    ];
    for (const [name, dirtyLog, shown] of badClients) {
      const error = errorOf(make(dirtyLog));
      expect(error.code, name).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(error.message, name).toContain('clients');
      if (shown !== undefined) expect(error.message, name).toContain(shown);
    }
    const badSizes: readonly unknown[] = [
      0,
      32,
      63,
      100,
      4095,
      4097,
      2 ** 31,
      2 ** 32,
      -4096,
      1.5,
      Number.NaN,
      '4096',
      4096n,
      null,
    ];
    for (const pageSize of badSizes) {
      const shown = typeof pageSize === 'bigint' ? String(pageSize) : String(pageSize);
      const error = errorOf(make({ clients: ['code'], pageSize }));
      expect(error.code, shown).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(error.message, shown).toContain('pageSize');
      expect(error.message, shown).toContain(shown);
    }
    for (const dirtyLog of [null, 'code', 7, ['code']]) {
      expect(codeOf(make(dirtyLog)), JSON.stringify(dirtyLog)).toBe('ERR_DMA_INVALID_ARGUMENT');
    }
  });

  it('marks, behind an IOMMU, the translated guest-physical pages, not the IOVA pages', () => {
    const { memory, code, migration } = small();
    const domain = new IommuDomain();
    const ctx = new DMAContext(memory, { iommu: domain });
    const IOVA = 0x10_0000;
    domain.map(IOVA, 3 * P, P, WRITE);
    domain.map(IOVA + P, 0, P, BIDIRECTIONAL);
    domain.map(IOVA + 2 * P, 7 * P, P, READ);
    domain.map(IOVA + 3 * P, 5 * P, P, BIDIRECTIONAL); // into the hole

    domain.map(IOVA + 5 * P, 2 * P, P, WRITE);

    ctx.write(IOVA + P - 2, bytes(4)); // IOVA pages 0, 1 → guest pages 3, 0
    expect(code.collect()).toEqual([0, 3 * P]);
    expect(migration.collect()).toEqual([0, 3 * P]);

    const failed: readonly [string, () => void, string][] = [
      [
        'unmapped',
        () => {
          ctx.write(IOVA + 8 * P, bytes(1));
        },
        'ERR_DMA_IOMMU_UNMAPPED',
      ],
      [
        'from a WRITE page into an unmapped one',
        () => {
          ctx.write(IOVA + 6 * P - 1, bytes(2));
        },
        'ERR_DMA_IOMMU_UNMAPPED',
      ],
      [
        'from a BIDIRECTIONAL page into a READ-only one',
        () => {
          ctx.writeU32BE(IOVA + 2 * P - 2, 1);
        },
        'ERR_DMA_IOMMU_PERMISSION',
      ],
      [
        'READ-only',
        () => {
          ctx.set(IOVA + 2 * P, 1, 4);
        },
        'ERR_DMA_IOMMU_PERMISSION',
      ],
      [
        'into the hole',
        () => {
          ctx.writeU8(IOVA + 3 * P, 1);
        },
        'ERR_DMA_UNASSIGNED',
      ],
      [
        'a scatter whose second range is unmapped',
        () => {
          new ScatterGatherList(ctx)
            .add(IOVA, 1)
            .add(IOVA + 9 * P, 1)
            .scatter(bytes(2));
        },
        'ERR_DMA_IOMMU_UNMAPPED',
      ],
      [
        'a WRITE map of a READ page',
        () => ctx.map(IOVA + 2 * P, 4, WRITE),
        'ERR_DMA_IOMMU_PERMISSION',
      ],
    ];
    for (const [name, run, expected] of failed) {
      expect(codeOf(run), name).toBe(expected);
      expect(code.isDirty(0, 8 * P), name).toBe(false);
    }
    expect(code.collect()).toEqual([]);

    // A map marks the guest pages it was given at map time, even when its IOMMU mapping has
    // gone (and the IOVA now means another page) by the time it is unmapped.
    const view = ctx.map(IOVA + 10, 16, WRITE);
    expect(code.collect()).toEqual([]);
    domain.unmap(IOVA, P);
    domain.map(IOVA, 6 * P, P, WRITE);
    ctx.unmap(view, 16);
    expect(code.collect()).toEqual([3 * P]);
    new ScatterGatherList(ctx)
      .add(IOVA + 1, 1)
      .add(IOVA + P + 1, 1)
      .scatter(bytes(2));
    expect(code.collect()).toEqual([0, 6 * P]);
    // The vCPU's own write goes by guest address, with no IOMMU.
    memory.write(2 * P, bytes(1));
    expect(code.collect()).toEqual([2 * P]);
  });

  it('counts pages in pageSize units (64 and 2^30 here)', () => {
    const { ctx, code } = small(64);
    ctx.write(130, bytes(1));
    ctx.write(60, bytes(8));
    ctx.set(6 * P + 63, 0, 66);
    expect(code.collect()).toEqual([0, 64, 128, 6 * P, 6 * P + 64, 6 * P + 128]);
    code.mark(200, 1);
    expect(code.isDirty(192, 64)).toBe(true);
    expect(code.isDirty(128, 64)).toBe(false);
    expect(code.collect(191, 2)).toEqual([192]);

    const huge = small(2 ** 30);
    huge.ctx.writeU8(7 * P, 1);
    expect(huge.code.isDirty(0, 1)).toBe(true);
    expect(huge.code.collect()).toEqual([0]);
    const high = new GuestMemory({
      regions: [
        { base: 0, size: P },
        { base: 2 ** 31 + 5, size: P },
      ],
      dirtyLog: { clients: ['code'], pageSize: 2 ** 30 },
    });
    new DMAContext(high).writeU8(2 ** 31 + 6, 1);
    expect(high.dirtyLog('code').collect()).toEqual([2 ** 31]);
  });

  it('marks guest pages of an adopted backing, not backing offsets; aliases are separate pages', () => {
    const backing = new SharedArrayBuffer(0x8000);
    const memory = new GuestMemory({
      backing,
      regions: [
        { base: 0x1000, size: 0x1000, offset: 0x6000 },
        { base: 0x2000, size: 0x1000, offset: 0x0100 }, // adjacent, not contiguous in the backing
        { base: 0x5000, size: 0x1000, offset: 0x6000 }, // the first region's bytes again
      ],
      dirtyLog: { clients: ['code'] },
    });
    const ctx = new DMAContext(memory);
    const code = memory.dirtyLog('code');
    ctx.write(0x1ffe, bytes(4)); // crosses into the adjacent region
    expect(code.collect()).toEqual([0x1000, 0x2000]);
    ctx.writeU32LE(0x5004, 7);
    expect(new Uint8Array(backing)[0x6004]).toBe(7);
    expect(code.collect()).toEqual([0x5000]);
    expect(
      codeOf(() => {
        code.mark(0x4fff, 2);
      }),
    ).toBe('ERR_DMA_UNASSIGNED');
    code.mark(0x1000, 0x2000);
    expect(code.collect()).toEqual([0x1000, 0x2000]);
  });

  it('works on unshared memory too', () => {
    for (const memory of [
      new GuestMemory({ size: 4 * P, shared: false, dirtyLog: { clients: ['code'] } }),
      new GuestMemory({
        backing: new ArrayBuffer(8 * P),
        regions: [{ base: P, size: 2 * P, offset: 4 * P }],
        dirtyLog: { clients: ['code'] },
      }),
    ]) {
      new DMAContext(memory).write(2 * P - 1, bytes(2));
      expect(memory.dirtyLog('code').collect()).toEqual([P, 2 * P]);
    }
  });

  it('shares its bitmaps through the handle: the same log in a memory made from it', () => {
    const { memory, ctx, code } = small();
    const handle = memory.handle();
    expect(handle.dirtyLog).toMatchObject({ clients: [...CLIENTS], pageSize: P });
    const twin = GuestMemory.fromHandle(handle);
    const twinCode = twin.dirtyLog('code');
    expect(twinCode).not.toBe(code);
    expect(twinCode.pageSize).toBe(P);
    new DMAContext(twin).write(3 * P, bytes(1));
    ctx.write(0, bytes(1));
    expect(code.isDirty(3 * P, 1)).toBe(true);
    expect(twinCode.collect()).toEqual([0, 3 * P]);
    expect(code.collect()).toEqual([]);
    expect(twin.dirtyLog('migration').collect()).toEqual([0, 3 * P]);
    expect(memory.dirtyLog('migration').collect()).toEqual([]);
    expect(codeOf(() => twin.dirtyLog('other'))).toBe('ERR_DMA_INVALID_ARGUMENT');
  });
});

// ---------------------------------------------------------------------------------------
// 2. Against a reference model

/** A region as the layout gives it to the constructor. */
interface RegionSpec {
  readonly base: number;
  readonly size: number;
  readonly offset?: number;
}

interface Layout {
  readonly name: string;
  readonly regions: readonly RegionSpec[];
  readonly backing?: () => Backing;
  /** Whether the memory is shared (and so has a handle). */
  readonly shared: boolean;
}

/**
 * Allocated: unaligned bases, two adjacent regions, holes of a page, of 0x1123 bytes and of
 * 2 bytes. Adopted: regions at offsets in the backing, guest-adjacent regions not contiguous
 * in it, and a region that aliases another's bytes (its guest pages are its own).
 */
const ADOPTED_REGIONS: readonly RegionSpec[] = [
  { base: 0x8000, size: 0x2000, offset: 0x4000 },
  { base: 0x1000, size: 0x2000, offset: 0x9000 },
  { base: 0x3000, size: 0x1000, offset: 0x0100 },
  { base: 0x5005, size: 0x1ffb, offset: 0x2005 },
  { base: 0xa000, size: 0x0800, offset: 0x9000 },
];
const LAYOUTS: readonly Layout[] = [
  {
    name: 'allocated',
    shared: true,
    regions: [
      { base: 0x7000, size: 0x2ff9 },
      { base: 0x0040, size: 0x17c0 },
      { base: 0x1800, size: 0x1800 },
      { base: 0x4123, size: 0x1edd },
      { base: 0x9ffb, size: 0x5 },
    ],
  },
  {
    name: 'allocated, unshared',
    shared: false,
    regions: [
      { base: 0x0000, size: 0x3000 },
      { base: 0x4001, size: 0x3fff },
    ],
  },
  {
    name: 'adopted SharedArrayBuffer',
    shared: true,
    regions: ADOPTED_REGIONS,
    backing: () => new SharedArrayBuffer(0xc000),
  },
  {
    name: 'adopted ArrayBuffer',
    shared: false,
    regions: ADOPTED_REGIONS,
    backing: () => new ArrayBuffer(0xc000),
  },
  {
    name: 'adopted shared WebAssembly.Memory',
    shared: true,
    regions: [
      { base: 0x0000, size: 0x3000, offset: 0x8000 },
      { base: 0x3000, size: 0x2008, offset: 0x1000 },
      { base: 0x7004, size: 0x2ffc, offset: 0xc004 },
    ],
    backing: () => sharedWasmMemory(1),
  },
];

/** Guest RAM as merged intervals: what is RAM, and how far it runs (holes only stop it). */
class RamModel {
  readonly spans: [number, number][] = [];

  constructor(regions: readonly RegionSpec[]) {
    for (const { base, size } of [...regions].sort((a, b) => a.base - b.base)) {
      const last = this.spans[this.spans.length - 1];
      if (last?.[1] === base) last[1] = base + size;
      else this.spans.push([base, base + size]);
    }
  }

  extent(gpa: number): number {
    for (const [start, end] of this.spans) if (gpa >= start && gpa < end) return end - gpa;
    return 0;
  }

  isRam(gpa: number, length: number): boolean {
    return length === 0 || this.extent(gpa) >= length;
  }

  get end(): number {
    return (this.spans[this.spans.length - 1] as [number, number])[1];
  }
}

/** One bitmap per client, as sets of page indices. */
class DirtyModel {
  readonly dirty = new Map<string, Set<number>>();

  constructor(
    readonly pageSize: number,
    clients: readonly string[],
  ) {
    for (const client of clients) this.dirty.set(client, new Set());
  }

  #pages(gpa: number, length: number): number[] {
    if (length === 0) return [];
    const first = Math.floor(gpa / this.pageSize);
    const last = Math.floor((gpa + length - 1) / this.pageSize);
    return Array.from({ length: last - first + 1 }, (_, index) => first + index);
  }

  #set(client: string): Set<number> {
    return this.dirty.get(client) as Set<number>;
  }

  markAll(gpa: number, length: number): void {
    for (const client of this.dirty.keys()) this.mark(client, gpa, length);
  }

  mark(client: string, gpa: number, length: number): void {
    const set = this.#set(client);
    for (const page of this.#pages(gpa, length)) set.add(page);
  }

  /** The dirty pages of `client` that the range (or, without one, the whole space) touches. */
  inRange(client: string, range: readonly [number, number] | undefined): number[] {
    const pages = [...this.#set(client)].sort((a, b) => a - b);
    if (range === undefined) return pages;
    const [gpa, length] = range;
    if (length === 0) return [];
    const first = Math.floor(gpa / this.pageSize);
    const last = Math.floor((gpa + length - 1) / this.pageSize);
    return pages.filter((page) => page >= first && page <= last);
  }

  collect(client: string, range: readonly [number, number] | undefined): number[] {
    const pages = this.inRange(client, range);
    const set = this.#set(client);
    for (const page of pages) set.delete(page);
    return pages.map((page) => page * this.pageSize);
  }
}

const IOMMU_PAGE = 4096;
const IOVA_BASE = 0x40_0000;
const IOVA_PAGES = 16;
/** Mappings may target guest pages 0..12: RAM, holes, and the page past every layout's end. */
const GPA_PAGES = 13;

interface Entry {
  readonly gpaPage: number;
  readonly perm: number;
}

/** Non-negative safe integer, as the spec's addresses and lengths. */
function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** addr + length ≤ 2^53, computed exactly (a float sum above 2^53 rounds). */
function fits(addr: number, length: number): boolean {
  return BigInt(addr) + BigInt(length) <= 2n ** 53n;
}

type Access = { readonly ok: true; readonly runs: [number, number][] } | { readonly ok: false };
const FAILED: Access = { ok: false };

// Attributes with the model's verdict: the accepted ones and some refused ones, per accessor.
type Attr = readonly [attrs: DMAAttributesLike | undefined, bits: number | undefined];
const WRITE_ATTRS: readonly Attr[] = [
  [undefined, WRITE],
  [undefined, WRITE],
  [WRITE, WRITE],
  [RELAXED, WRITE | RELAXED],
  [WRITE | RELAXED, WRITE | RELAXED],
  [0, WRITE],
  [{ write: true }, WRITE],
  [{ relaxed: true }, WRITE | RELAXED],
  [READ, undefined],
  [BIDIRECTIONAL, undefined],
  [8, undefined],
];
const READ_ATTRS: readonly Attr[] = [
  [undefined, READ],
  [READ, READ],
  [RELAXED, READ | RELAXED],
  [{ read: true }, READ],
  [WRITE, undefined],
];
const RW_ATTRS: readonly Attr[] = [
  [WRITE, WRITE],
  [WRITE | RELAXED, WRITE | RELAXED],
  [{ write: true }, WRITE],
  [READ, READ],
  [READ | RELAXED, READ | RELAXED],
  [BIDIRECTIONAL, undefined],
  [0, undefined],
];
const MAP_ATTRS: readonly Attr[] = [
  [WRITE, WRITE],
  [WRITE, WRITE],
  [BIDIRECTIONAL, BIDIRECTIONAL],
  [BIDIRECTIONAL | RELAXED, BIDIRECTIONAL | RELAXED],
  [WRITE | RELAXED, WRITE | RELAXED],
  [READ, READ],
  [RELAXED, undefined],
];

const FIXED = [
  ['writeU8', 'readU8', 1],
  ['writeU16LE', 'readU16LE', 2],
  ['writeU16BE', 'readU16BE', 2],
  ['writeU32LE', 'readU32LE', 4],
  ['writeU32BE', 'readU32BE', 4],
  ['writeU64LE', 'readU64LE', 8],
  ['writeU64BE', 'readU64BE', 8],
] as const;

const BAD_NUMBERS: readonly unknown[] = [-1, 1.5, Number.NaN, Infinity, 2 ** 53, '16', null];

type Range = readonly [unknown, unknown];

type Operation =
  | {
      readonly op: 'write';
      readonly path: 'write' | 'rw';
      readonly addr: unknown;
      readonly length: number;
      readonly attr: number;
      readonly bad: boolean;
    }
  | {
      readonly op: 'set';
      readonly addr: unknown;
      readonly length: unknown;
      readonly value: unknown;
      readonly attr: number;
    }
  | {
      readonly op: 'fixed';
      readonly method: number;
      readonly addr: unknown;
      readonly value: 'ok' | 'big' | 'type';
      readonly attr: number;
    }
  | {
      readonly op: 'scatter';
      readonly ranges: readonly Range[];
      readonly extra: boolean;
      readonly attr: number;
    }
  | { readonly op: 'cpuWrite' | 'cpuRead'; readonly gpa: unknown; readonly length: number }
  | { readonly op: 'map'; readonly addr: unknown; readonly length: unknown; readonly attr: number }
  | { readonly op: 'viewWrite'; readonly pick: number; readonly at: number }
  | {
      readonly op: 'unmap';
      readonly pick: number;
      readonly accessed: 'all' | 'bad' | number;
    }
  | {
      readonly op: 'read';
      readonly path: 'read' | 'rw' | 'fixed' | 'gather' | 'valid';
      readonly method: number;
      readonly addr: unknown;
      readonly length: number;
      readonly attr: number;
    }
  | {
      readonly op: 'remap';
      readonly page: number;
      readonly target: { readonly gpaPage: number; readonly perm: number } | null;
    }
  | {
      readonly op: 'collect' | 'clear';
      readonly client: number;
      readonly range: Range | null;
      readonly twin: boolean;
    }
  | {
      readonly op: 'mark' | 'isDirty';
      readonly client: number;
      readonly gpa: unknown;
      readonly length: unknown;
      readonly twin: boolean;
    };

interface Variant {
  readonly layout: number;
  readonly pageSize: number;
  readonly clients: readonly string[];
  readonly iommu: boolean;
  /** Accesses go through a second memory made from the handle (shared layouts only). */
  readonly twin: boolean;
  readonly initial: readonly ({ readonly gpaPage: number; readonly perm: number } | null)[];
}

const variantArb: fc.Arbitrary<Variant> = fc.record({
  layout: fc.nat({ max: LAYOUTS.length - 1 }),
  pageSize: fc.constantFrom(64, 64, 256, 1024, 4096, 4096, 16384),
  clients: fc.constantFrom(['code'], ['code', 'migration'], ['code', 'migration', 'vga 0']),
  iommu: fc.boolean(),
  twin: fc.boolean(),
  initial: fc.array(
    fc.option(
      fc.record({
        gpaPage: fc.nat({ max: GPA_PAGES - 1 }),
        perm: fc.constantFrom(READ, WRITE, BIDIRECTIONAL, BIDIRECTIONAL),
      }),
      { freq: 4 },
    ),
    { minLength: IOVA_PAGES, maxLength: IOVA_PAGES },
  ),
});

/** The operations for one variant: addresses near what its layout and IOMMU make interesting. */
function operationArb(variant: Variant): fc.Arbitrary<Operation> {
  const layout = LAYOUTS[variant.layout] as Layout;
  const ram = new RamModel(layout.regions);
  // Region bounds, and the dirty-page bounds on either side of each.
  const size = variant.pageSize;
  const anchors = [
    0,
    ...ram.spans.flat().flatMap((bound) => {
      const below = Math.floor(bound / size) * size;
      return [bound, below, below + size];
    }),
  ];
  const gpaArb: fc.Arbitrary<unknown> = fc.oneof(
    { weight: 5, arbitrary: fc.integer({ min: 0, max: ram.end + 0x100 }) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.constantFrom(...anchors), fc.integer({ min: -9, max: 9 }))
        .map(([anchor, delta]) => Math.max(0, anchor + delta)),
    },
    { weight: 1, arbitrary: fc.constantFrom(...BAD_NUMBERS, LIMIT - 2) },
  );
  const iovaArb: fc.Arbitrary<unknown> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.integer({ min: IOVA_BASE, max: IOVA_BASE + IOVA_PAGES * IOMMU_PAGE + 0x40 }),
    },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.nat({ max: IOVA_PAGES }), fc.integer({ min: -9, max: 9 }))
        .map(([page, delta]) => IOVA_BASE + page * IOMMU_PAGE + delta),
    },
    { weight: 1, arbitrary: gpaArb },
  );
  const addrArb = variant.iommu ? iovaArb : gpaArb;
  const lengthArb = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 16 }) },
    { weight: 3, arbitrary: fc.integer({ min: 17, max: 300 }) },
    { weight: 1, arbitrary: fc.integer({ min: 301, max: 0x2400 }) },
  );
  const badLengthArb: fc.Arbitrary<unknown> = fc.oneof(
    { weight: 12, arbitrary: lengthArb },
    { weight: 1, arbitrary: fc.constantFrom(...BAD_NUMBERS) },
  );
  const attrArb = (table: readonly Attr[]) => fc.nat({ max: table.length - 1 });
  const clientArb = fc.nat({ max: variant.clients.length - 1 });
  const logRangeArb: fc.Arbitrary<Range | null> = fc.oneof(
    { weight: 3, arbitrary: fc.constant(null) },
    { weight: 5, arbitrary: fc.tuple(gpaArb, badLengthArb) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.nat({ max: 40 }), fc.nat({ max: 8 }))
        .map(([page, pages]): Range => [page * variant.pageSize, pages * variant.pageSize]),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Range>([0, LIMIT - 1], [1, LIMIT - 1], [ram.end, 2 ** 40]),
    },
  );
  const twinArb = fc.boolean();

  const operations: fc.WeightedArbitrary<Operation>[] = [
    {
      weight: 10,
      arbitrary: fc.record({
        op: fc.constant('write' as const),
        path: fc.constantFrom('write' as const, 'rw' as const),
        addr: addrArb,
        length: lengthArb,
        attr: attrArb(WRITE_ATTRS),
        bad: fc.nat({ max: 19 }).map((roll) => roll === 0),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant('set' as const),
        addr: addrArb,
        length: badLengthArb,
        value: fc.oneof(
          { weight: 10, arbitrary: fc.nat({ max: 255 }) },
          { weight: 1, arbitrary: fc.constantFrom(256, -1, 1.5, '1') },
        ),
        attr: attrArb(WRITE_ATTRS),
      }),
    },
    {
      weight: 8,
      arbitrary: fc.record({
        op: fc.constant('fixed' as const),
        method: fc.nat({ max: FIXED.length - 1 }),
        addr: addrArb,
        value: fc.constantFrom(
          'ok' as const,
          'ok' as const,
          'ok' as const,
          'big' as const,
          'type' as const,
        ),
        attr: attrArb(WRITE_ATTRS),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant('scatter' as const),
        ranges: fc.array(fc.tuple(addrArb, badLengthArb), { minLength: 1, maxLength: 3 }),
        extra: fc.nat({ max: 9 }).map((roll) => roll === 0),
        attr: attrArb(WRITE_ATTRS),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constantFrom('cpuWrite' as const, 'cpuRead' as const),
        gpa: gpaArb,
        length: lengthArb,
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant('map' as const),
        addr: addrArb,
        length: fc.oneof(
          { weight: 10, arbitrary: fc.integer({ min: 1, max: 0x2400 }) },
          { weight: 1, arbitrary: fc.constantFrom(0, ...BAD_NUMBERS) },
        ),
        attr: attrArb(MAP_ATTRS),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('viewWrite' as const),
        pick: fc.nat(),
        at: fc.nat(),
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant('unmap' as const),
        pick: fc.nat(),
        accessed: fc.oneof(
          { weight: 3, arbitrary: fc.constant('all' as const) },
          { weight: 6, arbitrary: fc.integer({ min: 0, max: 1000 }) },
          { weight: 1, arbitrary: fc.constant('bad' as const) },
        ),
      }),
    },
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant('read' as const),
        path: fc.constantFrom(
          'read' as const,
          'rw' as const,
          'fixed' as const,
          'gather' as const,
          'valid' as const,
        ),
        method: fc.nat({ max: FIXED.length - 1 }),
        addr: addrArb,
        length: lengthArb,
        attr: fc.nat({ max: 6 }),
      }),
    },
    {
      weight: 7,
      arbitrary: fc.record({
        op: fc.constantFrom(
          'collect' as const,
          'collect' as const,
          'collect' as const,
          'clear' as const,
        ),
        client: clientArb,
        range: logRangeArb,
        twin: twinArb,
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constantFrom('mark' as const, 'isDirty' as const),
        client: clientArb,
        gpa: gpaArb,
        length: badLengthArb,
        twin: twinArb,
      }),
    },
  ];
  if (variant.iommu) {
    const targetArb: fc.Arbitrary<{ gpaPage: number; perm: number } | null> = fc.option(
      fc.record({
        gpaPage: fc.nat({ max: GPA_PAGES - 1 }),
        perm: fc.constantFrom<number>(READ, WRITE, BIDIRECTIONAL),
      }),
      { freq: 4 },
    );
    operations.push({
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('remap' as const),
        page: fc.nat({ max: IOVA_PAGES - 1 }),
        target: targetArb,
      }),
    });
  }
  return fc.oneof(...operations);
}

/** What the generator reached, summed over all runs. */
const tally = {
  operations: 0,
  markingWrites: new Map<string, number>(),
  failedWrites: 0,
  failedWriteCodes: new Map<string, number>(),
  translatedWrites: 0,
  unmapMarks: 0,
  reads: 0,
  nonEmptyCollects: 0,
  rangedCollects: 0,
  logErrors: 0,
  marks: 0,
  failedMarks: 0,
  layouts: new Set<string>(),
};

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

interface LiveView {
  readonly view: Uint8Array;
  readonly gpa: number;
  readonly bits: number;
}

/** One run: a memory, its context (and IOMMU), the models, and the live mapped views. */
class Run {
  readonly memory: GuestMemory;
  /** The memory the accesses go through: the same one, or one made from its handle. */
  readonly access: GuestMemory;
  readonly ctx: DMAContext;
  readonly domain: IommuDomain | undefined;
  readonly ram: RamModel;
  readonly model: DirtyModel;
  readonly table = new Map<number, Entry>();
  readonly live: LiveView[] = [];
  readonly trail: string[] = [];

  constructor(readonly variant: Variant) {
    const layout = LAYOUTS[variant.layout] as Layout;
    tally.layouts.add(layout.name);
    const dirtyLog = { clients: variant.clients, pageSize: variant.pageSize };
    const regions = layout.regions.map((region) => ({ ...region }));
    const options: Options =
      layout.backing === undefined
        ? { regions, dirtyLog, shared: layout.shared }
        : { backing: layout.backing(), regions, dirtyLog };
    this.memory = new GuestMemory(options);
    this.access =
      variant.twin && layout.shared ? GuestMemory.fromHandle(this.memory.handle()) : this.memory;
    this.ram = new RamModel(layout.regions);
    this.model = new DirtyModel(variant.pageSize, variant.clients);
    if (variant.iommu) {
      this.domain = new IommuDomain();
      for (const [page, entry] of variant.initial.entries()) {
        if (entry === null) continue;
        this.domain.map(
          IOVA_BASE + page * IOMMU_PAGE,
          entry.gpaPage * IOMMU_PAGE,
          IOMMU_PAGE,
          entry.perm,
        );
        this.table.set(page, entry);
      }
      this.ctx = new DMAContext(this.access, { iommu: this.domain });
    } else {
      this.domain = undefined;
      this.ctx = new DMAContext(this.access);
    }
  }

  fail(message: string): never {
    throw new Error(`${message}\nafter:\n  ${this.trail.slice(-25).join('\n  ')}`);
  }

  /** The guest-physical runs of a DMA access of `length` bytes needing `need`, or FAILED. */
  translate(addr: unknown, length: number, need: number): Access {
    if (!isIndex(addr) || !fits(addr, length)) return FAILED;
    if (length === 0) return { ok: true, runs: [] };
    if (this.domain === undefined) {
      return this.ram.isRam(addr, length) ? { ok: true, runs: [[addr, length]] } : FAILED;
    }
    const first = Math.floor((addr - IOVA_BASE) / IOMMU_PAGE);
    const last = Math.floor((addr + length - 1 - IOVA_BASE) / IOMMU_PAGE);
    if (addr < IOVA_BASE) return FAILED;
    const runs: [number, number][] = [];
    for (let page = first; page <= last; page++) {
      const entry = this.table.get(page);
      if (entry === undefined || (entry.perm & need) !== need) return FAILED;
      const start = Math.max(addr, IOVA_BASE + page * IOMMU_PAGE);
      const end = Math.min(addr + length, IOVA_BASE + (page + 1) * IOMMU_PAGE);
      runs.push([
        entry.gpaPage * IOMMU_PAGE + (start - IOVA_BASE - page * IOMMU_PAGE),
        end - start,
      ]);
    }
    return runs.every(([gpa, bytes]) => this.ram.isRam(gpa, bytes)) ? { ok: true, runs } : FAILED;
  }

  /** Runs `call`; checks that it succeeded or failed as the model says, with a DMAError. */
  outcome(label: string, expectOk: boolean, call: () => unknown): unknown {
    let result: unknown;
    try {
      result = call();
    } catch (error) {
      if (!(error instanceof DMAError))
        this.fail(`${label} threw a non-DMAError: ${String(error)}`);
      if (expectOk)
        this.fail(`${label} failed (${error.code}: ${error.message}); the model expects success`);
      return error;
    }
    if (!expectOk) this.fail(`${label} succeeded; the model expects a failure`);
    return result;
  }

  /** A DMA write that the model says moves `access`: marks its runs if it succeeded. */
  written(label: string, access: Access, call: () => unknown): void {
    const result = this.outcome(label, access.ok, call);
    if (access.ok) {
      let bytes = 0;
      for (const [gpa, length] of access.runs) {
        this.model.markAll(gpa, length);
        bytes += length;
      }
      if (bytes > 0) count(tally.markingWrites, label.split('(')[0] as string);
      if (bytes > 0 && this.domain !== undefined) tally.translatedWrites++;
    } else {
      tally.failedWrites++;
      count(tally.failedWriteCodes, (result as DMAError).code);
    }
  }

  execute(operation: Operation): void {
    tally.operations++;
    const label = describeOperation(operation);
    this.trail.push(label);
    const ctx = this.ctx;
    switch (operation.op) {
      case 'write': {
        const [attrs, bits] = (operation.path === 'rw' ? RW_ATTRS : WRITE_ATTRS)[
          operation.attr % (operation.path === 'rw' ? RW_ATTRS.length : WRITE_ATTRS.length)
        ] as Attr;
        const reading = bits !== undefined && (bits & READ) !== 0;
        const data = operation.bad
          ? ([1, 2, 3] as unknown as Uint8Array)
          : reading
            ? new Uint8Array(operation.length)
            : bytes(operation.length);
        const need = (bits ?? 0) & (READ | WRITE);
        const access =
          bits === undefined || operation.bad
            ? FAILED
            : this.translate(operation.addr, operation.length, need);
        const addr = operation.addr as number;
        if (operation.path === 'rw') {
          if (reading) {
            // An rw READ: a read path, it marks nothing.
            tally.reads++;
            this.outcome(label, access.ok, () => {
              ctx.rw(addr, data, attrs as DMAAttributesLike);
            });
            return;
          }
          this.written(label, access, () => {
            ctx.rw(addr, data, attrs as DMAAttributesLike);
          });
        } else {
          this.written(label, access, () => {
            ctx.write(addr, data, attrs);
          });
        }
        return;
      }
      case 'set': {
        const [attrs, bits] = WRITE_ATTRS[operation.attr] as Attr;
        const { addr, length, value } = operation;
        const valid =
          bits !== undefined &&
          isIndex(length) &&
          typeof value === 'number' &&
          Number.isInteger(value) &&
          value >= 0 &&
          value <= 255;
        const access = valid ? this.translate(addr, length, WRITE) : FAILED;
        this.written(label, access, () => {
          ctx.set(addr as number, value as number, length as number, attrs);
        });
        return;
      }
      case 'fixed': {
        const [method, , width] = FIXED[operation.method] as (typeof FIXED)[number];
        const [attrs, bits] = WRITE_ATTRS[operation.attr] as Attr;
        let value: number | bigint;
        if (operation.value === 'type') value = width === 8 ? 1 : 1n;
        else if (operation.value === 'big') value = width === 8 ? 2n ** 64n : 2 ** (8 * width);
        else value = width === 8 ? 0x0102030405060708n : 2 ** (8 * width) - 1;
        const access =
          bits === undefined || operation.value !== 'ok'
            ? FAILED
            : this.translate(operation.addr, width, WRITE);
        const addr = operation.addr as number;
        this.written(label, access, () => {
          (
            ctx[method] as (addr: number, value: number | bigint, attrs?: DMAAttributesLike) => void
          )(addr, value, attrs);
        });
        return;
      }
      case 'scatter': {
        const [attrs, bits] = WRITE_ATTRS[operation.attr] as Attr;
        let total = 0;
        let valid = bits !== undefined;
        const runs: [number, number][] = [];
        for (const [addr, length] of operation.ranges) {
          if (!isIndex(addr) || !isIndex(length) || !fits(addr, length)) {
            valid = false;
            continue;
          }
          total += length;
          const access = this.translate(addr, length, WRITE);
          if (access.ok) runs.push(...access.runs);
          else valid = false;
        }
        const access: Access = valid && !operation.extra ? { ok: true, runs } : FAILED;
        this.written(label, access, () => {
          const sg = new ScatterGatherList(ctx);
          for (const [addr, length] of operation.ranges) sg.add(addr as number, length as number);
          sg.scatter(bytes(total + (operation.extra ? 1 : 0)), attrs);
        });
        return;
      }
      case 'cpuWrite':
      case 'cpuRead': {
        const { gpa, length } = operation;
        const ok = isIndex(gpa) && fits(gpa, length) && this.ram.isRam(gpa, length);
        if (operation.op === 'cpuRead') {
          tally.reads++;
          this.outcome(label, ok, () => {
            this.access.read(gpa as number, new Uint8Array(length));
          });
          return;
        }
        this.written(label, ok ? { ok: true, runs: [[gpa, length]] } : FAILED, () => {
          this.access.write(gpa as number, bytes(length));
        });
        return;
      }
      case 'map': {
        const [attrs, bits] = MAP_ATTRS[operation.attr] as Attr;
        const { addr, length } = operation;
        let gpa = -1;
        if (
          bits !== undefined &&
          isIndex(addr) &&
          isIndex(length) &&
          length > 0 &&
          fits(addr, length)
        ) {
          // Only the first byte decides whether a map succeeds; it may come back shorter.
          const first = this.translate(addr, 1, bits & (READ | WRITE));
          if (first.ok) gpa = (first.runs[0] as [number, number])[0];
        }
        const view = this.outcome(label, gpa >= 0, () =>
          ctx.map(addr as number, length as number, attrs as DMAAttributesLike),
        );
        if (gpa < 0) return;
        if (!(view instanceof Uint8Array)) this.fail(`${label} returned ${String(view)}`);
        const most = Math.min(length as number, this.ram.extent(gpa));
        if (view.length < 1 || view.length > most) {
          this.fail(
            `${label} returned a view of ${view.length} bytes; at most ${most} are RAM from 0x${gpa.toString(16)}`,
          );
        }
        this.live.push({ view, gpa, bits: bits as number });
        return;
      }
      case 'viewWrite': {
        const mapping = this.live[operation.pick % Math.max(1, this.live.length)];
        if (mapping !== undefined) mapping.view[operation.at % mapping.view.length] = 0xa5;
        return;
      }
      case 'unmap': {
        const index = operation.pick % Math.max(1, this.live.length);
        const mapping = this.live[index];
        if (mapping === undefined) {
          this.outcome(label, false, () => {
            ctx.unmap(new Uint8Array(4));
          });
          return;
        }
        const { view, gpa, bits } = mapping;
        if (operation.accessed === 'bad') {
          this.outcome(label, false, () => {
            ctx.unmap(view, view.length + 1);
          });
          return;
        }
        const accessed =
          operation.accessed === 'all'
            ? view.length
            : Math.floor((operation.accessed * view.length) / 1000);
        this.outcome(label, true, () => {
          if (operation.accessed === 'all') ctx.unmap(view);
          else ctx.unmap(view, accessed);
        });
        this.live.splice(index, 1);
        if ((bits & WRITE) !== 0 && accessed > 0) {
          this.model.markAll(gpa, accessed);
          tally.unmapMarks++;
        }
        return;
      }
      case 'read': {
        tally.reads++;
        const { addr, length } = operation;
        const [attrs, bits] = READ_ATTRS[operation.attr % READ_ATTRS.length] as Attr;
        const ok = (access: Access) => bits !== undefined && access.ok;
        switch (operation.path) {
          case 'read':
            this.outcome(label, ok(this.translate(addr, length, READ)), () => {
              ctx.read(addr as number, new Uint8Array(length), attrs);
            });
            return;
          case 'rw':
            this.outcome(label, this.translate(addr, length, READ).ok, () => {
              ctx.rw(addr as number, new Uint8Array(length), READ);
            });
            return;
          case 'fixed': {
            const [, method, width] = FIXED[operation.method] as (typeof FIXED)[number];
            this.outcome(label, ok(this.translate(addr, width, READ)), () =>
              (ctx[method] as (addr: number, attrs?: DMAAttributesLike) => unknown)(
                addr as number,
                attrs,
              ),
            );
            return;
          }
          case 'gather':
            this.outcome(label, ok(this.translate(addr, length, READ)), () => {
              new ScatterGatherList(ctx)
                .add(addr as number, length)
                .gather(new Uint8Array(length), attrs);
            });
            return;
          case 'valid':
            this.outcome(label, isIndex(addr) && fits(addr, length), () =>
              ctx.valid(addr as number, length, WRITE),
            );
            return;
        }
        return;
      }
      case 'remap': {
        const domain = this.domain as IommuDomain;
        const iova = IOVA_BASE + operation.page * IOMMU_PAGE;
        domain.unmap(iova, IOMMU_PAGE);
        this.table.delete(operation.page);
        if (operation.target !== null) {
          domain.map(
            iova,
            operation.target.gpaPage * IOMMU_PAGE,
            IOMMU_PAGE,
            operation.target.perm,
          );
          this.table.set(operation.page, operation.target);
        }
        return;
      }
      case 'collect':
      case 'clear': {
        const client = this.variant.clients[operation.client] as string;
        const log = (operation.twin ? this.access : this.memory).dirtyLog(client);
        const range = operation.range;
        const valid =
          range === null || (isIndex(range[0]) && isIndex(range[1]) && fits(range[0], range[1]));
        const modelRange = range === null ? undefined : (range as [number, number]);
        const call = (): unknown => {
          if (operation.op === 'collect') {
            return range === null
              ? log.collect()
              : log.collect(range[0] as number, range[1] as number);
          }
          if (range === null) log.clear();
          else log.clear(range[0] as number, range[1] as number);
          return undefined;
        };
        const result = this.outcome(label, valid, call);
        if (!valid) {
          tally.logErrors++;
          return;
        }
        const expected = this.model.collect(client, modelRange);
        if (operation.op === 'clear') return;
        if (range !== null) tally.rangedCollects++;
        if (expected.length > 0) tally.nonEmptyCollects++;
        if (!Array.isArray(result) || JSON.stringify(result) !== JSON.stringify(expected)) {
          this.fail(
            `${label} returned ${JSON.stringify(result)}; the model's dirty pages are ${JSON.stringify(expected)}`,
          );
        }
        return;
      }
      case 'mark':
      case 'isDirty': {
        const client = this.variant.clients[operation.client] as string;
        const log = (operation.twin ? this.access : this.memory).dirtyLog(client);
        const { gpa, length } = operation;
        const numbers = isIndex(gpa) && isIndex(length) && fits(gpa, length);
        if (operation.op === 'isDirty') {
          const result = this.outcome(label, numbers, () =>
            log.isDirty(gpa as number, length as number),
          );
          if (!numbers) {
            tally.logErrors++;
            return;
          }
          const expected = this.model.inRange(client, [gpa, length]).length > 0;
          if (result !== expected)
            this.fail(`${label} returned ${String(result)}; the model says ${String(expected)}`);
          return;
        }
        const ok = numbers && this.ram.isRam(gpa, length);
        const result = this.outcome(label, ok, () => {
          log.mark(gpa as number, length as number);
        });
        if (ok) {
          tally.marks++;
          this.model.mark(client, gpa, length);
        } else if (numbers) {
          tally.failedMarks++;
          if (!(result instanceof DMAFault) || result.code !== 'ERR_DMA_UNASSIGNED') {
            this.fail(`${label} threw ${String(result)}; the model expects ERR_DMA_UNASSIGNED`);
          }
        }
        return;
      }
    }
  }

  /** Collects every client's whole log and compares with the model. */
  finish(): void {
    for (const client of this.variant.clients) {
      const got = this.memory.dirtyLog(client).collect();
      const expected = this.model.collect(client, undefined);
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        this.fail(
          `the final collect of '${client}' returned ${JSON.stringify(got)}; the model's dirty pages are ${JSON.stringify(expected)}`,
        );
      }
    }
  }
}

function show(value: unknown): string {
  if (typeof value === 'number')
    return Number.isSafeInteger(value) && value >= 0 ? `0x${value.toString(16)}` : String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function describeOperation(operation: Operation): string {
  const parts = Object.entries(operation)
    .filter(([key]) => key !== 'op')
    .map(([key, value]) => `${key}=${show(value)}`);
  return `${operation.op}(${parts.join(', ')})`;
}

const RUNS = 250;

describe('DirtyLog against a reference model', () => {
  it('the model takes ranges and pages as the contract says', () => {
    const model = new DirtyModel(64, ['a', 'b']);
    model.markAll(60, 8);
    model.mark('a', 200, 1);
    expect(model.inRange('a', undefined)).toEqual([0, 1, 3]);
    expect(model.inRange('a', [63, 2])).toEqual([0, 1]);
    expect(model.inRange('a', [64, 0])).toEqual([]);
    expect(model.collect('a', [64, 64])).toEqual([64]);
    expect(model.collect('a', undefined)).toEqual([0, 192]);
    expect(model.collect('b', undefined)).toEqual([0, 64]);
    const ram = new RamModel(LAYOUTS[0]?.regions ?? []);
    expect(ram.isRam(0x17fe, 4)).toBe(true); // two adjacent regions
    expect(ram.isRam(0x2fff, 2)).toBe(false);
    expect(ram.isRam(0x3f, 1)).toBe(false);
    expect(ram.extent(0x9ffb)).toBe(5);
  });

  it(`every collect returns exactly the model's dirty pages (${RUNS} random programs)`, () => {
    const programArb = variantArb.chain((variant) =>
      fc.tuple(
        fc.constant(variant),
        fc.array(operationArb(variant), { minLength: 60, maxLength: 120 }),
      ),
    );
    fc.assert(
      fc.property(programArb, ([variant, program]) => {
        const run = new Run(variant);
        for (const operation of program) run.execute(operation);
        run.finish();
      }),
      { numRuns: RUNS },
    );
    const summary = {
      ...tally,
      markingWrites: Object.fromEntries(tally.markingWrites),
      failedWriteCodes: Object.fromEntries(tally.failedWriteCodes),
      layouts: [...tally.layouts],
    };
    console.log('dirty model:', summary);
    // The generator reached what the test claims to cover.
    expect(tally.layouts.size).toBe(LAYOUTS.length);
    for (const path of ['write', 'set', 'fixed', 'scatter', 'cpuWrite']) {
      expect(tally.markingWrites.get(path) ?? 0, path).toBeGreaterThan(100);
    }
    for (const code of [
      'ERR_DMA_UNASSIGNED',
      'ERR_DMA_INVALID_ARGUMENT',
      'ERR_DMA_INVALID_ATTRIBUTES',
      'ERR_DMA_IOMMU_UNMAPPED',
      'ERR_DMA_IOMMU_PERMISSION',
    ]) {
      expect(tally.failedWriteCodes.get(code) ?? 0, code).toBeGreaterThan(30);
    }
    expect(tally.translatedWrites).toBeGreaterThan(300);
    expect(tally.unmapMarks).toBeGreaterThan(100);
    expect(tally.reads).toBeGreaterThan(1000);
    expect(tally.nonEmptyCollects).toBeGreaterThan(500);
    expect(tally.rangedCollects).toBeGreaterThan(500);
    expect(tally.marks).toBeGreaterThan(100);
    expect(tally.failedMarks).toBeGreaterThan(50);
    expect(tally.logErrors).toBeGreaterThan(50);
  });
});

// ---------------------------------------------------------------------------------------
// 3. Sharing through the handle

beforeAll(() => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the dirty-log workers import dist/index.js: run `npx tsup` first');
  }
});

stopWorkersAfterEach();

const WAIT_MS = 5_000;

interface Reply {
  id: number;
  ok: boolean;
  code?: string;
  message?: string;
  client?: string;
  pageSize?: number;
  pages?: number[];
  dirty?: boolean;
  far?: boolean;
  after?: number[];
  bytes?: number[];
}

/** A worker (test/workers/dirty-peer.mjs) answering one request per message. */
class DirtyPeer extends Peer<Reply> {
  constructor() {
    super('dirty-peer.mjs', WAIT_MS);
  }

  async collect(client: string, ...args: number[]): Promise<number[]> {
    return (await this.ok({ op: 'collect', client, args })).pages ?? [];
  }
}

describe('DirtyLog shared through memory.handle() with a worker', () => {
  it("sees the worker's writes, by every path, in the main thread's log", async () => {
    const { memory, code, migration } = small();
    const peer = new DirtyPeer();
    expect(await peer.ok({ op: 'attach', handle: memory.handle(), client: 'code' })).toMatchObject({
      client: 'code',
      pageSize: P,
    });
    await peer.ok({ op: 'write', addr: 2 * P - 1, bytes: [1, 2] });
    expect(code.collect()).toEqual([P, 2 * P]);
    expect(migration.collect()).toEqual([P, 2 * P]);
    // Every path at its own page of the 64-byte-page memory below.
    const fine = new GuestMemory({ size: 16 * 64, dirtyLog: { clients: ['code'], pageSize: 64 } });
    const names = [
      'write',
      'rw',
      'set',
      'writeU8',
      'writeU16LE',
      'writeU16BE',
      'writeU32LE',
      'writeU32BE',
      'writeU64LE',
      'writeU64BE',
      'scatter',
      'map',
      'memoryWrite',
    ];
    const at = Object.fromEntries(names.map((name, index) => [name, (index + 1) * 64 + 8]));
    const finePeer = new DirtyPeer();
    await finePeer.ok({ op: 'attach', handle: fine.handle(), client: 'code' });
    await finePeer.ok({ op: 'everyPath', at });
    expect(fine.dirtyLog('code').collect()).toEqual(names.map((_, index) => (index + 1) * 64));
    // Reads in the worker mark nothing.
    await peer.ok({ op: 'read', addr: 0, length: 64 });
    expect(code.collect()).toEqual([]);
  });

  it("the worker's log sees the main thread's writes; a collect or clear in one thread is seen by both", async () => {
    const { memory, ctx, code, migration } = small();
    const peer = new DirtyPeer();
    await peer.ok({ op: 'attach', handle: memory.handle(), client: 'code' });
    ctx.write(P, bytes(1));
    memory.write(3 * P + 7, bytes(1));
    expect((await peer.ok({ op: 'isDirty', client: 'code', args: [P, 1] })).dirty).toBe(true);
    expect(await peer.collect('code')).toEqual([P, 3 * P]);
    expect(code.collect()).toEqual([]); // the worker's collect cleared the shared bitmap
    expect(migration.isDirty(P, 1)).toBe(true);
    expect(await peer.collect('migration', 3 * P, P)).toEqual([3 * P]);
    expect(migration.collect()).toEqual([P]);

    await peer.ok({ op: 'mark', client: 'code', args: [6 * P, P + 1] });
    expect(code.isDirty(7 * P, 1)).toBe(true);
    expect(migration.isDirty(0, 8 * P)).toBe(false);
    code.clear(7 * P, P);
    expect(await peer.collect('code')).toEqual([6 * P]);
    ctx.set(0, 1, 2 * P);
    await peer.ok({ op: 'clear', client: 'code', args: [0, P] });
    expect(code.collect()).toEqual([P]);
    await peer.ok({ op: 'clear', client: 'migration', args: [] });
    expect(migration.collect()).toEqual([]);

    // Errors in the worker are the same errors.
    expect(await peer.request({ op: 'mark', client: 'code', args: [4 * P, 1] })).toMatchObject({
      ok: false,
      code: 'ERR_DMA_UNASSIGNED',
    });
    expect(await peer.request({ op: 'collect', client: 'other', args: [] })).toMatchObject({
      ok: false,
      code: 'ERR_DMA_INVALID_ARGUMENT',
    });
    expect(code.collect()).toEqual([]);
  });

  it('shares the log of a memory adopted from a shared WebAssembly.Memory, by guest page', async () => {
    const memory = new GuestMemory({
      backing: sharedWasmMemory(1),
      regions: [
        { base: 0x0000, size: 0x2000, offset: 0x9000 },
        { base: 0x2000, size: 0x1000, offset: 0x1000 },
      ],
      dirtyLog: { clients: ['code'], pageSize: 1024 },
    });
    const peer = new DirtyPeer();
    await peer.ok({ op: 'attach', handle: memory.handle(), client: 'code' });
    await peer.ok({ op: 'write', addr: 0x1fff, bytes: [1, 2] }); // across the two regions
    expect(memory.dirtyLog('code').collect()).toEqual([0x1c00, 0x2000]);
    new DMAContext(memory).writeU16LE(0x400, 1);
    expect(await peer.collect('code')).toEqual([0x400]);
  });

  it('bounds ranges over the whole 2^53 address space by the pages the log has', async () => {
    const { memory, code } = small(64);
    const peer = new DirtyPeer();
    await peer.ok({ op: 'attach', handle: memory.handle(), client: 'code' });
    code.mark(P, 1);
    code.mark(7 * P + 100, 1);
    expect(await peer.ok({ op: 'wholeSpace', client: 'code' })).toMatchObject({
      dirty: true,
      far: false,
      pages: [P, 7 * P + 64],
      after: [],
    });
  });
});

// ---------------------------------------------------------------------------------------
// 4. Writers and a collector racing
//
// Two writer workers take the pages of one memory in ascending order from a shared counter
// and write each exactly once; a collector worker collects over and over (mostly a window
// around the writers, so it exchanges the very words they are setting bits in). Writers and
// collector take ticks of one shared clock (`Atomics.add` on one word: a total order that
// respects each thread's program order) before and after every write and every collect.
//
// SPEC §4.2 says a write that completed before `collect` began is reported by that collect
// or a later one. Read literally that is too strong for any implementation: a collect that
// began before the write, and exchanged the word after the write's bit was set, reports the
// page; the next collect, which began after the write completed, rightly does not report it
// again. (`reportedByOverlapping` counts such writes: thousands in every run.) What "never
// lost" means, and what is checked: each page's write is reported by some collect that had
// not ended when the write began, counting the final collect made here after every worker
// stopped. With each page written once, a page is also never reported twice (a mark is not
// reported again), and never by a collect that ended before its write began (none made up).

const RACE_PAGE = 64;
const RACE_PAGES = 1 << 16; // 4 MiB of 64-byte pages, each written exactly once
/** ctx.write alone is the cheapest write: the marks come closest together. */
const RACE_FAST_PAGES = 1 << 18;
/** The writers' paths: ctx.write, writeU32LE, set, memory.write, scatter, map + unmap, write behind an IOMMU. */
const ALL_PATHS = 7;
const RACE_WRITERS = 2;
const RACE_WINDOW = 128; // pages around a writer that the collector collects
const RACE_WHOLE_EVERY = 16; // every 16th collect takes the whole memory
const RACE_BUDGET_MS = 3_000;
const RACE_IOVA_OFFSET = 2 ** 30;
const CONTROL_ROUNDS = 3;

interface RaceReport {
  writes: number;
  collects: number;
  /** Writes of which no collect that was still running when the write began, or any later one, reported the page. */
  lost: number;
  /** Pages reported more than once (each page is written once). */
  duplicates: number;
  /** Reports of a page never written, or by a collect that ended before its write began. */
  phantoms: number;
  /** Collects whose pages were not strictly ascending. */
  unordered: number;
  /** Writes reported only by a collect that began before the write ended. */
  reportedByOverlapping: number;
  /** Reports made while some writer was writing. */
  concurrentReports: number;
  firstLost?: { page: number; begin: number; end: number };
  migrationMismatch: number;
}

/** Runs the writers and one collector in `mode`, then collects what is left here and checks. */
async function race(
  mode: 'collect' | 'isDirty-then-clear',
  pages: number,
  paths: number,
): Promise<RaceReport> {
  const memory = new GuestMemory({
    size: pages * RACE_PAGE,
    dirtyLog: { clients: ['code', 'migration'], pageSize: RACE_PAGE },
  });
  const domain = new IommuDomain();
  domain.map(RACE_IOVA_OFFSET, 0, pages * RACE_PAGE, WRITE);
  const participants = RACE_WRITERS + 1;
  const common = {
    handle: memory.handle(),
    writers: RACE_WRITERS,
    participants,
    pageSize: RACE_PAGE,
    pages: pages,
    clock: new SharedArrayBuffer(4),
    next: new SharedArrayBuffer(4),
    start: new SharedArrayBuffer(8),
    done: new SharedArrayBuffer(8),
    budgetMs: RACE_BUDGET_MS,
    paths,
  };
  const finished = (worker: ReturnType<typeof startWorker>) =>
    new Promise<unknown>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => {
        reject(new Error(`a race worker exited with code ${code} before reporting`));
      });
    });
  const writerLogs = Array.from(
    { length: RACE_WRITERS },
    () => new SharedArrayBuffer(4 * 3 * pages),
  );
  const writers = writerLogs.map((records, id) =>
    finished(
      startWorker('dirty-writer.mjs', {
        ...common,
        id,
        records,
        domain: domain.handle(),
        iovaOffset: RACE_IOVA_OFFSET,
      }),
    ),
  );
  const collector = finished(
    startWorker('dirty-collector.mjs', {
      ...common,
      client: 'code',
      mode,
      windowPages: RACE_WINDOW,
      wholeEvery: RACE_WHOLE_EVERY,
    }),
  );
  const results = await bounded(
    Promise.all([collector, ...writers]),
    RACE_BUDGET_MS + 10_000,
    'the race workers',
  );
  const [collected, ...written] = results as [{ records: Int32Array }, ...{ writes: number }[]];

  // Each page's one write: [begin, end] ticks of the shared clock.
  const writeBegin = new Float64Array(pages).fill(-1);
  const writeEnd = new Float64Array(pages).fill(-1);
  let writes = 0;
  let lastEnd = 0;
  let firstBegin = Infinity;
  for (const [id, records] of writerLogs.entries()) {
    const words = new Int32Array(records);
    const total = (written[id] as { writes: number }).writes;
    for (let index = 0; index < total; index++) {
      const page = words[3 * index] as number;
      writeBegin[page] = words[3 * index + 1] as number;
      writeEnd[page] = words[3 * index + 2] as number;
      lastEnd = Math.max(lastEnd, writeEnd[page]);
      firstBegin = Math.min(firstBegin, writeBegin[page]);
    }
    writes += total;
  }

  // Every report: the latest end of a collect reporting each page, and the checks per report.
  const reportEnd = new Float64Array(pages).fill(-1);
  const reportBeginsLate = new Uint8Array(pages);
  const reports = new Uint32Array(pages);
  const report: Omit<
    RaceReport,
    'writes' | 'lost' | 'reportedByOverlapping' | 'migrationMismatch'
  > = {
    collects: 0,
    duplicates: 0,
    phantoms: 0,
    unordered: 0,
    concurrentReports: 0,
  };
  const note = (page: number, begin: number, end: number) => {
    if (
      page < 0 ||
      page >= pages ||
      writeBegin[page] === -1 ||
      end < (writeBegin[page] as number)
    ) {
      report.phantoms++;
      return;
    }
    if (++(reports[page] as number) > 1) report.duplicates++;
    reportEnd[page] = Math.max(reportEnd[page] as number, end);
    if (begin > (writeEnd[page] as number)) reportBeginsLate[page] = 1;
    if (begin < lastEnd && end > firstBegin) report.concurrentReports++;
  };
  const flat = collected.records;
  for (let at = 0; at < flat.length;) {
    const begin = flat[at] as number;
    const end = flat[at + 1] as number;
    const found = flat[at + 2] as number;
    let previous = -1;
    for (let index = 0; index < found; index++) {
      const page = flat[at + 3 + index] as number;
      if (page <= previous) report.unordered++;
      previous = page;
      note(page, begin, end);
    }
    report.collects++;
    at += 3 + found;
  }
  // The final collect, here, after every worker has stopped: it completes the picture.
  let previous = -1;
  for (const addr of memory.dirtyLog('code').collect()) {
    const page = addr / RACE_PAGE;
    if (page <= previous) report.unordered++;
    previous = page;
    note(page, Infinity, Infinity);
  }

  let lost = 0;
  let reportedByOverlapping = 0;
  let firstLost: RaceReport['firstLost'];
  for (let page = 0; page < pages; page++) {
    const begin = writeBegin[page] as number;
    if (begin === -1) continue;
    if ((reportEnd[page] as number) < begin) {
      lost++;
      firstLost ??= { page, begin, end: writeEnd[page] as number };
    } else if (reportBeginsLate[page] === 0) {
      reportedByOverlapping++;
    }
  }
  // The other client was never collected during the race: it has every written page.
  const migration = new Set(
    memory
      .dirtyLog('migration')
      .collect()
      .map((addr) => addr / RACE_PAGE),
  );
  let migrationMismatch = 0;
  for (let page = 0; page < pages; page++) {
    if (migration.has(page) !== (writeBegin[page] !== -1)) migrationMismatch++;
  }
  return {
    ...report,
    writes,
    lost,
    reportedByOverlapping,
    migrationMismatch,
    ...(firstLost === undefined ? {} : { firstLost }),
  };
}

describe('DirtyLog: writers and a collector in other threads', () => {
  const check = (report: RaceReport, pages: number) => {
    expect(report.writes).toBeGreaterThan(pages / 8);
    expect(report.lost, JSON.stringify(report.firstLost)).toBe(0);
    expect(report.duplicates).toBe(0);
    expect(report.phantoms).toBe(0);
    expect(report.unordered).toBe(0);
    expect(report.migrationMismatch).toBe(0);
    if (PARALLEL) {
      // The collector did collect pages while the writers were writing them.
      expect(
        report.concurrentReports,
        'the collector never overlapped the writers',
      ).toBeGreaterThan(0);
    }
  };

  it(
    `loses no write, reports none twice and makes none up: every write path (${RACE_PAGES} pages)`,
    async () => {
      const report = await race('collect', RACE_PAGES, ALL_PATHS);
      console.log('dirty race, collect, every path:', report);
      check(report, RACE_PAGES);
    },
    RACE_BUDGET_MS + 15_000,
  );

  it(
    `loses no write, reports none twice and makes none up: ctx.write alone (${RACE_FAST_PAGES} pages)`,
    async () => {
      const report = await race('collect', RACE_FAST_PAGES, 1);
      console.log('dirty race, collect, ctx.write:', report);
      check(report, RACE_FAST_PAGES);
    },
    RACE_BUDGET_MS + 15_000,
  );

  // The check can fail: a collector that asks isDirty page by page and then clears the range
  // clears pages written after it looked at them, and the same check finds them lost.
  it.skipIf(!PARALLEL)(
    `catches the writes a broken collector (isDirty, then clear) loses (up to ${CONTROL_ROUNDS} rounds)`,
    async () => {
      let lost = 0;
      for (let round = 1; round <= CONTROL_ROUNDS && lost === 0; round++) {
        const report = await race('isDirty-then-clear', RACE_PAGES, ALL_PATHS);
        console.log(`dirty race, isDirty then clear, round ${round}:`, report);
        expect(report.phantoms).toBe(0);
        lost = report.lost;
      }
      expect(lost).toBeGreaterThan(0);
    },
    CONTROL_ROUNDS * (RACE_BUDGET_MS + 10_000),
  );
});
