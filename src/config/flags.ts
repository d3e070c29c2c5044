/**
 * Command-line flags, environment and config file, layered the same way for
 * every command: built-in defaults < `--config FILE` (YAML) < `CASTELLAN_*`
 * environment variables < flags. Unknown flags, unknown config keys and
 * malformed values are errors that name their source.
 *
 * A flag `--grpc-listen` is `grpcListen` in the config file and
 * `CASTELLAN_GRPC_LISTEN` in the environment. Repeatable flags take a
 * comma-separated list in the environment and a YAML list in the file.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import type * as Yaml from 'yaml';
import { CastellanError } from '../platform/errors.ts';

export interface FlagSpec {
  /** kebab-case flag name without dashes, e.g. `grpc-listen`. */
  name: string;
  type: 'string' | 'boolean';
  multiple?: boolean;
  default?: string | boolean | string[];
  /** Placeholder shown in help, e.g. `ADDR`. */
  arg?: string;
  help: string;
  /** False for flags that make no sense in a file or the environment (e.g. --help). */
  layered?: boolean;
  /**
   * A structured value (a list of mappings): YAML in the config file, JSON
   * text as a flag or variable; the command receives JSON text either way
   * and validates it.
   */
  structured?: boolean;
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

export interface ParsedCommand {
  values: FlagValues;
  positionals: string[];
  /** Where each value came from, for error messages: `flag`, `env`, `config` or `default`. */
  sources: Record<string, 'flag' | 'env' | 'config' | 'default'>;
}

export function camel(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function envName(name: string): string {
  return 'CASTELLAN_' + name.replace(/-/g, '_').toUpperCase();
}

export function helpText(command: string, synopsis: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `--${s.name}${s.type === 'string' ? ` ${s.arg ?? 'VALUE'}` : ''}`;
    const def =
      s.default === undefined || s.default === false || (Array.isArray(s.default) && s.default.length === 0)
        ? ''
        : ` (default: ${Array.isArray(s.default) ? s.default.join(',') : String(s.default)})`;
    const rep = s.multiple ? ' [repeatable]' : '';
    return `  ${left.padEnd(30)} ${s.help}${def}${rep}`;
  });
  return [`usage: castellan ${command} ${synopsis}`.trimEnd(), '', 'flags:', ...rows, ''].join('\n');
}

function usageError(command: string, msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan ${command}: ${msg}`);
}

const requireModule = createRequire(import.meta.url);

/**
 * The YAML parser, loaded on the first config file: a command started from
 * flags and variables alone (the agent in its pod) never pays for its 72
 * modules.
 */
function parseYaml(text: string): unknown {
  return (requireModule('yaml') as typeof Yaml).parse(text);
}

/**
 * Parses argv and merges the layers. Throws CastellanError(INVALID_ARGUMENT)
 * with a message naming the offending flag, variable or key.
 * `--help` is handled by the caller (check `values.help`).
 */
export function parseCommand(
  command: string,
  argv: string[],
  specs: FlagSpec[],
  opts: { allowPositionals?: boolean; env?: NodeJS.ProcessEnv; configFlag?: boolean } = {},
): ParsedCommand {
  const env = opts.env ?? process.env;
  const all: FlagSpec[] = [...specs, { name: 'help', type: 'boolean', help: 'show this help', layered: false }];
  if (opts.configFlag !== false) all.push({ name: 'config', type: 'string', arg: 'FILE', help: 'YAML config file', layered: false });
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const s of all) options[s.name] = s.multiple ? { type: s.type, multiple: true } : { type: s.type };
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: opts.allowPositionals ?? false });
  } catch (e) {
    throw usageError(command, (e as Error).message.replace(/\. To specify.*$/s, ''));
  }
  const values: FlagValues = {};
  const sources: ParsedCommand['sources'] = {};
  for (const s of all) {
    if (s.default !== undefined) {
      values[s.name] = s.default;
      sources[s.name] = 'default';
    }
  }
  // Layer 1: config file.
  const configPath = (parsed.values.config as string | undefined) ?? env.CASTELLAN_CONFIG;
  if (configPath && opts.configFlag !== false) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw usageError(command, `cannot read config file ${configPath}: ${(e as Error).message.split('\n')[0]}`);
    }
    if (doc != null) {
      if (typeof doc !== 'object' || Array.isArray(doc)) throw usageError(command, `config file ${configPath}: expected a mapping of keys`);
      const byCamel = new Map(all.filter((s) => s.layered !== false).map((s) => [camel(s.name), s]));
      for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
        const spec = byCamel.get(k);
        if (!spec) throw usageError(command, `config file ${configPath}: unknown key "${k}"`);
        values[spec.name] = coerce(command, spec, v, `config key "${k}"`);
        sources[spec.name] = 'config';
      }
    }
  }
  // Layer 2: environment.
  for (const s of all) {
    if (s.layered === false) continue;
    const raw = env[envName(s.name)];
    if (raw === undefined || raw === '') continue;
    values[s.name] = coerce(command, s, s.multiple ? raw.split(',').map((x) => x.trim()).filter(Boolean) : raw, envName(s.name));
    sources[s.name] = 'env';
  }
  // Layer 3: flags.
  for (const [k, v] of Object.entries(parsed.values)) {
    if (v === undefined) continue;
    values[k] = v as string | boolean | string[];
    sources[k] = 'flag';
  }
  return { values, positionals: parsed.positionals, sources };
}

function coerce(command: string, spec: FlagSpec, v: unknown, where: string): string | boolean | string[] {
  if (spec.structured) return typeof v === 'string' ? v : JSON.stringify(v);
  if (spec.type === 'boolean') {
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw usageError(command, `${where}: expected true or false`);
  }
  if (spec.multiple) {
    const arr = Array.isArray(v) ? v : [v];
    if (!arr.every((x) => typeof x === 'string' || typeof x === 'number')) throw usageError(command, `${where}: expected a list of strings`);
    return arr.map(String);
  }
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  throw usageError(command, `${where}: expected a string`);
}

/** Parses durations like `90s`, `15m`, `24h`, `90d`, `1h30m` or plain seconds. Returns milliseconds. */
export function parseDuration(s: string, what = 'duration'): number {
  const t = s.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|y)/g;
  const unit: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, y: 3.1536e10 };
  let total = 0;
  let consumed = 0;
  for (const m of t.matchAll(re)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  if (consumed !== t.length || t.length === 0 || !Number.isFinite(total)) {
    throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `invalid ${what} "${s}": use e.g. 90s, 15m, 24h, 90d`);
  }
  return Math.round(total);
}
