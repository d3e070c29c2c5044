/** Signs one batch against one issuer; one outcome per item, so a bad CSR never fails its neighbours. */
import { CastellanError } from '../../platform/errors.ts';
import { issueFromCsr, type IssueRequest, type IssuerMaterial } from '../issue.ts';
import type { ItemOutcome } from './protocol.ts';

export function runBatch(issuer: IssuerMaterial, items: readonly IssueRequest[]): ItemOutcome[] {
  return items.map((item): ItemOutcome => {
    try {
      return { ok: true, result: issueFromCsr(issuer, item) };
    } catch (e) {
      if (e instanceof CastellanError) return { ok: false, kind: e.kind, code: e.code, message: e.message };
      return { ok: false, kind: 'INTERNAL', code: 'signer.internal', message: 'internal error while signing' };
    }
  });
}
