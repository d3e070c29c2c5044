/**
 * Bundles a page script for the browser with esbuild, in memory, from the
 * sources this process runs (src/*.ts from a checkout; dist/*.js, bundled by
 * `npm run build`, in the image): the playground's engine is the module
 * graph of `castellan authz check`, never a copy that could drift. `node:fs` and `node:path` are
 * replaced by shims/ (the engine's text entry points need neither).
 */
import { existsSync, readFileSync } from 'node:fs';
import type * as Esbuild from 'esbuild';
import { fileURLToPath } from 'node:url';
import { CastellanError } from '../platform/errors.ts';

/** A module next to this one: `name.ts` when running from sources, `name.js` when compiled. */
export function sibling(name: string): string {
  return fileURLToPath(new URL(`./${name}.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));
}

/** Where the build writes the bundle of a compiled entry (src/web/prebundle.ts). */
export function prebuiltBundlePath(entry: string): string {
  return entry.replace(/\.(ts|js)$/, '.bundle.js');
}

/**
 * The page script bundled for the browser: the bundle `npm run build` wrote
 * beside a compiled entry (the image has no esbuild), else built now.
 */
export async function bundleScript(entry: string, o: { fresh?: boolean } = {}): Promise<string> {
  const prebuilt = prebuiltBundlePath(entry);
  if (!o.fresh && entry.endsWith('.js') && existsSync(prebuilt)) return readFileSync(prebuilt, 'utf8');
  let esbuild: typeof Esbuild;
  try {
    esbuild = await import('esbuild');
  } catch (e) {
    throw new CastellanError('FAILED_PRECONDITION', 'web.bundle', `no prebuilt page bundle at ${prebuilt} and esbuild (a development dependency) is not installed: run "npm run build" or "npm install"`, { cause: e });
  }
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
