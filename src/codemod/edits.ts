/**
 * Text edits of the original source: each replaces a range, and is rendered only when the output
 * is assembled, so that everything outside the edited ranges stays byte-for-byte and edits nested
 * in a rewritten call (a `DMADirection.X` inside an argument) apply to the text it reuses.
 *
 * @module
 */
import type * as TS from 'typescript';
import type { Source } from './source.js';

/**
 * A replacement of `[start, end)` of the original text. `render` runs when the output is
 * assembled, so that edits nested inside the span are applied to the argument texts it reuses.
 */
export interface Edit {
  start: number;
  end: number;
  render: () => string;
  /** Counted as a rewritten site when rendered. */
  site: boolean;
  /** Belongs to one rewritten call (passed to {@link Edits.render}), not to the file's list. */
  local: boolean;
  /** A removed legacy statement: rendered last, once `DMAAttributes` use is known. */
  deferred?: boolean;
}

/** Text inserted at a position when the output is assembled. */
export interface Insertion {
  at: number;
  text: string;
}

/**
 * An edit of one rewritten call, to pass to {@link Edits.render} with the call's range.
 *
 * @returns the edit.
 */
export function localEdit(start: number, end: number, render: () => string): Edit {
  return { start, end, render, site: false, local: true };
}

/** The edits of one file, and the output they make. */
export class Edits {
  readonly #source: Source;
  readonly #edits: Edit[] = [];
  readonly #counted = new Set<Edit>();

  constructor(source: Source) {
    this.#source = source;
  }

  /** How many edits that are sites have been rendered: the sites rewritten. */
  get sites(): number {
    return this.#counted.size;
  }

  /** Replaces `node` (from its first token) by what `render` returns. */
  replace(node: TS.Node, render: () => string, site: boolean): void {
    this.#edits.push({
      start: node.getStart(this.#source.sourceFile),
      end: node.end,
      render,
      site,
      local: false,
    });
  }

  /** Adds an edit of any range. */
  add(edit: Edit): void {
    this.#edits.push(edit);
  }

  /**
   * The whole output: every outermost edit rendered once (removed statements last, since they
   * depend on whether `DMAAttributes` is used), plus what `late` inserts after that.
   *
   * @param late - called once every edit is rendered.
   * @throws Error when two edits overlap (a bug: each site is edited once).
   */
  assemble(late: () => Insertion | undefined): string {
    const text = this.#source.text;
    const top = this.#outermost(0, text.length, []);
    const rendered = new Map<Edit, string>();
    for (const edit of top) {
      if (edit.deferred !== true) rendered.set(edit, this.#renderEdit(edit));
    }
    for (const edit of top) {
      if (!rendered.has(edit)) rendered.set(edit, this.#renderEdit(edit));
    }
    const extra = late();
    const pieces = top.map((edit) => ({
      start: edit.start,
      end: edit.end,
      text: rendered.get(edit) ?? '',
    }));
    if (extra !== undefined) pieces.push({ start: extra.at, end: extra.at, text: extra.text });
    pieces.sort((a, b) => a.start - b.start || a.end - b.end);
    let output = '';
    let cursor = 0;
    for (const piece of pieces) {
      output += text.slice(cursor, piece.start) + piece.text;
      cursor = Math.max(cursor, piece.end);
    }
    return output + text.slice(cursor);
  }

  /** The original text of `[start, end)` with the edits inside it (and `local` ones) applied. */
  render(start: number, end: number, local: Edit[] = []): string {
    const text = this.#source.text;
    let output = '';
    let cursor = start;
    for (const edit of this.#outermost(start, end, local)) {
      output += text.slice(cursor, edit.start) + this.#renderEdit(edit);
      cursor = edit.end;
    }
    return output + text.slice(cursor, end);
  }

  /** A node's text (from its first token) with the edits inside it applied. */
  renderNode(node: TS.Node): string {
    return this.render(node.getStart(this.#source.sourceFile), node.end);
  }

  /**
   * The comments in `[start, end)`, so that a comment inside a rewritten call survives:
   * `'after'` puts a space before each (to follow code), `'before'` one after (to precede code).
   */
  commentsOf(start: number, end: number, style: 'after' | 'before' = 'after'): string {
    const { ts, text, sourceFile } = this.#source;
    if (!text.slice(start, end).includes('/')) return '';
    const scanner = ts.createScanner(
      ts.ScriptTarget.Latest,
      false,
      sourceFile.languageVariant,
      text,
      undefined,
      start,
      end - start,
    );
    let comments = '';
    for (
      let token = scanner.scan();
      token !== ts.SyntaxKind.EndOfFileToken;
      token = scanner.scan()
    ) {
      if (token === ts.SyntaxKind.MultiLineCommentTrivia) {
        const comment = scanner.getTokenText();
        comments += style === 'after' ? ` ${comment}` : `${comment} `;
      } else if (token === ts.SyntaxKind.SingleLineCommentTrivia) {
        const comment = scanner.getTokenText();
        comments += style === 'after' ? ` ${comment}\n` : `${comment}\n`;
      }
    }
    return comments;
  }

  #renderEdit(edit: Edit): string {
    if (edit.site) this.#counted.add(edit);
    return edit.render();
  }

  /** Edits inside `[start, end)` that are not inside another one, in order. */
  #outermost(start: number, end: number, local: Edit[]): Edit[] {
    const candidates = [
      ...local,
      ...this.#edits.filter((edit) => edit.start >= start && edit.end <= end),
    ].sort(
      (a, b) =>
        a.start - b.start ||
        Number(a.end !== a.start) - Number(b.end !== b.start) ||
        b.end - a.end ||
        Number(b.local) - Number(a.local),
    );
    const chosen: Edit[] = [];
    let reach = start;
    for (const edit of candidates) {
      if (edit.start < reach) {
        if (edit.end > reach) {
          throw new Error(`internal error: overlapping edits at ${this.#describe(edit.start)}`);
        }
        continue;
      }
      chosen.push(edit);
      reach = edit.end;
    }
    return chosen;
  }

  #describe(position: number): string {
    const { line, character } = this.#source.sourceFile.getLineAndCharacterOfPosition(position);
    return `${this.#source.fileName}:${line + 1}:${character + 1}`;
  }
}
