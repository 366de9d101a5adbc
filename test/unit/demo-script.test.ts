import assert from 'node:assert/strict';
import { loadExamplePolicies, metadataName, namespaceObject, podObject } from '../../daemon/demo/objects.js';
import type { Obj } from '../../daemon/demo/objects.js';
import { DEMO_NAMESPACE, DEMO_PODS, DEMO_STEPS, ECHO_PORT, OUTSIDE_ADDRESS } from '../../daemon/demo/script.js';
import type { DemoAction, DemoPod, DemoStep } from '../../daemon/demo/script.js';
import { dropCheck, endpointCheck, explainCheck } from '../../daemon/demo/checks.js';
import type { DropRecordView, ExplainAnswer, StatusDocument, StatusEndpoint } from '../../daemon/demo/node-status.js';
import { parseObjects } from '../../rules/snapshot.js';
import { formatProblem } from '../../rules/problems.js';
import { Evaluator } from '../../rules/evaluator.js';
import type { DirectionVerdict } from '../../rules/evaluator.js';

/**
 * `palisade demo`'s script checked without a kernel: its steps replayed on a model of what the lab API
 * server holds, and every expectation of every step compared with palisade's evaluator (the engine
 * behind /explain, written apart from the compiler). A wrong expectation in script.ts fails here in
 * milliseconds, named by step, rather than as a ✘ at the end of a lab run; the demo test
 * (test/integration/demo.test.ts) then shows that the node's rules, /status and /drops agree.
 * The checks' judgement of the node's answers (checks.ts) is tested here too.
 */

/** What the lab API server holds after the steps so far, as Kubectl writes it (actions.ts). */
class LabModel {
  crdInstalled = false;
  private namespaceLabels: Record<string, string> = {};
  private readonly podLabels = new Map<DemoPod, Record<string, string>>();
  readonly policies = new Map<string, Obj>();
  readonly clusterPolicies = new Map<string, Obj>();

  constructor(private readonly files: ReadonlyMap<string, Obj>) {}

  /** Throws where kubectl would have printed an error: the script never means one. */
  perform(action: DemoAction): void {
    switch (action.kind) {
      case 'run-pod':
        assert.ok(!this.podLabels.has(action.pod), `${action.pod} runs once`);
        this.podLabels.set(action.pod, { run: action.pod });
        return;
      case 'create': {
        const object = this.files.get(action.file);
        assert.ok(object !== undefined, `${action.file} is loaded`);
        const cluster = object['kind'] === 'ClusterNetworkPolicy';
        // The lab API server answers 404 for the resource until its CRD is installed, as a real one does.
        if (cluster) assert.ok(this.crdInstalled, `${action.file}: the ClusterNetworkPolicy CRD is installed first`);
        const live = cluster ? this.clusterPolicies : this.policies;
        assert.ok(!live.has(metadataName(object)), `${action.file}: ${metadataName(object)} does not exist yet`);
        live.set(metadataName(object), object);
        return;
      }
      case 'label-pod': {
        const labels = this.podLabels.get(action.pod);
        assert.ok(labels !== undefined, `${action.pod} runs before it is labelled`);
        labels[action.key] = action.value;
        return;
      }
      case 'label-namespace':
        assert.equal(action.namespace, DEMO_NAMESPACE);
        this.namespaceLabels = { ...this.namespaceLabels, [action.key]: action.value };
        return;
      case 'delete-all-policies':
        this.policies.clear();
        return;
      case 'install-cluster-policy-crd':
        assert.ok(!this.crdInstalled, 'the CRD is installed once');
        this.crdInstalled = true;
        return;
      case 'delete-cluster-policy':
        assert.ok(this.clusterPolicies.delete(action.name), `${action.name} exists when it is deleted`);
        return;
      default: {
        const unknown: never = action;
        throw new Error(`no model of ${JSON.stringify(unknown)}`);
      }
    }
  }

