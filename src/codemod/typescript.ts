/**
 * Loads the TypeScript compiler on first use. `typescript` is an optional peer dependency:
 * only the codemod needs it, so importing `dma-attrs` never pays for it.
 *
 * @module
 */
import { createRequire } from 'node:module';
import type * as TS from 'typescript';

/** The TypeScript compiler API, as the `typescript` package exports it. */
export type TypeScript = typeof TS;

let cached: TypeScript | undefined;

/**
 * The `typescript` package, resolved from this module (and so from the user's project,
 * where npm installs peer dependencies).
 *
 * @returns the compiler API.
 * @throws Error with an install hint when `typescript` is not installed.
 */
export function loadTypeScript(): TypeScript {
  if (cached !== undefined) return cached;
  try {
    cached = createRequire(import.meta.url)('typescript') as TypeScript;
  } catch (cause) {
    throw new Error("dma-attrs migrate needs the 'typescript' package: npm i -D typescript", {
      cause,
    });
  }
  return cached;
}
