/**
 * Run by test/no-shared-memory.test.ts in a Node started with
 * `--enable-sharedarraybuffer-per-context`, where `SharedArrayBuffer` does not exist, as on a browser
 * page that is not cross-origin isolated (SPEC §4.3). Prints one JSON line of what it saw.
 */
import { DMAAttributes, DMAContext, DMAError, GuestMemory, IommuDomain } from '../../dist/index.js';

const code = (f) => {
  try {
    f();
    return 'ok';
  } catch (error) {
    return error instanceof DMAError ? `${error.code}: ${error.message}` : `${error}`;
  }
};
const memory = new GuestMemory({ size: 8192, dirtyLog: { clients: ['code'] } });
const domain = new IommuDomain();
domain.map(0x10000, 0, 8192, DMAAttributes.BIDIRECTIONAL);
const ctx = new DMAContext(memory, { iommu: domain });
ctx.write(0x10000 + 4100, Uint8Array.of(7, 8, 9));
const back = new Uint8Array(3);
memory.read(4100, back);
let fault = 'none';
try {
  new DMAContext(memory, { iommu: domain }).read(0x30000, new Uint8Array(1));
} catch (error) {
  fault = error.code;
}
console.log(
  JSON.stringify({
    sharedArrayBuffer: typeof SharedArrayBuffer,
    shared: memory.shared,
    barrierFree: memory.fenceLocation === undefined,
    bytes: [...back],
    dirty: memory.dirtyLog('code').collect(),
    fault,
    memoryHandle: code(() => memory.handle()),
    domainHandle: code(() => domain.handle()),
    sharedAsked: code(() => new GuestMemory({ size: 64, shared: true })),
  }),
);
