/** Path canonicalisation, patterns, CIDRs: the building blocks, case by case. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileRequestPrincipal } from '../../src/authz/compile.ts';
import { stripPort } from '../../src/authz/request-context.ts';
import { cidrContains, parseCidr, parseIp, parseRequestIp } from '../../src/authz/ip.ts';
import { canonicalizePath, normalizePath, splitPath } from '../../src/authz/path.ts';
import { compileGlob, compilePathTemplate, globMatch, matchPathTemplate, matchPattern } from '../../src/authz/patterns.ts';

describe('Envoy normalize_path (Chromium canonicaliser)', () => {
  it.each([
    ['/a/b/../c', '/a/c'],
    ['/a/./b', '/a/b'],
    ['/a/.', '/a/'],
    ['/a/..', '/'],
    ['/..', '/'],
    ['/../../a', '/a'],
    ['/a/...', '/a/...'],
    ['/a/.b', '/a/.b'],
    ['/a/b./c', '/a/b./c'],
    ['/%2e%2e/a', '/a'],
    ['/a/b/.%2E/c', '/a/c'],
    ['/a%2e%2E/b', '/a../b'],
    ['/a/%2e', '/a/'],
    ['\\a\\b', '/a/b'],
    ['/a\\..\\b', '/b'],
    ['/a b', '/a%20b'],
    ['/a"b<c>', '/a%22b%3Cc%3E'],
    ['/{x}|^`', '/%7Bx%7D%7C%5E%60'],
    ['/é', '/%C3%A9'],
    ['/%41%7a%7E%2D', '/Az~-'],
    ['/%2f%2F%5c', '/%2f%2F%5c'],
    ['/%3F%23', '/%3F%23'],
    ['/%zz%4', '/%zz%4'],
    ['/%%30%30', '/%2500'],
    ["/!$&'()*+,;=:@[]", "/!$&'()*+,;=:@[]"],
    ['', '/'],
    ['a/b', '/a/b'],
    ['//a//b', '//a//b'],
  ])('%j -> %j', (input, out) => {
    expect(canonicalizePath(input)).toBe(out);
  });

  it('refuses NUL, raw or escaped (Envoy answers 400)', () => {
    expect(canonicalizePath('/a\u0000b')).toBeNull();
    expect(canonicalizePath('/a%00b')).toBeNull();
    expect(normalizePath('/a%00', 'none')).toBe('/a%00');
  });

  it('modes: decode %2F/%5C first, normalise, merge slashes last', () => {
    expect(normalizePath('/a%2F%2fb%5Cc%5cd', 'decode-and-merge-slashes')).toBe('/a/b/c/d');
    expect(normalizePath('/a%2F..%2Fb', 'merge-slashes')).toBe('/a%2F..%2Fb');
    expect(normalizePath('/a//./b', 'merge-slashes')).toBe('/a/b');
    expect(normalizePath('///a', 'base')).toBe('///a');
    expect(normalizePath('\\\\a', 'merge-slashes')).toBe('/a');
  });

  it('splits the fragment, then the query', () => {
    expect(splitPath('/a?b#c')).toEqual({ path: '/a', query: '?b' });
    expect(splitPath('/a#b?c')).toEqual({ path: '/a', query: '' });
    expect(splitPath('/a')).toEqual({ path: '/a', query: '' });
  });

  it('property: canonical paths are fixed points and start with "/"', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[/a-z.%2eEfF5c\\ ?#]{0,30}$/), (s) => {
        const c = canonicalizePath(s);
        if (c === null) return;
        expect(c.startsWith('/')).toBe(true);
        expect(canonicalizePath(c)).toBe(c);
      }),
      { seed: 7, numRuns: 3000 },
    );
  });
});

describe('patterns', () => {
  it('glob: "*" matches any run, pieces left to right', () => {
    const g = (p: string, s: string): boolean => globMatch(compileGlob(p), s);
    expect(g('*/ns/bar/*', 'spiffe://td/ns/bar/sa/x')).toBe(true);
    expect(g('*/ns/b*r/*', 'spiffe://td/ns/bazaar/sa/x')).toBe(true);
    expect(g('*/ns/bar/*', 'spiffe://td/ns/bar')).toBe(false);
    expect(g('a*a*a', 'aa')).toBe(false);
    expect(g('a*a*a', 'aaa')).toBe(true);
    expect(g('ab', 'ab')).toBe(true);
    expect(g('*', '')).toBe(true);
  });

  it('A5: matching stays linear on adversarial input', () => {
    const long = 'a'.repeat(200_000);
    const t = performance.now();
    expect(globMatch(compileGlob('*a*a*a*a*a*a*a*a*b'), long)).toBe(false);
    expect(matchPathTemplate(compilePathTemplate('/{*}/{*}/{**}/x'), '/' + long)).toBe(false);
    expect(canonicalizePath('/' + '%2e/'.repeat(20_000) + long)).toBe('/' + long);
    expect(performance.now() - t).toBeLessThan(1000);
  });

  it('path templates follow Envoy\'s uri_template regex', () => {
    const m = (t: string, p: string): boolean => matchPathTemplate(compilePathTemplate(t), p);
    expect(m('/foo/{*}', '/foo/bar')).toBe(true);
    expect(m('/foo/{*}', '/foo/bar/baz')).toBe(false);
    expect(m('/foo/{*}', '/foo/')).toBe(false);
    expect(m('/foo/{**}/', '/foo/bar/')).toBe(true);
    expect(m('/foo/{**}/', '/foo//')).toBe(true);
    expect(m('/foo/{**}/', '/foo/bar')).toBe(false);
    expect(m('/foo/{*}/bar/{**}', '/foo/buzz/bar/')).toBe(true);
    expect(m('/foo/{*}/bar/{**}', '/foo/buzz/bar/baz')).toBe(true);
    expect(m('/foo/{**}/x', '/foo/a/b/x')).toBe(true);
    expect(m('/foo/{**}', '/foo')).toBe(false);
    expect(m('/{**}', '/')).toBe(true);
    expect(m('/foo/{*}', '/foo/a%20b')).toBe(true);
    expect(m('/foo/{*}', '/foo/a*b')).toBe(false);
  });

  it('request principals: Istio splits issuer and subject at the last "/"', () => {
    const m = (v: string, iss: string, sub: string): boolean => {
      const c = compileRequestPrincipal(v);
      return matchPattern(c.iss, iss) && matchPattern(c.sub, sub);
    };
    expect(m('https://i.example/alice', 'https://i.example', 'alice')).toBe(true);
    expect(m('*', 'x', 'y')).toBe(true);
    expect(m('*', 'x', '')).toBe(false);
    expect(m('*/alice', 'anything', 'alice')).toBe(true);
    expect(m('*.example/alice', 'https://i.example', 'alice')).toBe(true);
    expect(m('https://i.example/*', 'https://i.example', 'bob')).toBe(true);
    expect(m('https://i.example/al*', 'https://i.example', 'alice')).toBe(true);
    expect(m('issuer*', 'issuer-x', 'y')).toBe(true);
    expect(m('*alice', 'x', 'bob-alice')).toBe(true);
    expect(m('https://i.example*', 'https://i.example', 'alice')).toBe(false);
  });

  it('strips a port from an authority', () => {
    expect(stripPort('a.b:80')).toBe('a.b');
    expect(stripPort('[::1]:80')).toBe('[::1]');
    expect(stripPort('::1')).toBe('::1');
    expect(stripPort('a.b:x')).toBe('a.b:x');
    expect(stripPort('a.b')).toBe('a.b');
  });
});

