/** Who is calling: the result of authentication, and the authenticator port. */
import type { WorkloadIdentity } from '../spiffe/id.ts';

export interface Caller {
  /** spiffe://<trustDomain>/ns/<ns>/sa/<sa> */
  readonly spiffeId: string;
  readonly identity: WorkloadIdentity;
  readonly method: 'mtls' | 'jwt' | 'tokenreview';
  /** ms since epoch: when the credential expires, if known */
  readonly expiresAt?: number;
  readonly pod?: { name?: string; uid?: string };
}

export interface TokenAuthRequest {
  /** every value of the gRPC `authorization` metadata key */
  readonly authorization: readonly string[];
}

/** Authenticates a bearer token. Throws CastellanError UNAUTHENTICATED (bad token) or UNAVAILABLE (backend down). */
export interface TokenAuthenticator {
  authenticate(req: TokenAuthRequest): Promise<Caller>;
  /** One-time start-up checks (e.g. OIDC discovery); throws a configuration error. */
  prepare?(): Promise<void>;
  close(): void;
}
