/**
 * bench/vs-go: the same issuance profile through Castellan and through Go's
 * crypto/x509 (the istiod and SPIRE signing core), in the same run on the
 * same machine, compared per CPU-second (each side's own process CPU time).
 *
 * Per core: Castellan's issueFromCsr on one thread vs Go with GOMAXPROCS=1.
 * All cores: Castellan's BatchSigner (one worker per core) vs Go with one
 * goroutine per core. Issuers: ECDSA P-256 and RSA-2048; CSRs: P-256.
 * Skips (exit 0, with a message) when `go` is not installed.
 *
 *   node_modules/.bin/node bench/vs-go/run.ts      (VS_GO_N=... to scale)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueFromCsr } from '../../src/ca/issue.ts';
import { BatchSigner } from '../../src/ca/signer/index.ts';
import { BENCH_ID, makeBenchCa, makeCsrs, type BenchKeyType } from '../lib/fixtures.ts';
import { goBuild, goVersion, machine, measureAsync, measureSync, rate, table, type Rate } from '../lib/measure.ts';

const go = goVersion();
if (!go) {
  console.log('vs-go: skipped: `go` is not installed (install Go >= 1.19 to compare with crypto/x509)');
  console.log(`RESULT ${JSON.stringify({ skipped: 'go not installed' })}`);
  process.exit(0);
}

const SCALE = Number(process.env.VS_GO_N ?? 1);
const cores = availableParallelism();
const dir = mkdtempSync(join(tmpdir(), 'castellan-vs-go-'));
try {
  console.log(`machine: ${await machine()}; ${go}`);
  const bin = goBuild(new URL('./main.go', import.meta.url).pathname, dir, 'vs-go');
  const csrs = await makeCsrs(500, BENCH_ID);
  const csrFile = join(dir, 'csrs.pem');
  writeFileSync(csrFile, csrs.join(''));

  const runGo = (caCert: string, caKey: string, n: number, workers: number): Rate => {
    const out = execFileSync(bin, [caCert, caKey, csrFile, BENCH_ID, String(n), String(workers)], {
      encoding: 'utf8',
      env: { ...process.env, GOMAXPROCS: String(workers) },
    });
    const r = JSON.parse(out) as { n: number; errors: number; wallSec: number; cpuSec: number };
    if (r.errors) throw new Error(`go side: ${r.errors} errors`);
    return rate(r.n, r.wallSec, r.cpuSec);
  };

  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [['issuer / mode', 'Castellan/s', 'Castellan/CPU-s', 'Go/s', 'Go/CPU-s', 'ratio per CPU-s']];
  for (const keyType of ['ec-p256', 'rsa-2048'] as BenchKeyType[]) {
    const ca = await makeBenchCa(keyType);
    const caCert = join(dir, `${keyType}.crt`);
    const caKey = join(dir, `${keyType}.key`);
    writeFileSync(caCert, ca.certPem);
    writeFileSync(caKey, ca.keyPem, { mode: 0o600 });
    const n = Math.round((keyType === 'rsa-2048' ? 3000 : 10000) * SCALE);

    // per core
    const castOne = measureSync(n, (i) => {
      issueFromCsr(ca.material, { csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000, now: Date.now() });
    });
    const goOne = runGo(caCert, caKey, n, 1);

    // all cores
    const signer = new BatchSigner({ workers: cores, maxBatchSize: 32, maxBatchWaitMs: 1, maxQueue: 1_000_000 });
    signer.setIssuer(ca.material);
    await Promise.all(Array.from({ length: 200 }, (_, i) => signer.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000 }))); // warm the workers
    const nAll = n * cores;
    const castAll = await measureAsync(nAll, async () => {
      await Promise.all(Array.from({ length: nAll }, (_, i) => signer.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000 })));
    });
    await signer.close();
    const goAll = runGo(caCert, caKey, nAll, cores);

    for (const [mode, c, g] of [['1 core', castOne, goOne], [`${cores} cores`, castAll, goAll]] as const) {
      rows.push([`${keyType} / ${mode}`, c.perSec, c.perCpuSec, g.perSec, g.perCpuSec, `${(c.perCpuSec / g.perCpuSec).toFixed(2)}x`]);
    }
    results[keyType] = {
      perCore: { castellan: castOne, go: goOne, ratioPerCpuSec: castOne.perCpuSec / goOne.perCpuSec },
      allCores: { castellan: castAll, go: goAll, ratioPerCpuSec: castAll.perCpuSec / goAll.perCpuSec },
    };
  }
  console.log('issuance: PEM CSR in -> parse + proof of possession + identity check + sign -> PEM leaf out');
  table(rows);
  console.log('target: Castellan >= 1.3x Go crypto/x509 per CPU-second (issue 5)');
  console.log(`RESULT ${JSON.stringify({ go, cores, ...results })}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
