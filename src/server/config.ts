/**
 * Configuration of `castellan server`: the flag table (also the config-file
 * keys and CASTELLAN_* variables, see src/config/flags.ts) and its
 * validation into a typed ServerConfig.
 */
import { availableParallelism } from 'node:os';
import { CastellanError } from '../platform/errors.ts';
import { parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { validateTrustDomain } from '../spiffe/id.ts';
import { CA_KEY_TYPES, type CaKeyType } from '../ca/keys.ts';
import { JWT_SERVER_FLAGS, resolveJwtSvidConfig, type JwtSvidConfig } from './jwt-service.ts';
import { FEDERATION_FLAGS, resolveFederationConfig, type FederationConfig } from './federation-config.ts';
import { parseTrustedNodeAccounts, type NodeAccount } from '../identity/impersonation.ts';

export interface ServerConfig {
  dataDir: string;
  trustDomain: string;
  caKeyType: CaKeyType;
  /** ms */
  rootTtlMs: number;
  /** Istio "cacerts" directory: plug-in mode when set. */
  cacertsDir?: string;
  /** ms; used when a request asks for 0 */
  defaultTtlMs: number;
  /** ms; longer requests are refused with INVALID_ARGUMENT */
  maxTtlMs: number;
  /** host:port or unix:/path */
  grpcListen: string;
  serverDns: string[];
  plaintext: boolean;
  /** host:port for /metrics /healthz /readyz, or null for none */
  httpListen: string | null;
  auth: {
    audiences: string[];
    jwt?: { jwksFile?: string; jwksUri?: string; oidcIssuer?: string; issuer?: string };
    tokenReview?: { kubeconfig?: string };
  };
  signer: { workers: number; maxBatchSize: number; maxBatchWaitMs: number; maxQueue: number; nice?: number };
  /** Largest CreateCertificate request accepted, bytes. */
  maxRequestBytes: number;
  /**
   * Calls one client connection may have open at once (HTTP/2
   * SETTINGS_MAX_CONCURRENT_STREAMS); further calls wait in the client.
   */
  maxConcurrentStreams: number;
  logLevel: string;
  /** ms to let in-flight calls finish on SIGTERM */
  shutdownGraceMs: number;
  keystore: { kind: 'file' } | { kind: 'kubernetes'; secretNamespace: string; secretName: string; leaseNamespace: string; leaseName: string; kubeconfig?: string };
  /** ConfigMap istio-ca-root-cert in every namespace matching the selector ('' = all) */
  publishTrustBundle: { namespaceSelector: string } | null;
  /** Unix socket of the admin API (castellan ca …); default <dataDir>/admin.sock */
  adminSocket?: string;
  /** ms a prepared authority must be in the bundle before it may be activated */
  propagationMs: number;
  /** rotate self-signed roots automatically (on the leader) */
  autoRotate: boolean;
  /** CreateCertificate calls per second (burst: one second's worth); 0 = unlimited */
  rateLimits: { perPeer: number; perIdentity: number };
  /** JWT-SVID minting (src/server/jwt-service.ts); null with --no-jwt-svid */
  jwt: JwtSvidConfig | null;
  /** service accounts (node agents such as ztunnel) allowed ImpersonatedIdentity for pods on their node; [] = off */
  trustedNodeAccounts: NodeAccount[];
  /** --kubeconfig (pods for node authorization; TokenReview and the keystore carry their own copy) */
  kubeconfig?: string;
  /** the bundle endpoint and the foreign trust domains (src/server/federation-config.ts) */
  federation: FederationConfig;
}

export const SERVER_FLAGS: FlagSpec[] = [
  { name: 'data-dir', type: 'string', arg: 'DIR', default: './.castellan', help: 'keyring directory (0700): keyring.json (0600), root-cert.pem (0644)' },
  { name: 'trust-domain', type: 'string', arg: 'TD', default: 'cluster.local', help: 'SPIFFE trust domain of issued identities' },
  { name: 'ca-key-type', type: 'string', arg: 'TYPE', default: 'ec-p256', help: `key type of a new self-signed root: ${CA_KEY_TYPES.join('|')}` },
  { name: 'root-ttl', type: 'string', arg: 'DUR', default: '87600h', help: 'lifetime of a new self-signed root' },
  { name: 'cacerts-dir', type: 'string', arg: 'DIR', help: 'plug-in CA: Istio cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)' },
  { name: 'default-ttl', type: 'string', arg: 'DUR', default: '24h', help: 'leaf lifetime when a request asks for 0' },
  { name: 'max-ttl', type: 'string', arg: 'DUR', default: '90d', help: 'longest leaf lifetime; longer requests get INVALID_ARGUMENT' },
  { name: 'grpc-listen', type: 'string', arg: 'ADDR', default: '0.0.0.0:15012', help: 'CA API address (host:port, or unix:/path with --plaintext)' },
  { name: 'server-dns', type: 'string', multiple: true, arg: 'NAME', default: [], help: 'extra DNS names for the server certificate (localhost and 127.0.0.1 are always included)' },
  { name: 'plaintext', type: 'boolean', default: false, help: 'serve without TLS (only on a loopback or unix: address)' },
  { name: 'http-listen', type: 'string', arg: 'ADDR', default: '0.0.0.0:15014', help: '/metrics /healthz /readyz address ("off" to disable)' },
  { name: 'jwks-file', type: 'string', arg: 'PATH', help: 'verify service-account JWTs with the keys in this JWKS file' },
  { name: 'jwks-uri', type: 'string', arg: 'URL', help: 'verify service-account JWTs with keys fetched from this URL' },
  { name: 'oidc-issuer', type: 'string', arg: 'URL', help: 'discover the JWKS of this issuer (/.well-known/openid-configuration)' },
  { name: 'jwt-issuer', type: 'string', arg: 'ISS', help: 'required "iss" of service-account JWTs' },
  { name: 'token-audience', type: 'string', multiple: true, arg: 'AUD', default: ['istio-ca'], help: 'accepted token audience' },
  { name: 'token-review', type: 'boolean', default: false, help: 'authenticate tokens with the Kubernetes TokenReview API (cached)' },
  { name: 'kubeconfig', type: 'string', arg: 'PATH', help: 'kubeconfig for TokenReview, the Kubernetes keystore and the pod cache (default: $KUBECONFIG, then in-cluster)' },
  { name: 'signer-workers', type: 'string', arg: 'N', default: 'auto', help: 'signing worker threads ("auto" = one per core but one, at least 1; 0 = sign on the main thread)' },
  { name: 'signer-nice', type: 'string', arg: 'N', default: '0', help: 'nice value of the signing threads (0-19): above 0, accepting and authenticating calls go first when the cores are shared and saturated' },
  { name: 'batch-max-size', type: 'string', arg: 'N', default: '64', help: 'most CSRs signed in one batch' },
  { name: 'batch-max-wait', type: 'string', arg: 'DUR', default: '0ms', help: 'longest a CSR waits for company before its batch is cut (0 = the end of the event-loop turn); while every worker is busy, batches grow by themselves' },
  { name: 'queue-max', type: 'string', arg: 'N', default: '10000', help: 'queued CSRs beyond which requests get RESOURCE_EXHAUSTED' },
  { name: 'max-request-bytes', type: 'string', arg: 'N', default: '65536', help: 'largest CreateCertificate request accepted' },
  { name: 'max-concurrent-streams', type: 'string', arg: 'N', default: '128', help: 'calls one client connection may have open at once; more wait in the client (HTTP/2)' },
  { name: 'log-level', type: 'string', arg: 'LEVEL', default: 'info', help: 'trace|debug|info|warn|error|fatal|silent' },
  { name: 'shutdown-grace', type: 'string', arg: 'DUR', default: '10s', help: 'time in-flight calls get to finish on SIGTERM' },
  { name: 'keystore', type: 'string', arg: 'KIND', default: 'file', help: 'where the keyring lives: file (<data-dir>/keyring.json) or kubernetes (a Secret, see --ca-secret)' },
  { name: 'ca-secret', type: 'string', arg: 'NS/NAME', default: 'castellan-system/castellan-ca', help: 'the keyring Secret with --keystore kubernetes' },
  { name: 'leader-lease', type: 'string', arg: 'NS/NAME', default: 'castellan-system/castellan-leader', help: 'the coordination.k8s.io Lease electing the replica that rotates (--keystore kubernetes)' },
  { name: 'publish-trust-bundle', type: 'boolean', default: false, help: 'write ConfigMap istio-ca-root-cert (key root-cert.pem) into every namespace matched by --trust-bundle-namespaces' },
  { name: 'trust-bundle-namespaces', type: 'string', arg: 'SELECTOR', default: '', help: 'label selector of the namespaces that get the trust bundle ConfigMap (default: all)' },
  { name: 'admin-socket', type: 'string', arg: 'PATH', help: 'Unix socket (0600) of the admin API used by "castellan ca" (default: <data-dir>/admin.sock)' },
  { name: 'propagation-time', type: 'string', arg: 'DUR', default: '15m', help: 'how long a prepared authority must be in the trust bundle before it may be activated' },
  { name: 'rate-limit-per-peer', type: 'string', arg: 'N', default: '500', help: 'CreateCertificate calls per second from one client address, before authentication (0 = unlimited; 0 behind an L7 proxy)' },
  { name: 'rate-limit-per-identity', type: 'string', arg: 'N', default: '100', help: 'CreateCertificate calls per second for one SPIFFE ID; a node agent has this budget per (node agent, workload identity) (0 = unlimited)' },
  { name: 'trusted-node-accounts', type: 'string', multiple: true, arg: 'NS/SA', default: [], help: 'node agents (e.g. istio-system/ztunnel) that may request certificates for pods on their own node (ImpersonatedIdentity; also read from CA_TRUSTED_NODE_ACCOUNTS); needs token authentication and pods get/list/watch' },
  { name: 'manual-rotation', type: 'boolean', default: false, help: 'do not rotate self-signed roots automatically (prepare/activate/retire only by "castellan ca")' },
  ...JWT_SERVER_FLAGS,
  ...FEDERATION_FLAGS,
];

function nsName(v: string, flag: string): { namespace: string; name: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(v);
  if (!m) throw invalid(`--${flag} must be NAMESPACE/NAME, got "${v}"`);
  return { namespace: m[1]!, name: m[3]! };
}

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan server: ${msg}`);
}

function int(v: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(v)) throw invalid(`--${flag} must be a whole number, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw invalid(`--${flag} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function dur(v: string, flag: string): number {
  try {
    return parseDuration(v, `--${flag}`);
  } catch (e) {
    throw invalid((e as Error).message);
  }
}

/** True for addresses that never leave the machine: loopback IPs, localhost, unix sockets. */
export function isLocalAddress(addr: string): boolean {
  if (addr.startsWith('unix:')) return true;
  const host = addr.startsWith('[') ? addr.slice(1, addr.indexOf(']')) : addr.slice(0, addr.lastIndexOf(':'));
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function resolveServerConfig(v: FlagValues): ServerConfig {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const list = (k: string): string[] => (Array.isArray(v[k]) ? (v[k] as string[]) : []);
  const trustDomain = s('trust-domain')!;
  try {
    validateTrustDomain(trustDomain);
  } catch (e) {
    throw invalid(`--trust-domain: ${(e as Error).message}`);
  }
  const keyType = s('ca-key-type')!;
  if (!(CA_KEY_TYPES as readonly string[]).includes(keyType)) throw invalid(`--ca-key-type must be one of ${CA_KEY_TYPES.join(', ')}, got "${keyType}"`);
  const defaultTtlMs = dur(s('default-ttl')!, 'default-ttl');
  const maxTtlMs = dur(s('max-ttl')!, 'max-ttl');
  if (defaultTtlMs <= 0 || maxTtlMs <= 0) throw invalid('--default-ttl and --max-ttl must be positive');
  if (defaultTtlMs > maxTtlMs) throw invalid('--default-ttl must not exceed --max-ttl');
  const grpcListen = s('grpc-listen')!;
  const plaintext = v.plaintext === true;
  if (!grpcListen.startsWith('unix:') && !/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(grpcListen)) throw invalid(`--grpc-listen must be host:port or unix:/path, got "${grpcListen}"`);
  if (grpcListen.startsWith('unix:') && !plaintext) throw invalid('--grpc-listen unix:... requires --plaintext');
  if (plaintext && !isLocalAddress(grpcListen)) throw invalid('--plaintext is only allowed on a loopback or unix: address');
  const httpRaw = s('http-listen')!;
  const httpListen = httpRaw === 'off' || httpRaw === '' ? null : httpRaw;
  if (httpListen && !/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(httpListen)) throw invalid(`--http-listen must be host:port or "off", got "${httpListen}"`);
  const jwtSources = ['jwks-file', 'jwks-uri', 'oidc-issuer'].filter((k) => s(k));
  if (jwtSources.length > 1) throw invalid(`use only one of --jwks-file, --jwks-uri, --oidc-issuer (got ${jwtSources.map((k) => '--' + k).join(', ')})`);
  if (s('jwt-issuer') && jwtSources.length === 0) throw invalid('--jwt-issuer needs --jwks-file, --jwks-uri or --oidc-issuer');
  if ((s('jwks-file') || s('jwks-uri')) && !s('jwt-issuer')) throw invalid('--jwks-file and --jwks-uri need --jwt-issuer (the "iss" tokens must carry)');
  const audiences = list('token-audience');
  if (audiences.length === 0) throw invalid('--token-audience must not be empty');
  const workersRaw = s('signer-workers')!;
  // The main thread (TLS, HTTP/2, tokens) keeps a core of its own: a worker per core made three busy
  // threads share two cores, at a measured cost in CPU per issuance (docs/performance.md).
  const workers = workersRaw === 'auto' ? Math.max(1, availableParallelism() - 1) : int(workersRaw, 'signer-workers', 0, 256);
  for (const d of list('server-dns')) {
    if (!/^[a-zA-Z0-9*]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(d)) throw invalid(`--server-dns "${d}" is not a DNS name`);
  }
  const cfg: ServerConfig = {
    dataDir: s('data-dir')!,
    trustDomain,
    caKeyType: keyType as CaKeyType,
    rootTtlMs: dur(s('root-ttl')!, 'root-ttl'),
    cacertsDir: s('cacerts-dir'),
    defaultTtlMs,
    maxTtlMs,
    grpcListen,
    serverDns: list('server-dns'),
    plaintext,
    httpListen,
    auth: {
      audiences,
      jwt: jwtSources.length
        ? { jwksFile: s('jwks-file'), jwksUri: s('jwks-uri'), oidcIssuer: s('oidc-issuer'), issuer: s('jwt-issuer') }
        : undefined,
      tokenReview: v['token-review'] === true ? { kubeconfig: s('kubeconfig') } : undefined,
    },
    signer: {
      workers,
      maxBatchSize: int(s('batch-max-size')!, 'batch-max-size', 1, 4096),
      maxBatchWaitMs: dur(s('batch-max-wait')!, 'batch-max-wait'),
      maxQueue: int(s('queue-max')!, 'queue-max', 1, 10_000_000),
      nice: int(s('signer-nice')!, 'signer-nice', 0, 19),
    },
    maxRequestBytes: int(s('max-request-bytes')!, 'max-request-bytes', 1024, 16 * 1024 * 1024),
    maxConcurrentStreams: int(s('max-concurrent-streams')!, 'max-concurrent-streams', 1, 100_000),
    logLevel: s('log-level')!,
    shutdownGraceMs: dur(s('shutdown-grace')!, 'shutdown-grace'),
    keystore: { kind: 'file' },
    publishTrustBundle: null,
    adminSocket: s('admin-socket') || undefined,
    propagationMs: dur(s('propagation-time')!, 'propagation-time'),
    autoRotate: v['manual-rotation'] !== true,
    rateLimits: { perPeer: int(s('rate-limit-per-peer')!, 'rate-limit-per-peer', 0, 1_000_000), perIdentity: int(s('rate-limit-per-identity')!, 'rate-limit-per-identity', 0, 1_000_000) },
    jwt: resolveJwtSvidConfig(v),
    trustedNodeAccounts: [],
    kubeconfig: s('kubeconfig'),
    federation: resolveFederationConfig(v, trustDomain),
  };
  try {
    cfg.trustedNodeAccounts = parseTrustedNodeAccounts(list('trusted-node-accounts'));
  } catch (e) {
    throw invalid((e as Error).message);
  }
  if (cfg.trustedNodeAccounts.length > 0 && !cfg.auth.jwt && !cfg.auth.tokenReview) {
    throw invalid('--trusted-node-accounts needs token authentication (--token-review, --jwks-file, --jwks-uri or --oidc-issuer): node agents are identified by their pod-bound token');
  }
  const ks = s('keystore')!;
  if (ks === 'kubernetes') {
    const secret = nsName(s('ca-secret')!, 'ca-secret');
    const lease = nsName(s('leader-lease')!, 'leader-lease');
    cfg.keystore = { kind: 'kubernetes', secretNamespace: secret.namespace, secretName: secret.name, leaseNamespace: lease.namespace, leaseName: lease.name, kubeconfig: s('kubeconfig') };
  } else if (ks !== 'file') throw invalid(`--keystore must be file or kubernetes, got "${ks}"`);
  if (v['publish-trust-bundle'] === true) {
    if (ks !== 'kubernetes') throw invalid('--publish-trust-bundle needs --keystore kubernetes (it writes ConfigMaps through the Kubernetes API)');
    cfg.publishTrustBundle = { namespaceSelector: s('trust-bundle-namespaces') ?? '' };
  }
  if (cfg.rootTtlMs < 24 * 3600_000) throw invalid('--root-ttl must be at least 24h');
  return cfg;
}

/** The defaults of every flag, as a config (for tests and the dev command), with overrides. */
export function defaultServerConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  const v: FlagValues = {};
  for (const f of SERVER_FLAGS) if (f.default !== undefined) v[f.name] = f.default;
  return { ...resolveServerConfig(v), ...overrides };
}
