/**
 * fast-check with one seed for the whole run: FC_SEED from the environment
 * (CI leaves it unset, so the default is used and runs are reproducible), and
 * the seed plus fast-check's own replay path printed on failure.
 *
 *   FC_SEED=123 npx vitest run test/hardening/fuzz.test.ts
 *
 * FC_RUNS=10 multiplies every property's number of runs (a deeper local
 * search; CI uses 1, sized so the fuzz file stays under ~20 s on 2 cores).
 */
import fc from 'fast-check';
import { CastellanError } from '../../src/platform/errors.ts';

export const FC_SEED = process.env.FC_SEED !== undefined && process.env.FC_SEED !== '' ? Number(process.env.FC_SEED) : 0x5eed_2024;
if (!Number.isSafeInteger(FC_SEED)) throw new Error(`FC_SEED must be an integer, got "${process.env.FC_SEED}"`);
export const FC_RUNS = Math.max(0.01, Number(process.env.FC_RUNS ?? 1) || 1);
const runs = (n: number): number => Math.max(1, Math.round(n * FC_RUNS));

function reseed(e: unknown): never {
  const msg = e instanceof Error ? e.message : String(e);
  const err = new Error(`property failed with FC_SEED=${FC_SEED} (re-run with FC_SEED=${FC_SEED} to reproduce)\n${msg}`);
  if (e instanceof Error) err.stack = `${err.message}\n${e.stack ?? ''}`;
  throw err;
}

export function check<T>(prop: fc.IProperty<T>, numRuns: number): void {
  try {
    fc.assert(prop, { seed: FC_SEED, numRuns: runs(numRuns), endOnFailure: false });
  } catch (e) {
    reseed(e);
  }
}

export async function checkAsync<T>(prop: fc.IAsyncProperty<T>, numRuns: number): Promise<void> {
  try {
    await fc.assert(prop, { seed: FC_SEED, numRuns: runs(numRuns), endOnFailure: false });
  } catch (e) {
    reseed(e);
  }
}

/** What a refusal must look like: Castellan's own error type, a kind, a stable code and a non-empty message. */
export function assertCastellan(e: unknown, where: string): CastellanError {
  if (!(e instanceof CastellanError)) {
    throw new Error(`${where}: threw a foreign ${(e as Error)?.constructor?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`);
  }
  if (typeof e.message !== 'string' || e.message.trim() === '') throw new Error(`${where}: CastellanError ${e.code} with an empty message`);
  if (!e.kind || !e.code) throw new Error(`${where}: CastellanError without kind or code`);
  return e;
}

/** Runs `fn`; returns undefined if it returned, the CastellanError if it refused; anything else fails. Bounded time. */
export function refusalOf(fn: () => unknown, where: string, maxMs = 1000): CastellanError | undefined {
  const t0 = performance.now();
  let refusal: CastellanError | undefined;
  try {
    fn();
  } catch (e) {
    refusal = assertCastellan(e, where);
  }
  const ms = performance.now() - t0;
  if (ms > maxMs) throw new Error(`${where}: took ${ms.toFixed(0)} ms (bound ${maxMs} ms): super-linear input handling?`);
  return refusal;
}

/** The same for async code; a call that neither settles nor refuses within `maxMs` is a hang. */
export async function refusalOfAsync(fn: () => Promise<unknown>, where: string, maxMs = 2000): Promise<CastellanError | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${where}: did not settle within ${maxMs} ms (hang)`)), maxMs);
  });
  try {
    await Promise.race([fn(), hang]);
    return undefined;
  } catch (e) {
    if (e instanceof Error && e.message.includes('(hang)')) throw e;
    return assertCastellan(e, where);
  } finally {
    clearTimeout(timer);
  }
}
