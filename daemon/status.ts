import type { Dataplane, EndpointInfo } from '../rules/dataplane.js';
import type { Problem } from '../rules/problems.js';
import { formatObjectRef } from '../rules/problems.js';
import type { ClusterPolicyRecord, PolicyRecord } from '../rules/model.js';
import type { DropCounters } from '../lib/dataplane/applier.js';
import type { ReflectorStats } from '../lib/kube/reflector.js';
import type { NodeNetwork } from '../lib/node-network.js';
import type { NodeFindings } from './node-checks.js';
import type { DropLogSettings } from '../rules/settings.js';
import type { StartupTaintStatus } from './taint-remover.js';
import type { ReporterStatus } from './policy-reporter.js';
import type { ClusterPolicyDiscoveryStatus } from './cluster-policy-watch.js';
import type { ConditionWriterStatus } from './cluster-policy-status-writer.js';

/**
 * The status document served at /status, built by a pure function from the daemon's state so it can
 * be tested without a server; the HTTP layer only serialises it.
 */

export interface SyncState {
  readonly lastAttemptAt: number | null;
  readonly lastSuccessAt: number | null;
  readonly lastDurationMs: number | null;
  readonly lastError: string | null;
  readonly consecutiveFailures: number;
  readonly pendingChanges: boolean;
}

