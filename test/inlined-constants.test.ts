/**
 * The constants that the hot paths compare with are inlined by the build (see
 * `src/internal/bits.ts` and docs/performance.md, "Constants the build inlines"). A bundled
 * module constant that is not inlined is a `var`, which V8 loads and checks on every use:
 * the fixed-width accessors once spent most of their time on that. esbuild inlines only
 * with `minifySyntax` and only the constants of a module that imports nothing, so both are
 * pinned here, on the dist/ that `npm test` builds before vitest runs.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;
const MODULES = ['src/internal/bits.ts', 'src/internal/iommu-layout.ts'];
const NAMES =
  /\b(READ|WRITE|BIDIRECTIONAL|RELAXED|NONE|ACQUIRE|RELEASE|FULL|LOCK|GENERATION|GENERATION_MASK|GENERATION_HALF|COUNT|HEADER_WORDS|SLOTS|SLOT_FREE|SLOT_ABANDONED|TLB_SIZE)\d* = -?(0x)?\d/g;

describe('constants the build inlines', () => {
  it.each(MODULES)(
    '%s imports nothing (esbuild inlines no constant of a module that does)',
    (file) => {
      const text = readFileSync(join(root, file), 'utf8');
      expect(text.match(/^\s*(import|export\s+\*|export\s+\{[^}]*\}\s+from)\b/gm) ?? []).toEqual(
        [],
      );
    },
  );

  it('leaves no declaration of those constants in the built library (they were inlined)', () => {
    const dist = join(root, 'dist');
    expect(existsSync(dist), 'dist/ is missing: run `npx tsup` first').toBe(true);
    const files = readdirSync(dist).filter((name) => /\.(c?js)$/.test(name));
    expect(files.length).toBeGreaterThan(0);
    const declared = files.flatMap((name) =>
      [...readFileSync(join(dist, name), 'utf8').matchAll(NAMES)].map(
        (match) => `${name}: ${match[0]}`,
      ),
    );
    expect(declared).toEqual([]);
  });

  it('the built context compares attributes with immediates, not module variables', () => {
    const dist = join(root, 'dist');
    const chunk = readdirSync(dist)
      .filter((name) => name.endsWith('.js'))
      .map((name) => readFileSync(join(dist, name), 'utf8'))
      .find((text) => text.includes('function impliedBits('));
    expect(chunk, 'no built chunk defines impliedBits').toBeDefined();
    const body = /function impliedBits\([^)]*\) \{[\s\S]*?\n\}/.exec(chunk ?? '')?.[0] ?? '';
    expect(body).toContain('(implied | 4)');
  });
});
