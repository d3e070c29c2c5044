/** Signing worker thread: receives batches, answers with one outcome per item. */
import { parentPort } from 'node:worker_threads';
import type { IssuerMaterial } from '../issue.ts';
import type { BatchMessage, BatchReply } from './protocol.ts';
import { runBatch } from './run-batch.ts';

const issuers = new Map<string, IssuerMaterial>();

parentPort!.on('message', (msg: BatchMessage) => {
  if (msg.issuer) {
    issuers.set(msg.issuer.id, msg.issuer);
    if (issuers.size > 8) issuers.delete(issuers.keys().next().value!);
  }
  const issuer = issuers.get(msg.issuerId);
  const reply: BatchReply = issuer
    ? { batchId: msg.batchId, outcomes: runBatch(issuer, msg.items) }
    : { batchId: msg.batchId, outcomes: msg.items.map(() => ({ ok: false, kind: 'INTERNAL', code: 'signer.no_issuer', message: 'internal error: worker has no issuer' })) };
  parentPort!.postMessage(reply);
});
