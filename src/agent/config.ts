/**
 * Flags of `castellan agent` (also config-file keys and CASTELLAN_*
 * variables, see src/config/flags.ts) and their validation into AgentConfig.
 */
import { resolve as resolvePath } from 'node:path';
import { parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { CastellanError } from '../platform/errors.ts';
import { validateTrustDomain } from '../spiffe/id.ts';
import type { AgentConfig } from './agent.ts';
import { KEY_TYPES, type KeyType } from './csr.ts';

export const AGENT_FLAGS: FlagSpec[] = [
  { name: 'ca-address', type: 'string', arg: 'HOST:PORT', default: 'localhost:15012', help: 'CA server address (gRPC over TLS)' },
  { name: 'ca-root-cert', type: 'string', arg: 'PATH', help: 'PEM bundle trusted for the CA\'s TLS certificate (re-read every 10s; a change re-issues)' },
  { name: 'token-file', type: 'string', arg: 'PATH', default: './var/run/secrets/tokens/istio-token', help: 'service-account token, re-read on every certificate request' },
  { name: 'trust-domain', type: 'string', arg: 'TD', default: 'cluster.local', help: 'trust domain the issued SPIFFE ID must belong to' },
  { name: 'sds-socket', type: 'string', arg: 'PATH', default: './var/run/secrets/workload-spiffe-uds/socket', help: 'Unix socket serving Envoy SDS' },
  { name: 'sds-socket-group', type: 'string', arg: 'GROUP', help: 'group (name or gid) allowed to connect: socket 0660, directory 0750 (default: owner only, 0600/0700)' },
  { name: 'workload-api-socket', type: 'string', arg: 'PATH', help: 'also serve the SPIFFE Workload API (X.509- and JWT-SVIDs) on this Unix socket (docs/workload-api.md)' },
  { name: 'workload-api-socket-group', type: 'string', arg: 'GROUP', help: 'group (name or gid) allowed to connect to the Workload API socket: 0660 (default: owner only, 0600)' },
  { name: 'cert-ttl', type: 'string', arg: 'DUR', default: '24h', help: 'requested certificate lifetime' },
  { name: 'key-type', type: 'string', arg: 'TYPE', default: 'ec-p256', help: `workload key type: ${KEY_TYPES.join('|')}` },
  { name: 'grace-ratio', type: 'string', arg: 'R', default: '0.5', help: 'renew when this fraction of the lifetime is left (± 0.02 jitter)' },
  { name: 'output-dir', type: 'string', arg: 'DIR', help: 'also write cert-chain.pem, key.pem (0600) and root-cert.pem here' },
  { name: 'renew-with-certificate', type: 'boolean', default: false, help: 'renew over mutual TLS with the current certificate (no token sent); when the CA refuses it (e.g. its authority was tainted) the same request goes again with the token' },
  { name: 'http-listen', type: 'string', arg: 'ADDR', default: '127.0.0.1:15020', help: '/healthz /readyz /metrics address ("off" to disable)' },
  { name: 'log-level', type: 'string', arg: 'LEVEL', default: 'info', help: 'trace|debug|info|warn|error|fatal|silent' },
];

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan agent: ${msg}`);
}

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[^:\s/]+):\d{1,5}$/;

export function resolveAgentConfig(v: FlagValues): AgentConfig & { logLevel: string } {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' && v[k] !== '' ? (v[k] as string) : undefined);
  const caAddress = s('ca-address')!;
  if (!HOST_PORT.test(caAddress)) throw invalid(`--ca-address must be HOST:PORT, got "${caAddress}"`);
  const caRootCertFile = s('ca-root-cert');
  if (!caRootCertFile) throw invalid('--ca-root-cert is required (the CA server writes it to <data-dir>/root-cert.pem)');
  const trustDomain = s('trust-domain')!;
  try {
    validateTrustDomain(trustDomain);
  } catch (e) {
    throw invalid(`--trust-domain: ${(e as Error).message}`);
  }
  let certTtlMs: number;
  try {
    certTtlMs = parseDuration(s('cert-ttl')!, '--cert-ttl');
  } catch (e) {
    throw invalid((e as Error).message);
  }
  if (certTtlMs < 1000) throw invalid('--cert-ttl must be at least 1s');
  const keyType = s('key-type')!;
  if (!(KEY_TYPES as readonly string[]).includes(keyType)) throw invalid(`--key-type must be one of ${KEY_TYPES.join(', ')}, got "${keyType}"`);
  const graceRaw = s('grace-ratio')!;
  const graceRatio = Number(graceRaw);
  if (!/^\d*\.?\d+$/.test(graceRaw) || !(graceRatio > 0 && graceRatio < 1)) throw invalid(`--grace-ratio must be a number between 0 and 1 (exclusive), got "${graceRaw}"`);
  const httpRaw = s('http-listen') ?? 'off';
  const httpListen = httpRaw === 'off' ? null : httpRaw;
  if (httpListen && !HOST_PORT.test(httpListen)) throw invalid(`--http-listen must be HOST:PORT or "off", got "${httpListen}"`);
  const group = s('sds-socket-group');
  if (group !== undefined && !/^[a-zA-Z0-9_.-]+$/.test(group)) throw invalid(`--sds-socket-group must be a group name or a gid, got "${group}"`);
  const workloadApiSocket = s('workload-api-socket');
  const workloadGroup = s('workload-api-socket-group');
  if (workloadGroup !== undefined && !/^[a-zA-Z0-9_.-]+$/.test(workloadGroup)) throw invalid(`--workload-api-socket-group must be a group name or a gid, got "${workloadGroup}"`);
  if (workloadGroup !== undefined && !workloadApiSocket) throw invalid('--workload-api-socket-group needs --workload-api-socket');
  if (workloadApiSocket !== undefined && resolvePath(workloadApiSocket) === resolvePath(s('sds-socket')!)) throw invalid('--workload-api-socket must differ from --sds-socket');
  return {
    caAddress,
    caRootCertFile,
    tokenFile: s('token-file')!,
    trustDomain,
    sdsSocket: s('sds-socket')!,
    sdsSocketGroup: group,
    certTtlMs,
    keyType: keyType as KeyType,
    graceRatio,
    outputDir: s('output-dir'),
    workloadApiSocket,
    workloadApiSocketGroup: workloadGroup,
    httpListen,
    renewWithCertificate: v['renew-with-certificate'] === true,
    logLevel: s('log-level')!,
  };
}