  evaluator(): Evaluator {
    const pods = DEMO_PODS.flatMap((spec) => {
      const labels = this.podLabels.get(spec.name);
      return labels === undefined ? [] : [podObject(spec.name, spec.ip, labels)];
    });
    const objects = [namespaceObject(DEMO_NAMESPACE, this.namespaceLabels), ...pods, ...this.policies.values(), ...this.clusterPolicies.values()];
    const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })));
    assert.deepEqual(problems.map(formatProblem), []);
    return new Evaluator(snapshot);
  }
}

const address = (who: string): string => DEMO_PODS.find((p) => p.name === who)?.ip ?? who;
const tcp = (from: string, to: string) => ({ src: address(from), dst: address(to), protocol: 'TCP', port: ECHO_PORT }) as const;
const sorted = (list: readonly string[]): string[] => [...list].sort();

/** Every expectation of the step, asked of the evaluator; the ones it disagrees with, as sentences. */
function disagreements(step: DemoStep, evaluator: Evaluator): string[] {
  const wrong: string[] = [];
  for (const r of step.reachability) {
    const allowed = evaluator.evaluate(tcp(r.from, r.to)).allowed;
    if (allowed !== r.reachable) wrong.push(`${r.from} → ${r.to} is ${allowed ? 'allowed' : 'denied'}, the script expects ${r.reachable ? 'reachable' : 'blocked'}`);
  }
  for (const q of step.explain ?? []) {
    const verdict = evaluator.evaluate(tcp(q.from, q.to));
    if (verdict.allowed !== q.allowed) wrong.push(`explain ${q.from} → ${q.to}: ${verdict.allowed ? 'allowed' : 'denied'}`);
    if (q.tiers !== undefined && (verdict.egress.tier !== q.tiers.egress || verdict.ingress.tier !== q.tiers.ingress)) {
      wrong.push(`explain ${q.from} → ${q.to}: tiers egress ${String(verdict.egress.tier)}, ingress ${String(verdict.ingress.tier)}`);
    }
  }
  for (const e of step.endpoints ?? []) {
    // /status describes the pod per direction; the evaluator, for a packet from or to an address no policy names.
    const sides: Record<'ingress' | 'egress', DirectionVerdict> = {
      ingress: evaluator.evaluate(tcp(OUTSIDE_ADDRESS, e.pod)).ingress,
      egress: evaluator.evaluate(tcp(e.pod, OUTSIDE_ADDRESS)).egress,
    };
    for (const direction of ['ingress', 'egress'] as const) {
      const side = sides[direction];
      if (side.isolated !== e.isolated[direction]) wrong.push(`${e.pod} ${direction}: isolated ${String(side.isolated)}`);
      if (sorted(side.policies).join() !== sorted(e.policies[direction]).join()) wrong.push(`${e.pod} ${direction}: policies ${side.policies.join(', ')}`);
      if (e.clusterPolicies !== undefined && sorted(side.clusterPolicies).join() !== sorted(e.clusterPolicies[direction]).join()) {
        wrong.push(`${e.pod} ${direction}: ClusterNetworkPolicies ${side.clusterPolicies.join(', ')}`);
      }
    }
  }
  for (const d of step.drops ?? []) {
    const side = evaluator.evaluate(tcp(d.from, d.to))[d.direction];
    const record = `drop ${d.from} → ${d.to} at ${d.direction}`;
    if (side.allowed) wrong.push(`${record}: that side allows it`);
    if (d.clusterPolicy === undefined) {
      if (side.tier !== 'NetworkPolicy' || sorted(side.policies).join() !== sorted(d.policies).join()) wrong.push(`${record}: decided by ${String(side.tier)} (${side.policies.join(', ')})`);
    } else {
      const by = side.decidedBy;
      // A ClusterNetworkPolicy's Deny is recorded with no NetworkPolicy names: `policies` must then be empty.
      if (by === null || by.action !== 'Deny' || `${by.policy}/${by.name}` !== d.clusterPolicy || d.policies.length > 0) {
        wrong.push(`${record}: decided by ${by === null ? 'no ClusterNetworkPolicy rule' : `${by.action} ${by.policy}/${by.name}`}`);
      }
    }
  }
  return wrong;
}

