/**
 * The agent's secret cache: it owns the workload key and certificate
 * (`default`) and the trust bundle (`ROOTCA`), keeps them fresh, and is the
 * SecretStore the SDS streams read. With federation (issue 17) it also holds
 * the foreign trust domains' bundles (src/agent/federation.ts) and serves
 * them scoped per trust domain: `ALL` and `spiffe://<td>` (src/sds/resources.ts).
 *
 * Lifecycle (protocols.md §5, security.md L4):
 * - every issuance makes a fresh key and CSR; keys are never reused;
 * - renewal starts when `graceRatio` (± `jitter`) of the lifetime is left
 *   (Istio's meaning of the grace ratio: 0.5 renews at half-life);
 * - a failed issuance keeps the current secrets served and retries: codes the
 *   Istio agent retries (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
 *   DEADLINE_EXCEEDED, CANCELLED) back off exponentially from
 *   `backoff.initialMs` to `backoff.maxMs` with jitter; any other code
 *   (UNAUTHENTICATED, INVALID_ARGUMENT, PERMISSION_DENIED…) is not retried
 *   quickly: the next attempt waits `backoff.maxMs`, since only an operator
 *   (or a refreshed token file) can fix it; either way no wait exceeds half of
 *   what is left of the current certificate;
 * - a trust bundle in a response that differs from the served one is pushed
 *   as ROOTCA before the new `default`, so Envoy trusts the new root first;
 * - a tick every `checkIntervalMs` compares the wall clock with where it
 *   should be; a jump (or any tick finding the renewal due) renews at once
 *   what is due or expired, cancelling a pending backoff when a jump is seen.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { asCastellanError, CastellanError, type ErrorKind } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { parseSpiffeId } from '../spiffe/id.ts';
import {
  ALL_RESOURCE,
  DEFAULT_RESOURCE,
  ROOTCA_RESOURCE,
  spiffeValidatorSnapshot,
  tlsCertificateSnapshot,
  trustDomainResourceName,
  validationContextSnapshot,
  type SecretSnapshot,
  type SecretStore,
} from '../sds/resources.ts';
import { authorityKeyIdOf, bundleEarliestExpiry, chainsTo, leafInfo, splitPemCertificates } from './cert-info.ts';
import { newKeyAndCsr, type KeyAndCsr, type KeyType } from './csr.ts';
import { FederatedBundles, type FederatedBundle, type FederatedBundleInput } from './federation.ts';

/**
 * Where certificates come from: the CA client, or a fake in tests. Resolves
 * to the Istio chain [leaf, intermediates…, trust bundle]; rejects with a
 * CastellanError whose kind says whether retrying may help.
 */
export interface CertificateSource {
  /**
   * Returns the CA's answer for `csrPem` (leaf first, bundle last). `current`
   * is the certificate served now, if still valid: a source may authenticate
   * with it (mTLS renewal) instead of the service-account token.
   */
  sign(csrPem: string, ttlSeconds: number, current?: Pick<IssuedCertificate, 'chainPem' | 'keyPem' | 'serial' | 'notAfter'>): Promise<string[]>;
}

/** Error kinds the Istio agent retries (gRPC CANCELLED arrives as ABORTED). */
export const RETRYABLE_KINDS: ReadonlySet<ErrorKind> = new Set(['UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED', 'INTERNAL', 'DEADLINE_EXCEEDED']);

export interface IssuedCertificate {
  /** Leaf + intermediates, PEM. */
  chainPem: string;
  /** PKCS#8 PEM: a secret. */
  keyPem: string;
  bundlePem: string;
  serial: string;
  spiffeId: string;
  /** ms since epoch */
  notBefore: number;
  notAfter: number;
  /** When renewal is scheduled, ms since epoch. */
  renewAt: number;
  /** True when this issuance changed the trust bundle (not for the first one). */
  bundleChanged: boolean;
  /** Hex key id of the authority that signed the leaf (its authority key identifier). */
  issuerKeyId?: string;
}

