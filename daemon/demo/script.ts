/**
 * The steps of `palisade demo`, as data: the seed tutorial ("K8S: Network Policy") replayed against a
 * lab node. Each step is the kubectl commands it stands for, what each one does to the lab, and what
 * must then be observed: pod-to-pod reachability (real packets), and the node's status endpoint view
 * (/status per pod, /explain per connection). walkthrough.ts runs them.
 */

export type DemoPod = 'busybox1' | 'busybox2';

export interface DemoPodSpec {
  readonly name: DemoPod;
  readonly ip: string;
}

/** The namespace of the tutorial's pods and policies. */
export const DEMO_NAMESPACE = 'default';
export const DEMO_NODE = { name: 'node-a', podCidr: '10.1.1.0/24' } as const;
export const DEMO_PODS: readonly DemoPodSpec[] = [
  { name: 'busybox1', ip: '10.1.1.11' },
  { name: 'busybox2', ip: '10.1.1.12' },
];
/** The port every pod's echo server listens on, and the one "ping" probes when ICMP ping is not installed. */
export const ECHO_PORT = 80;
/** An address outside the cluster (TEST-NET-3), for /explain questions about traffic from elsewhere. */
export const OUTSIDE_ADDRESS = '203.0.113.10';

/** The CRD of ClusterNetworkPolicy, as the operator's guide installs it. */
export const CLUSTER_POLICY_CRD_URL = 'https://raw.githubusercontent.com/kubernetes-sigs/network-policy-api/v0.2.0/config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml';

/** What a kubectl command does to the lab. `create` files (a NetworkPolicy or a ClusterNetworkPolicy) are read from manifests/examples. */
export type DemoAction =
  | { readonly kind: 'run-pod'; readonly pod: DemoPod }
  | { readonly kind: 'create'; readonly file: string }
  | { readonly kind: 'install-cluster-policy-crd' }
  | { readonly kind: 'delete-cluster-policy'; readonly name: string }
  | { readonly kind: 'label-pod'; readonly pod: DemoPod; readonly key: string; readonly value: string }
  | { readonly kind: 'label-namespace'; readonly namespace: string; readonly key: string; readonly value: string }
  | { readonly kind: 'delete-all-policies' };

export interface DemoCommandLine {
  /** Shown as typed in the tutorial. */
  readonly kubectl: string;
  readonly action: DemoAction;
}

export interface ReachabilityExpectation {
  readonly from: DemoPod;
  readonly to: DemoPod;
  readonly reachable: boolean;
}

/** A pod as /status shows it: isolation per direction and the policies isolating it ("ns/name", sorted). */
export interface EndpointExpectation {
  readonly pod: DemoPod;
  readonly isolated: { readonly ingress: boolean; readonly egress: boolean };
  readonly policies: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
  /** Require a non-zero dropped-packet count in these directions (counters refresh every few seconds). */
  readonly droppedSome?: readonly ('ingress' | 'egress')[];
  /** When given, the ClusterNetworkPolicies /status lists as selecting the pod, per direction. */
  readonly clusterPolicies?: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
}

/** The tier /explain names as deciding a direction. */
export type DemoTier = 'Admin' | 'NetworkPolicy' | 'Baseline' | 'Default';

/** A question to /explain: `from`/`to` are demo pods or IPv4 addresses; TCP to the echo port. */
export interface ExplainExpectation {
  readonly from: DemoPod | string;
  readonly to: DemoPod | string;
  readonly allowed: boolean;
  /** When given, the tier that decided each direction. */
  readonly tiers?: { readonly egress: DemoTier; readonly ingress: DemoTier };
}

/** A record /drops must hold: a connection between demo pods refused by one side's policies. */
export interface DropExpectation {
  readonly from: DemoPod;
  readonly to: DemoPod;
  readonly direction: 'ingress' | 'egress';
  readonly policies: readonly string[];
  /** The ClusterNetworkPolicy rule that refused, as "<name>/<rule name>" (its `policies` are then empty). */
  readonly clusterPolicy?: string;
}

