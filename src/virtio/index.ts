/**
 * `dma-attrs/virtio`: the device side of a split virtqueue, on top of the DMA context.
 *
 * @packageDocumentation
 * @module dma-attrs/virtio
 */
export { SplitVirtqueue, type SplitVirtqueueHandle, type SplitVirtqueueOptions } from './queue.js';
export { DescriptorChain, type VirtqDescriptor } from './chain.js';
export {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
} from './constants.js';
