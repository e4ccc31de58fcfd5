/**
 * What the worker tests share: starting workers that the test file stops after each test
 * (a failed or timed-out test would otherwise leave them spinning), and a timeout for any
 * promise. Register with `stopWorkersAfterEach()` once per file or describe block.
 */
import { Worker } from 'node:worker_threads';
import { afterEach } from 'vitest';

const live = new Set<Worker>();

/** Starts `test/workers/<file>` with `workerData`; it is terminated after the current test. */
export function startWorker(file: string, workerData?: Record<string, unknown>): Worker {
  const worker = new Worker(new URL(`../workers/${file}`, import.meta.url), { workerData });
  live.add(worker);
  worker.once('exit', () => live.delete(worker));
  return worker;
}

/** Terminates, after each test, every worker {@link startWorker} started. */
export function stopWorkersAfterEach(): void {
  afterEach(async () => {
    await Promise.all([...live].map((worker) => worker.terminate()));
    live.clear();
  });
}

/** Rejects with `what` after `ms`, unless `promise` settles first. */
export function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => {
    clearTimeout(timer);
  });
}
