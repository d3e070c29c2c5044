/**
 * Federation settings of `castellan server` (docs/federation.md): the bundle
 * endpoint this server serves, and the foreign trust domains it fetches
 * bundles from (`--federate-with TD=URL`, repeatable, and the `federation:`
 * list of the config file, which can say everything).
 */
import { z } from 'zod';
import { parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { CastellanError } from '../platform/errors.ts';
import { parseSpiffeId, validateTrustDomain } from '../spiffe/id.ts';

export const BUNDLE_PROFILES = ['https_spiffe', 'https_web'] as const;
export type BundleProfile = (typeof BUNDLE_PROFILES)[number];

/** The path of the SPIFFE ID a Castellan bundle endpoint presents with https_spiffe. */
export const BUNDLE_ENDPOINT_ID_PATH = '/castellan/bundle-endpoint';

export function defaultEndpointSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}${BUNDLE_ENDPOINT_ID_PATH}`;
}

export interface FederationPeer {
  trustDomain: string;
  /** https:// URL of its bundle endpoint */
  url: string;
  profile: BundleProfile;
  /** https_spiffe: the SPIFFE ID the endpoint must present */
  endpointSpiffeId?: string;
  /** https_spiffe: the foreign bundle to start from when none is stored (SPIFFE JSON or PEM file) */
  bootstrapBundle?: string;
  /** https_web: CA certificates (PEM file) instead of the system roots */
  caFile?: string;
}

export interface FederationConfig {
  endpoint: { listen: string; profile: BundleProfile; certFile?: string; keyFile?: string } | null;
  /** `spiffe_refresh_hint` of the served bundle, seconds */
  refreshHintSeconds: number;
  peers: FederationPeer[];
  /** bounds of the wait between fetches of a foreign bundle, ms */
  refreshMinMs: number;
  refreshMaxMs: number;
}

export const FEDERATION_FLAGS: FlagSpec[] = [
  { name: 'bundle-endpoint-listen', type: 'string', arg: 'ADDR', help: 'serve this trust domain\'s SPIFFE bundle over HTTPS at / on ADDR (host:port); off when unset' },
  { name: 'bundle-endpoint-profile', type: 'string', arg: 'PROFILE', default: 'https_spiffe', help: `how the bundle endpoint authenticates: https_spiffe (an X.509-SVID spiffe://TD${BUNDLE_ENDPOINT_ID_PATH} from this CA) or https_web (--bundle-endpoint-cert/--bundle-endpoint-key)` },
  { name: 'bundle-endpoint-cert', type: 'string', arg: 'PATH', help: 'https_web: the bundle endpoint\'s certificate chain (PEM)' },
  { name: 'bundle-endpoint-key', type: 'string', arg: 'PATH', help: 'https_web: its private key (PEM, 0600)' },
  { name: 'bundle-refresh-hint', type: 'string', arg: 'DUR', default: '5m', help: 'spiffe_refresh_hint of the served bundle' },
  { name: 'federate-with', type: 'string', multiple: true, arg: 'TD=URL', default: [], help: `fetch trust domain TD's bundle from its bundle endpoint URL (https_spiffe, endpoint ID spiffe://TD${BUNDLE_ENDPOINT_ID_PATH}, bootstrapped with "castellan bundle set"); the "federation" key says more` },
  { name: 'federation', type: 'string', structured: true, arg: 'JSON', help: 'foreign trust domains (a YAML list in the config file): trustDomain, bundleEndpointUrl, profile, endpointSpiffeId, bootstrapBundle, caFile' },
  { name: 'federation-refresh-min', type: 'string', arg: 'DUR', default: '30s', help: 'shortest wait between fetches of a foreign bundle (a lower refresh hint is raised to it; also the retry delay after a failure)' },
  { name: 'federation-refresh-max', type: 'string', arg: 'DUR', default: '1h', help: 'longest wait between fetches of a foreign bundle (a higher or missing refresh hint is lowered to it)' },
];

