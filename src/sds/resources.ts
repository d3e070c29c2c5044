/**
 * The SDS resources this agent serves and how they are encoded as Envoy
 * `Secret` messages. Names are allow-listed (security.md S2): anything other
 * than `default` and `ROOTCA` is refused, never silently answered.
 */
import { create } from '@bufbuild/protobuf';
import { anyPack, type Any } from '@bufbuild/protobuf/wkt';
import { createHash } from 'node:crypto';
import { SecretSchema, type Secret } from '../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { CastellanError } from '../platform/errors.ts';

/** `DiscoveryResponse.type_url` and every resource's `Any.type_url`. */
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
/** The workload's key and certificate chain. */
export const DEFAULT_RESOURCE = 'default';
/** The trust bundle. */
export const ROOTCA_RESOURCE = 'ROOTCA';
export const RESOURCE_NAMES: readonly string[] = [DEFAULT_RESOURCE, ROOTCA_RESOURCE];

/** One served secret at one version. Immutable. */
export interface SecretSnapshot {
  readonly name: string;
  /** Changes whenever the content changes (a digest of the content). */
  readonly version: string;
  /** The packed `Secret`, ready to put in a response. */
  readonly resource: Any;
}

/**
 * What the SDS state machines read from: the agent's secret cache, or a fake
 * in tests. `get` returns undefined while a secret is not available yet (or
 * was removed); `onChange` listeners run synchronously after every change
 * and the returned function unregisters (callers must call it, S3).
 */
export interface SecretStore {
  get(name: string): SecretSnapshot | undefined;
  onChange(listener: (name: string) => void): () => void;
}

/** Throws NOT_FOUND naming the resource unless it is one this agent serves. */
export function checkResourceName(name: string): void {
  if (!RESOURCE_NAMES.includes(name)) {
    const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name;
    throw new CastellanError(
      'NOT_FOUND',
      'sds.unknown_resource',
      `unknown SDS resource name ${JSON.stringify(shown)}: this agent serves only "default" and "ROOTCA"`,
    );
  }
}

export function contentVersion(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 16);
}

/** `default`: leaf + intermediates (PEM) and the PKCS#8 key (PEM). */
export function tlsCertificateSnapshot(chainPem: string, keyPem: string, name = DEFAULT_RESOURCE): SecretSnapshot {
  const secret: Secret = create(SecretSchema, {
    name,
    type: {
      case: 'tlsCertificate',
      value: {
        certificateChain: { specifier: { case: 'inlineBytes', value: Buffer.from(chainPem) } },
        privateKey: { specifier: { case: 'inlineBytes', value: Buffer.from(keyPem) } },
      },
    },
  });
  return { name, version: contentVersion(chainPem, keyPem), resource: anyPack(SecretSchema, secret) };
}

/** `ROOTCA`: every trusted root (PEM, concatenated). */
export function validationContextSnapshot(bundlePem: string, name = ROOTCA_RESOURCE): SecretSnapshot {
  const secret: Secret = create(SecretSchema, {
    name,
    type: { case: 'validationContext', value: { trustedCa: { specifier: { case: 'inlineBytes', value: Buffer.from(bundlePem) } } } },
  });
  return { name, version: contentVersion(bundlePem), resource: anyPack(SecretSchema, secret) };
}
