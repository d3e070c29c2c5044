/**
 * Loads AuthorizationPolicy documents from files and directories as users
 * keep them: multi-document YAML manifests (`---`), JSON, `kind: List`
 * (kubectl get -o yaml). A directory contributes every `.yaml`, `.yml` and
 * `.json` file below it (recursively, sorted, hidden entries skipped, as in
 * a ConfigMap mount). Documents of other kinds are skipped with a note; an
 * empty file holds no policies.
 *
 * Everything that goes wrong is a CastellanError(INVALID_ARGUMENT) whose
 * message names the file, the line, the document (1-based), the policy, the
 * field path and the reason.
 */
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { CastellanError } from '../platform/errors.ts';
import type { AuthorizationPolicy } from './model.ts';
import { formatPath, validatePolicyDocument, type FieldPath, type Severity } from './validate.ts';

/** Largest policy file read (bytes). */
export const MAX_POLICY_FILE_BYTES = 16 * 1024 * 1024;
const MAX_DOCUMENTS = 100_000;
const POLICY_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

export interface FileIssue {
  readonly severity: Severity;
  readonly file: string;
  /** 1-based; 0 for the file as a whole. */
  readonly document: number;
  readonly line?: number;
  /** `namespace/name` when known. */
  readonly policy?: string;
  readonly path: string;
  readonly message: string;
}

export interface LoadResult {
  readonly policies: readonly AuthorizationPolicy[];
  readonly issues: readonly FileIssue[];
  /** The files that were read. */
  readonly files: readonly string[];
}

