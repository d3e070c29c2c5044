/**
 * T2/T4 at the process level: a real `castellan server --token-review`
 * talking, through @kubernetes/client-node and a kubeconfig, to an HTTPS
 * double of the Kubernetes TokenReview endpoint (no real API server can run
 * here). The caller sees UNAUTHENTICATED for tokens the API refuses and
 * UNAVAILABLE (retryable) while the API fails, answers garbage or hangs;
 * accepted reviews are cached (a repeat costs no API call); the server keeps
 * issuing throughout.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opaqueToken, TokenReviewDouble } from '../identity/tokenreview-double.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';
import { caClient, createCertificate, killAll, startCastellan, type CaClient, type Proc } from './procs.ts';

const tmp = tempDir('castellan-tr-server-');
const api = new TokenReviewDouble();
const procs: Proc[] = [];
let client: CaClient;
const SA = { username: 'system:serviceaccount:shop:cart', groups: ['system:serviceaccounts', 'system:authenticated'], audiences: ['istio-ca'] };
const ID = 'spiffe://cluster.local/ns/shop/sa/cart';

beforeAll(async () => {
  await api.start(tmp.path);
  const kubeconfig = join(tmp.path, 'kubeconfig');
  api.writeKubeconfig(kubeconfig);
  const data = join(tmp.path, 'data');
  const server = startCastellan('server', ['server', '--data-dir', data, '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off', '--token-review', '--kubeconfig', kubeconfig, '--log-level', 'info'], procs);
  const listening = await server.waitFor((e) => e.event === 'server.listening', 30_000, 'the server');
  client = caClient(listening.grpc as string, readFileSync(join(data, 'root-cert.pem')));
}, 60_000);
afterAll(async () => {
  client?.close();
  killAll(procs);
  await api.stop();
  tmp.cleanup();
});

let n = 0;
const tokenFor = (t: typeof SA | undefined): string => {
  const tok = opaqueToken(`server-t${++n}`, Math.floor(Date.now() / 1000) + 3600);
  if (t) api.tokens.set(tok, t);
  return tok;
};
const ask = async (token: string) => createCertificate(client, { csr: (await peculiarCsr(ID)).csrPem, authorization: [`Bearer ${token}`], deadlineMs: 20_000 });

describe('castellan server --token-review (HTTP double of the Kubernetes TokenReview API)', () => {
  it('ok/a service-account token is reviewed with audience istio-ca, and a repeat is served from the cache', async () => {
    const tok = tokenFor(SA);
    const before = api.requests.length;
    expect((await ask(tok)).status).toBe('OK');
    expect(api.requests.at(-1)).toMatchObject({ token: tok, audiences: ['istio-ca'] });
    expect((await ask(tok)).status).toBe('OK');
    expect(api.requests.length - before).toBe(1);
  });

  it.each([
    ['T2/a token the API does not know', () => tokenFor(undefined)],
    ['T2/a token for the API-server audience', () => tokenFor({ ...SA, audiences: ['https://kubernetes.default.svc.cluster.local'] })],
    ['T2/a user that is not a service account', () => tokenFor({ ...SA, username: 'alice', groups: ['system:authenticated'] })],
  ])('%s is UNAUTHENTICATED', async (_n, make) => {
    const r = await ask(make());
    expect(r.status).toBe('UNAUTHENTICATED');
    expect(r.trailers['x-castellan-error']).toMatch(/^auth\./);
  });

  it.each([
    ['T4/API answers 500', { kind: 'status', code: 500 } as const],
    ['T4/API answers garbage', { kind: 'garbage' } as const],
  ])('%s: UNAVAILABLE, then accepted once the API is back', async (_n, fault) => {
    const tok = tokenFor(SA);
    api.fault = fault;
    const r = await ask(tok);
    api.fault = { kind: 'none' };
    expect(r.status).toBe('UNAVAILABLE');
    expect(r.trailers['x-castellan-error']).toBe('auth.tokenreview_unavailable');
    expect((await ask(tok)).status).toBe('OK');
  });

  it('T4/API hangs: UNAVAILABLE after the bounded timeout (5 s), not at the caller\'s deadline', async () => {
    api.fault = { kind: 'delay', ms: 12_000 };
    const t0 = Date.now();
    const r = await ask(tokenFor(SA));
    const ms = Date.now() - t0;
    api.fault = { kind: 'none' };
    expect(r.status).toBe('UNAVAILABLE');
    expect(ms).toBeGreaterThan(4000);
    expect(ms).toBeLessThan(9000);
    expect((await ask(tokenFor(SA))).status).toBe('OK'); // and it issues again
  }, 60_000);
});
