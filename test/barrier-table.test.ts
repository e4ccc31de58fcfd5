import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  GuestMemory,
  resolveBarrierPolicy,
  toFlags,
  type BarrierStrength,
  type DMAAttributesLike,
  type DMATraceEvent,
  type DMATraceOp,
  type GuestMemoryOptions,
} from '../src/index.js';

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;

/** Every access is at this naturally aligned address, so fixed-width accesses take the atomic path. */
const ADDR = 16;
const RAM_SIZE = 64;

type Attrs = DMAAttributesLike | undefined;

/**
 * One row of the barrier table for one accessor. `bits` are the attributes the access
 * carries once its implied direction is added; `before`/`after` say on which side of the
 * access event a barrier event of `strength` must appear.
 */
interface Row {
  readonly accessor: string;
  /** The attributes as given to the accessor; undefined for the default. */
  readonly attrs: number | undefined;
  readonly bits: number;
  readonly op: DMATraceOp;
  readonly length: number;
  readonly strength: BarrierStrength;
  readonly before: boolean;
  readonly after: boolean;
  /**
   * Runs the accessor and returns what it read (the value, or {@link readBuffer}'s bytes).
   * `record` starts the part of the trace the row is about.
   */
  readonly run: (ctx: DMAContext, attrs: Attrs, record: () => void) => unknown;
}

type Placement = Pick<Row, 'strength' | 'before' | 'after'>;

/** The table for accesses (not map/unmap): the strength follows the bits. */
function accessPlacement(bits: number): Placement {
  if ((bits & RELAXED) !== 0) return { strength: 'none', before: false, after: false };
  if (bits === READ) return { strength: 'acquire', before: false, after: true };
  if (bits === WRITE) return { strength: 'release', before: true, after: false };
  throw new Error(`no access row for bits ${bits}`);
}

/** An accessor's name, the bytes it touches, and its arguments for given attributes. */
type Access = [method: string, length: number, args: (attrs: Attrs) => unknown[]];

/** The buffer that `read` and `rw` with READ read into, so that a test can look at it. */
const readBuffer = new Uint8Array(8);

/** Calls `ctx[method](...args)`: the tables below name accessors rather than wrap each one. */
function invoke(ctx: DMAContext, method: string, args: unknown[]): unknown {
  const accessor = (ctx as unknown as Record<string, (...args: unknown[]) => unknown>)[method];
  return Reflect.apply(accessor as (...args: unknown[]) => unknown, ctx, args);
}

const readers: Access[] = [
  ['read', 8, (attrs) => [ADDR, readBuffer, attrs]],
  ['readU8', 1, (attrs) => [ADDR, attrs]],
  ['readU16LE', 2, (attrs) => [ADDR, attrs]],
  ['readU16BE', 2, (attrs) => [ADDR, attrs]],
  ['readU32LE', 4, (attrs) => [ADDR, attrs]],
  ['readU32BE', 4, (attrs) => [ADDR, attrs]],
  ['readU64LE', 8, (attrs) => [ADDR, attrs]],
  ['readU64BE', 8, (attrs) => [ADDR, attrs]],
];

const writers: Access[] = [
  ['write', 8, (attrs) => [ADDR, new Uint8Array(8).fill(7), attrs]],
  ['set', 8, (attrs) => [ADDR, 0x5a, 8, attrs]],
  ['writeU8', 1, (attrs) => [ADDR, 0xab, attrs]],
  ['writeU16LE', 2, (attrs) => [ADDR, 0xabcd, attrs]],
  ['writeU16BE', 2, (attrs) => [ADDR, 0xabcd, attrs]],
  ['writeU32LE', 4, (attrs) => [ADDR, 0xabcdef01, attrs]],
  ['writeU32BE', 4, (attrs) => [ADDR, 0xabcdef01, attrs]],
  ['writeU64LE', 8, (attrs) => [ADDR, 0x0123456789abcdefn, attrs]],
  ['writeU64BE', 8, (attrs) => [ADDR, 0x0123456789abcdefn, attrs]],
];

