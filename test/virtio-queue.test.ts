/**
 * The device side of a split virtqueue (SPEC §10) on one thread, against a small driver
 * written here from virtio 1.2 §2.7: descriptors, rings, notification suppression with and
 * without EVENT_IDX (wrap-around of the 16-bit indices included), the orderings of §10 as
 * `trace` shows them, and every hostile ring of §10.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  type BarrierStrength,
  type DMAAttributesLike,
  type DMAContextOptions,
  type DMATraceEvent,
  type GuestMemoryOptions,
} from '../src/index.js';
import {
  DescriptorChain,
  SplitVirtqueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  type SplitVirtqueueOptions,
} from '../src/virtio/index.js';

const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;
const RELAXED = DMAAttributes.RELAXED;

const MEMORY_SIZE = 0x10000;
const DESC = 0x0000;
const AVAIL = 0x1000;
const USED = 0x2000;
const TABLE = 0x3000;
const BUFFERS = 0x4000;
/** Past the end of RAM: every access there faults. */
const HOLE = 0x20000;

/** The driver side, from the virtio 1.2 text: it shares no code with the device. */
class Driver {
  readonly ctx: DMAContext;
  readonly size: number;
  availIdx: number;

  constructor(ctx: DMAContext, size: number, availIdx = 0) {
    this.ctx = ctx;
    this.size = size;
    this.availIdx = availIdx;
    ctx.writeU16LE(AVAIL + 2, availIdx);
  }

  descriptor(index: number, addr: number, len: number, flags = 0, next = 0, table = DESC): void {
    const base = table + 16 * index;
    this.ctx.writeU64LE(base, BigInt(addr), RELAXED);
    this.ctx.writeU32LE(base + 8, len, RELAXED);
    this.ctx.writeU16LE(base + 12, flags, RELAXED);
    this.ctx.writeU16LE(base + 14, next, RELAXED);
  }

  /** Puts `head` in the next avail slot, then publishes avail.idx with release. */
  publish(head: number): void {
    this.ctx.writeU16LE(AVAIL + 4 + 2 * (this.availIdx % this.size), head, RELAXED);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.ctx.writeU16LE(AVAIL + 2, this.availIdx);
  }

  setAvailIdx(value: number): void {
    this.ctx.writeU16LE(AVAIL + 2, value);
  }

  set availFlags(value: number) {
    this.ctx.writeU16LE(AVAIL, value);
  }

  set usedEvent(value: number) {
    this.ctx.writeU16LE(AVAIL + 4 + 2 * this.size, value);
  }

  get usedIdx(): number {
    return this.ctx.readU16LE(USED + 2);
  }

  get usedFlags(): number {
    return this.ctx.readU16LE(USED);
  }

  get availEvent(): number {
    return this.ctx.readU16LE(USED + 4 + 8 * this.size);
  }

  usedElement(slot: number): { id: number; len: number } {
    const base = USED + 4 + 8 * slot;
    return { id: this.ctx.readU32LE(base), len: this.ctx.readU32LE(base + 4) };
  }

  fill(addr: number, bytes: readonly number[]): void {
    this.ctx.write(addr, Uint8Array.from(bytes), RELAXED);
  }

  bytes(addr: number, length: number): number[] {
    const buf = new Uint8Array(length);
    this.ctx.read(addr, buf, RELAXED);
    return [...buf];
  }
}

interface Setup {
  memory: GuestMemory;
  ctx: DMAContext;
  driver: Driver;
  vq: SplitVirtqueue;
  events: DMATraceEvent[];
}

/**
 * How the device's context is made: `traced` records every access (and so takes the
 * accessors' general path), `direct` is a plain context on a shared memory, the one
 * `SplitVirtqueue` reaches guest memory through directly for RELAXED ring and payload
 * accesses. The behaviour tests run on both.
 */
type ContextKind = 'traced' | 'direct';
const CONTEXT_KINDS: readonly ContextKind[] = ['traced', 'direct'];
/** The kind `setup` makes, set by the `describe` block that runs (see `eachContext`). */
let contextKind: ContextKind = 'traced';

/** Declares the tests of `body` once for each context kind. */
function eachContext(name: string, body: () => void): void {
  for (const kind of CONTEXT_KINDS) {
    describe(`${name} (${kind} context)`, () => {
      beforeAll(() => {
        contextKind = kind;
      });
      afterAll(() => {
        contextKind = 'traced';
      });
      body();
    });
  }
}

function setup(options: Partial<SplitVirtqueueOptions> = {}, availIdx = 0): Setup {
  const memory = new GuestMemory({ size: MEMORY_SIZE });
  const events: DMATraceEvent[] = [];
  const ctx =
    contextKind === 'traced'
      ? new DMAContext(memory, { trace: (event) => events.push(event) })
      : new DMAContext(memory);
  const driver = new Driver(new DMAContext(memory), options.size ?? 8, availIdx);
  const vq = new SplitVirtqueue(ctx, { size: 8, desc: DESC, avail: AVAIL, used: USED, ...options });
  return { memory, ctx, driver, vq, events };
}

