/**
 * An EKS node as it is really wired, with real packets: a branch-ENI pod (security groups for pods,
 * strict mode) behind its `vlan` veth and the node's VLAN link to the VPC, a multi-NIC pod with an
 * interface on a second network card, a pod under a veth prefix palisade was not told about,
 * node-local DNS on the node, and kube-proxy switching to IPVS mode. Each is judged by probes and by
 * what the daemon says on its status endpoint, metrics and /explain.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import { CONTAINER_PORTS, NODE_A, NODE_B, Reachability, TCP_80, useE2eCluster } from '../support/e2e-cluster.js';
import type { E2eCluster } from '../support/e2e-cluster.js';
import { hostInterfaceName } from '../../rules/names.js';
import { eventually } from '../support/eventually.js';

const BRANCH_ENI_ANNOTATION = { 'vpc.amazonaws.com/pod-eni': '[{"eniId":"eni-0123456789abcdef0","vlanId":7,"privateIp":"10.1.3.7","subnetCidr":"10.1.3.0/24"}]' };
const MULTI_NIC_ANNOTATION = { 'k8s.amazonaws.com/nicConfig': 'multi-nic-attachment' };
const NODE_LOCAL_DNS = '169.254.20.10';

async function status(c: E2eCluster, node: string): Promise<Record<string, unknown> & { nodeNetwork: { unenforcedPodRoutes: { iface: string; pod: string }[] }; endpoints: { namespace: string; name: string; interfaces: string[] }[] }> {
  return c.status(node) as never;
}


describe('EKS node wiring: every kind of pod interface, the node itself, kube-proxy modes', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-eks' });

  it('A branch-ENI pod in strict mode is enforced on its vlan veth, both ways through the VPC, and its VLAN link is left alone.', async () => {
    const c = cluster();
    await c.reset();
    const vlan = await c.lab.addVpcVlan(NODE_A, NODE_B, 7, '10.1.3.1/24');
    await c.addPod({ namespace: 'x', name: 'sgp', node: NODE_A, ip: '10.1.3.7', labels: { pod: 'sgp' }, ports: CONTAINER_PORTS, wiring: { kind: 'branch-eni', ...vlan }, annotations: BRANCH_ENI_ANNOTATION });
    const peers = ['x/a', 'x/c', 'y/a', 'y/c', 'x/sgp'];
    // Unisolated it reaches and is reached from both nodes (its traffic always crosses the VPC).
    await c.expectMatrix(new Reachability(true, { sources: peers, targets: peers }), TCP_80);

    await c.applyPolicies(
      policy('x', 'sgp-in-from-y', { podSelector: { matchLabels: { pod: 'sgp' } }, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }], egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] }),
    );
    await c.expectMatrix(new Reachability(true, { sources: peers, targets: peers })
      .expect(['x/a', 'x/c'], 'x/sgp', false)
      .expect('x/sgp', ['x/a', 'x/c'], false), TCP_80);
    const node = await status(c, NODE_A);
    const sgp = node.endpoints.find((e) => e.name === 'sgp');
    assert.ok(sgp?.interfaces.includes(hostInterfaceName('vlan', 'x', 'sgp')), JSON.stringify(sgp));
    assert.deepEqual(node.nodeNetwork.unenforcedPodRoutes, []);
    await c.removePod('x/sgp');
  });

  it('A multi-NIC pod is enforced on each of its interfaces, each sending only its own address.', async () => {
    const c = cluster();
    await c.reset();
    const [first, second] = [c.freeAddress(NODE_A), '10.1.1.201'];
    await c.addPod({ namespace: 'x', name: 'multi', node: NODE_A, ip: first, labels: { pod: 'multi' }, ports: CONTAINER_PORTS, wiring: { kind: 'multi-nic', extraIps: [second] }, annotations: MULTI_NIC_ANNOTATION });
    c.alias('x/multi@1', { ip: second, agent: 'x/multi', from: second });
    const peers = ['x/a', 'y/a', 'z/c', 'x/multi', 'x/multi@1'];
    const selfCells = (r: Reachability) => r.expect('x/multi', 'x/multi@1', true).expect('x/multi@1', 'x/multi', true);
    await c.expectMatrix(new Reachability(true, { sources: peers, targets: peers }), TCP_80);

    await c.applyPolicies(policy('x', 'multi-from-y', {
      podSelector: { matchLabels: { pod: 'multi' } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
      egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }] }],
    }));
    await c.expectMatrix(selfCells(new Reachability(true, { sources: peers, targets: peers })
      .expect(['x/a', 'z/c'], ['x/multi', 'x/multi@1'], false)
      .expect(['x/multi', 'x/multi@1'], ['x/a', 'y/a'], false)), TCP_80);
    const multi = (await status(c, NODE_A)).endpoints.find((e) => e.name === 'multi');
    assert.ok(multi?.interfaces.includes(hostInterfaceName('eni', 'x', 'multi.1')), JSON.stringify(multi));
    await c.removePod('x/multi');
  });

  it('A pod under a veth prefix palisade was not told about is reported as unenforced, and enforced once the prefix is given.', async () => {
    const c = cluster();
    await c.reset();
    await c.addPod({ namespace: 'x', name: 'custom', node: NODE_A, ip: c.freeAddress(NODE_A), labels: { pod: 'custom' }, ports: CONTAINER_PORTS, wiring: { kind: 'prefix', interfacePrefix: 'abc' } });
    const iface = hostInterfaceName('abc', 'x', 'custom');
    await eventually('the unenforced pod in the status', async () => {
      assert.deepEqual((await status(c, NODE_A)).nodeNetwork.unenforcedPodRoutes.map((u) => [u.iface, u.pod]), [[iface, 'x/custom']]);
    });
    assert.match(await c.lab.metrics(NODE_A), /^palisade_unenforced_pod_routes 1$/m);
    assert.ok(c.daemonLogs(NODE_A, 200).some((l) => /no --interface-prefix matches/.test(l) && l.includes(iface)), 'a warning names the interface');
    // What the warning is about: deny-all does not reach the pod.
    await c.applyPolicies(policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }));
    const into = (allowed: boolean) => new Reachability(true, { sources: ['z/a', 'z/c'], targets: ['x/a', 'x/custom'] }).expect('*', 'x/a', false).expect('*', 'x/custom', allowed);
    await c.expectMatrix(into(true), TCP_80);

    await c.lab.stopDaemon(NODE_A);
    await c.lab.startDaemon(NODE_A, ['--interface-prefix', 'eni,vlan,abc']);
    await c.lab.waitReady(NODE_A);
    await c.expectMatrix(into(false), TCP_80);
    assert.deepEqual((await status(c, NODE_A)).nodeNetwork.unenforcedPodRoutes, []);

    await c.removePod('x/custom');
    await c.lab.stopDaemon(NODE_A);
    await c.lab.startDaemon(NODE_A);
    await c.lab.waitReady(NODE_A);
  });

  it('An egress-isolated pod still reaches its own node, node-local DNS included, and the daemon\'s /explain says so where the offline view cannot.', async () => {
    const c = cluster();
    await c.reset();
    await c.lab.addNodeLink(NODE_A, 'nodelocaldns', [NODE_LOCAL_DNS]);
    c.alias('dns', { ip: NODE_LOCAL_DNS, agent: NODE_A });
    try {
      await c.applyPolicies(policy('x', 'no-egress', { podSelector: {}, policyTypes: ['Egress'] }));
      await c.expectMatrix(new Reachability(true, { sources: ['x/a', 'x/b', 'y/a'], targets: ['dns', NODE_A, NODE_B] })
        .expect(['x/a', 'x/b'], NODE_B, false), TCP_80);
      const { body } = await c.lab.status(NODE_A, `/explain?from=x/a&to=${NODE_LOCAL_DNS}&protocol=UDP&port=53`);
      const verdict = JSON.parse(body) as { allowed: boolean; egress: { reason: string }; assumptions: string[] };
      assert.equal(verdict.allowed, true, body);
      assert.match(verdict.egress.reason, /169\.254\.20\.10 is node-a's own \(a local address of the node\)/);
      assert.match(verdict.assumptions.join('\n'), /node-a's own addresses are its local addresses now: .*169\.254\.20\.10/);
      // A pod never blocked from itself, by the same endpoint.
      const self = JSON.parse((await c.lab.status(NODE_A, '/explain?from=x/a&to=x/a&port=80')).body) as { allowed: boolean };
      assert.equal(self.allowed, true);
    } finally {
      await c.lab.removeNodeLink(NODE_A, 'nodelocaldns');
    }
  });

  it('kube-proxy switching to IPVS mode makes the daemon refuse, not ready and saying why, programming nothing more until it is gone.', async () => {
    const c = cluster();
    await c.reset();
    await c.lab.addNodeLink(NODE_B, 'kube-ipvs0', ['10.100.0.10']);
    try {
      await eventually('the refusal', async () => {
        const readyz = await c.lab.status(NODE_B, '/readyz');
        assert.equal(readyz.status, 503);
        assert.match(readyz.body, /refusing to enforce: kube-proxy runs in IPVS mode/);
      });
      assert.match(await c.lab.metrics(NODE_B), /^palisade_enforcement_refused\{reason="kube-proxy-ipvs"\} 1$/m);
      // A policy for node-b's pods is not half-applied: nothing new is programmed there.
      await c.applyPolicies(policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }));
      await c.expectMatrix(new Reachability(true, { sources: ['z/a', 'z/c'], targets: ['x/a', 'x/c'] }).expect('*', 'x/a', false), TCP_80);
    } finally {
      await c.lab.removeNodeLink(NODE_B, 'kube-ipvs0');
    }
    await c.lab.waitReady(NODE_B);
    await c.expectMatrix(new Reachability(true, { sources: ['z/a', 'z/c'], targets: ['x/a', 'x/c'] }).expect('*', ['x/a', 'x/c'], false), TCP_80);
    assert.match(await c.lab.metrics(NODE_B), /^palisade_enforcement_refused\{reason="kube-proxy-ipvs"\} 0$/m);
  });
});
