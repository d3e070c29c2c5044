/**
 * Fetching foreign bundles from their bundle endpoints (SPIFFE Federation
 * standard), on the replica that leads; the others see the result through
 * the keystore. Each foreign trust domain is fetched at its bundle's
 * `spiffe_refresh_hint`, clamped to [--federation-refresh-min,
 * --federation-refresh-max] (max when the bundle gives none), and again after
 * min when a fetch fails.
 *
 * A fetched bundle replaces the stored one only when everything holds:
 *   - the TLS identity: https_spiffe validates the endpoint's certificate
 *     with that foreign domain's bundle only (the stored one, else the
 *     bootstrap file; never this CA's roots, never system roots), and its
 *     URI SAN must be exactly the configured endpoint SPIFFE ID;
 *     https_web validates with the given CA file, else Node's public roots,
 *     and the URL's host name;
 *   - HTTP 200 with a document that parses (src/spiffe/bundle.ts), at most
 *     MAX_BUNDLE_BYTES, within 10 s;
 *   - a sequence not lower than the stored one (src/ca/federation.ts);
 *   - for https_spiffe, at least one X.509 authority (else the next fetch
 *     could not authenticate the endpoint).
 * Anything else is logged with its reason, counted, and the last good bundle
 * stays in force.
 */
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { isIP } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { fetchedVerdict, withForeignBundle } from '../ca/federation.ts';
import type { LeaderElector } from '../ca/keystore.ts';
import type { CaManager } from '../ca/manager.ts';
import { uriSans } from '../identity/mtls.ts';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import { authoritiesPem, MAX_BUNDLE_BYTES, parseSpiffeBundle, type SpiffeBundle } from '../spiffe/bundle.ts';
import type { FederationConfig, FederationPeer } from './federation-config.ts';
import { parseBundleText, type Federation } from './federation.ts';

const FETCH_TIMEOUT_MS = 10_000;

export type FetchFailure = 'no_bundle' | 'tls' | 'identity' | 'http_status' | 'timeout' | 'too_large' | 'invalid' | 'no_x509_authorities' | 'lower_sequence' | 'same_sequence_changed' | 'store';

class FetchError extends Error {
  readonly reason: FetchFailure;
  constructor(reason: FetchFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}

export interface FederationMetrics {
  lastRefresh: Gauge<'trust_domain'>;
  sequence: Gauge<'trust_domain'>;
  failures: Counter<'trust_domain' | 'reason'>;
}

export function federationMetrics(registry: Registry): FederationMetrics {
  return {
    lastRefresh: new Gauge({ name: 'castellan_federation_last_refresh_timestamp_seconds', help: 'time of the last successful fetch of a foreign bundle (this replica)', labelNames: ['trust_domain'], registers: [registry] }),
    sequence: new Gauge({ name: 'castellan_federation_bundle_sequence', help: 'spiffe_sequence of the stored foreign bundle', labelNames: ['trust_domain'], registers: [registry] }),
    failures: new Counter({ name: 'castellan_federation_refresh_failures_total', help: 'failed fetches of a foreign bundle, by reason (the last good bundle stays in force)', labelNames: ['trust_domain', 'reason'], registers: [registry] }),
  };
}

export interface FetcherOptions {
  config: FederationConfig;
  federation: Federation;
  manager: CaManager;
  leader: LeaderElector;
  metrics: FederationMetrics;
  clock: Clock;
  logger: Logger;
}

/** GET url with the given TLS settings; the body as text. */
function get(url: URL, tls: { ca?: string; checkServerIdentity?: (host: string, cert: { raw: Buffer }) => Error | undefined }): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        headers: { accept: 'application/json' },
        ca: tls.ca,
        ...(tls.checkServerIdentity ? { checkServerIdentity: tls.checkServerIdentity as never } : {}),
        servername: isIP(url.hostname.replace(/^\[|\]$/g, '')) ? undefined : url.hostname,
        rejectUnauthorized: true,
        agent: false,
        timeout: FETCH_TIMEOUT_MS,
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new FetchError('http_status', `HTTP ${res.statusCode}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BUNDLE_BYTES) {
            req.destroy(new FetchError('too_large', `the document is larger than ${MAX_BUNDLE_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new FetchError('timeout', `no answer within ${FETCH_TIMEOUT_MS / 1000}s`)));
    req.on('error', (e) => reject(e instanceof FetchError ? e : new FetchError('tls', `${(e as NodeJS.ErrnoException).code ?? 'error'}: ${e.message}`)));
    req.end();
  });
}

export class FederationFetcher {
  private readonly o: FetcherOptions;
  private readonly timers = new Map<string, TimerHandle>();
  private readonly running = new Set<Promise<unknown>>();
  private closed = false;

  constructor(o: FetcherOptions) {
    this.o = o;
  }

  start(): void {
    for (const p of this.o.config.peers) {
      this.o.federation.fetchStatus.set(p.trustDomain, { endpointUrl: p.url });
      const stored = this.o.federation.find(p.trustDomain);
      if (stored) this.o.metrics.sequence.set({ trust_domain: p.trustDomain }, stored.record.sequence);
      this.schedule(p, 0);
    }
    this.o.leader.onChange((l) => {
      if (l) for (const p of this.o.config.peers) this.schedule(p, 0);
    });
  }

