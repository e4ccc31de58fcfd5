/**
 * The layout of an IOMMU domain's shared buffer and the IOTLB's size, as literal constants
 * in a module that imports nothing, so that the build inlines them into the IOMMU's hot
 * paths (see `src/internal/bits.ts`).
 *
 * @internal
 * @module
 */

// Layout of the shared buffer, in 32-bit words for the header and slots.
/** The word of the table lock (0 free, else the holder's owner id). */
export const LOCK = 0;
/** The word of the unmap generation, bumped by every `unmap`. */
export const GENERATION = 1;
/** The word holding the number of mappings in the table. */
export const COUNT = 2;
/** A counter that spreads the domain objects' preferred slots. */
export const NEXT_HINT = 3;
/** A counter that gives each domain object its own non-zero id for the table lock. */
export const NEXT_OWNER = 4;
/** The header's length in words; the slots follow it. */
export const HEADER_WORDS = 16;
/**
 * Accesses that can be in flight at once, across all threads. A slot is held only for the
 * duration of one access, never by a thread: a thread that ends, however it ends, holds
 * none unless it died inside an access.
 */
export const SLOTS = 256;
/** What a slot holds outside an access. */
export const SLOT_FREE = 0;
/**
 * A slot given up on by `unmap` after the stall limit: its access belongs to a thread that
 * died inside it. Taken again only when no slot is free, in case the thread was merely
 * stalled and still writes FREE when it leaves.
 */
export const SLOT_ABANDONED = -1;
/**
 * A slot in an access holds `(generation & GENERATION_MASK) + 1`: never FREE or ABANDONED,
 * and compared modulo 2^30 so that the generation counter may wrap.
 */
export const GENERATION_MASK = 0x3fffffff;
/** Half the generation space: an age below it is in the past. */
export const GENERATION_HALF = 0x20000000;
/** How long `unmap` and the table lock wait for a thread before taking it for dead. */
export const STALL_MS = 1000;
/** Direct-mapped IOTLB entries per thread. */
export const TLB_SIZE = 64;
