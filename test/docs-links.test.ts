/**
 * The typedoc site's links: in guides (docs/*.md) and in TSDoc, a `{@link dma-attrs!X}`
 * without a label renders as the raw text "dma-attrs!X", and a bare file name such as
 * SPEC.md outside a code span is turned into a link to a website (".md" is a top-level
 * domain). Both once reached the published site; this keeps them out.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;

function filesUnder(folder: string, suffix: string): string[] {
  return readdirSync(join(root, folder), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith(suffix))
    .map((name) => join(folder, name));
}

const sources = [...filesUnder('docs', '.md'), ...filesUnder('src', '.ts')];

/** The text with code spans and fenced code blocks blanked out. */
function prose(text: string): string {
  return text.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
}

describe('typedoc links', () => {
  it('finds the guides and sources to check', () => {
    expect(sources).toContain(join('docs', 'emulators.md'));
    expect(sources).toContain(join('src', 'legacy.ts'));
  });

  it.each(sources)('%s labels every {@link dma-attrs…!X}', (file) => {
    const text = readFileSync(join(root, file), 'utf8');
    const unlabelled = [...text.matchAll(/\{@link (dma-attrs[^}|\s]*![^}|\s]+)\s*\}/g)].map(
      (match) => match[1],
    );
    expect(unlabelled).toEqual([]);
  });

  it.each(sources)('%s names no .md file outside a code span or a link', (file) => {
    const text = prose(readFileSync(join(root, file), 'utf8'))
      // Markdown links and their targets are fine: [Emulators](emulators.md).
      .replace(/\[[^\]]*\]\([^)]*\)/g, '');
    expect(text.match(/\b[\w-]+\.md\b/g) ?? []).toEqual([]);
  });
});
