/**
 * The request/response loop of the peer workers: each message from the test is a request
 * with an `id`; the answer carries the same `id`, and either `ok: true` with what `run`
 * returned, or `ok: false` with the error's `DMAError` code (or 'not a DMAError') and message.
 */
import { parentPort } from 'node:worker_threads';
import { DMAError } from '../../dist/index.js';

export function serve(run) {
  parentPort.on('message', (request) => {
    try {
      parentPort.postMessage({ id: request.id, ok: true, ...run(request) });
    } catch (error) {
      parentPort.postMessage({
        id: request.id,
        ok: false,
        code: error instanceof DMAError ? error.code : 'not a DMAError',
        message: error instanceof Error ? error.message : String(error),
      });
    }
  });
}
