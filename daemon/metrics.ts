import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Dataplane } from '../rules/dataplane.js';
import { POLICY_TABLE } from '../rules/dataplane.js';
import type { DropCounters } from '../lib/dataplane/applier.js';
import type { DropLogMetrics } from './drop-log.js';
import type { ClusterPolicyRecord, PolicyRecord } from '../rules/model.js';
import { CLUSTER_TIERS } from '../rules/model.js';
import type { NodeFindings } from './node-checks.js';
import type { UnauthorizedCounts } from '../lib/kube/api-client.js';
import type { ResourceKind } from './cluster-cache.js';

const CHANGE_RESOURCES: readonly ResourceKind[] = ['Pod', 'Namespace', 'NetworkPolicy', 'Node', 'ClusterNetworkPolicy'];
import { POLICY_EVENT_REASONS } from './policy-events.js';

/**
 * Every metric palisade exports, on one injected Registry (never prom-client's global one). Labels are
 * bounded: namespace and pod only for this node's own pods, never addresses.
 *
 * `namespace` and `pod` name the pod the series is about (the pod whose traffic was dropped), as in
 * kube-state-metrics and cAdvisor, so they join with those on (namespace, pod). Prometheus attaches
 * target labels of the same names (palisade's own pod, in kube-system); the PodMonitor scrapes with
 * `honorLabels: true` so these win over those (manifests/monitoring/podmonitor.yaml says why). No
 * other label may be a target label (job, instance, node, container, endpoint): test/unit/monitoring
 * checks.
 */
export class DaemonMetrics {
  readonly registry: Registry;
  readonly rules: Gauge<'table'>;
  readonly chains: Gauge<'table'>;
  readonly ipsets: Gauge;
  readonly ipselectorPods: Gauge;
  readonly localEndpoints: Gauge;
  readonly policies: Gauge;
  readonly policiesFailing: Gauge;
  readonly objectsWithProblems: Gauge<'kind' | 'severity'>;
  readonly droppedPackets: Counter<'namespace' | 'pod' | 'direction'>;
  readonly droppedBytes: Counter<'namespace' | 'pod' | 'direction'>;
  readonly syncDuration: Histogram;
  readonly changeToEnforced: Histogram<'resource'>;
  readonly applyFailures: Counter;
  readonly driftRepairs: Counter<'kind'>;
  readonly watchRestarts: Counter<'resource'>;
  readonly watchRelists: Counter<'resource'>;
  readonly watchHandlerErrors: Counter<'resource'>;
  readonly apiUnauthorized: Counter<'outcome'>;
  readonly objectHandlingFailures: Gauge;
  readonly policiesOverBudget: Gauge<'policy_namespace' | 'policy'>;
  readonly ready: Gauge;
  readonly lastSync: Gauge;
  readonly enforcementRefused: Gauge<'reason'>;
  readonly unenforcedPodRoutes: Gauge;
  readonly deniedConnections: Counter<'direction' | 'verdict'>;
  readonly policyDeniedConnections: Counter<'policy_namespace' | 'policy' | 'verdict'>;
  readonly dropLogLost: Counter<'reason'>;
  readonly dropLogReaderUp: Gauge;
  readonly startupTaintPresent: Gauge;
  readonly startupTaintRemovals: Counter<'outcome'>;
  readonly dropLogEnabled: Gauge;
  readonly policyReporterLeader: Gauge;
  readonly policyEvents: Counter<'reason'>;
  readonly clusterPolicies: Gauge<'tier'>;
  readonly clusterPoliciesServed: Gauge;
  readonly clusterPolicyConditions: Counter<'reason'>;
  /** Label sets of per-policy series published, to remove those of policies no local pod uses any more. */
  private readonly policySeries = new Map<string, { policy_namespace: string; policy: string; verdict: string }>();
  /** The API client's 401 counts as last published. */
  private lastUnauthorized: UnauthorizedCounts = { recovered: 0, refused: 0 };
  /** Last counter values read per pod and direction, to publish increases even across chain rewrites. */
  private readonly lastDrops = new Map<string, { packets: number; bytes: number }>();
  /** The label set of every drop series published, to remove it when its pod leaves. */
  private readonly dropLabels = new Map<string, { namespace: string; pod: string; direction: 'ingress' | 'egress' }>();

