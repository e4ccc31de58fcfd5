/**
 * The virtio demo (examples/virtio/): a split virtqueue with event-index notification
 * suppression, driver and device in two workers on one shared guest memory. The workers
 * import the built package (`dma-attrs`), which `npm test` builds before vitest runs.
 */
import { existsSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';

interface VariantResult {
  variant: string;
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
}

const RUN_MS = 2500;
let virtqueue: VirtqueueModule;

beforeAll(async () => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the virtio demo imports the built package: run `npx tsup` first');
  }
  const url = new URL('../examples/virtio/virtqueue.mjs', import.meta.url).href;
  virtqueue = (await import(url)) as VirtqueueModule;
});

describe('the virtio demo', () => {
  for (const variant of ['attrs', 'legacy']) {
    it(`moves packets with no lost notification and no corrupted payload: ${variant}`, async () => {
      const result = await virtqueue.runVariant({ variant, durationMs: RUN_MS });
      console.log(`virtio ${variant}:`, result);
      expect(result.packets).toBeGreaterThan(1000);
      expect(result.lostNotifications).toBe(0);
      expect(result.corrupted).toBe(0);
      expect(result.unfinished).toBe(0);
      expect(result.packetsPerSecond).toBeGreaterThan(0);
      expect(result.packetsPerCpuSecond).toBeGreaterThan(0);
    });
  }

  // The bug the demo exists for: without barrier('full') between publishing an index and
  // reading the other side's event index, notifications are lost. It takes two CPUs running
  // driver and device at the same time (threads taking turns on one CPU never see each other's
  // stores reordered), so runVariant pins them to two CPUs; where it cannot, or on another
  // architecture than the one measured, the test is skipped. Measured on x64 (2 cores, Linux,
  // loaded by other builds): 25 consecutive 1.5 s runs all lost notifications, 9 to 184 each.
  it.runIf(process.arch === 'x64')(
    'loses notifications without the full barrier and recovers: attrs-no-full',
    async (context) => {
      // A race, so up to four runs: the first that loses a notification and then carries on
      // settles it (in the runs measured, every run did).
      for (let attempt = 1; attempt <= 4; attempt++) {
        const result = await virtqueue.runVariant({ variant: 'attrs-no-full', durationMs: 1500 });
        console.log(`virtio attrs-no-full, run ${attempt}:`, result);
        if (!result.pinned) context.skip('driver and device could not be pinned to two CPUs');
        expect(result.unfinished).toBe(0);
        expect(result.corrupted).toBe(0);
        if (result.lostNotifications >= 1 && result.packetsAfterFirstLoss > 1000) return;
      }
      expect.fail('attrs-no-full lost no notification (then recovered) in four 1.5 s runs');
    },
    30_000,
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
