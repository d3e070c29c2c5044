/** Messages between the BatchSigner and its worker threads (structured-cloned). */
import type { ErrorCode, ErrorKind } from '../../platform/errors.ts';
import type { IssueRequest, IssueResult, IssuerMaterial } from '../issue.ts';

export interface BatchMessage {
  batchId: number;
  /** The one issuer snapshot this whole batch is signed with. */
  issuer: IssuerMaterial;
  items: IssueRequest[];
}

export type ItemOutcome = { ok: true; result: IssueResult } | { ok: false; kind: ErrorKind; code: ErrorCode; message: string };

export interface BatchReply {
  batchId: number;
  /** one per item, in order */
  outcomes: ItemOutcome[];
}
