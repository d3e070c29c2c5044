/**
 * The SDS resources this agent serves and how they are encoded as Envoy
 * `Secret` messages. Names are allow-listed (security.md S2): `default`,
 * `ROOTCA`, `ALL`, and `spiffe://<td>` for this agent's trust domain and each
 * one it federates with now (the store says which); anything else is
 * refused, never silently answered.
 *
 * Trust bundles, as SPIRE's agent serves them (issue 17):
 * - `ROOTCA`: this trust domain's roots as a plain `trusted_ca`, unchanged,
 *   for clients that ask for it by name (Istio's name);
 * - `ALL` (SPIRE's `default_all_bundles_name`): a validation context whose
 *   `custom_validator_config` is `envoy.tls.cert_validator.spiffe` with one
 *   `SPIFFECertValidatorConfig.trust_domains` entry per trust domain (own
 *   included, sorted by name), each with its roots inline: Envoy then checks
 *   a peer's chain only against the roots of the trust domain in the peer's
 *   SPIFFE ID, so a foreign root vouches for its own trust domain alone;
 * - `spiffe://<td>`: the same validator with that one trust domain (SPIRE
 *   serves this form to Envoy 1.18 and later; a plain `trusted_ca` would let
 *   the root vouch for any SPIFFE ID).
 */
import { create } from '@bufbuild/protobuf';
import { anyPack, type Any } from '@bufbuild/protobuf/wkt';
import { createHash } from 'node:crypto';
import { SecretSchema, type Secret } from '../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import { CastellanError } from '../platform/errors.ts';

/** `DiscoveryResponse.type_url` and every resource's `Any.type_url`. */
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
/** The workload's key and certificate chain. */
export const DEFAULT_RESOURCE = 'default';
/** The trust bundle. */
export const ROOTCA_RESOURCE = 'ROOTCA';
/** Every trust domain's bundle, in Envoy's SPIFFE validator (SPIRE's name for it). */
export const ALL_RESOURCE = 'ALL';
/** The names Istio's sidecars ask for (and every example here uses). */
export const RESOURCE_NAMES: readonly string[] = [DEFAULT_RESOURCE, ROOTCA_RESOURCE];
/** Names served whatever the trust domains: the Istio names and `ALL`. */
export const STATIC_RESOURCE_NAMES: readonly string[] = [...RESOURCE_NAMES, ALL_RESOURCE];
/** `custom_validator_config.name` of Envoy's SPIFFE certificate validator. */
export const SPIFFE_VALIDATOR_NAME = 'envoy.tls.cert_validator.spiffe';
export const SPIFFE_VALIDATOR_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';

/** The resource name of one trust domain's bundle: its SPIFFE ID, `spiffe://<td>`. */
export function trustDomainResourceName(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

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
  /**
   * The names beyond STATIC_RESOURCE_NAMES the store serves now (`spiffe://<td>`
   * of its own and each federated trust domain). Absent: none.
   */
  dynamicNames?(): readonly string[];
}

/** Whether `name` is one the store serves now (static or one of its dynamic names). */
export function isServedName(name: string, store?: SecretStore): boolean {
  return STATIC_RESOURCE_NAMES.includes(name) || (store?.dynamicNames?.().includes(name) ?? false);
}

/** Throws NOT_FOUND naming the resource unless it is one this agent serves now. */
export function checkResourceName(name: string, store?: SecretStore): void {
  if (!isServedName(name, store)) {
    const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name;
    throw new CastellanError(
      'NOT_FOUND',
      'sds.unknown_resource',
      `unknown SDS resource name ${JSON.stringify(shown)}: this agent serves only "default", "ROOTCA", "ALL" and "spiffe://<trust domain>" of its own and each federated trust domain`,
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

/**
 * A validation context in Envoy's SPIFFE validator: one entry per trust
 * domain (`[trust domain, roots PEM]`, sorted here by name), each trusted
 * only for SPIFFE IDs of that trust domain.
 */
export function spiffeValidatorSnapshot(name: string, domains: readonly (readonly [string, string])[]): SecretSnapshot {
  const sorted = [...domains].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const config = create(SPIFFECertValidatorConfigSchema, {
    trustDomains: sorted.map(([td, pem]) => ({ name: td, trustBundle: { specifier: { case: 'inlineBytes' as const, value: Buffer.from(pem) } } })),
  });
  const secret: Secret = create(SecretSchema, {
    name,
    type: {
      case: 'validationContext',
      value: { customValidatorConfig: { name: SPIFFE_VALIDATOR_NAME, typedConfig: anyPack(SPIFFECertValidatorConfigSchema, config) } },
    },
  });
  return { name, version: contentVersion('spiffe', ...sorted.flatMap(([td, pem]) => [td, pem])), resource: anyPack(SecretSchema, secret) };
}
