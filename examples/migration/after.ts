// A virtio-style used-ring update written against the 1.x API (dma-attrs/legacy).
import { DMAAttributes } from 'dma-attrs';
import type { DMAContext } from 'dma-attrs';

/** Copies one request's payload out of guest memory and completes it. */
export function complete(
  dma: DMAContext,
  descriptor: number,
  usedRing: number,
  dir: DMAAttributes,
): number {
  const header = new Uint8Array(16);
  dma.read(descriptor, header); // the request header
  const payload = new Uint8Array(64);
  dma.rw(descriptor + 16, payload.subarray(0, header[0] ?? 0), dir);

  // Publish the used element, then check whether the driver wants a notification:
  // a store followed by a load, which only a full barrier orders.
  dma.write(usedRing, Uint8Array.of(1, 0, 0, 0).subarray(0, 4));
  dma.barrier('full');
  const flags = dma.map(usedRing + 4, 2, DMAAttributes.READ);
  const suppressed = flags[0] ?? 0;
  dma.unmap(flags, 2);
  return suppressed;
}