function caught(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

function expectVirtqueueError(action: () => unknown, pattern: RegExp): void {
  const error = caught(action);
  expect(error).toBeInstanceOf(DMAError);
  expect((error as DMAError).code).toBe('ERR_DMA_VIRTQUEUE');
  expect((error as DMAError).message).toMatch(pattern);
}

function popChain(vq: SplitVirtqueue): DescriptorChain {
  const chain = vq.pop();
  if (chain === undefined) throw new Error('expected a chain');
  return chain;
}

describe('constants', () => {
  it('have the virtio 1.2 values', () => {
    expect([NEXT, WRITE, INDIRECT]).toEqual([1, 2, 4]);
    expect([VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX]).toEqual([28, 29]);
    expect([VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY]).toEqual([1, 1]);
  });
});

describe('SplitVirtqueue construction', () => {
  const ctx = new DMAContext(new GuestMemory({ size: MEMORY_SIZE }));
  const good = { size: 8, desc: DESC, avail: AVAIL, used: USED };
  const bad: [string, unknown][] = [
    ['size 0', { ...good, size: 0 }],
    ['size 3', { ...good, size: 3 }],
    ['size 65536', { ...good, size: 65536 }],
    ['size 1.5', { ...good, size: 1.5 }],
    ['desc not 16-aligned', { ...good, desc: 8 }],
    ['avail not 2-aligned', { ...good, avail: AVAIL + 1 }],
    ['used not 4-aligned', { ...good, used: USED + 2 }],
    ['negative used', { ...good, used: -4 }],
    ['a ring past 2^53', { ...good, used: 2 ** 53 - 4 }],
    ['a non-boolean eventIdx', { ...good, eventIdx: 1 }],
    ['no options', null],
  ];
  for (const [name, options] of bad) {
    it(`refuses ${name} with ERR_DMA_INVALID_ARGUMENT`, () => {
      const error = caught(() => new SplitVirtqueue(ctx, options as SplitVirtqueueOptions));
      expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
    });
  }

  it('refuses something that is not a DMAContext', () => {
    const error = caught(() => new SplitVirtqueue({} as unknown as DMAContext, good));
    expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
  });

  it('accepts every power of two up to 32768', () => {
    const memory = new GuestMemory({ size: 0x100000 });
    const big = new DMAContext(memory);
    for (let size = 1; size <= 32768; size *= 2) {
      expect(new SplitVirtqueue(big, { size, desc: 0, avail: 0x80000, used: 0xa0000 }).size).toBe(
        size,
      );
    }
  });
});

eachContext('pop, read, write, push', () => {
  it('returns undefined on an empty ring', () => {
    const { vq } = setup();
    expect(vq.pop()).toBeUndefined();
  });

  it('available counts the chains published and not popped; pop takes that many, then looks again', () => {
    const { vq, driver } = setup();
    expect(vq.available()).toBe(0);
    for (let head = 0; head < 4; head++) driver.descriptor(head, BUFFERS + 16 * head, 16);
    driver.publish(0);
    driver.publish(1);
    driver.publish(2);
    expect(vq.available()).toBe(3);
    expect(popChain(vq).head).toBe(0);
    // Published after the count: the count's chains come first, then pop finds this one.
    driver.publish(3);
    expect(popChain(vq).head).toBe(1);
    expect(vq.available()).toBe(2);
    expect(popChain(vq).head).toBe(2);
    expect(popChain(vq).head).toBe(3);
    expect(vq.available()).toBe(0);
    expect(vq.pop()).toBeUndefined();
  });

  it('returns a single readable descriptor and gathers from it', () => {
    const { vq, driver } = setup();
    driver.fill(BUFFERS, [1, 2, 3, 4, 5]);
    driver.descriptor(3, BUFFERS, 5);
    driver.publish(3);
    const chain = popChain(vq);
    expect(chain.head).toBe(3);
    expect(chain.readableLength).toBe(5);
    expect(chain.writableLength).toBe(0);
    expect(chain.descriptors).toEqual([
      { addr: BUFFERS, length: 5, writable: false, index: 3, indirect: false },
    ]);
    const buf = new Uint8Array(8);
    expect(chain.read(buf)).toBe(5);
    expect([...buf]).toEqual([1, 2, 3, 4, 5, 0, 0, 0]);
    expect(chain.write(Uint8Array.of(9))).toBe(0);
    expect(vq.pop()).toBeUndefined();
  });

  it('stores nothing past a single writable descriptor when the data is longer', () => {
    const { vq, driver } = setup();
    driver.fill(BUFFERS, [1, 2, 3, 4, 5, 6, 7, 8]);
    driver.descriptor(1, BUFFERS, 40, WRITE);
    driver.publish(1);
    const chain = popChain(vq);
    expect(chain.write(new Uint8Array(100).fill(7))).toBe(40);
    expect(driver.bytes(BUFFERS, 41)).toEqual([...new Array<number>(40).fill(7), 0]);
    expect(driver.bytes(BUFFERS + 40, 60)).toEqual(new Array<number>(60).fill(0));
    // Word-sized too: the 16-byte copy path, from a 20-byte buffer.
    driver.descriptor(2, BUFFERS + 0x100, 16, WRITE);
    driver.publish(2);
    const small = popChain(vq);
    expect(small.write(new Uint8Array(20).fill(9), 0)).toBe(16);
    expect(driver.bytes(BUFFERS + 0x100, 20)).toEqual([
      ...new Array<number>(16).fill(9),
      0,
      0,
      0,
      0,
    ]);
  });

  it('walks a chain, gathers across descriptors from an offset and scatters into the writable part', () => {
    const { vq, driver } = setup();
    driver.fill(BUFFERS, [10, 11, 12]);
    driver.fill(BUFFERS + 0x100, [13, 14, 15, 16]);
    driver.descriptor(0, BUFFERS, 3, NEXT, 5);
    driver.descriptor(5, BUFFERS + 0x100, 4, NEXT, 2);
    driver.descriptor(2, BUFFERS + 0x200, 2, NEXT | WRITE, 7);
    driver.descriptor(7, BUFFERS + 0x300, 6, WRITE);
    driver.publish(0);
    const chain = popChain(vq);
    expect(chain.readableLength).toBe(7);
    expect(chain.writableLength).toBe(8);
    expect(chain.descriptors.map((d) => [d.index, d.writable])).toEqual([
      [0, false],
      [5, false],
      [2, true],
      [7, true],
    ]);
    const buf = new Uint8Array(3);
    expect(chain.read(buf, 2)).toBe(3);
    expect([...buf]).toEqual([12, 13, 14]);
    expect(chain.read(buf, 7)).toBe(0);
    expect(chain.write(Uint8Array.of(1, 2, 3, 4), 1)).toBe(4);
    expect(driver.bytes(BUFFERS + 0x200, 2)).toEqual([0, 1]);
    expect(driver.bytes(BUFFERS + 0x300, 4)).toEqual([2, 3, 4, 0]);
    expect(chain.write(new Uint8Array(20).fill(7))).toBe(8);
    expect(driver.bytes(BUFFERS + 0x300, 7)).toEqual([7, 7, 7, 7, 7, 7, 0]);
    vq.push(chain, 8);
    expect(driver.usedIdx).toBe(1);
    expect(driver.usedElement(0)).toEqual({ id: 0, len: 8 });
  });

  it('expands an indirect table', () => {
    const { vq, driver } = setup({ indirect: true });
    driver.fill(BUFFERS, [42, 43]);
    driver.descriptor(0, BUFFERS, 2, NEXT, 1, TABLE);
    driver.descriptor(1, BUFFERS + 0x100, 4, NEXT | WRITE, 2, TABLE);
    driver.descriptor(2, BUFFERS + 0x200, 4, WRITE, 0, TABLE);
    driver.descriptor(4, TABLE, 48, INDIRECT);
    driver.publish(4);
    const chain = popChain(vq);
    expect(chain.head).toBe(4);
    expect(chain.readableLength).toBe(2);
    expect(chain.writableLength).toBe(8);
    expect(chain.descriptors.every((d) => d.indirect)).toBe(true);
    expect(chain.descriptors.map((d) => d.index)).toEqual([0, 1, 2]);
    const buf = new Uint8Array(2);
    chain.read(buf);
    expect([...buf]).toEqual([42, 43]);
    expect(chain.write(Uint8Array.of(1, 2, 3, 4, 5, 6))).toBe(6);
    expect(driver.bytes(BUFFERS + 0x200, 3)).toEqual([5, 6, 0]);
    vq.push(chain, 6);
    expect(driver.usedElement(0)).toEqual({ id: 4, len: 6 });
  });

  it('accepts direct descriptors followed by an indirect table', () => {
    const { vq, driver } = setup({ indirect: true });
    driver.descriptor(0, BUFFERS, 1, NEXT, 1);
    driver.descriptor(1, TABLE, 16, INDIRECT);
    driver.descriptor(0, BUFFERS + 0x100, 2, WRITE, 0, TABLE);
    driver.publish(0);
    const chain = popChain(vq);
    expect(chain.descriptors.map((d) => [d.index, d.indirect, d.writable])).toEqual([
      [0, false, false],
      [0, true, true],
    ]);
  });

  it('fills the used ring in order, wrapping the ring and the 16-bit indices', () => {
    const { vq, driver } = setup({ size: 4 }, 0xfffd);
    // A device at 0xfffd, as the driver's avail.idx is.
    const device = SplitVirtqueue.fromHandle(driver.ctx, {
      ...vq.handle(),
      nextAvail: 0xfffd,
      nextUsed: 0xfffd,
    });
    for (let round = 0; round < 10; round++) {
      const head = round % 4;
      driver.descriptor(head, BUFFERS, 0, WRITE);
      driver.publish(head);
      const chain = popChain(device);
      expect(chain.head).toBe(head);
      device.push(chain, 0);
      const published = (0xfffd + round + 1) & 0xffff;
      expect(driver.usedIdx).toBe(published);
      expect(driver.usedElement((0xfffd + round) % 4)).toEqual({ id: head, len: 0 });
    }
    expect(device.nextAvail).toBe((0xfffd + 10) & 0xffff);
    expect(device.pop()).toBeUndefined();
  });

  it('moves 70000 chains through a queue of 8, across the 16-bit wrap', () => {
    const { vq, driver } = setup();
    for (let index = 0; index < 8; index++)
      driver.descriptor(index, BUFFERS + 16 * index, 16, WRITE);
    let moved = 0;
    while (moved < 70000) {
      for (let index = 0; index < 8; index++) driver.publish(index);
      let chain;
      while ((chain = vq.pop()) !== undefined) {
        vq.push(chain, chain.writableLength);
        moved++;
      }
    }
    expect(driver.usedIdx).toBe(70000 & 0xffff);
    expect(vq.nextAvail).toBe(70000 & 0xffff);
  });

  it('fill holds elements back until flush; a fill that would overwrite an unpublished one flushes', () => {
    const { vq, driver } = setup({ size: 4 });
    for (let index = 0; index < 4; index++)
      driver.descriptor(index, BUFFERS + 16 * index, 8, WRITE);
    for (let index = 0; index < 4; index++) driver.publish(index);
    for (let index = 0; index < 3; index++) vq.fill(popChain(vq), index + 1);
    expect(driver.usedIdx).toBe(0);
    expect(vq.nextUsed).toBe(3);
    expect([0, 1, 2].map((slot) => driver.usedElement(slot))).toEqual([
      { id: 0, len: 1 },
      { id: 1, len: 2 },
      { id: 2, len: 3 },
    ]);
    vq.flush();
    expect(driver.usedIdx).toBe(3);
    vq.fill(popChain(vq), 8);
    // Four more fills: the fourth finds four elements unpublished and flushes first.
    for (let index = 0; index < 4; index++) driver.publish(index);
    for (let index = 0; index < 3; index++) vq.fill(popChain(vq), 0);
    expect(driver.usedIdx).toBe(3);
    vq.fill(popChain(vq), 0);
    expect(driver.usedIdx).toBe(7);
    expect(vq.handle().nextUsed).toBe(8);
    expect(driver.usedIdx).toBe(8);
  });

  it('refuses a used length that does not fit the u32 of the used element, writing nothing', () => {
    const { vq, driver } = setup({ size: 4 });
    driver.descriptor(0, BUFFERS, 0xffff_ffff, NEXT | WRITE, 1);
    driver.descriptor(1, BUFFERS, 0xffff_ffff, WRITE);
    driver.publish(0);
    const chain = popChain(vq);
    expect(chain.writableLength).toBe(2 * 0xffff_ffff);
    const error = caught(() => {
      vq.push(chain, 0x1_0000_0000);
    }) as DMAError;
    expect(error.code).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(error.message).toMatch(/4294967296/);
    expect(driver.usedElement(0)).toEqual({ id: 0, len: 0 });
    expect(driver.usedIdx).toBe(0);
    expect(vq.broken).toBe(false);
    vq.push(chain, 0xffff_ffff);
    expect(driver.usedElement(0)).toEqual({ id: 0, len: 0xffff_ffff });
  });

  it('refuses a chain pushed twice, a chain of another queue, a length past the writable part', () => {
    const { vq, driver } = setup();
    const other = setup();
    for (const d of [driver, other.driver]) {
      d.descriptor(0, BUFFERS, 4, WRITE);
      d.publish(0);
      d.publish(0);
    }
    const chain = popChain(vq);
    const foreign = popChain(other.vq);
    expect(
      (
        caught(() => {
          vq.push(chain, 5);
        }) as DMAError
      ).code,
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(
      (
        caught(() => {
          vq.push(chain, -1);
        }) as DMAError
      ).code,
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(
      (
        caught(() => {
          vq.push(foreign, 0);
        }) as DMAError
      ).code,
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    vq.push(chain, 4);
    expect(
      (
        caught(() => {
          vq.push(chain, 4);
        }) as DMAError
      ).code,
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(driver.usedIdx).toBe(1);
  });

  it('continues from a handle where the original stopped', () => {
    const { vq, driver, ctx } = setup({ eventIdx: true });
    driver.descriptor(0, BUFFERS, 4);
    driver.publish(0);
    driver.publish(0);
    vq.push(popChain(vq), 0);
    const handle = structuredClone(vq.handle());
    const moved = SplitVirtqueue.fromHandle(ctx, handle);
    expect(moved.eventIdx).toBe(true);
    expect(moved.nextAvail).toBe(1);
    moved.push(popChain(moved), 0);
    expect(driver.usedIdx).toBe(2);
    expect(moved.pop()).toBeUndefined();
    const forged = caught(() => SplitVirtqueue.fromHandle(ctx, { ...handle, nextUsed: 70000 }));
    expect((forged as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
    const wrongKind = caught(() =>
      SplitVirtqueue.fromHandle(ctx, { ...handle, kind: 'x' } as never),
    );
    expect((wrongKind as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
  });
});

eachContext('notification suppression without EVENT_IDX', () => {
  it('needsNotification follows VRING_AVAIL_F_NO_INTERRUPT', () => {
    const { vq, driver } = setup();
    expect(vq.needsNotification()).toBe(true);
    driver.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
    expect(vq.needsNotification()).toBe(false);
    driver.availFlags = 0;
    expect(vq.needsNotification()).toBe(true);
  });

  it('disableNotification sets VRING_USED_F_NO_NOTIFY, enableNotification clears it and re-checks', () => {
    const { vq, driver } = setup();
    vq.disableNotification();
    expect(driver.usedFlags).toBe(VRING_USED_F_NO_NOTIFY);
    expect(vq.enableNotification()).toBe(false);
    expect(driver.usedFlags).toBe(0);
    driver.descriptor(0, BUFFERS, 1);
    driver.publish(0);
    expect(vq.enableNotification()).toBe(true);
    vq.pop();
    expect(vq.enableNotification()).toBe(false);
  });
});

eachContext('notification suppression with EVENT_IDX', () => {
  function pushOne(s: Setup, head = 0): void {
    s.driver.descriptor(head, BUFFERS, 0, WRITE);
    s.driver.publish(head);
    s.vq.push(popChain(s.vq), 0);
  }

  it('interrupts only when used.idx passes used_event (vring_need_event)', () => {
    const s = setup({ eventIdx: true });
    pushOne(s);
    // No interrupt decision yet: the device cannot know what the driver saw.
    expect(s.vq.needsNotification()).toBe(true);
    // Nothing new since the last decision.
    expect(s.vq.needsNotification()).toBe(false);
    s.driver.usedEvent = 1; // interrupt when used.idx goes past 1
    pushOne(s);
    expect(s.vq.needsNotification()).toBe(true);
    s.driver.usedEvent = 10;
    pushOne(s);
    pushOne(s);
    expect(s.vq.needsNotification()).toBe(false);
    s.driver.usedEvent = 4; // passed by the step from 4 to 5, not yet taken
    pushOne(s);
    expect(s.vq.needsNotification()).toBe(true);
  });

  it('ignores VRING_AVAIL_F_NO_INTERRUPT', () => {
    const s = setup({ eventIdx: true });
    s.driver.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
    s.driver.usedEvent = 0;
    pushOne(s);
    expect(s.vq.needsNotification()).toBe(true);
  });

  it('decides across the 16-bit wrap of used.idx', () => {
    const cases: [number, boolean][] = [
      [0xfffd, false], // already passed before the last decision
      [0xfffe, true], // old is 0xfffe: the step to 0xffff passes it
      [0xffff, true],
      [0x0000, true],
      [0x0001, false], // passed only when used.idx becomes 2
      [0x8000, false],
    ];
    for (const [usedEvent, expected] of cases) {
      const s = setup({ eventIdx: true, size: 4 }, 0xfffe);
      const vq = SplitVirtqueue.fromHandle(s.ctx, {
        ...s.vq.handle(),
        nextAvail: 0xfffe,
        nextUsed: 0xfffe,
        signalledUsed: 0xfffe,
      });
      s.driver.usedEvent = usedEvent;
      for (let index = 0; index < 3; index++) {
        s.driver.descriptor(index, BUFFERS, 0, WRITE);
        s.driver.publish(index);
        vq.push(popChain(vq), 0);
      }
      expect(s.driver.usedIdx).toBe(1);
      expect([usedEvent, vq.needsNotification()]).toEqual([usedEvent, expected]);
    }
  });

  it('enableNotification publishes avail_event = next avail, and reports work that arrived', () => {
    const s = setup({ eventIdx: true, size: 4 }, 0xffff);
    const vq = SplitVirtqueue.fromHandle(s.ctx, { ...s.vq.handle(), nextAvail: 0xffff });
    expect(vq.enableNotification()).toBe(false);
    expect(s.driver.availEvent).toBe(0xffff);
    s.driver.descriptor(0, BUFFERS, 1);
    s.driver.publish(0);
    expect(vq.enableNotification()).toBe(true);
    popChain(vq);
    expect(vq.enableNotification()).toBe(false);
    expect(s.driver.availEvent).toBe(0);
    vq.disableNotification();
    expect(s.driver.usedFlags).toBe(0);
  });
});

describe('orderings, as trace shows them (SPEC §10)', () => {
  const isBarrier = (strength: string) => (event: DMATraceEvent) =>
    event.op === 'barrier' && event.barrier === strength;

  it('pop: avail.idx read, then the acquire barrier, then RELAXED ring entry and descriptor reads', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 1);
    s.driver.descriptor(1, TABLE, 16, INDIRECT);
    s.driver.descriptor(0, BUFFERS, 1, WRITE, 0, TABLE);
    s.driver.publish(0);
    s.events.length = 0;
    popChain(s.vq);
    const events = s.events;
    const idxRead = events.findIndex((e) => e.op === 'read' && e.addr === AVAIL + 2);
    const acquire = events.findIndex(isBarrier('acquire'));
    expect(idxRead).toBe(0);
    expect(events[idxRead]?.barrier).toBe('acquire');
    expect(acquire).toBe(idxRead + 1);
    const rest = events.slice(acquire + 1);
    expect(rest.map((e) => e.addr)).toEqual([AVAIL + 4, DESC, DESC + 16, TABLE]);
    for (const event of rest) {
      expect(event.op).toBe('read');
      expect(event.attrs & RELAXED).toBe(RELAXED);
      expect(event.barrier).toBe('none');
    }
    expect(events.some((e) => e.op === 'write' || e.op === 'set')).toBe(false);
  });

  it('available: avail.idx read, then the acquire barrier; the pops it counted read avail.idx no more', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 1);
    s.driver.descriptor(1, BUFFERS + 1, 1);
    s.driver.publish(0);
    s.driver.publish(1);
    s.events.length = 0;
    expect(s.vq.available()).toBe(2);
    expect(s.events).toEqual([
      { op: 'read', addr: AVAIL + 2, length: 2, attrs: DMAAttributes.READ, barrier: 'acquire' },
      { op: 'barrier', addr: AVAIL + 2, length: 2, attrs: DMAAttributes.READ, barrier: 'acquire' },
    ]);
    s.events.length = 0;
    popChain(s.vq);
    popChain(s.vq);
    expect(s.events.some((e) => e.addr === AVAIL + 2)).toBe(false);
    expect(s.events.every((e) => e.op === 'read' && e.barrier === 'none')).toBe(true);
  });

  it('chain.read and chain.write are RELAXED', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 2, NEXT, 1);
    s.driver.descriptor(1, BUFFERS + 8, 2, WRITE);
    s.driver.publish(0);
    const chain = popChain(s.vq);
    s.events.length = 0;
    chain.read(new Uint8Array(2));
    chain.write(new Uint8Array(2));
    expect(s.events.map((e) => [e.op, e.addr, e.barrier])).toEqual([
      ['read', BUFFERS, 'none'],
      ['write', BUFFERS + 8, 'none'],
    ]);
  });

  it('fill writes only RELAXED elements; flush is the release barrier, then used.idx, once', () => {
    const s = setup({ eventIdx: true });
    for (const head of [0, 1, 2]) {
      s.driver.descriptor(head, BUFFERS + 8 * head, 4, WRITE);
      s.driver.publish(head);
    }
    const chains = [popChain(s.vq), popChain(s.vq), popChain(s.vq)];
    s.events.length = 0;
    for (const chain of chains) s.vq.fill(chain, 1);
    expect(s.events.map((e) => [e.op, e.barrier])).toEqual(new Array(6).fill(['write', 'none']));
    s.events.length = 0;
    s.vq.flush();
    s.vq.flush();
    expect(s.events.map((e) => [e.op, e.addr, e.barrier])).toEqual([
      ['barrier', USED + 2, 'release'],
      ['write', USED + 2, 'release'],
    ]);
  });

  it('needsNotification flushes filled elements before its full barrier', () => {
    const s = setup({ eventIdx: true });
    s.driver.descriptor(0, BUFFERS, 4, WRITE);
    s.driver.publish(0);
    s.vq.fill(popChain(s.vq), 2);
    s.events.length = 0;
    s.vq.needsNotification();
    const stored = s.events.findIndex((e) => e.op === 'write' && e.addr === USED + 2);
    const full = s.events.findIndex(isBarrier('full'));
    expect(stored).toBeGreaterThanOrEqual(0);
    expect(full).toBeGreaterThan(stored);
  });

  it('push: the RELAXED used element, then the release barrier, then used.idx', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 4, WRITE);
    s.driver.publish(0);
    const chain = popChain(s.vq);
    s.events.length = 0;
    s.vq.push(chain, 3);
    expect(s.events.map((e) => [e.op, e.addr, e.barrier])).toEqual([
      ['write', USED + 4, 'none'],
      ['write', USED + 8, 'none'],
      ['barrier', USED + 2, 'release'],
      ['write', USED + 2, 'release'],
    ]);
  });

  for (const eventIdx of [false, true]) {
    const load = eventIdx ? AVAIL + 4 + 2 * 8 : AVAIL;
    it(`push then needsNotification: used.idx store, full barrier, then the ${eventIdx ? 'used_event' : 'avail.flags'} load`, () => {
      const s = setup({ eventIdx });
      s.driver.descriptor(0, BUFFERS, 4, WRITE);
      s.driver.publish(0);
      const chain = popChain(s.vq);
      s.events.length = 0;
      s.vq.push(chain, 0);
      s.vq.needsNotification();
      const store = s.events.findIndex((e) => e.op === 'write' && e.addr === USED + 2);
      const full = s.events.findIndex(isBarrier('full'));
      const loaded = s.events.findIndex((e) => e.op === 'read' && e.addr === load);
      expect(store).toBeGreaterThanOrEqual(0);
      expect(full).toBeGreaterThan(store);
      expect(loaded).toBeGreaterThan(full);
      expect(s.events.filter((e) => e.op === 'read')).toHaveLength(1);
    });

    const store = eventIdx ? USED + 4 + 8 * 8 : USED;
    it(`enableNotification: the ${eventIdx ? 'avail_event' : 'used.flags'} store, full barrier, then the avail.idx load`, () => {
      const s = setup({ eventIdx });
      s.events.length = 0;
      s.vq.enableNotification();
      const stored = s.events.findIndex((e) => e.op === 'write' && e.addr === store);
      const full = s.events.findIndex(isBarrier('full'));
      const loaded = s.events.findIndex((e) => e.op === 'read' && e.addr === AVAIL + 2);
      expect(stored).toBeGreaterThanOrEqual(0);
      expect(full).toBeGreaterThan(stored);
      expect(loaded).toBeGreaterThan(full);
      expect(s.events[loaded]?.barrier).toBe('acquire');
    });
  }
});

eachContext('hostile rings (SPEC §10)', () => {
  /** After the bad chain, a good one at head 7: the bad one was consumed, the queue works. */
  function expectConsumed(s: Setup): void {
    expect(s.vq.broken).toBe(false);
    s.driver.descriptor(7, BUFFERS, 1);
    s.driver.publish(7);
    expect(popChain(s.vq).head).toBe(7);
    expect(s.vq.pop()).toBeUndefined();
  }

  it('a descriptor loop', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 1);
    s.driver.descriptor(1, BUFFERS, 1, NEXT, 0);
    s.driver.publish(0);
    expectVirtqueueError(() => s.vq.pop(), /descriptor [01] .*longer than the queue size 8/);
    expectConsumed(s);
  });

  it('a chain longer than the queue, counted after indirect expansion', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 1);
    s.driver.descriptor(1, BUFFERS, 1, NEXT, 2);
    s.driver.descriptor(2, TABLE, 16 * 7, INDIRECT);
    for (let index = 0; index < 7; index++) {
      s.driver.descriptor(index, BUFFERS, 1, index < 6 ? NEXT : 0, index + 1, TABLE);
    }
    s.driver.publish(0);
    expectVirtqueueError(
      () => s.vq.pop(),
      /indirect descriptor 6 \(of descriptor 2\) makes the chain longer than the queue size 8/,
    );
    expectConsumed(s);
  });

  it('a chain exactly as long as the queue is fine', () => {
    const s = setup();
    for (let index = 0; index < 8; index++) {
      s.driver.descriptor(index, BUFFERS, 1, index < 7 ? NEXT : 0, index + 1);
    }
    s.driver.publish(0);
    expect(popChain(s.vq).descriptors).toHaveLength(8);
  });

  it('a next out of range', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 8);
    s.driver.publish(0);
    expectVirtqueueError(() => s.vq.pop(), /descriptor 0 has next 8, out of range/);
    expectConsumed(s);
  });

  it('a next out of range of an indirect table', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(0, TABLE, 32, INDIRECT);
    s.driver.descriptor(1, BUFFERS, 1, NEXT, 2, TABLE);
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 1, TABLE);
    s.driver.publish(0);
    expectVirtqueueError(
      () => s.vq.pop(),
      /indirect descriptor 1 \(of descriptor 0\) has next 2, out of range for a table of 2/,
    );
    expectConsumed(s);
  });

  it('a head out of range in the avail ring', () => {
    const s = setup();
    s.driver.publish(9);
    expectVirtqueueError(() => s.vq.pop(), /head descriptor 9, out of range/);
    expectConsumed(s);
  });

  for (const length of [0, 24]) {
    it(`an indirect table of ${length} bytes`, () => {
      const s = setup({ indirect: true });
      s.driver.descriptor(3, TABLE, length, INDIRECT);
      s.driver.publish(3);
      expectVirtqueueError(
        () => s.vq.pop(),
        new RegExp(`descriptor 3 points to an indirect table of ${length} bytes`),
      );
      expectConsumed(s);
    });
  }

  it('a nested indirect descriptor', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(0, TABLE, 32, INDIRECT);
    s.driver.descriptor(0, BUFFERS, 1, NEXT, 1, TABLE);
    s.driver.descriptor(1, TABLE, 32, INDIRECT, 0, TABLE);
    s.driver.publish(0);
    expectVirtqueueError(
      () => s.vq.pop(),
      /indirect descriptor 1 \(of descriptor 0\) is a nested indirect descriptor/,
    );
    expectConsumed(s);
  });

  it('INDIRECT together with NEXT', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(2, TABLE, 16, INDIRECT | NEXT, 3);
    s.driver.publish(2);
    expectVirtqueueError(() => s.vq.pop(), /descriptor 2 has both INDIRECT and NEXT/);
    expectConsumed(s);
  });

  it('an indirect descriptor without VIRTIO_F_INDIRECT_DESC', () => {
    const s = setup();
    s.driver.descriptor(2, TABLE, 16, INDIRECT);
    s.driver.publish(2);
    expectVirtqueueError(() => s.vq.pop(), /descriptor 2 is indirect, but VIRTIO_F_INDIRECT_DESC/);
    expectConsumed(s);
  });

  it('a readable descriptor after a writable one', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 1, NEXT | WRITE, 4);
    s.driver.descriptor(4, BUFFERS, 1);
    s.driver.publish(0);
    expectVirtqueueError(() => s.vq.pop(), /descriptor 4 is readable but follows a writable one/);
    expectConsumed(s);
  });

  for (const [name, addr, length] of [
    ['addr + len past 2^53', 2 ** 53 - 1, 2],
    ['an addr with the top bits set', 2 ** 64 - 2 ** 12, 1],
  ] as const) {
    it(`a descriptor with ${name}`, () => {
      const s = setup();
      s.driver.descriptor(1, 0, length);
      s.driver.ctx.writeU64LE(DESC + 16, BigInt(addr), RELAXED);
      s.driver.publish(1);
      expectVirtqueueError(() => s.vq.pop(), /descriptor 1 addr \+ len leaves the 2\^53/);
      expectConsumed(s);
    });
  }

  it('an avail.idx more than size ahead breaks the queue', () => {
    const s = setup();
    s.driver.setAvailIdx(9);
    expectVirtqueueError(() => s.vq.pop(), /avail\.idx 9 is 9 entries ahead .* queue size 8/);
    expect(s.vq.broken).toBe(true);
    s.driver.setAvailIdx(1);
    expectVirtqueueError(() => s.vq.pop(), /broken/);
    expect(s.vq.handle().broken).toBe(true);
  });

  it('an avail.idx more than size ahead breaks the queue in available too', () => {
    const s = setup();
    s.driver.setAvailIdx(200);
    expectVirtqueueError(
      () => s.vq.available(),
      /avail\.idx 200 is 200 entries ahead .* queue size 8/,
    );
    expect(s.vq.broken).toBe(true);
    s.driver.setAvailIdx(0);
    expectVirtqueueError(() => s.vq.available(), /broken/);
  });

  it('an avail.idx that goes backwards breaks the queue', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 1);
    s.driver.publish(0);
    popChain(s.vq);
    s.driver.setAvailIdx(0);
    expectVirtqueueError(() => s.vq.pop(), /avail\.idx 0 is 65535 entries ahead/);
    expect(s.vq.broken).toBe(true);
  });

  it('a descriptor whose buffer faults: the DMAFault names the descriptor, no byte moves', () => {
    const s = setup();
    s.driver.descriptor(0, BUFFERS, 4, NEXT, 1);
    s.driver.descriptor(1, BUFFERS + 0x10, 4, NEXT | WRITE, 2);
    s.driver.descriptor(2, HOLE, 4, WRITE);
    s.driver.publish(0);
    const chain = popChain(s.vq);
    const before = s.driver.bytes(BUFFERS, 0x20);
    const error = caught(() => chain.write(new Uint8Array(8).fill(0xee)));
    expect(error).toBeInstanceOf(DMAFault);
    expect((error as DMAFault).code).toBe('ERR_DMA_UNASSIGNED');
    expect((error as DMAFault).message).toMatch(/chain 0: descriptor 2: /);
    expect(s.driver.bytes(BUFFERS, 0x20)).toEqual(before);
    expect(chain.write(new Uint8Array(4).fill(0xee))).toBe(4);
    s.vq.push(chain, 4);
  });

  it('an indirect table that faults: the DMAFault names the descriptor', () => {
    const s = setup({ indirect: true });
    s.driver.descriptor(5, HOLE, 32, INDIRECT);
    s.driver.publish(5);
    const error = caught(() => s.vq.pop());
    expect(error).toBeInstanceOf(DMAFault);
    expect((error as DMAFault).message).toMatch(/indirect descriptor 0 \(of descriptor 5\)/);
    expectConsumed(s);
  });
});

