/**
 * Turning @kubernetes/client-node failures into CastellanErrors. client-node
 * v2 throws ApiException (`.code` = HTTP status, `.body` = the response text,
 * usually a metav1 Status) for non-2xx answers, and undici's `TypeError:
 * fetch failed` (the reason in `.cause`) when the API cannot be reached.
 * Messages name the operation and the object, the HTTP status and the
 * Status reason/message the API server gave: never request bodies (which
 * may hold keys) nor headers (which may hold tokens).
 */
import { ApiException } from '@kubernetes/client-node';
import { CastellanError } from '../platform/errors.ts';

/** The parts of a metav1 Status Castellan looks at. */
export interface KubeStatus {
  code?: number;
  reason?: string;
  message?: string;
}

/** HTTP status of an API error, or undefined for transport failures and anything else. */
export function httpStatusOf(e: unknown): number | undefined {
  if (e instanceof ApiException) return e.code;
  const sc = (e as { statusCode?: unknown } | null)?.statusCode;
  return typeof sc === 'number' ? sc : undefined;
}

/** The Status object an API error carried, if it carried one. */
export function kubeStatusOf(e: unknown): KubeStatus | undefined {
  if (!(e instanceof ApiException)) return undefined;
  const body: unknown = e.body;
  let v: unknown = body;
  if (typeof body === 'string') {
    try {
      v = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  if (v === null || typeof v !== 'object') return undefined;
  const s = v as Record<string, unknown>;
  return {
    code: typeof s.code === 'number' ? s.code : undefined,
    reason: typeof s.reason === 'string' ? s.reason : undefined,
    message: typeof s.message === 'string' ? s.message : undefined,
  };
}

export function isStatus(e: unknown, code: number, reason?: string): boolean {
  if (httpStatusOf(e) !== code) return false;
  return reason === undefined || kubeStatusOf(e)?.reason === reason;
}

/** A short, safe description of why a call failed (`503 ServiceUnavailable: etcd is down`, `ECONNREFUSED`). */
export function describeKubeFailure(e: unknown): string {
  const code = httpStatusOf(e);
  if (code !== undefined) {
    const s = kubeStatusOf(e);
    const detail = [s?.reason, s?.message ? clip(s.message) : undefined].filter(Boolean).join(': ');
    return detail ? `HTTP ${code} ${detail}` : `HTTP ${code}`;
  }
  const cause = (e as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  if (cause && typeof cause.code === 'string') return cause.code;
  if (e instanceof DOMException || (e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError'))) return e.name;
  if (e instanceof SyntaxError) return 'the answer was not valid JSON';
  if (e instanceof Error && e.message === 'fetch failed') return 'connection failed';
  return e instanceof Error ? e.name : 'unknown failure';
}

function clip(s: string): string {
  return s.length > 240 ? `${s.slice(0, 240)}…` : s;
}

/** The areas whose API failures kubeFailure names; each has its five codes in the registry (src/platform/errors.ts). */
export type KubeArea = 'bundle' | 'keystore';

/**
 * Maps a failed API call to a CastellanError with code `<prefix>.<what>`:
 * 401/403 → PERMISSION_DENIED `.forbidden` (RBAC), 404 → NOT_FOUND `.not_found`,
 * 409 → ABORTED `.conflict`, other 4xx → FAILED_PRECONDITION `.rejected`,
 * 5xx, 429, transport and garbled answers → UNAVAILABLE `.unavailable`.
 * `action` reads like "get Secret castellan-system/castellan-ca".
 */
export function kubeFailure(e: unknown, prefix: KubeArea, action: string): CastellanError {
  if (e instanceof CastellanError) return e;
  const code = httpStatusOf(e);
  const why = describeKubeFailure(e);
  if (code === 401 || code === 403) {
    return new CastellanError('PERMISSION_DENIED', `${prefix}.forbidden`, `Kubernetes API refused to ${action} (${why}): check the RBAC of Castellan's service account`, { cause: e });
  }
  if (code === 404) return new CastellanError('NOT_FOUND', `${prefix}.not_found`, `cannot ${action}: not found (${why})`, { cause: e });
  if (code === 409) return new CastellanError('ABORTED', `${prefix}.conflict`, `cannot ${action}: conflict (${why})`, { cause: e });
  if (code !== undefined && code >= 400 && code < 500 && code !== 429) {
    return new CastellanError('FAILED_PRECONDITION', `${prefix}.rejected`, `Kubernetes API rejected the request to ${action} (${why})`, { cause: e });
  }
  return new CastellanError('UNAVAILABLE', `${prefix}.unavailable`, `Kubernetes API unavailable: cannot ${action} (${why})`, { cause: e });
}