function impliedRows(accessors: Access[], implied: number, op: DMATraceOp): Row[] {
  return accessors.flatMap(([accessor, length, args]) =>
    [undefined, implied, RELAXED, implied | RELAXED].map((attrs) => {
      const bits = (attrs ?? 0) | implied;
      return {
        accessor,
        attrs,
        bits,
        op,
        length,
        ...accessPlacement(bits),
        run: (ctx: DMAContext, given: Attrs) => {
          const value = invoke(ctx, accessor, args(given));
          return value === undefined ? readBuffer : value;
        },
      };
    }),
  );
}

const rwRows: Row[] = [READ, WRITE, READ | RELAXED, WRITE | RELAXED].map((bits) => ({
  accessor: 'rw',
  attrs: bits,
  bits,
  op: (bits & READ) !== 0 ? 'read' : 'write',
  length: 8,
  ...accessPlacement(bits),
  run: (ctx, attrs) => {
    ctx.rw(ADDR, (bits & READ) !== 0 ? readBuffer : new Uint8Array(8).fill(3), attrs as number);
    return readBuffer;
  },
}));

/** map: acquire after for READ, full after for BIDIRECTIONAL, nothing for WRITE or RELAXED. */
const MAP_LENGTH = 12;
const mapRows: Row[] = [
  [READ, 'acquire'],
  [WRITE, 'none'],
  [BIDIRECTIONAL, 'full'],
  [READ | RELAXED, 'none'],
  [WRITE | RELAXED, 'none'],
  [BIDIRECTIONAL | RELAXED, 'none'],
].map(([bits, strength]) => ({
  accessor: 'map',
  attrs: bits as number,
  bits: bits as number,
  op: 'map',
  length: MAP_LENGTH,
  strength: strength as BarrierStrength,
  before: false,
  after: strength !== 'none',
  run: (ctx, attrs) => {
    ctx.map(ADDR, MAP_LENGTH, attrs as DMAAttributesLike);
  },
}));

/** unmap: release before for WRITE, full before for BIDIRECTIONAL, nothing for READ or RELAXED. */
const ACCESSED = 5;
const unmapRows: Row[] = [
  [READ, 'none'],
  [WRITE, 'release'],
  [BIDIRECTIONAL, 'full'],
  [READ | RELAXED, 'none'],
  [WRITE | RELAXED, 'none'],
  [BIDIRECTIONAL | RELAXED, 'none'],
].map(([bits, strength]) => ({
  accessor: 'unmap',
  attrs: bits as number,
  bits: bits as number,
  op: 'unmap',
  length: ACCESSED,
  strength: strength as BarrierStrength,
  before: strength !== 'none',
  after: false,
  run: (ctx, attrs, record) => {
    const view = ctx.map(ADDR, MAP_LENGTH, attrs as DMAAttributesLike);
    record();
    ctx.unmap(view, ACCESSED);
  },
}));

const rows: Row[] = [
  ...rwRows,
  ...impliedRows(readers, READ, 'read'),
  ...impliedRows(writers, WRITE, 'write').map((row) =>
    row.accessor === 'set' ? { ...row, op: 'set' as const } : row,
  ),
  ...mapRows,
  ...unmapRows,
];

function rowName(row: Row): string {
  return `${row.accessor} with ${row.attrs === undefined ? 'default attrs' : String(row.attrs)}`;
}

/** The exact trace a row must produce. */
function expectedTrace(row: Row): DMATraceEvent[] {
  const access: DMATraceEvent = {
    op: row.op,
    addr: ADDR,
    length: row.length,
    attrs: row.bits,
    barrier: row.strength,
  };
  const fence: DMATraceEvent = { ...access, op: 'barrier' };
  return [...(row.before ? [fence] : []), access, ...(row.after ? [fence] : [])];
}