const PeerSchema = z.strictObject({
  trustDomain: z.string(),
  bundleEndpointUrl: z.string(),
  profile: z.enum(BUNDLE_PROFILES).default('https_spiffe'),
  endpointSpiffeId: z.string().optional(),
  bootstrapBundle: z.string().optional(),
  caFile: z.string().optional(),
});

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan server: ${msg}`);
}

function checkPeer(p: z.infer<typeof PeerSchema>, where: string, ownTrustDomain: string): FederationPeer {
  try {
    validateTrustDomain(p.trustDomain);
  } catch (e) {
    throw invalid(`${where}: trust domain "${p.trustDomain}": ${(e as Error).message}`);
  }
  if (p.trustDomain === ownTrustDomain) throw invalid(`${where}: "${p.trustDomain}" is this server's own trust domain`);
  let url: URL;
  try {
    url = new URL(p.bundleEndpointUrl);
  } catch {
    throw invalid(`${where}: "${p.bundleEndpointUrl}" is not a URL`);
  }
  if (url.protocol !== 'https:') throw invalid(`${where}: the bundle endpoint URL must be https://, got "${p.bundleEndpointUrl}"`);
  if (url.username || url.password || url.hash) throw invalid(`${where}: the bundle endpoint URL must not carry credentials or a fragment`);
  if (p.profile === 'https_web') {
    if (p.endpointSpiffeId || p.bootstrapBundle) throw invalid(`${where}: endpointSpiffeId and bootstrapBundle go with profile https_spiffe`);
    return { trustDomain: p.trustDomain, url: url.href, profile: 'https_web', caFile: p.caFile };
  }
  if (p.caFile) throw invalid(`${where}: caFile goes with profile https_web (https_spiffe trusts only the foreign bundle)`);
  const id = p.endpointSpiffeId ?? defaultEndpointSpiffeId(p.trustDomain);
  try {
    parseSpiffeId(id);
  } catch (e) {
    throw invalid(`${where}: endpointSpiffeId: ${(e as Error).message}`);
  }
  return { trustDomain: p.trustDomain, url: url.href, profile: 'https_spiffe', endpointSpiffeId: id, bootstrapBundle: p.bootstrapBundle };
}

function dur(v: FlagValues, k: string): number {
  try {
    return parseDuration(String(v[k]), `--${k}`);
  } catch (e) {
    throw invalid((e as Error).message);
  }
}

export function resolveFederationConfig(v: FlagValues, ownTrustDomain: string): FederationConfig {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' && v[k] !== '' ? (v[k] as string) : undefined);
  const peers: FederationPeer[] = [];
  for (const item of Array.isArray(v['federate-with']) ? (v['federate-with'] as string[]) : []) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw invalid(`--federate-with must be TD=URL, got "${item}"`);
    peers.push(checkPeer({ trustDomain: item.slice(0, eq), bundleEndpointUrl: item.slice(eq + 1), profile: 'https_spiffe' }, `--federate-with ${item}`, ownTrustDomain));
  }
  const raw = s('federation');
  if (raw) {
    let list: unknown;
    try {
      list = JSON.parse(raw);
    } catch (e) {
      throw invalid(`federation: not JSON (${(e as Error).message})`);
    }
    const parsed = z.array(PeerSchema).safeParse(list);
    if (!parsed.success) throw invalid(`federation: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(list)'}: ${i.message}`).join('; ')}`);
    parsed.data.forEach((p, i) => peers.push(checkPeer(p, `federation[${i}]`, ownTrustDomain)));
  }
  const seen = new Set<string>();
  for (const p of peers) {
    if (seen.has(p.trustDomain)) throw invalid(`trust domain "${p.trustDomain}" is federated twice`);
    seen.add(p.trustDomain);
  }
  const listen = s('bundle-endpoint-listen');
  const profile = s('bundle-endpoint-profile') ?? 'https_spiffe';
  if (!(BUNDLE_PROFILES as readonly string[]).includes(profile)) throw invalid(`--bundle-endpoint-profile must be https_spiffe or https_web, got "${profile}"`);
  const certFile = s('bundle-endpoint-cert');
  const keyFile = s('bundle-endpoint-key');
  if (listen && !/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(listen)) throw invalid(`--bundle-endpoint-listen must be host:port, got "${listen}"`);
  if (profile === 'https_web' && listen && (!certFile || !keyFile)) throw invalid('--bundle-endpoint-profile https_web needs --bundle-endpoint-cert and --bundle-endpoint-key');
  if (profile === 'https_spiffe' && (certFile || keyFile)) throw invalid('--bundle-endpoint-cert/--bundle-endpoint-key go with --bundle-endpoint-profile https_web (https_spiffe presents an X.509-SVID of this CA)');
  const hint = dur(v, 'bundle-refresh-hint');
  if (hint < 1000) throw invalid('--bundle-refresh-hint must be at least 1s');
  const refreshMinMs = dur(v, 'federation-refresh-min');
  const refreshMaxMs = dur(v, 'federation-refresh-max');
  if (refreshMinMs < 100) throw invalid('--federation-refresh-min must be at least 100ms');
  if (refreshMaxMs < refreshMinMs) throw invalid('--federation-refresh-max must not be below --federation-refresh-min');
  return {
    endpoint: listen ? { listen, profile: profile as BundleProfile, certFile, keyFile } : null,
    refreshHintSeconds: Math.round(hint / 1000),
    peers,
    refreshMinMs,
    refreshMaxMs,
  };
}
