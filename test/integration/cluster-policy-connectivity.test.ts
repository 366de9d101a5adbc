/**
 * ClusterNetworkPolicy tiers filter real packets: pods in network namespaces wired like the AWS VPC
 * CNI wires them, the real DataplaneApplier writing the compiled rules on both iptables backends, and
 * full echo round trips (a denied probe must time out). Each case is what the API documents: Admin
 * before NetworkPolicy, Baseline after it, Pass, ties, peers by namespace, pod and network, named ports.
 * The rules must also read back from the kernel exactly as written (no drift on the next refresh).
 */
import assert from 'node:assert/strict';
import type { Backend } from '../../lib/iptables/iptables.js';
import { clusterPolicy, policy } from '../support/builders.js';
import { usePodCluster } from '../support/pod-cluster.js';
import type { ClusterPod, ServedPorts } from '../support/pod-cluster.js';

type Obj = Record<string, unknown>;

const PORTS: ServedPorts = { tcp: [80, 81], udp: [80] };
const PODS: readonly ClusterPod[] = [
  { namespace: 'shop', name: 'web', ip: '10.1.0.1', labels: { app: 'web' }, namedPorts: [{ name: 'http', port: 80 }] },
  { namespace: 'shop', name: 'db', ip: '10.1.0.2', labels: { app: 'db' } },
  { namespace: 'tools', name: 'debug', ip: '10.1.0.3', labels: { app: 'debug' } },
];
const BACKENDS: readonly Backend[] = ['nft', 'legacy'];

const ns = (name: string): Obj => ({ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': name } } });
const everyNamespace: Obj = { namespaces: {} };
const admin = (name: string, priority: number, spec: Obj): Obj => clusterPolicy(name, { tier: 'Admin', priority, subject: everyNamespace, ...spec });
const baseline = (name: string, priority: number, spec: Obj): Obj => clusterPolicy(name, { tier: 'Baseline', priority, subject: everyNamespace, ...spec });
const allowAllIngress = policy('shop', 'allow-all', { podSelector: {}, ingress: [{}] });
const denyAllIngress = policy('shop', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] });

