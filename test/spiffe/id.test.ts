import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatSpiffeId, parseSpiffeId, parseWorkloadSpiffeId, workloadSpiffeId } from '../../src/spiffe/id.ts';
import { CastellanError } from '../../src/platform/errors.ts';

describe('SPIFFE ID parsing (security.md C6)', () => {
  it.each([
    'spiffe://cluster.local',
    'spiffe://cluster.local/ns/default/sa/frontend',
    'spiffe://example_org-1.x/a/B/c.d/e-f/g_h',
  ])('ok/%s', (s) => {
    expect(formatSpiffeId(parseSpiffeId(s))).toBe(s);
  });

  it.each([
    ['fail/scheme', 'https://cluster.local/ns/a/sa/b'],
    ['fail/uppercase-scheme', 'SPIFFE://cluster.local/ns/a/sa/b'],
    ['fail/uppercase-td', 'spiffe://Cluster.local/ns/a/sa/b'],
    ['fail/port', 'spiffe://cluster.local:8080/ns/a/sa/b'],
    ['fail/userinfo', 'spiffe://user@cluster.local/ns/a/sa/b'],
    ['fail/percent', 'spiffe://cluster.local/ns/a%2Fb/sa/c'],
    ['fail/empty-seg', 'spiffe://cluster.local/ns//sa/b'],
    ['fail/dot', 'spiffe://cluster.local/ns/./sa/b'],
    ['fail/dotdot', 'spiffe://cluster.local/ns/../sa/b'],
    ['fail/trailing-slash', 'spiffe://cluster.local/ns/a/sa/b/'],
    ['fail/query', 'spiffe://cluster.local/ns/a/sa/b?x=1'],
    ['fail/fragment', 'spiffe://cluster.local/ns/a/sa/b#x'],
    ['fail/empty-td', 'spiffe:///ns/a/sa/b'],
    ['fail/long-td', `spiffe://${'a'.repeat(256)}/x`],
    ['fail/long-id', `spiffe://td/${'a'.repeat(2048)}`],
    ['fail/space', 'spiffe://cluster.local/ns/a b/sa/c'],
  ])('%s', (_name, s) => {
    expect(() => parseSpiffeId(s)).toThrow(CastellanError);
  });

  it('workload IDs round-trip and reject non-DNS-1123 names', () => {
    const id = workloadSpiffeId({ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'frontend' });
    expect(id).toBe('spiffe://cluster.local/ns/default/sa/frontend');
    expect(parseWorkloadSpiffeId(id)).toEqual({ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'frontend' });
    expect(() => workloadSpiffeId({ trustDomain: 'cluster.local', namespace: 'Default', serviceAccount: 'x' })).toThrow(CastellanError);
    expect(() => parseWorkloadSpiffeId('spiffe://cluster.local/ns/a/sa/b/extra')).toThrow(CastellanError);
  });

  it('property: format(parse(x)) === x for generated valid IDs, and parse never throws a foreign error', () => {
    const seg = fc.stringMatching(/^[a-zA-Z0-9._-]{1,20}$/).filter((s) => s !== '.' && s !== '..');
    const td = fc.stringMatching(/^[a-z0-9._-]{1,40}$/);
    fc.assert(
      fc.property(td, fc.array(seg, { maxLength: 6 }), (t, segs) => {
        const s = `spiffe://${t}${segs.map((x) => '/' + x).join('')}`;
        expect(formatSpiffeId(parseSpiffeId(s))).toBe(s);
      }),
      { seed: 42 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        try {
          parseSpiffeId(s);
        } catch (e) {
          expect(e).toBeInstanceOf(CastellanError);
        }
      }),
      { seed: 43 },
    );
  });
});
