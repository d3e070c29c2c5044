/**
 * State machine of one SDS state-of-the-world stream (`StreamSecrets`),
 * free of any transport: the gRPC binding feeds it requests and store
 * changes and writes out what it returns through `send`.
 *
 * Rules (protocols.md §5, Envoy's xDS protocol):
 * - the first request must carry `node.id`; a stream without one is refused;
 * - `type_url`, when set, must be the Secret type URL;
 * - names are allow-listed; an unknown name ends the stream with NOT_FOUND;
 *   a name is checked when it is first asked for, so a trust domain that
 *   stops being federated while watched is just no longer sent (never an
 *   error on the next ACK);
 * - a request with a nonce other than the last one sent is stale: ignored;
 * - a request with the last nonce and no `error_detail` is an ACK, with
 *   `error_detail` a NACK (logged, stream kept); either may change the
 *   subscription; an empty name list unsubscribes from everything;
 * - a response carries every subscribed secret that is available; it is
 *   sent only when one of them is new to the stream or changed since last
 *   sent, so a NACKed version is never sent again and a plain ACK triggers
 *   nothing;
 * - a store change to a watched name triggers a push.
 */
import { create } from '@bufbuild/protobuf';
import { randomBytes } from 'node:crypto';
import {
  DiscoveryResponseSchema,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { checkResourceName, contentVersion, SECRET_TYPE_URL, type SecretStore } from './resources.ts';

export interface SessionOptions {
  store: SecretStore;
  send: (response: DiscoveryResponse) => void;
  logger?: Logger;
  /** Unique per response; random 96-bit hex by default. */
  nonce?: () => string;
}

export function randomNonce(): string {
  return randomBytes(12).toString('hex');
}

export function checkFirstRequest(nodeId: string | undefined, typeUrl: string): void {
  if (!nodeId) throw new CastellanError('INVALID_ARGUMENT', 'sds.missing_node', 'the first SDS request must carry node.id');
  checkTypeUrl(typeUrl);
}

export function checkTypeUrl(typeUrl: string): void {
  if (typeUrl !== '' && typeUrl !== SECRET_TYPE_URL) {
    throw new CastellanError('INVALID_ARGUMENT', 'sds.bad_type_url', `unsupported type_url ${JSON.stringify(typeUrl.slice(0, 200))}: expected ${SECRET_TYPE_URL}`);
  }
}

export class SotwSession {
  private readonly store: SecretStore;
  private readonly sendFn: (r: DiscoveryResponse) => void;
  private readonly logger: Logger | undefined;
  private readonly nonce: () => string;
  private nodeId: string | undefined;
  private subscribed = new Set<string>();
  private lastNonce: string | undefined;
  /** Version of each subscribed secret as last sent on this stream (what prevents resends). */
  private sent = new Map<string, string>();
  private unsubscribeStore: (() => void) | undefined;
  private closed = false;

  constructor(o: SessionOptions) {
    this.store = o.store;
    this.sendFn = o.send;
    this.logger = o.logger;
    this.nonce = o.nonce ?? randomNonce;
  }

  /** The node id of the first request ('' before it). */
  get node(): string {
    return this.nodeId ?? '';
  }

  get subscriptions(): readonly string[] {
    return [...this.subscribed];
  }

  /** Handles one request; throws CastellanError when the stream must end with an error status. */
  handle(req: DiscoveryRequest): void {
    if (this.closed) return;
    if (this.nodeId === undefined) {
      checkFirstRequest(req.node?.id, req.typeUrl);
      this.nodeId = req.node!.id;
      this.unsubscribeStore = this.store.onChange((name) => this.onStoreChange(name));
    } else {
      checkTypeUrl(req.typeUrl);
    }
    for (const n of req.resourceNames) if (!this.subscribed.has(n)) checkResourceName(n, this.store);
    if (req.responseNonce !== '' && req.responseNonce !== this.lastNonce) {
      this.logger?.debug({ event: 'sds.stale_nonce', node: this.nodeId }, 'ignoring request with a stale nonce');
      return;
    }
    if (req.responseNonce !== '' && req.errorDetail) {
      this.logger?.warn(
        { event: 'sds.nack', node: this.nodeId, version: req.versionInfo, code: req.errorDetail.code, detail: req.errorDetail.message.slice(0, 500) },
        'Envoy rejected a secret (NACK)',
      );
    }
    this.subscribed = new Set(req.resourceNames);
    // Forget what was sent for names no longer watched, so watching them again resends them.
    for (const n of [...this.sent.keys()]) if (!this.subscribed.has(n)) this.sent.delete(n);
    this.push();
  }

  /** Stops listening to the store; idempotent. */
  close(): void {
    this.closed = true;
    this.unsubscribeStore?.();
    this.unsubscribeStore = undefined;
  }

  private onStoreChange(name: string): void {
    if (!this.closed && this.subscribed.has(name)) this.push();
  }

  private push(): void {
    const names = [...this.subscribed].sort();
    const snaps = names.map((n) => this.store.get(n)).filter((s) => s !== undefined);
    // Nothing new (a plain ACK, a NACK of the current version, a removed name): say nothing.
    // A name not available yet is pushed by the store change that makes it available.
    if (!snaps.some((s) => this.sent.get(s.name) !== s.version)) return;
    const version = contentVersion(...snaps.map((s) => `${s.name}=${s.version}`));
    const nonce = this.nonce();
    for (const s of snaps) this.sent.set(s.name, s.version);
    this.lastNonce = nonce;
    this.sendFn(
      create(DiscoveryResponseSchema, {
        versionInfo: version,
        typeUrl: SECRET_TYPE_URL,
        nonce,
        resources: snaps.map((s) => s.resource),
      }),
    );
  }
}

/**
 * `FetchSecrets`: the same checks as a first stream request, then every
 * requested secret; UNAVAILABLE if one is not ready yet.
 */
export function fetchSecrets(store: SecretStore, req: DiscoveryRequest, nonce: () => string = randomNonce): DiscoveryResponse {
  checkFirstRequest(req.node?.id, req.typeUrl);
  if (req.resourceNames.length === 0) throw new CastellanError('INVALID_ARGUMENT', 'sds.no_names', 'FetchSecrets needs at least one resource name');
  for (const n of req.resourceNames) checkResourceName(n, store);
  const names = [...new Set(req.resourceNames)].sort();
  const snaps = names.map((n) => {
    const s = store.get(n);
    if (!s) throw new CastellanError('UNAVAILABLE', 'sds.not_ready', `secret "${n}" is not available yet; retry`);
    return s;
  });
  return create(DiscoveryResponseSchema, {
    versionInfo: contentVersion(...snaps.map((s) => `${s.name}=${s.version}`)),
    typeUrl: SECRET_TYPE_URL,
    nonce: nonce(),
    resources: snaps.map((s) => s.resource),
  });
}