  private schedule(p: FederationPeer, ms: number): void {
    if (this.closed) return;
    this.timers.get(p.trustDomain)?.cancel();
    this.timers.set(p.trustDomain, this.o.clock.setTimer(() => void this.track(this.refresh(p)), ms));
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
    return p;
  }

  /** The foreign bundle that authenticates an https_spiffe endpoint: the stored one, else the bootstrap file. */
  private async trustFor(p: FederationPeer): Promise<SpiffeBundle> {
    const stored = this.o.federation.find(p.trustDomain);
    if (stored) return stored.bundle;
    if (!p.bootstrapBundle) throw new FetchError('no_bundle', `no bundle of ${p.trustDomain} is stored to authenticate its endpoint: set one with "castellan bundle set --trust-domain ${p.trustDomain}" or give bootstrapBundle`);
    try {
      return parseBundleText(p.trustDomain, await readFile(p.bootstrapBundle, 'utf8'), '', p.bootstrapBundle);
    } catch (e) {
      throw new FetchError('no_bundle', `bootstrap bundle ${p.bootstrapBundle}: ${(e as Error).message}`);
    }
  }

  /** Fetches and validates once; the fetched bundle. */
  async fetch(p: FederationPeer): Promise<SpiffeBundle> {
    const url = new URL(p.url);
    let body: string;
    if (p.profile === 'https_spiffe') {
      const trust = await this.trustFor(p);
      if (trust.x509Authorities.length === 0) throw new FetchError('no_bundle', `the bundle of ${p.trustDomain} held has no X.509 authority to authenticate its endpoint`);
      const want = p.endpointSpiffeId!;
      let identityProblem: string | undefined;
      body = await get(url, {
        ca: authoritiesPem(trust.x509Authorities),
        checkServerIdentity: (_host, cert) => {
          const ids = uriSans(cert.raw);
          if (ids.length === 1 && ids[0] === want) return undefined;
          identityProblem = `the endpoint presented ${ids.length === 0 ? 'no SPIFFE ID' : ids.join(', ')}, not ${want}`;
          return new Error(identityProblem);
        },
      }).catch((e: unknown) => {
        throw identityProblem ? new FetchError('identity', identityProblem) : e;
      });
    } else {
      body = await get(url, { ca: p.caFile ? await readFile(p.caFile, 'utf8') : undefined });
    }
    let bundle: SpiffeBundle;
    try {
      bundle = parseSpiffeBundle(body, p.trustDomain, 'the served document');
    } catch (e) {
      throw new FetchError('invalid', (e as Error).message);
    }
    if (p.profile === 'https_spiffe' && bundle.x509Authorities.length === 0) throw new FetchError('no_x509_authorities', 'the bundle has no X.509 authority (it could not authenticate the next fetch)');
    return bundle;
  }

  /** One refresh of `p`: fetch, validate, store when it changed; then re-arms. */
  async refresh(p: FederationPeer): Promise<void> {
    const { federation, metrics, logger, clock, config } = this.o;
    if (this.closed) return;
    if (!this.o.leader.isLeader()) return this.schedule(p, config.refreshMaxMs);
    const status = federation.fetchStatus.get(p.trustDomain) ?? { endpointUrl: p.url };
    federation.fetchStatus.set(p.trustDomain, status);
    const labels = { trust_domain: p.trustDomain };
    try {
      const bundle = await this.fetch(p);
      let verdict: ReturnType<typeof fetchedVerdict> = 'same';
      await this.o.manager
        .updateDocument((doc) => {
          verdict = fetchedVerdict(federation.find(p.trustDomain), bundle);
          if (verdict === 'same' || verdict !== undefined) return doc;
          return withForeignBundle(doc, bundle, { source: 'endpoint', endpointUrl: p.url, now: clock.now() });
        })
        .catch((e: unknown) => {
          throw new FetchError('store', `could not store it: ${(e as Error).message}`);
        });
      const v = verdict as ReturnType<typeof fetchedVerdict>;
      if (v !== undefined && v !== 'same') throw new FetchError(v.reason, v.message);
      status.lastSuccess = clock.now();
      status.lastError = undefined;
      metrics.lastRefresh.set(labels, Math.floor(clock.now() / 1000));
      metrics.sequence.set(labels, bundle.sequence ?? 0);
      if (v === undefined) logger.info({ event: 'federation.bundle_updated', trustDomain: p.trustDomain, url: p.url, sequence: bundle.sequence ?? 0, x509: bundle.x509Authorities.length, jwt: bundle.jwtAuthorities.length }, `bundle of ${p.trustDomain} updated from its endpoint`);
      const hintMs = bundle.refreshHintSeconds === undefined ? config.refreshMaxMs : bundle.refreshHintSeconds * 1000;
      this.schedule(p, Math.min(config.refreshMaxMs, Math.max(config.refreshMinMs, hintMs)));
    } catch (e) {
      const err = e instanceof FetchError ? e : new FetchError('tls', (e as Error).message);
      status.lastError = `${err.reason}: ${err.message}`;
      metrics.failures.inc({ ...labels, reason: err.reason });
      logger.warn({ event: 'federation.refresh_failed', trustDomain: p.trustDomain, url: p.url, reason: err.reason, err: err.message }, `could not refresh the bundle of ${p.trustDomain} (${err.reason}: ${err.message}); keeping the last good one`);
      this.schedule(p, config.refreshMinMs);
    }
  }

  /** Resolves when no fetch is in progress (tests). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers.values()) t.cancel();
    await this.idle();
  }
}
