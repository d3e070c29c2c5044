/**
 * bench/issue-core: the issuance core (PEM CSR in → parse + proof of
 * possession + identity check + sign → PEM leaf out) against the raw
 * signature rates of this machine, measured side by side in one run.
 *
 * Rows: raw ECDSA P-256 sign and verify (node:crypto, pre-imported keys),
 * public-key import variants (what dominates the non-signature cost), the
 * fast path per core (one thread) and on all cores (BatchSigner with one
 * worker per core), for P-256 and RSA-2048 issuers, and the naive
 * @peculiar/x509 reference path for scale. Then, in alternating rounds, the
 * issuance against its own crypto alone: the same three OpenSSL calls (a
 * fresh import of the CSR key, the CSR verify, the leaf signature) in one
 * loop on inputs parsed beforehand, which shows what everything else costs
 * in place (more than alone: what it touches evicts OpenSSL's tables).
 *
 *   node_modules/.bin/node bench/issue-core.ts      (ISSUE_CORE_N=... to scale)
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { issueFromCsr, templateFor } from '../src/ca/issue.ts';
import { BatchSigner } from '../src/ca/signer/index.ts';
import { csrPemToDer } from '../src/pki/csr.ts';
import { children, readTlv } from '../src/pki/der.ts';
import { randomSerial } from '../src/pki/leaf.ts';
import { issueReference } from '../test/support/reference.ts';
import { BENCH_ID, makeBenchCa, makeCsrs, type BenchKeyType } from './lib/fixtures.ts';
import { fmt, machine, measureAsync, measureSync, table, type Rate } from './lib/measure.ts';
import { median } from './lib/proc.ts';

const SCALE = Number(process.env.ISSUE_CORE_N ?? 1);
const cores = availableParallelism();
const N = Math.round(10_000 * SCALE);

console.log(`machine: ${await machine()}`);
const csrs = await makeCsrs(500, BENCH_ID);

// Raw primitives, keys imported once: the floor any issuer pays per certificate.
const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const tbsLike = Buffer.alloc(420, 7);
const sigs = Array.from({ length: 64 }, () => sign('sha256', tbsLike, kp.privateKey));
const rawSign = measureSync(N, () => void sign('sha256', tbsLike, kp.privateKey));
const rawVerify = measureSync(N, (i) => void verify('sha256', tbsLike, kp.publicKey, sigs[i % 64]!));
const spkis = Array.from({ length: 64 }, () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
const pems = spkis.map((k) => k.export({ type: 'spki', format: 'pem' }) as string);
const ders = spkis.map((k) => k.export({ type: 'spki', format: 'der' }));
const jwks = spkis.map((k) => k.export({ format: 'jwk' }));
const importPem = measureSync(N, (i) => void createPublicKey(pems[i % 64]!));
const importDer = measureSync(N, (i) => void createPublicKey({ key: ders[i % 64]!, format: 'der', type: 'spki' }));
const importJwk = measureSync(N, (i) => void createPublicKey({ key: jwks[i % 64]!, format: 'jwk' }));
// sign + verify + import: the crypto an issuance cannot avoid (one verify of the CSR, one signature).
const rawFloorPerSec = 1 / (1 / rawSign.perSec + 1 / rawVerify.perSec + 1 / importPem.perSec);

const rows: (string | number)[][] = [['path', 'per second', 'per CPU-second', 'µs each']];
const add = (name: string, r: Rate) => rows.push([name, r.perSec, r.perCpuSec, fmt(1e6 / r.perSec)]);
add('raw ECDSA P-256 sign', rawSign);
add('raw ECDSA P-256 verify', rawVerify);
add('import P-256 key: PEM string', importPem);
add('import P-256 key: DER options object', importDer);
add('import P-256 key: JWK', importJwk);

const results: Record<string, unknown> = { cores, rawSign, rawVerify, importPem, importDer, importJwk, rawFloorPerSec };
for (const keyType of ['ec-p256', 'rsa-2048'] as BenchKeyType[]) {
  const ca = await makeBenchCa(keyType);
  const n = keyType === 'rsa-2048' ? Math.round(N / 3) : N;
  const now = Date.now();
  const one = measureSync(n, (i) => void issueFromCsr(ca.material, { csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000, now }));
  const signer = new BatchSigner({ workers: cores, maxBatchSize: 64, maxBatchWaitMs: 0, maxQueue: 1_000_000 });
  signer.setIssuer(ca.material);
  const burst = (k: number) => Promise.all(Array.from({ length: k }, (_, i) => signer.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000 })));
  await burst(500); // start and warm the workers
  const all = await measureAsync(n * cores, async () => void (await burst(n * cores)));
  await signer.close();
  add(`Castellan ${keyType} issuer, 1 core`, one);
  add(`Castellan ${keyType} issuer, ${cores} cores (BatchSigner)`, all);
  results[keyType] = { perCore: one, allCores: all };
}
const refCa = await makeBenchCa('ec-p256');
const refN = Math.max(200, Math.round(N / 20));
const reference = await measureAsync(refN, async () => {
  for (let i = 0; i < refN; i++) await issueReference(refCa.material, { csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000, now: Date.now() });
});
add('naive @peculiar/x509 path, 1 core', reference);
results.reference = reference;

// The issuance against its own three OpenSSL calls on pre-parsed inputs, rounds alternating.
const floorCa = await makeBenchCa('ec-p256');
const now = Date.now();
const leafTemplate = templateFor(floorCa.material);
const leafKey = createPrivateKey({ key: Buffer.from(floorCa.material.keyPkcs8Der), format: 'der', type: 'pkcs8' });
const parsed = csrs.map((pem) => {
  const der = csrPemToDer(pem);
  const [cri, , sig] = children(der, readTlv(der, 0, der.length, 'CSR'), 'CSR');
  const spki = children(der, cri!, 'CSR info')[2]!;
  const spkiDer = der.subarray(spki.start, spki.end);
  return {
    cri: der.subarray(cri!.start, cri!.end),
    sig: der.subarray(sig!.valueStart + 1, sig!.end),
    spkiPem: `-----BEGIN PUBLIC KEY-----\n${Buffer.from(spkiDer).toString('base64')}\n-----END PUBLIC KEY-----\n`,
    tbs: leafTemplate.tbs({ serial: randomSerial(), notBefore: now, notAfter: now + 3600_000, spki: spkiDer, spiffeId: BENCH_ID }),
  };
});
const floorRounds = { issuance: [] as Rate[], crypto: [] as Rate[] };
const roundN = Math.max(500, Math.round(N / 5));
for (let r = 0; r < 6; r++) {
  const issuance = () => measureSync(roundN, (i) => void issueFromCsr(floorCa.material, { csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000, now }));
  const crypto = () =>
    measureSync(roundN, (i) => {
      const c = parsed[i % parsed.length]!;
      if (!verify('sha256', c.cri, createPublicKey(c.spkiPem), c.sig)) throw new Error('CSR does not verify');
      sign('sha256', c.tbs, leafKey);
    });
  if (r % 2) {
    floorRounds.crypto.push(crypto());
    floorRounds.issuance.push(issuance());
  } else {
    floorRounds.issuance.push(issuance());
    floorRounds.crypto.push(crypto());
  }
}
const inPlace = median(floorRounds.issuance.map((x, i) => floorRounds.crypto[i]!.perCpuSec / x.perCpuSec));
add('its crypto alone, same loop, pre-parsed inputs', floorRounds.crypto[floorRounds.crypto.length - 1]!);
results.cryptoInPlace = { rounds: floorRounds, issuanceCostVsCrypto: inPlace };

console.log('issuance: PEM CSR in -> parse + proof of possession + identity check + sign -> PEM leaf out; P-256 CSRs');
table(rows);
const p256 = results['ec-p256'] as { perCore: Rate; allCores: Rate };
const ratios = {
  perCoreVsRawFloor: p256.perCore.perSec / rawFloorPerSec,
  perCoreVsRawSign: p256.perCore.perSec / rawSign.perSec,
  allCoresScaling: p256.allCores.perSec / p256.perCore.perSec,
  fastVsReference: p256.perCore.perSec / reference.perSec,
};
console.log(
  `ratios (same run): 1-core issuance = ${(ratios.perCoreVsRawFloor * 100).toFixed(0)}% of the raw floor (sign + verify + key import, ${fmt(rawFloorPerSec)}/s); ` +
    `${ratios.allCoresScaling.toFixed(2)}x on ${cores} cores; ${ratios.fastVsReference.toFixed(0)}x the naive path`,
);
console.log(`in place (median of 6 alternating rounds): a P-256 issuance costs ${inPlace.toFixed(2)}x the CPU of its three OpenSSL calls alone (fresh key import, CSR verify, leaf signature)`);
console.log(`RESULT ${JSON.stringify({ ...results, ratios })}`);
