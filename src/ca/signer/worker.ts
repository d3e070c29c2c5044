/**
 * Signing worker thread: receives batches, answers with one outcome per item.
 * Stateless apart from the per-issuer template cache of src/ca/issue.ts
 * (which re-checks the issuer bytes on every use).
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { BatchMessage, BatchReply, ItemOutcome } from './protocol.ts';
import { runBatch } from './run-batch.ts';

// Signing yields to the main thread (accepting calls, authentication) and to the probes'
// thread when the cores are saturated: on Linux a thread's nice value is its own, and
// lowering it needs no privilege. A full queue then sheds load at the front door
// (RESOURCE_EXHAUSTED) instead of starving it.
const nice = Number((workerData as { nice?: number } | undefined)?.nice ?? 0);
try {
  if (nice > 0) setPriority(0, Math.min(19, nice));
} catch {
  // not permitted or not supported: run at the normal priority
}

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
