/**
 * A small SDS client over grpc-js (what Envoy does, reduced to the demo's
 * needs): one StreamSecrets stream asking for `default` and `ROOTCA`, ACKing
 * every response, reporting each complete (key, chain, bundle) set, and
 * reconnecting with a capped backoff if the stream breaks.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { SecretSchema } from '../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { DiscoveryRequestSchema, type DiscoveryResponse } from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../grpc/service.ts';
import { DEFAULT_RESOURCE, ROOTCA_RESOURCE, SECRET_TYPE_URL } from '../sds/resources.ts';

export interface WorkloadSecrets {
  /** PKCS#8 PEM: a secret. */
  keyPem: string;
  /** Leaf + intermediates. */
  chainPem: string;
  bundlePem: string;
  /** version_info of the response that completed this set */
  version: string;
}

export interface SdsWatch {
  close(): void;
}

function bytesText(ds: { specifier: { case: string | undefined; value?: unknown } } | undefined): string {
  if (!ds) return '';
  const v = ds.specifier.value;
  if (ds.specifier.case === 'inlineBytes') return Buffer.from(v as Uint8Array).toString('utf8');
  if (ds.specifier.case === 'inlineString') return v as string;
  return '';
}

/** Extracts key/chain (`default`) and bundle (`ROOTCA`) from one response. */
export function secretsOf(res: DiscoveryResponse): { keyPem?: string; chainPem?: string; bundlePem?: string } {
  const out: { keyPem?: string; chainPem?: string; bundlePem?: string } = {};
  for (const a of res.resources) {
    const s = anyUnpack(a, SecretSchema);
    if (!s) continue;
    if (s.name === DEFAULT_RESOURCE && s.type.case === 'tlsCertificate') {
      out.keyPem = bytesText(s.type.value.privateKey);
      out.chainPem = bytesText(s.type.value.certificateChain);
    } else if (s.name === ROOTCA_RESOURCE && s.type.case === 'validationContext') {
      out.bundlePem = bytesText(s.type.value.trustedCa);
    }
  }
  return out;
}

export function watchSecrets(socketPath: string, nodeId: string, onUpdate: (s: WorkloadSecrets) => void, onError?: (e: Error) => void): SdsWatch {
  const client = createClient(SecretDiscoveryService, `unix:${socketPath}`, grpc.credentials.createInsecure());
  let closed = false;
  let stream: grpc.ClientDuplexStream<unknown, DiscoveryResponse> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let delay = 200;
  const have: { keyPem?: string; chainPem?: string; bundlePem?: string } = {};
  const names = [DEFAULT_RESOURCE, ROOTCA_RESOURCE];

  const open = (): void => {
    if (closed) return;
    const s = client.streamSecrets();
    stream = s as unknown as grpc.ClientDuplexStream<unknown, DiscoveryResponse>;
    s.on('data', (res: DiscoveryResponse) => {
      delay = 200;
      Object.assign(have, Object.fromEntries(Object.entries(secretsOf(res)).filter(([, v]) => v)));
      s.write(create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNames: names, versionInfo: res.versionInfo, responseNonce: res.nonce }));
      if (have.keyPem && have.chainPem && have.bundlePem) {
        onUpdate({ keyPem: have.keyPem, chainPem: have.chainPem, bundlePem: have.bundlePem, version: res.versionInfo });
      }
    });
    const again = (e?: Error): void => {
      if (closed || stream !== (s as unknown)) return;
      stream = undefined;
      if (e) onError?.(e);
      retry = setTimeout(open, delay);
      delay = Math.min(delay * 2, 5000);
    };
    s.on('error', (e: Error) => again(e));
    s.on('end', () => again());
    s.write(create(DiscoveryRequestSchema, { node: { id: nodeId }, typeUrl: SECRET_TYPE_URL, resourceNames: names }));
  };
  open();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      stream?.cancel();
      client.close();
    },
  };
}
