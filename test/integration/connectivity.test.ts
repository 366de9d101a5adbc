/**
 * The compiled rules really filter packets: real pods (network namespaces wired like the AWS VPC CNI
 * wires them) send TCP and UDP through a node namespace whose firewall the real DataplaneApplier has
 * written, on both iptables backends. Every probe is a full echo round trip, so an allowed probe also
 * proves its replies came back; a denied one must time out (a DROP), not be refused.
 */
import assert from 'node:assert/strict';
import type { Backend } from '../../lib/iptables/iptables.js';
import { policy } from '../support/builders.js';
import { fullMesh, usePodCluster } from '../support/pod-cluster.js';
import type { ClusterPod, Expectation, PodCluster, ServedPorts } from '../support/pod-cluster.js';

const PORTS: ServedPorts = { tcp: [80, 81], udp: [80, 81] };
const PODS: readonly ClusterPod[] = [
  { namespace: 'default', name: 'a', ip: '10.1.0.1', labels: { app: 'a' } },
  { namespace: 'default', name: 'b', ip: '10.1.0.2', labels: { app: 'b' } },
  { namespace: 'default', name: 'c', ip: '10.1.0.3', labels: { app: 'c' } },
];
const BACKENDS: readonly Backend[] = ['nft', 'legacy'];

const DENY_ALL_INGRESS_TO_A = policy('default', 'deny-ingress-a', {
  podSelector: { matchLabels: { app: 'a' } },
  policyTypes: ['Ingress'],
});

/** Every protocol and port served, from one pod to another. */
function allPorts(from: string, to: string, reach: boolean): Expectation[] {
  return [
    ...PORTS.tcp.map((port) => ({ from, to, proto: 'tcp' as const, port, reach })),
    ...PORTS.udp.map((port) => ({ from, to, proto: 'udp' as const, port, reach })),
  ];
}

async function withForgedAddress(cluster: PodCluster, podName: string, forged: string, body: () => Promise<void>): Promise<void> {
  const pod = cluster.pod(podName);
  // The pod holds the forged address and the node routes it back to the pod, so without palisade a
  // forged connection completes: that is the control, and only palisade's anti-spoof rule can stop it.
  await pod.netns.run(['ip', 'address', 'add', `${forged}/32`, 'dev', 'eth0']);
  await cluster.node.netns.run(['ip', 'route', 'add', `${forged}/32`, 'dev', pod.hostInterface, 'scope', 'link']);
  try {
    await body();
  } finally {
    await cluster.node.netns.exec(['ip', 'route', 'del', `${forged}/32`]);
    await pod.netns.exec(['ip', 'address', 'del', `${forged}/32`, 'dev', 'eth0']);
  }
}

for (const backend of BACKENDS) {
  describe(`Connectivity between pods on one node (iptables ${backend})`, function () {
    this.timeout(30_000);
    const cluster = usePodCluster({ prefix: `paltest-conn-${backend}`, backend, pods: PODS, ports: PORTS });

    it('With no policy, every pod reaches every other pod on TCP and UDP.', async () => {
      await cluster().apply([]);
      await cluster().expect(fullMesh(['a', 'b', 'c'], PORTS, true));
    });

    it('A deny-all ingress policy on pod a blocks everything to a, while b and c still talk and a still reaches both (replies pass by conntrack).', async () => {
      await cluster().apply([DENY_ALL_INGRESS_TO_A]);
      await cluster().expect([
        ...allPorts('b', 'a', false),
        ...allPorts('c', 'a', false),
        ...allPorts('b', 'c', true),
        ...allPorts('c', 'b', true),
        // a is ingress-isolated, yet these round trips complete: the echoes are replies of a's own connections.
        ...allPorts('a', 'b', true),
        ...allPorts('a', 'c', true),
      ]);
      const counters = await cluster().dropCounters();
      const a = counters.find((c) => c.name === 'a');
      assert.ok(a !== undefined, 'pod a has drop counters');
      // The probes died at palisade's drop rule, not somewhere else on the way.
      assert.ok(a.ingress !== null && a.ingress.packets > 0, `pod a's ingress drop rule counted the dropped probes: ${JSON.stringify(a)}`);
      assert.equal(a.egress, null, 'pod a is not egress-isolated');
    });

    it('An ingress rule allowing TCP port 80 from app=b lets b reach a on TCP 80 only, and keeps c out.', async () => {
      await cluster().apply([policy('default', 'allow-b-to-a-80', {
        podSelector: { matchLabels: { app: 'a' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }], ports: [{ protocol: 'TCP', port: 80 }] }],
      })]);
      await cluster().expect([
        { from: 'b', to: 'a', proto: 'tcp', port: 80, reach: true },
        { from: 'b', to: 'a', proto: 'tcp', port: 81, reach: false },
        { from: 'b', to: 'a', proto: 'udp', port: 80, reach: false },
        { from: 'b', to: 'a', proto: 'udp', port: 81, reach: false },
        ...allPorts('c', 'a', false),
        ...allPorts('c', 'b', true),
      ]);
    });

    it('An egress policy on pod a allowing only app=c lets a reach c but not b, and leaves a open to ingress.', async () => {
      await cluster().apply([policy('default', 'a-egress-to-c', {
        podSelector: { matchLabels: { app: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ podSelector: { matchLabels: { app: 'c' } } }] }],
      })]);
      await cluster().expect([
        ...allPorts('a', 'c', true),
        ...allPorts('a', 'b', false),
        ...allPorts('b', 'a', true),
        ...allPorts('c', 'a', true),
        ...allPorts('b', 'c', true),
      ]);
    });

    it('Removing the policy restores connectivity between every pair of pods.', async () => {
      await cluster().apply([DENY_ALL_INGRESS_TO_A]);
      await cluster().expect([...allPorts('b', 'a', false), ...allPorts('c', 'a', false)]);
      await cluster().apply([]);
      await cluster().expect(fullMesh(['a', 'b', 'c'], PORTS, true));
    });

    it('A packet from pod b with a forged source address does not reach pod c, though b itself does.', async () => {
      const forged = '10.1.0.99';
      await withForgedAddress(cluster(), 'b', forged, async () => {
        await cluster().uninstall();
        await cluster().expect([
          { from: 'b', to: 'c', proto: 'tcp', port: 80, reach: true, sourceIp: forged },
          { from: 'b', to: 'c', proto: 'udp', port: 80, reach: true, sourceIp: forged },
        ]);
        await cluster().apply([]);
        await cluster().expect([
          { from: 'b', to: 'c', proto: 'tcp', port: 80, reach: false, sourceIp: forged },
          { from: 'b', to: 'c', proto: 'udp', port: 80, reach: false, sourceIp: forged },
          ...allPorts('b', 'c', true),
        ]);
      });
    });

    it('A pod plumbed on the node but not yet in the snapshot can neither send nor receive, until it is listed.', async () => {
      const stray: ClusterPod = { namespace: 'default', name: 'stray', ip: '10.1.0.4', labels: { app: 'stray' } };
      await cluster().addPod(stray, { listed: false });
      try {
        await cluster().apply([]);
        await cluster().expect([
          ...allPorts('stray', 'a', false),
          ...allPorts('a', 'stray', false),
          ...allPorts('b', 'a', true),
        ]);
        cluster().setListed('stray', true);
        await cluster().apply([]);
        await cluster().expect([...allPorts('stray', 'a', true), ...allPorts('a', 'stray', true)]);
      } finally {
        await cluster().removePod('stray');
      }
    });
  });
}