export interface SecretCacheOptions {
  source: CertificateSource;
  /** Requested certificate lifetime, ms. */
  ttlMs: number;
  keyType?: KeyType;
  /** Fraction of the lifetime left when renewal starts (0 < r < 1). Default 0.5. */
  graceRatio?: number;
  /** ± added to graceRatio, uniformly. Default 0.02. */
  jitter?: number;
  /** If set, a leaf must carry one SPIFFE ID of this trust domain. */
  trustDomain?: string;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  /** Retry delays, ms. Default 1 s doubling to 60 s. */
  backoff?: { initialMs: number; maxMs: number };
  /** Clock check period, ms. Default 5000. A deviation above max(1000, period/2) is a jump. */
  checkIntervalMs?: number;
  /** Shortest delay before a renewal, ms (guards against a CA issuing near-expired leaves). Default 500. */
  minRenewDelayMs?: number;
  /** Key + CSR factory (tests may count calls). */
  newKey?: (t: KeyType) => Promise<KeyAndCsr>;
  /** Called after every successful issuance (metrics, output dir, logs). Errors are logged. */
  onIssued?: (c: IssuedCertificate) => void | Promise<void>;
  /** Called after every failed attempt. */
  onFailure?: (e: CastellanError, retryInMs: number) => void;
  /** Called when a pushed bundle changed ROOTCA between issuances. Errors are logged. */
  onBundle?: (bundlePem: string) => void | Promise<void>;
}

export interface CacheStatus {
  ready: boolean;
  /** ms since epoch, undefined until the first issuance */
  defaultNotAfter?: number;
  rootNotAfter?: number;
  consecutiveFailures: number;
  issuances: number;
  clockJumps: number;
}

export class SecretCache implements SecretStore {
  private readonly o: Required<Omit<SecretCacheOptions, 'onIssued' | 'onFailure' | 'onBundle' | 'trustDomain' | 'logger'>> & SecretCacheOptions;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly listeners = new Set<(name: string) => void>();
  private defaultSnap: SecretSnapshot | undefined;
  private rootSnap: SecretSnapshot | undefined;
  private readonly federation: FederatedBundles;
  /** `ALL` and `spiffe://<td>` (own and federated), rebuilt when a bundle changes. */
  private trustSnaps = new Map<string, SecretSnapshot>();
  private servedBundle: string | undefined;
  private current: IssuedCertificate | undefined;
  private rootNotAfter: number | undefined;
  private inFlight: Promise<void> | undefined;
  private renewTimer: TimerHandle | undefined;
  private retryTimer: TimerHandle | undefined;
  private checkTimer: TimerHandle | undefined;
  private lastTick = 0;
  private failures = 0;
  private issuances = 0;
  private jumps = 0;
  private stopped = false;
  private readyWaiters: (() => void)[] = [];
  private againReason: string | undefined;

