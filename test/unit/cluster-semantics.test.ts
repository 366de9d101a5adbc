import assert from 'node:assert/strict';
import { Evaluator } from '../../rules/evaluator.js';
import type { PacketProtocol, Verdict } from '../../rules/evaluator.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { parseObjects } from '../../rules/snapshot.js';
import { clusterPolicy, namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { explain } from '../../daemon/status-routes.js';

/**
 * ClusterNetworkPolicy semantics: the tiers, actions, priorities and ties, every peer kind, the
 * fail-closed rules, and the examples of the API's own documentation, each probe with the verdict the
 * documentation gives it; checked by the evaluator, and by walking the compiled rules of both nodes
 * with the independent tracer.
 */

type Obj = Record<string, unknown>;
/** The last element, when given, is "<egress tier>/<ingress tier>" of the verdict ("null" where no policy can apply). */
type Probe = readonly [from: string, to: string, protocol: PacketProtocol, port: number | null, allowed: boolean, tiers?: string];

interface Case {
  readonly name: string;
  readonly objects: readonly Obj[];
  readonly probes: readonly Probe[];
}

const NODE_A = '10.0.0.1';
const NODE_B = '10.0.0.2';
const EXTERNAL = '198.51.100.7';
const IMDS = '169.254.169.254';

/** ns1 (team one) and ns2 (team two), kube-system with DNS and a hostNetwork agent, monitoring; a worker node and a control-plane node. */
function base(): Obj[] {
  return [
    node('node-a', NODE_A, { labels: { role: 'worker' } }),
    node('node-b', NODE_B, { labels: { 'node-role.kubernetes.io/control-plane': '' } }),
    namespace('ns1', { team: 'one' }),
    namespace('ns2', { team: 'two' }),
    namespace('kube-system'),
    namespace('monitoring'),
    pod('ns1', 'a', { ip: '10.1.1.1', labels: { app: 'a' }, ports: [{ name: 'http', port: 8080 }] }),
    pod('ns1', 'b', { ip: '10.1.1.2', labels: { app: 'b' }, ports: [{ name: 'http', port: 9090 }] }),
    pod('ns2', 'c', { ip: '10.1.2.1', labels: { app: 'c' } }),
    pod('ns2', 'd', { ip: '10.1.3.1', labels: { app: 'd', role: 'db' }, node: 'node-b' }),
    pod('kube-system', 'coredns', { ip: '10.1.9.1', labels: { 'k8s-app': 'kube-dns' }, node: 'node-b', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }, { name: 'metrics', port: 9153 }] }),
    pod('kube-system', 'agent', { ip: NODE_B, labels: { app: 'agent' }, node: 'node-b', hostNetwork: true }),
    pod('monitoring', 'prom', { ip: '10.1.8.1', labels: { app: 'prometheus' }, node: 'node-b' }),
  ];
}

