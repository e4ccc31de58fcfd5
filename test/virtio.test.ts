/**
 * The virtio demo (examples/virtio/): a split virtqueue with event-index notification
 * suppression, driver and device in two workers on one shared guest memory; the device of
 * `attrs` and `attrs-no-full` is the library's `SplitVirtqueue`. The workers import the built
 * package (`dma-attrs`), which `npm test` builds before vitest runs.
 */
import { existsSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';

interface VariantResult {
  variant: string;
  ring: string;
  barrierPolicy: string;
  pinned: boolean;
  packets: number;
  lostNotifications: number;
  lostKicks: number;
  lostInterrupts: number;
  corrupted: number;
  droppedKicks: number;
  droppedInterrupts: number;
  unfinished: number;
  packetsAfterFirstLoss: number;
  packetsPerSecond: number;
  packetsPerCpuSecond: number;
}

interface VirtqueueModule {
  runVariant(options: Record<string, unknown>): Promise<VariantResult>;
  MEMORY_SIZE: number;
  QUEUE_SIZE: number;
  DESC_TABLE: number;
  AVAIL_RING: number;
  USED_RING: number;
  USED_IDX: number;
  AVAIL_EVENT: number;
  BUFFERS: number;
  PAYLOAD_SIZE: number;
}

interface TraceEvent {
  op: string;
  addr: number;
  barrier: string;
}
interface Context {
  readU16LE(addr: number): number;
  writeU16LE(addr: number, value: number, attrs?: number): void;
  writeU32LE(addr: number, value: number, attrs?: number): void;
}
type ContextClass = new (
  memory: unknown,
  options?: { trace?: (event: TraceEvent) => void },
) => Context;
interface Chain {
  readonly head: number;
}
interface Queue {
  pop(): Chain | undefined;
  push(chain: Chain, written: number): void;
  needsNotification(): boolean;
  enableNotification(): boolean;
}

let virtqueue: VirtqueueModule;
let library: {
  GuestMemory: new (options: { size: number }) => unknown;
  DMAContext: ContextClass;
};
let SplitVirtqueue: new (ctx: Context, options: Record<string, unknown>) => Queue;
let contexts: { PlainIndexContext: ContextClass; NoFullBarrierContext: ContextClass };

beforeAll(async () => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the virtio demo imports the built package: run `npx tsup` first');
  }
  const load = async <T>(path: string) => (await import(new URL(path, import.meta.url).href)) as T;
  virtqueue = await load<VirtqueueModule>('../examples/virtio/virtqueue.mjs');
  library = await load<typeof library>('../dist/index.js');
  ({ SplitVirtqueue } = await load<{ SplitVirtqueue: typeof SplitVirtqueue }>('../dist/virtio.js'));
  contexts = await load<typeof contexts>('../examples/virtio/queue-ring.mjs');
});

