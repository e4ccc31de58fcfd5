/**
 * The one error family of the package. Programmer mistakes and guest-caused faults
 * share the class so that a caller can catch `DMAError` and switch on `code`.
 *
 * @module
 */

/**
 * The stable error codes, in Node's `ERR_*` style.
 *
 * - `ERR_DMA_INVALID_ATTRIBUTES`: an attribute number with a bit outside `0b0111`, a
 *   flag object with an unknown key or a non-boolean value, or a direction the accessor
 *   does not accept.
 * - `ERR_DMA_INVALID_ARGUMENT`: a programmer error: wrong type, a negative, fractional,
 *   NaN or unsafe number, a buffer that is not a `Uint8Array`, a value that does not fit.
 * - `ERR_DMA_UNASSIGNED`: the guest-physical range touches a hole between RAM regions.
 * - `ERR_DMA_IOMMU_UNMAPPED`: the IOVA range has no IOMMU mapping.
 * - `ERR_DMA_IOMMU_PERMISSION`: the mapping lacks the direction the access needs.
 * - `ERR_DMA_IOMMU_OVERLAP`: an IOMMU mapping was requested over an existing one.
 * - `ERR_DMA_VIRTQUEUE`: the guest broke a virtqueue (a descriptor loop, a `next` out of
 *   range, a bad indirect table, an `avail.idx` too far ahead); the message names the
 *   descriptor index.
 */
export type DMAErrorCode =
  | 'ERR_DMA_INVALID_ATTRIBUTES'
  | 'ERR_DMA_INVALID_ARGUMENT'
  | 'ERR_DMA_UNASSIGNED'
  | 'ERR_DMA_IOMMU_UNMAPPED'
  | 'ERR_DMA_IOMMU_PERMISSION'
  | 'ERR_DMA_IOMMU_OVERLAP'
  | 'ERR_DMA_VIRTQUEUE';

/**
 * Every error this package throws. `code` is stable across releases; the message names
 * the offending value and what was expected.
 *
 * @example
 * ```ts
 * try {
 *   ctx.read(addr, buf);
 * } catch (error) {
 *   if (error instanceof DMAError && error.code === 'ERR_DMA_UNASSIGNED') {
 *     // the guest programmed an address outside RAM
 *   }
 * }
 * ```
 */
export class DMAError extends Error {
  /** The stable code that says what kind of error this is. */
  readonly code: DMAErrorCode;

  /**
   * @param code - the stable error code.
   * @param message - what went wrong, naming the offending value.
   */
  constructor(code: DMAErrorCode, message: string) {
    super(message);
    this.code = code;
  }

  /** `'DMAError'`, so that stack traces and `util.inspect` name the class. */
  override get name(): string {
    return 'DMAError';
  }
}

/**
 * Why an IOMMU refused an access: no mapping at all, or a mapping without the needed
 * direction bit.
 */
export type DMAFaultReason = 'unmapped' | 'permission';

/** Which direction of an access an IOMMU refused. */
export type DMAFaultAccess = 'read' | 'write';

/**
 * A guest-caused fault: the device asked for a range that the guest did not give it
 * (a hole in RAM, an unmapped IOVA, a mapping without the needed direction). Such
 * faults are the device's business to report to the guest, not bugs in the device.
 */
export class DMAFault extends DMAError {
  /** The address of the refused access (an IOVA when an IOMMU is in use). */
  readonly addr: number;
  /** The length in bytes of the refused access. */
  readonly length: number;
  /** The attributes of the refused access, as a number. */
  readonly attrs: number;
  /** For IOMMU faults, why the IOMMU refused the access. */
  readonly reason: DMAFaultReason | undefined;
  /** For IOMMU permission faults, which direction was refused. */
  readonly access: DMAFaultAccess | undefined;

  /**
   * @param code - the stable error code.
   * @param message - what went wrong.
   * @param addr - the address of the access.
   * @param length - the length of the access.
   * @param attrs - the attributes of the access.
   * @param reason - for IOMMU faults, why it was refused.
   * @param access - for IOMMU permission faults, which direction was refused.
   */
  constructor(
    code: DMAErrorCode,
    message: string,
    addr: number,
    length: number,
    attrs: number,
    reason?: DMAFaultReason,
    access?: DMAFaultAccess,
  ) {
    super(code, message);
    this.addr = addr;
    this.length = length;
    this.attrs = attrs;
    this.reason = reason;
    this.access = access;
  }

  /** `'DMAFault'`, so that stack traces and `util.inspect` name the class. */
  override get name(): string {
    return 'DMAFault';
  }
}