describe('the direct path of a plain context', () => {
  /** A context that counts the calls of the accessors `SplitVirtqueue` uses. */
  class CountingContext extends DMAContext {
    calls: string[] = [];
    override read(addr: number, buf: Uint8Array, attrs?: DMAAttributesLike): void {
      this.calls.push(attrs === RELAXED ? 'read RELAXED' : 'read');
      super.read(addr, buf, attrs);
    }
    override readU16LE(addr: number, attrs?: DMAAttributesLike): number {
      this.calls.push(attrs === undefined ? 'readU16LE' : 'readU16LE RELAXED');
      return super.readU16LE(addr, attrs);
    }
    override writeU16LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
      this.calls.push(attrs === undefined ? 'writeU16LE' : 'writeU16LE RELAXED');
      super.writeU16LE(addr, value, attrs);
    }
    override writeU32LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
      this.calls.push('writeU32LE RELAXED');
      super.writeU32LE(addr, value, attrs);
    }
    override write(addr: number, data: Uint8Array, attrs?: DMAAttributesLike): void {
      this.calls.push('write');
      super.write(addr, data, attrs);
    }
    override barrier(strength: BarrierStrength): void {
      this.calls.push(`barrier ${strength}`);
      super.barrier(strength);
    }
  }

  function serveOne(options: DMAContextOptions): string[] {
    const memory = new GuestMemory({ size: MEMORY_SIZE });
    const driver = new Driver(new DMAContext(memory), 8);
    driver.descriptor(0, BUFFERS, 4, NEXT, 1);
    driver.descriptor(1, BUFFERS + 8, 4, WRITE);
    driver.publish(0);
    const ctx = new CountingContext(memory, options);
    const vq = new SplitVirtqueue(ctx, {
      size: 8,
      desc: DESC,
      avail: AVAIL,
      used: USED,
      eventIdx: true,
    });
    const chain = popChain(vq);
    chain.read(new Uint8Array(4));
    chain.write(Uint8Array.of(1, 2, 3, 4));
    vq.push(chain, 4);
    vq.needsNotification();
    expect(driver.usedElement(0)).toEqual({ id: 0, len: 4 });
    expect(driver.bytes(BUFFERS + 8, 4)).toEqual([1, 2, 3, 4]);
    return ctx.calls;
  }

  it('makes the RELAXED ring and payload accesses itself; every ordered one and every barrier through the context', () => {
    expect(serveOne({})).toEqual(['readU16LE', 'writeU16LE', 'barrier full', 'readU16LE']);
  });

  /** A context whose index accessors and `barrier` are its own, doing what the library's do. */
  class PassThroughContext extends DMAContext {
    override readU16LE(addr: number, attrs?: DMAAttributesLike): number {
      return super.readU16LE(addr, attrs);
    }
    override writeU16LE(addr: number, value: number, attrs?: DMAAttributesLike): void {
      super.writeU16LE(addr, value, attrs);
    }
    override barrier(strength: BarrierStrength): void {
      super.barrier(strength);
    }
  }

  /**
   * Serves two chains and decides both notifications on `ctx`'s queue, recording every
   * `Atomics` call the device makes: which word (the fence word, or a guest address) and
   * with what. Returns the calls, the guest bytes after, and the dirty pages.
   */
  function atomicsOf(
    options: GuestMemoryOptions,
    make: (memory: GuestMemory) => DMAContext,
  ): { calls: unknown[][]; bytes: number[]; dirty: number[] } {
    const memory = new GuestMemory({
      size: MEMORY_SIZE,
      dirtyLog: { clients: ['code'], pageSize: 64 },
      ...options,
    });
    const log = memory.dirtyLog('code');
    const driver = new Driver(new DMAContext(memory), 8);
    driver.descriptor(0, BUFFERS, 4, NEXT, 1);
    driver.descriptor(1, BUFFERS + 0x100, 4, WRITE);
    driver.descriptor(2, BUFFERS + 0x200, 4, WRITE);
    driver.publish(0);
    driver.publish(2);
    driver.usedEvent = 0;
    const vq = new SplitVirtqueue(make(memory), {
      size: 8,
      desc: DESC,
      avail: AVAIL,
      used: USED,
      eventIdx: true,
    });
    log.clear();
    const fence = memory.fenceLocation;
    const calls: unknown[][] = [];
    const where = (array: Int32Array | Uint16Array, index: number): string =>
      array.buffer === fence?.buffer && array.byteOffset + 4 * index === fence.byteOffset
        ? 'fence'
        : `guest ${array.byteOffset + array.BYTES_PER_ELEMENT * index - memory.offsetOf(0, 1)}`;
    for (const op of ['load', 'store', 'add'] as const) {
      const original = Reflect.get(Atomics, op) as (...args: unknown[]) => unknown;
      vi.spyOn(Atomics, op).mockImplementation(((...args: unknown[]) => {
        const [array, index, value] = args as [Int32Array, number, number | undefined];
        calls.push([op, where(array, index), value]);
        return Reflect.apply(original, Atomics, args);
      }) as never);
    }
    expect(vq.available()).toBe(2);
    const first = popChain(vq);
    first.write(Uint8Array.of(9, 8, 7, 6));
    vq.fill(first, 4);
    vq.flush();
    const needed = vq.needsNotification();
    const second = popChain(vq);
    vq.push(second, 0);
    expect(vq.pop()).toBeUndefined();
    const worked = vq.enableNotification();
    vi.restoreAllMocks();
    const bytes = new Uint8Array(0x3000);
    memory.read(0, bytes);
    return {
      calls: [...calls, ['needed', needed, worked]],
      bytes: [...bytes],
      dirty: log.collect(),
    };
  }

  it.each<[string, GuestMemoryOptions]>([
    ["'strict'", { barrierPolicy: 'strict' }],
    ["'tso'", { barrierPolicy: 'tso' }],
  ])(
    'makes the ordered index accesses and barriers of a plain context as its accessors would (under tso, no second full fence after an index store), under %s',
    (_name, options) => {
      const direct = atomicsOf(options, (memory) => new DMAContext(memory));
      const through = atomicsOf(options, (memory) => new PassThroughContext(memory));
      const tso = options.barrierPolicy === 'tso';
      // Under 'tso' the accessors' full barrier is the fence RMW right after an index store,
      // an `Atomics.store` (`xchg` on x86, a full fence itself): the direct path leaves it out.
      const fullAfterStore = through.calls.filter(
        ([op], at) => op === 'add' && through.calls[at - 1]?.[0] === 'store',
      );
      expect(fullAfterStore).toHaveLength(2);
      expect(direct).toEqual({
        ...through,
        calls: tso ? through.calls.filter((call) => !fullAfterStore.includes(call)) : through.calls,
      });
      // The ordered accesses of §10, each an Atomics operation on its own word.
      const indices = direct.calls.filter(([op]) => op === 'load' || op === 'store');
      expect(indices).toEqual([
        ['load', `guest ${AVAIL + 2}`, undefined],
        ['store', `guest ${USED + 2}`, 1],
        ['load', `guest ${AVAIL + 4 + 2 * 8}`, undefined],
        ['store', `guest ${USED + 2}`, 2],
        ['load', `guest ${AVAIL + 2}`, undefined],
        ['store', `guest ${USED + 4 + 8 * 8}`, 2],
        ['load', `guest ${AVAIL + 2}`, undefined],
      ]);
      const fences = direct.calls.filter(([op]) => op === 'add').length;
      // Under 'strict' the two full barriers and one per acquire (4) and release (3); under
      // 'tso' none: acquire and release emit nothing, and each full follows an `xchg`.
      expect(fences).toBe(tso ? 0 : 9);
      expect(direct.dirty.length).toBeGreaterThan(0);
    },
  );

  it("keeps the full fence under 'tso' when the used ring lies outside the direct span", () => {
    // The used ring in a second region, past a hole: its index store goes through the
    // context, which the queue does not take for an `xchg` of its own.
    const memory = new GuestMemory({
      regions: [
        { base: 0, size: USED - 0x800 },
        { base: USED, size: MEMORY_SIZE - USED },
      ],
      barrierPolicy: 'tso',
    });
    const driver = new Driver(new DMAContext(memory), 8);
    driver.descriptor(0, BUFFERS, 4, WRITE);
    driver.publish(0);
    const vq = new SplitVirtqueue(new DMAContext(memory), {
      size: 8,
      desc: DESC,
      avail: AVAIL,
      used: USED,
      eventIdx: true,
    });
    const add = vi.spyOn(Atomics, 'add');
    vq.push(popChain(vq), 0);
    vq.needsNotification();
    vq.enableNotification();
    expect(add).toHaveBeenCalledTimes(2);
    vi.restoreAllMocks();
  });

  it('calls a barrier or an accessor replaced on the instance before the queue was made', () => {
    const memory = new GuestMemory({ size: MEMORY_SIZE });
    const driver = new Driver(new DMAContext(memory), 8);
    driver.descriptor(0, BUFFERS, 4);
    driver.publish(0);
    const ctx = new DMAContext(memory);
    const barrier = vi.spyOn(ctx, 'barrier');
    const read = vi.spyOn(ctx, 'readU16LE');
    const vq = new SplitVirtqueue(ctx, { size: 8, desc: DESC, avail: AVAIL, used: USED });
    vq.push(popChain(vq), 0);
    vq.needsNotification();
    expect(barrier.mock.calls).toEqual([['full']]);
    expect(read.mock.calls).toEqual([[AVAIL + 2], [AVAIL]]);
    vi.restoreAllMocks();
  });

  it('marks the dirty log for what it writes directly: the payload and the used element', () => {
    const memory = new GuestMemory({ size: MEMORY_SIZE, dirtyLog: { clients: ['code'] } });
    const log = memory.dirtyLog('code');
    const driver = new Driver(new DMAContext(memory), 8);
    driver.descriptor(0, BUFFERS + 0x1000, 4, WRITE);
    driver.publish(0);
    log.clear();
    const vq = new SplitVirtqueue(new DMAContext(memory), {
      size: 8,
      desc: DESC,
      avail: AVAIL,
      used: USED,
    });
    const chain = popChain(vq);
    expect(log.collect()).toEqual([]);
    chain.write(Uint8Array.of(1, 2, 3, 4));
    expect(log.isDirty(BUFFERS + 0x1000, 4)).toBe(true);
    vq.fill(chain, 4);
    expect(log.isDirty(USED + 4, 8)).toBe(true);
  });

  it('takes the accessors for every ring access when the context has a trace', () => {
    expect(serveOne({ trace: () => undefined })).toEqual([
      'readU16LE',
      'readU16LE RELAXED',
      'read RELAXED',
      'read RELAXED',
      'writeU32LE RELAXED',
      'writeU32LE RELAXED',
      'writeU16LE',
      'barrier full',
      'readU16LE',
    ]);
  });
});

