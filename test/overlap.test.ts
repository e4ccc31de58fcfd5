/* eslint-disable @typescript-eslint/no-deprecated -- the legacy helpers are among the accessors tested */
/**
 * SPEC §6: "A caller's buffer may overlap guest memory: every copy behaves as if through a
 * temporary, however many pieces it is split into."
 *
 * Every accessor that takes a buffer is run with the buffer a view of the SAME guest memory
 * (`new Uint8Array(memory.buffer, offset, length)`), at every shift from -64 to +64 bytes
 * around the backing offset of each piece the access is split into, for lengths from 1 byte
 * (the staged copies) to 4400 bytes (the `set` copies, and three pieces behind the IOMMU).
 * The expected result is computed on a plain copy of the whole backing store, by simulating
 * the copy through a temporary:
 *
 * - read (device reads guest memory into the buffer): temp = the guest bytes of the pieces in
 *   order; then temp is written where the buffer lies;
 * - write (device writes the buffer to guest memory): temp = the buffer's bytes first; then
 *   temp is written into the pieces in order.
 *
 * The whole backing store is then compared byte for byte. Memory is refilled before every
 * case from a pseudo-random byte stream (no short period) at an offset that changes with the
 * case, so that a misplaced byte shows and no coincidence repeats.
 */
import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  GuestMemory,
  IommuDomain,
  ScatterGatherList,
} from '../src/index.js';
import { dmaMemoryRead, dmaMemoryWrite } from '../src/legacy.js';

const { READ, WRITE, BIDIRECTIONAL } = DMAAttributes;
const PAGE = 4096;
/** Shifts of the buffer relative to each anchor: every one from -64 to +64. */
const SHIFT = 64;
/** From one byte (staged both ways) through the staged-out limit (192) to `set` and three pieces. */
const LENGTHS = [1, 7, 64, 100, 300, 4400] as const;

/** Two RAM regions with a hole between them: their backing spans are adjacent. */
const REGIONS = [
  { base: 0, size: 0x10000 },
  { base: 0x20000, size: 0x10000 },
] as const;

/** A backing-store range: `[offset, length]`. */
type Piece = readonly [offset: number, length: number];

/** A pseudo-random byte stream (xorshift32), long enough for any fill offset. */
const STREAM = (() => {
  const bytes = new Uint8Array(0x20000 + 0x10000);
  let state = 0x2545f491;
  for (let i = 0; i < bytes.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[i] = state >>> 24;
  }
  return bytes;
})();

/** How a transfer's direction is simulated. */
type Direction = 'read' | 'write';

interface Case {
  /** Where the buffer lies in the backing store, and its length. */
  readonly bufferOffset: number;
  readonly bufferLength: number;
  /** The backing pieces of the guest range, in the order the accessor walks them. */
  readonly pieces: readonly Piece[];
  readonly direction: Direction;
  /** Runs the accessor on `buf`, a view of the backing store at `bufferOffset`. */
  readonly run: (buf: Uint8Array) => void;
  /** What to name in a failure. */
  readonly label: string;
}

class Harness {
  readonly bytes: Uint8Array;
  #case = 0;

  constructor(readonly memory: GuestMemory) {
    this.bytes = new Uint8Array(memory.buffer);
  }