  constructor() {
    this.registry = new Registry();
    const registers = [this.registry];
    this.rules = new Gauge({ name: 'palisade_rules', help: 'iptables rules palisade has installed (hooks included)', labelNames: ['table'], registers });
    this.chains = new Gauge({ name: 'palisade_chains', help: 'iptables chains palisade has installed', labelNames: ['table'], registers });
    this.ipsets = new Gauge({ name: 'palisade_ipsets', help: 'ipsets palisade has installed', registers });
    this.ipselectorPods = new Gauge({ name: 'palisade_ipset_members', help: 'members across all of palisade\'s ipsets', registers });
    this.localEndpoints = new Gauge({ name: 'palisade_local_endpoints', help: 'pods on this node that have endpoint chains', registers });
    this.policies = new Gauge({ name: 'palisade_policies', help: 'NetworkPolicies known in the cluster', registers });
    this.policiesFailing = new Gauge({ name: 'palisade_policies_failing', help: 'NetworkPolicies that could not be compiled (they isolate and grant nothing)', registers });
    this.objectsWithProblems = new Gauge({ name: 'palisade_objects_with_problems', help: 'watched objects with parts palisade could not use', labelNames: ['kind', 'severity'], registers });
    this.droppedPackets = new Counter({ name: 'palisade_dropped_packets_total', help: 'packets dropped by policy, per local pod and direction', labelNames: ['namespace', 'pod', 'direction'], registers });
    this.droppedBytes = new Counter({ name: 'palisade_dropped_bytes_total', help: 'bytes dropped by policy, per local pod and direction', labelNames: ['namespace', 'pod', 'direction'], registers });
    this.syncDuration = new Histogram({ name: 'palisade_sync_duration_seconds', help: 'time to compile and apply one sync', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers });
    this.changeToEnforced = new Histogram({ name: 'palisade_change_to_enforced_seconds', help: 'time from a watched change arriving to its rules being in the kernel', labelNames: ['resource'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10], registers });
    // Every resource's buckets from the start: a series born at its first observation hides that
    // observation from rate(), and a node's first policy change would never reach the p99.
    for (const resource of CHANGE_RESOURCES) this.changeToEnforced.zero({ resource });
    this.applyFailures = new Counter({ name: 'palisade_apply_failures_total', help: 'dataplane writes that failed (the previous rules stayed in force)', registers });
    this.driftRepairs = new Counter({ name: 'palisade_drift_repairs_total', help: 'differences between the desired and the live rules that were repaired', labelNames: ['kind'], registers });
    this.watchRestarts = new Counter({ name: 'palisade_watch_restarts_total', help: 'watches (re)started against the API server', labelNames: ['resource'], registers });
    this.watchRelists = new Counter({ name: 'palisade_watch_relists_total', help: 'full relists (after 410 Gone or a failure)', labelNames: ['resource'], registers });
    this.apiUnauthorized = new Counter({ name: 'palisade_api_unauthorized_total', help: 'requests the API server refused with 401: recovered (the credentials, fetched afresh, were accepted on the one retry) or refused (the request failed and is retried with backoff)', labelNames: ['outcome'], registers });
    for (const outcome of ['recovered', 'refused']) this.apiUnauthorized.inc({ outcome }, 0);
    this.watchHandlerErrors = new Counter({ name: 'palisade_watch_handler_errors_total', help: 'watched objects palisade failed to handle; each forces a relist', labelNames: ['resource'], registers });
    this.objectHandlingFailures = new Gauge({ name: 'palisade_object_handling_failures', help: 'objects palisade could not handle since start (each is an error in /status; policies among them fail closed)', registers });
    this.policiesOverBudget = new Gauge({ name: 'palisade_policy_over_budget', help: 'NetworkPolicies over the per-policy budget, by policy: they isolate what they select and grant nothing', labelNames: ['policy_namespace', 'policy'], registers });
    this.ready = new Gauge({ name: 'palisade_ready', help: '1 when watches have synced and the last apply succeeded', registers });
    this.lastSync = new Gauge({ name: 'palisade_last_sync_timestamp_seconds', help: 'when the dataplane last matched the desired state', registers });
    this.enforcementRefused = new Gauge({ name: 'palisade_enforcement_refused', help: '1 while palisade programs nothing on this node because it could not enforce all of policy, by reason (kube-proxy-ipvs)', labelNames: ['reason'], registers });
    this.unenforcedPodRoutes = new Gauge({ name: 'palisade_unenforced_pod_routes', help: 'routes to this node\'s pods through interfaces no --interface-prefix matches: those pods are not enforced', registers });
    this.enforcementRefused.set({ reason: 'kube-proxy-ipvs' }, 0);
    this.deniedConnections = new Counter({ name: 'palisade_denied_connections_total', help: 'new connections the drop log recorded, by the side whose isolation refused them and verdict (denied, or would-deny for audit policies)', labelNames: ['direction', 'verdict'], registers });
    for (const direction of ['ingress', 'egress']) for (const verdict of ['denied', 'would-deny']) this.deniedConnections.inc({ direction, verdict }, 0);
    this.policyDeniedConnections = new Counter({ name: 'palisade_policy_denied_connections_total', help: 'new connections the drop log recorded, per policy isolating the refusing pod, or per ClusterNetworkPolicy whose Deny rule refused (policy_namespace "ClusterNetworkPolicy"); series of policies no local pod uses are removed', labelNames: ['policy_namespace', 'policy', 'verdict'], registers });
    this.dropLogLost = new Counter({ name: 'palisade_drop_log_lost_total', help: 'denied connections that got no record: held back by the rate limits, or missed by the reader', labelNames: ['reason'], registers });
    for (const reason of ['rate-limit', 'reader']) this.dropLogLost.inc({ reason }, 0);
    this.dropLogReaderUp = new Gauge({ name: 'palisade_drop_log_reader_up', help: '1 while the drop log\'s NFLOG reader runs (0 when it failed or the drop log is off)', registers });
    this.startupTaintPresent = new Gauge({ name: 'palisade_startup_taint_present', help: '1 while this node carries the startup taint (--startup-taint): new pods without a toleration stay off it', registers });
    this.startupTaintRemovals = new Counter({ name: 'palisade_startup_taint_removals_total', help: 'attempts to remove the startup taint from this node, by outcome: removed, conflict (the node changed meanwhile; read again) or error (retried with backoff)', labelNames: ['outcome'], registers });
    for (const outcome of ['removed', 'conflict', 'error']) this.startupTaintRemovals.inc({ outcome }, 0);
    this.dropLogEnabled = new Gauge({ name: 'palisade_drop_log_enabled', help: '1 when the drop log is on (--drop-log on), so a reader that is down can be told from one that is off', registers });
    this.policyReporterLeader = new Gauge({ name: 'palisade_policy_reporter_leader', help: '1 while this daemon holds the policy reporter Lease and reports NetworkPolicies palisade cannot fully enforce as Events', registers });
    this.policyEvents = new Counter({ name: 'palisade_policy_events_total', help: 'Events this daemon created about NetworkPolicies it cannot fully enforce, by reason', labelNames: ['reason'], registers });
    for (const reason of POLICY_EVENT_REASONS) this.policyEvents.inc({ reason }, 0);
    this.clusterPolicies = new Gauge({ name: 'palisade_cluster_network_policies', help: 'ClusterNetworkPolicies known to this daemon, by tier (Admin, Baseline); 0 while the API server does not serve them', labelNames: ['tier'], registers });
    for (const tier of CLUSTER_TIERS) this.clusterPolicies.set({ tier }, 0);
    this.clusterPoliciesServed = new Gauge({ name: 'palisade_cluster_network_policies_served', help: '1 while the API server serves ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2: their CRD is installed) and palisade watches them', registers });
    this.clusterPolicyConditions = new Counter({ name: 'palisade_cluster_network_policy_conditions_total', help: 'Accepted conditions this daemon wrote on ClusterNetworkPolicies as the policy reporter, by reason', labelNames: ['reason'], registers });
    for (const reason of ['Accepted', 'Invalid', 'PartiallySupported']) this.clusterPolicyConditions.inc({ reason }, 0);
    collectDefaultMetrics({ register: this.registry });
  }

