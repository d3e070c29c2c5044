/**
 * Prometheus metrics of the agent, named as the Istio agent names them so
 * existing dashboards work (no `_total` suffix):
 * - `cert_expiry_seconds{resource_name}`: seconds until the served
 *   certificate (`default`) or the earliest root of the bundle (`ROOTCA`)
 *   expires; computed at scrape time;
 * - `num_outgoing_requests{request_type}` / `num_failed_outgoing_requests`:
 *   calls to the CA (`request_type="csr"`);
 * - `outgoing_latency{request_type}`: total milliseconds spent in those calls
 *   (a sum, like Istio's; divide by num_outgoing_requests for the mean).
 * Plus Castellan's own: `castellan_agent_issuances`, `castellan_agent_clock_jumps`,
 * `castellan_agent_sds_streams`, `castellan_agent_ready`, and for federation
 * `castellan_agent_federated_bundle_sequence{trust_domain}` (the sequence of
 * each foreign bundle served; compare with the CA's
 * `castellan_federation_bundle_sequence`) and `cert_expiry_seconds` with
 * `resource_name="spiffe://<td>"`: the earliest expiry among a foreign
 * trust domain's roots.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Clock } from '../platform/clock.ts';
import type { CacheStatus } from './cache.ts';
import { bundleEarliestExpiry } from './cert-info.ts';
import type { FederatedBundle } from './federation.ts';

export interface AgentMetrics {
  registry: Registry;
  outgoingRequests: Counter<'request_type'>;
  failedOutgoingRequests: Counter<'request_type'>;
  outgoingLatency: Counter<'request_type'>;
}

export interface MetricsSources {
  status?: () => CacheStatus;
  /** The validated foreign bundles, by trust domain. */
  federated?: () => ReadonlyMap<string, Pick<FederatedBundle, 'x509Pem' | 'sequence'>>;
  streams?: () => number;
  clock?: Clock;
}

export function createAgentMetrics(src: MetricsSources = {}, opts: { processMetrics?: boolean } = {}): AgentMetrics & { bind(s: MetricsSources): void } {
  const registry = new Registry();
  let sources = src;
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const now = (): number => (sources.clock ? sources.clock.now() : Date.now());
  new Gauge({
    name: 'cert_expiry_seconds',
    help: 'Seconds until the served certificate (default) or the earliest trusted root (ROOTCA) expires',
    labelNames: ['resource_name'],
    registers: [registry],
    collect() {
      const st = sources.status?.();
      this.reset();
      if (st?.defaultNotAfter !== undefined) this.set({ resource_name: 'default' }, (st.defaultNotAfter - now()) / 1000);
      if (st?.rootNotAfter !== undefined) this.set({ resource_name: 'ROOTCA' }, (st.rootNotAfter - now()) / 1000);
      for (const [td, b] of sources.federated?.() ?? []) {
        const t = b.x509Pem === '' ? undefined : bundleEarliestExpiry(b.x509Pem);
        if (t !== undefined) this.set({ resource_name: `spiffe://${td}` }, (t - now()) / 1000);
      }
    },
  });
  new Gauge({
    name: 'castellan_agent_federated_bundle_sequence',
    help: 'spiffe_sequence of each federated trust domain\'s bundle the agent serves',
    labelNames: ['trust_domain'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [td, b] of sources.federated?.() ?? []) this.set({ trust_domain: td }, Number(b.sequence));
    },
  });
  new Gauge({
    name: 'castellan_agent_ready',
    help: '1 when a valid certificate and trust bundle are being served',
    registers: [registry],
    collect() {
      this.set(sources.status?.().ready ? 1 : 0);
    },
  });
  new Gauge({
    name: 'castellan_agent_issuances',
    help: 'Certificates obtained since start',
    registers: [registry],
    collect() {
      this.set(sources.status?.().issuances ?? 0);
    },
  });
  new Gauge({
    name: 'castellan_agent_clock_jumps',
    help: 'Wall-clock jumps detected since start',
    registers: [registry],
    collect() {
      this.set(sources.status?.().clockJumps ?? 0);
    },
  });
  new Gauge({
    name: 'castellan_agent_sds_streams',
    help: 'Open SDS streams',
    registers: [registry],
    collect() {
      this.set(sources.streams?.() ?? 0);
    },
  });
  return {
    registry,
    outgoingRequests: new Counter({ name: 'num_outgoing_requests', help: 'Requests sent to the CA', labelNames: ['request_type'], registers: [registry] }),
    failedOutgoingRequests: new Counter({ name: 'num_failed_outgoing_requests', help: 'Failed requests to the CA', labelNames: ['request_type'], registers: [registry] }),
    outgoingLatency: new Counter({ name: 'outgoing_latency', help: 'Total milliseconds spent in requests to the CA', labelNames: ['request_type'], registers: [registry] }),
    bind(s: MetricsSources) {
      sources = { ...sources, ...s };
    },
  };
}
