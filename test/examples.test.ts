/**
 * The examples in examples/ run as a user would run them: `node` on the file, importing the
 * built package by its own name.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runNode(script: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [script],
      { cwd: root, timeout: 20_000 },
      (_error, stdout, stderr) => {
        resolve({ code: child.exitCode, stdout, stderr });
      },
    );
  });
}

describe('examples/descriptor-completion.mjs', () => {
  it('completes the request, prints the check and exits 0', async () => {
    const { code, stdout, stderr } = await runNode('examples/descriptor-completion.mjs');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^device: payload "hello from the guest", checksum 0x[0-9a-f]+$/m);
    expect(stdout).toMatch(
      /^guest: request 7 completed: status OK, checksum 0x[0-9a-f]+ matches$/m,
    );
  }, 30_000);
});

describe('examples/iommu-permissions.mjs', () => {
  it('moves the good frames, logs both IOMMU faults, survives them and exits 0', async () => {
    const { code, stdout, stderr } = await runNode('examples/iommu-permissions.mjs');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines).toEqual([
      'nic: received 18-byte frame into RX descriptor 0 (iova 0x100000)',
      'nic: transmitted 19-byte frame from TX descriptor 1 (iova 0x200000): "pong from the guest"',
      // The unmapped IOVA: the listener logs the fault before the NIC sees the DMAFault.
      'iommu fault: write of 18 bytes at iova 0x500000: unmapped',
      'nic: RX descriptor 2 failed with ERR_DMA_IOMMU_UNMAPPED; completing it with status DMA_ERROR',
      // A read-only TX buffer used for receive: the write is refused.
      'iommu fault: write of 18 bytes at iova 0x200000: permission (write refused)',
      'nic: RX descriptor 3 failed with ERR_DMA_IOMMU_PERMISSION; completing it with status DMA_ERROR',
      // The device carries on.
      'nic: received 18-byte frame into RX descriptor 4 (iova 0x101000)',
      'guest: completion statuses: OK OK DMA_ERROR DMA_ERROR OK',
      'guest: TX buffer unchanged by the refused write; 2 faults recorded',
      'guest: every check passed',
    ]);
  }, 30_000);
});
