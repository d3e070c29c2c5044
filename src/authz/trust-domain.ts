/**
 * Istio's trust-domain aliasing of principals (pilot/pkg/security/trustdomain,
 * applied by the authorization model to `source.principal` values and
 * notValues: `principals`, `notPrincipals` and `when` on `source.principal`).
 *
 * The mesh has a trust domain and optional aliases (meshConfig.trustDomain,
 * trustDomainAliases): one list, the trust domain first. A principal
 * `<td>/ns/<ns>/sa/<sa>` (exactly five `/`-parts) whose trust domain is in
 * that list, or is the literal `cluster.local` (Istio's pointer to "the local
 * trust domain"), stands for the same workload in every trust domain of the
 * list: it is replaced by one principal per listed trust domain (kept as
 * written where its trust domain is a `*suffix` pattern matching that one).
 * Anything else is kept as written: `*` as trust domain, principals of
 * another shape, and principals of any other trust domain — federated trust
 * domains included, which are never aliases (a principal
 * `other.example/ns/x/sa/y` matches only workloads of other.example).
 *
 * So with the defaults (trust domain `cluster.local`, no alias) nothing
 * changes; with trust domain `a.example`, `cluster.local/ns/x/sa/y` means
 * `a.example/ns/x/sa/y` (and no longer a peer whose trust domain really is
 * cluster.local).
 */

/** Istio's default trust domain, and its pointer to the local one in principals. */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

const prefixMatch = (a: string, pattern: string): boolean => pattern.endsWith('*') && a.startsWith(pattern.slice(0, -1));
const suffixMatch = (a: string, pattern: string): boolean => pattern.startsWith('*') && a.endsWith(pattern.slice(1));

/** Istio's trustdomain stringMatch: exact, `*`, or a prefix/suffix pattern on either side. */
function inList(a: string, list: readonly string[]): boolean {
  return list.some((s) => a === s || s === '*' || prefixMatch(a, s) || prefixMatch(s, a) || suffixMatch(a, s) || suffixMatch(s, a));
}

/**
 * The principals with the local trust domain's aliases spelled out.
 * `trustDomains` is [trust domain, ...aliases]; returns `principals` itself
 * when nothing changes.
 */
export function expandTrustDomainAliases(principals: readonly string[], trustDomains: readonly string[]): readonly string[] {
  if (trustDomains.length === 1 && trustDomains[0] === DEFAULT_TRUST_DOMAIN && !principals.some((p) => p.split('/')[0]?.includes('*'))) return principals;
  const out: string[] = [];
  const push = (p: string): void => {
    if (!out.includes(p)) out.push(p);
  };
  for (const p of principals) {
    const parts = p.split('/');
    const td = parts[0]!;
    if (parts.length !== 5 || td === '*' || !(inList(td, trustDomains) || td === DEFAULT_TRUST_DOMAIN)) {
      push(p);
      continue;
    }
    for (const t of trustDomains) push(suffixMatch(t, td) ? p : [t, ...parts.slice(1)].join('/'));
  }
  return out;
}

/** [trust domain, ...aliases] from engine options (defaults: cluster.local, none). */
export function trustDomainList(o: { trustDomain?: string; trustDomainAliases?: readonly string[] }): readonly string[] {
  const td = o.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  return [td, ...(o.trustDomainAliases ?? []).filter((a) => a !== td)];
}

/** A trust domain name as SPIFFE spells it (aliases may also be `*` patterns, as in Istio). */
export function isTrustDomainName(s: string): boolean {
  return s.length > 0 && s.length <= 255 && /^[a-z0-9._-]+$/.test(s);
}
