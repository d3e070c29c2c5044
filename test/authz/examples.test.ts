/** The shipped examples (deploy/examples/authz) stay valid and their suites stay green. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectPolicies } from '../../src/authz/loader.ts';
import { runSuiteFile } from '../../src/authz/suite.ts';

const dir = join(import.meta.dirname, '../../deploy/examples/authz');
const suites = readdirSync(join(dir, 'suites')).filter((f) => f.endsWith('.yaml')).map((f) => join(dir, 'suites', f));

describe('deploy/examples/authz', () => {
  it('the example policies validate without errors', () => {
    const r = collectPolicies([join(dir, 'policies')]);
    expect(r.issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(r.policies.length).toBeGreaterThanOrEqual(8);
  });

  it('has suites', () => {
    expect(suites.length).toBeGreaterThanOrEqual(2);
  });

  it.each(suites.map((s) => [s.slice(dir.length + 1), s]))('%s passes', (_n, suite) => {
    const r = runSuiteFile(suite, { rootNamespace: 'istio-system', pathNormalization: 'base', customDecision: 'deny' });
    const failed = r.cases.filter((c) => !c.passed);
    expect(failed.map((c) => `${c.name}: ${c.message}`)).toEqual([]);
    expect(r.cases.length).toBeGreaterThan(5);
  });
});
