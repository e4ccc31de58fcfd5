/**
 * Synchronisation for the litmus workers, kept off guest memory so that it never orders the
 * accesses under test. A cell is an Int32Array over its own SharedArrayBuffer:
 * `[value, sleepers]`. Waiters spin first (two workers on two cores meet within
 * nanoseconds, which is what makes them race), then sleep on the value, so that an
 * oversubscribed machine (vitest running other files beside us) still makes progress.
 */

const SPINS = 4096;
const SLEEP_MS = 20;

/** A new cell, to be passed to workers in `workerData`. */
export function makeCell() {
  return new Int32Array(new SharedArrayBuffer(8));
}

/** Adds `delta` to the cell and wakes a sleeping waiter. */
export function advance(cell, delta) {
  Atomics.add(cell, 0, delta);
  // A sleeper announces itself before it checks the value (both seq-cst), so either it
  // sees our add and does not sleep, or we see it here and wake it.
  if (Atomics.load(cell, 1) !== 0) Atomics.notify(cell, 0);
}

/** Stores `value` in the cell and wakes a sleeping waiter. */
export function publish(cell, value) {
  Atomics.store(cell, 0, value);
  if (Atomics.load(cell, 1) !== 0) Atomics.notify(cell, 0);
}

/** Returns once the cell's value is at least `target`; the value seen. */
export function waitAtLeast(cell, target) {
  let spins = 0;
  for (;;) {
    const seen = Atomics.load(cell, 0);
    if (seen >= target) return seen;
    if (++spins === SPINS) {
      spins = 0;
      Atomics.add(cell, 1, 1);
      Atomics.wait(cell, 0, seen, SLEEP_MS);
      Atomics.sub(cell, 1, 1);
    }
  }
}
