/**
 * The virtio 1.2 values a split virtqueue's device side needs (§2.7, §6).
 *
 * @module
 */

/** Descriptor flag: the chain continues at `next` (virtio 1.2 §2.7.5). */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the device writes this buffer (otherwise it reads it). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of descriptors (§2.7.5.3). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** Feature bit: the driver may use indirect descriptor tables. */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** Feature bit: `used_event` / `avail_event` suppress notifications (§2.7.7, §2.7.10). */
export const VIRTIO_F_EVENT_IDX = 29;

/** `avail.flags`: the driver asks for no interrupt (without EVENT_IDX). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** `used.flags`: the device asks for no kick (without EVENT_IDX). */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Bytes of one descriptor: `{ addr: u64, len: u32, flags: u16, next: u16 }`. */
export const VIRTQ_DESC_SIZE = 16;
/** The largest queue size virtio allows. */
export const VIRTQ_MAX_SIZE = 32768;