const ns = (name: string): Obj => ({ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': name } } });
const team = (name: string): Obj => ({ namespaces: { matchLabels: { team: name } } });
const everyNamespace: Obj = { namespaces: {} };
const tcp = (port: number): Obj => ({ tcp: { destinationPort: { number: port } } });
const admin = (name: string, priority: number, spec: Obj): Obj => clusterPolicy(name, { tier: 'Admin', priority, subject: everyNamespace, ...spec });
const baseline = (name: string, priority: number, spec: Obj): Obj => clusterPolicy(name, { tier: 'Baseline', priority, subject: everyNamespace, ...spec });
const ingress = (...rules: Obj[]): Obj => ({ ingress: rules });
const egress = (...rules: Obj[]): Obj => ({ egress: rules });
const denyIngress = (namespaceName: string): Obj => policy(namespaceName, 'deny-ingress', { podSelector: {} });
const allowIngress = (namespaceName: string, from: Obj[] = []): Obj => policy(namespaceName, 'allow', { podSelector: {}, ingress: [from.length === 0 ? {} : { from }] });

const cases: readonly Case[] = [
  {
    name: 'without ClusterNetworkPolicy the tiers come down to NetworkPolicy and the default',
    objects: [...base(), denyIngress('ns2')],
    probes: [['ns1/a', 'ns1/b', 'TCP', 80, true, 'Default/Default'], ['ns1/a', 'ns2/c', 'TCP', 80, false, 'Default/NetworkPolicy']],
  },
  {
    name: 'an admin Deny overrides a NetworkPolicy that allows',
    objects: [...base(), allowIngress('ns2'), admin('deny-one', 10, { subject: ns('ns2'), ...ingress({ action: 'Deny', from: [team('one')] }) })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, false, 'Default/Admin'], ['ns2/d', 'ns2/c', 'TCP', 80, true, 'Default/NetworkPolicy']],
  },
  {
    name: 'an admin Accept overrides a NetworkPolicy that isolates',
    objects: [...base(), denyIngress('ns2'), admin('monitoring', 10, { subject: ns('ns2'), ...ingress({ action: 'Accept', from: [ns('monitoring')] }) })],
    probes: [['monitoring/prom', 'ns2/c', 'TCP', 9100, true, 'Default/Admin'], ['ns1/a', 'ns2/c', 'TCP', 9100, false, 'Default/NetworkPolicy']],
  },
  {
    name: 'an admin Pass skips the rest of the Admin tier and lets NetworkPolicy decide for a pod it isolates',
    objects: [...base(), allowIngress('ns2', [{ namespaceSelector: { matchLabels: { team: 'one' } } }]), admin('delegate', 10, { subject: ns('ns2'), ...ingress({ action: 'Pass', from: [team('one')] }) }), admin('deny-all', 20, { subject: ns('ns2'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, true, 'Default/NetworkPolicy'], ['monitoring/prom', 'ns2/c', 'TCP', 80, false, 'Default/Admin']],
  },
  {
    name: 'an admin Pass reaches Baseline when no NetworkPolicy isolates the pod, and the default after it',
    objects: [...base(), admin('delegate', 10, { subject: ns('ns2'), ...ingress({ action: 'Pass', from: [everyNamespace] }) }), baseline('deny-one', 10, { subject: ns('ns2'), ...ingress({ action: 'Deny', from: [team('one')] }) })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, false, 'Default/Baseline'], ['monitoring/prom', 'ns2/c', 'TCP', 80, true, 'Default/Default']],
  },
  {
    name: 'a Baseline Deny applies only where no NetworkPolicy isolates the pod',
    objects: [...base(), policy('ns1', 'a-from-ns2', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'two' } } }] }] }), baseline('default-deny', 10, ingress({ action: 'Deny', from: [everyNamespace] }))],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/NetworkPolicy'], ['ns2/c', 'ns1/b', 'TCP', 80, false, 'Default/Baseline'], [EXTERNAL, 'ns1/b', 'TCP', 80, true, 'null/Default']],
  },
  {
    name: 'a Baseline Accept ends the tier: a later Baseline Deny does not apply',
    objects: [...base(), baseline('monitoring', 1, ingress({ action: 'Accept', from: [ns('monitoring')] })), baseline('default-deny', 2, ingress({ action: 'Deny', from: [everyNamespace] }))],
    probes: [['monitoring/prom', 'ns1/a', 'TCP', 9100, true, 'Default/Baseline'], ['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/Baseline']],
  },
  {
    name: 'a Baseline Pass goes to the default, which allows',
    objects: [...base(), baseline('pass-two', 1, ingress({ action: 'Pass', from: [team('two')] })), baseline('default-deny', 2, ingress({ action: 'Deny', from: [everyNamespace] }))],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/Default'], ['ns1/b', 'ns1/a', 'TCP', 80, false, 'Default/Baseline']],
  },
  {
    name: 'a lower priority number goes first',
    objects: [...base(), admin('allow-two', 5, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [team('two')] }) }), admin('deny-all', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/Admin'], ['ns1/b', 'ns1/a', 'TCP', 80, false, 'Default/Admin']],
  },
  {
    name: 'a higher priority number goes later, whatever the order of the names',
    objects: [...base(), admin('allow-two', 11, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [team('two')] }) }), admin('deny-all', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/Admin']],
  },
  {
    name: 'rules go in written order and the first that matches decides',
    objects: [...base(), admin('web-only', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [everyNamespace], protocols: [tcp(80)] }, { action: 'Deny', from: [everyNamespace] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/Admin'], ['ns2/c', 'ns1/a', 'TCP', 81, false], ['ns2/c', 'ns1/a', 'ICMP', null, false]],
  },
  {
    name: 'a policy without rules for a direction leaves that direction alone',
    objects: [...base(), admin('egress-only', 10, { subject: ns('ns1'), ...egress({ action: 'Deny', to: [team('two')] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/Default'], ['ns1/a', 'ns2/c', 'TCP', 80, false, 'Admin/Default']],
  },
  {
    name: 'at one priority a Deny beats an Accept, whatever the names',
    objects: [...base(), admin('a-allow', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [team('two')] }) }), admin('z-deny', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/Admin']],
  },
  {
    name: 'at one priority a Pass beats an Accept',
    objects: [...base(), denyIngress('ns1'), admin('a-accept', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [team('two')] }) }), admin('b-pass', 10, { subject: ns('ns1'), ...ingress({ action: 'Pass', from: [team('two')] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/NetworkPolicy']],
  },
  {
    name: 'an egress Accept is final for egress, and the destination\'s ingress still applies',
    objects: [...base(), policy('ns1', 'deny-egress', { podSelector: {}, policyTypes: ['Egress'] }), denyIngress('ns2'), admin('egress-anywhere', 10, { subject: ns('ns1'), ...egress({ action: 'Accept', to: [{ networks: ['0.0.0.0/0'] }] }) })],
    probes: [['ns1/a', EXTERNAL, 'TCP', 443, true, 'Admin/null'], ['ns1/a', 'ns2/c', 'TCP', 80, false, 'Admin/NetworkPolicy']],
  },
  {
    name: 'networks peers match pod addresses too',
    objects: [...base(), admin('no-10-1-2', 10, { subject: ns('ns1'), ...egress({ action: 'Deny', to: [{ networks: ['10.1.2.0/24'] }] }) })],
    probes: [['ns1/a', 'ns2/c', 'TCP', 80, false, 'Admin/Default'], ['ns1/a', 'ns2/d', 'TCP', 80, true, 'Default/Default']],
  },
  {
    name: 'nodes peers match the status addresses of the Nodes they select, so a hostNetwork pod\'s too',
    objects: [...base(), admin('no-apiserver', 10, egress({ action: 'Deny', to: [{ nodes: { matchLabels: { 'node-role.kubernetes.io/control-plane': '' } } }], protocols: [tcp(443)] }))],
    probes: [['ns1/a', NODE_B, 'TCP', 443, false, 'Admin/null'], ['ns1/a', NODE_A, 'TCP', 443, true], ['ns1/a', NODE_B, 'TCP', 80, true], ['ns2/c', NODE_B, 'TCP', 443, false]],
  },
  {
    name: 'ClusterNetworkPolicy can deny a pod its own node, which NetworkPolicy always allows',
    objects: [...base(), admin('no-kubelet', 10, egress({ action: 'Deny', to: [{ nodes: {} }], protocols: [tcp(10250)] }))],
    probes: [['ns1/a', NODE_A, 'TCP', 10250, false, 'Admin/null'], ['ns1/a', NODE_A, 'TCP', 53, true, 'Default/null']],
  },
  {
    name: 'a Baseline Deny to nodes denies a pod its own node unless a NetworkPolicy isolates the pod',
    objects: [...base(), policy('ns2', 'deny-egress', { podSelector: {}, policyTypes: ['Egress'] }), baseline('no-nodes', 10, egress({ action: 'Deny', to: [{ nodes: {} }] }))],
    probes: [['ns1/a', NODE_A, 'TCP', 10250, false, 'Baseline/null'], ['ns2/c', NODE_A, 'TCP', 10250, true, 'NetworkPolicy/null']],
  },
  {
    name: 'traffic from a pod\'s own node is not subject to ClusterNetworkPolicy, so kubelet probes pass',
    objects: [...base(), admin('future-deny', 10, ingress({ action: 'Deny', from: [{ services: {} }] }))],
    probes: [[NODE_A, 'ns1/a', 'TCP', 8080, true, 'null/null'], [NODE_B, 'ns1/a', 'TCP', 8080, false, 'null/Admin'], ['ns2/c', 'ns1/a', 'TCP', 8080, false]],
  },
  {
    name: 'a named port resolves on the destination pod\'s container ports',
    objects: [...base(), admin('no-http', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace], protocols: [{ destinationNamedPort: 'http' }] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 8080, false, 'Default/Admin'], ['ns2/c', 'ns1/b', 'TCP', 8080, true], ['ns2/c', 'ns1/b', 'TCP', 9090, false], ['ns2/c', 'ns1/a', 'UDP', 8080, true]],
  },
  {
    name: 'an egress named port is the destination pod\'s, of the packet\'s protocol',
    objects: [...base(), admin('dns-only', 10, { subject: ns('ns1'), ...egress({ action: 'Accept', to: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } } }], protocols: [{ destinationNamedPort: 'dns' }] }, { action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }) })],
    probes: [['ns1/a', 'kube-system/coredns', 'UDP', 53, true, 'Admin/Default'], ['ns1/a', 'kube-system/coredns', 'TCP', 53, false], ['ns1/a', 'kube-system/coredns', 'TCP', 9153, false]],
  },
  {
    name: 'a protocols entry matches its protocol and inclusive range only; ICMP only a rule without protocols',
    objects: [...base(), admin('udp-range', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [team('two')], protocols: [{ udp: { destinationPort: { range: { start: 1000, end: 2000 } } } }] }) })],
    probes: [['ns2/c', 'ns1/a', 'UDP', 1000, false], ['ns2/c', 'ns1/a', 'UDP', 2000, false], ['ns2/c', 'ns1/a', 'UDP', 2001, true], ['ns2/c', 'ns1/a', 'TCP', 1500, true], ['ns2/c', 'ns1/a', 'ICMP', null, true]],
  },
  {
    name: 'an Accept rule with a peer palisade does not know matches nothing, so the rules after it decide',
    objects: [...base(), admin('future-accept', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [{ services: { name: 'web' } }] }, { action: 'Deny', from: [team('two')] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/Admin'], ['ns1/b', 'ns1/a', 'TCP', 80, true, 'Default/Default']],
  },
  {
    name: 'a Deny rule with a peer palisade does not know denies every packet of its direction',
    objects: [...base(), admin('future-deny', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [{ services: { name: 'web' } }], protocols: [tcp(80)] }) })],
    probes: [['ns2/c', 'ns1/a', 'ICMP', null, false], [EXTERNAL, 'ns1/a', 'TCP', 443, false], ['ns1/a', 'ns2/c', 'TCP', 80, true]],
  },
  {
    name: 'a Pass rule with a peer palisade does not know is taken as Deny',
    objects: [...base(), allowIngress('ns1'), admin('future-pass', 10, { subject: ns('ns1'), ...ingress({ action: 'Pass', from: [{ services: { name: 'web' } }] }) })],
    probes: [['ns2/c', 'ns1/a', 'TCP', 80, false, 'Default/Admin']],
  },
  {
    name: 'domainNames Accept rules match nothing, so the Deny after them applies, to pods too',
    objects: [...base(), admin('allowlist', 10, { subject: ns('ns1'), ...egress({ action: 'Accept', to: [{ domainNames: ['github.com'] }] }, { action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }) })],
    probes: [['ns1/a', EXTERNAL, 'TCP', 443, false, 'Admin/null'], ['ns1/a', 'ns2/c', 'TCP', 80, false]],
  },
  {
    name: 'a pod reaching its own address is not subject to ClusterNetworkPolicy',
    objects: [...base(), admin('lockdown', 10, { ...ingress({ action: 'Deny', from: [everyNamespace] }), ...egress({ action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }) })],
    probes: [['ns1/a', 'ns1/a', 'TCP', 8080, true, 'null/null'], ['ns1/a', 'ns1/b', 'TCP', 8080, false, 'Admin/Admin']],
  },
  {
    name: 'hostNetwork pods (kube-system/agent, at node-b\'s address) are never subjects, nor namespaces or pods peers',
    objects: [...base(), admin('kube-system-out', 10, { subject: ns('kube-system'), ...egress({ action: 'Deny', to: [everyNamespace] }) }), admin('from-kube-system', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [ns('kube-system')] }) })],
    probes: [[NODE_B, 'ns2/c', 'TCP', 80, true, 'null/Default'], ['kube-system/coredns', 'ns2/c', 'TCP', 80, false, 'Admin/Default'], [NODE_B, 'ns1/a', 'TCP', 80, true, 'null/Default'], ['kube-system/coredns', 'ns1/a', 'TCP', 80, false]],
  },
  // The API documentation's examples (user stories, conformance), with the verdicts it states.
  {
    name: 'the metadata service guardrail denies 169.254.169.254 to every pod, NetworkPolicy or not',
    objects: [...base(), policy('ns1', 'allow-egress', { podSelector: {}, policyTypes: ['Egress'], egress: [{}] }), admin('block-imds', 10, egress({ action: 'Deny', name: 'deny-metadata', to: [{ networks: [`${IMDS}/32`] }] }))],
    probes: [['ns1/a', IMDS, 'TCP', 80, false, 'Admin/null'], ['ns2/c', IMDS, 'TCP', 80, false], ['ns1/a', EXTERNAL, 'TCP', 80, true, 'NetworkPolicy/null']],
  },
  {
    name: 'kube-system closed except DNS: its own traffic is delegated, every other namespace reaches DNS only',
    objects: [...base(), admin('kube-system-closed', 5, {
      subject: ns('kube-system'),
      ...ingress(
        { action: 'Pass', name: 'own-namespace', from: [ns('kube-system')] },
        { action: 'Accept', name: 'dns', from: [everyNamespace], protocols: [{ udp: { destinationPort: { number: 53 } } }, tcp(53)] },
        { action: 'Deny', name: 'everything-else', from: [everyNamespace] },
      ),
    })],
    probes: [['ns1/a', 'kube-system/coredns', 'UDP', 53, true, 'Default/Admin'], ['ns2/d', 'kube-system/coredns', 'TCP', 53, true], ['ns1/a', 'kube-system/coredns', 'TCP', 9153, false, 'Default/Admin'], ['monitoring/prom', 'kube-system/coredns', 'TCP', 9153, false]],
  },
  {
    name: 'user story 1: sensitive-ns refuses ingress from every namespace, whatever its NetworkPolicies allow',
    objects: [...base(), namespace('sensitive-ns'), pod('sensitive-ns', 'vault', { ip: '10.1.7.1' }), allowIngress('sensitive-ns'), clusterPolicy('cluster-wide-deny-example', { tier: 'Admin', priority: 10, subject: ns('sensitive-ns'), ingress: [{ action: 'Deny', from: [{ namespaces: { matchLabels: {} } }], name: 'select-all-deny-all' }] })],
    probes: [['ns1/a', 'sensitive-ns/vault', 'TCP', 443, false, 'Default/Admin'], [EXTERNAL, 'sensitive-ns/vault', 'TCP', 443, true, 'null/NetworkPolicy']],
  },
  {
    name: 'user story 2: every namespace reaches kube-dns and takes monitoring traffic, through NetworkPolicies that isolate',
    objects: [...base(), policy('ns1', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }), admin('cluster-wide-allow-example', 30, {
      ...ingress({ action: 'Accept', name: 'allow-monitoring-ns-ingress', from: [ns('monitoring')] }),
      ...egress({ action: 'Accept', name: 'allow-kube-dns-egress', to: [{ pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } } }] }),
    })],
    probes: [['ns1/a', 'kube-system/coredns', 'UDP', 53, true, 'Admin/Default'], ['monitoring/prom', 'ns1/a', 'TCP', 9100, true, 'Default/Admin'], ['ns1/a', 'ns1/b', 'TCP', 80, false, 'NetworkPolicy/NetworkPolicy']],
  },
  {
    name: 'user story 3: egress to svc-pub on TCP 8080, web-alt and UDP 53 is delegated to NetworkPolicy',
    objects: [
      ...base(),
      namespace('bar-ns-1'),
      pod('bar-ns-1', 'pub', { ip: '10.1.6.1', labels: { app: 'svc-pub' }, ports: [{ name: 'web-alt', port: 8443 }] }),
      policy('ns2', 'no-egress', { podSelector: {}, policyTypes: ['Egress'] }),
      admin('pub-svc-delegate-example', 20, egress({ action: 'Pass', to: [{ pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'bar-ns-1' } }, podSelector: { matchLabels: { app: 'svc-pub' } } } }], protocols: [tcp(8080), { destinationNamedPort: 'web-alt' }, { udp: { destinationPort: { number: 53 } } }] })),
      admin('bar-ns-1-closed', 30, egress({ action: 'Deny', to: [ns('bar-ns-1')] })),
    ],
    probes: [['ns1/a', 'bar-ns-1/pub', 'TCP', 8080, true, 'Default/Default'], ['ns1/a', 'bar-ns-1/pub', 'TCP', 8443, true], ['ns1/a', 'bar-ns-1/pub', 'UDP', 53, true], ['ns2/c', 'bar-ns-1/pub', 'TCP', 8080, false, 'NetworkPolicy/Default'], ['ns1/a', 'bar-ns-1/pub', 'TCP', 22, false, 'Admin/Default']],
  },
  {
    name: 'user story 5 refined: a Baseline namespace isolation that a NetworkPolicy replaces for the pods it selects',
    objects: [
      ...base(),
      baseline('isolate-ns1', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', name: 'own-namespace', from: [ns('ns1')] }, { action: 'Deny', name: 'other-namespaces', from: [everyNamespace] }) }),
      policy('ns1', 'a-from-c', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'two' } }, podSelector: { matchLabels: { app: 'c' } } }] }] }),
    ],
    probes: [
      ['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/NetworkPolicy'],
      ['ns2/d', 'ns1/a', 'TCP', 80, false, 'Default/NetworkPolicy'],
      ['ns2/c', 'ns1/b', 'TCP', 80, false, 'Default/Baseline'],
      ['ns1/a', 'ns1/b', 'TCP', 80, true, 'Default/Baseline'],
      // The NetworkPolicy replaced the baseline for a, own namespace included: it must allow b itself.
      ['ns1/b', 'ns1/a', 'TCP', 80, false, 'Default/NetworkPolicy'],
    ],
  },
];

