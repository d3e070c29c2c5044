/**
 * Signing worker thread: receives batches, answers with one outcome per item.
 * Stateless apart from the per-issuer template cache of src/ca/issue.ts
 * (which re-checks the issuer bytes on every use).
 */
import { parentPort } from 'node:worker_threads';
import type { BatchMessage, BatchReply, ItemOutcome } from './protocol.ts';
import { runBatch } from './run-batch.ts';

parentPort!.on('message', (msg: BatchMessage) => {
  let outcomes: ItemOutcome[];
  try {
    outcomes = runBatch(msg.issuer, msg.items);
  } catch {
    outcomes = msg.items.map(() => ({ ok: false, kind: 'INTERNAL', code: 'signer.internal', message: 'internal error while signing' }));
  }
  // Exact-size copies of the DER: the encoder's Buffers are views into pool slabs, whose
  // whole backing store structured clone would otherwise copy into every reply.
  for (const o of outcomes) if (o.ok) o.result = { ...o.result, certDer: new Uint8Array(o.result.certDer) };
  const reply: BatchReply = { batchId: msg.batchId, outcomes };
  parentPort!.postMessage(reply);
});