  observeClusterPolicies(policies: readonly ClusterPolicyRecord[]): void {
    for (const tier of CLUSTER_TIERS) this.clusterPolicies.set({ tier }, policies.filter((p) => p.tier === tier).length);
  }

  observeNode(findings: NodeFindings): void {
    this.enforcementRefused.set({ reason: 'kube-proxy-ipvs' }, findings.refusal?.reason === 'kube-proxy-ipvs' ? 1 : 0);
    this.unenforcedPodRoutes.set(findings.unenforced.length);
  }

  observeDataplane(dataplane: Dataplane): void {
    let rules = dataplane.hooks.length;
    for (const chain of dataplane.chains.values()) rules += chain.rules.length;
    let members = 0;
    for (const set of dataplane.ipsets.values()) members += set.members.size;
    this.rules.set({ table: POLICY_TABLE }, rules);
    this.chains.set({ table: POLICY_TABLE }, dataplane.chains.size);
    this.ipsets.set(dataplane.ipsets.size);
    this.ipselectorPods.set(members);
    this.localEndpoints.set(dataplane.endpoints.length);
  }

  /** One series per policy over budget: few, and gone as soon as the policy is fixed or deleted. */
  observeOverBudget(policies: readonly PolicyRecord[], overMembers: ReadonlyMap<string, number> = new Map()): void {
    this.policiesOverBudget.reset();
    for (const p of policies) if (p.overBudget) this.policiesOverBudget.set({ policy_namespace: p.namespace, policy: p.name }, 1);
    for (const key of overMembers.keys()) {
      const slash = key.indexOf('/');
      this.policiesOverBudget.set({ policy_namespace: key.slice(0, slash), policy: key.slice(slash + 1) }, 1);
    }
  }

