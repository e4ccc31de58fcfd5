/**
 * The vCPU of the wasm tests (test/wasm-vcpu.test.ts): instantiates the module the test
 * compiled from its text format on the shared `WebAssembly.Memory` it was given, calls one
 * export with the given arguments and posts what it returned. The export runs the whole
 * litmus side in wasm, its waits included (they give up and return a negative number when
 * the device makes no progress), so nothing here orders or observes the accesses under test.
 */
/* global WebAssembly */
import { parentPort, workerData } from 'node:worker_threads';

const { bytes, memory, entry, args } = workerData;
if (!(memory instanceof WebAssembly.Memory)) {
  throw new Error('wasm-vcpu: workerData.memory is not a WebAssembly.Memory');
}
const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { mem: memory } });
const run = instance.exports[entry];
if (typeof run !== 'function') throw new Error(`wasm-vcpu: the module exports no ${entry}`);

const started = performance.now();
const result = run(...args);
parentPort.postMessage({ entry, result, milliseconds: performance.now() - started });