for (const backend of BACKENDS) {
  describe(`ClusterNetworkPolicy between real pods (iptables ${backend})`, function () {
    this.timeout(30_000);
    const cluster = usePodCluster({ prefix: `paltest-cnp-${backend}`, backend, pods: PODS, ports: PORTS });

    it('An admin Deny from tools to shop holds against shop\'s allow-all NetworkPolicy, and is counted as the pod\'s drops.', async () => {
      await cluster().apply([allowAllIngress, admin('guard', 10, { subject: ns('shop'), ingress: [{ action: 'Deny', name: 'no-tools', from: [ns('tools')] }] })]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: false },
        { from: 'debug', to: 'db', proto: 'udp', port: 80, reach: false },
        { from: 'db', to: 'web', proto: 'tcp', port: 80, reach: true },
        { from: 'web', to: 'debug', proto: 'tcp', port: 81, reach: true },
      ]);
      const web = (await cluster().dropCounters()).find((c) => c.name === 'web');
      assert.ok((web?.ingress?.packets ?? 0) >= 1, `web's ingress drops count the admin tier's: ${JSON.stringify(web)}`);
      assert.deepEqual(await cluster().drift(), []);
    });

    it('An admin Accept opens what shop\'s deny-all NetworkPolicy closes, for tools only.', async () => {
      await cluster().apply([denyAllIngress, admin('let-tools', 10, { subject: ns('shop'), ingress: [{ action: 'Accept', from: [ns('tools')] }] })]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: true },
        { from: 'db', to: 'web', proto: 'tcp', port: 80, reach: false },
      ]);
    });

    it('A Baseline isolation of shop is refined by shop\'s own NetworkPolicy, which then decides alone.', async () => {
      const isolate = baseline('isolate', 10, { ingress: [{ action: 'Deny', from: [everyNamespace] }] });
      await cluster().apply([isolate]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: false },
        { from: 'db', to: 'web', proto: 'tcp', port: 80, reach: false },
        { from: 'web', to: 'debug', proto: 'udp', port: 80, reach: false },
      ]);
      const webFromTools = policy('shop', 'web-from-tools', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ port: 80 }] }] });
      await cluster().apply([isolate, webFromTools]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: true },
        { from: 'debug', to: 'web', proto: 'tcp', port: 81, reach: false },
        { from: 'web', to: 'db', proto: 'tcp', port: 80, reach: false },
      ]);
      assert.deepEqual(await cluster().drift(), []);
    });

    it('An admin Pass skips the rest of the Admin tier: NetworkPolicy decides, and without one the Baseline does.', async () => {
      const pass = admin('delegate', 5, { ingress: [{ action: 'Pass', from: [ns('tools')] }] });
      const deny = admin('deny-tools', 10, { ingress: [{ action: 'Deny', from: [ns('tools')] }] });
      const isolate = baseline('isolate', 10, { subject: ns('shop'), ingress: [{ action: 'Deny', from: [ns('tools')], protocols: [{ tcp: { destinationPort: { number: 81 } } }] }] });
      await cluster().apply([pass, deny, isolate, allowAllIngress]);
      await cluster().expect([{ from: 'debug', to: 'web', proto: 'tcp', port: 81, reach: true }]);
      await cluster().apply([pass, deny, isolate]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: true },
        { from: 'debug', to: 'web', proto: 'tcp', port: 81, reach: false },
      ]);
    });

    it('At one priority a Deny beats an Accept whatever the names; a lower priority number goes first.', async () => {
      const accept = admin('a-accept', 10, { ingress: [{ action: 'Accept', from: [ns('tools')] }] });
      const deny = admin('z-deny', 10, { ingress: [{ action: 'Deny', from: [ns('tools')] }] });
      await cluster().apply([accept, deny]);
      await cluster().expect([{ from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: false }]);
      await cluster().apply([admin('a-accept', 9, { ingress: [{ action: 'Accept', from: [ns('tools')] }] }), deny]);
      await cluster().expect([{ from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: true }]);
      assert.deepEqual(await cluster().drift(), []);
    });

    it('Egress peers by network and by pod, and a named port resolved on the destination pod.', async () => {
      await cluster().apply([admin('egress', 10, {
        subject: ns('tools'),
        egress: [
          { action: 'Deny', to: [{ networks: ['10.1.0.2/32'] }] },
          { action: 'Accept', to: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } } }], protocols: [{ destinationNamedPort: 'http' }] },
          { action: 'Deny', to: [everyNamespace] },
        ],
      })]);
      await cluster().expect([
        { from: 'debug', to: 'db', proto: 'tcp', port: 80, reach: false },
        { from: 'debug', to: 'web', proto: 'tcp', port: 80, reach: true },
        { from: 'debug', to: 'web', proto: 'tcp', port: 81, reach: false },
        { from: 'debug', to: 'web', proto: 'udp', port: 80, reach: false },
        { from: 'web', to: 'db', proto: 'tcp', port: 81, reach: true },
      ]);
      assert.deepEqual(await cluster().drift(), []);
    });

    it('Deleting every ClusterNetworkPolicy restores connectivity and removes their chains.', async () => {
      await cluster().apply([]);
      await cluster().expect([
        { from: 'debug', to: 'web', proto: 'tcp', port: 81, reach: true },
        { from: 'debug', to: 'db', proto: 'tcp', port: 80, reach: true },
      ]);
      const saved = await cluster().node.netns.run([backend === 'nft' ? 'iptables-nft-save' : 'iptables-legacy-save', '-t', 'mangle']);
      assert.doesNotMatch(saved, /pal-(ci|co|af|at|bf|bt|cd|pass|deny)/);
    });
  });
}