describe('IP addresses and CIDRs (Go netip rules)', () => {
  it.each(['1.2.3.4', '0.0.0.0', '255.255.255.255', '::', '::1', '1::', '2001:db8::1', '2001:0db8:0000:0000:0000:0000:0000:0001', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:1.2.3.4'])('ok/%s', (s) => {
    expect(parseIp(s)).toBeDefined();
  });
  it.each(['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '256.1.1.1', '1.2.3.-1', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', '12345::', 'g::1', '1.2.3.4/8', ' 1.2.3.4'])('fail/%j', (s) => {
    expect(parseIp(s)).toBeUndefined();
  });
  it('CIDR containment, v4 and v6', () => {
    const c = (cidr: string, ip: string): boolean => cidrContains(parseCidr(cidr)!, parseRequestIp(ip)!);
    expect(c('10.0.0.0/8', '10.255.1.1')).toBe(true);
    expect(c('10.0.0.0/8', '11.0.0.1')).toBe(false);
    expect(c('0.0.0.0/0', '1.2.3.4')).toBe(true);
    expect(c('1.2.3.4', '1.2.3.4')).toBe(true);
    expect(c('1.2.3.4/31', '1.2.3.5')).toBe(true);
    expect(c('2001:db8::/32', '2001:db8:ffff::1')).toBe(true);
    expect(c('2001:db8::/33', '2001:db8:8000::1')).toBe(false);
    expect(c('::/0', '::1')).toBe(true);
    expect(c('::/0', '1.2.3.4')).toBe(false);
    expect(c('10.0.0.0/8', '::ffff:10.1.1.1')).toBe(true);
    expect(c('2001:db8::1/128', '2001:db8::1')).toBe(true);
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
    expect(parseCidr('::/129')).toBeUndefined();
    expect(parseCidr('10.0.0.0/08')).toBeUndefined();
  });
});
