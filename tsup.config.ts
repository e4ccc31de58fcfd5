import { defineConfig } from 'tsup';

export default defineConfig([
  // The library entries: ESM and CommonJS with declarations. `splitting` puts shared modules
  // (DMAError above all) in one chunk per format, so every entry throws the same class.
  {
    entry: {
      index: 'src/index.ts',
      legacy: 'src/legacy.ts',
    },
    format: ['esm', 'cjs'],
    dts: { compilerOptions: { stripInternal: true } },
    splitting: true,
    sourcemap: true,
    clean: false,
    target: 'es2022',
    treeshake: true,
    shims: true,
  },
  // Programs, not libraries: the `dma-attrs` bin and the worker scripts it starts. ESM only,
  // no declarations; they import the library entries above rather than bundling a copy.
  {
    entry: {
      cli: 'src/cli.ts',
    },
    format: ['esm'],
    dts: false,
    splitting: false,
    sourcemap: true,
    clean: false,
    target: 'es2022',
    external: ['dma-attrs', 'typescript'],
  },
]);
