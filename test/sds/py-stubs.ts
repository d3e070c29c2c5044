/**
 * Python grpcio stubs for the SDS protos, generated at test time with
 * Debian's grpc_tools from the Envoy protos shipped in @grpc/grpc-js-xds:
 * only sds.proto, secret.proto and their transitive imports (the
 * google/protobuf well-known types come with the Python runtime).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const PYTHON = '/usr/bin/python3';
const DEPS = join(import.meta.dirname, '../../node_modules/@grpc/grpc-js-xds/deps');
const ROOTS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((r) => join(DEPS, r));

export function protoClosure(start: string[]): string[] {
  const seen = new Set<string>();
  const todo = [...start];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f) || f.startsWith('google/protobuf/')) continue;
    const root = ROOTS.find((r) => existsSync(join(r, f)));
    if (!root) throw new Error(`proto ${f} not found under ${DEPS}`);
    seen.add(f);
    for (const m of readFileSync(join(root, f), 'utf8').matchAll(/^import\s+(?:public\s+)?"([^"]+)"/gm)) todo.push(m[1]!);
  }
  return [...seen].sort();
}

/** Generates the stubs into `outDir` (must exist), with `extra` protos (and their imports). Throws if grpc_tools is missing: CI installs it. */
export function generateSdsStubs(outDir: string, extra: readonly string[] = []): void {
  const files = protoClosure(['envoy/service/secret/v3/sds.proto', 'envoy/extensions/transport_sockets/tls/v3/secret.proto', ...extra]);
  execFileSync(PYTHON, ['-m', 'grpc_tools.protoc', ...ROOTS.map((r) => `-I${r}`), `--python_out=${outDir}`, `--grpc_python_out=${outDir}`, ...files], { stdio: 'pipe' });
}
