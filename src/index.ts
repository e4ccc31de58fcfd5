/**
 * dma-attrs: DMA into shared guest memory for JavaScript emulators, with one set of
 * accessors whose ordering barrier follows from READ / WRITE / RELAXED attributes.
 *
 * @packageDocumentation
 * @module dma-attrs
 */
export {
  DMAAttributes,
  DMAFlagsSchema,
  formatAttributes,
  parseAttributes,
  toAttributes,
  toFlags,
  type DMAAttributesLike,
  type DMAFlags,
} from './attributes.js';
export {
  barrierFor,
  resolveBarrierPolicy,
  type BarrierPolicy,
  type BarrierStrength,
} from './barrier.js';
export {
  DMAContext,
  type DMAContextOptions,
  type DMATrace,
  type DMATraceEvent,
  type DMATraceOp,
} from './context.js';
export {
  DMAError,
  DMAFault,
  type DMAErrorCode,
  type DMAFaultAccess,
  type DMAFaultReason,
} from './errors.js';
export {
  IommuDomain,
  type IommuDomainHandle,
  type IommuDomainHandleOptions,
  type IommuDomainOptions,
  type IommuFault,
  type IommuFaultListener,
  type IommuTranslation,
} from './iommu.js';
export { DirtyLog, type DirtyLogOptions } from './dirty.js';
export {
  GuestMemory,
  type FenceLocation,
  type GuestMemoryBacking,
  type GuestMemoryHandle,
  type GuestMemoryOptions,
  type GuestMemoryRegion,
  type WebAssemblyMemory,
} from './memory.js';
export { ScatterGatherList } from './sglist.js';