/** The conformance suite's api-integration objects: an admin rule, a NetworkPolicy allowing the same traffic, a baseline rule. */
function integration(adminAction: 'Deny' | 'Pass', withNetworkPolicy: boolean): Obj[] {
  const houses = ['gryffindor', 'slytherin'];
  const house = (name: string): Obj => ({ namespaces: { matchLabels: { 'conformance-house': name } } });
  return [
    ...houses.map((h) => namespace(`network-policy-conformance-${h}`, { 'conformance-house': h })),
    pod('network-policy-conformance-gryffindor', 'harry-potter-0', { ip: '10.2.1.1' }),
    pod('network-policy-conformance-slytherin', 'draco-malfoy-0', { ip: '10.2.2.1' }),
    clusterPolicy('pass-example', { tier: 'Admin', priority: 10, subject: house('gryffindor'), ingress: [{ name: 'deny-all-ingress-from-slytherin', action: adminAction, from: [house('slytherin')] }], egress: [{ name: 'deny-all-egress-to-slytherin', action: adminAction, to: [house('slytherin')] }] }),
    ...(withNetworkPolicy ? [policy('network-policy-conformance-gryffindor', 'allow-gress-from-to-slytherin-to-gryffindor', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'conformance-house': 'slytherin' } } }] }], egress: [{ to: [{ namespaceSelector: { matchLabels: { 'conformance-house': 'slytherin' } } }] }] })] : []),
    clusterPolicy('default', { tier: 'Baseline', priority: 10, subject: house('gryffindor'), ingress: [{ name: 'deny-all-ingress-from-slytherin', action: 'Deny', from: [house('slytherin')] }], egress: [{ name: 'deny-all-egress-to-slytherin', action: 'Deny', to: [house('slytherin')] }] }),
  ];
}
const HARRY = 'network-policy-conformance-gryffindor/harry-potter-0';
const DRACO = 'network-policy-conformance-slytherin/draco-malfoy-0';

