/**
 * One side of the store-buffering litmus test. Side 0 stores 1 to x[i] and loads y[i];
 * side 1 stores 1 to y[i] and loads x[i]; both optionally call `barrier('full')` in
 * between. Each iteration uses fresh slots (all zero), and the two sides meet at a
 * rendezvous before every iteration so that they really run it at the same time. The load
 * results go to `outcomes` (side 0 at [0, n), side 1 at [n, 2n)) for the test to tally.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAAttributes, DMAContext, GuestMemory } from '../../dist/index.js';
import { advance, waitAtLeast } from './litmus-sync.mjs';

const { handle, rendezvous, outcomes, side, iterations, xBase, yBase, fence } = workerData;
const ctx = new DMAContext(GuestMemory.fromHandle(handle));
const cell = new Int32Array(rendezvous);
const loaded = new Uint8Array(outcomes);
const { RELAXED } = DMAAttributes;
const storeBase = side === 0 ? xBase : yBase;
const loadBase = side === 0 ? yBase : xBase;
const resultBase = side * iterations;

const started = performance.now();
for (let i = 0; i < iterations; i++) {
  // Meeting every iteration (not every few) keeps the two sides within a cache-line
  // transfer of each other; measured on x64, meeting every 16th iteration lets them drift
  // apart until the unfenced (0,0) outcome all but disappears.
  advance(cell, 1);
  waitAtLeast(cell, 2 * (i + 1));
  ctx.writeU32LE(storeBase + 4 * i, 1, RELAXED);
  if (fence) ctx.barrier('full');
  loaded[resultBase + i] = ctx.readU32LE(loadBase + 4 * i, RELAXED);
}
parentPort.postMessage({ side, milliseconds: performance.now() - started });
