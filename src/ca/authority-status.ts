/**
 * What `castellan ca status` and the metrics show of each authority: a pure
 * function of the stored records, this process's leaf accounting and the time.
 */
import { X509Certificate } from 'node:crypto';
import { certInfo } from './authority.ts';
import type { AuthorityRecord } from './keyring-doc.ts';
import { retireSafeAt } from './keyring.ts';
import type { LeafDelta } from './leaf-ledger.ts';
import { parseCertificatesPem } from '../platform/pem.ts';

export interface AuthorityStatus {
  id: string;
  state: AuthorityRecord['state'];
  source: AuthorityRecord['source'];
  keyType: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  /** leaves signed and still valid, counted by this server since it started */
  liveLeaves: number;
  /** leaves signed, all replicas, as flushed to the keystore */
  issued: number;
  lastLeafNotAfter: string | null;
  /** when retiring it becomes safe (its last leaf expired), ISO; null when retired */
  retireSafeAt: string | null;
  preparedAt?: string;
  activatedAt?: string;
  deactivatedAt?: string;
  taintedAt?: string;
  retiredAt?: string;
}

/** This process's leaf accounting for one authority. */
export interface LocalLeaves {
  /** signed here, not yet flushed to the keystore */
  pending: LeafDelta | undefined;
  /** signed here since start and not expired */
  live: number;
}

function subjectOf(certPem: string): string {
  return new X509Certificate(certPem).subject.split('\n').join(', ');
}

export function authorityStatus(a: AuthorityRecord, local: LocalLeaves, now: number): AuthorityStatus {
  const info = certInfo(parseCertificatesPem(a.certPem, `authority ${a.id}`)[0]!);
  const { pending } = local;
  const last = Math.max(a.leaves.lastNotAfter ? Date.parse(a.leaves.lastNotAfter) : 0, pending?.lastNotAfter ?? 0);
  const withPending: AuthorityRecord = { ...a, leaves: { issued: a.leaves.issued + (pending?.issued ?? 0), lastNotAfter: last ? new Date(last).toISOString() : null } };
  return {
    id: a.id,
    state: a.state,
    source: a.source,
    keyType: a.keyType,
    subject: subjectOf(a.certPem),
    notBefore: new Date(info.notBefore).toISOString(),
    notAfter: new Date(info.notAfter).toISOString(),
    liveLeaves: local.live,
    issued: withPending.leaves.issued,
    lastLeafNotAfter: withPending.leaves.lastNotAfter,
    retireSafeAt: a.state === 'retired' ? null : new Date(a.state === 'active' ? Math.max(now, last) : retireSafeAt(withPending, now)).toISOString(),
    preparedAt: a.preparedAt,
    activatedAt: a.activatedAt,
    deactivatedAt: a.deactivatedAt,
    taintedAt: a.taintedAt,
    retiredAt: a.retiredAt,
  };
}
