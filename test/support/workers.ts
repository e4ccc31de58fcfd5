/**
 * What the worker tests share: starting workers that the test file stops after each test
 * (a failed or timed-out test would otherwise leave them spinning), and a timeout for any
 * promise. Register with `stopWorkersAfterEach()` once per file or describe block.
 */
import { Worker } from 'node:worker_threads';
import { afterEach, expect } from 'vitest';

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

/** What every peer worker's reply carries (test/workers/serve.mjs answers in this shape). */
export interface PeerReply {
  readonly id: number;
  readonly ok: boolean;
  readonly message?: string;
}

/**
 * A worker that answers one request per message, `{ ...request, id }` → `{ id, ok, ... }`
 * (test/workers/serve.mjs). Every request is bounded by `waitMs`, and fails at once if the
 * worker fails.
 */
export class Peer<Reply extends PeerReply> {
  readonly worker: Worker;
  #next = 0;
  readonly #waiting = new Map<number, (reply: Reply) => void>();
  readonly #failed: Promise<never>;
  readonly #waitMs: number;

  constructor(file: string, waitMs: number) {
    this.worker = startWorker(file);
    this.#waitMs = waitMs;
    this.worker.on('message', (reply: Reply) => {
      this.#waiting.get(reply.id)?.(reply);
      this.#waiting.delete(reply.id);
    });
    this.#failed = new Promise<never>((_resolve, reject) => {
      this.worker.once('error', reject);
    });
    // Only a request can observe the failure; keep an unobserved one from being unhandled.
    this.#failed.catch(() => undefined);
  }

  request(message: Record<string, unknown>): Promise<Reply> {
    const id = this.#next++;
    const reply = new Promise<Reply>((resolve) => {
      this.#waiting.set(id, resolve);
    });
    this.worker.postMessage({ ...message, id });
    return bounded(
      Promise.race([reply, this.#failed]),
      this.#waitMs,
      `the worker's ${String(message.op)}`,
    );
  }

  /** Runs a request that must succeed, and returns its reply. */
  async ok(message: Record<string, unknown>): Promise<Reply> {
    const reply = await this.request(message);
    expect(reply, `${String(message.op)}: ${reply.message ?? ''}`).toMatchObject({ ok: true });
    return reply;
  }
}
