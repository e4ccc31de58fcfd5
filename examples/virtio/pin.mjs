/**
 * CPU pinning for the Node workers of the virtio demo (Linux only; Node-only: the browser demo
 * never imports this module).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

/**
 * Pins the calling thread to one CPU (Linux, with util-linux's `taskset`); false where that is
 * not possible. The demo pins the driver and the device to different CPUs: two threads that
 * wake each other up tend to be put on one CPU by the scheduler, most of all when another
 * process keeps the other CPU busy, and threads that take turns on one CPU never see each
 * other's stores out of order (a context switch drains the store buffer), so no variant could
 * lose a notification.
 */
export function pinThisThread(cpu) {
  if (cpu === undefined) return false;
  try {
    const tid = readlinkSync('/proc/thread-self').split('/').pop();
    execFileSync('taskset', ['-p', '-c', String(cpu), tid], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The CPUs this process may run on (Linux), or an empty array where that is unknown. */
export function allowedCpus() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1];
    const cpus = [];
    for (const range of list === undefined ? [] : list.split(',')) {
      const [first, last = first] = range.split('-').map(Number);
      for (let cpu = first; cpu <= last; cpu++) cpus.push(cpu);
    }
    return cpus.filter((cpu) => Number.isInteger(cpu));
  } catch {
    return [];
  }
}
