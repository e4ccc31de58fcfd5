/**
 * The control words shared by test/iommu-workers.test.ts and test/workers/iommu-dma-loop.mjs:
 * an Int32Array over a SharedArrayBuffer of its own, outside guest memory. Each worker's
 * words sit on a cache line of their own, so that one worker's BUSY stores do not slow the
 * other's flag loads.
 */

/** The round the main thread has opened; a negative value tells the workers to stop. */
export const ROUND = 0;
/** The last round whose page the main thread has unmapped (and covered with its canary). */
export const UNMAPPED = 1;
/** Nonzero (the worker's index + 1) when a worker stopped on an unexpected error. */
export const ERROR = 2;
/** Always 0: the main thread sleeps on it. */
export const IDLE = 3;

/** Per worker: the last round in which it had a successful access. */
export const STARTED = 0;
/** Per worker: the last round it finished. */
export const DONE = 1;
/** Per worker: 1 while it is inside an access. */
export const BUSY = 2;

const WORDS_PER_LINE = 16;

/**
 * The index of a per-worker word.
 * @param {number} worker
 * @param {number} field
 * @returns {number}
 */
export function workerWord(worker, field) {
  return WORDS_PER_LINE * (worker + 1) + field;
}

/**
 * The byte size of the control buffer for this many workers.
 * @param {number} workers
 * @returns {number}
 */
export function controlBytes(workers) {
  return WORDS_PER_LINE * (workers + 1) * 4;
}
