/**
 * What `castellan console` serves at /api/status: the admin API's Status
 * (field names as protobuf-es's JSON-ish objects), the trust bundle decoded,
 * and the CA's counters read from its /metrics. Shared by the console's
 * server (src/cli/console.ts) and its page (app.ts); types only.
 */
export interface ConsoleAuthority {
  id: string;
  state: 'prepared' | 'active' | 'old' | 'tainted' | 'retired' | string;
  source: string;
  keyType: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  liveLeaves: number;
  issued: number;
  lastLeafNotAfter: string;
  retireSafeAt: string;
  preparedAt: string;
  activatedAt: string;
  deactivatedAt: string;
  taintedAt: string;
  retiredAt: string;
}

export interface BundleRoot {
  subject: string;
  /** hex subject key identifier; matches an authority id when the authority is the root */
  ski: string;
  notBefore: string;
  notAfter: string;
  sha256: string;
  pem: string;
}

/** Counter and gauge values of one scrape of the CA's /metrics. */
export interface CaCounters {
  /** when the scrape was taken (ms since epoch) */
  at: number;
  requests: number;
  issued: number;
  signerQueue: number;
  /** refusals since the server started, by reason ("auth: token", "sign: signer.queue_full", "rate limit: peer", ...) */
  refusals: Record<string, number>;
}

export interface ConsoleStatus {
  /** the console server's clock (ms since epoch) */
  now: number;
  adminSocket: string;
  trustDomain: string;
  generation: number;
  leader: boolean;
  keystore: string;
  propagationSeconds: number;
  autoRotation: boolean;
  authorities: ConsoleAuthority[];
  bundle: BundleRoot[];
  nextStep: string;
  nextStepAuthorityId: string;
  nextStepAt: string;
  metricsUrl: string;
  metrics?: CaCounters;
  metricsError?: string;
}
