/**
 * `dma-attrs/codemod`: migrates code from `dma-attrs/legacy` (the 2012-shaped API) to the
 * attributes API. {@link migrateSource} transforms one text; {@link migrateFiles} walks paths;
 * {@link runMigrate} is the `dma-attrs migrate` command. Needs the `typescript` package.
 *
 * @packageDocumentation
 * @module dma-attrs/codemod
 */
export { runMigrate, type CliIo } from './cli.js';
export { unifiedDiff } from './diff.js';
export { migrateFiles, type MigrateFilesOptions } from './files.js';
export type {
  FileError,
  MigrateOptions,
  MigrateResult,
  MigrationReport,
  ReviewSite,
  StrengthenedSite,
  WeakenedSite,
  WeakenedStrength,
} from './report.js';
export { migrateSource } from './transform.js';
