/**
 * GuestMemory (§4): regions and holes, the backing layout, the vCPU's own accesses,
 * sharing, barrier policies, and handles that carry the same memory into a worker thread.
 */
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  type DMATraceEvent,
  type GuestMemoryHandle,
} from '../src/index.js';

/** Expects `action` to throw a DMAError with `code`, and returns it. */
function expectCode(action: () => unknown, code: string): DMAError {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(DMAError);
  expect((caught as DMAError).code).toBe(code);
  return caught as DMAError;
}

/** The bytes of `length` at `gpa`, through the vCPU's own read. */
function peek(memory: GuestMemory, gpa: number, length: number): number[] {
  const bytes = new Uint8Array(length);
  memory.read(gpa, bytes);
  return [...bytes];
}

function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, index) => (index * 31 + seed) & 0xff);
}

/** Low RAM split in two adjacent regions at 0x1000 and 0x1800, a hole, then 0x3000. */
const SPLIT = [
  { base: 0x3000, size: 0x100 },
  { base: 0x1800, size: 0x800 },
  { base: 0x1000, size: 0x800 },
];

const expectedAutoPolicy = process.arch === 'x64' || process.arch === 'ia32' ? 'tso' : 'strict';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('GuestMemory layout', () => {
  it('`size` makes one RAM region at guest address 0', () => {
    const memory = new GuestMemory({ size: 4096 });
    expect(memory.regions).toEqual([{ base: 0, size: 4096, offset: 0 }]);
    memory.write(0, Uint8Array.of(1));
    memory.write(4095, Uint8Array.of(2));
    expect(peek(memory, 0, 1)).toEqual([1]);
    expect(peek(memory, 4095, 1)).toEqual([2]);
    expectCode(() => {
      memory.read(4095, new Uint8Array(2));
    }, 'ERR_DMA_UNASSIGNED');
    expectCode(() => {
      memory.read(4096, new Uint8Array(1));
    }, 'ERR_DMA_UNASSIGNED');
  });

  it('regions given unsorted are exposed sorted by base', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    expect(memory.regions.map((region) => region.base)).toEqual([0x1000, 0x1800, 0x3000]);
    expect(memory.regions).toEqual([
      { base: 0x1000, size: 0x800, offset: 0 },
      { base: 0x1800, size: 0x800, offset: 0x800 },
      { base: 0x3000, size: 0x100, offset: 0x1000 },
    ]);
  });

  it('an access anywhere in a hole, or running into one, is ERR_DMA_UNASSIGNED and changes nothing', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    memory.write(0x1ff8, pattern(8, 1));
    memory.write(0x3000, pattern(8, 2));
    const before = [...new Uint8Array(memory.buffer)];
    for (const [gpa, length] of [
      [0, 1],
      [0xfff, 1],
      [0xfff, 2], // from the hole into RAM
      [0x1ff8, 9], // from RAM into the hole
      [0x2000, 1],
      [0x2fff, 2],
      [0x30ff, 2], // past the end of the last region
      [0x3100, 1],
      [2 ** 40, 4],
    ] as const) {
      const fault = expectCode(() => {
        memory.write(gpa, new Uint8Array(length).fill(0xaa));
      }, 'ERR_DMA_UNASSIGNED');
      expect(fault).toBeInstanceOf(DMAFault);
      expect(fault instanceof DMAFault && [fault.addr, fault.length]).toEqual([gpa, length]);
      const buf = new Uint8Array(length).fill(0x55);
      expectCode(() => {
        memory.read(gpa, buf);
      }, 'ERR_DMA_UNASSIGNED');
      expect([...buf]).toEqual(new Array<number>(length).fill(0x55));
    }
    expect([...new Uint8Array(memory.buffer)]).toEqual(before);
  });

  it('overlapping regions are rejected with ERR_DMA_INVALID_ARGUMENT', () => {
    const overlapping = [
      [
        { base: 0x1000, size: 0x1000 },
        { base: 0x1fff, size: 0x10 },
      ],
      [
        { base: 0x1000, size: 0x10 },
        { base: 0x1000, size: 0x10 },
      ],
      [
        { base: 0x2000, size: 0x10 },
        { base: 0x1000, size: 0x2000 }, // contains the first, and is given after it
      ],
    ];
    for (const regions of overlapping) {
      const error = expectCode(() => new GuestMemory({ regions }), 'ERR_DMA_INVALID_ARGUMENT');
      expect(error.message).toMatch(/overlap/);
    }
  });

  it('an access may cross from one region into an adjacent one, in both directions of copy', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const ctx = new DMAContext(memory);
    const data = pattern(32, 7);
    memory.write(0x17f0, data);
    expect(peek(memory, 0x17f0, 32)).toEqual([...data]);
    const seen = new Uint8Array(32);
    ctx.read(0x17f0, seen);
    expect([...seen]).toEqual([...data]);
    ctx.write(0x17fc, Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2));
    expect(peek(memory, 0x17fc, 8)).toEqual([9, 8, 7, 6, 5, 4, 3, 2]);
    ctx.writeU64BE(0x17fc, 0x0102030405060708n);
    expect(peek(memory, 0x17fc, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // The whole merged run is RAM, but one byte more reaches the hole.
    expect(ctx.valid(0x1000, 0x1000, 1)).toBe(true);
    expect(ctx.valid(0x1000, 0x1001, 1)).toBe(false);
    expect(ctx.map(0x1700, 0x10000, 1).length).toBe(0x900);
  });

  it('regions that touch only at an edge are adjacent, not overlapping', () => {
    const memory = new GuestMemory({
      regions: [
        { base: 5, size: 3 },
        { base: 8, size: 1 },
        { base: 9, size: 7 },
      ],
    });
    memory.write(5, pattern(11, 3));
    expect(peek(memory, 5, 11)).toEqual([...pattern(11, 3)]);
  });

  it('`regions` and each region in it are frozen, and later changes to the given array do not leak in', () => {
    const given = [
      { base: 0x2000, size: 16 },
      { base: 0, size: 16 },
    ];
    const memory = new GuestMemory({ regions: given });
    expect(Object.isFrozen(memory.regions)).toBe(true);
    for (const region of memory.regions) expect(Object.isFrozen(region)).toBe(true);
    expect(() => {
      (memory.regions as unknown as { base: number; size: number }[]).push({
        base: 0x4000,
        size: 1,
      });
    }).toThrow(TypeError);
    expect(() => {
      (memory.regions[0] as { size: number }).size = 1 << 20;
    }).toThrow(TypeError);
    (given[0] as { size: number }).size = 1 << 20;
    given.push({ base: 0x100, size: 1 });
    expect(memory.regions).toEqual([
      { base: 0, size: 16, offset: 0 },
      { base: 0x2000, size: 16, offset: 16 },
    ]);
    expectCode(() => {
      memory.write(0x2010, Uint8Array.of(1));
    }, 'ERR_DMA_UNASSIGNED');
  });
});