  constructor(o: SecretCacheOptions) {
    if (!(o.ttlMs > 0)) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'certificate TTL must be positive');
    const grace = o.graceRatio ?? 0.5;
    if (!(grace > 0 && grace < 1)) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `grace ratio must be between 0 and 1 (exclusive), got ${grace}`);
    this.o = {
      keyType: 'ec-p256',
      graceRatio: grace,
      jitter: 0.02,
      clock: systemClock,
      random: Math.random,
      backoff: { initialMs: 1000, maxMs: 60_000 },
      checkIntervalMs: 5000,
      minRenewDelayMs: 500,
      newKey: newKeyAndCsr,
      ...(Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as SecretCacheOptions),
    };
    this.clock = this.o.clock;
    this.logger = o.logger ?? silentLogger();
    this.federation = new FederatedBundles(o.trustDomain, this.logger);
  }

  // --- SecretStore ---
  get(name: string): SecretSnapshot | undefined {
    if (name === DEFAULT_RESOURCE) return this.defaultSnap;
    if (name === ROOTCA_RESOURCE) return this.rootSnap;
    return this.trustSnaps.get(name);
  }

  dynamicNames(): readonly string[] {
    const own = this.ownTrustDomain;
    const foreign = [...this.federation.bundles].filter(([, b]) => b.x509Pem !== '').map(([td]) => trustDomainResourceName(td));
    return [...(own ? [trustDomainResourceName(own)] : []), ...foreign];
  }

  /** This agent's trust domain: configured, else that of the served leaf. */
  get ownTrustDomain(): string | undefined {
    if (this.o.trustDomain) return this.o.trustDomain;
    return this.current ? parseSpiffeId(this.current.spiffeId).trustDomain : undefined;
  }

  /** The validated bundles of the federated trust domains, by trust domain name. */
  get federatedBundles(): ReadonlyMap<string, FederatedBundle> {
    return this.federation.bundles;
  }

  /**
   * The `federated_bundles` of a CA update (the complete set). Each is
   * validated (a bad one: the last good one of its trust domain stays); what
   * changed is pushed as `ALL` and `spiffe://<td>` (and told to every
   * listener, so the Workload API streams follow). Returns the trust domains
   * whose bundle changed.
   */
  applyFederatedBundles(update: ReadonlyMap<string, FederatedBundleInput> | Readonly<Record<string, FederatedBundleInput>>): string[] {
    if (this.stopped) return [];
    const changed = this.federation.apply(update);
    if (changed.length > 0) this.rebuildTrustSnaps(changed.map(trustDomainResourceName));
    return changed;
  }

  /**
   * Rebuilds `ALL` and every `spiffe://<td>` from ROOTCA's bundle and the
   * federated ones, and tells listeners about each that changed or went
   * away. `alsoTell` names are told even when their snapshot is unchanged
   * (a federated domain with no X.509 authority: the Workload API's JWT
   * side still cares).
   */
  private rebuildTrustSnaps(alsoTell: readonly string[] = []): void {
    const own = this.ownTrustDomain;
    const next = new Map<string, SecretSnapshot>();
    if (own && this.servedBundle) {
      const domains: [string, string][] = [[own, this.servedBundle]];
      for (const [td, b] of this.federation.bundles) if (b.x509Pem !== '') domains.push([td, b.x509Pem]);
      next.set(ALL_RESOURCE, spiffeValidatorSnapshot(ALL_RESOURCE, domains));
      for (const [td, pem] of domains) next.set(trustDomainResourceName(td), spiffeValidatorSnapshot(trustDomainResourceName(td), [[td, pem]]));
    }
    const tell = new Set(alsoTell);
    for (const [n, snap] of next) if (this.trustSnaps.get(n)?.version !== snap.version) tell.add(n);
    for (const n of this.trustSnaps.keys()) if (!next.has(n)) tell.add(n);
    this.trustSnaps = next;
    // ALL last: a stream watching ALL and one trust domain sees both in one go either way.
    for (const n of [...tell].filter((x) => x !== ALL_RESOURCE).sort()) this.emit(n);
    if (tell.has(ALL_RESOURCE)) this.emit(ALL_RESOURCE);
  }

  onChange(listener: (name: string) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Number of registered change listeners (one per open SDS stream); for leak tests. */
  get listenerCount(): number {
    return this.listeners.size;
  }

  /** The certificate being served, if any (contains the private key: never log it). */
  get issued(): IssuedCertificate | undefined {
    return this.current;
  }

  status(): CacheStatus {
    const now = this.clock.now();
    return {
      ready: this.defaultSnap !== undefined && this.rootSnap !== undefined && (this.current?.notAfter ?? 0) > now,
      defaultNotAfter: this.current?.notAfter,
      rootNotAfter: this.rootNotAfter,
      consecutiveFailures: this.failures,
      issuances: this.issuances,
      clockJumps: this.jumps,
    };
  }

  /** Starts the first issuance and the clock check. Returns at once; see `whenReady`. */
  start(): void {
    this.lastTick = this.clock.now();
    this.armCheck();
    void this.trigger('initial');
  }

  /** Resolves after the first successful issuance. */
  whenReady(): Promise<void> {
    if (this.current) return Promise.resolve();
    return new Promise((res) => this.readyWaiters.push(res));
  }

  /**
   * Re-issues `default` now (e.g. the trust bundle file changed). Any
   * pending backoff is cancelled. Resolves when the attempt ends (it never rejects).
   */
  reissueNow(reason: string): Promise<void> {
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    return this.trigger(reason, true);
  }

  /** Resolves when no issuance is in flight (tests and shutdown use it). */
  async settled(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  /** Stops every timer; in-flight issuance results are dropped. */
  stop(): void {
    this.stopped = true;
    this.renewTimer?.cancel();
    this.retryTimer?.cancel();
    this.checkTimer?.cancel();
  }

  /**
   * Starts an issuance unless one is in flight. With `again`, a request made
   * while one is in flight runs once more after it (its key may predate the
   * reason, e.g. a new trust bundle); the promise covers both.
   */
  private trigger(reason: string, again = false): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.inFlight) {
      if (!again) return this.inFlight;
      this.againReason = reason;
      return this.inFlight.then(() => this.settled());
    }
    this.inFlight = this.issue(reason).finally(() => {
      this.inFlight = undefined;
      if (this.current) for (const w of this.readyWaiters.splice(0)) w();
      const next = this.againReason;
      this.againReason = undefined;
      if (next !== undefined) void this.trigger(next);
    });
    return this.inFlight;
  }

  private async issue(reason: string): Promise<void> {
    const ttlSeconds = Math.max(1, Math.round(this.o.ttlMs / 1000));
    this.logger.debug({ event: 'agent.issue_start', reason, ttlSeconds }, 'requesting a certificate');
    let got: IssuedCertificate;
    try {
      const kc = await this.o.newKey(this.o.keyType);
      const cur = this.current && this.current.notAfter > this.clock.now() ? this.current : undefined;
      const chain = await this.o.source.sign(kc.csrPem, ttlSeconds, cur);
      got = this.validate(chain, kc.keyPem);
    } catch (e) {
      if (this.stopped) return;
      this.onFailure(asCastellanError(e, 'agent.issue_failed'));
      return;
    }
    if (this.stopped) return;
    this.failures = 0;
    this.issuances++;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    const bundleSnap = validationContextSnapshot(got.bundlePem);
    got.bundleChanged = this.rootSnap !== undefined && this.rootSnap.version !== bundleSnap.version;
    // ROOTCA first: Envoy must trust a new root before it sees a leaf chaining to it.
    if (this.rootSnap?.version !== bundleSnap.version) {
      this.rootSnap = bundleSnap;
      this.servedBundle = got.bundlePem;
      this.rootNotAfter = bundleEarliestExpiry(got.bundlePem);
      this.emit(ROOTCA_RESOURCE);
    }
    this.current = got;
    // ALL and spiffe://<td> follow ROOTCA, before the leaf (a no-op when the bundle is unchanged).
    this.rebuildTrustSnaps();
    this.defaultSnap = tlsCertificateSnapshot(got.chainPem, got.keyPem);
    this.emit(DEFAULT_RESOURCE);
    this.scheduleRenewal(got.renewAt);
    this.logger.info(
      { event: 'agent.issued', reason, spiffeId: got.spiffeId, serial: got.serial, notAfter: new Date(got.notAfter).toISOString(), renewAt: new Date(got.renewAt).toISOString(), bundleChanged: got.bundleChanged },
      'certificate issued',
    );
    try {
      await this.o.onIssued?.(got);
    } catch (e) {
      this.logger.error({ event: 'agent.on_issued_failed', err: e }, 'post-issuance hook failed');
    }
  }

  private validate(chain: string[], keyPem: string): IssuedCertificate {
    const bad = (msg: string, cause?: unknown): CastellanError => new CastellanError('INTERNAL', 'agent.bad_response', `CA response rejected: ${msg}`, { cause });
    if (!Array.isArray(chain) || chain.length < 2) throw bad(`certificate chain has ${Array.isArray(chain) ? chain.length : 0} elements, need at least 2`);
    const now = this.clock.now();
    const leafPem = splitPemCertificates(chain[0]!);
    if (leafPem.length !== 1) throw bad('first element is not exactly one certificate');
    let info;
    try {
      info = leafInfo(leafPem[0]!);
      if (!new X509Certificate(leafPem[0]!).checkPrivateKey(createPrivateKey(keyPem))) throw bad('leaf does not match the key sent in the CSR');
    } catch (e) {
      if (e instanceof CastellanError) throw e;
      throw bad('leaf cannot be parsed', e);
    }
    if (info.notAfter <= now) throw bad('leaf is already expired');
    if (info.uris.length !== 1) throw bad(`leaf has ${info.uris.length} URI SANs, need exactly 1`);
    const id = parseSpiffeId(info.uris[0]!);
    if (this.o.trustDomain && id.trustDomain !== this.o.trustDomain) throw bad(`leaf trust domain is "${id.trustDomain}", expected "${this.o.trustDomain}"`);
    const inter = chain.slice(1, -1).flatMap(splitPemCertificates);
    const bundle = splitPemCertificates(chain[chain.length - 1]!);
    if (bundle.length === 0) throw bad('trust bundle (last element) holds no certificate');
    const start = Math.max(info.notBefore, Math.min(now, info.notAfter));
    const lifetime = info.notAfter - start;
    const ratio = Math.min(0.95, Math.max(0.05, this.o.graceRatio + (this.o.random() * 2 - 1) * this.o.jitter));
    const renewAt = Math.max(now + this.o.minRenewDelayMs, info.notAfter - lifetime * ratio);
    return {
      chainPem: [...leafPem, ...inter].join(''),
      keyPem,
      bundlePem: bundle.join(''),
      serial: info.serial,
      spiffeId: info.uris[0]!,
      notBefore: info.notBefore,
      notAfter: info.notAfter,
      renewAt,
      bundleChanged: false,
      issuerKeyId: authorityKeyIdOf(leafPem[0]!),
    };
  }

  /**
   * A trust-bundle update pushed by the CA (castellan.v1.TrustService).
   * When the served leaf's issuer is tainted, or the leaf no longer chains
   * to the new bundle, `default` is re-issued at once (the response brings
   * the bundle, pushed as ROOTCA before the new leaf); otherwise a changed
   * bundle is pushed as ROOTCA right away (e.g. a prepared root, trusted
   * before it signs anything).
   */
  applyBundleUpdate(u: { bundlePem: string; taintedIds: readonly string[] }): Promise<void> {
    if (this.stopped || splitPemCertificates(u.bundlePem).length === 0) return Promise.resolve();
    const cur = this.current;
    if (cur) {
      const tainted = cur.issuerKeyId !== undefined && u.taintedIds.includes(cur.issuerKeyId);
      let trusted = true;
      try {
        trusted = chainsTo(cur.chainPem, u.bundlePem);
      } catch {
        trusted = false;
      }
      if (tainted || !trusted) {
        this.logger.info({ event: 'agent.reissue_for_bundle', tainted, trusted, issuer: cur.issuerKeyId }, tainted ? 'the issuer of our certificate is tainted: re-issuing now' : 'our certificate no longer chains to the trust bundle: re-issuing now');
        return this.reissueNow(tainted ? 'issuer_tainted' : 'issuer_untrusted');
      }
    }
    const snap = validationContextSnapshot(u.bundlePem);
    if (this.rootSnap?.version !== snap.version) {
      this.rootSnap = snap;
      this.servedBundle = u.bundlePem;
      this.rootNotAfter = bundleEarliestExpiry(u.bundlePem);
      this.logger.info({ event: 'agent.bundle_pushed', roots: splitPemCertificates(u.bundlePem).length }, 'trust bundle changed: ROOTCA pushed');
      this.emit(ROOTCA_RESOURCE);
      this.rebuildTrustSnaps();
      return Promise.resolve(this.o.onBundle?.(u.bundlePem)).then(
        () => undefined,
        (e: unknown) => this.logger.error({ event: 'agent.on_bundle_failed', err: e }, 'bundle hook failed'),
      );
    }
    return Promise.resolve();
  }

  /** The trust bundle served as ROOTCA now (PEM), if any. */
  get bundlePem(): string | undefined {
    return this.servedBundle;
  }

  private onFailure(err: CastellanError): void {
    this.failures++;
    const { initialMs, maxMs } = this.o.backoff;
    let delay: number;
    if (RETRYABLE_KINDS.has(err.kind)) {
      const base = Math.min(maxMs, initialMs * 2 ** Math.min(30, this.failures - 1));
      delay = Math.round(base / 2 + (base / 2) * this.o.random());
    } else {
      delay = maxMs;
    }
    // Never wait more than half of what is left of the current certificate: an attempt timed for the
    // expiry itself lands after it (signing takes time), and halving keeps trying, ever more often, while
    // the certificate still holds, so a CA that comes back in time is used in time.
    if (this.current) delay = Math.max(this.o.minRenewDelayMs, Math.min(delay, (this.current.notAfter - this.clock.now()) / 2));
    this.logger.warn(
      { event: 'agent.issue_failed', kind: err.kind, code: err.code, failures: this.failures, retryInMs: delay, serving: this.current ? this.current.serial : null },
      `certificate request failed: ${err.message}`,
    );
    this.o.onFailure?.(err, delay);
    this.retryTimer?.cancel();
    this.retryTimer = this.clock.setTimer(() => {
      this.retryTimer = undefined;
      void this.trigger('retry');
    }, delay);
  }

  private scheduleRenewal(at: number): void {
    this.renewTimer?.cancel();
    this.renewTimer = this.clock.setTimer(() => {
      this.renewTimer = undefined;
      void this.trigger('renewal');
    }, Math.max(0, at - this.clock.now()));
  }

  private armCheck(): void {
    this.checkTimer = this.clock.setTimer(() => this.check(), this.o.checkIntervalMs);
  }

  private check(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    const expected = this.lastTick + this.o.checkIntervalMs;
    const jumped = Math.abs(now - expected) > Math.max(1000, this.o.checkIntervalMs / 2);
    this.lastTick = now;
    if (jumped) {
      this.jumps++;
      this.logger.warn({ event: 'agent.clock_jump', deltaMs: now - expected }, 'wall clock jumped');
    }
    const due = this.current !== undefined && now >= this.current.renewAt;
    if (due && !this.inFlight && (jumped || !this.retryTimer)) {
      if (jumped) {
        this.retryTimer?.cancel();
        this.retryTimer = undefined;
      }
      void this.trigger(jumped ? 'clock_jump' : 'due');
    }
    this.armCheck();
  }

  private emit(name: string): void {
    for (const l of [...this.listeners]) {
      try {
        l(name);
      } catch (e) {
        this.logger.error({ event: 'agent.listener_failed', err: e }, 'SDS change listener failed');
      }
    }
  }
}
