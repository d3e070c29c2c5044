/**
 * Prometheus metrics of `castellan authz serve` (prom-client, own registry).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface AuthzMetrics {
  readonly registry: Registry;
  /** Decisions by result (ALLOW/DENY) and by the deciding action (ALLOW, DENY, CUSTOM, or none for a default). */
  readonly decisions: Counter<'decision' | 'action'>;
  /** Check requests answered with a denial because they could not be mapped or evaluated. */
  readonly checkErrors: Counter<'reason'>;
  readonly checkDuration: Histogram;
  readonly policies: Gauge;
  readonly reloads: Counter<'result'>;
  readonly lastReloadSuccess: Gauge;
}

export function createAuthzMetrics(opts: { defaultMetrics?: boolean } = {}): AuthzMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  return {
    registry,
    decisions: new Counter({ name: 'castellan_authz_decisions_total', help: 'authorization decisions by result and deciding action', labelNames: ['decision', 'action'], registers: [registry] }),
    checkErrors: new Counter({ name: 'castellan_authz_check_errors_total', help: 'check requests denied because they could not be evaluated', labelNames: ['reason'], registers: [registry] }),
    checkDuration: new Histogram({
      name: 'castellan_authz_check_duration_seconds',
      help: 'time to answer an ext_authz Check',
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01],
      registers: [registry],
    }),
    policies: new Gauge({ name: 'castellan_authz_policies', help: 'policies in the active set', registers: [registry] }),
    reloads: new Counter({ name: 'castellan_authz_policy_reloads_total', help: 'policy reloads by result (ok, error)', labelNames: ['result'], registers: [registry] }),
    lastReloadSuccess: new Gauge({ name: 'castellan_authz_policy_last_reload_success_timestamp_seconds', help: 'when the active policy set was loaded, Unix seconds', registers: [registry] }),
  };
}