export interface DemoStep {
  readonly number: number;
  readonly title: string;
  /** What the ✔ line says once every expectation holds. */
  readonly summary: string;
  readonly commands: readonly DemoCommandLine[];
  readonly reachability: readonly ReachabilityExpectation[];
  readonly endpoints?: readonly EndpointExpectation[];
  readonly explain?: readonly ExplainExpectation[];
  /** Records of refused connections the node's drop log must show (/drops). */
  readonly drops?: readonly DropExpectation[];
  /** Print the whole /status entry of each pod and the /explain answers in full. */
  readonly showStatus?: boolean;
}

const both = (reachable12: boolean, reachable21: boolean): ReachabilityExpectation[] => [
  { from: 'busybox2', to: 'busybox1', reachable: reachable21 },
  { from: 'busybox1', to: 'busybox2', reachable: reachable12 },
];

const policy = (name: string): string => `${DEMO_NAMESPACE}/${name}`;
const notIsolated = (pod: DemoPod): EndpointExpectation => ({ pod, isolated: { ingress: false, egress: false }, policies: { ingress: [], egress: [] } });
const isolatedBy = (pod: DemoPod, names: readonly string[], droppedSome?: readonly ('ingress' | 'egress')[]): EndpointExpectation => {
  const policies = names.map(policy).sort();
  return { pod, isolated: { ingress: true, egress: true }, policies: { ingress: policies, egress: policies }, ...(droppedSome === undefined ? {} : { droppedSome }) };
};

