/**
 * The IOMMU cannot be bypassed by an exception thrown inside an access, nor by a callback
 * that unmaps and then accesses: regression tests for the holes of issue 9, in one thread and
 * across a worker. Before the fix, a buffer subclass whose `set` threw inside an IOTLB hit
 * left the thread's in-flight slot marked for good, and every later access of that thread
 * was served from its stale IOTLB after the page was unmapped.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  GuestMemory,
  IommuDomain,
  type DMATraceEvent,
} from '../src/index.js';
import { startWorker, stopWorkersAfterEach } from './support/workers.js';

const { WRITE, BIDIRECTIONAL } = DMAAttributes;
const PAGE = 4096;
const IOVA = 0x10000;
const GPA = 0x20000;

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return error instanceof DMAError ? error.code : `not a DMAError: ${String(error)}`;
  }
  return undefined;
}

/** A Uint8Array whose own methods throw and whose `length` lies: none of it may matter. */
class Hostile extends Uint8Array {
  override get length(): number {
    return 1 << 20;
  }
  override set(): void {
    throw new Error('set was called');
  }
  override subarray(): Uint8Array<ArrayBuffer> {
    throw new Error('subarray was called');
  }
}

function setup(): { memory: GuestMemory; domain: IommuDomain; ctx: DMAContext } {
  const memory = new GuestMemory({ size: 0x40000 });
  const domain = new IommuDomain();
  domain.map(IOVA, GPA, PAGE, BIDIRECTIONAL);
  return { memory, domain, ctx: new DMAContext(memory, { iommu: domain }) };
}

function guestBytes(memory: GuestMemory, gpa: number, length: number): number[] {
  const bytes = new Uint8Array(length);
  memory.read(gpa, bytes);
  return [...bytes];
}

describe('an exception inside an IOTLB hit', () => {
  it("a buffer's throwing set and lying length are never used: the access moves its real bytes", () => {
    const { memory, domain, ctx } = setup();
    ctx.write(IOVA, Uint8Array.of(9)); // fills the IOTLB
    for (const length of [4, 64, 300]) {
      const hostile = new Hostile(length).fill(0x5a);
      ctx.write(IOVA, hostile);
      expect(guestBytes(memory, GPA, length + 1)).toEqual([
        ...new Array<number>(length).fill(0x5a),
        0,
      ]);
      const back = new Hostile(length);
      ctx.read(IOVA + 1, back);
      expect([...Uint8Array.from(new Uint8Array(back.buffer))]).toEqual([
        ...new Array<number>(length - 1).fill(0x5a),
        0,
      ]);
      memory.write(GPA, new Uint8Array(length + 1));
    }
    expect(domain.unmap(IOVA, PAGE)).toBe(PAGE);
    expect(
      codeOf(() => {
        ctx.write(IOVA, new Hostile(4));
      }),
    ).toBe('ERR_DMA_IOMMU_UNMAPPED');
    expect(guestBytes(memory, GPA, 4)).toEqual([0, 0, 0, 0]);
  });

  it('a stack overflow at any depth inside an access never lets a later access use the unmapped page', () => {
    const { memory, domain, ctx } = setup();
    const data = Uint8Array.of(1, 2, 3, 4);
    let overflows = 0;
    // Recurse until the stack runs out inside one of the accesses; the depth at which the
    // RangeError hits varies with each start offset, so some land between enter and leave.
    for (let pad = 0; pad < 200; pad++) {
      const recurse = (depth: number): number => {
        ctx.write(IOVA + (depth % 64), data);
        return recurse(depth + 1) + pad;
      };
      try {
        recurse(pad);
      } catch (error) {
        if (!(error instanceof RangeError)) throw error;
        overflows++;
      }
    }
    expect(overflows).toBe(200);
    domain.unmap(IOVA, PAGE);
    memory.write(GPA, new Uint8Array(PAGE));
    for (let attempt = 0; attempt < 64; attempt++) {
      expect(
        codeOf(() => {
          ctx.write(IOVA + attempt, data);
        }),
      ).toBe('ERR_DMA_IOMMU_UNMAPPED');
      expect(codeOf(() => ctx.readU32LE(IOVA + 4 * attempt))).toBe('ERR_DMA_IOMMU_UNMAPPED');
    }
    expect(guestBytes(memory, GPA, PAGE).every((byte) => byte === 0)).toBe(true);
  });
});

