/**
 * A small line-based unified diff (3 lines of context) for `--dry-run`.
 *
 * @module
 */

interface Operation {
  kind: ' ' | '-' | '+';
  line: string;
}

function splitLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/**
 * An edit script: common head and tail lines, then a longest-common-subsequence table over the
 * changed middle (codemod edits are local, so the middle is small). A middle too large for the
 * table is shown as removed and added whole.
 */
function editScript(a: string[], b: string[]): Operation[] {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (
    tail < a.length - head &&
    tail < b.length - head &&
    a[a.length - 1 - tail] === b[b.length - 1 - tail]
  ) {
    tail++;
  }
  const oldMiddle = a.slice(head, a.length - tail);
  const newMiddle = b.slice(head, b.length - tail);
  const operations: Operation[] = a.slice(0, head).map((line) => ({ kind: ' ', line }));
  const n = oldMiddle.length;
  const m = newMiddle.length;
  if (n * m > 4_000_000) {
    for (const line of oldMiddle) operations.push({ kind: '-', line });
    for (const line of newMiddle) operations.push({ kind: '+', line });
  } else {
    // lcs[i * (m + 1) + j]: the LCS length of oldMiddle[i..] and newMiddle[j..].
    const width = m + 1;
    const lcs = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * width + j] =
          oldMiddle[i] === newMiddle[j]
            ? (lcs[(i + 1) * width + j + 1] as number) + 1
            : Math.max(lcs[(i + 1) * width + j] as number, lcs[i * width + j + 1] as number);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && oldMiddle[i] === newMiddle[j]) {
        operations.push({ kind: ' ', line: oldMiddle[i] as string });
        i++;
        j++;
      } else if (
        i < n &&
        (j >= m || (lcs[(i + 1) * width + j] as number) >= (lcs[i * width + j + 1] as number))
      ) {
        operations.push({ kind: '-', line: oldMiddle[i] as string });
        i++;
      } else {
        operations.push({ kind: '+', line: newMiddle[j] as string });
        j++;
      }
    }
  }
  for (const line of a.slice(a.length - tail)) operations.push({ kind: ' ', line });
  return operations;
}

/**
 * A unified diff of two texts, as `diff -u` prints it, with 3 lines of context.
 *
 * @param oldText - the file before.
 * @param newText - the file after.
 * @param file - the name printed in the `---`/`+++` header.
 * @returns the diff, empty when the texts are equal.
 */
export function unifiedDiff(oldText: string, newText: string, file: string): string {
  if (oldText === newText) return '';
  const operations = editScript(splitLines(oldText), splitLines(newText));
  const context = 3;
  let output = `--- a/${file}\n+++ b/${file}\n`;
  let index = 0;
  while (index < operations.length) {
    while (index < operations.length && operations[index]?.kind === ' ') index++;
    if (index >= operations.length) break;
    const start = Math.max(0, index - context);
    let end = index;
    // Extend the hunk while the next change is within 2·context unchanged lines.
    for (;;) {
      while (end < operations.length && operations[end]?.kind !== ' ') end++;
      let gap = end;
      while (gap < operations.length && operations[gap]?.kind === ' ') gap++;
      if (gap < operations.length && gap - end <= 2 * context) {
        end = gap;
        continue;
      }
      end = Math.min(operations.length, end + context);
      break;
    }
    let oldLine = 1;
    let newLine = 1;
    for (let i = 0; i < start; i++) {
      const kind = operations[i]?.kind;
      if (kind !== '+') oldLine++;
      if (kind !== '-') newLine++;
    }
    let oldCount = 0;
    let newCount = 0;
    let body = '';
    for (let i = start; i < end; i++) {
      const operation = operations[i] as Operation;
      if (operation.kind !== '+') oldCount++;
      if (operation.kind !== '-') newCount++;
      body += `${operation.kind}${operation.line}\n`;
    }
    const oldStart = oldCount === 0 ? oldLine - 1 : oldLine;
    const newStart = newCount === 0 ? newLine - 1 : newLine;
    output += `@@ -${oldStart},${oldCount} +${newStart},${newCount} @@\n${body}`;
    index = end;
  }
  return output;
}