  /**
   * Adds what the drop rules counted since the last read; a lower reading means the chain was rewritten.
   * Every local pod has its series from the start, isolated or not. Series of pods that left the node
   * are removed, so pod churn cannot grow the metrics without bound.
   */
  observeDrops(counters: readonly DropCounters[]): void {
    const present = new Set<string>();
    for (const pod of counters) for (const direction of ['ingress', 'egress'] as const) present.add(`${pod.namespace}/${pod.name}/${direction}`);
    for (const [key, labels] of this.dropLabels) {
      if (present.has(key)) continue;
      this.droppedPackets.remove(labels);
      this.droppedBytes.remove(labels);
      this.dropLabels.delete(key);
      this.lastDrops.delete(key);
    }
    for (const pod of counters) {
      for (const direction of ['ingress', 'egress'] as const) {
        const now = pod[direction];
        const key = `${pod.namespace}/${pod.name}/${direction}`;
        const labels = { namespace: pod.namespace, pod: pod.name, direction };
        this.dropLabels.set(key, labels);
        if (now === null) {
          // Not isolated (no drop rule): the series is there at 0 all the same, so the first drops once
          // a policy isolates the pod are an increase rate() sees, not the value a new series starts
          // with. A drop rule made later starts counting from 0.
          this.droppedPackets.inc(labels, 0);
          this.droppedBytes.inc(labels, 0);
          this.lastDrops.delete(key);
          continue;
        }
        const before = this.lastDrops.get(key);
        const reset = before === undefined || now.packets < before.packets || now.bytes < before.bytes;
        this.droppedPackets.inc(labels, reset ? now.packets : now.packets - before.packets);
        this.droppedBytes.inc(labels, reset ? now.bytes : now.bytes - before.bytes);
        this.lastDrops.set(key, now);
      }
    }
  }

  /** The drop log's counting, as daemon/drop-log.ts calls it. */
  readonly dropLog: DropLogMetrics = {
    denied: (record) => {
      this.deniedConnections.inc({ direction: record.direction, verdict: record.verdict });
      const cluster = record.clusterPolicy === undefined ? [] : [`ClusterNetworkPolicy/${record.clusterPolicy.name}`];
      for (const key of [...record.policies, ...cluster]) {
        const slash = key.indexOf('/');
        const labels = { policy_namespace: key.slice(0, slash), policy: key.slice(slash + 1), verdict: record.verdict };
        this.policySeries.set(`${key}|${record.verdict}`, labels);
        this.policyDeniedConnections.inc(labels);
      }
    },
    lost: (reason, count) => this.dropLogLost.inc({ reason }, count),
    policiesInUse: (policies) => {
      for (const [key, labels] of this.policySeries) {
        if (policies.has(`${labels.policy_namespace}/${labels.policy}`)) continue;
        this.policyDeniedConnections.remove(labels);
        this.policySeries.delete(key);
      }
    },
  };

  /** Publishes what the API client counted since the last read (it counts; the registry is here). */
  observeUnauthorized(counts: Readonly<UnauthorizedCounts>): void {
    for (const outcome of ['recovered', 'refused'] as const) {
      const increase = counts[outcome] - this.lastUnauthorized[outcome];
      if (increase > 0) this.apiUnauthorized.inc({ outcome }, increase);
    }
    this.lastUnauthorized = { ...counts };
  }
}