describe('pop on arbitrary ring bytes (property)', () => {
  const SIZE = 8;
  const u16 = fc.integer({ min: 0, max: 0xffff });
  const descriptor = fc.record({
    addr: fc.oneof(
      fc.integer({ min: 0, max: MEMORY_SIZE + 0x100 }),
      fc.constantFrom(TABLE, HOLE, 2 ** 53 - 8),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    ),
    len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })),
    flags: fc.oneof(fc.integer({ min: 0, max: 7 }), u16),
    next: fc.oneof(fc.integer({ min: 0, max: SIZE + 1 }), u16),
  });
  const ring = fc.record({
    indirect: fc.boolean(),
    eventIdx: fc.boolean(),
    table: fc.array(descriptor, { minLength: SIZE, maxLength: SIZE }),
    indirectTable: fc.array(descriptor, { minLength: 16, maxLength: 16 }),
    entries: fc.array(fc.oneof(fc.integer({ min: 0, max: SIZE }), u16), {
      minLength: SIZE,
      maxLength: SIZE,
    }),
    availIdx: fc.oneof(fc.integer({ min: 0, max: SIZE + 2 }), u16),
    noise: fc.array(
      fc.tuple(fc.integer({ min: 0, max: 0x3100 }), fc.integer({ min: 0, max: 255 })),
      {
        maxLength: 32,
      },
    ),
  });

  it('returns a chain, undefined or a DMAError; bounded; never writes guest memory', () => {
    const outcomes = { chain: 0, empty: 0, error: 0 };
    fc.assert(
      fc.property(ring, (r) => {
        const s = setup({ indirect: r.indirect, eventIdx: r.eventIdx });
        r.table.forEach((d, index) => {
          s.driver.descriptor(index, 0, d.len, d.flags, d.next);
          s.driver.ctx.writeU64LE(DESC + 16 * index, BigInt(d.addr), RELAXED);
        });
        r.indirectTable.forEach((d, index) => {
          s.driver.descriptor(index, 0, d.len, d.flags, d.next, TABLE);
          s.driver.ctx.writeU64LE(TABLE + 16 * index, BigInt(d.addr), RELAXED);
        });
        r.entries.forEach((head, slot) => {
          s.driver.ctx.writeU16LE(AVAIL + 4 + 2 * slot, head);
        });
        s.driver.setAvailIdx(r.availIdx);
        for (const [addr, value] of r.noise) s.driver.ctx.writeU8(addr, value);
        const before = new Uint8Array(MEMORY_SIZE);
        s.driver.ctx.read(0, before, RELAXED);
        // The same queue on a plain context, which reads the ring directly: it must find
        // exactly what the traced one finds, through the accessors.
        const direct = new SplitVirtqueue(new DMAContext(s.memory), {
          size: SIZE,
          desc: DESC,
          avail: AVAIL,
          used: USED,
          indirect: r.indirect,
          eventIdx: r.eventIdx,
        });
        for (let call = 0; call < SIZE + 2; call++) {
          const nextAvail = s.vq.nextAvail;
          s.events.length = 0;
          let result: DescriptorChain | undefined;
          let failure: unknown;
          try {
            result = s.vq.pop();
          } catch (error) {
            failure = error;
          }
          let directResult: DescriptorChain | undefined;
          let directFailure: unknown;
          try {
            directResult = direct.pop();
          } catch (error) {
            directFailure = error;
          }
          const summary = (chain: DescriptorChain | undefined, error: unknown): unknown =>
            error instanceof DMAError
              ? [error.code, error.message]
              : chain?.descriptors.map((d) => ({ ...d }));
          expect(summary(directResult, directFailure)).toEqual(summary(result, failure));
          expect(direct.broken).toBe(s.vq.broken);
          // One ordered index read, one ring entry, at most SIZE descriptors plus one
          // indirect, each with at most its barrier event.
          expect(s.events.length).toBeLessThanOrEqual(2 + 1 + SIZE + 1);
          expect(s.events.some((e) => e.op !== 'read' && e.op !== 'barrier')).toBe(false);
          if (failure !== undefined) {
            outcomes.error++;
            expect(failure).toBeInstanceOf(DMAError);
            const error = failure as DMAError;
            expect(['ERR_DMA_VIRTQUEUE', 'ERR_DMA_UNASSIGNED']).toContain(error.code);
            if (error.code === 'ERR_DMA_VIRTQUEUE' && !s.vq.broken) {
              expect(error.message).toMatch(/descriptor \d+/);
            }
            if (s.vq.broken) break;
            expect(s.vq.nextAvail).toBe((nextAvail + 1) & 0xffff);
            continue;
          }
          if (result === undefined) {
            outcomes.empty++;
            break;
          }
          outcomes.chain++;
          expect(s.vq.nextAvail).toBe((nextAvail + 1) & 0xffff);
          expect(result.descriptors.length).toBeGreaterThan(0);
          expect(result.descriptors.length).toBeLessThanOrEqual(SIZE);
          let seenWritable = false;
          let readable = 0;
          let writable = 0;
          for (const d of result.descriptors) {
            if (!d.writable) expect(seenWritable).toBe(false);
            seenWritable ||= d.writable;
            if (d.writable) writable += d.length;
            else readable += d.length;
            expect(d.addr + d.length).toBeLessThanOrEqual(2 ** 53);
          }
          expect([result.readableLength, result.writableLength]).toEqual([readable, writable]);
        }
        const after = new Uint8Array(MEMORY_SIZE);
        s.driver.ctx.read(0, after, RELAXED);
        expect(Buffer.compare(after, before)).toBe(0);
      }),
      { numRuns: 300 },
    );
    // The generator reaches every outcome, so the property is not vacuous.
    expect(outcomes.chain).toBeGreaterThan(20);
    expect(outcomes.error).toBeGreaterThan(50);
    expect(outcomes.empty).toBeGreaterThan(0);
  });
});

