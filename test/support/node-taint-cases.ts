/**
 * Node updates and whether palisade's admission policy lets them through: checked against the shipped
 * ValidatingAdmissionPolicy (its CEL, test/unit/deploy.test.ts) and against the lab API server's
 * stand-in for it (test/unit/node-admission.test.ts), so the two say the same.
 */

export const PALISADE_USER = 'system:serviceaccount:kube-system:palisade';
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

type Obj = Record<string, unknown>;

export interface NodeUpdateCase {
  readonly name: string;
  readonly user: { readonly username: string; readonly nodeName: string | null };
  readonly oldObject: Obj;
  readonly object: Obj;
  /** null: admitted; else which validation denies it. */
  readonly denied: null | 'ownNode' | 'onlyTaints' | 'noAdditions' | 'onlyStartupTaint';
}

const startup = { key: 'palisade.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const karpenter = { key: 'karpenter.sh/disrupted', effect: 'NoSchedule' };
const cordon = { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule', timeAdded: '2025-01-01T00:00:00Z' };

function nodeObject(name: string, taints: readonly Obj[] | null, tweak: { labels?: Record<string, string>; unschedulable?: boolean; providerID?: string } = {}): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: tweak.labels ?? { 'kubernetes.io/os': 'linux' }, resourceVersion: '7' },
    spec: { providerID: tweak.providerID ?? `aws:///eu-west-1a/i-${name}`, ...(tweak.unschedulable === undefined ? {} : { unschedulable: tweak.unschedulable }), ...(taints === null ? {} : { taints }) },
  };
}

const own = { username: PALISADE_USER, nodeName: 'node-a' };

export const NODE_UPDATE_CASES: readonly NodeUpdateCase[] = [
  { name: 'palisade removes the startup taint from its own node', user: own, oldObject: nodeObject('node-a', [startup]), object: nodeObject('node-a', []), denied: null },
  { name: 'palisade removes the startup taint, leaving the other taints', user: own, oldObject: nodeObject('node-a', [cordon, startup, karpenter]), object: nodeObject('node-a', [cordon, karpenter]), denied: null },
  { name: 'palisade removes the startup taint and the taints field goes', user: own, oldObject: nodeObject('node-a', [startup]), object: nodeObject('node-a', null), denied: null },
  { name: 'palisade removes the startup taint from another node', user: own, oldObject: nodeObject('node-b', [startup]), object: nodeObject('node-b', []), denied: 'ownNode' },
  { name: 'a palisade token bound to no node removes the startup taint', user: { username: PALISADE_USER, nodeName: null }, oldObject: nodeObject('node-a', [startup]), object: nodeObject('node-a', []), denied: 'ownNode' },
  { name: 'palisade removes another taint from its own node', user: own, oldObject: nodeObject('node-a', [startup, karpenter]), object: nodeObject('node-a', [startup]), denied: 'onlyStartupTaint' },
  { name: 'palisade removes the startup taint and a cordon', user: own, oldObject: nodeObject('node-a', [startup, cordon]), object: nodeObject('node-a', []), denied: 'onlyStartupTaint' },
  { name: 'palisade adds a taint to its own node', user: own, oldObject: nodeObject('node-a', []), object: nodeObject('node-a', [karpenter]), denied: 'noAdditions' },
  { name: 'palisade changes the startup taint\'s effect instead of removing it', user: own, oldObject: nodeObject('node-a', [startup]), object: nodeObject('node-a', [{ ...startup, effect: 'PreferNoSchedule' }]), denied: 'noAdditions' },
  { name: 'palisade removes the startup taint and relabels the node', user: own, oldObject: nodeObject('node-a', [startup]), object: nodeObject('node-a', [], { labels: { 'kubernetes.io/os': 'linux', role: 'db' } }), denied: 'onlyTaints' },
  { name: 'palisade uncordons its own node', user: own, oldObject: nodeObject('node-a', [], { unschedulable: true }), object: nodeObject('node-a', [], { unschedulable: false }), denied: 'onlyTaints' },
  { name: 'palisade changes its own node\'s provider ID', user: own, oldObject: nodeObject('node-a', []), object: nodeObject('node-a', [], { providerID: 'aws:///elsewhere' }), denied: 'onlyTaints' },
  { name: 'another user changes any taint of any node (not the policy\'s business)', user: { username: 'kubernetes-admin', nodeName: null }, oldObject: nodeObject('node-b', [startup, cordon]), object: nodeObject('node-b', [karpenter]), denied: null },
];
