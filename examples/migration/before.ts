// A virtio-style used-ring update written against the 1.x API (dma-attrs/legacy).
import {
  DMADirection,
  dmaBarrier,
  dmaMemoryMap,
  dmaMemoryRead,
  dmaMemoryRw,
  dmaMemoryUnmap,
  dmaMemoryWrite,
} from 'dma-attrs/legacy';
import type { DMAContext } from 'dma-attrs';

/** Copies one request's payload out of guest memory and completes it. */
export function complete(
  dma: DMAContext,
  descriptor: number,
  usedRing: number,
  dir: DMADirection,
): number {
  const header = new Uint8Array(16);
  dmaMemoryRead(dma, descriptor, header, header.length); // the request header
  const payload = new Uint8Array(64);
  dmaMemoryRw(dma, descriptor + 16, payload, header[0] ?? 0, dir);

  // Publish the used element, then check whether the driver wants a notification:
  // a store followed by a load, which only a full barrier orders.
  dmaMemoryWrite(dma, usedRing, Uint8Array.of(1, 0, 0, 0), 4);
  dmaBarrier(dma, DMADirection.FROM_DEVICE);
  const flags = dmaMemoryMap(dma, usedRing + 4, 2, DMADirection.TO_DEVICE);
  const suppressed = flags[0] ?? 0;
  dmaMemoryUnmap(dma, flags, 2, DMADirection.TO_DEVICE, 2);
  return suppressed;
}
