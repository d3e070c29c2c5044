import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCommand, parseDuration } from '../../src/config/flags.ts';
import { isLocalAddress, resolveServerConfig, SERVER_FLAGS } from '../../src/server/config.ts';
import { withIstioEnvAliases } from '../../src/identity/impersonation.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function cfg(argv: string[], env: NodeJS.ProcessEnv = {}) {
  return resolveServerConfig(parseCommand('server', argv, SERVER_FLAGS, { env }).values);
}

describe('server configuration: defaults < file < env < flags', () => {
  it('ok/defaults match the documented ones', () => {
    const c = cfg([]);
    expect(c).toMatchObject({
      dataDir: './.castellan',
      trustDomain: 'cluster.local',
      caKeyType: 'ec-p256',
      defaultTtlMs: 24 * 3600_000,
      maxTtlMs: 90 * 24 * 3600_000,
      grpcListen: '0.0.0.0:15012',
      httpListen: '0.0.0.0:15014',
      plaintext: false,
      maxRequestBytes: 65536,
      auth: { audiences: ['istio-ca'] },
    });
    expect(c.rootTtlMs).toBe(87600 * 3600_000);
  });

  it('ok/layering: file < env < flag', () => {
    const file = join(tmp.path, 'c.yaml');
    writeFileSync(file, 'trustDomain: from-file.local\ndefaultTtl: 1h\nmaxTtl: 2h\ntokenAudience: [a, b]\n');
    expect(cfg(['--config', file]).trustDomain).toBe('from-file.local');
    expect(cfg(['--config', file]).auth.audiences).toEqual(['a', 'b']);
    expect(cfg(['--config', file], { CASTELLAN_TRUST_DOMAIN: 'from-env.local' }).trustDomain).toBe('from-env.local');
    expect(cfg(['--config', file, '--trust-domain', 'flag.local'], { CASTELLAN_TRUST_DOMAIN: 'from-env.local' }).trustDomain).toBe('flag.local');
    expect(cfg([], { CASTELLAN_TOKEN_AUDIENCE: 'x, y' }).auth.audiences).toEqual(['x', 'y']);
    expect(cfg(['--token-audience', 'p', '--token-audience', 'q']).auth.audiences).toEqual(['p', 'q']);
  });

  it.each([
    ['unknown-flag', ['--nope'], /Unknown option '--nope'/],
    ['bad-key-type', ['--ca-key-type', 'dsa'], /--ca-key-type must be one of/],
    ['bad-duration', ['--default-ttl', 'soon'], /invalid --default-ttl "soon"/],
    ['default-over-max', ['--default-ttl', '100d'], /--default-ttl must not exceed --max-ttl/],
    ['plaintext-public', ['--plaintext'], /--plaintext is only allowed on a loopback/],
    ['unix-without-plaintext', ['--grpc-listen', 'unix:/tmp/x.sock'], /requires --plaintext/],
    ['two-jwks-sources', ['--jwks-file', 'a', '--jwks-uri', 'http://b'], /only one of/],
    ['jwks-without-issuer', ['--jwks-file', 'a'], /need --jwt-issuer/],
    ['bad-trust-domain', ['--trust-domain', 'Upper.Case'], /--trust-domain/],
    ['bad-listen', ['--grpc-listen', 'nowhere'], /--grpc-listen must be host:port/],
    ['bad-workers', ['--signer-workers', 'many'], /--signer-workers must be a whole number/],
  ])('fail/%s', (_n, argv, msg) => {
    expect(() => cfg(argv)).toThrow(msg);
  });

  it('fail/unknown config key names the file and key', () => {
    const file = join(tmp.path, 'bad.yaml');
    writeFileSync(file, 'trustDomian: typo\n');
    expect(() => cfg(['--config', file])).toThrow(/unknown key "trustDomian"/);
  });

  it('ok/--trusted-node-accounts: off by default; flag, config list, CASTELLAN_ and Istio\'s CA_TRUSTED_NODE_ACCOUNTS; needs token authentication', () => {
    expect(cfg([]).trustedNodeAccounts).toEqual([]);
    const zt = [{ namespace: 'istio-system', serviceAccount: 'ztunnel' }];
    expect(cfg(['--token-review', '--trusted-node-accounts', 'istio-system/ztunnel']).trustedNodeAccounts).toEqual(zt);
    const file = join(tmp.path, 'ambient.yaml');
    writeFileSync(file, 'tokenReview: true\ntrustedNodeAccounts: [istio-system/ztunnel]\n');
    expect(cfg(['--config', file]).trustedNodeAccounts).toEqual(zt);
    expect(cfg(['--token-review'], { CASTELLAN_TRUSTED_NODE_ACCOUNTS: 'istio-system/ztunnel, kube-system/agent' }).trustedNodeAccounts).toHaveLength(2);
    expect(cfg(['--token-review'], withIstioEnvAliases({ CA_TRUSTED_NODE_ACCOUNTS: 'istio-system/ztunnel' })).trustedNodeAccounts).toEqual(zt);
    expect(() => cfg(['--trusted-node-accounts', 'istio-system/ztunnel'])).toThrow(/needs token authentication/);
    expect(() => cfg(['--token-review', '--trusted-node-accounts', 'ztunnel'])).toThrow(/--trusted-node-accounts: "ztunnel" is not NAMESPACE\/SERVICEACCOUNT/);
  });

  it('ok/plaintext on loopback and unix sockets', () => {
    expect(cfg(['--plaintext', '--grpc-listen', '127.0.0.1:0']).plaintext).toBe(true);
    expect(cfg(['--plaintext', '--grpc-listen', 'unix:/tmp/ca.sock']).grpcListen).toBe('unix:/tmp/ca.sock');
    expect(isLocalAddress('[::1]:15012')).toBe(true);
    expect(isLocalAddress('10.0.0.1:15012')).toBe(false);
  });

  it('durations', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('3600')).toBe(3_600_000);
    expect(() => parseDuration('1h x')).toThrow();
    expect(() => parseDuration('')).toThrow();
  });

  it('ok/federation: --federate-with and the config file\'s federation: list (YAML), one list; bad entries name their index', () => {
    const file = join(tmp.path, 'fed.yaml');
    writeFileSync(
      file,
      [
        'trustDomain: a.example',
        'bundleEndpointListen: 0.0.0.0:8443',
        'federation:',
        '  - trustDomain: b.example',
        '    bundleEndpointUrl: https://b.example:8443/',
        '    bootstrapBundle: /etc/b.json',
        '  - trustDomain: web.example',
        '    bundleEndpointUrl: https://bundle.web.example/',
        '    profile: https_web',
        '',
      ].join('\n'),
    );
    const f = cfg(['--config', file, '--federate-with', 'c.example=https://c.example/bundle']).federation;
    expect(f.endpoint).toEqual({ listen: '0.0.0.0:8443', profile: 'https_spiffe', certFile: undefined, keyFile: undefined });
    expect(f.peers.map((p) => [p.trustDomain, p.profile, p.endpointSpiffeId, p.bootstrapBundle])).toEqual([
      ['c.example', 'https_spiffe', 'spiffe://c.example/castellan/bundle-endpoint', undefined],
      ['b.example', 'https_spiffe', 'spiffe://b.example/castellan/bundle-endpoint', '/etc/b.json'],
      ['web.example', 'https_web', undefined, undefined],
    ]);
    writeFileSync(file, 'trustDomain: a.example\nfederation:\n  - trustDomain: b.example\n    bundleEndpointUrl: https://b/\n    colour: blue\n');
    expect(() => cfg(['--config', file])).toThrow(/federation: 0: Unrecognized key: "colour"/);
  });
});

