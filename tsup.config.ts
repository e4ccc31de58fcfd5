import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    legacy: 'src/legacy.ts',
    codemod: 'src/codemod/index.ts',
    cli: 'src/cli.ts',
    // Started by `dma-attrs litmus` as new URL('./litmus-worker.js', import.meta.url).
    'litmus-worker': 'src/litmus/worker.ts',
  },
  format: ['esm', 'cjs'],
  dts: { compilerOptions: { stripInternal: true } },
  splitting: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  treeshake: true,
  // `import.meta.url` (the codemod's lazy `typescript` require) in the CommonJS output.
  shims: true,
  // The compiler API stays an optional peer dependency, loaded at run time only.
  external: ['typescript'],
});