describe('GuestMemory.offsetOf', () => {
  it('gives the offset in `buffer` where the guest bytes live', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const raw = new Uint8Array(memory.buffer);
    for (const gpa of [0x1000, 0x1234, 0x17ff, 0x1800, 0x1fff, 0x3000, 0x30ff]) {
      memory.write(gpa, Uint8Array.of(gpa & 0xff));
      const offset = memory.offsetOf(gpa, 1);
      expect(offset).toBeGreaterThanOrEqual(0);
      expect(raw[offset]).toBe(gpa & 0xff);
      memory.write(gpa, Uint8Array.of(0));
    }
  });

  it('is -1 for a range that touches a hole, and contiguous across adjacent regions', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    expect(memory.offsetOf(0xfff, 1)).toBe(-1);
    expect(memory.offsetOf(0x1fff, 2)).toBe(-1);
    expect(memory.offsetOf(0x2800, 4)).toBe(-1);
    expect(memory.offsetOf(0x30f0, 0x20)).toBe(-1);
    const low = memory.offsetOf(0x1000, 0x1000);
    expect(low).toBeGreaterThanOrEqual(0);
    expect(memory.offsetOf(0x1800, 1)).toBe(low + 0x800);
  });

  it('keeps natural alignment: the offset is congruent to the guest address modulo 8', () => {
    const memory = new GuestMemory({
      regions: [
        { base: 0x13, size: 5 },
        { base: 0x1003, size: 29 },
        { base: 0x2006, size: 3 },
      ],
    });
    for (const region of memory.regions) {
      for (let gpa = region.base; gpa < region.base + region.size; gpa++) {
        expect(memory.offsetOf(gpa, 1) % 8).toBe(gpa % 8);
      }
    }
  });

  it('rejects addresses and lengths that are not non-negative safe integers', () => {
    const memory = new GuestMemory({ size: 64 });
    for (const gpa of [-1, 1.5, Number.NaN, 2 ** 53, '0'] as unknown[]) {
      expectCode(() => memory.offsetOf(gpa as number, 1), 'ERR_DMA_INVALID_ARGUMENT');
    }
    for (const length of [-1, 0.5, Number.NaN, Infinity, null] as unknown[]) {
      expectCode(() => memory.offsetOf(0, length as number), 'ERR_DMA_INVALID_ARGUMENT');
    }
    expectCode(() => memory.offsetOf(2 ** 53 - 1, 2), 'ERR_DMA_INVALID_ARGUMENT');
  });
});

