/**
 * A device thread for test/iommu-bypass.test.ts: it overflows its stack inside IOTLB-hit
 * accesses 100 times (some of the RangeErrors land between the IOMMU's enter and leave),
 * reports, then, once the main thread has unmapped the page and says 'again', tries 64 more
 * writes to the old IOVA and reports the code of each.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DMAContext, DMAError, GuestMemory, IommuDomain } from '../../dist/index.js';

const { iova } = workerData;
const ctx = new DMAContext(GuestMemory.fromHandle(workerData.memory), {
  iommu: IommuDomain.fromHandle(workerData.domain),
});
const data = Uint8Array.of(1, 2, 3, 4);

let overflows = 0;
for (let pad = 0; pad < 100; pad++) {
  const recurse = (depth) => {
    ctx.write(iova + (depth % 64), data);
    return recurse(depth + 1) + pad;
  };
  try {
    recurse(pad);
  } catch (error) {
    if (error instanceof RangeError) overflows++;
  }
}
// Leave the page as the test expects it: the pattern at its start.
ctx.write(iova, data);
parentPort.postMessage({ overflows });

parentPort.once('message', () => {
  const codes = [];
  for (let attempt = 0; attempt < 64; attempt++) {
    try {
      ctx.write(iova + attempt, data);
      codes.push('no fault');
    } catch (error) {
      codes.push(error instanceof DMAError ? error.code : String(error));
    }
  }
  parentPort.postMessage({ codes });
});
