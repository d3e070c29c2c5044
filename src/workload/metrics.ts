/**
 * Metrics of the agent's Workload API, on the agent's registry:
 * - `castellan_workload_api_calls{method,code}`: calls by result (a stream
 *   counts once, when it opens or is refused);
 * - `castellan_workload_api_streams{method}`: streams open now;
 * - `castellan_workload_api_updates{method}`: responses sent on streams
 *   (first response and every push);
 * - `castellan_workload_jwt_svids_fetched`: JWT-SVIDs handed to workloads;
 * - `castellan_workload_jwt_svids_minted`: JWT-SVIDs the agent obtained from
 *   the CA (misses of its per-audience cache).
 * Istio and SPIRE have no common names for these; the prefix follows the agent's.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface WorkloadMetrics {
  calls: Counter<'method' | 'code'>;
  streams: Gauge<'method'>;
  updates: Counter<'method'>;
  jwtFetched: Counter;
  jwtMinted: Counter;
}

export function createWorkloadMetrics(registry: Registry): WorkloadMetrics {
  const registers = [registry];
  return {
    calls: new Counter({ name: 'castellan_workload_api_calls', help: 'Workload API calls by method and gRPC status', labelNames: ['method', 'code'], registers }),
    streams: new Gauge({ name: 'castellan_workload_api_streams', help: 'Workload API streams open now', labelNames: ['method'], registers }),
    updates: new Counter({ name: 'castellan_workload_api_updates', help: 'Workload API stream responses sent (first and pushed)', labelNames: ['method'], registers }),
    jwtFetched: new Counter({ name: 'castellan_workload_jwt_svids_fetched', help: 'JWT-SVIDs handed to workloads', registers }),
    jwtMinted: new Counter({ name: 'castellan_workload_jwt_svids_minted', help: 'JWT-SVIDs obtained from the CA (cache misses and renewals)', registers }),
  };
}
