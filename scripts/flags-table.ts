// Prints the markdown flag table of a command, for the README:
//   node scripts/flags-table.ts server|agent|dev|ca
import { SERVER_FLAGS } from '../src/server/config.ts';
import { AGENT_FLAGS } from '../src/agent/config.ts';
import { DEV_FLAGS } from '../src/cli/dev.ts';
import { CA_FLAGS } from '../src/cli/ca.ts';
import type { FlagSpec } from '../src/config/flags.ts';
import { camel, envName } from '../src/config/flags.ts';

const tables: Record<string, FlagSpec[]> = { server: SERVER_FLAGS, agent: AGENT_FLAGS, dev: DEV_FLAGS, ca: CA_FLAGS };
const which = process.argv[2] ?? 'server';
const specs = tables[which];
if (!specs) {
  console.error(`unknown command ${which}`);
  process.exit(2);
}
console.log('| flag | config key / env | default | meaning |');
console.log('|---|---|---|---|');
for (const s of specs) {
  const def = s.default === undefined || s.default === false ? '' : Array.isArray(s.default) ? s.default.join(',') : String(s.default);
  const flag = `\`--${s.name}${s.type === 'string' ? ' ' + (s.arg ?? 'VALUE') : ''}\``;
  console.log(`| ${flag} | \`${camel(s.name)}\` / \`${envName(s.name)}\` | ${def ? '`' + def + '`' : ''} | ${s.help.replace(/\|/g, '\\|')}${s.multiple ? ' (repeatable)' : ''} |`);
}
