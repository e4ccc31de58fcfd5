/**
 * The device of the web demo, in a module Web Worker. main.mjs posts it the guest
 * memory's handle and the doorbell; it runs the loop of the Node demo
 * (examples/virtio/device-loop.mjs), posting its counts every 100 ms while it runs and once at
 * the end.
 */
/* global self */
import { GuestMemory } from 'dma-attrs';
import { runDevice } from '../virtio/device-loop.mjs';

self.onmessage = ({ data }) => {
  const memory = GuestMemory.fromHandle(data.handle);
  self.postMessage({ ready: true });
  const counts = runDevice({
    ...data,
    memory,
    report: (progress) => self.postMessage({ progress }),
  });
  self.postMessage({ counts });
};
