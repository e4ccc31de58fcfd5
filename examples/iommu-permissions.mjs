/**
 * A network card behind an IOMMU whose mappings give each buffer only the direction the
 * device needs: receive buffers are mapped WRITE (the device fills them, it has no business
 * reading them), transmit buffers READ (the device sends them, it must never change them).
 *
 * The NIC receives a packet and transmits a frame. Then the guest programs two bad receive
 * descriptors, as a buggy or hostile driver might: one with an IOVA nothing is mapped at, one
 * with a transmit buffer's IOVA. The IOMMU refuses both DMA writes before a byte moves, the
 * domain's `onFault` listener logs them (as a VT-d unit records faults for the OS to read), and
 * the NIC catches the fault, completes the descriptor with an error status and carries on.
 *
 * Run it with `npx tsup && node examples/iommu-permissions.mjs`.
 */
import { TextDecoder, TextEncoder } from 'node:util';
import { DMAAttributes, DMAContext, DMAFault, GuestMemory, IommuDomain } from 'dma-attrs';

const { READ, WRITE } = DMAAttributes;
const PAGE = 4096;

// Guest-physical layout: what the guest's driver allocated.
const RX_GPA = 0x10000; // two receive buffers, a page each
const TX_GPA = 0x20000; // one transmit buffer
const COMPLETIONS_GPA = 0x30000; // { status: u32, length: u32 } per descriptor

// IOVA layout: what the guest's IOMMU driver mapped for the NIC.
const RX_IOVA = 0x100000;
const TX_IOVA = 0x200000;
const COMPLETIONS_IOVA = 0x300000;
const UNMAPPED_IOVA = 0x500000;

const STATUS_OK = 0;
const STATUS_DMA_ERROR = 1;
const STATUS_NAMES = ['OK', 'DMA_ERROR'];

const hex = (value) => `0x${value.toString(16)}`;

/** The NIC's DMA engine: every guest address it is given is an IOVA. */
class Nic {
  #ctx;
  #completions = 0;

  constructor(memory, domain) {
    this.#ctx = new DMAContext(memory, { iommu: domain });
  }

  /** A frame arrived from the wire: DMA it into the receive buffer the guest posted. */
  receive(descriptor, iova, frame) {
    this.#run('RX', descriptor, () => {
      // RELAXED: the frame needs no barrier of its own; the completion status store below
      // publishes it, and that store's release barrier orders this copy before it.
      this.#ctx.write(iova, frame, DMAAttributes.RELAXED);
      console.log(
        `nic: received ${frame.length}-byte frame into RX descriptor ${descriptor} (iova ${hex(iova)})`,
      );
      return frame.length;
    });
  }

  /** The guest posted a frame to send: DMA it out of the transmit buffer. */
  transmit(descriptor, iova, length) {
    this.#run('TX', descriptor, () => {
      const frame = new Uint8Array(length);
      this.#ctx.read(iova, frame);
      const text = new TextDecoder().decode(frame);
      console.log(
        `nic: transmitted ${length}-byte frame from TX descriptor ${descriptor} (iova ${hex(iova)}): "${text}"`,
      );
      return length;
    });
  }

  /**
   * Runs one descriptor's DMA and writes its completion. A DMAFault is the guest's doing (a
   * bad address, a buffer mapped for the other direction): it becomes an error status for the
   * guest's driver, not a crash of the device model. Anything else is a bug in the model and
   * is left to propagate.
   */
  #run(queue, descriptor, dma) {
    let status = STATUS_OK;
    let length = 0;
    try {
      length = dma();
    } catch (error) {
      if (!(error instanceof DMAFault)) throw error;
      status = STATUS_DMA_ERROR;
      console.log(
        `nic: ${queue} descriptor ${descriptor} failed with ${error.code}; completing it with status DMA_ERROR`,
      );
    }
    // The completion ring is mapped WRITE. The status store is not relaxed: its release
    // barrier orders the frame and the length before it, so a driver that sees the status
    // sees both.
    const entry = COMPLETIONS_IOVA + 8 * this.#completions++;
    this.#ctx.writeU32LE(entry + 4, length, DMAAttributes.RELAXED);
    this.#ctx.writeU32LE(entry, status);
  }

  get completions() {
    return this.#completions;
  }
}

function main() {
  const memory = new GuestMemory({ size: 0x40000 });
  const faults = [];
  const domain = new IommuDomain({
    // Called in the faulting thread, before the access throws. Like VT-d fault recording it
    // is for the host's logs; it must not (and cannot) make the access succeed.
    onFault: (fault) => {
      faults.push(fault);
      const direction = fault.attrs & WRITE ? 'write' : 'read';
      const why =
        fault.reason === 'permission' ? `permission (${fault.access} refused)` : 'unmapped';
      console.log(
        `iommu fault: ${direction} of ${fault.length} bytes at iova ${hex(fault.iova)}: ${why}`,
      );
    },
  });

  // The guest's IOMMU driver maps each buffer for the direction the NIC uses it in, and
  // nothing else: a receive buffer the device could read would leak guest memory to a
  // compromised device; a transmit buffer it could write would let it change a frame the
  // guest still owns.
  domain.map(RX_IOVA, RX_GPA, 2 * PAGE, WRITE);
  domain.map(TX_IOVA, TX_GPA, PAGE, READ);
  domain.map(COMPLETIONS_IOVA, COMPLETIONS_GPA, PAGE, WRITE);
  const nic = new Nic(memory, domain);

  const packet = new TextEncoder().encode('ping from the wire');
  const txFrame = new TextEncoder().encode('pong from the guest');
  memory.write(TX_GPA, txFrame);
  const txBefore = new Uint8Array(PAGE);
  memory.read(TX_GPA, txBefore);

  // Good descriptors.
  nic.receive(0, RX_IOVA, packet);
  nic.transmit(1, TX_IOVA, txFrame.length);

  // Bad descriptors programmed by the guest.
  nic.receive(2, UNMAPPED_IOVA, packet); // nothing mapped there
  nic.receive(3, TX_IOVA, packet); // a transmit buffer: mapped READ only

  // The device survived: the next good descriptor works.
  nic.receive(4, RX_IOVA + PAGE, packet);

  // The guest's side: the completions, the buffers, and what the refused writes left.
  const checks = [];
  const completions = new DataView(new ArrayBuffer(8 * nic.completions));
  memory.read(COMPLETIONS_GPA, new Uint8Array(completions.buffer));
  const statuses = [];
  for (let index = 0; index < nic.completions; index++) {
    statuses.push(STATUS_NAMES[completions.getUint32(8 * index, true)] ?? 'unknown');
  }
  console.log(`guest: completion statuses: ${statuses.join(' ')}`);
  checks.push(statuses.join(' ') === 'OK OK DMA_ERROR DMA_ERROR OK');

  const rx = new Uint8Array(packet.length);
  for (const gpa of [RX_GPA, RX_GPA + PAGE]) {
    memory.read(gpa, rx);
    checks.push(rx.every((byte, index) => byte === packet[index]));
  }
  const txAfter = new Uint8Array(PAGE);
  memory.read(TX_GPA, txAfter);
  const txIntact = txAfter.every((byte, index) => byte === txBefore[index]);
  console.log(
    `guest: TX buffer ${txIntact ? 'unchanged' : 'CHANGED'} by the refused write; ${faults.length} faults recorded`,
  );
  checks.push(txIntact, faults.length === 2);

  if (checks.every(Boolean)) {
    console.log('guest: every check passed');
  } else {
    console.error('guest: a check failed');
    process.exitCode = 1;
  }
}

main();
