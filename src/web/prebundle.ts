/**
 * Build step (`npm run build`, the image's build stage): writes each page's
 * browser bundle next to its compiled script (dist/web/<page>/app.bundle.js),
 * so the compiled program serves them without esbuild, which then stays a
 * development dependency and out of the image (no program in the image but
 * node). A checkout running the sources bundles in memory at start instead.
 */
import { writeFileSync } from 'node:fs';
import { bundleScript, prebuiltBundlePath, sibling } from './bundle.ts';

for (const page of ['playground/app', 'console/app']) {
  const entry = sibling(page);
  writeFileSync(prebuiltBundlePath(entry), await bundleScript(entry, { fresh: true }));
}