const conformance: readonly Case[] = [
  { name: 'conformance: an admin Deny wins over a NetworkPolicy that allows', objects: integration('Deny', true), probes: [[DRACO, HARRY, 'TCP', 80, false, 'Default/Admin'], [HARRY, DRACO, 'TCP', 8080, false, 'Admin/Default']] },
  { name: 'conformance: made Pass, the NetworkPolicy allows', objects: integration('Pass', true), probes: [[DRACO, HARRY, 'TCP', 80, true, 'Default/NetworkPolicy'], [HARRY, DRACO, 'UDP', 53, true, 'NetworkPolicy/Default']] },
  { name: 'conformance: made Pass with the NetworkPolicy gone, the Baseline denies', objects: integration('Pass', false), probes: [[DRACO, HARRY, 'TCP', 80, false, 'Default/Baseline'], [HARRY, DRACO, 'SCTP', 9003, false, 'Baseline/Default']] },
];

function addressOf(snapshot: Snapshot, ref: string): string {
  if (!ref.includes('/')) return ref;
  const [namespaceName, name] = ref.split('/');
  const found = snapshot.pods.find((p) => p.namespace === namespaceName && p.name === name);
  if (found?.ip == null) throw new Error(`no pod ${ref} with an address in the case`);
  return found.ip;
}