eachContext("a chain is the device's from pop to push, then reused", () => {
  it('a later pop of the same head returns the same object, refilled: no allocation per request', () => {
    const { vq, driver } = setup();
    driver.fill(BUFFERS, [1, 2, 3]);
    driver.fill(BUFFERS + 0x100, [4, 5]);
    driver.descriptor(2, BUFFERS, 3);
    driver.publish(2);
    const first = popChain(vq);
    const firstDescriptors = first.descriptors;
    vq.push(first, 0);
    driver.descriptor(2, BUFFERS + 0x100, 2, WRITE);
    driver.publish(2);
    const second = popChain(vq);
    expect(second).toBe(first);
    expect([second.head, second.readableLength, second.writableLength]).toEqual([2, 0, 2]);
    expect(second.descriptors).toEqual([
      { addr: BUFFERS + 0x100, length: 2, writable: true, index: 2, indirect: false },
    ]);
    // The descriptors handed out for the first pop are not rewritten under the caller.
    expect(firstDescriptors).toEqual([
      { addr: BUFFERS, length: 3, writable: false, index: 2, indirect: false },
    ]);
    expect(Object.isFrozen(firstDescriptors) && Object.isFrozen(firstDescriptors[0])).toBe(true);
  });

  it("once pushed, a chain can no longer read or write: its buffers are the driver's", () => {
    const { vq, driver, memory } = setup();
    driver.descriptor(0, BUFFERS, 4, NEXT, 1);
    driver.descriptor(1, BUFFERS + 0x100, 4, WRITE);
    driver.publish(0);
    const chain = popChain(vq);
    vq.push(chain, 0);
    const before = new Uint8Array(memory.buffer).slice();
    for (const action of [
      () => chain.read(new Uint8Array(4)),
      () => chain.write(Uint8Array.of(1)),
    ]) {
      const error = caught(action);
      expect(error).toBeInstanceOf(DMAError);
      expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
      expect((error as DMAError).message).toContain('chain 0');
    }
    expect(new Uint8Array(memory.buffer)).toEqual(before);
  });

  it('a head the driver offers again while the device holds its chain gets a chain of its own', () => {
    const { vq, driver } = setup();
    driver.fill(BUFFERS, [7, 8]);
    driver.descriptor(4, BUFFERS, 2);
    driver.publish(4);
    driver.publish(4);
    const held = popChain(vq);
    const again = popChain(vq);
    expect(again).not.toBe(held);
    const buf = new Uint8Array(2);
    expect(held.read(buf)).toBe(2);
    expect([...buf]).toEqual([7, 8]);
    vq.push(held, 0);
    vq.push(again, 0);
    // The first object stays the head's: once pushed, the next pop reuses it.
    driver.publish(4);
    expect(popChain(vq)).toBe(held);
  });

  it("a chain whose walk failed is not handed out, and the head's chain stays reusable", () => {
    const { vq, driver } = setup();
    driver.descriptor(1, BUFFERS, 2);
    driver.publish(1);
    const chain = popChain(vq);
    vq.push(chain, 0);
    driver.descriptor(1, BUFFERS, 2, NEXT, 9); // next out of range
    driver.publish(1);
    expect((caught(() => vq.pop()) as DMAError).code).toBe('ERR_DMA_VIRTQUEUE');
    driver.descriptor(1, BUFFERS, 2);
    driver.publish(1);
    expect(popChain(vq)).toBe(chain);
  });
});

