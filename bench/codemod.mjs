// The codemod over a generated corpus: 2,000 files (~16 MB), most of which do not mention the
// legacy entry and must be skipped before parsing. Budget: ≥ 400 files/s, ≤ 1 GiB peak RSS.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrateFiles } from '../dist/codemod.js';

const FILES = 2000;
const LEGACY_EVERY = 10; // one file in ten uses dma-attrs/legacy
const TARGET_BYTES = 8 * 1024;

function plainFile(index) {
  let text = `import { DMAAttributes, type DMAContext } from 'dma-attrs';\n\n`;
  let n = 0;
  while (text.length < TARGET_BYTES) {
    text += `export function copy${index}_${n}(dma: DMAContext, addr: number, buf: Uint8Array): void {\n  // descriptor ${n}: read the header, then the payload\n  dma.read(addr + ${n * 16}, buf.subarray(0, 16), DMAAttributes.RELAXED);\n  dma.write(addr + ${n * 16 + 8}, buf.subarray(16, 24));\n}\n\n`;
    n++;
  }
  return text;
}

function legacyFile(index) {
  let text = `import { dmaMemoryRead, dmaMemoryWrite, dmaMemoryRw, DMADirection } from 'dma-attrs/legacy';\nimport type { DMAContext } from 'dma-attrs';\n\n`;
  let n = 0;
  while (text.length < TARGET_BYTES) {
    text += `export function copy${index}_${n}(dma: DMAContext, addr: number, buf: Uint8Array, dir: DMADirection): void {\n  dmaMemoryRead(dma, addr + ${n * 16}, buf, buf.length);\n  dmaMemoryWrite(dma, addr + ${n * 16 + 8}, buf, 8);\n  dmaMemoryRw(dma, addr, buf, 4, DMADirection.TO_DEVICE);\n  dmaMemoryRw(dma, addr, buf, 4, dir);\n}\n\n`;
    n++;
  }
  return text;
}

const root = mkdtempSync(path.join(tmpdir(), 'dma-attrs-codemod-bench-'));
let bytes = 0;
for (let index = 0; index < FILES; index++) {
  const directory = path.join(root, `pkg${index % 20}`, 'src');
  mkdirSync(directory, { recursive: true });
  const text = index % LEGACY_EVERY === 0 ? legacyFile(index) : plainFile(index);
  bytes += text.length;
  writeFileSync(path.join(directory, `file${index}.ts`), text);
}

// The migration is synchronous: sample the resident set size after each file.
let peakRss = process.memoryUsage().rss;
const start = performance.now();
const report = migrateFiles([root], {
  write: false,
  onFile: () => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  },
});
const seconds = (performance.now() - start) / 1000;
rmSync(root, { recursive: true, force: true });

const filesPerSecond = report.filesScanned / seconds;
const peakMiB = peakRss / 2 ** 20;
console.log(
  `codemod: ${report.filesScanned} files (${(bytes / 2 ** 20).toFixed(1)} MiB), ` +
    `${report.filesChanged} changed, ${report.rewritten} sites rewritten in ${seconds.toFixed(2)} s: ` +
    `${filesPerSecond.toFixed(0)} files/s, peak RSS ${peakMiB.toFixed(0)} MiB`,
);
const ok = filesPerSecond >= 400 && peakRss <= 2 ** 30 && report.errors.length === 0;
console.log(ok ? 'within budget (≥ 400 files/s, ≤ 1 GiB)' : 'OVER BUDGET');
process.exitCode = ok ? 0 : 1;
