/**
 * State machine of one incremental SDS stream (`DeltaSecrets`), free of any
 * transport. Envoy's delta xDS rules as they apply to two named secrets:
 * - first request: `node.id` required, `type_url` the Secret type (or empty);
 * - `initial_resource_versions` (first request only): secrets the client
 *   already holds; they are subscribed, and sent only if our version differs;
 * - `resource_names_subscribe` / `_unsubscribe` change the subscription at
 *   any time (unknown names end the stream with NOT_FOUND; `*` is not served);
 *   an unsubscribe needs no answer;
 * - a response lists only secrets that are new to the client or changed
 *   (each with its own version), plus `removed_resources` for secrets the
 *   client holds that the store no longer has; `system_version_info` digests
 *   every version the client holds after the response;
 * - `response_nonce` of an outstanding response without `error_detail` is an
 *   ACK, with it a NACK (logged; the rejected versions are not sent again);
 *   a nonce we did not send (or already answered) is stale: its ACK/NACK
 *   meaning is ignored, but subscription changes in it still apply, as the
 *   protocol makes them independent of nonces.
 */
import { create } from '@bufbuild/protobuf';
import {
  DeltaDiscoveryResponseSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
} from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import type { Logger } from '../platform/logger.ts';
import { checkResourceName, contentVersion, SECRET_TYPE_URL, type SecretStore } from './resources.ts';
import { checkFirstRequest, checkTypeUrl, randomNonce } from './sotw.ts';

export interface DeltaSessionOptions {
  store: SecretStore;
  send: (response: DeltaDiscoveryResponse) => void;
  logger?: Logger;
  nonce?: () => string;
}

/** Most responses awaiting an ACK we remember; older nonces become stale. */
const MAX_OUTSTANDING = 16;

export class DeltaSession {
  private readonly store: SecretStore;
  private readonly sendFn: (r: DeltaDiscoveryResponse) => void;
  private readonly logger: Logger | undefined;
  private readonly nonce: () => string;
  private nodeId: string | undefined;
  private subscribed = new Set<string>();
  /** Version the client holds, per name, as far as we know ('' = unknown, send). */
  private held = new Map<string, string>();
  private outstanding: string[] = [];
  private unsubscribeStore: (() => void) | undefined;
  private closed = false;

  constructor(o: DeltaSessionOptions) {
    this.store = o.store;
    this.sendFn = o.send;
    this.logger = o.logger;
    this.nonce = o.nonce ?? randomNonce;
  }

  get subscriptions(): readonly string[] {
    return [...this.subscribed];
  }

  handle(req: DeltaDiscoveryRequest): void {
    if (this.closed) return;
    const first = this.nodeId === undefined;
    if (first) {
      checkFirstRequest(req.node?.id, req.typeUrl);
    } else {
      checkTypeUrl(req.typeUrl);
    }
    const initial = Object.entries(req.initialResourceVersions);
    // A name is checked when first asked for; one already watched may have stopped being served.
    for (const n of req.resourceNamesSubscribe) if (!this.subscribed.has(n)) checkResourceName(n, this.store);
    for (const n of req.resourceNamesUnsubscribe) if (!this.subscribed.has(n)) checkResourceName(n, this.store);
    for (const [n] of initial) checkResourceName(n, this.store);
    if (first) {
      this.nodeId = req.node!.id;
      this.unsubscribeStore = this.store.onChange((name) => this.onStoreChange(name));
      for (const [n, v] of initial) {
        this.subscribed.add(n);
        this.held.set(n, v);
      }
    }
    if (req.responseNonce !== '') {
      const i = this.outstanding.indexOf(req.responseNonce);
      if (i === -1) {
        this.logger?.debug({ event: 'sds.stale_nonce', node: this.nodeId }, 'ignoring ACK/NACK with a stale nonce');
      } else {
        this.outstanding.splice(i, 1);
        if (req.errorDetail) {
          this.logger?.warn(
            { event: 'sds.nack', node: this.nodeId, code: req.errorDetail.code, detail: req.errorDetail.message.slice(0, 500) },
            'Envoy rejected a secret (delta NACK)',
          );
        }
      }
    }
    for (const n of req.resourceNamesUnsubscribe) {
      this.subscribed.delete(n);
      this.held.delete(n);
    }
    for (const n of req.resourceNamesSubscribe) {
      if (!this.subscribed.has(n)) {
        this.subscribed.add(n);
        // Only names the client tells us it has are skipped; a fresh subscription is always answered.
        this.held.delete(n);
      }
    }
    this.push();
  }

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
    const resources: { name: string; version: string; resource: NonNullable<ReturnType<SecretStore['get']>>['resource'] }[] = [];
    const removed: string[] = [];
    for (const n of names) {
      const s = this.store.get(n);
      if (s) {
        if (this.held.get(n) !== s.version) resources.push({ name: n, version: s.version, resource: s.resource });
      } else if (this.held.has(n) && this.held.get(n) !== '') {
        removed.push(n);
      }
    }
    if (resources.length === 0 && removed.length === 0) return;
    for (const r of resources) this.held.set(r.name, r.version);
    for (const n of removed) this.held.set(n, '');
    const nonce = this.nonce();
    this.outstanding.push(nonce);
    if (this.outstanding.length > MAX_OUTSTANDING) this.outstanding.shift();
    const heldNow = [...this.held.entries()].filter(([, v]) => v !== '').sort(([a], [b]) => (a < b ? -1 : 1));
    this.sendFn(
      create(DeltaDiscoveryResponseSchema, {
        systemVersionInfo: contentVersion(...heldNow.map(([n, v]) => `${n}=${v}`)),
        typeUrl: SECRET_TYPE_URL,
        nonce,
        resources: resources.map((r) => ({ name: r.name, version: r.version, resource: r.resource })),
        removedResources: removed,
      }),
    );
  }
}
