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
 * Both sides run in VS_GO_ROUNDS interleaved rounds (5; the order alternates);
 * the ratio printed is the median of the per-round ratios, with its range.
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
import { median } from '../lib/proc.ts';

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

  // One pass is two numbers measured seconds apart on a shared VM, where either side can
  // lose 20 % to a neighbour. So both sides run in interleaved rounds (the order alternates)
  // and the ratio is the median of the per-round ratios, printed with its range.
  const ROUNDS = Math.max(1, Number(process.env.VS_GO_ROUNDS ?? 5));
  const total = (rs: Rate[]): Rate => rate(rs.reduce((a, r) => a + r.n, 0), rs.reduce((a, r) => a + r.wallSec, 0), rs.reduce((a, r) => a + r.cpuSec, 0));
  const results: Record<string, unknown> = { rounds: ROUNDS };
  const rows: (string | number)[][] = [['issuer / mode', 'Castellan/s', 'Castellan/CPU-s', 'Go/s', 'Go/CPU-s', 'ratio per CPU-s: median', 'rounds min-max']];
  for (const keyType of ['ec-p256', 'rsa-2048'] as BenchKeyType[]) {
    const ca = await makeBenchCa(keyType);
    const caCert = join(dir, `${keyType}.crt`);
    const caKey = join(dir, `${keyType}.key`);
    writeFileSync(caCert, ca.certPem);
    writeFileSync(caKey, ca.keyPem, { mode: 0o600 });
    const n = Math.round((keyType === 'rsa-2048' ? 1500 : 5000) * SCALE);
    const nAll = n * cores;
    const signer = new BatchSigner({ workers: cores, maxBatchSize: 32, maxBatchWaitMs: 1, maxQueue: 1_000_000 });
    signer.setIssuer(ca.material);
    await Promise.all(Array.from({ length: 200 }, (_, i) => signer.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000 }))); // warm the workers
    // per core: issueFromCsr on this thread vs GOMAXPROCS=1; all cores: BatchSigner vs one goroutine per core
    const castOne = (): Rate => measureSync(n, (i) => {
      issueFromCsr(ca.material, { csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000, now: Date.now() });
    });
    const castAll = (): Promise<Rate> => measureAsync(nAll, async () => {
      await Promise.all(Array.from({ length: nAll }, (_, i) => signer.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: BENCH_ID, ttlMs: 3600_000 })));
    });
    const got = { one: { c: [] as Rate[], g: [] as Rate[] }, all: { c: [] as Rate[], g: [] as Rate[] } };
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        got.one.c.push(castOne()); got.one.g.push(runGo(caCert, caKey, n, 1));
        got.all.c.push(await castAll()); got.all.g.push(runGo(caCert, caKey, nAll, cores));
      } else {
        got.one.g.push(runGo(caCert, caKey, n, 1)); got.one.c.push(castOne());
        got.all.g.push(runGo(caCert, caKey, nAll, cores)); got.all.c.push(await castAll());
      }
    }
    await signer.close();
    const summary: Record<string, unknown> = {};
    for (const [key, mode] of [['one', '1 core'], ['all', `${cores} cores`]] as const) {
      const { c, g } = got[key];
      const ratios = c.map((x, i) => x.perCpuSec / g[i]!.perCpuSec);
      const ct = total(c), gt = total(g);
      rows.push([`${keyType} / ${mode}`, ct.perSec, ct.perCpuSec, gt.perSec, gt.perCpuSec, `${median(ratios).toFixed(2)}x`, `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}x`]);
      summary[key === 'one' ? 'perCore' : 'allCores'] = { castellan: ct, go: gt, ratioPerCpuSec: median(ratios), ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios), ratios };
    }
    results[keyType] = summary;
  }
  console.log('issuance: PEM CSR in -> parse + proof of possession + identity check + sign -> PEM leaf out');
  table(rows);
  console.log('target: Castellan >= 1.3x Go crypto/x509 per CPU-second (issue 5)');
  console.log(`RESULT ${JSON.stringify({ go, cores, ...results })}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