export function formatIssue(i: FileIssue): string {
  const where = `${i.file}${i.line ? `:${i.line}` : ''}`;
  const doc = i.document > 0 ? ` document ${i.document}${i.policy ? ` (${i.policy})` : ''}:` : '';
  const path = i.path && i.path !== '(document)' ? ` ${i.path}:` : '';
  return `${where}:${doc}${path} ${i.message}`;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Collector {
  readonly policies: AuthorizationPolicy[] = [];
  readonly issues: FileIssue[] = [];
  readonly files: string[] = [];

  /** Handles one parsed document (or one `items[]` entry of a List). */
  object(file: string, document: number, value: unknown, prefix: FieldPath, lineOf: (p: FieldPath) => number | undefined): void {
    if (value === null || value === undefined) return; // empty document
    if (!isObj(value)) {
      this.issues.push({ severity: 'error', file, document, line: lineOf(prefix), path: formatPath(prefix), message: `expected a Kubernetes object (a mapping with apiVersion and kind), got ${Array.isArray(value) ? 'a list' : typeof value}` });
      return;
    }
    const kind = value.kind;
    if (kind === 'List' && Array.isArray(value.items)) {
      value.items.forEach((item: unknown, i) => this.object(file, document, item, [...prefix, 'items', i], lineOf));
      return;
    }
    if (kind !== 'AuthorizationPolicy') {
      const what = typeof kind === 'string' ? `${kind}${typeof value.apiVersion === 'string' ? ` (${value.apiVersion})` : ''}` : 'a document without a kind';
      this.issues.push({ severity: 'note', file, document, line: lineOf(prefix), path: formatPath(prefix), message: `skipped ${what}: not an AuthorizationPolicy` });
      return;
    }
    const md = isObj(value.metadata) ? value.metadata : {};
    const id = typeof md.name === 'string' ? `${typeof md.namespace === 'string' ? md.namespace : 'default'}/${md.name}` : undefined;
    const res = validatePolicyDocument(value, { file, document });
    for (const is of res.issues) {
      const full = [...prefix, ...is.path];
      this.issues.push({ severity: is.severity, file, document, line: lineOf(full), ...(id ? { policy: id } : {}), path: formatPath(full), message: is.message });
    }
    if (res.policy) this.policies.push(res.policy);
  }

  yamlText(file: string, text: string): void {
    const lc = new LineCounter();
    let docs: Document.Parsed[];
    try {
      docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false, strict: true }) as Document.Parsed[];
    } catch (e) {
      this.issues.push({ severity: 'error', file, document: 0, path: '', message: `cannot parse YAML: ${(e as Error).message.split('\n')[0]}` });
      return;
    }
    if (!Array.isArray(docs)) docs = [docs];
    if (docs.length > MAX_DOCUMENTS) {
      this.issues.push({ severity: 'error', file, document: 0, path: '', message: `more than ${MAX_DOCUMENTS} documents` });
      return;
    }
    docs.forEach((doc, i) => {
      const n = i + 1;
      if (doc.errors.length > 0) {
        // The first error is the cause; the parser's follow-up errors are noise.
        const err = doc.errors[0]!;
        const line = err.linePos?.[0]?.line ?? (err.pos ? lc.linePos(err.pos[0]).line : undefined);
        const more = doc.errors.length > 1 ? ` (and ${doc.errors.length - 1} more)` : '';
        this.issues.push({ severity: 'error', file, document: n, ...(line ? { line } : {}), path: '', message: `invalid YAML: ${err.message.split('\n')[0]}${more}` });
        return;
      }
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: 1000 });
      } catch (e) {
        this.issues.push({ severity: 'error', file, document: n, path: '', message: `invalid YAML: ${(e as Error).message.split('\n')[0]}` });
        return;
      }
      const lineOf = (p: FieldPath): number | undefined => {
        for (let k = p.length; k >= 0; k--) {
          try {
            const node = k === 0 ? doc.contents : doc.getIn(p.slice(0, k) as unknown[], true);
            const range = (node as { range?: [number, number, number] } | undefined)?.range;
            if (range) return lc.linePos(range[0]).line;
          } catch {
            // not a node path: try the parent
          }
        }
        return undefined;
      };
      this.object(file, n, value, [], lineOf);
    });
  }

  jsonText(file: string, text: string): void {
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      this.issues.push({ severity: 'error', file, document: 0, path: '', message: `cannot parse JSON: ${(e as Error).message}` });
      return;
    }
    const none = (): undefined => undefined;
    if (Array.isArray(value)) value.forEach((v, i) => this.object(file, i + 1, v, [], none));
    else this.object(file, 1, value, [], none);
  }

  file(path: string): void {
    let buf: Buffer;
    try {
      const st = statSync(path);
      if (st.size > MAX_POLICY_FILE_BYTES) {
        this.issues.push({ severity: 'error', file: path, document: 0, path: '', message: `file is larger than ${MAX_POLICY_FILE_BYTES} bytes` });
        return;
      }
      buf = readFileSync(path);
    } catch (e) {
      this.issues.push({ severity: 'error', file: path, document: 0, path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
      return;
    }
    this.files.push(path);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
    } catch {
      this.issues.push({ severity: 'error', file: path, document: 0, path: '', message: 'file is not valid UTF-8' });
      return;
    }
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    if (extname(path).toLowerCase() === '.json') this.jsonText(path, text);
    else this.yamlText(path, text);
  }

  dir(path: string, seen: Set<string>): void {
    let real: string;
    try {
      real = realpathSync(path);
    } catch (e) {
      this.issues.push({ severity: 'error', file: path, document: 0, path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
      return;
    }
    if (seen.has(real)) return;
    seen.add(real);
    let entries: string[];
    try {
      entries = readdirSync(path).sort();
    } catch (e) {
      this.issues.push({ severity: 'error', file: path, document: 0, path: '', message: `cannot list directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
      return;
    }
    for (const name of entries) {
      if (name.startsWith('.')) continue;
      const p = join(path, name);
      let st;
      try {
        st = statSync(p);
      } catch {
        continue; // dangling link
      }
      if (st.isDirectory()) this.dir(p, seen);
      else if (st.isFile() && POLICY_EXTENSIONS.has(extname(name).toLowerCase())) this.file(p);
    }
  }
}

/** Policy files and directories to read, as given on a command line. */
export function collectPolicies(paths: readonly string[]): LoadResult {
  const c = new Collector();
  const seen = new Set<string>();
  for (const p of paths) {
    let st;
    try {
      st = statSync(p);
    } catch (e) {
      c.issues.push({ severity: 'error', file: p, document: 0, path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : ((e as NodeJS.ErrnoException).code ?? (e as Error).message)}` });
      continue;
    }
    if (st.isDirectory()) c.dir(p, seen);
    else c.file(p);
  }
  return { policies: c.policies, issues: c.issues, files: c.files };
}

/** Parses policy text (YAML, or JSON when `file` ends in .json). Never reads the disk. */
export function collectPolicyText(text: string, file = '<inline>'): LoadResult {
  const c = new Collector();
  if (extname(file).toLowerCase() === '.json') c.jsonText(file, text);
  else c.yamlText(file, text);
  return { policies: c.policies, issues: c.issues, files: [] };
}

/** Validates already-parsed documents (inline documents of a test suite). */
export function collectPolicyObjects(docs: readonly { value: unknown; file: string; document: number; prefix?: FieldPath }[]): LoadResult {
  const c = new Collector();
  for (const d of docs) c.object(d.file, d.document, d.value, d.prefix ?? [], () => undefined);
  return { policies: c.policies, issues: c.issues, files: [] };
}

/** Throws a CastellanError listing every error of `r` (warnings and notes are not errors). */
export function assertNoErrors(r: LoadResult): LoadResult {
  const errors = r.issues.filter((i) => i.severity === 'error');
  if (errors.length > 0) {
    const head = errors.length === 1 ? 'invalid policy' : `${errors.length} errors in policies`;
    throw new CastellanError('INVALID_ARGUMENT', 'authz.invalid_policy', `${head}:\n  ${errors.map(formatIssue).join('\n  ')}`);
  }
  const ids = new Map<string, AuthorizationPolicy>();
  for (const p of r.policies) {
    const id = `${p.namespace}/${p.name}`;
    const prev = ids.get(id);
    if (prev) {
      throw new CastellanError('INVALID_ARGUMENT', 'authz.duplicate_policy', `policy ${id} is defined twice: ${prev.origin.file} document ${prev.origin.document} and ${p.origin.file} document ${p.origin.document}`);
    }
    ids.set(id, p);
  }
  return r;
}

/** Reads and validates; throws CastellanError on any error. */
export function loadPolicies(paths: readonly string[]): LoadResult {
  return assertNoErrors(collectPolicies(paths));
}

/**
 * The policy files `paths` currently name, with their modification stamps:
 * a cheap fingerprint to notice edits (reload on change).
 */
export function policyFingerprint(paths: readonly string[]): string {
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (p: string, explicit: boolean): void => {
    let st;
    try {
      st = statSync(p);
    } catch {
      out.push(`${p}:missing`);
      return;
    }
    if (st.isDirectory()) {
      let real: string;
      try {
        real = realpathSync(p);
      } catch {
        return;
      }
      if (seen.has(real)) return;
      seen.add(real);
      let names: string[] = [];
      try {
        names = readdirSync(p).sort();
      } catch {
        out.push(`${p}:unreadable`);
      }
      for (const n of names) if (!n.startsWith('.')) visit(join(p, n), false);
    } else if (st.isFile() && (explicit || POLICY_EXTENSIONS.has(extname(p).toLowerCase()))) {
      out.push(`${p}:${st.ino}:${st.size}:${st.mtimeMs}`);
    }
  };
  for (const p of paths) visit(p, true);
  return out.join('\n');
}