describe("the vCPU's own read and write", () => {
  it('copy bytes in and out at guest addresses, across adjacent regions', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const data = pattern(0x40, 11);
    memory.write(0x17e0, data);
    const back = new Uint8Array(0x40);
    memory.read(0x17e0, back);
    expect([...back]).toEqual([...data]);
    // A DMA context on the same memory sees what the vCPU wrote.
    expect(new DMAContext(memory).readU8(0x17e0 + 0x3f)).toBe(data[0x3f]);
  });

  it('issue no barrier and trace nothing, even under the strict policy', () => {
    const memory = new GuestMemory({ regions: SPLIT, barrierPolicy: 'strict' });
    const events: DMATraceEvent[] = [];
    const ctx = new DMAContext(memory, {
      trace: (event) => {
        events.push(event);
      },
    });
    const fence = vi.spyOn(Atomics, 'add');
    memory.write(0x1000, pattern(64, 1));
    memory.read(0x1000, new Uint8Array(64));
    memory.write(0x1004, Uint8Array.of(1, 2, 3, 4));
    expect(fence).not.toHaveBeenCalled();
    expect(events).toEqual([]);
    // The spy does see a barrier when one is issued, so its silence above means something.
    ctx.barrier('acquire');
    expect(fence).toHaveBeenCalledTimes(1);
  });

  it('accept a zero-length buffer anywhere, and reject buffers that are not Uint8Array', () => {
    const memory = new GuestMemory({ regions: SPLIT });
    memory.read(0x2800, new Uint8Array(0));
    memory.write(0x2800, new Uint8Array(0));
    for (const bad of [
      new Uint16Array(2),
      new Int8Array(2),
      [1, 2],
      new ArrayBuffer(2),
      null,
    ] as unknown[]) {
      expectCode(() => {
        memory.write(0x1000, bad as Uint8Array);
      }, 'ERR_DMA_INVALID_ARGUMENT');
      expectCode(() => {
        memory.read(0x1000, bad as Uint8Array);
      }, 'ERR_DMA_INVALID_ARGUMENT');
    }
    expect(peek(memory, 0x1000, 4)).toEqual([0, 0, 0, 0]);
  });
});

describe('sharing', () => {
  it('memory is shared by default: the buffer is a SharedArrayBuffer', () => {
    const memory = new GuestMemory({ size: 64 });
    expect(memory.shared).toBe(true);
    expect(memory.buffer).toBeInstanceOf(SharedArrayBuffer);
    const handle = memory.handle();
    expect(handle.kind).toBe('dma-attrs:guest-memory');
    expect(handle.backing).toBe(memory.buffer);
  });

  it('`shared: false` gives an ArrayBuffer, whose memory has no handle', () => {
    const memory = new GuestMemory({ size: 64, shared: false });
    expect(memory.shared).toBe(false);
    expect(memory.buffer).toBeInstanceOf(ArrayBuffer);
    expect(memory.buffer).not.toBeInstanceOf(SharedArrayBuffer);
    expectCode(() => memory.handle(), 'ERR_DMA_INVALID_ARGUMENT');
    memory.write(8, Uint8Array.of(1, 2));
    expect(peek(memory, 8, 2)).toEqual([1, 2]);
  });

  it('unshared memory issues no barrier instruction, whatever the strength and policy', () => {
    const memory = new GuestMemory({ size: 64, shared: false, barrierPolicy: 'strict' });
    const fence = vi.spyOn(Atomics, 'add');
    for (const strength of ['none', 'acquire', 'release', 'full'] as const)
      memory.barrier(strength);
    const ctx = new DMAContext(memory);
    ctx.write(0, Uint8Array.of(1));
    ctx.read(0, new Uint8Array(1));
    ctx.barrier('full');
    expect(fence).not.toHaveBeenCalled();
  });

  it('`shared` must be a boolean', () => {
    for (const shared of ['yes', 1, 0, ''] as unknown[]) {
      expectCode(
        () => new GuestMemory({ size: 64, shared: shared as boolean }),
        'ERR_DMA_INVALID_ARGUMENT',
      );
    }
  });

  it('a handle that went through structured cloning gives the same bytes, regions and policy', () => {
    const memory = new GuestMemory({ regions: SPLIT, barrierPolicy: 'strict' });
    const copy = GuestMemory.fromHandle(structuredClone(memory.handle()));
    expect(copy.regions).toEqual(memory.regions);
    expect(copy.barrierPolicy).toBe('strict');
    expect(copy.shared).toBe(true);
    memory.write(0x17fe, Uint8Array.of(1, 2, 3, 4));
    expect(peek(copy, 0x17fe, 4)).toEqual([1, 2, 3, 4]);
    new DMAContext(copy).writeU32BE(0x3000, 0xdeadbeef);
    expect(peek(memory, 0x3000, 4)).toEqual([0xde, 0xad, 0xbe, 0xef]);
  });

  it('fromHandle rejects what is not a handle, and a handle whose regions do not fit its buffer', () => {
    const memory = new GuestMemory({ size: 64 });
    const handle = memory.handle();
    for (const bad of [
      null,
      {},
      { ...handle, kind: 'something else' },
      { ...handle, backing: new ArrayBuffer(64) },
      { ...handle, backing: undefined },
      { ...handle, fence: undefined },
      { ...handle, barrierPolicy: 'auto' },
      { ...handle, regions: [{ base: 0, size: 128 }] },
    ] as unknown[]) {
      expectCode(
        () => GuestMemory.fromHandle(bad as GuestMemoryHandle),
        'ERR_DMA_INVALID_ARGUMENT',
      );
    }
  });
});

