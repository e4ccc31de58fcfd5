import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', legacy: 'src/legacy.ts' },
  format: ['esm', 'cjs'],
  dts: { compilerOptions: { stripInternal: true } },
  splitting: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  treeshake: true,
});