  /**
   * Runs one case against `buffer` (the same SharedArrayBuffer object as the memory's by
   * default); returns a description of the first differing byte, or undefined.
   */
  check(
    { bufferOffset, bufferLength, pieces, direction, run, label }: Case,
    buffer: ArrayBufferLike = this.memory.buffer,
  ): string | undefined {
    const bytes = this.bytes;
    const size = bytes.length;
    if (bufferOffset < 0 || bufferOffset + bufferLength > size) {
      throw new Error(`${label}: the buffer falls outside the backing store`);
    }
    const fill = (this.#case++ * 4099) % 0x10000;
    bytes.set(STREAM.subarray(fill, fill + size));

    // The expectation, on a plain copy: through a temporary.
    const expected = bytes.slice();
    const total = pieces.reduce((sum, [, length]) => sum + length, 0);
    if (direction === 'read') {
      const temp = new Uint8Array(total);
      let at = 0;
      for (const [offset, length] of pieces) {
        temp.set(expected.subarray(offset, offset + length), at);
        at += length;
      }
      expected.set(temp, bufferOffset);
    } else {
      const temp = expected.slice(bufferOffset, bufferOffset + total);
      let at = 0;
      for (const [offset, length] of pieces) {
        expected.set(temp.subarray(at, at + length), offset);
        at += length;
      }
    }

    run(new Uint8Array(buffer, bufferOffset, bufferLength));

    if (Buffer.from(bytes.buffer, bytes.byteOffset, size).equals(expected)) return undefined;
    let first = 0;
    while (bytes[first] === expected[first]) first++;
    let differing = 0;
    for (let i = first; i < size; i++) if (bytes[i] !== expected[i]) differing++;
    return `${label}: ${differing} byte(s) differ, the first at backing offset 0x${first.toString(16)} (0x${(bytes[first] as number).toString(16)}, expected 0x${(expected[first] as number).toString(16)})`;
  }
}

/**
 * Runs the case `build(length)` makes for every length, every anchor the case offers (the
 * backing offsets of its pieces) and every shift, and expects no failure.
 */
function sweep(
  harness: Harness,
  build: (length: number) => {
    pieces: readonly Piece[];
    direction: Direction;
    run: (buf: Uint8Array) => void;
    /** Extra bytes the buffer has beyond the access (the legacy helpers' `len < buf.length`). */
    slack?: number;
  },
  buffer?: ArrayBufferLike,
): void {
  const failures: string[] = [];
  let cases = 0;
  for (const length of LENGTHS) {
    const { pieces, direction, run, slack = 0 } = build(length);
    expect(pieces.reduce((sum, [, size]) => sum + size, 0)).toBe(length);
    const anchors = [...new Set(pieces.filter(([, size]) => size > 0).map(([offset]) => offset))];
    for (const anchor of anchors) {
      for (let shift = -SHIFT; shift <= SHIFT; shift++) {
        const failure = harness.check(
          {
            bufferOffset: anchor + shift,
            bufferLength: length + slack,
            pieces,
            direction,
            run,
            label: `length ${length}, buffer at piece offset 0x${anchor.toString(16)} ${shift >= 0 ? '+' : '-'} ${Math.abs(shift)}`,
          },
          buffer,
        );
        cases++;
        if (failure !== undefined && failures.length < 8) failures.push(failure);
      }
    }
  }
  expect(failures).toEqual([]);
  expect(cases).toBeGreaterThanOrEqual(LENGTHS.length * (2 * SHIFT + 1));
}

// ---------------------------------------------------------------------------------------
// Setups.

function flatSetup() {
  const memory = new GuestMemory({ regions: [...REGIONS] });
  const ctx = new DMAContext(memory);
  const harness = new Harness(memory);
  /** The one backing piece of a flat guest range. */
  const piece = (gpa: number, length: number): Piece => [memory.offsetOf(gpa, length), length];
  return { memory, ctx, harness, piece };
}

/**
 * IOVA pages V0..V3 mapped to guest pages out of order and in both regions: V0 → 0x9000,
 * V1 → 0x8000 (just before V0's page in the backing store), V2 → 0x22000, V3 → 0x7000. An
 * access across V0/V1 is two pieces, the second before the first in the backing store; one
 * of 4400 bytes from the end of V0 is three.
 */
const IOVA = 0x100000;
const IOVA_PAGES = [0x9000, 0x8000, 0x22000, 0x7000] as const;

function iommuSetup() {
  const memory = new GuestMemory({ regions: [...REGIONS] });
  const domain = new IommuDomain();
  IOVA_PAGES.forEach((gpa, page) => {
    domain.map(IOVA + page * PAGE, gpa, PAGE, BIDIRECTIONAL);
  });
  const ctx = new DMAContext(memory, { iommu: domain });
  const harness = new Harness(memory);
  /** The backing pieces of an IOVA range, from the mapping above (not from the library's walk). */
  const pieces = (iova: number, length: number): Piece[] => {
    const out: Piece[] = [];
    let cursor = iova;
    const end = iova + length;
    while (cursor < end) {
      const page = Math.floor((cursor - IOVA) / PAGE);
      const gpaPage = IOVA_PAGES[page];
      if (gpaPage === undefined) throw new Error(`IOVA 0x${cursor.toString(16)} is not mapped`);
      const take = Math.min(end, IOVA + (page + 1) * PAGE) - cursor;
      const gpa = gpaPage + (cursor - (IOVA + page * PAGE));
      out.push([memory.offsetOf(gpa, take), take]);
      cursor += take;
    }
    return out;
  };
  return { memory, domain, ctx, harness, pieces };
}

/** An access from the end of IOVA page V0 into V1 (and V2 for 4400 bytes): at most 100 bytes in V0. */
function splitIova(length: number): number {
  return IOVA + PAGE - Math.min(100, Math.ceil(length / 2));
}

/** A list total split in three parts: half, a third of the rest, the remainder (some may be 0). */
function thirds(length: number): [number, number, number] {
  const first = Math.ceil(length / 2);
  const second = Math.floor((length - first) / 2);
  return [first, second, length - first - second];
}

/** A flat list: a range high in region 1, one in region 0, one in region 1 200 bytes before the first. */
function flatList(length: number): [gpa: number, length: number][] {
  const [a, b, c] = thirds(length);
  const high = 0x20000 + 0x6000;
  return [
    [high, a],
    [0x3000 + 40, b],
    [high - 200, c],
  ];
}

/**
 * A list behind the IOMMU: across V2/V3 (region 1 then region 0), across V0/V1 (two pieces
 * backwards in the backing store), then inside V1; IOVAs out of order.
 */
function iommuList(length: number): [iova: number, length: number][] {
  const [a, b, c] = thirds(length);
  return [
    [IOVA + 3 * PAGE - Math.min(60, Math.ceil(a / 2)), a],
    [IOVA + PAGE - Math.min(80, Math.ceil(b / 2)), b],
    [IOVA + PAGE + 700, c],
  ];
}

// ---------------------------------------------------------------------------------------

describe("a caller's buffer may overlap guest memory: every copy behaves as if through a temporary, however many pieces it is split into", () => {
  describe('(a) no IOMMU: one piece per access', () => {
    it('ctx.read', () => {
      const { ctx, harness, piece } = flatSetup();
      for (const gpa of [0x4000 + 3, 0x20000 + 0x2000 + 5]) {
        sweep(harness, (length) => ({
          pieces: [piece(gpa, length)],
          direction: 'read',
          run: (buf) => {
            ctx.read(gpa, buf);
          },
        }));
      }
    });

    it('ctx.write', () => {
      const { ctx, harness, piece } = flatSetup();
      for (const gpa of [0x4000 + 3, 0x20000 + 0x2000 + 5]) {
        sweep(harness, (length) => ({
          pieces: [piece(gpa, length)],
          direction: 'write',
          run: (buf) => {
            ctx.write(gpa, buf);
          },
        }));
      }
    });

    it('ctx.rw READ and WRITE', () => {
      const { ctx, harness, piece } = flatSetup();
      const gpa = 0x5000 + 1;
      for (const direction of ['read', 'write'] as const) {
        sweep(harness, (length) => ({
          pieces: [piece(gpa, length)],
          direction,
          run: (buf) => {
            ctx.rw(gpa, buf, direction === 'read' ? READ : WRITE);
          },
        }));
      }
    });

    it('memory.read and memory.write (the vCPU accessors)', () => {
      const { memory, harness, piece } = flatSetup();
      const gpa = 0x20000 + 0x7000 + 7;
      sweep(harness, (length) => ({
        pieces: [piece(gpa, length)],
        direction: 'read',
        run: (buf) => {
          memory.read(gpa, buf);
        },
      }));
      sweep(harness, (length) => ({
        pieces: [piece(gpa, length)],
        direction: 'write',
        run: (buf) => {
          memory.write(gpa, buf);
        },
      }));
    });

    it('legacy dmaMemoryRead and dmaMemoryWrite (len shorter than the buffer)', () => {
      const { ctx, harness, piece } = flatSetup();
      const gpa = 0x6000 + 2;
      sweep(harness, (length) => ({
        pieces: [piece(gpa, length)],
        direction: 'read',
        slack: 3,
        run: (buf) => {
          dmaMemoryRead(ctx, gpa, buf, length);
        },
      }));
      sweep(harness, (length) => ({
        pieces: [piece(gpa, length)],
        direction: 'write',
        slack: 3,
        run: (buf) => {
          dmaMemoryWrite(ctx, gpa, buf, length);
        },
      }));
    });
  });

  describe('(b) an IOMMU mapping the IOVA range to non-contiguous guest pages: several pieces', () => {
    it('the setup really splits: the pieces are not contiguous in the backing store', () => {
      const { pieces } = iommuSetup();
      expect(pieces(splitIova(7), 7).length).toBe(2);
      expect(pieces(splitIova(300), 300).length).toBe(2);
      const three = pieces(splitIova(4400), 4400);
      expect(three.length).toBe(3);
      for (let i = 1; i < three.length; i++) {
        const [offset, length] = three[i - 1] as Piece;
        expect(offset + length).not.toBe((three[i] as Piece)[0]);
      }
    });

    for (const direction of ['read', 'write'] as const) {
      it(`ctx.${direction}`, () => {
        const { ctx, harness, pieces } = iommuSetup();
        sweep(harness, (length) => {
          const iova = splitIova(length);
          return {
            pieces: pieces(iova, length),
            direction,
            run: (buf) => {
              if (direction === 'read') ctx.read(iova, buf);
              else ctx.write(iova, buf);
            },
          };
        });
      });
    }

    it('ctx.rw READ and WRITE', () => {
      const { ctx, harness, pieces } = iommuSetup();
      for (const direction of ['read', 'write'] as const) {
        sweep(harness, (length) => {
          const iova = splitIova(length);
          return {
            pieces: pieces(iova, length),
            direction,
            run: (buf) => {
              ctx.rw(iova, buf, direction === 'read' ? READ : WRITE);
            },
          };
        });
      }
    });

    it('legacy dmaMemoryRead and dmaMemoryWrite (len shorter than the buffer)', () => {
      const { ctx, harness, pieces } = iommuSetup();
      for (const direction of ['read', 'write'] as const) {
        sweep(harness, (length) => {
          const iova = splitIova(length);
          return {
            pieces: pieces(iova, length),
            direction,
            slack: 5,
            run: (buf) => {
              if (direction === 'read') dmaMemoryRead(ctx, iova, buf, length);
              else dmaMemoryWrite(ctx, iova, buf, length);
            },
          };
        });
      }
    });
  });

  describe('(c) ScatterGatherList: several ranges, a piece or more each', () => {
    const lists = [
      ['without an IOMMU: ranges in different regions, out of order', false],
      [
        'behind the IOMMU: ranges split across non-contiguous pages, in both regions, IOVAs out of order',
        true,
      ],
    ] as const;
    for (const [where, behindIommu] of lists) {
      for (const direction of ['read', 'write'] as const) {
        it(`${direction === 'read' ? 'gather' : 'scatter'} ${where}`, () => {
          const setup = behindIommu ? iommuSetup() : flatSetup();
          sweep(setup.harness, (length) => {
            const ranges = behindIommu ? iommuList(length) : flatList(length);
            const sg = new ScatterGatherList(setup.ctx);
            for (const [addr, size] of ranges) sg.add(addr, size);
            return {
              pieces: ranges.flatMap(([addr, size]) =>
                'pieces' in setup ? setup.pieces(addr, size) : [setup.piece(addr, size)],
              ),
              direction,
              run: (buf) => {
                if (direction === 'read') sg.gather(buf);
                else sg.scatter(buf);
              },
            };
          });
        });
      }
    }
  });

  describe('a buffer on a DIFFERENT SharedArrayBuffer object holding the same bytes', () => {
    /** memory.buffer posted through a MessageChannel: a new SharedArrayBuffer object, the same memory. */
    async function alias(memory: GuestMemory): Promise<SharedArrayBuffer> {
      const { port1, port2 } = new MessageChannel();
      try {
        const received = new Promise<SharedArrayBuffer>((resolve) => {
          port2.once('message', (value: SharedArrayBuffer) => {
            resolve(value);
          });
        });
        port1.postMessage(memory.buffer);
        return await received;
      } finally {
        port1.close();
        port2.close();
      }
    }

    it('identity differs, bytes are shared; split reads, writes, gathers and scatters are still right', async () => {
      const { memory, ctx, harness, pieces } = iommuSetup();
      const other = await alias(memory);
      expect(other).toBeInstanceOf(SharedArrayBuffer);
      expect(other).not.toBe(memory.buffer);
      expect(other.byteLength).toBe(memory.buffer.byteLength);
      // The same bytes: a store through one object is seen through the other.
      memory.write(0x9000, Uint8Array.of(0xa5));
      expect(new Uint8Array(other)[memory.offsetOf(0x9000, 1)]).toBe(0xa5);

      for (const direction of ['read', 'write'] as const) {
        sweep(
          harness,
          (length) => {
            const iova = splitIova(length);
            return {
              pieces: pieces(iova, length),
              direction,
              run: (buf) => {
                if (direction === 'read') ctx.read(iova, buf);
                else ctx.write(iova, buf);
              },
            };
          },
          other,
        );
        sweep(
          harness,
          (length) => {
            const ranges = iommuList(length);
            const sg = new ScatterGatherList(ctx);
            for (const [iova, size] of ranges) sg.add(iova, size);
            return {
              pieces: ranges.flatMap(([iova, size]) => pieces(iova, size)),
              direction,
              run: (buf) => {
                if (direction === 'read') sg.gather(buf);
                else sg.scatter(buf);
              },
            };
          },
          other,
        );
      }
    });

    it('and one-piece accesses without an IOMMU too (ctx and memory accessors)', async () => {
      const { memory, ctx, harness, piece } = flatSetup();
      const other = await alias(memory);
      expect(other).not.toBe(memory.buffer);
      const gpa = 0x4000 + 9;
      for (const direction of ['read', 'write'] as const) {
        sweep(
          harness,
          (length) => ({
            pieces: [piece(gpa, length)],
            direction,
            run: (buf) => {
              if (direction === 'read') ctx.read(gpa, buf);
              else ctx.write(gpa, buf);
            },
          }),
          other,
        );
        sweep(
          harness,
          (length) => ({
            pieces: [piece(gpa, length)],
            direction,
            run: (buf) => {
              if (direction === 'read') memory.read(gpa, buf);
              else memory.write(gpa, buf);
            },
          }),
          other,
        );
      }
    });
  });
});
