/* global self */
/**
 * A module worker of the browser test page: attaches to the page's guest memory (and IOMMU
 * domain) from their handles, runs the accessors and the permission fault, and posts the
 * reports back.
 */
import { GuestMemory, IommuDomain } from 'dma-attrs';
import { exerciseAccessors, exercisePermissionFault } from './checks.mjs';

self.onmessage = ({ data }) => {
  try {
    const memory = GuestMemory.fromHandle(data.memory);
    const report = { crossOriginIsolated: self.crossOriginIsolated };
    if (data.job === 'accessors') report.accessors = exerciseAccessors(memory, data.base);
    else
      report.fault = exercisePermissionFault(
        memory,
        IommuDomain.fromHandle(data.domain),
        data.iova,
      );
    self.postMessage(report);
  } catch (error) {
    self.postMessage({ error: String(error?.stack ?? error) });
  }
};