describe('the virtio demo', () => {
  const RUN_MS = 1500;
  const rings: Record<string, string> = {
    attrs: 'SplitVirtqueue',
    legacy: 'hand-written',
    raw: 'raw',
  };
  for (const [variant, ring] of Object.entries(rings)) {
    it(`moves packets with no lost notification and no corrupted payload: ${variant} (${ring})`, async () => {
      const result = await virtqueue.runVariant({ variant, durationMs: RUN_MS });
      console.log(`virtio ${variant}:`, result);
      expect(result.ring).toBe(ring);
      expect(result.packets).toBeGreaterThan(1000);
      expect(result.lostNotifications).toBe(0);
      expect(result.corrupted).toBe(0);
      expect(result.unfinished).toBe(0);
      expect(result.packetsPerSecond).toBeGreaterThan(0);
      expect(result.packetsPerCpuSecond).toBeGreaterThan(0);
    });
  }

  // What attrs-no-full changes, seen without threads: on a NoFullBarrierContext,
  // SplitVirtqueue's push/needsNotification/enableNotification issue no barrier('full') and
  // store used.idx and avail_event with plain stores (no ordered store in the trace); on a
  // PlainIndexContext, the stores are plain and the full barriers are the library's.
  it("attrs-no-full's context drops SplitVirtqueue's full barriers and ordered index stores, nothing else", () => {
    const v = virtqueue;
    const cases: [string, ContextClass, boolean, boolean][] = [
      ['DMAContext', library.DMAContext, true, true],
      ['PlainIndexContext', contexts.PlainIndexContext, true, false],
      ['NoFullBarrierContext', contexts.NoFullBarrierContext, false, false],
    ];
    for (const [name, Context, fullBarriers, orderedStores] of cases) {
      const memory = new library.GuestMemory({ size: v.MEMORY_SIZE });
      const guest = new library.DMAContext(memory);
      // One request: descriptor 0 (readable) → descriptor 1 (writable), avail.idx = 1.
      guest.writeU32LE(v.DESC_TABLE, v.BUFFERS);
      guest.writeU32LE(v.DESC_TABLE + 8, v.PAYLOAD_SIZE);
      guest.writeU32LE(v.DESC_TABLE + 12, 1 | (1 << 16));
      guest.writeU32LE(v.DESC_TABLE + 16, v.BUFFERS + v.PAYLOAD_SIZE);
      guest.writeU32LE(v.DESC_TABLE + 24, v.PAYLOAD_SIZE);
      guest.writeU32LE(v.DESC_TABLE + 28, 2);
      guest.writeU16LE(v.AVAIL_RING + 4, 0);
      guest.writeU16LE(v.AVAIL_RING + 2, 1);
      const events: TraceEvent[] = [];
      const ctx = new Context(memory, { trace: (event) => events.push(event) });
      const vq = new SplitVirtqueue(ctx, {
        size: v.QUEUE_SIZE,
        desc: v.DESC_TABLE,
        avail: v.AVAIL_RING,
        used: v.USED_RING,
        eventIdx: true,
      });
      const chain = vq.pop();
      expect(chain?.head, name).toBe(0);
      events.length = 0;
      vq.push(chain as Chain, 0);
      vq.needsNotification();
      expect(vq.enableNotification(), name).toBe(false);
      const fulls = events.filter((e) => e.op === 'barrier' && e.barrier === 'full').length;
      expect(fulls, name).toBe(fullBarriers ? 2 : 0);
      const indexStores = events.filter(
        (e) => e.op === 'write' && (e.addr === v.USED_IDX || e.addr === v.AVAIL_EVENT),
      );
      expect(
        indexStores.map((e) => e.barrier),
        name,
      ).toEqual(orderedStores ? ['release', 'release'] : []);
      // Either way, the release barrier before each index store is there, and so are the
      // stores: the driver sees used.idx 1 and avail_event 1.
      const releases = events.filter((e) => e.op === 'barrier' && e.barrier === 'release');
      expect(releases.length, name).toBe(2);
      expect(guest.readU16LE(v.USED_IDX), name).toBe(1);
      expect(guest.readU16LE(v.AVAIL_EVENT), name).toBe(1);
    }
  });

  // The bug the demo exists for: without barrier('full') between publishing an index and
  // reading the other side's event index, notifications are lost. It takes two CPUs running
  // driver and device at the same time (threads taking turns on one CPU never see each other's
  // stores reordered), so runVariant pins them to two CPUs; where it cannot, or on another
  // architecture than the one measured, the test is skipped. On x64, V8 compiles the
  // library's ordered index store (an Atomics.store) to xchg, itself a full fence that would
  // hide a missing barrier: attrs-no-full stores the indices plainly (NoFullBarrierContext in
  // examples/virtio/queue-ring.mjs), and so does the control, which keeps the library's full
  // barriers: a SplitVirtqueue that lost one would fail the control. Measured on x64 (2
  // cores, Linux, loaded by other work): eight 1.5 s runs of attrs-no-full lost 0, 0, 1, 1, 4,
  // 4, 6 and 29 notifications, so up to six runs (all six losing none: about 1 in 4,000);
  // six control runs lost none.
  it.runIf(process.arch === 'x64')(
    'loses notifications without the full barrier and recovers: attrs-no-full (SplitVirtqueue), pinned',
    async (context) => {
      for (let attempt = 1; attempt <= 6; attempt++) {
        const result = await virtqueue.runVariant({ variant: 'attrs-no-full', durationMs: 1500 });
        console.log(`virtio attrs-no-full, run ${attempt}:`, result);
        if (!result.pinned) context.skip('driver and device could not be pinned to two CPUs');
        expect(result.ring).toBe('SplitVirtqueue');
        expect(result.unfinished).toBe(0);
        expect(result.corrupted).toBe(0);
        if (result.lostNotifications >= 1 && result.packetsAfterFirstLoss > 1000) return;
      }
      expect.fail('attrs-no-full lost no notification (then recovered) in six 1.5 s runs');
    },
    30_000,
  );

  it.runIf(process.arch === 'x64')(
    "loses none with SplitVirtqueue's full barriers and the same plain index stores: attrs, pinned (the control)",
    async (context) => {
      const result = await virtqueue.runVariant({
        variant: 'attrs',
        plainIndexStores: true,
        durationMs: 1500,
      });
      console.log('virtio attrs with plain index stores:', result);
      if (!result.pinned) context.skip('driver and device could not be pinned to two CPUs');
      expect(result.ring).toBe('SplitVirtqueue');
      expect(result.packets).toBeGreaterThan(1000);
      expect(result.lostNotifications).toBe(0);
      expect(result.corrupted).toBe(0);
      expect(result.unfinished).toBe(0);
    },
  );

  // A dropped notification stalls the other side only when it was asleep waiting for it;
  // one the other side did not need (it found the work on its own re-check) is harmless. Five
  // of each make a stall all but certain; every stall must be counted and recovered.
  it('counts dropped kicks and interrupts that stall the other side, and recovers', async () => {
    const result = await virtqueue.runVariant({
      variant: 'attrs',
      durationMs: 1500,
      dropKicks: 5,
      dropInterrupts: 5,
    });
    console.log('virtio attrs with dropped kicks and interrupts:', result);
    expect(result.droppedKicks).toBe(5);
    expect(result.droppedInterrupts).toBe(5);
    expect(result.lostNotifications).toBeGreaterThanOrEqual(1);
    expect(result.lostKicks).toBeLessThanOrEqual(5);
    expect(result.lostInterrupts).toBeLessThanOrEqual(5);
    expect(result.corrupted).toBe(0);
    expect(result.unfinished).toBe(0);
    // Recovered: packets kept flowing after the first loss.
    expect(result.packetsAfterFirstLoss).toBeGreaterThan(1000);
  });
});
