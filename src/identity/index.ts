/**
 * Token authentication of workloads: a bearer token is tried against the
 * local JWT verifier, then the Kubernetes TokenReview API, in that order;
 * the first that accepts names the caller. If every configured method
 * refuses, the caller gets UNAUTHENTICATED; if the only reason is a backend
 * that cannot be reached, UNAVAILABLE (fail closed, retryable).
 */
import { CastellanError } from '../platform/errors.ts';
import { systemClock, type Clock } from '../platform/clock.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { bearerToken } from './bearer.ts';
import { JwtAuthenticator } from './jwt.ts';
import type { KeyRejectedEvent } from './jwks.ts';
import { TokenReviewAuthenticator, type TokenReviewOptions } from './tokenreview.ts';
import type { Caller, TokenAuthenticator, TokenAuthRequest } from './types.ts';

export type { Caller, TokenAuthenticator, TokenAuthRequest } from './types.ts';
export type { KeyRejectedEvent } from './jwks.ts';

export interface TokenAuthOptions {
  trustDomain: string;
  /** accepted audiences; a token must carry one of them (no fallback) */
  audiences: string[];
  jwt?: { jwksFile?: string; jwksUri?: string; oidcIssuer?: string; issuer?: string; clockToleranceSec?: number };
  tokenReview?: Omit<TokenReviewOptions, 'audiences' | 'trustDomain' | 'clock'>;
  clock?: Clock;
  logger?: Logger;
  /** a JWKS key that will never verify anything (security.md T10); called once per key */
  onKeyRejected?: (e: KeyRejectedEvent) => void;
}

export function createTokenAuthenticator(opts: TokenAuthOptions): TokenAuthenticator {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger();
  const jwt = opts.jwt ? new JwtAuthenticator({ ...opts.jwt, audiences: opts.audiences, trustDomain: opts.trustDomain, clock, logger, onKeyRejected: opts.onKeyRejected }) : undefined;
  const review = opts.tokenReview ? new TokenReviewAuthenticator({ ...opts.tokenReview, audiences: opts.audiences, trustDomain: opts.trustDomain, clock }) : undefined;
  if (!jwt && !review) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'token authentication needs JWT or TokenReview configuration');
  return {
    prepare: async () => jwt?.prepare(),
    async authenticate(req: TokenAuthRequest): Promise<Caller> {
      const token = bearerToken(req.authorization);
      const failures: CastellanError[] = [];
      for (const [name, a] of [['jwt', jwt], ['tokenreview', review]] as const) {
        if (!a) continue;
        try {
          return await a.authenticate(token);
        } catch (e) {
          const err = e instanceof CastellanError ? e : new CastellanError('UNAUTHENTICATED', 'auth.failed', 'token not accepted', { cause: e });
          logger.debug({ event: 'auth.method_refused', method: name, code: err.code }, err.message);
          failures.push(err);
        }
      }
      // When a method could not give an answer (backend down), say so: the
      // caller retries, and the token may well be valid (fail closed).
      throw failures.find((f) => f.kind === 'UNAVAILABLE') ?? failures[0]!;
    },
    close() {
      review?.close();
    },
  };
}
