/**
 * Strict parsing of the `authorization` metadata (security.md T9): exactly
 * one value, exactly `Bearer <JWS compact>` (scheme case-insensitive, one
 * space), at most 16 KiB.
 */
import { CastellanError, type ErrorCode } from '../platform/errors.ts';
import { isDns1123Label, isDns1123Subdomain } from '../spiffe/id.ts';

export const MAX_TOKEN_BYTES = 16 * 1024;
const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/i;

export function unauthenticated(code: ErrorCode, msg: string, cause?: unknown): CastellanError {
  return new CastellanError('UNAUTHENTICATED', code, msg, { cause });
}

export function bearerToken(authorization: readonly string[]): string {
  if (authorization.length === 0) throw unauthenticated('auth.no_credentials', 'no authorization header');
  if (authorization.length > 1) throw unauthenticated('auth.bad_header', 'more than one authorization header');
  const v = authorization[0]!;
  if (v.length > MAX_TOKEN_BYTES + 7) throw unauthenticated('auth.bad_header', `token larger than ${MAX_TOKEN_BYTES} bytes`);
  const m = BEARER.exec(v);
  if (!m) throw unauthenticated('auth.bad_header', 'authorization must be "Bearer <JWT>"');
  return m[1]!;
}

/** Parses `system:serviceaccount:<ns>:<sa>` with DNS-1123 names; null for anything else. */
export function parseServiceAccountUser(s: unknown): { namespace: string; serviceAccount: string } | null {
  if (typeof s !== 'string') return null;
  const parts = s.split(':');
  if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') return null;
  const [, , namespace, serviceAccount] = parts as [string, string, string, string];
  if (!isDns1123Label(namespace) || !isDns1123Subdomain(serviceAccount)) return null;
  return { namespace, serviceAccount };
}