describe('a listener that unmaps and then accesses', () => {
  it('a trace callback that unmaps sees the unmap in its own next access', () => {
    const memory = new GuestMemory({ size: 0x40000 });
    const domain = new IommuDomain();
    domain.map(IOVA, GPA, PAGE, BIDIRECTIONAL);
    const seen: string[] = [];
    let armed = true;
    const ctx = new DMAContext(memory, {
      iommu: domain,
      trace: (event: DMATraceEvent) => {
        if (!armed || event.op !== 'write') return;
        armed = false;
        domain.unmap(IOVA, PAGE);
        seen.push(
          codeOf(() => {
            ctx.write(IOVA + 8, Uint8Array.of(7));
          }) ?? 'no fault',
        );
      },
    });
    ctx.write(IOVA, Uint8Array.of(1, 2));
    expect(seen).toEqual(['ERR_DMA_IOMMU_UNMAPPED']);
    expect(guestBytes(memory, GPA, 10)).toEqual([1, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('an onFault listener that unmaps the page sees it in its own next access', () => {
    const memory = new GuestMemory({ size: 0x40000 });
    const seen: string[] = [];
    const holder: { ctx?: DMAContext } = {};
    let armed = true;
    const domain = new IommuDomain({
      onFault: () => {
        if (!armed) return;
        armed = false;
        domain.unmap(IOVA, PAGE);
        seen.push(
          codeOf(() => {
            holder.ctx?.write(IOVA, Uint8Array.of(7));
          }) ?? 'no fault',
        );
      },
    });
    domain.map(IOVA, GPA, PAGE, WRITE);
    const ctx = new DMAContext(memory, { iommu: domain });
    holder.ctx = ctx;
    ctx.write(IOVA, Uint8Array.of(1)); // the IOTLB now holds the page
    // A read of the write-only page faults; its listener unmaps the page, then writes to it.
    expect(
      codeOf(() => {
        ctx.read(IOVA, new Uint8Array(1));
      }),
    ).toBe('ERR_DMA_IOMMU_PERMISSION');
    expect(seen).toEqual(['ERR_DMA_IOMMU_UNMAPPED']);
    expect(guestBytes(memory, GPA, 1)).toEqual([1]);
  });
});

describe('across threads', () => {
  stopWorkersAfterEach();

  it("after a worker's accesses overflowed its stack, the main thread's unmap still stops its next access", async () => {
    const { memory, domain } = setup();
    const worker = startWorker('iommu-overflow.mjs', {
      memory: memory.handle(),
      domain: domain.handle(),
      iova: IOVA,
    });
    const next = (): Promise<{ overflows?: number; codes?: string[] }> =>
      new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    const first = await next();
    expect(first.overflows).toBe(100);
    expect(guestBytes(memory, GPA, 4)).toEqual([1, 2, 3, 4]);
    const started = performance.now();
    domain.unmap(IOVA, PAGE);
    // A slot left marked by an overflow is waited for once, for the stall limit, at most.
    expect(performance.now() - started).toBeLessThan(2500);
    memory.write(GPA, new Uint8Array(PAGE));
    worker.postMessage('again');
    const second = await next();
    expect(second.codes).toEqual(new Array<string>(64).fill('ERR_DMA_IOMMU_UNMAPPED'));
    expect(guestBytes(memory, GPA, PAGE).every((byte) => byte === 0)).toBe(true);
  });
});

describe('a table lock held by a dead thread', () => {
  stopWorkersAfterEach();

  it('is taken over by one waiter at a time: every unmap of 8 racing threads takes effect', async () => {
    const WAITERS = 8;
    for (let round = 0; round < 2; round++) {
      const domain = new IommuDomain();
      const iovas = Array.from({ length: WAITERS }, (_, index) => 0x100000 + index * 2 * PAGE);
      iovas.forEach((iova, index) => {
        domain.map(iova, 0x10000 + index * PAGE, PAGE, BIDIRECTIONAL);
      });
      // What a thread that died inside map or unmap leaves: the lock word names a holder
      // that will never release it (src/iommu.ts: word 0 of the header).
      Atomics.store(new Int32Array(domain.handle().buffer, 0, 1), 0, 0x7fff_0000);
      const go = new Int32Array(new SharedArrayBuffer(4));
      const workers = iovas.map((iova) => {
        return startWorker('iommu-lock-waiter.mjs', {
          domain: domain.handle(),
          go: go.buffer,
          iova,
          size: PAGE,
        });
      });
      const reply = (worker: Worker): Promise<{ removed?: number; error?: string }> =>
        new Promise((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        });
      await Promise.all(workers.map(reply));
      const replies = workers.map(reply);
      Atomics.store(go, 0, 1);
      Atomics.notify(go, 0);
      // Each waiter waits out the dead holder's stall limit at most once; then they take turns.
      expect(await Promise.all(replies)).toEqual(iovas.map(() => ({ removed: PAGE })));
      expect(domain.mappingCount).toBe(0);
      for (const iova of iovas) {
        expect(codeOf(() => domain.translate(iova, DMAAttributes.READ))).toBe(
          'ERR_DMA_IOMMU_UNMAPPED',
        );
      }
      await Promise.all(workers.map((worker) => worker.terminate()));
    }
  });
});

describe('closing a domain object', () => {
  it('ends that object only: its contexts and calls are ERR_DMA_INVALID_ARGUMENT, other objects go on', () => {
    const { memory, domain, ctx } = setup();
    const other = IommuDomain.fromHandle(domain.handle());
    const otherCtx = new DMAContext(memory, { iommu: other });
    ctx.write(IOVA, Uint8Array.of(1)); // an IOTLB hit would serve the next access
    expect(domain.closed).toBe(false);
    domain.close();
    domain.close();
    expect(domain.closed).toBe(true);
    expect(
      codeOf(() => {
        ctx.write(IOVA, Uint8Array.of(2));
      }),
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(codeOf(() => ctx.readU32LE(IOVA))).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(
      codeOf(() => {
        domain.map(0x80000, GPA, PAGE, WRITE);
      }),
    ).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(codeOf(() => domain.translate(IOVA, WRITE))).toBe('ERR_DMA_INVALID_ARGUMENT');
    expect(guestBytes(memory, GPA, 1)).toEqual([1]);
    otherCtx.write(IOVA, Uint8Array.of(3));
    expect(guestBytes(memory, GPA, 1)).toEqual([3]);
    expect(other.unmap(IOVA, PAGE)).toBe(PAGE);
  });

  it('Symbol.dispose closes it, so `using` works', () => {
    const { domain } = setup();
    const dispose = (Symbol as { dispose?: symbol }).dispose;
    expect(typeof dispose).toBe('symbol');
    (domain as unknown as Record<symbol, () => void>)[dispose as symbol]?.();
    expect(domain.closed).toBe(true);
  });
});