describe('barrier policy', () => {
  it(`'auto' (the default) resolves to ${expectedAutoPolicy} on this ${process.arch} host`, () => {
    expect(new GuestMemory({ size: 8 }).barrierPolicy).toBe(expectedAutoPolicy);
    expect(new GuestMemory({ size: 8, barrierPolicy: 'auto' }).barrierPolicy).toBe(
      expectedAutoPolicy,
    );
  });

  it("'strict' and 'tso' are kept as given", () => {
    expect(new GuestMemory({ size: 8, barrierPolicy: 'strict' }).barrierPolicy).toBe('strict');
    expect(new GuestMemory({ size: 8, barrierPolicy: 'tso' }).barrierPolicy).toBe('tso');
  });

  it('an unknown policy is ERR_DMA_INVALID_ARGUMENT', () => {
    for (const barrierPolicy of ['STRICT', 'x86', '', null, 1] as unknown[]) {
      expectCode(
        () => new GuestMemory({ size: 8, barrierPolicy: barrierPolicy as 'strict' }),
        'ERR_DMA_INVALID_ARGUMENT',
      );
    }
  });

  it("'strict' emits one fence RMW for acquire, release and full; 'tso' only for full", () => {
    const fence = vi.spyOn(Atomics, 'add');
    const counts: Record<string, number[]> = {};
    for (const policy of ['strict', 'tso'] as const) {
      const memory = new GuestMemory({ size: 8, barrierPolicy: policy });
      counts[policy] = (['none', 'acquire', 'release', 'full'] as const).map((strength) => {
        fence.mockClear();
        memory.barrier(strength);
        return fence.mock.calls.length;
      });
    }
    expect(counts).toEqual({ strict: [0, 1, 1, 1], tso: [0, 0, 0, 1] });
  });
});

describe('memory.barrier', () => {
  it('accepts the four strengths and rejects anything else with ERR_DMA_INVALID_ARGUMENT', () => {
    const memory = new GuestMemory({ size: 8, barrierPolicy: 'strict' });
    for (const strength of ['none', 'acquire', 'release', 'full'] as const) {
      expect(() => {
        memory.barrier(strength);
      }).not.toThrow();
    }
    for (const strength of ['FULL', 'seq_cst', 'mb', '', undefined, null, 3, {}] as unknown[]) {
      expectCode(() => {
        memory.barrier(strength as 'full');
      }, 'ERR_DMA_INVALID_ARGUMENT');
    }
  });
});

// ---------------------------------------------------------------------------------------
// A real worker thread

interface Reply {
  id: number;
  ok: boolean;
  code?: string;
  bytes?: number[];
  regions?: { base: number; size: number }[];
  shared?: boolean;
  barrierPolicy?: string;
  isShared?: boolean;
}

