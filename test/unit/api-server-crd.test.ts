import assert from 'node:assert/strict';
import * as k8s from '@kubernetes/client-node';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import type { KubeObject } from '../../lib/lab/api-server.js';

/**
 * The lab API server's ClusterNetworkPolicy: a custom resource served only while its CRD is installed,
 * with discovery that says so, and the status subresource as a CRD with `subresources: {status: {}}` has.
 */

const GROUP = '/apis/policy.networking.k8s.io';
const CNPS = `${GROUP}/v1alpha2/clusternetworkpolicies`;

interface Answer { status: number; body: Record<string, unknown> }
interface Stored { metadata: { name: string; resourceVersion: string; generation: number; uid: string }; spec?: Record<string, unknown>; status?: Record<string, unknown> }

const cnp = (name: string, priority = 10, extra: Record<string, unknown> = {}): KubeObject => ({
  apiVersion: 'policy.networking.k8s.io/v1alpha2',
  kind: 'ClusterNetworkPolicy',
  metadata: { name },
  spec: { tier: 'Admin', priority, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] },
  ...extra,
});

const accepted = (generation: number) => ({ conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'ok', observedGeneration: generation, lastTransitionTime: '2025-01-01T00:00:00Z' }] });

describe('lab API server: ClusterNetworkPolicy and its CRD', function () {
  this.timeout(20_000);
  let server: FakeApiServer;
  const controllers: AbortController[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ bookmarkIntervalMs: 0 });
  });
  afterEach(async () => {
    for (const c of controllers.splice(0)) c.abort();
    await server.close();
  });

  async function send(method: string, apiPath: string, body?: unknown, contentType = 'application/json'): Promise<Answer> {
    const response = await fetch(`${server.url}${apiPath}`, {
      method,
      headers: { authorization: 'Bearer fake-token', 'content-type': contentType },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }
  const stored = (answer: Answer): Stored => answer.body as unknown as Stored;
  const groups = async (): Promise<string[]> => ((await send('GET', '/apis')).body['groups'] as { name: string }[]).map((g) => g.name);

  it('without the CRD: no group in discovery, 404 on every path and method, and apply() refuses the kind', async () => {
    assert.deepEqual(await groups(), ['coordination.k8s.io', 'networking.k8s.io']);
    assert.equal((await send('GET', GROUP)).status, 404);
    assert.equal((await send('GET', `${GROUP}/v1alpha2`)).status, 404);
    for (const [method, path] of [['GET', CNPS], ['GET', `${CNPS}/a`], ['POST', CNPS], ['PUT', `${CNPS}/a`], ['DELETE', `${CNPS}/a`], ['PATCH', `${CNPS}/a/status`]] as const) {
      const answer = await send(method, path, method === 'GET' ? undefined : cnp('a'), method === 'PATCH' ? 'application/merge-patch+json' : 'application/json');
      assert.deepEqual([method, path, answer.status, answer.body['reason']], [method, path, 404, 'NotFound']);
    }
    assert.throws(() => server.apply(cnp('a')), /CRD is not installed/);
    assert.equal(server.crdInstalled('ClusterNetworkPolicy'), false);
    assert.throws(() => server.setCrdInstalled('Pod', true), /built in/);
  });

  it('with the CRD: the group, its version and the resource with its status subresource in discovery', async () => {
    server.setCrdInstalled('ClusterNetworkPolicy', true);
    assert.deepEqual(await groups(), ['coordination.k8s.io', 'networking.k8s.io', 'policy.networking.k8s.io']);
    const group = await send('GET', GROUP);
    assert.deepEqual([group.body['kind'], group.body['preferredVersion']], ['APIGroup', { groupVersion: 'policy.networking.k8s.io/v1alpha2', version: 'v1alpha2' }]);
    const list = await send('GET', `${GROUP}/v1alpha2`);
    assert.equal(list.body['kind'], 'APIResourceList');
    assert.deepEqual(list.body['resources'], [
      { name: 'clusternetworkpolicies', singularName: 'clusternetworkpolicy', namespaced: false, kind: 'ClusterNetworkPolicy', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['cnp'] },
      { name: 'clusternetworkpolicies/status', singularName: '', namespaced: false, kind: 'ClusterNetworkPolicy', verbs: ['get', 'patch', 'update'] },
    ]);
    const core = await send('GET', '/api/v1');
    assert.ok((core.body['resources'] as { name: string }[]).some((r) => r.name === 'pods'));
    const empty = await send('GET', CNPS);
    assert.deepEqual([empty.status, empty.body['kind'], empty.body['items']], [200, 'ClusterNetworkPolicyList', []]);
  });

  it('creates, reads, replaces, patches and deletes; generation counts spec changes only; a write that changes nothing writes nothing', async () => {
    server.setCrdInstalled('ClusterNetworkPolicy', true);
    const created = await send('POST', CNPS, cnp('guard', 10, { status: accepted(7) }));
    assert.equal(created.status, 201);
    assert.equal(stored(created).metadata.generation, 1);
    assert.equal(stored(created).status, undefined, 'the status subresource: a create drops the status');
    assert.equal((await send('POST', CNPS, cnp('guard'))).body['reason'], 'AlreadyExists');
    const read = await send('GET', `${CNPS}/guard`);
    assert.deepEqual([read.body['kind'], stored(read).metadata.uid], ['ClusterNetworkPolicy', stored(created).metadata.uid]);

    const same = await send('PUT', `${CNPS}/guard`, cnp('guard'));
    assert.equal(stored(same).metadata.resourceVersion, stored(created).metadata.resourceVersion, 'nothing changed: no new resourceVersion');
    const relabelled = await send('PUT', `${CNPS}/guard`, { ...cnp('guard'), metadata: { name: 'guard', labels: { team: 'net' } } });
    assert.deepEqual([stored(relabelled).metadata.generation, stored(relabelled).metadata.resourceVersion !== stored(created).metadata.resourceVersion], [1, true]);
    const replaced = await send('PUT', `${CNPS}/guard`, cnp('guard', 20));
    assert.equal(stored(replaced).metadata.generation, 2);
    const stale = await send('PUT', `${CNPS}/guard`, { ...cnp('guard', 30), metadata: { name: 'guard', resourceVersion: stored(created).metadata.resourceVersion } });
    assert.deepEqual([stale.status, stale.body['reason']], [409, 'Conflict']);

    const merged = await send('PATCH', `${CNPS}/guard`, { spec: { priority: 40 } }, 'application/merge-patch+json');
    assert.deepEqual([stored(merged).spec?.['priority'], stored(merged).spec?.['tier'], stored(merged).metadata.generation], [40, 'Admin', 3]);
    const patched = await send('PATCH', `${CNPS}/guard`, [{ op: 'test', path: '/spec/priority', value: 40 }, { op: 'replace', path: '/spec/priority', value: 50 }], 'application/json-patch+json');
    assert.deepEqual([stored(patched).spec?.['priority'], stored(patched).metadata.generation], [50, 4]);
    const failedTest = await send('PATCH', `${CNPS}/guard`, [{ op: 'test', path: '/spec/priority', value: 1 }], 'application/json-patch+json');
    assert.equal(failedTest.status, 422);
    const strategic = await send('PATCH', `${CNPS}/guard`, { spec: {} }, 'application/strategic-merge-patch+json');
    assert.equal(strategic.status, 415);
    const stalePatch = await send('PATCH', `${CNPS}/guard`, { metadata: { resourceVersion: stored(created).metadata.resourceVersion }, spec: { priority: 60 } }, 'application/merge-patch+json');
    assert.equal(stalePatch.status, 409);

    const deleted = await send('DELETE', `${CNPS}/guard`);
    assert.deepEqual([deleted.status, stored(deleted).metadata.name], [200, 'guard']);
    assert.equal((await send('GET', `${CNPS}/guard`)).status, 404);
    assert.equal((await send('DELETE', `${CNPS}/guard`)).status, 404);
    assert.deepEqual(server.stats().writes, { 'POST clusternetworkpolicies': 1, 'PUT clusternetworkpolicies': 2, 'PATCH clusternetworkpolicies': 2, 'DELETE clusternetworkpolicies': 1 });
  });

  it('the status subresource: status writes change only the status, writes to the object keep it', async () => {
    server.setCrdInstalled('ClusterNetworkPolicy', true);
    const created = stored(await send('POST', CNPS, cnp('guard')));
    const statusPath = `${CNPS}/guard/status`;
    const put = await send('PUT', statusPath, { ...cnp('guard', 999), metadata: { name: 'guard', labels: { ignored: 'yes' } }, status: accepted(1) });
    assert.equal(put.status, 200);
    assert.deepEqual([stored(put).spec?.['priority'], stored(put).metadata.generation, stored(put).status], [10, 1, accepted(1)]);
    assert.equal((stored(put).metadata as Record<string, unknown>)['labels'], undefined);
    const again = await send('PATCH', statusPath, { status: accepted(1) }, 'application/merge-patch+json');
    assert.equal(stored(again).metadata.resourceVersion, stored(put).metadata.resourceVersion, 'the same status again writes nothing');
    const spec = await send('PUT', `${CNPS}/guard`, { ...cnp('guard', 20), status: { conditions: [] } });
    assert.deepEqual([stored(spec).status, stored(spec).metadata.generation], [accepted(1), 2]);
    const conditions = [{ ...accepted(2).conditions[0]!, status: 'False', reason: 'Invalid' }];
    const jsonPatched = await send('PATCH', statusPath, [
      { op: 'test', path: '/metadata/resourceVersion', value: stored(spec).metadata.resourceVersion },
      { op: 'replace', path: '/status/conditions', value: conditions },
      { op: 'replace', path: '/spec/priority', value: 1 },
    ], 'application/json-patch+json');
    assert.deepEqual([stored(jsonPatched).status, stored(jsonPatched).spec?.['priority'], stored(jsonPatched).metadata.generation], [{ conditions }, 20, 2]);
    const stale = await send('PATCH', statusPath, [{ op: 'test', path: '/metadata/resourceVersion', value: created.metadata.resourceVersion }], 'application/json-patch+json');
    assert.equal(stale.status, 422);
    assert.equal((await send('GET', statusPath)).body['kind'], 'ClusterNetworkPolicy');
    assert.equal((await send('POST', statusPath, cnp('guard'))).status, 405);
    assert.equal((await send('PUT', `${CNPS}/absent/status`, { ...cnp('absent'), status: accepted(1) })).status, 404);
    // The admin's apply (kubectl apply) keeps the status when it names none.
    server.apply(cnp('guard', 30));
    assert.deepEqual(server.get('ClusterNetworkPolicy', null, 'guard')?.['status'], { conditions });
    assert.deepEqual(server.stats().patches, { 'clusternetworkpolicies/guard/status': 3 });
  });

  it('removing the CRD deletes its objects (watches see DELETED, then end) and its paths answer 404 again', async () => {
    server.setCrdInstalled('ClusterNetworkPolicy', true);
    server.apply(cnp('a'));
    server.apply(cnp('b'));
    const kc = new k8s.KubeConfig();
    kc.loadFromString(server.kubeconfig());
    const events: string[] = [];
    let ended = false;
    const controller = await new k8s.Watch(kc).watch(CNPS, { resourceVersion: '0' }, (type, object: { metadata?: { name?: string } }) => events.push(`${type} ${object.metadata?.name ?? ''}`), () => (ended = true));
    controllers.push(controller);
    const deadline = Date.now() + 5000;
    while (events.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    server.setCrdInstalled('ClusterNetworkPolicy', false);
    while (!ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(events, ['ADDED a', 'ADDED b', 'DELETED a', 'DELETED b']);
    assert.equal(ended, true);
    assert.equal((await send('GET', CNPS)).status, 404);
    assert.deepEqual(server.list('ClusterNetworkPolicy'), []);
    server.setCrdInstalled('ClusterNetworkPolicy', true);
    assert.deepEqual((await send('GET', CNPS)).body['items'], []);
  });

  it('installs the CRD from the start with options.crds', async () => {
    const withCrd = await FakeApiServer.start({ bookmarkIntervalMs: 0, crds: ['ClusterNetworkPolicy'] });
    try {
      assert.equal(withCrd.crdInstalled('ClusterNetworkPolicy'), true);
      assert.equal(withCrd.apply(cnp('a')).metadata.generation, 1);
    } finally {
      await withCrd.close();
    }
  });
});
