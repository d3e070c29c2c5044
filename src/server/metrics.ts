/**
 * Prometheus metrics of the CA server. Names and label sets follow istiod's
 * CA (protocols.md §7) so existing dashboards work; castellan_* metrics add
 * what istiod lacks (latency, queue depth).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface CaMetrics {
  readonly registry: Registry;
  readonly csrCount: Counter;
  readonly authFailures: Counter<'method'>;
  readonly csrParsingErrors: Counter;
  readonly csrSignErrors: Counter<'error'>;
  readonly issued: Counter;
  readonly rootExpiryTimestamp: Gauge;
  readonly rootExpirySeconds: Gauge;
  readonly chainExpiryTimestamp: Gauge;
  readonly latency: Histogram<'code'>;
  readonly queueDepth: Gauge;
  readonly authorityState: Gauge<'id' | 'state'>;
  readonly authorityLiveLeaves: Gauge<'id'>;
  readonly authorityExpiry: Gauge<'id' | 'state'>;
  readonly keyringRejected: Gauge;
  readonly rateLimited: Counter<'scope'>;
  readonly jwksKeysRejected: Counter<'reason'>;
  /** Records the expiry (ms since epoch) of the earliest-expiring root and of the signing certificate. */
  setExpiries(rootNotAfterMs: number, signerNotAfterMs: number): void;
}

export interface AuthorityGaugeInput {
  id: string;
  state: string;
  liveLeaves: number;
  notAfterMs: number;
}

export function createCaMetrics(
  opts: { queueDepth?: () => number; defaultMetrics?: boolean; authorities?: () => AuthorityGaugeInput[]; rejectedKeyringUpdates?: () => number } = {},
): CaMetrics {
  const registry = new Registry();
  // Three gauges read the authorities during one scrape: ask for them once per scrape.
  let authoritiesAt = -Infinity;
  let authoritiesCache: AuthorityGaugeInput[] = [];
  const authorities = (): AuthorityGaugeInput[] => {
    if (Date.now() - authoritiesAt > 100) {
      authoritiesCache = opts.authorities?.() ?? [];
      authoritiesAt = Date.now();
    }
    return authoritiesCache;
  };
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  let rootExpiryMs = 0;
  const m: CaMetrics = {
    registry,
    csrCount: new Counter({ name: 'citadel_server_csr_count', help: 'CreateCertificate requests received', registers: [registry] }),
    authFailures: new Counter({ name: 'citadel_server_authentication_failure_count', help: 'requests whose caller could not be authenticated', labelNames: ['method'], registers: [registry] }),
    csrParsingErrors: new Counter({ name: 'citadel_server_csr_parsing_err_count', help: 'CSRs that could not be parsed or verified', registers: [registry] }),
    csrSignErrors: new Counter({ name: 'citadel_server_csr_sign_err_count', help: 'CSRs that were parsed but not signed', labelNames: ['error'], registers: [registry] }),
    issued: new Counter({ name: 'citadel_server_success_cert_issuance_count', help: 'certificates issued', registers: [registry] }),
    rootExpiryTimestamp: new Gauge({ name: 'citadel_server_root_cert_expiry_timestamp', help: 'root certificate expiry, Unix seconds', registers: [registry] }),
    rootExpirySeconds: new Gauge({
      name: 'citadel_server_root_cert_expiry_seconds',
      help: 'seconds until the root certificate expires',
      registers: [registry],
      collect() {
        this.set(rootExpiryMs ? Math.round((rootExpiryMs - Date.now()) / 1000) : 0);
      },
    }),
    chainExpiryTimestamp: new Gauge({ name: 'citadel_server_cert_chain_expiry_timestamp', help: 'signing certificate expiry, Unix seconds', registers: [registry] }),
    latency: new Histogram({
      name: 'castellan_create_certificate_duration_seconds',
      help: 'CreateCertificate latency by gRPC status code',
      labelNames: ['code'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'castellan_signer_queue_depth',
      help: 'CSRs waiting for or in signing',
      registers: [registry],
      collect() {
        if (opts.queueDepth) this.set(opts.queueDepth());
      },
    }),
    authorityState: new Gauge({
      name: 'castellan_authority_state',
      help: '1 for the state each authority of the keyring is in',
      labelNames: ['id', 'state'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of authorities()) this.set({ id: a.id, state: a.state }, 1);
      },
    }),
    authorityLiveLeaves: new Gauge({
      name: 'castellan_authority_live_leaves',
      help: 'certificates signed by each authority and still valid (counted by this server since it started)',
      labelNames: ['id'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of authorities()) if (a.state !== 'retired') this.set({ id: a.id }, a.liveLeaves);
      },
    }),
    authorityExpiry: new Gauge({
      name: 'castellan_authority_expiry_seconds',
      help: 'seconds until each authority certificate that is not retired expires',
      labelNames: ['id', 'state'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of authorities()) if (a.state !== 'retired') this.set({ id: a.id, state: a.state }, Math.round((a.notAfterMs - Date.now()) / 1000));
      },
    }),
    rateLimited: new Counter({ name: 'castellan_rate_limited', help: 'requests refused with RESOURCE_EXHAUSTED by a rate limit, by scope (peer or identity)', labelNames: ['scope'], registers: [registry] }),
    jwksKeysRejected: new Counter({
      name: 'castellan_jwks_keys_rejected',
      help: 'JWKS keys that will never verify a token (RSA under 2048 bits, use not sig, key_ops without verify, private), counted once per key and reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    keyringRejected: new Gauge({
      name: 'castellan_keyring_rejected_updates',
      help: 'keyring changes in the keystore that could not be used (the last good keyring was kept): alert on any',
      registers: [registry],
      collect() {
        this.set(opts.rejectedKeyringUpdates?.() ?? 0);
      },
    }),
    setExpiries(rootNotAfterMs, signerNotAfterMs) {
      rootExpiryMs = rootNotAfterMs;
      m.rootExpiryTimestamp.set(Math.floor(rootNotAfterMs / 1000));
      m.chainExpiryTimestamp.set(Math.floor(signerNotAfterMs / 1000));
    },
  };
  return m;
}
