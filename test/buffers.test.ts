/**
 * What counts as a caller's buffer, and how long it is: the proof in internal/intrinsics.ts
 * (`uint8Length`) that takes a claimed length only when the buffer's own elements confirm it,
 * and the builtin getters otherwise. Each case names what an object claims and what it is.
 */
import { describe, expect, it } from 'vitest';
import { DMAContext, DMAError, GuestMemory, ScatterGatherList } from '../src/index.js';

function setup(): { memory: GuestMemory; ctx: DMAContext } {
  const memory = new GuestMemory({ size: 4096 });
  memory.write(
    0,
    Uint8Array.from({ length: 64 }, (_, index) => index + 1),
  );
  return { memory, ctx: new DMAContext(memory) };
}

function guest(memory: GuestMemory, length: number): number[] {
  const bytes = new Uint8Array(length);
  memory.read(0, bytes);
  return [...bytes];
}

/** The real bytes of a typed array, read past anything it overrides. */
function realBytes(view: ArrayBufferView): number[] {
  return [...new Uint8Array(view.buffer, view.byteOffset, view.byteLength)];
}

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return error instanceof DMAError ? error.code : `not a DMAError: ${String(error)}`;
  }
  return undefined;
}

const ascending = (length: number, from = 1): number[] =>
  Array.from({ length }, (_, index) => index + from);

describe('a lying length is never the length of the access', () => {
  for (const [label, claim] of [
    ['understated', () => 2],
    ['overstated', () => 1 << 20],
    ['fractional', () => 2.5],
    ['negative', () => -1],
    ['not a number', () => '8'],
  ] as const) {
    it(`a subclass whose length is ${label} reads and writes its real 8 bytes`, () => {
      class Lying extends Uint8Array {
        override get length(): number {
          return claim() as number;
        }
      }
      const { memory, ctx } = setup();
      const buf = new Lying(8);
      ctx.read(0, buf);
      expect(realBytes(buf)).toEqual(ascending(8));
      new Uint8Array(buf.buffer).fill(0xee);
      ctx.write(0, buf);
      expect(guest(memory, 10)).toEqual([...new Array<number>(8).fill(0xee), 9, 10]);
    });
  }

  it('a length that changes on every read is read at most once per access and never used', () => {
    let reads = 0;
    const buf = new Uint8Array(8).fill(0x77);
    Object.defineProperty(buf, 'length', {
      get: () => {
        reads++;
        return reads % 2 === 0 ? 4096 : 1;
      },
    });
    const { memory, ctx } = setup();
    ctx.write(0, buf);
    expect(reads).toBe(1);
    expect(guest(memory, 9)).toEqual([...new Array<number>(8).fill(0x77), 9]);
  });

  it('a length getter that throws is ignored like one that lies', () => {
    class Throwing extends Uint8Array {
      override get length(): number {
        throw new Error('length');
      }
    }
    const { ctx } = setup();
    const buf = new Throwing(4);
    ctx.read(0, buf);
    expect(realBytes(buf)).toEqual([1, 2, 3, 4]);
  });

  it('a getter that detaches its own buffer makes a zero-length access, which moves nothing', () => {
    const buf = new Uint8Array(8);
    Object.defineProperty(buf, 'length', {
      get: () => {
        structuredClone(buf.buffer, { transfer: [buf.buffer] });
        return 8;
      },
    });
    const { memory, ctx } = setup();
    ctx.write(0, buf);
    expect(buf.byteLength).toBe(0);
    expect(guest(memory, 8)).toEqual(ascending(8));
  });

  // The attributes are read before the buffer's length: a flag object's getter that detaches
  // the buffer leaves a zero-length access, not a copy of a length the buffer no longer has
  // (which stored zeros in guest memory for 8 bytes and threw a TypeError for others).
  describe.each([6, 8, 64])('a flag getter that detaches the buffer (%i bytes)', (length) => {
    const detaching = (buf: Uint8Array<ArrayBuffer>) => ({
      get relaxed() {
        structuredClone(buf.buffer, { transfer: [buf.buffer] });
        return true;
      },
    });

    it.each(['write', 'read'] as const)('makes %s a zero-length access', (op) => {
      const { memory, ctx } = setup();
      const buf = new Uint8Array(length).fill(0xee);
      ctx[op](128, buf);
      ctx[op](128, buf);
      expect(
        codeOf(() => {
          ctx[op](0, buf, detaching(buf));
        }),
      ).toBeUndefined();
      expect(buf.byteLength).toBe(0);
      expect(guest(memory, 64)).toEqual(ascending(64));
    });
  });

  it('a length-tracking view of a resizable buffer is its current length', () => {
    // ES2024 resizable buffers, in Node 20 but not in this project's ES2022 lib types.
    const Resizable = ArrayBuffer as unknown as new (
      length: number,
      options: { maxByteLength: number },
    ) => ArrayBuffer & { resize(length: number): void };
    const backing = new Resizable(16, { maxByteLength: 64 });
    const buf = new Uint8Array(backing);
    const { ctx } = setup();
    backing.resize(4);
    ctx.read(0, buf);
    expect(realBytes(buf)).toEqual([1, 2, 3, 4]);
    backing.resize(6);
    ctx.read(0, buf);
    expect(realBytes(buf)).toEqual(ascending(6));
  });
});

describe('what only claims to be a Uint8Array', () => {
  const fakes: [string, () => unknown][] = [
    ['Object.create(Uint8Array.prototype)', () => Object.create(Uint8Array.prototype) as unknown],
    ['a proxy of a Uint8Array', () => new Proxy(new Uint8Array(8), {})],
    [
      'an array with the prototype of Uint8Array',
      () => Object.setPrototypeOf([1, 2, 3], Uint8Array.prototype) as unknown,
    ],
    [
      'a DataView with the prototype of Uint8Array',
      () =>
        Object.setPrototypeOf(new DataView(new ArrayBuffer(8)), Uint8Array.prototype) as unknown,
    ],
    [
      'a BigInt64Array with the prototype of Uint8Array',
      () => Object.setPrototypeOf(new BigInt64Array(2), Uint8Array.prototype) as unknown,
    ],
  ];
  for (const [label, make] of fakes) {
    it(`${label} is ERR_DMA_INVALID_ARGUMENT for read, write and gather, and moves nothing`, () => {
      const { memory, ctx } = setup();
      const fake = make() as Uint8Array;
      expect(
        codeOf(() => {
          ctx.read(0, fake);
        }),
      ).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(
        codeOf(() => {
          ctx.write(0, fake);
        }),
      ).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(
        codeOf(() => {
          new ScatterGatherList(ctx).add(0, 3).gather(fake);
        }),
      ).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect(guest(memory, 64)).toEqual(ascending(64));
    });
  }

  it('a Float64Array with the prototype of Uint8Array is handled by its true length', () => {
    const { memory, ctx } = setup();
    const impostor = Object.setPrototypeOf(new Float64Array(4), Uint8Array.prototype) as Uint8Array;
    ctx.read(0, impostor);
    expect([...new Float64Array(impostor.buffer)]).toEqual([1, 2, 3, 4]);
    ctx.write(8, impostor);
    expect(guest(memory, 13)).toEqual([...ascending(8), 1, 2, 3, 4, 13]);
  });

  it('a Buffer is a Uint8Array', () => {
    const { ctx } = setup();
    const buf = Buffer.alloc(5);
    ctx.read(0, buf);
    expect([...buf]).toEqual([1, 2, 3, 4, 5]);
  });
});
