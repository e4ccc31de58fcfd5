import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    legacy: 'src/legacy.ts',
    virtio: 'src/virtio/index.ts',
    codemod: 'src/codemod/index.ts',
    cli: 'src/cli.ts',
    // Started by `dma-attrs litmus` as new URL('./litmus-worker.js', import.meta.url).
    'litmus-worker': 'src/litmus/worker.ts',
    // The command-line parser, for bench/index.mjs (beside dist/ in the package); not exported.
    args: 'src/internal/args.ts',
  },
  format: ['esm', 'cjs'],
  dts: { compilerOptions: { stripInternal: true } },
  splitting: true,
  sourcemap: true,
  // `npm run build` empties dist first, for a build without stale chunks; `npx tsup` alone
  // rebuilds in place, so that a rebuild never pulls files from under running workers.
  clean: false,
  target: 'es2022',
  treeshake: true,
  // Inlines the literal constants of the import-free modules (src/internal/bits.ts,
  // src/internal/iommu-layout.ts) into the others: a bundled top-level `const` becomes a
  // `var`, which V8 loads and checks on every use, in the accessors' hot paths too. Names,
  // comments and whitespace stay as written.
  esbuildOptions(options) {
    options.minifySyntax = true;
  },
  // `import.meta.url` (the codemod's lazy `typescript` require) in the CommonJS output.
  shims: true,
  // The compiler API stays an optional peer dependency, loaded at run time only.
  external: ['typescript'],
});
