/**
 * One source text as the codemod sees it: parsed on its own (no lib, no imports resolved), with a
 * checker to follow symbols, and the sites found in it (for review, weakened, strengthened).
 *
 * @module
 */
import type * as TS from 'typescript';
import type { FileError, ReviewSite, StrengthenedSite, WeakenedSite } from './report.js';
import type { TypeScript } from './typescript.js';

/** A parsed source text. */
export interface Source {
  readonly ts: TypeScript;
  /** The original text: every edit is a range of it. */
  readonly text: string;
  /** The file's name as given, for the report. */
  readonly fileName: string;
  readonly sourceFile: TS.SourceFile;
  readonly checker: TS.TypeChecker;
}

function scriptKindOf(ts: TypeScript, fileName: string): TS.ScriptKind {
  const lower = fileName.toLowerCase();
  if (lower.endsWith('.tsx')) return ts.ScriptKind.TSX;
  if (lower.endsWith('.jsx')) return ts.ScriptKind.JSX;
  if (lower.endsWith('.js') || lower.endsWith('.mjs') || lower.endsWith('.cjs')) {
    return ts.ScriptKind.JS;
  }
  return ts.ScriptKind.TS;
}

function extensionOf(fileName: string): string {
  const match = /\.(?:d\.)?[mc]?[jt]sx?$/i.exec(fileName);
  return match === null ? '.ts' : match[0].toLowerCase();
}

/**
 * Parses a text as a program of one file, so that the checker resolves its local symbols.
 *
 * @returns the source, or the first syntax error as the file's error.
 */
export function parseSource(
  ts: TypeScript,
  text: string,
  fileName: string,
): { source: Source } | { error: FileError } {
  const virtualName = `/dma-attrs-migrate/input${extensionOf(fileName)}`;
  const sourceFile = ts.createSourceFile(
    virtualName,
    text,
    ts.ScriptTarget.Latest,
    true,
    scriptKindOf(ts, fileName),
  );
  const host: TS.CompilerHost = {
    getSourceFile: (name) => (name === virtualName ? sourceFile : undefined),
    getDefaultLibFileName: () => '/dma-attrs-migrate/lib.d.ts',
    writeFile: () => undefined,
    getCurrentDirectory: () => '/dma-attrs-migrate',
    getCanonicalFileName: (name) => name,
    useCaseSensitiveFileNames: () => true,
    getNewLine: () => '\n',
    fileExists: (name) => name === virtualName,
    readFile: () => undefined,
  };
  const program = ts.createProgram({
    rootNames: [virtualName],
    options: {
      noLib: true,
      noResolve: true,
      allowJs: true,
      checkJs: false,
      jsx: ts.JsxEmit.Preserve,
      target: ts.ScriptTarget.Latest,
      module: ts.ModuleKind.ESNext,
      types: [],
      noEmit: true,
    },
    host,
  });
  const syntaxErrors = program.getSyntacticDiagnostics(sourceFile);
  if (syntaxErrors.length > 0) {
    const first = syntaxErrors[0] as TS.Diagnostic;
    let where = '';
    if (first.start !== undefined) {
      const { line, character } = sourceFile.getLineAndCharacterOfPosition(first.start);
      where = `${line + 1}:${character + 1}: `;
    }
    const message = ts.flattenDiagnosticMessageText(first.messageText, '\n');
    return { error: { file: fileName, message: `does not parse: ${where}${message}` } };
  }
  return { source: { ts, text, fileName, sourceFile, checker: program.getTypeChecker() } };
}

/** Where a node starts, 1-based as in compiler diagnostics. */
export function locate(
  source: Source,
  node: TS.Node,
): { file: string; line: number; column: number } {
  const { line, character } = source.sourceFile.getLineAndCharacterOfPosition(
    node.getStart(source.sourceFile),
  );
  return { file: source.fileName, line: line + 1, column: character + 1 };
}

/** The sites of one file that go into the report. */
export class Findings {
  /** Left unchanged for a human. */
  readonly review: ReviewSite[] = [];
  /** Whose full barrier became acquire or release. */
  readonly weakened: WeakenedSite[] = [];
  /** Which had no barrier and may now have one. */
  readonly strengthened: StrengthenedSite[] = [];
  readonly #source: Source;

  constructor(source: Source) {
    this.#source = source;
  }

  /** Reports `node` as left for review. */
  addReview(node: TS.Node, reason: string): void {
    this.review.push({ ...locate(this.#source, node), reason });
  }
}