function check(snapshot: Snapshot, probes: readonly Probe[]): void {
  const evaluator = new Evaluator(snapshot);
  for (const [from, to, protocol, port, allowed, tiers] of probes) {
    const verdict = evaluator.evaluate({ src: addressOf(snapshot, from), dst: addressOf(snapshot, to), protocol, port });
    const what = `${from} -> ${to} ${protocol}${port === null ? '' : `/${port}`}`;
    const why = `\n  egress: ${verdict.egress.reason}\n  ingress: ${verdict.ingress.reason}`;
    assert.equal(verdict.allowed, allowed, `${what}: expected ${allowed ? 'allowed' : 'denied'}${why}`);
    if (tiers !== undefined) assert.equal(`${verdict.egress.tier}/${verdict.ingress.tier}`, tiers, `${what}: deciding tiers${why}`);
  }
}

function verdictOf(objects: readonly Obj[], from: string, to: string, protocol: PacketProtocol, port: number | null): Verdict {
  const snapshot = snapshotOf(objects);
  return new Evaluator(snapshot).evaluate({ src: addressOf(snapshot, from), dst: addressOf(snapshot, to), protocol, port });
}

/** The compiled rules of both nodes, walked hop by hop, give each probe the documented verdict; the first packet of a denied one is logged as the deciding rule. */
function trace(snapshot: Snapshot, probes: readonly Probe[]): void {
  const evaluator = new Evaluator(snapshot);
  const sim = new SimulatedCluster(snapshot, ['node-a', 'node-b']);
  for (const [from, to, protocol, port, allowed] of probes) {
    const packet = { src: addressOf(snapshot, from), dst: addressOf(snapshot, to), protocol, port };
    const traced = sim.send(packet);
    const what = `${from} -> ${to} ${protocol}${port === null ? '' : `/${port}`}`;
    assert.equal(traced.allowed, allowed, `${what}: the rules say ${traced.allowed ? 'allowed' : 'denied'}\n${traced.describe()}`);
    const verdict = evaluator.evaluate(packet);
    const side = !verdict.egress.allowed ? verdict.egress : !verdict.ingress.allowed ? verdict.ingress : null;
    const denied = traced.logged().filter((l) => l.verdict === 'denied').map((l) => `${l.direction} ${l.namespace}/${l.pod} ${[...l.policies].sort().join(',')}`);
    if (side === null) assert.deepEqual(denied, [], `${what}: allowed, yet logged`);
    else {
      const by = side.decidedBy === null ? [...side.policies].sort().join(',') : `${side.decidedBy.tier} ${side.decidedBy.policy} rule ${side.decidedBy.rule}`;
      assert.deepEqual(denied, [`${side.direction} ${side.pod} ${by}`], `${what}: the drop log record\n${traced.describe()}`);
    }
  }
}