describe('the demo script', () => {
  it('numbers its steps 1, 2, 3… in order', () => {
    assert.deepEqual(DEMO_STEPS.map((s) => s.number), DEMO_STEPS.map((_, i) => i + 1));
  });

  it('expects at every step what palisade\'s evaluator says of the objects the steps so far have written', async () => {
    const lab = new LabModel(await loadExamplePolicies());
    for (const step of DEMO_STEPS) {
      for (const command of step.commands) lab.perform(command.action);
      assert.deepEqual(disagreements(step, lab.evaluator()), [], `step ${step.number} (${step.title})`);
    }
  });

  it('installs the ClusterNetworkPolicy CRD, uses both tiers, and ends with no policy of either kind', async () => {
    const files = await loadExamplePolicies();
    const lab = new LabModel(files);
    for (const step of DEMO_STEPS) for (const command of step.commands) lab.perform(command.action);
    assert.ok(lab.crdInstalled);
    const tiers = [...files.values()].filter((o) => o['kind'] === 'ClusterNetworkPolicy').map((o) => (o['spec'] as Obj)['tier']);
    assert.deepEqual(sorted(tiers.map(String)), ['Admin', 'Baseline']);
    assert.deepEqual([...lab.policies.keys(), ...lab.clusterPolicies.keys()], []);
  });

  it('shows a /drops record naming a ClusterNetworkPolicy rule, and /explain naming each tier that can decide', () => {
    const drops = DEMO_STEPS.flatMap((s) => s.drops ?? []).flatMap((d) => (d.clusterPolicy === undefined ? [] : [d.clusterPolicy]));
    assert.deepEqual(drops, ['admin-deny-busybox2/no-busybox2', 'baseline-isolate-namespace/from-anywhere']);
    const tiers = new Set(DEMO_STEPS.flatMap((s) => s.explain ?? []).flatMap((q) => (q.tiers === undefined ? [] : [q.tiers.egress, q.tiers.ingress])));
    assert.deepEqual(sorted([...tiers]), ['Admin', 'Baseline', 'Default', 'NetworkPolicy']);
  });
});

