/**
 * The attribute bits and the numeric barrier strengths as literal constants, for the
 * library's own code.
 *
 * `DMAAttributes` is an object, so a module that destructures it at load time holds its
 * bits in module variables, and V8 loads and checks each of them on every use: a bundler
 * turns a top-level `const` into a `var`, which V8 cannot treat as a constant. Literal
 * constants are inlined by the build (tsup's `minifySyntax`, see `tsup.config.ts`), so the
 * hot paths compare with immediates. esbuild inlines only the constants of a module that
 * imports nothing, which is why these are here, in a module that imports nothing (see
 * `docs/performance.md`, "Constants the build inlines").
 *
 * @internal
 * @module
 */

/** The device reads guest memory. */
export const READ = 0b0001;
/** The device writes guest memory. */
export const WRITE = 0b0010;
/** Both directions. */
export const BIDIRECTIONAL = 0b0011;
/** No ordering barrier. */
export const RELAXED = 0b0100;

/** Numeric barrier strengths, so that the hot path compares small integers. */
export const NONE = 0;
/** @see {@link NONE} */
export const ACQUIRE = 1;
/** @see {@link NONE} */
export const RELEASE = 2;
/** @see {@link NONE} */
export const FULL = 3;
