/* global module */
/**
 * Layering of src/, as the README's folder table names it (`npm run deps`,
 * run by .ci/run). Each folder may import only the folders listed for it
 * (lower layers); no import cycles; protocol and domain code never imports
 * grpc-js; only src/kube/ imports @kubernetes/client-node; src/ never imports
 * tests or benchmarks.
 *
 * CommonJS: dependency-cruiser reads its configuration with require().
 */
const LAYERS = {
  platform: [],
  gen: [],
  config: ['platform'],
  spiffe: ['platform'],
  pki: ['platform', 'spiffe'],
  ca: ['platform', 'spiffe', 'pki'],
  identity: ['platform', 'spiffe', 'pki'],
  authz: ['platform', 'spiffe', 'gen'],
  grpc: ['platform', 'gen', 'identity', 'authz'],
  kube: ['platform', 'spiffe', 'ca', 'identity', 'authz'],
  sds: ['platform', 'gen', 'spiffe', 'pki', 'grpc'],
  server: ['platform', 'config', 'gen', 'spiffe', 'pki', 'ca', 'identity', 'authz', 'grpc', 'kube', 'sds'],
  agent: ['platform', 'config', 'gen', 'spiffe', 'pki', 'identity', 'grpc', 'sds', 'workload'],
  // the SPIFFE Workload API serves the agent's secret cache; the agent starts it (a dynamic import)
  workload: ['platform', 'config', 'gen', 'spiffe', 'pki', 'ca', 'identity', 'grpc', 'sds', 'agent'],
  web: ['platform', 'spiffe', 'pki', 'ca', 'authz'],
  dev: ['platform', 'config', 'gen', 'spiffe', 'pki', 'ca', 'identity', 'authz', 'grpc', 'kube', 'sds', 'server', 'agent', 'workload'],
  cli: ['platform', 'config', 'gen', 'spiffe', 'pki', 'ca', 'identity', 'authz', 'grpc', 'kube', 'sds', 'server', 'agent', 'workload', 'web', 'dev'],
};

const PROTOCOL = ['platform', 'config', 'spiffe', 'pki', 'ca', 'identity', 'authz', 'kube'];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'an import cycle: split the shared part out into a lower layer',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'unknown-folder',
      severity: 'error',
      comment: 'a folder of src/ that has no layer: add it to LAYERS in .dependency-cruiser.cjs and to the README folder table',
      from: { path: '^src/', pathNot: `^src/(${Object.keys(LAYERS).join('|')})/` },
      to: {},
    },
    ...Object.entries(LAYERS).map(([layer, allowed]) => ({
      name: `layer-${layer}`,
      severity: 'error',
      comment: `src/${layer}/ may import only ${allowed.length ? allowed.map((a) => `src/${a}/`).join(', ') : 'nothing else in src/'}`,
      from: { path: `^src/${layer}/` },
      to: { path: '^src/', pathNot: `^src/(${[layer, ...allowed].join('|')})/` },
    })),
    {
      name: 'protocol-without-grpc-js',
      severity: 'error',
      comment: 'protocol and domain code stays transport-free: gRPC wiring lives in src/grpc/, src/server/, src/sds/, src/agent/',
      from: { path: `^src/(${PROTOCOL.join('|')})/` },
      to: { path: 'node_modules/@grpc/grpc-js/' },
    },
    {
      name: 'client-node-only-in-kube',
      severity: 'error',
      comment: '@kubernetes/client-node is used by src/kube/ only',
      from: { path: '^src/', pathNot: '^src/kube/' },
      to: { path: 'node_modules/@kubernetes/client-node/' },
    },
    {
      name: 'src-not-tests',
      severity: 'error',
      comment: 'production code never imports tests, test support or benchmarks',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^src/gen/.*\\.js$' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.d.ts', '.js'] },
  },
};