eachContext('the same buffers copied request after request (word copies)', () => {
  const REQUEST = BUFFERS;
  const RESPONSE = BUFFERS + 0x100;

  /** Publishes a chain of `length` readable bytes at REQUEST and `length` writable at RESPONSE. */
  function offer(driver: Driver, length: number, pattern: number): void {
    driver.fill(
      REQUEST,
      Array.from({ length }, (_, index) => (index * 7 + pattern) & 0xff),
    );
    driver.fill(RESPONSE, new Array<number>(length + 16).fill(0));
    driver.descriptor(0, REQUEST, length, NEXT, 1);
    driver.descriptor(1, RESPONSE, length, WRITE);
    driver.publish(0);
  }
  const expected = (length: number, pattern: number): number[] =>
    Array.from({ length }, (_, index) => (index * 7 + pattern) & 0xff);

  for (const length of [64, 68, 66, 20]) {
    it(`reads into and writes from the same two buffers of ${length} bytes, every byte right each time`, () => {
      const { vq, driver } = setup();
      const request = new Uint8Array(length);
      const response = new Uint8Array(length);
      for (let round = 0; round < 4; round++) {
        offer(driver, length, round);
        const chain = popChain(vq);
        expect(chain.read(request)).toBe(length);
        expect([...request]).toEqual(expected(length, round));
        for (let index = 0; index < length; index++) response[index] = (request[index] ?? 0) ^ 0x5a;
        expect(chain.write(response)).toBe(length);
        vq.push(chain, length);
        expect(driver.bytes(RESPONSE, length + 16)).toEqual([
          ...expected(length, round).map((byte) => byte ^ 0x5a),
          ...new Array<number>(16).fill(0),
        ]);
      }
    });
  }

  it('writes only the writable part from data longer than it, each time', () => {
    const { vq, driver } = setup();
    const data = new Uint8Array(128).fill(0xee);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      expect(chain.write(data)).toBe(64);
      vq.push(chain, 64);
      expect(driver.bytes(RESPONSE, 80)).toEqual([
        ...new Array<number>(64).fill(0xee),
        ...new Array<number>(16).fill(0),
      ]);
    }
  });

  it("copies into a buffer that shares the guest memory's bytes as if through a temporary", () => {
    const { vq, driver, memory } = setup();
    const base = memory.offsetOf(0, MEMORY_SIZE);
    // 64 bytes of guest memory 8 bytes past the request: the copy overlaps its own source.
    const overlapping = new Uint8Array(memory.buffer, base + REQUEST + 8, 64);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      expect(chain.read(overlapping)).toBe(64);
      vq.push(chain, 0);
      expect([...overlapping]).toEqual(expected(64, round));
    }
  });

  it('gives a typed array of another kind with the prototype of Uint8Array one byte per element', () => {
    const { vq, driver } = setup();
    const wide = new Uint16Array(64);
    Object.setPrototypeOf(wide, Uint8Array.prototype);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      expect(chain.read(wide as unknown as Uint8Array)).toBe(64);
      expect([...new Uint16Array(wide.buffer)]).toEqual(expected(64, round));
      // Element values above a byte are stored modulo 256, as a Uint8Array store takes them.
      for (let index = 0; index < 64; index++) wide[index] = 0x100 + index;
      expect(chain.write(wide as unknown as Uint8Array)).toBe(64);
      vq.push(chain, 64);
      expect(driver.bytes(RESPONSE, 64)).toEqual(Array.from({ length: 64 }, (_, index) => index));
    }
  });

  it('copies into and out of a buffer at an offset that is not a multiple of 4', () => {
    const { vq, driver } = setup();
    const buf = new Uint8Array(new ArrayBuffer(80), 1, 64);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      expect(chain.read(buf)).toBe(64);
      expect([...buf]).toEqual(expected(64, round));
      expect(chain.write(buf)).toBe(64);
      vq.push(chain, 64);
      expect(driver.bytes(RESPONSE, 64)).toEqual(expected(64, round));
    }
  });

  /**
   * Rounds of a chain offering `offered` bytes each way, read into and written from one
   * buffer that tracks a resizable backing (64 bytes at first, at most 128), resized to `size`
   * before each round; `copied` is what each copy must move.
   */
  function resizableRounds(offered: number, rounds: readonly (readonly [number, number])[]): void {
    const { vq, driver } = setup();
    // ES2024 resizable buffers, in Node 20 but not in this project's ES2022 lib types.
    const Resizable = ArrayBuffer as unknown as new (
      length: number,
      options: { maxByteLength: number },
    ) => ArrayBuffer & { resize(length: number): void };
    const backing = new Resizable(64, { maxByteLength: 128 });
    const buf = new Uint8Array(backing); // tracks the backing's length
    for (const [round, [size, copied]] of rounds.entries()) {
      backing.resize(size);
      offer(driver, offered, round);
      const chain = popChain(vq);
      expect(chain.read(buf)).toBe(copied);
      expect([...buf.subarray(0, copied)]).toEqual(expected(copied, round));
      buf.fill(round + 1);
      expect(chain.write(buf)).toBe(copied);
      vq.push(chain, copied);
      expect(driver.bytes(RESPONSE, offered)).toEqual([
        ...new Array<number>(copied).fill(round + 1),
        ...new Array<number>(offered - copied).fill(0),
      ]);
    }
  }

  it('copies a buffer whose resizable backing shrank or grew after earlier copies', () => {
    resizableRounds(64, [
      [64, 64],
      [64, 64],
      [128, 64],
      [32, 32],
      [32, 32],
    ]);
  });

  it('copies the new length of a buffer whose resizable backing grew after earlier copies', () => {
    // The chain offers 128 bytes each way: the buffer's length decides what is copied.
    resizableRounds(128, [
      [64, 64],
      [64, 64],
      [128, 128],
      [128, 128],
    ]);
  });

  it('once pushed, refuses to copy even the buffers it copied request after request', () => {
    const { vq, driver, memory } = setup();
    const request = new Uint8Array(64);
    const response = new Uint8Array(64).fill(0x77);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      expect(chain.read(request)).toBe(64);
      expect(chain.write(response)).toBe(64);
      vq.push(chain, 64);
      const before = new Uint8Array(memory.buffer).slice();
      const requestBefore = request.slice();
      for (const action of [() => chain.read(request), () => chain.write(response)]) {
        const error = caught(action);
        expect(error).toBeInstanceOf(DMAError);
        expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
        expect((error as DMAError).message).toContain('chain 0');
      }
      expect(new Uint8Array(memory.buffer)).toEqual(before);
      expect(request).toEqual(requestBefore);
    }
  });

  it('copies words at the right place for a chain of several buffers after one of one each way', () => {
    const { vq, driver } = setup();
    const request = new Uint8Array(64);
    const response = new Uint8Array(64);
    for (let round = 0; round < 2; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      chain.read(request);
      chain.write(response);
      vq.push(chain, 64);
    }
    // The same head, now two readable buffers of 32 and two writable ones of 32.
    driver.fill(REQUEST, expected(64, 5));
    driver.fill(RESPONSE, new Array<number>(0x60).fill(0));
    driver.descriptor(0, REQUEST + 32, 32, NEXT, 2);
    driver.descriptor(2, REQUEST, 32, NEXT, 3);
    driver.descriptor(3, RESPONSE + 0x40, 32, WRITE | NEXT, 4);
    driver.descriptor(4, RESPONSE, 32, WRITE);
    driver.publish(0);
    const chain = popChain(vq);
    expect(chain.read(request)).toBe(64);
    expect([...request]).toEqual([...expected(64, 5).slice(32), ...expected(64, 5).slice(0, 32)]);
    response.set(expected(64, 9));
    expect(chain.write(response)).toBe(64);
    expect(driver.bytes(RESPONSE, 0x60)).toEqual([
      ...expected(64, 9).slice(32),
      ...new Array<number>(32).fill(0),
      ...expected(64, 9).slice(0, 32),
    ]);
  });

  it('copies nothing with a buffer detached after earlier copies', () => {
    const { vq, driver, memory } = setup();
    const buf = new Uint8Array(64);
    for (let round = 0; round < 2; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      chain.read(buf);
      chain.write(buf);
      vq.push(chain, 64);
    }
    structuredClone(buf.buffer, { transfer: [buf.buffer] });
    offer(driver, 64, 9);
    const before = new Uint8Array(memory.buffer).slice();
    const chain = popChain(vq);
    expect(chain.read(buf)).toBe(0);
    expect(chain.write(buf)).toBe(0);
    expect(new Uint8Array(memory.buffer)).toEqual(before);
  });

  it('marks the dirty log for every write from the same buffer', () => {
    const memory = new GuestMemory({ size: MEMORY_SIZE, dirtyLog: { clients: ['code'] } });
    const log = memory.dirtyLog('code');
    const driver = new Driver(new DMAContext(memory), 8);
    const vq = new SplitVirtqueue(new DMAContext(memory), {
      size: 8,
      desc: DESC,
      avail: AVAIL,
      used: USED,
    });
    const data = new Uint8Array(64).fill(3);
    for (let round = 0; round < 3; round++) {
      offer(driver, 64, round);
      const chain = popChain(vq);
      log.clear();
      chain.write(data);
      expect(log.isDirty(RESPONSE, 64)).toBe(true);
      vq.push(chain, 64);
    }
  });
});
