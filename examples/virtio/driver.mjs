/**
 * The driver worker of the virtio demo in Node (started by `runVariant` in virtqueue.mjs): the
 * guest's loop is driver-loop.mjs; this wrapper pins the thread, says it is ready, runs the
 * loop and posts its counts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from 'dma-attrs';
import { runDriver } from './driver-loop.mjs';
import { pinThisThread } from './pin.mjs';

const memory = GuestMemory.fromHandle(workerData.handle);
const pinned = pinThisThread(workerData.cpu);
parentPort.postMessage({ ready: true });
const counts = runDriver({ ...workerData, memory });
parentPort.postMessage({ ...counts, pinned });
