/** Human-readable decisions, for `castellan authz check` and `test`. */
import { REASON_TEXT, type Decision } from './model.ts';

export function formatDecision(d: Decision, opts: { explain?: boolean } = {}): string {
  const lines: string[] = [];
  const by = d.policy ? `${d.policy} (${d.action}, rule ${d.rule})` : 'no policy (default)';
  lines.push(`${d.decision} by ${by}: ${REASON_TEXT[d.reason]}`);
  if (d.customProvider) lines.push(`custom provider: ${d.customProvider}`);
  if (d.normalizedPath !== undefined) lines.push(`path matched as: ${d.normalizedPath}`);
  if (d.audit.length) lines.push(`audited by: ${d.audit.join(', ')}`);
  if (d.dryRunMatched.length) lines.push(`dry-run policies that matched (not enforced): ${d.dryRunMatched.join(', ')}`);
  if (opts.explain) {
    const selected = d.trace.filter((t) => t.selected);
    const others = d.trace.filter((t) => !t.selected);
    lines.push(`policies considered (${selected.length}):`);
    if (selected.length === 0) lines.push('  (none applies to this workload)');
    const width = Math.max(0, ...d.trace.map((t) => t.policy.length));
    for (const t of d.trace) {
      const head = `  ${t.action.padEnd(6)} ${t.policy.padEnd(width)}`;
      const decided = t.policy === d.policy ? '  <- decides' : '';
      if (!t.selected) {
        lines.push(`${head}  not selected: ${t.note ?? ''}`);
        continue;
      }
      const dry = t.dryRun ? ' [dry-run]' : '';
      if (t.matched) {
        lines.push(`${head}  matched rule ${t.rule}${dry}${decided}${t.note ? ` (${t.note})` : ''}`);
      } else {
        lines.push(`${head}  no match${dry}${t.note ? ` (${t.note})` : ''}`);
        for (const r of t.rules ?? []) lines.push(`      ${r.index >= 0 ? `rule ${r.index}` : 'policy'}: ${r.failed}`);
      }
    }
    if (others.length === 0 && selected.length > 0) lines.push('  (every policy in scope selects this workload)');
  }
  return lines.join('\n') + '\n';
}
