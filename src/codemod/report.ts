/**
 * The shapes of the codemod's options and report (SPEC §9 `--json`), with two extensions:
 * `WeakenedSite.to` may be `'acquire-or-release'`, and `strengthened` lists the sites whose
 * barrier became stronger.
 *
 * @module
 */

/** Options of {@link migrateSource}. */
export interface MigrateOptions {
  /** The file's name: picks the parser (by extension) and names the file in the report. */
  fileName: string;
  /** Emit flag objects (`{ read: true, relaxed: true }`) instead of bit expressions. */
  flags?: boolean;
  /**
   * Keep the 2012 barriers exactly: an explicit `dma.barrier('full')` before each access that
   * had one, the access itself RELAXED, and RELAXED maps.
   */
  preserveFullBarriers?: boolean;
}

/** A site left unchanged for a human to migrate. */
export interface ReviewSite {
  /** The file, as given. */
  file: string;
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
  /** Why it was not rewritten. */
  reason: string;
}

/**
 * The strength a weakened site now has. `'acquire-or-release'` (an extension of SPEC §9) is a
 * `rw` whose direction is only known at run time.
 */
export type WeakenedStrength = 'acquire' | 'release' | 'acquire-or-release';

/** A site whose full barrier became acquire or release: where a store→load order may be lost. */
export interface WeakenedSite {
  /** The file, as given. */
  file: string;
  /** 1-based line of the legacy call. */
  line: number;
  /** 1-based column of the legacy call. */
  column: number;
  /** The legacy barrier: always `'full'`. */
  from: 'full';
  /** The new barrier. */
  to: WeakenedStrength;
}

/**
 * A site that had no barrier and may now have one (an extension of SPEC §9): `map` for READ now
 * issues an acquire barrier after mapping, and `unmap` of a view mapped for WRITE a release
 * barrier before releasing. Only ordering is added, but the trace changes.
 */
export interface StrengthenedSite {
  /** The file, as given. */
  file: string;
  /** 1-based line of the legacy call. */
  line: number;
  /** 1-based column of the legacy call. */
  column: number;
  /** The legacy barrier: always `'none'`. */
  from: 'none';
  /**
   * The new barrier: `'acquire'` for a READ map, `'release'` for an unmap (when the view was
   * mapped for WRITE), `'acquire-or-none'` for a map whose direction is only known at run time.
   */
  to: 'acquire' | 'release' | 'acquire-or-none';
}

/** A file the codemod could not process; it is left untouched. */
export interface FileError {
  /** The file, as given. */
  file: string;
  /** What went wrong. */
  message: string;
}

/** What {@link migrateSource} returns for one source text. */
export interface MigrateResult {
  /** The migrated text (the input itself when nothing changed or on error). */
  text: string;
  /** Whether `text` differs from the input. */
  changed: boolean;
  /** How many legacy sites were rewritten. */
  rewritten: number;
  /** Sites left unchanged for review. */
  review: ReviewSite[];
  /** Sites whose barrier became weaker. */
  weakened: WeakenedSite[];
  /** Sites whose barrier became stronger (extension). */
  strengthened: StrengthenedSite[];
  /** Why the file could not be migrated (a syntax error); empty on success. */
  errors: FileError[];
}

/** The report of a run over many files: SPEC §9's `--json` object plus `strengthened`. */
export interface MigrationReport {
  /** Files read. */
  filesScanned: number;
  /** Files whose text changed (written unless dry-run or check). */
  filesChanged: number;
  /** Legacy sites rewritten. */
  rewritten: number;
  /** Sites left unchanged for review. */
  review: ReviewSite[];
  /** Sites whose barrier became weaker. */
  weakened: WeakenedSite[];
  /** Sites whose barrier became stronger (extension). */
  strengthened: StrengthenedSite[];
  /** Files that could not be read, parsed or written. */
  errors: FileError[];
}
