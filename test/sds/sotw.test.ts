import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { SecretSchema } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { DiscoveryRequestSchema, type DiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { CastellanError } from '../../src/platform/errors.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { fetchSecrets, SotwSession } from '../../src/sds/sotw.ts';
import { FakeStore } from './fake-store.ts';

function req(o: MessageInitShape<typeof DiscoveryRequestSchema>) {
  return create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, ...o });
}

function setup() {
  const store = new FakeStore();
  const sent: DiscoveryResponse[] = [];
  let n = 0;
  const s = new SotwSession({ store, send: (r) => sent.push(r), nonce: () => `n${++n}` });
  return { store, sent, s };
}

function names(r: DiscoveryResponse): string[] {
  return r.resources.map((a) => anyUnpack(a, SecretSchema)!.name);
}

describe('SDS state of the world', () => {
  it('ok/initial request gets every subscribed secret with the exact type URL', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'sidecar~1' }, resourceNames: ['default', 'ROOTCA'] }));
    expect(sent).toHaveLength(1);
    expect(sent[0]!.typeUrl).toBe(SECRET_TYPE_URL);
    expect(sent[0]!.resources.every((a) => a.typeUrl === SECRET_TYPE_URL)).toBe(true);
    expect(names(sent[0]!).sort()).toEqual(['ROOTCA', 'default']);
    expect(sent[0]!.nonce).toBe('n1');
  });

  it('ok/ACK sends nothing, NACK keeps the stream and does not resend the same version', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    s.handle(req({ resourceNames: ['default'], responseNonce: 'n1', versionInfo: sent[0]!.versionInfo }));
    expect(sent).toHaveLength(1);
    s.handle(req({ resourceNames: ['default'], responseNonce: 'n1', errorDetail: { code: 3, message: 'bad key' } }));
    expect(sent).toHaveLength(1);
    // A new version is pushed after the NACK.
    store.setDefault('b');
    expect(sent).toHaveLength(2);
    expect(sent[1]!.versionInfo).not.toBe(sent[0]!.versionInfo);
  });

  it('ok/ACK adding a name answers with the new name', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    s.handle(req({ resourceNames: ['default', 'ROOTCA'], responseNonce: 'n1' }));
    expect(sent).toHaveLength(2);
    expect(names(sent[1]!)).toContain('ROOTCA');
  });

  it('ok/stale nonce is ignored, even with new names', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    store.setRoot('r');
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    store.setDefault('b'); // n2
    s.handle(req({ resourceNames: ['default', 'ROOTCA'], responseNonce: 'n1' }));
    expect(sent).toHaveLength(2);
    expect(s.subscriptions).toEqual(['default']);
  });

  it('ok/empty name list unsubscribes; no pushes afterwards; resubscribing resends', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    s.handle(req({ resourceNames: [], responseNonce: 'n1' }));
    store.setDefault('b');
    expect(sent).toHaveLength(1);
    s.handle(req({ resourceNames: ['default'], responseNonce: 'n1' }));
    expect(sent).toHaveLength(2);
  });

  it('ok/a secret not ready yet is pushed as soon as it is', () => {
    const { store, sent, s } = setup();
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    expect(sent).toHaveLength(0);
    store.setDefault('a');
    expect(sent).toHaveLength(1);
  });

  it('ok/change of an unwatched name pushes nothing; close unregisters from the store', () => {
    const { store, sent, s } = setup();
    store.setDefault('a');
    s.handle(req({ node: { id: 'x' }, resourceNames: ['default'] }));
    store.setRoot('r2');
    expect(sent).toHaveLength(1);
    expect(store.listeners.size).toBe(1);
    s.close();
    expect(store.listeners.size).toBe(0);
  });

  const refusals: [string, () => void, string][] = [
    ['fail/missing node id', () => setup().s.handle(req({ resourceNames: ['default'] })), 'sds.missing_node'],
    ['fail/unknown name', () => setup().s.handle(req({ node: { id: 'x' }, resourceNames: ['spiffe://evil/ns/a/sa/b'] })), 'sds.unknown_resource'],
    ['fail/wrong type url', () => setup().s.handle(req({ node: { id: 'x' }, typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', resourceNames: ['default'] })), 'sds.bad_type_url'],
  ];
  for (const [name, fn, code] of refusals) {
    it(name, () => {
      try {
        fn();
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(CastellanError);
        expect((e as CastellanError).code).toBe(code);
      }
    });
  }

  it('ok/FetchSecrets returns the requested secrets; fail/not ready is UNAVAILABLE', () => {
    const store = new FakeStore();
    const r = req({ node: { id: 'x' }, resourceNames: ['ROOTCA'] });
    expect(() => fetchSecrets(store, r)).toThrow(expect.objectContaining({ kind: 'UNAVAILABLE' }));
    store.setRoot('r');
    const res = fetchSecrets(store, r);
    expect(names(res)).toEqual(['ROOTCA']);
    expect(() => fetchSecrets(store, req({ node: { id: 'x' }, resourceNames: ['spiffe://other.example'] }))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
  });
});
