/**
 * Who a lab token stands for, and the lab's stand-in for manifests/node-taint-policy.yaml: the
 * ValidatingAdmissionPolicy that lets palisade's service account change nothing on a node but take
 * the startup taint off the node its own pod runs on. The lab API server runs no CEL; this is the
 * same rule written out, checked against the same cases as the shipped policy (test/unit).
 *
 * A bound service-account token (Kubernetes 1.30 and later) carries the node its pod runs on in the
 * user's extra `authentication.kubernetes.io/node-name`; the lab issues one token per node for
 * palisade's daemons, bound in the same way (BoundIdentity).
 */

export interface BoundIdentity {
  /** e.g. system:serviceaccount:kube-system:palisade */
  readonly username: string;
  /** The node the token's pod runs on (authentication.kubernetes.io/node-name); null when not bound to one. */
  readonly nodeName: string | null;
}

export interface NodeTaintPolicy {
  readonly name: string;
  /** The requests the policy judges: those of this user (its matchConditions). */
  readonly username: string;
  /** The one taint key the user may remove (its startupTaintKey variable). */
  readonly taintKey: string;
}

export const PALISADE_NODE_TAINT_POLICY: NodeTaintPolicy = {
  name: 'palisade-node-taint',
  username: 'system:serviceaccount:kube-system:palisade',
  taintKey: 'palisade.io/agent-not-ready',
};

/** The messages of the policy's validations, in its order; the first that fails is the answer. */
export const NODE_TAINT_POLICY_MESSAGES = {
  ownNode: 'palisade may change only the node its own pod runs on (the node named in its service-account token)',
  onlyTaints: 'palisade may change nothing of a node but spec.taints',
  noAdditions: 'palisade may not add or change a taint',
  onlyStartupTaint: 'palisade may remove only its startup taint',
} as const;

type Obj = Record<string, unknown>;

const field = (object: unknown, ...keys: string[]): unknown => keys.reduce<unknown>((o, k) => (typeof o === 'object' && o !== null ? (o as Obj)[k] : undefined), object);

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical((value as Obj)[k])]));
}

/** What the policy compares, each absent field read as the policy reads it (its `has(...) ? ... :` defaults). */
const METADATA_FIELDS: readonly [string, unknown][] = [['labels', {}], ['annotations', {}], ['finalizers', []], ['ownerReferences', []]];
const SPEC_FIELDS: readonly [string, unknown][] = [['unschedulable', false], ['podCIDR', ''], ['podCIDRs', []], ['providerID', ''], ['externalID', ''], ['configSource', null]];

function taintsOf(node: unknown): unknown[] {
  const taints = field(node, 'spec', 'taints');
  return Array.isArray(taints) ? taints : [];
}

/**
 * Admission of an update to a Node (a PATCH is one) by `identity`: null when admitted, otherwise the
 * denying validation's message. Requests of other users are not the policy's business (admitted).
 */
export function admitNodeUpdate(policy: NodeTaintPolicy, identity: BoundIdentity, oldNode: unknown, newNode: unknown): string | null {
  if (identity.username !== policy.username) return null;
  if (identity.nodeName === null || identity.nodeName !== field(newNode, 'metadata', 'name')) return NODE_TAINT_POLICY_MESSAGES.ownNode;
  const unchanged = (path: string, [name, absent]: [string, unknown]) => same(field(oldNode, path, name) ?? absent, field(newNode, path, name) ?? absent);
  if (!METADATA_FIELDS.every((f) => unchanged('metadata', f)) || !SPEC_FIELDS.every((f) => unchanged('spec', f))) return NODE_TAINT_POLICY_MESSAGES.onlyTaints;
  const before = taintsOf(oldNode);
  const after = taintsOf(newNode);
  if (!after.every((t) => before.some((o) => same(o, t)))) return NODE_TAINT_POLICY_MESSAGES.noAdditions;
  if (!before.every((t) => after.some((n) => same(n, t)) || field(t, 'key') === policy.taintKey)) return NODE_TAINT_POLICY_MESSAGES.onlyStartupTaint;
  return null;
}