export interface DaemonState {
  readonly node: string;
  readonly backend: { readonly name: string; readonly reason: string } | null;
  readonly interfacePrefixes: readonly string[];
  readonly chainPrefix: string;
  readonly ready: boolean;
  readonly readyReason: string;
  readonly sync: SyncState;
  readonly watches: readonly ({ readonly resource: string; readonly synced: boolean } & ReflectorStats)[];
  readonly dataplane: Dataplane | null;
  readonly drops: readonly DropCounters[];
  readonly policies: readonly PolicyRecord[];
  /** Policies installed closed because their selector peers name too many pods, with how many. */
  readonly selectorPodsOverBudget: ReadonlyMap<string, number>;
  readonly problems: readonly Problem[];
  readonly counts: { readonly pods: number; readonly namespaces: number; readonly policies: number };
  readonly repairs: ReadonlyMap<string, number>;
  /** The node's network as last read; null before the first read. */
  readonly nodeNetwork: NodeNetwork | null;
  readonly findings: NodeFindings;
  readonly dropLog: {
    readonly enabled: boolean;
    readonly settings: DropLogSettings | null;
    readonly readerRunning: boolean;
    readonly readerError: string | null;
    readonly buffer: number;
    readonly lost: number;
  };
  /** The startup taint's removal from this node; null with --startup-taint none. */
  readonly startupTaint: StartupTaintStatus | null;
  /** The policy reporter's election and Events; null when --policy-events is off. */
  readonly policyReporter: ReporterStatus | null;
  /** ClusterNetworkPolicies known (none while the API server does not serve them). */
  readonly clusterPolicies: readonly ClusterPolicyRecord[];
  readonly clusterPolicyDiscovery: ClusterPolicyDiscoveryStatus;
  /** The Accepted conditions' writer; null when --policy-events is off. */
  readonly clusterPolicyConditions: ConditionWriterStatus | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function endpointStatus(endpoint: EndpointInfo, drops: DropCounters | undefined) {
  return {
    namespace: endpoint.namespace,
    name: endpoint.name,
    ip: endpoint.ip,
    interfaces: endpoint.interfaces,
    ...(endpoint.extraInterfaces.length === 0 ? {} : { extraInterfaces: endpoint.extraInterfaces }),
    isolated: { ingress: endpoint.isolatedIngress, egress: endpoint.isolatedEgress },
    policies: { ingress: endpoint.ingressPolicies, egress: endpoint.egressPolicies },
    // Those whose subject selects the pod, Admin tier first, each tier in walk order (priority, then name).
    clusterNetworkPolicies: { ingress: endpoint.ingressClusterPolicies, egress: endpoint.egressClusterPolicies },
    ...(endpoint.ingressAudit.length + endpoint.egressAudit.length === 0 ? {} : {
      // Audit policies isolate nothing; "wouldDeny" says where they are logging would-deny records now.
      auditPolicies: { ingress: endpoint.ingressAudit, egress: endpoint.egressAudit },
      wouldDeny: { ingress: endpoint.ingressLog?.verdict === 'would-deny', egress: endpoint.egressLog?.verdict === 'would-deny' },
    }),
    chains: { ingress: endpoint.toChain, egress: endpoint.fromChain },
    dropped: { ingress: drops?.ingress ?? null, egress: drops?.egress ?? null },
  };
}

export function buildStatus(state: DaemonState) {
  const dataplane = state.dataplane;
  const drops = new Map(state.drops.map((d) => [`${d.namespace}/${d.name}`, d]));
  let rules = 0;
  let members = 0;
  for (const chain of dataplane?.chains.values() ?? []) rules += chain.rules.length;
  for (const set of dataplane?.ipsets.values() ?? []) members += set.members.size;
  return {
    node: state.node,
    ready: state.ready,
    readyReason: state.readyReason,
    backend: state.backend,
    interfacePrefixes: state.interfacePrefixes,
    chainPrefix: state.chainPrefix,
    sync: {
      lastAttempt: iso(state.sync.lastAttemptAt),
      lastSuccess: iso(state.sync.lastSuccessAt),
      lastDurationMs: state.sync.lastDurationMs,
      lastError: state.sync.lastError,
      consecutiveFailures: state.sync.consecutiveFailures,
      pendingChanges: state.sync.pendingChanges,
    },
    watches: state.watches,
    counts: {
      ...state.counts,
      localEndpoints: dataplane?.endpoints.length ?? 0,
      chains: dataplane?.chains.size ?? 0,
      rules: rules + (dataplane?.hooks.length ?? 0),
      ipsets: dataplane?.ipsets.size ?? 0,
      ipselectorPods: members,
    },
    driftRepairs: Object.fromEntries(state.repairs),
    nodeNetwork: {
      read: state.nodeNetwork !== null,
      localAddresses: state.nodeNetwork?.localAddresses ?? [],
      refusal: state.findings.refusal,
      unenforcedPodRoutes: state.findings.unenforced,
    },
    dropLog: {
      enabled: state.dropLog.enabled,
      ...(state.dropLog.settings === null ? {} : { nflogGroup: state.dropLog.settings.group, ratePerSecond: state.dropLog.settings.rate, burst: state.dropLog.settings.burst }),
      reader: { running: state.dropLog.readerRunning, error: state.dropLog.readerError },
      buffer: state.dropLog.buffer,
      lost: state.dropLog.lost,
    },
    startupTaint: state.startupTaint === null ? { enabled: false as const } : { enabled: true as const, ...state.startupTaint },
    policyReporter: state.policyReporter === null ? { enabled: false } : {
      enabled: true,
      // Whether this daemon is the one writing Events about policies, and who is when it is not.
      reporter: state.policyReporter.leader,
      identity: state.policyReporter.identity,
      lease: state.policyReporter.lease,
      leaseHolder: state.policyReporter.holder,
      reported: state.policyReporter.reported,
      pending: state.policyReporter.pending,
      leaseError: state.policyReporter.lastError,
      eventError: state.policyReporter.lastWriteError,
    },
    clusterNetworkPolicies: {
      // null until discovery first answers; false on a cluster without the CRD, which runs as without any.
      served: state.clusterPolicyDiscovery.served,
      count: state.clusterPolicies.length,
      byTier: { Admin: state.clusterPolicies.filter((p) => p.tier === 'Admin').length, Baseline: state.clusterPolicies.filter((p) => p.tier === 'Baseline').length },
      failed: state.clusterPolicies.filter((p) => p.failed).map((p) => p.name),
      discovery: {
        lastCheck: iso(state.clusterPolicyDiscovery.lastCheckAt),
        intervalSeconds: state.clusterPolicyDiscovery.intervalMs / 1000,
        error: state.clusterPolicyDiscovery.lastError,
      },
      conditions: state.clusterPolicyConditions === null ? { enabled: false } : { enabled: true, ...state.clusterPolicyConditions },
    },
    auditPolicies: state.policies.filter((p) => p.audit).map((p) => `${p.namespace}/${p.name}`),
    endpoints: (dataplane?.endpoints ?? []).map((e) => endpointStatus(e, drops.get(`${e.namespace}/${e.name}`))),
    failedPolicies: state.policies.filter((p) => p.failed || state.selectorPodsOverBudget.has(`${p.namespace}/${p.name}`)).map((p) => ({
      policy: `${p.namespace}/${p.name}`,
      why: state.problems.filter((q) => q.object.kind === 'NetworkPolicy' && q.object.namespace === p.namespace && q.object.name === p.name && q.severity === 'error').map((q) => `${q.field}: ${q.message}`),
    })),
    problems: state.problems.map((p) => ({ severity: p.severity, object: formatObjectRef(p.object), field: p.field, message: p.message })),
  };
}
