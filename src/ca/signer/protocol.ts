/** Messages between the BatchSigner and its worker threads. */
import type { ErrorKind } from '../../platform/errors.ts';
import type { IssueRequest, IssueResult, IssuerMaterial } from '../issue.ts';

export interface BatchMessage {
  batchId: number;
  /** Sent only the first time a worker sees this issuer; afterwards `issuerId` suffices. */
  issuer?: IssuerMaterial;
  issuerId: string;
  items: IssueRequest[];
}

export type ItemOutcome = { ok: true; result: IssueResult } | { ok: false; kind: ErrorKind; code: string; message: string };

export interface BatchReply {
  batchId: number;
  outcomes: ItemOutcome[];
}
