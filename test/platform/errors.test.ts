// The error-code registry (src/platform/errors.ts): a code outside it does not
// compile. `npm run typecheck` covers the @ts-expect-error lines below: if a
// misspelled code were accepted, the directive itself would be the error.
import { describe, expect, it } from 'vitest';
import { CastellanError, ERROR_CODES, isErrorCode, type CodeSuffix } from '../../src/platform/errors.ts';

describe('error codes', () => {
  it('a misspelled code is a compile error, thrown or compared', () => {
    // @ts-expect-error: not a registered code (csr.malformed is)
    const e = new CastellanError('INVALID_ARGUMENT', 'csr.malformd', 'x');
    // @ts-expect-error: a comparison with an unregistered code has no overlap
    expect(e.code === 'csr.malformde').toBe(false);
    const suffix: CodeSuffix<'jwtsvid'> = 'alg';
    // @ts-expect-error: jwtsvid.algo is not registered
    const bad: CodeSuffix<'jwtsvid'> = 'algo';
    expect([suffix, bad]).toHaveLength(2);
  });

  it('the registry lists each code once, dotted lower case, and isErrorCode knows exactly them', () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const c of ERROR_CODES) expect(c).toMatch(/^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$/);
    expect(isErrorCode('csr.malformed')).toBe(true);
    expect(isErrorCode('ca_client.permission_denied')).toBe(true);
    expect(isErrorCode('csr.malformd')).toBe(false);
  });
});
