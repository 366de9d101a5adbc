import { PalisadeError } from '../../lib/errors.js';
import type { Lab } from '../../lib/lab/cluster.js';
import type { Interruption } from './interrupt.js';
import type { DemoLab } from './lab.js';
import { metadataName, namespaceObject, podObject } from './objects.js';
import type { Obj } from './objects.js';
import type { DemoPods } from './pods.js';
import { DEMO_NAMESPACE, DEMO_NODE, DEMO_PODS, ECHO_PORT } from './script.js';
import type { DemoAction, DemoPod, DemoPodSpec } from './script.js';

/**
 * The tutorial's kubectl commands, done against the lab API server: keeps what kubectl would see of
 * the namespace (labels, pods' labels, policies) and answers what kubectl would print.
 */
export class Kubectl {
  private readonly lab: DemoLab;
  private readonly pods: DemoPods;
  private readonly interruption: Interruption;
  private readonly policyFiles: ReadonlyMap<string, Obj>;
  private readonly podLabels = new Map<DemoPod, Record<string, string>>();
  private namespaceLabels: Record<string, string> = {};
  /** Policy names in the namespace, in creation order. */
  private readonly policies: string[] = [];
  /** ClusterNetworkPolicy names, in creation order. */
  private readonly clusterPolicies: string[] = [];

  constructor(lab: DemoLab, pods: DemoPods, interruption: Interruption, policyFiles: ReadonlyMap<string, Obj>) {
    this.lab = lab;
    this.pods = pods;
    this.interruption = interruption;
    this.policyFiles = policyFiles;
  }

  /** The tutorial's namespace as it stands. */
  namespace(): Obj {
    return namespaceObject(DEMO_NAMESPACE, this.namespaceLabels);
  }

  /** Does what a kubectl command would; returns what kubectl would print. */
  async perform(action: DemoAction): Promise<string[]> {
    const lab = this.lab.requireLab();
    switch (action.kind) {
      case 'run-pod':
        return this.runPod(lab, demoPod(action.pod));
      case 'create':
        return this.create(lab, action.file);
      case 'label-pod':
        return this.labelPod(lab, demoPod(action.pod), action.key, action.value);
      case 'label-namespace':
        return this.labelNamespace(lab, action.namespace, action.key, action.value);
      case 'delete-all-policies':
        return this.deleteAllPolicies(lab);
      case 'install-cluster-policy-crd':
        await lab.api.setCrdInstalled('ClusterNetworkPolicy', true);
        return ['customresourcedefinition.apiextensions.k8s.io/clusternetworkpolicies.policy.networking.k8s.io created   (the lab API server now serves policy.networking.k8s.io/v1alpha2; palisade finds it through discovery)'];
      case 'delete-cluster-policy':
        return this.deleteClusterPolicy(lab, action.name);
    }
  }

  private async runPod(lab: Lab, spec: DemoPodSpec): Promise<string[]> {
    const handle = await this.pods.start(lab, spec);
    this.podLabels.set(spec.name, { run: spec.name });
    await lab.api.apply(podObject(spec.name, spec.ip, this.podLabels.get(spec.name) ?? {}));
    return [`pod/${spec.name} created   (IP ${spec.ip} on ${DEMO_NODE.name}, host veth ${handle.hostInterface}, echo server on tcp/${ECHO_PORT})`];
  }

  private async create(lab: Lab, file: string): Promise<string[]> {
    const policy = this.policyFiles.get(file);
    if (policy === undefined) throw new PalisadeError('DEMO', `no example policy ${file}`);
    const name = metadataName(policy);
    const cluster = policy['kind'] === 'ClusterNetworkPolicy';
    const [names, resource] = cluster ? [this.clusterPolicies, 'clusternetworkpolicies.policy.networking.k8s.io'] : [this.policies, 'networkpolicies.networking.k8s.io'];
    if (names.includes(name)) return [`Error from server (AlreadyExists): ${resource} "${name}" already exists`];
    await lab.api.apply(policy);
    names.push(name);
    return [`${cluster ? 'clusternetworkpolicy.policy.networking.k8s.io' : 'networkpolicy.networking.k8s.io'}/${name} created   (from manifests/examples/${file})`];
  }

  private async deleteClusterPolicy(lab: Lab, name: string): Promise<string[]> {
    if (!this.clusterPolicies.includes(name)) return [`Error from server (NotFound): clusternetworkpolicies.policy.networking.k8s.io "${name}" not found`];
    await lab.api.delete('ClusterNetworkPolicy', null, name);
    this.clusterPolicies.splice(this.clusterPolicies.indexOf(name), 1);
    return [`clusternetworkpolicy.policy.networking.k8s.io "${name}" deleted`];
  }

  private async labelPod(lab: Lab, spec: DemoPodSpec, key: string, value: string): Promise<string[]> {
    const labels = { ...(this.podLabels.get(spec.name) ?? {}), [key]: value };
    await lab.api.apply(podObject(spec.name, spec.ip, labels));
    this.podLabels.set(spec.name, labels);
    return [`pod/${spec.name} labeled`];
  }

  private async labelNamespace(lab: Lab, namespace: string, key: string, value: string): Promise<string[]> {
    const labels = { ...this.namespaceLabels, [key]: value };
    await lab.api.apply(namespaceObject(namespace, labels));
    this.namespaceLabels = labels;
    return [`namespace/${namespace} labeled`];
  }

  private async deleteAllPolicies(lab: Lab): Promise<string[]> {
    if (this.policies.length === 0) return [`No resources found in ${DEMO_NAMESPACE} namespace.`];
    const lines: string[] = [];
    for (const name of [...this.policies].sort()) {
      this.interruption.checkpoint();
      await lab.api.delete('NetworkPolicy', DEMO_NAMESPACE, name);
      this.policies.splice(this.policies.indexOf(name), 1);
      lines.push(`networkpolicy.networking.k8s.io "${name}" deleted`);
    }
    return lines;
  }
}

function demoPod(name: DemoPod): DemoPodSpec {
  const spec = DEMO_PODS.find((p) => p.name === name);
  if (spec === undefined) throw new PalisadeError('DEMO', `no demo pod ${name}`);
  return spec;
}