/** A worker that answers one DMA request per message; every wait is bounded. */
class Peer {
  readonly worker = new Worker(new URL('./workers/memory-peer.mjs', import.meta.url));
  #next = 0;
  #failure: Error | undefined;
  readonly #waiting = new Map<number, (reply: Reply) => void>();

  constructor() {
    this.worker.on('message', (reply: Reply) => {
      this.#waiting.get(reply.id)?.(reply);
      this.#waiting.delete(reply.id);
    });
    this.worker.on('error', (error) => {
      this.#failure = error;
    });
  }

  request(message: Record<string, unknown>, timeoutMs = 10_000): Promise<Reply> {
    const id = this.#next++;
    return new Promise<Reply>((resolve, reject) => {
      if (this.#failure !== undefined) {
        reject(this.#failure);
        return;
      }
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`worker did not answer ${JSON.stringify(message.op)} in ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (error: Error): void => {
        clearTimeout(timer);
        reject(error);
      };
      this.worker.once('error', onError);
      this.#waiting.set(id, (reply) => {
        clearTimeout(timer);
        this.worker.off('error', onError);
        resolve(reply);
      });
      this.worker.postMessage({ ...message, id });
    });
  }
}

const peers = new Set<Peer>();
function startPeer(): Peer {
  const peer = new Peer();
  peers.add(peer);
  return peer;
}

afterEach(async () => {
  await Promise.all([...peers].map((peer) => peer.worker.terminate()));
  peers.clear();
});

describe('a handle in a worker_threads Worker', () => {
  it('recreates the same memory: regions, policy, and a SharedArrayBuffer', async () => {
    const memory = new GuestMemory({ regions: SPLIT, barrierPolicy: 'strict' });
    const peer = startPeer();
    const reply = await peer.request({ op: 'attach', handle: memory.handle() });
    expect(reply).toMatchObject({
      ok: true,
      regions: memory.regions,
      shared: true,
      isShared: true,
      // Resolved where the memory was made, so every thread emits the same barriers.
      barrierPolicy: 'strict',
    });
  });

  it('the worker DMA-writes bytes the main thread then sees, across adjacent regions', async () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const peer = startPeer();
    expect((await peer.request({ op: 'attach', handle: memory.handle() })).ok).toBe(true);
    const data = [...pattern(48, 5)];
    expect((await peer.request({ op: 'write', addr: 0x17e8, bytes: data })).ok).toBe(true);
    expect((await peer.request({ op: 'writeU32LE', addr: 0x3010, value: 0xc0ffee })).ok).toBe(true);
    expect(peek(memory, 0x17e8, 48)).toEqual(data);
    expect(new DMAContext(memory).readU32LE(0x3010)).toBe(0xc0ffee);
  });

  it('the worker DMA-reads what the main thread wrote after handing over the handle', async () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const peer = startPeer();
    expect((await peer.request({ op: 'attach', handle: memory.handle() })).ok).toBe(true);
    // Written only now, so a copy taken when the handle was posted could not show it.
    const data = pattern(40, 9);
    new DMAContext(memory).write(0x17f0, data);
    memory.write(0x3000, Uint8Array.of(0xfe, 0xed));
    const seen = await peer.request({ op: 'read', addr: 0x17f0, length: 40 });
    expect(seen).toMatchObject({ ok: true, bytes: [...data] });
    expect(await peer.request({ op: 'read', addr: 0x3000, length: 2 })).toMatchObject({
      ok: true,
      bytes: [0xfe, 0xed],
    });
  });

  it('the worker gets ERR_DMA_UNASSIGNED for a hole, and its barrier accepts only the four strengths', async () => {
    const memory = new GuestMemory({ regions: SPLIT });
    const peer = startPeer();
    expect((await peer.request({ op: 'attach', handle: memory.handle() })).ok).toBe(true);
    expect(await peer.request({ op: 'read', addr: 0x1ffe, length: 4 })).toMatchObject({
      ok: false,
      code: 'ERR_DMA_UNASSIGNED',
    });
    expect(await peer.request({ op: 'write', addr: 0x2000, bytes: [1] })).toMatchObject({
      ok: false,
      code: 'ERR_DMA_UNASSIGNED',
    });
    expect((await peer.request({ op: 'barrier', strength: 'full' })).ok).toBe(true);
    expect(await peer.request({ op: 'barrier', strength: 'mfence' })).toMatchObject({
      ok: false,
      code: 'ERR_DMA_INVALID_ARGUMENT',
    });
    expect(peek(memory, 0x1ffe, 2)).toEqual([0, 0]);
  });
});
