import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { DeltaDiscoveryRequestSchema, type DeltaDiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { DeltaSession } from '../../src/sds/delta.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { FakeStore } from './fake-store.ts';

function req(o: MessageInitShape<typeof DeltaDiscoveryRequestSchema>) {
  return create(DeltaDiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, ...o });
}
function setup() {
  const store = new FakeStore();
  const sent: DeltaDiscoveryResponse[] = [];
  let n = 0;
  const s = new DeltaSession({ store, send: (r) => sent.push(r), nonce: () => `d${++n}` });
  return { store, sent, s };
}

describe('SDS delta', () => {
  it('ok/subscribe sends each resource with its own version', () => {
    const { store, sent, s } = setup();
    const d = store.setDefault('a');
    const r = store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNamesSubscribe: ['default', 'ROOTCA'] }));
    expect(sent).toHaveLength(1);
    const got = Object.fromEntries(sent[0]!.resources.map((x) => [x.name, x.version]));
    expect(got).toEqual({ default: d.version, ROOTCA: r.version });
    expect(sent[0]!.resources.every((x) => x.resource?.typeUrl === SECRET_TYPE_URL)).toBe(true);
    expect(sent[0]!.systemVersionInfo).not.toBe('');
  });

  it('ok/initial_resource_versions skips what the client already has', () => {
    const { store, sent, s } = setup();
    const d = store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, initialResourceVersions: { default: d.version, ROOTCA: 'old' } }));
    expect(sent).toHaveLength(1);
    expect(sent[0]!.resources.map((x) => x.name)).toEqual(['ROOTCA']);
  });

  it('ok/change pushes only the changed resource; ACK and NACK send nothing', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNamesSubscribe: ['default', 'ROOTCA'] }));
    s.handle(req({ responseNonce: 'd1' }));
    store.setDefault('b');
    expect(sent).toHaveLength(2);
    expect(sent[1]!.resources.map((x) => x.name)).toEqual(['default']);
    expect(sent[1]!.systemVersionInfo).not.toBe(sent[0]!.systemVersionInfo);
    s.handle(req({ responseNonce: 'd2', errorDetail: { code: 3, message: 'nope' } }));
    expect(sent).toHaveLength(2);
  });

  it('ok/unsubscribe stops pushes; removal is announced in removed_resources', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNamesSubscribe: ['default', 'ROOTCA'] }));
    s.handle(req({ resourceNamesUnsubscribe: ['ROOTCA'] }));
    store.setRoot('r2');
    expect(sent).toHaveLength(1);
    store.remove('default');
    expect(sent).toHaveLength(2);
    expect(sent[1]!.removedResources).toEqual(['default']);
    expect(sent[1]!.resources).toHaveLength(0);
  });

  it('ok/stale nonce: ACK meaning ignored, subscription change still applied', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNamesSubscribe: ['default'] }));
    s.handle(req({ responseNonce: 'bogus', resourceNamesSubscribe: ['ROOTCA'] }));
    expect(sent).toHaveLength(2);
    expect(sent[1]!.resources.map((x) => x.name)).toEqual(['ROOTCA']);
  });

  it('fail/unknown name and fail/missing node', () => {
    expect(() => setup().s.handle(req({ node: { id: 'x' }, resourceNamesSubscribe: ['*'] }))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
    expect(() => setup().s.handle(req({ resourceNamesSubscribe: ['default'] }))).toThrow(expect.objectContaining({ code: 'sds.missing_node' }));
    expect(() => setup().s.handle(req({ node: { id: 'x' }, initialResourceVersions: { other: '1' } }))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
  });
});