describe('ClusterNetworkPolicy semantics, by the evaluator', () => {
  for (const testCase of [...cases, ...conformance]) {
    it(testCase.name, () => check(snapshotOf(testCase.objects), testCase.probes));
  }
});

describe('ClusterNetworkPolicy semantics, by the compiled rules', () => {
  for (const testCase of [...cases, ...conformance]) {
    it(testCase.name, () => trace(snapshotOf(testCase.objects), testCase.probes));
  }
});

describe('a pod reaching itself through a Service (hairpin)', () => {
  const hairpin = { src: '10.1.1.1', dst: '10.1.1.1', protocol: 'TCP' as const, port: 8080, viaService: true };
  const verdicts = (objects: readonly Obj[]) => {
    const snapshot = snapshotOf(objects);
    return { evaluated: new Evaluator(snapshot).evaluate(hairpin), traced: new SimulatedCluster(snapshot, ['node-a', 'node-b']).send(hairpin) };
  };

  it('is subject to an admin Deny in both directions, by its own address it is not', () => {
    const lockdown = admin('lockdown', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) });
    const { evaluated, traced } = verdicts([...base(), lockdown]);
    assert.equal(evaluated.allowed, false);
    assert.equal(evaluated.ingress.tier, 'Admin');
    assert.equal(traced.allowed, false, traced.describe());
    assert.deepEqual(traced.logged().map((l) => `${l.direction} ${l.namespace}/${l.pod} ${l.policies.join(',')}`), ['ingress ns1/a Admin lockdown rule 0']);
    const direct = new SimulatedCluster(snapshotOf([...base(), lockdown]), ['node-a', 'node-b']).send({ ...hairpin, viaService: false });
    assert.equal(direct.allowed, true);
    assert.equal(new Evaluator(snapshotOf([...base(), lockdown])).evaluate({ ...hairpin, viaService: false }).allowed, true);
  });

  it('is allowed by NetworkPolicy where one isolates the pod (a pod cannot block itself), after Admin', () => {
    const { evaluated, traced } = verdicts([...base(), denyIngress('ns1'), baseline('isolate', 10, ingress({ action: 'Deny', from: [everyNamespace] }))]);
    assert.equal(evaluated.allowed, true);
    assert.equal(evaluated.ingress.tier, 'NetworkPolicy');
    assert.equal(traced.allowed, true, traced.describe());
  });

  it('is asked of the daemon with viaService=true, for one pod only', () => {
    const snapshot = snapshotOf([...base(), admin('lockdown', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })]);
    const ask = (query: string) => explain(new URL(`http://node/explain?${query}`), snapshot);
    const hairpinReply = ask('from=ns1/a&to=ns1/a&port=8080&viaService=true');
    assert.equal(hairpinReply.status, 200);
    assert.equal((JSON.parse(hairpinReply.body) as { allowed: boolean }).allowed, false);
    assert.equal((JSON.parse(ask('from=ns1/a&to=ns1/a&port=8080').body) as { allowed: boolean }).allowed, true);
    assert.match(ask('from=ns1/a&to=ns1/b&port=8080&viaService=true').body, /from and to must be the same pod/);
    assert.equal(ask('from=ns1/a&to=ns1/a&port=8080&viaService=yes').status, 400);
  });

  it('reaches Baseline where no NetworkPolicy isolates the pod', () => {
    const { evaluated, traced } = verdicts([...base(), baseline('isolate', 10, egress({ action: 'Deny', to: [ns('ns1')] }))]);
    assert.equal(evaluated.allowed, false);
    assert.equal(evaluated.egress.tier, 'Baseline');
    assert.equal(traced.allowed, false, traced.describe());
  });
});

