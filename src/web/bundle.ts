/**
 * Bundles a page script for the browser with esbuild, in memory, from the
 * sources this process runs (src/*.ts from a checkout, dist/*.js in the
 * image): the playground's engine is the module graph of `castellan authz
 * check`, never a copy that could drift. `node:fs` and `node:path` are
 * replaced by shims/ (the engine's text entry points need neither).
 */
import { fileURLToPath } from 'node:url';
import { CastellanError } from '../platform/errors.ts';

/** A module next to this one: `name.ts` when running from sources, `name.js` when compiled. */
export function sibling(name: string): string {
  return fileURLToPath(new URL(`./${name}.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));
}

export async function bundleScript(entry: string): Promise<string> {
  const esbuild = await import('esbuild');
  const shims: Record<string, string> = { 'node:fs': sibling('shims/fs'), 'node:path': sibling('shims/path') };
  try {
    const r = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      legalComments: 'none',
      logLevel: 'silent',
      plugins: [
        {
          name: 'castellan-node-shims',
          setup(b) {
            b.onResolve({ filter: /^node:/ }, (a) => {
              const to = shims[a.path];
              if (!to) return { errors: [{ text: `${a.path} is not available in the browser bundle (imported by ${a.importer})` }] };
              return { path: to };
            });
          },
        },
      ],
    });
    return r.outputFiles[0]!.text;
  } catch (e) {
    throw new CastellanError('INTERNAL', 'web.bundle', `cannot bundle the page script ${entry}: ${(e as Error).message}`, { cause: e });
  }
}
