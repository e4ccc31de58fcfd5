/**
 * One of several threads for test/iommu-bypass.test.ts that wait together on an IOMMU table
 * lock whose holder died: it attaches to the domain, says it is ready, waits for the start
 * signal, then unmaps its own page and reports how many bytes the unmap removed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { IommuDomain } from '../../dist/index.js';

const domain = IommuDomain.fromHandle(workerData.domain);
const go = new Int32Array(workerData.go);
parentPort.postMessage('ready');
Atomics.wait(go, 0, 0);
try {
  parentPort.postMessage({ removed: domain.unmap(workerData.iova, workerData.size) });
} catch (error) {
  parentPort.postMessage({ error: String(error) });
}