interface Setup {
  readonly name: string;
  readonly options: GuestMemoryOptions;
  /** Which strengths cost one Atomics read-modify-write on the fence word. */
  readonly emits: readonly BarrierStrength[];
}

const setups: Setup[] = [
  {
    name: "policy 'strict'",
    options: { barrierPolicy: 'strict' },
    emits: ['acquire', 'release', 'full'],
  },
  { name: "policy 'tso'", options: { barrierPolicy: 'tso' }, emits: ['full'] },
  {
    name: "policy 'auto'",
    options: { barrierPolicy: 'auto' },
    emits: resolveBarrierPolicy('auto') === 'strict' ? ['acquire', 'release', 'full'] : ['full'],
  },
  { name: 'unshared memory', options: { shared: false, barrierPolicy: 'strict' }, emits: [] },
];

function traced(options: GuestMemoryOptions): { ctx: DMAContext; events: DMATraceEvent[] } {
  const events: DMATraceEvent[] = [];
  const memory = new GuestMemory({ size: RAM_SIZE, ...options });
  const ctx = new DMAContext(memory, {
    trace: (event) => {
      events.push(event);
    },
  });
  return { ctx, events };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe.each(setups)('the barrier table under $name', (setup) => {
  it.each(rows.map((row) => [rowName(row), row] as const))(
    '%s traces exactly its access and its barrier on the right side',
    (_name, row) => {
      const { ctx, events } = traced(setup.options);
      row.run(ctx, row.attrs, () => {
        events.length = 0;
      });
      expect(events).toEqual(expectedTrace(row));
    },
  );

  it.each(rows.filter((row) => row.attrs !== undefined).map((row) => [rowName(row), row] as const))(
    '%s traces the same with the attributes as a flag object',
    (_name, row) => {
      const { ctx, events } = traced(setup.options);
      row.run(ctx, toFlags(row.attrs as number), () => {
        events.length = 0;
      });
      expect(events).toEqual(expectedTrace(row));
    },
  );

  it.each(rows.map((row) => [rowName(row), row] as const))(
    '%s emits one fence-word RMW per barrier the policy turns into an instruction, traced or not',
    (_name, row) => {
      const expected = expectedTrace(row).filter(
        (event) => event.op === 'barrier' && setup.emits.includes(event.barrier),
      ).length;
      for (const withTrace of [true, false]) {
        const memory = new GuestMemory({ size: RAM_SIZE, ...setup.options });
        const ctx = withTrace
          ? new DMAContext(memory, { trace: () => undefined })
          : new DMAContext(memory);
        const add = vi.spyOn(Atomics, 'add');
        row.run(ctx, row.attrs, () => {
          add.mockClear();
        });
        expect(add).toHaveBeenCalledTimes(expected);
        for (const [word] of add.mock.calls) expect(word.buffer).not.toBe(memory.buffer);
        add.mockRestore();
      }
    },
  );

  it.each<BarrierStrength>(['none', 'acquire', 'release', 'full'])(
    "ctx.barrier('%s') traces one barrier event unless it is none, and fences per the policy",
    (strength) => {
      const { ctx, events } = traced(setup.options);
      const add = vi.spyOn(Atomics, 'add');
      ctx.barrier(strength);
      expect(events).toEqual(
        strength === 'none'
          ? []
          : [{ op: 'barrier', addr: 0, length: 0, attrs: 0, barrier: strength }],
      );
      expect(add).toHaveBeenCalledTimes(setup.emits.includes(strength) ? 1 : 0);
    },
  );

  it.each<BarrierStrength>(['none', 'acquire', 'release', 'full'])(
    "memory.barrier('%s') fences per the policy",
    (strength) => {
      const memory = new GuestMemory({ size: RAM_SIZE, ...setup.options });
      const add = vi.spyOn(Atomics, 'add');
      memory.barrier(strength);
      expect(add).toHaveBeenCalledTimes(setup.emits.includes(strength) ? 1 : 0);
    },
  );

  it('valid() issues no barrier and traces nothing, for every direction', () => {
    const { ctx, events } = traced(setup.options);
    const add = vi.spyOn(Atomics, 'add');
    for (const bits of [READ, WRITE, BIDIRECTIONAL, READ | RELAXED, WRITE | RELAXED]) {
      expect(ctx.valid(ADDR, 8, bits)).toBe(true);
      expect(ctx.valid(RAM_SIZE - 4, 8, bits)).toBe(false);
    }
    expect(events).toEqual([]);
    expect(add).not.toHaveBeenCalled();
  });
});

/** A read result as hex, byte by byte in memory order or as the value's digits. */
function hex(result: unknown): string {
  if (result instanceof Uint8Array) {
    return Array.from(result, (byte) => byte.toString(16).padStart(2, '0')).join('');
  }
  return (result as number | bigint).toString(16);
}

describe("barrier placement against the data, under 'strict'", () => {
  // The fence RMW is replaced by one that first records guest memory and then overwrites the
  // accessed bytes with 0xee, like another agent writing right after the barrier. A release
  // barrier must find the old bytes (the store has not happened yet) and the store must win;
  // an acquire barrier must come after the load, so the load still sees the old bytes.
  const ordered = rows.filter(
    (row) =>
      (row.strength === 'acquire' && row.op === 'read') ||
      (row.strength === 'release' && (row.op === 'write' || row.op === 'set')),
  );

  it.each(ordered.map((row) => [rowName(row), row] as const))(
    '%s fences on the right side of the data it moves',
    (_name, row) => {
      const memory = new GuestMemory({ size: RAM_SIZE, barrierPolicy: 'strict' });
      const ctx = new DMAContext(memory);
      const accessed = (): Uint8Array => memory.bytes.subarray(ADDR, ADDR + row.length);
      memory.bytes.fill(0x11);
      readBuffer.fill(0);
      const atFence: string[] = [];
      const add = Atomics.add.bind(Atomics);
      vi.spyOn(Atomics, 'add').mockImplementation((...args: Parameters<typeof add>) => {
        atFence.push(hex(accessed().slice()));
        accessed().fill(0xee);
        return add(...args);
      });

      const result = row.run(ctx, row.attrs, () => undefined);

      const old = '11'.repeat(row.length);
      expect(atFence).toEqual([old]);
      if (row.op === 'read') {
        expect(hex(result).slice(0, 2 * row.length)).toBe(old);
      } else {
        expect(Array.from(accessed()).includes(0xee)).toBe(false);
      }
    },
  );
});

describe('the fence word', () => {
  it('is one word shared by every context on the memory and by handles of it', () => {
    const memory = new GuestMemory({ size: RAM_SIZE, barrierPolicy: 'strict' });
    const other = GuestMemory.fromHandle(memory.handle());
    const add = vi.spyOn(Atomics, 'add');
    new DMAContext(memory).read(ADDR, new Uint8Array(4));
    new DMAContext(memory).write(ADDR, new Uint8Array(4));
    new DMAContext(other).barrier('full');
    other.barrier('acquire');
    expect(add).toHaveBeenCalledTimes(4);
    const words = new Set(add.mock.calls.map(([word]) => word.buffer));
    expect(words.size).toBe(1);
    expect([...words][0]).toBeInstanceOf(SharedArrayBuffer);
    expect([...words][0]).not.toBe(memory.buffer);
  });

  it("reports the policy 'auto' resolved to on this host", () => {
    const memory = new GuestMemory({ size: RAM_SIZE });
    expect(memory.barrierPolicy).toBe(resolveBarrierPolicy('auto'));
    expect(['strict', 'tso']).toContain(memory.barrierPolicy);
  });
});