describe('ClusterNetworkPolicy verdicts', () => {
  it('name the deciding tier, policy, priority, rule and action', () => {
    const verdict = verdictOf([...base(), admin('block-imds', 10, egress({ action: 'Deny', name: 'deny-metadata', to: [{ networks: [`${IMDS}/32`] }] }))], 'ns1/a', IMDS, 'TCP', 80);
    assert.equal(verdict.egress.reason, 'denied by admin ClusterNetworkPolicy block-imds (priority 10) egress rule 0 deny-metadata');
    assert.deepEqual(verdict.egress.decidedBy, { tier: 'Admin', policy: 'block-imds', priority: 10, rule: 0, name: 'deny-metadata', action: 'Deny', failClosed: null, tie: null });
    assert.equal(verdict.egress.tier, 'Admin');
    assert.deepEqual(verdict.egress.clusterPolicies, ['block-imds']);
    assert.deepEqual(verdict.egress.passedBy, []);
  });

  it('say how a tie at one priority was broken by action', () => {
    const verdict = verdictOf([...base(), admin('a-allow', 10, { subject: ns('ns1'), ...ingress({ action: 'Accept', from: [team('two')] }) }), admin('z-deny', 10, { subject: ns('ns1'), ...ingress({ action: 'Deny', from: [everyNamespace] }) })], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.reason, 'denied by admin ClusterNetworkPolicy z-deny (priority 10) ingress rule 0 (tie at priority 10 with a-allow (Accept) broken by action: Deny before Pass before Accept)');
    assert.deepEqual(verdict.ingress.clusterPolicies, ['a-allow', 'z-deny']);
  });

  it('name the first by name when tied policies agree', () => {
    const verdict = verdictOf([...base(), admin('second', 7, ingress({ action: 'Deny', from: [everyNamespace] })), admin('first', 7, ingress({ action: 'Deny', from: [team('two')] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.decidedBy?.policy, 'first');
    assert.equal(verdict.ingress.decidedBy?.tie, 'tie at priority 7 with second (Deny) all with the same action, the first by name named');
  });

  it('list the Pass rules a packet went through before the tier that decided', () => {
    const verdict = verdictOf([...base(), allowIngress('ns2', [{ namespaceSelector: { matchLabels: { team: 'one' } } }]), admin('delegate', 10, { subject: ns('ns2'), ...ingress({ action: 'Pass', name: 'to-namespace-owners', from: [team('one')] }) })], 'ns1/a', 'ns2/c', 'TCP', 80);
    assert.equal(verdict.ingress.reason, 'allowed by ns2/allow ingress rule 0; passed on by admin ClusterNetworkPolicy delegate (priority 10) ingress rule 0 to-namespace-owners');
    assert.deepEqual(verdict.ingress.passedBy.map((r) => [r.policy, r.action]), [['delegate', 'Pass']]);
    assert.equal(verdict.ingress.decidedBy, null);
    assert.equal(verdict.ingress.tier, 'NetworkPolicy');
  });

  it('say what each tier found when a Baseline rule decides', () => {
    const verdict = verdictOf([...base(), admin('guard', 1, ingress({ action: 'Deny', from: [ns('monitoring')] })), baseline('default-deny', 10, ingress({ action: 'Deny', from: [everyNamespace] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.reason, 'denied by baseline ClusterNetworkPolicy default-deny (priority 10) ingress rule 0; no rule of admin ClusterNetworkPolicy guard matches; no NetworkPolicy isolates ns1/a for ingress');
  });

  it('say when nothing decides although ClusterNetworkPolicies select the pod', () => {
    const verdict = verdictOf([...base(), baseline('monitoring-only', 10, ingress({ action: 'Deny', from: [ns('monitoring')] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.reason, 'no ClusterNetworkPolicy or NetworkPolicy decides for ns1/a ingress, so it is allowed; no NetworkPolicy isolates ns1/a for ingress; no rule of baseline ClusterNetworkPolicy monitoring-only matches');
    assert.equal(verdict.ingress.tier, 'Default');
  });

  it('say why a rule failed closed and what it was written as', () => {
    const verdict = verdictOf([...base(), admin('future', 3, ingress({ action: 'Pass', name: 'to-services', from: [{ services: {} }] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.decidedBy?.action, 'Deny');
    assert.equal(verdict.ingress.reason, 'denied by admin ClusterNetworkPolicy future (priority 3) ingress rule 0 to-services (Pass rule failed closed: spec.ingress[0].from[0] (services) has no field palisade knows (written for a newer ClusterNetworkPolicy CRD?))');
  });

  it('fail an invalid policy closed in the directions it declares, for its subject', () => {
    const { snapshot, problems } = parseObjects([...base(), admin('broken', 2000, { subject: ns('ns1'), ...egress({ action: 'Accept', to: [everyNamespace] }) })].map((object) => ({ object })));
    assert.deepEqual(problems.filter((p) => p.severity === 'error').map((p) => p.field), ['spec.priority']);
    check(snapshot, [['ns1/a', 'ns2/c', 'TCP', 80, false, 'Admin/Default'], ['ns2/c', 'ns1/a', 'TCP', 80, true, 'Default/Default'], ['ns2/c', 'ns2/d', 'TCP', 80, true]]);
    const verdict = new Evaluator(snapshot).evaluate({ src: '10.1.1.1', dst: EXTERNAL, protocol: 'UDP', port: 53 });
    assert.equal(verdict.egress.reason, 'denied by admin ClusterNetworkPolicy broken (priority 0) egress rule 0 (Deny rule failed closed: the policy is invalid)');
  });

  it('leave audit policies unjudged when an admin rule decides before NetworkPolicy', () => {
    const audit = { ...denyIngress('ns1'), metadata: { name: 'staged', namespace: 'ns1', annotations: { 'palisade.io/audit': 'true' } } };
    const verdict = verdictOf([...base(), audit, admin('accept-two', 10, ingress({ action: 'Accept', from: [team('two')] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.deepEqual(verdict.ingress.audit, { policies: ['ns1/staged'], wouldDeny: false, allowedBy: [], reason: 'an admin ClusterNetworkPolicy decides before NetworkPolicy, so audit policies cannot change the verdict' });
  });

  it('judge audit policies ahead of Baseline, and never call a packet Baseline denies would-deny', () => {
    const audit = { ...denyIngress('ns1'), metadata: { name: 'staged', namespace: 'ns1', annotations: { 'palisade.io/audit': 'true' } } };
    const denied = verdictOf([...base(), audit, baseline('default-deny', 10, ingress({ action: 'Deny', from: [everyNamespace] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(denied.allowed, false);
    assert.deepEqual(denied.ingress.audit, { policies: ['ns1/staged'], wouldDeny: false, allowedBy: [], reason: 'audit policies ns1/staged would deny this packet too were they enforced' });
    const allowed = verdictOf([...base(), audit, baseline('default-deny', 10, ingress({ action: 'Deny', from: [ns('monitoring')] }))], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(allowed.ingress.audit?.wouldDeny, true);
  });

  it('keep a NetworkPolicy-only verdict as it was, with its tier', () => {
    const verdict = verdictOf([...base(), denyIngress('ns1')], 'ns2/c', 'ns1/a', 'TCP', 80);
    assert.equal(verdict.ingress.reason, 'ns1/a is isolated for ingress by ns1/deny-ingress and no rule allows this packet');
    assert.equal(verdict.ingress.tier, 'NetworkPolicy');
    assert.deepEqual(verdict.ingress.clusterPolicies, []);
    assert.equal(verdict.egress.reason, 'no policy isolates ns2/c for egress');
    assert.equal(verdict.egress.tier, 'Default');
  });

  it('say how a pod reaching itself is taken, only where there is a ClusterNetworkPolicy', () => {
    assert.equal(new Evaluator(snapshotOf(base())).assumptions().length, 1);
    const assumptions = new Evaluator(snapshotOf([...base(), baseline('x', 1, ingress({ action: 'Deny', from: [everyNamespace] }))])).assumptions();
    assert.doesNotMatch(assumptions.join('\n'), /does not enforce/);
    assert.match(assumptions.join('\n'), /a pod reaching itself through a Service is subject to ClusterNetworkPolicy/);
  });
});
