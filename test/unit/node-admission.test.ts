import assert from 'node:assert/strict';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import { admitNodeUpdate, NODE_TAINT_POLICY_MESSAGES, PALISADE_NODE_TAINT_POLICY } from '../../lib/lab/node-admission.js';
import { ApiClient } from '../../lib/kube/api-client.js';
import { kubeconfigText } from '../../lib/kube/client-config.js';
import { labKubeconfig } from '../../lib/lab/api-server.js';
import { NODE_UPDATE_CASES, PALISADE_USER } from '../support/node-taint-cases.js';

/**
 * The lab API server's node PATCH and its stand-in for palisade's ValidatingAdmissionPolicy: the same
 * cases as the shipped policy's CEL (deploy.test.ts), then the server end to end through palisade's
 * own API client with tokens bound to nodes.
 */

describe('the lab\'s stand-in for the node-taint admission policy', () => {
  for (const c of NODE_UPDATE_CASES) {
    it(`${c.denied === null ? 'admits' : `denies (${c.denied})`}: ${c.name}`, () => {
      assert.equal(admitNodeUpdate(PALISADE_NODE_TAINT_POLICY, c.user, c.oldObject, c.object), c.denied === null ? null : NODE_TAINT_POLICY_MESSAGES[c.denied]);
    });
  }
});

const startup = { key: 'palisade.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const cordon = { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' };
const node = (name: string, taints: readonly object[]) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: { taints }, status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }] } });
const path = (name: string) => `/api/v1/nodes/${name}`;

describe('the lab API server\'s node PATCH', () => {
  let api: FakeApiServer;
  const clients: ApiClient[] = [];

  beforeEach(async () => {
    api = await FakeApiServer.start({ bookmarkIntervalMs: 0 });
    api.apply(node('node-a', [cordon, startup]));
    api.apply(node('node-b', [startup]));
    api.bindToken('token-a', { username: PALISADE_USER, nodeName: 'node-a' });
    api.bindToken('token-b', { username: PALISADE_USER, nodeName: 'node-b' });
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await api.close();
  });

  async function client(token: string): Promise<ApiClient> {
    const made = new ApiClient(await kubeconfigText(labKubeconfig(api.url, { token }), 'test'));
    clients.push(made);
    return made;
  }

  const taints = (name: string) => (api.get('Node', null, name)!['spec'] as { taints: unknown[] }).taints;

  it('lets a daemon take the startup taint off its own node, keeping its status', async () => {
    const a = await client('token-a');
    const before = api.get('Node', null, 'node-a')!;
    const patched = await a.patchJson(path('node-a'), [{ op: 'test', path: '/spec/taints', value: [cordon, startup] }, { op: 'remove', path: '/spec/taints/1' }]) as { metadata: { resourceVersion: string } };
    assert.deepEqual(taints('node-a'), [cordon]);
    assert.ok(Number(patched.metadata.resourceVersion) > Number(before.metadata.resourceVersion));
    assert.deepEqual(api.get('Node', null, 'node-a')!['status'], before['status']);
    assert.deepEqual(api.stats().patches, { 'nodes/node-a': 1 });
  });

  it('refuses (403) a daemon\'s PATCH of another node\'s taint, naming the policy, and writes nothing', async () => {
    const b = await client('token-b');
    await assert.rejects(b.patchJson(path('node-a'), [{ op: 'remove', path: '/spec/taints/1' }]), (error: Error & { status?: number }) => {
      assert.equal(error.status, 403);
      assert.match(error.message, /PATCH \/api\/v1\/nodes\/node-a: HTTP 403: .*nodes \\"node-a\\" is forbidden: ValidatingAdmissionPolicy 'palisade-node-taint' with binding 'palisade-node-taint' denied request: palisade may change only the node its own pod runs on/);
      return true;
    });
    assert.deepEqual(taints('node-a'), [cordon, startup]);
    assert.equal(api.stats().forbidden, 1);
  });

  it('refuses (403) a daemon removing another taint, or changing a label, of its own node', async () => {
    const a = await client('token-a');
    await assert.rejects(a.patchJson(path('node-a'), [{ op: 'remove', path: '/spec/taints/0' }]), /HTTP 403: .*palisade may remove only its startup taint/);
    await assert.rejects(a.patchJson(path('node-a'), [{ op: 'add', path: '/metadata/labels', value: { role: 'db' } }]), /HTTP 403: .*palisade may change nothing of a node but spec.taints/);
    assert.deepEqual(taints('node-a'), [cordon, startup]);
  });

  it('answers a failed test with 422 and a stale resourceVersion with 409, writing nothing', async () => {
    const a = await client('token-a');
    await assert.rejects(a.patchJson(path('node-a'), [{ op: 'test', path: '/spec/taints', value: [startup] }, { op: 'remove', path: '/spec/taints/1' }]), (error: Error & { status?: number }) => error.status === 422);
    await assert.rejects(a.patchJson(path('node-a'), [{ op: 'replace', path: '/metadata/resourceVersion', value: '1' }, { op: 'remove', path: '/spec/taints/1' }]), (error: Error & { status?: number }) => error.status === 409);
    assert.deepEqual(taints('node-a'), [cordon, startup]);
  });

  it('leaves requests of unbound tokens (the lab\'s admin) to RBAC alone, as the policy does other users', async () => {
    const admin = await client('fake-token');
    await admin.patchJson(path('node-b'), [{ op: 'add', path: '/spec/taints/-', value: cordon }]);
    assert.deepEqual(taints('node-b'), [startup, cordon]);
  });

  it('refuses unknown tokens (401), other kinds (405) and other patch types (415)', async () => {
    const stranger = await client('not-issued');
    await assert.rejects(stranger.patchJson(path('node-a'), []), /HTTP 401/);
    const a = await client('token-a');
    await assert.rejects(a.patchJson('/api/v1/namespaces/default/pods/x', []), /HTTP 405/);
    const response = await fetch(`${api.url}${path('node-a')}`, { method: 'PATCH', headers: { authorization: 'Bearer token-a', 'content-type': 'application/merge-patch+json' }, body: '{}' });
    assert.equal(response.status, 415);
  });
});
