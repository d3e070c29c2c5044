/**
 * pod-cache: memory of node authorization's pod cache (src/kube/pod-cache.ts)
 * at 100 000 pods, next to what keeping the parsed pod objects whole costs
 * (what client-node's informer cache keeps), measured in the same run on the
 * same generated pods; plus the lookup rate of the two questions node
 * authorization asks (pod by name, any pod of a service account on a node).
 *
 *   node_modules/.bin/node bench/pod-cache.ts      (BENCH_PODS=100000 by default)
 *
 * The pods are generated as the API server sends them (JSON text, one
 * JSON.parse per pod, as each watch event is): a realistic pod of a
 * Deployment with labels, annotations, an owner reference, managedFields,
 * one container with env, probes and resources, a projected token volume,
 * and a status. 100 pods per node; every Deployment (one service account)
 * has 10 replicas spread over 10 nodes, so nearly every pod has its own
 * (node, namespace, service account) slot: the index's worst case.
 *
 * Heap is measured after a forced GC, before and after building each store
 * (heapUsed difference / pods). Prints a table, then `RESULT {json}`.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PodIndex, type PodObject } from '../src/kube/pod-cache.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const PODS = Number(process.env.BENCH_PODS ?? 100_000);
const NODES = Math.max(1, Math.round(PODS / 100));
const REPLICAS = 10;

function podJson(i: number): string {
  const deployment = Math.floor(i / REPLICAS);
  const ns = `team-${deployment % 400}`;
  const app = `svc-${deployment}`;
  const hash = (deployment * 2654435761 >>> 0).toString(16).padStart(8, '0').slice(0, 10);
  const name = `${app}-${hash}-${(i * 40503 >>> 0).toString(36).slice(0, 5).padEnd(5, 'x')}`;
  const node = `node-${((deployment * 7 + (i % REPLICAS) * 13) % NODES).toString().padStart(5, '0')}`;
  const uid = `${(i * 2246822519 >>> 0).toString(16).padStart(8, '0')}-${(i % 65536).toString(16).padStart(4, '0')}-4${(i % 4096).toString(16).padStart(3, '0')}-8${(deployment % 4096).toString(16).padStart(3, '0')}-${i.toString(16).padStart(12, '0')}`;
  const ts = '2026-12-01T10:00:00Z';
  return JSON.stringify({
    metadata: {
      name,
      generateName: `${app}-${hash}-`,
      namespace: ns,
      uid,
      resourceVersion: String(1_000_000 + i),
      creationTimestamp: ts,
      labels: { app, 'pod-template-hash': hash, 'app.kubernetes.io/name': app, 'app.kubernetes.io/part-of': ns, 'security.istio.io/tlsMode': 'istio' },
      annotations: { 'kubectl.kubernetes.io/restartedAt': ts, 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020', 'ambient.istio.io/redirection': 'enabled' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-${hash}`, uid: `rs-${uid}`, controller: true, blockOwnerDeletion: true }],
      managedFields: [
        { manager: 'kube-controller-manager', operation: 'Update', apiVersion: 'v1', time: ts, fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:generateName': {}, 'f:labels': { '.': {}, 'f:app': {}, 'f:pod-template-hash': {} }, 'f:ownerReferences': { '.': {} } }, 'f:spec': { 'f:containers': { [`k:{"name":"${app}"}`]: { '.': {}, 'f:image': {}, 'f:name': {}, 'f:ports': {}, 'f:resources': {} } } } } },
        { manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: ts, fieldsType: 'FieldsV1', subresource: 'status', fieldsV1: { 'f:status': { 'f:conditions': {}, 'f:containerStatuses': {}, 'f:hostIP': {}, 'f:phase': {}, 'f:podIP': {}, 'f:podIPs': {}, 'f:startTime': {} } } },
      ],
    },
    spec: {
      serviceAccountName: app,
      serviceAccount: app,
      nodeName: node,
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      schedulerName: 'default-scheduler',
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: app,
          image: `registry.example/${ns}/${app}:1.${deployment % 50}.0`,
          ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
          env: [{ name: 'LOG_LEVEL', value: 'info' }, { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } }],
          resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
          readinessProbe: { httpGet: { path: '/ready', port: 8080, scheme: 'HTTP' }, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
          volumeMounts: [{ name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
        },
      ],
      volumes: [{ name: 'kube-api-access', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }, { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } }] } }],
      tolerations: [{ key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 }],
    },
    status: {
      phase: 'Running',
      hostIP: `10.0.${Math.floor(i / 250) % 256}.${i % 250}`,
      podIP: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      startTime: ts,
      qosClass: 'Burstable',
      conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: ts }, { type: 'PodScheduled', status: 'True', lastTransitionTime: ts }],
      containerStatuses: [{ name: app, ready: true, restartCount: 0, image: `registry.example/${ns}/${app}:1.0.0`, imageID: `registry.example/${ns}/${app}@sha256:${uid.replace(/-/g, '')}`, containerID: `containerd://${uid.replace(/-/g, '')}`, started: true, state: { running: { startedAt: ts } } }],
    },
  });
}

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

// Sample pod size on the wire.
const wireBytes = Buffer.byteLength(podJson(PODS >> 1));

// 1. The index, fed one parsed event at a time (each full object is garbage right after).
let before = heapAfterGc();
const index = new PodIndex();
const names: [string, string, string, string][] = [];
for (let i = 0; i < PODS; i++) {
  const p = JSON.parse(podJson(i)) as PodObject & { spec: { nodeName: string; serviceAccountName: string } };
  index.apply('ADDED', p);
  if (i % 97 === 0) names.push([p.metadata!.namespace!, p.metadata!.name!, p.spec.nodeName, p.spec.serviceAccountName]);
}
index.synced = true;
const indexBytes = heapAfterGc() - before;

// Lookups: the two questions of one authorization, over the sampled pods.
const LOOKUPS = 1_000_000;
let hits = 0;
const t0 = process.hrtime.bigint();
for (let k = 0; k < LOOKUPS; k++) {
  const [ns, name, node, sa] = names[k % names.length]!;
  if (index.pod(ns, name) && index.hasServiceAccountOnNode(node, ns, sa)) hits++;
}
const lookupNs = Number(process.hrtime.bigint() - t0) / LOOKUPS;
if (hits !== LOOKUPS) throw new Error(`lookups missed: ${LOOKUPS - hits}`);

// 2. The same pods kept whole (as client-node's informer cache keeps them), by namespace/name.
before = heapAfterGc();
const whole = new Map<string, unknown>();
for (let i = 0; i < PODS; i++) {
  const p = JSON.parse(podJson(i)) as PodObject;
  whole.set(`${p.metadata!.namespace}/${p.metadata!.name}`, p);
}
const wholeBytes = heapAfterGc() - before;

const perPod = (b: number): number => Math.round(b / PODS);
console.log(`pods: ${PODS} on ${NODES} nodes, ${index.slotCount} (node, namespace, service account) slots; one pod is ${wireBytes} bytes of JSON on the wire`);
console.log('store                               heap MiB   bytes/pod');
console.log(`pod index (src/kube/pod-cache.ts)   ${(indexBytes / 2 ** 20).toFixed(1).padStart(8)}   ${String(perPod(indexBytes)).padStart(9)}`);
console.log(`whole parsed pods (informer-style)  ${(wholeBytes / 2 ** 20).toFixed(1).padStart(8)}   ${String(perPod(wholeBytes)).padStart(9)}`);
console.log(`ratio whole / index: ${(wholeBytes / indexBytes).toFixed(1)}x; one authorization's two lookups: ${lookupNs.toFixed(0)} ns`);
console.log(`RESULT ${JSON.stringify({ pods: PODS, nodes: NODES, slots: index.slotCount, wireBytesPerPod: wireBytes, indexBytesPerPod: perPod(indexBytes), wholeBytesPerPod: perPod(wholeBytes), ratio: Number((wholeBytes / indexBytes).toFixed(2)), lookupNs: Math.round(lookupNs), keep: whole.size })}`);