describe('the demo\'s checks of what the node answers', () => {
  const side = (allowed: boolean, tier: string) => ({ allowed, reason: '…', tier });

  it('an /explain answer with the expected verdict but another tier fails, and says which tier was expected', () => {
    const question = { from: 'busybox2', to: 'busybox1', allowed: false, tiers: { egress: 'NetworkPolicy', ingress: 'Admin' } } as const;
    const answer: ExplainAnswer = { allowed: false, egress: side(true, 'NetworkPolicy'), ingress: side(false, 'Baseline') };
    const check = explainCheck(question, answer);
    assert.equal(check.ok, false);
    assert.match(check.lines.join('\n'), /ingress: denied \[Baseline tier, expected Admin\]/);
    assert.equal(explainCheck(question, { ...answer, ingress: side(false, 'Admin') }).ok, true);
  });

  it('an /explain answer from a daemon that names no tier passes a question that asks for none', () => {
    const answer: ExplainAnswer = { allowed: true, egress: { allowed: true, reason: '…' }, ingress: { allowed: true, reason: '…' } };
    const check = explainCheck({ from: 'busybox2', to: 'busybox1', allowed: true }, answer);
    assert.equal(check.ok, true);
    assert.doesNotMatch(check.lines.join('\n'), /tier/);
  });

  const record = (clusterPolicy?: DropRecordView['clusterPolicy'], policies: readonly string[] = []): DropRecordView => ({
    time: '2026-01-01T00:00:00.000Z', verdict: 'denied', direction: 'ingress', protocol: 'TCP', port: ECHO_PORT,
    source: { ip: '10.1.1.12', namespace: DEMO_NAMESPACE, pod: 'busybox2' },
    destination: { ip: '10.1.1.11', namespace: DEMO_NAMESPACE, pod: 'busybox1' },
    policies,
    ...(clusterPolicy === undefined ? {} : { clusterPolicy }),
  });
  const admin = { tier: 'Admin', name: 'admin-deny-busybox2', priority: 10, rule: 0, ruleName: 'no-busybox2' };

  it('a /drops record matches a ClusterNetworkPolicy expectation only by its name and rule name', () => {
    const expected = { from: 'busybox2', to: 'busybox1', direction: 'ingress', policies: [], clusterPolicy: 'admin-deny-busybox2/no-busybox2' } as const;
    assert.equal(dropCheck(expected, [record(admin)]).ok, true);
    assert.equal(dropCheck(expected, [record({ ...admin, ruleName: 'other' })]).ok, false);
    const missing = dropCheck(expected, [record(undefined, ['default/deny-all'])]);
    assert.equal(missing.ok, false);
    assert.match(missing.lines.join('\n'), /denied by busybox1's ingress \(ClusterNetworkPolicy admin-deny-busybox2\/no-busybox2\)/);
  });

  it('a /drops record of a ClusterNetworkPolicy Deny does not stand for a NetworkPolicy drop', () => {
    const expected = { from: 'busybox2', to: 'busybox1', direction: 'ingress', policies: [] } as const;
    assert.equal(dropCheck(expected, [record(admin)]).ok, false);
  });

  const endpoint = (clusterNetworkPolicies?: StatusEndpoint['clusterNetworkPolicies']): StatusDocument => ({
    ready: true, readyReason: '', backend: null,
    sync: { pendingChanges: false, lastError: null, lastDurationMs: 1, lastSuccess: null },
    failedPolicies: [],
    endpoints: [{
      namespace: DEMO_NAMESPACE, name: 'busybox1', ip: '10.1.1.11', interfaces: ['eni0'],
      isolated: { ingress: false, egress: false }, policies: { ingress: [], egress: [] }, dropped: { ingress: null, egress: null },
      ...(clusterNetworkPolicies === undefined ? {} : { clusterNetworkPolicies }),
    }],
  });
  const notIsolated = { pod: 'busybox1', isolated: { ingress: false, egress: false }, policies: { ingress: [], egress: [] } } as const;

  it('/status must list the ClusterNetworkPolicies selecting a pod per direction, when the step says which', () => {
    const expected = { ...notIsolated, clusterPolicies: { ingress: ['baseline-isolate-namespace'], egress: [] } };
    const listed = endpointCheck(expected, endpoint({ ingress: ['baseline-isolate-namespace'], egress: [] }), false);
    assert.equal(listed.ok, true);
    assert.deepEqual(listed.lines, ['/status default/busybox1: not isolated; ClusterNetworkPolicies selecting it: baseline-isolate-namespace']);
    assert.equal(endpointCheck(expected, endpoint({ ingress: [], egress: ['baseline-isolate-namespace'] }), false).ok, false);
    // A daemon whose /status has no such field (before ClusterNetworkPolicy) selects the pod by none.
    assert.equal(endpointCheck(expected, endpoint(), false).ok, false);
    assert.equal(endpointCheck({ ...notIsolated, clusterPolicies: { ingress: [], egress: [] } }, endpoint(), false).ok, true);
  });

  it('/status lines of the NetworkPolicy-only steps do not mention ClusterNetworkPolicies when none selects the pod', () => {
    assert.deepEqual(endpointCheck(notIsolated, endpoint({ ingress: [], egress: [] }), false).lines, ['/status default/busybox1: not isolated']);
  });
});
