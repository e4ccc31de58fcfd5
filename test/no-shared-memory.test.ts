/**
 * SPEC §4.3: without SharedArrayBuffer (a browser page that is not cross-origin isolated),
 * memory is unshared by default, an IommuDomain works within its thread, and `handle()` is
 * ERR_DMA_INVALID_ARGUMENT with a message naming cross-origin isolation. Shown in a Node
 * started with `--enable-sharedarraybuffer-per-context`: V8 then installs no global
 * SharedArrayBuffer (Atomics stays), which is what Chromium does for a page that is not
 * cross-origin isolated. (Node 20's `--no-harmony-sharedarraybuffer` is gone from Node 22.)
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('./workers/no-shared-memory.mjs', import.meta.url));

describe('without SharedArrayBuffer', () => {
  it('memory is unshared, the IOMMU works in its thread, and handles name cross-origin isolation', () => {
    const output = execFileSync(
      process.execPath,
      ['--enable-sharedarraybuffer-per-context', script],
      {
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    const seen = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    expect(seen.sharedArrayBuffer).toBe('undefined');
    expect(seen.shared).toBe(false);
    expect(seen.barrierFree).toBe(true);
    expect(seen.bytes).toEqual([7, 8, 9]);
    expect(seen.dirty).toEqual([4096]);
    expect(seen.fault).toBe('ERR_DMA_IOMMU_UNMAPPED');
    expect(seen.memoryHandle).toMatch(/^ERR_DMA_INVALID_ARGUMENT: .*cross-origin isolation/);
    expect(seen.domainHandle).toMatch(/^ERR_DMA_INVALID_ARGUMENT: .*cross-origin isolation/);
    expect(seen.sharedAsked).toMatch(/^ERR_DMA_INVALID_ARGUMENT: .*SharedArrayBuffer/);
  });
});
