import { createHash } from 'node:crypto';
import type { Problem } from '../rules/problems.js';
import { microTime } from '../lib/kube/leases.js';

/**
 * What the policy reporter tells the API server, as data: which NetworkPolicies palisade cannot fully
 * enforce, from the problems the cluster cache keeps per object, and the core/v1 Event for each. No
 * I/O and no clock here (the time is an argument); policy-reporter.ts sends them.
 *
 * core/v1, not events.k8s.io/v1: `kubectl describe` lists core/v1 Events by the field selector
 * involvedObject.{name,namespace,kind,uid}, and both APIs are one store, so the same Events show in
 * `kubectl get events` and `kubectl events` too.
 *
 * One Event per policy, generation and reason, under a name derived from those three (and the
 * policy's uid). The name is what makes it once for the whole cluster: when a second reporter (a new
 * leader, or an old one that has not noticed it lost) creates the same Event, the API server refuses
 * it with 409 AlreadyExists, which counts as reported.
 */

export const POLICY_EVENT_REASONS = ['PolicyNotFullyEnforced', 'PolicyPartlyIgnored'] as const;
export type PolicyEventReason = (typeof POLICY_EVENT_REASONS)[number];

export const REPORTING_CONTROLLER = 'palisade.io/policy-reporter';
/** On each Event: the generation (or resourceVersion) it reports, for `kubectl get events -o yaml` and for reading back. */
export const VERSION_ANNOTATION = 'palisade.io/policy-version';

/** Which version of a policy a report is about: its generation, or its resourceVersion where it has none. */
export interface PolicyVersion {
  readonly uid: string;
  /** "generation 3", or "resourceVersion 1234" when the object has no metadata.generation. */
  readonly version: string;
}

export interface PolicyReport {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly version: string;
  readonly reason: PolicyEventReason;
  /** "field: message", one per problem. */
  readonly problems: readonly string[];
}

/** The identity of a report: a policy gets one Event per value of this. */
export function reportKey(report: Pick<PolicyReport, 'uid' | 'version' | 'reason'>): string {
  return `${report.uid}|${report.version}|${report.reason}`;
}

/** The version of a raw object: metadata.generation, else metadata.resourceVersion; null without a uid. */
export function policyVersionOf(metadata: Record<string, unknown> | undefined): PolicyVersion | null {
  const uid = metadata?.['uid'];
  if (typeof uid !== 'string' || uid === '') return null;
  const generation = metadata?.['generation'];
  if (typeof generation === 'number' && Number.isInteger(generation) && generation > 0) return { uid, version: `generation ${generation}` };
  const rv = metadata?.['resourceVersion'];
  return typeof rv === 'string' && rv !== '' ? { uid, version: `resourceVersion ${rv}` } : null;
}

/**
 * The reports due now: a policy with an error problem (invalid, over budget, not handled) is not fully
 * enforced; one with only warnings (IPv6 peers) is partly ignored. Policies whose version is not known
 * are left out. Sorted by namespace and name.
 */
export function policyReports(problems: readonly Problem[], versions: ReadonlyMap<string, PolicyVersion>): PolicyReport[] {
  const byPolicy = new Map<string, Problem[]>();
  for (const problem of problems) {
    if (problem.object.kind !== 'NetworkPolicy' || problem.object.namespace === null) continue;
    const key = `${problem.object.namespace}/${problem.object.name}`;
    const list = byPolicy.get(key) ?? [];
    list.push(problem);
    byPolicy.set(key, list);
  }
  const reports: PolicyReport[] = [];
  for (const [key, list] of [...byPolicy].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const version = versions.get(key);
    if (version === undefined) continue;
    const errors = list.filter((p) => p.severity === 'error');
    const chosen = errors.length > 0 ? errors : list;
    const { namespace, name } = list[0]!.object;
    reports.push({
      namespace: namespace!,
      name,
      uid: version.uid,
      version: version.version,
      reason: errors.length > 0 ? 'PolicyNotFullyEnforced' : 'PolicyPartlyIgnored',
      problems: [...new Set(chosen.map((p) => (p.field === '' ? p.message : `${p.field}: ${p.message}`)))],
    });
  }
  return reports;
}

/** The API server's limit on an Event's message (NoteLengthLimit). */
const MESSAGE_LIMIT = 1024;
/** ReportingInstanceLengthLimit. */
const INSTANCE_LIMIT = 128;

export function eventMessage(report: PolicyReport): string {
  const why = report.problems.join('; ');
  const text = report.reason === 'PolicyNotFullyEnforced'
    ? `palisade cannot enforce this policy (${report.version}), so it isolates what it selects and grants nothing: ${why}`
    : `palisade enforces this policy (${report.version}) without the parts it cannot use: ${why}`;
  return text.length <= MESSAGE_LIMIT ? text : `${text.slice(0, MESSAGE_LIMIT - 1)}…`;
}

/**
 * A DNS subdomain of at most 253 characters: the policy's name (cut short if need be) and a hash of
 * the policy's uid, version and the reason.
 */
export function eventName(report: PolicyReport): string {
  const hash = createHash('sha256').update(reportKey(report)).digest('hex').slice(0, 16);
  const base = report.name.slice(0, 253 - hash.length - 1).replace(/[^a-z0-9]+$/, '');
  return `${base === '' ? 'policy' : base}.${hash}`;
}

export interface Reporter {
  /** reportingInstance and holderIdentity: the pod's name and node. */
  readonly instance: string;
  readonly node: string;
}

export function policyEvent(report: PolicyReport, reporter: Reporter, nowMs: number): Record<string, unknown> {
  const seconds = new Date(Math.floor(nowMs / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: eventName(report), namespace: report.namespace, annotations: { [VERSION_ANNOTATION]: report.version } },
    involvedObject: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', namespace: report.namespace, name: report.name, uid: report.uid },
    type: 'Warning',
    reason: report.reason,
    message: eventMessage(report),
    action: 'Enforce',
    source: { component: 'palisade', host: reporter.node },
    reportingComponent: REPORTING_CONTROLLER,
    reportingInstance: reporter.instance.slice(0, INSTANCE_LIMIT),
    eventTime: microTime(nowMs),
    firstTimestamp: seconds,
    lastTimestamp: seconds,
    count: 1,
  };
}
