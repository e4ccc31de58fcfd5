/**
 * The unified diff `--dry-run` prints, made by jsdiff (the `diff` package ESLint, Jest and
 * Prettier use), with `a/` and `b/` prefixes so that `git apply` takes it as it is.
 *
 * @module
 */
import { createTwoFilesPatch, FILE_HEADERS_ONLY } from 'diff';

/**
 * A unified diff of two texts, as `git diff` prints it, with 3 lines of context and
 * `\ No newline at end of file` where a text does not end with one.
 *
 * @param oldText - the file before.
 * @param newText - the file after.
 * @param file - the name printed in the `--- a/…` / `+++ b/…` header, with `/` separators.
 * @returns the diff, empty when the texts are equal.
 * @example
 * ```ts
 * unifiedDiff('a\nb\n', 'a\nB\n', 'src/x.ts');
 * // '--- a/src/x.ts\n+++ b/src/x.ts\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n'
 * ```
 */
export function unifiedDiff(oldText: string, newText: string, file: string): string {
  if (oldText === newText) return '';
  return createTwoFilesPatch(`a/${file}`, `b/${file}`, oldText, newText, undefined, undefined, {
    context: 3,
    headerOptions: FILE_HEADERS_ONLY,
  });
}