export const DEMO_STEPS: readonly DemoStep[] = [
  {
    number: 1,
    title: 'Deploy two test pods: by default pods talk to each other',
    summary: 'no policy: busybox1 and busybox2 reach each other both ways',
    commands: [
      { kubectl: 'kubectl run busybox1 --image=busybox -- sleep 3600', action: { kind: 'run-pod', pod: 'busybox1' } },
      { kubectl: 'kubectl run busybox2 --image=busybox -- sleep 3600', action: { kind: 'run-pod', pod: 'busybox2' } },
    ],
    reachability: both(true, true),
    endpoints: [notIsolated('busybox1'), notIsolated('busybox2')],
  },
  {
    number: 2,
    title: 'Deny all traffic in the namespace',
    summary: 'deny-all: both directions are blocked, and the node\'s drop log names the pods and the policy',
    commands: [{ kubectl: 'kubectl create -f deny-all.yaml', action: { kind: 'create', file: 'deny-all.yaml' } }],
    reachability: both(false, false),
    endpoints: [isolatedBy('busybox1', ['deny-all']), isolatedBy('busybox2', ['deny-all'])],
    // Each ping is refused by the sender's own egress isolation, before the receiver's ingress is asked.
    drops: [{ from: 'busybox2', to: 'busybox1', direction: 'egress', policies: [policy('deny-all')] }],
  },
  {
    number: 3,
    title: 'Allow traffic from pods labelled name=out to pods labelled name=in',
    summary: 'allow-out-to-in: busybox2 (out) reaches busybox1 (in); busybox1 still cannot reach busybox2',
    commands: [
      { kubectl: 'kubectl create -f allow-out-to-in.yaml', action: { kind: 'create', file: 'allow-out-to-in.yaml' } },
      { kubectl: 'kubectl label pod busybox1 name=in', action: { kind: 'label-pod', pod: 'busybox1', key: 'name', value: 'in' } },
      { kubectl: 'kubectl label pod busybox2 name=out', action: { kind: 'label-pod', pod: 'busybox2', key: 'name', value: 'out' } },
    ],
    reachability: both(false, true),
    endpoints: [isolatedBy('busybox1', ['allow-out-to-in', 'deny-all']), isolatedBy('busybox2', ['allow-out-to-in', 'deny-all'])],
  },
  {
    number: 4,
    title: "What the node's status endpoint says about it",
    summary: 'the status endpoint agrees: both pods isolated, busybox2 → busybox1 allowed, busybox1 → busybox2 denied and dropped',
    commands: [],
    reachability: [],
    // busybox1 → busybox2 was refused in step 3 by busybox1's own egress rules.
    endpoints: [isolatedBy('busybox1', ['allow-out-to-in', 'deny-all'], ['egress']), isolatedBy('busybox2', ['allow-out-to-in', 'deny-all'])],
    explain: [
      { from: 'busybox2', to: 'busybox1', allowed: true },
      { from: 'busybox1', to: 'busybox2', allowed: false },
    ],
    showStatus: true,
  },
  {
    number: 5,
    title: 'Isolate the namespace: its pods talk only to pods of namespaces labelled nsname=default',
    summary: `isolate-namespace: pods in default reach each other; traffic from outside (${OUTSIDE_ADDRESS}) is denied`,
    commands: [
      { kubectl: 'kubectl label namespace default nsname=default', action: { kind: 'label-namespace', namespace: DEMO_NAMESPACE, key: 'nsname', value: 'default' } },
      { kubectl: 'kubectl delete networkpolicy --all', action: { kind: 'delete-all-policies' } },
      { kubectl: 'kubectl create -f isolate-namespace.yaml', action: { kind: 'create', file: 'isolate-namespace.yaml' } },
    ],
    reachability: both(true, true),
    endpoints: [isolatedBy('busybox1', ['isolate-namespace']), isolatedBy('busybox2', ['isolate-namespace'])],
    explain: [{ from: OUTSIDE_ADDRESS, to: 'busybox1', allowed: false }],
  },
  {
    number: 6,
    title: 'Allow all traffic: policies add up, so allow-all overrides deny-all',
    summary: 'allow-all (with deny-all and isolate-namespace): everything is allowed',
    commands: [
      { kubectl: 'kubectl create -f deny-all.yaml', action: { kind: 'create', file: 'deny-all.yaml' } },
      { kubectl: 'kubectl create -f allow-all.yaml', action: { kind: 'create', file: 'allow-all.yaml' } },
    ],
    reachability: both(true, true),
    endpoints: [isolatedBy('busybox1', ['allow-all', 'deny-all', 'isolate-namespace']), isolatedBy('busybox2', ['allow-all', 'deny-all', 'isolate-namespace'])],
    explain: [{ from: OUTSIDE_ADDRESS, to: 'busybox1', allowed: true }],
  },
  {
    number: 7,
    title: 'Clean up every policy: back to the default, allow everything',
    summary: 'no policy left: nothing is isolated, both directions reachable',
    commands: [{ kubectl: 'kubectl delete networkpolicy --all', action: { kind: 'delete-all-policies' } }],
    reachability: both(true, true),
    endpoints: [notIsolated('busybox1'), notIsolated('busybox2')],
    explain: [{ from: OUTSIDE_ADDRESS, to: 'busybox1', allowed: true }],
  },
  {
    number: 8,
    title: 'A cluster-wide guardrail: an Admin ClusterNetworkPolicy no namespace can override',
    summary: 'admin-deny-busybox2 (Admin tier) holds against the namespace\'s allow-all: busybox2 → busybox1 blocked, and the drop log names the ClusterNetworkPolicy and its rule',
    commands: [
      { kubectl: `kubectl apply -f ${CLUSTER_POLICY_CRD_URL}`, action: { kind: 'install-cluster-policy-crd' } },
      { kubectl: 'kubectl create -f allow-all.yaml', action: { kind: 'create', file: 'allow-all.yaml' } },
      { kubectl: 'kubectl create -f admin-deny-busybox2.yaml', action: { kind: 'create', file: 'admin-deny-busybox2.yaml' } },
    ],
    reachability: both(true, false),
    endpoints: [
      { ...isolatedBy('busybox1', ['allow-all']), clusterPolicies: { ingress: ['admin-deny-busybox2'], egress: [] } },
      { ...isolatedBy('busybox2', ['allow-all']), clusterPolicies: { ingress: [], egress: [] } },
    ],
    explain: [{ from: 'busybox2', to: 'busybox1', allowed: false, tiers: { egress: 'NetworkPolicy', ingress: 'Admin' } }],
    drops: [{ from: 'busybox2', to: 'busybox1', direction: 'ingress', policies: [], clusterPolicy: 'admin-deny-busybox2/no-busybox2' }],
  },
  {
    number: 9,
    title: 'A default below NetworkPolicy: a Baseline ClusterNetworkPolicy isolates the namespace',
    summary: 'baseline-isolate-namespace (Baseline tier): with no NetworkPolicy left, no pod of default hears from another',
    commands: [
      { kubectl: 'kubectl delete clusternetworkpolicy admin-deny-busybox2', action: { kind: 'delete-cluster-policy', name: 'admin-deny-busybox2' } },
      { kubectl: 'kubectl delete networkpolicy --all', action: { kind: 'delete-all-policies' } },
      { kubectl: 'kubectl create -f baseline-isolate-namespace.yaml', action: { kind: 'create', file: 'baseline-isolate-namespace.yaml' } },
    ],
    reachability: both(false, false),
    endpoints: [
      { ...notIsolated('busybox1'), clusterPolicies: { ingress: ['baseline-isolate-namespace'], egress: [] } },
      { ...notIsolated('busybox2'), clusterPolicies: { ingress: ['baseline-isolate-namespace'], egress: [] } },
    ],
    explain: [{ from: 'busybox2', to: 'busybox1', allowed: false, tiers: { egress: 'Default', ingress: 'Baseline' } }],
    // The Baseline's Deny is recorded like the Admin one, by name and rule (the record's tier says Baseline).
    drops: [{ from: 'busybox1', to: 'busybox2', direction: 'ingress', policies: [], clusterPolicy: 'baseline-isolate-namespace/from-anywhere' }],
  },
  {
    number: 10,
    title: 'The namespace refines the default: its own NetworkPolicy decides for the pods it selects',
    summary: 'allow-in-from-out isolates busybox1 (name=in) and lets busybox2 (name=out) in; busybox2 is still under the Baseline, so busybox1 → busybox2 stays blocked',
    commands: [{ kubectl: 'kubectl create -f allow-in-from-out.yaml', action: { kind: 'create', file: 'allow-in-from-out.yaml' } }],
    reachability: both(false, true),
    // The Baseline still selects busybox1 (/status lists it), but the NetworkPolicy isolating busybox1's ingress decides alone.
    endpoints: [
      {
        pod: 'busybox1',
        isolated: { ingress: true, egress: false },
        policies: { ingress: [policy('allow-in-from-out')], egress: [] },
        clusterPolicies: { ingress: ['baseline-isolate-namespace'], egress: [] },
      },
      { ...notIsolated('busybox2'), clusterPolicies: { ingress: ['baseline-isolate-namespace'], egress: [] } },
    ],
    explain: [
      { from: 'busybox2', to: 'busybox1', allowed: true, tiers: { egress: 'Default', ingress: 'NetworkPolicy' } },
      { from: 'busybox1', to: 'busybox2', allowed: false, tiers: { egress: 'Default', ingress: 'Baseline' } },
    ],
  },
  {
    number: 11,
    title: 'Clean up: delete the ClusterNetworkPolicy and the NetworkPolicy',
    summary: 'no policy of either kind left: both directions reachable',
    commands: [
      { kubectl: 'kubectl delete clusternetworkpolicy baseline-isolate-namespace', action: { kind: 'delete-cluster-policy', name: 'baseline-isolate-namespace' } },
      { kubectl: 'kubectl delete networkpolicy --all', action: { kind: 'delete-all-policies' } },
    ],
    reachability: both(true, true),
    endpoints: [
      { ...notIsolated('busybox1'), clusterPolicies: { ingress: [], egress: [] } },
      { ...notIsolated('busybox2'), clusterPolicies: { ingress: [], egress: [] } },
    ],
  },
];
