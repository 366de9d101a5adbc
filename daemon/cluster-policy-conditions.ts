import type { ClusterPolicyRecord } from '../rules/model.js';
import type { Problem } from '../rules/problems.js';
import type { ClusterPolicyObject } from './cluster-cache.js';

/**
 * The condition palisade writes on each ClusterNetworkPolicy, as data: what it should say, whether the
 * object says it already, and the JSON patch that makes it say it. No I/O and no clock here (the time
 * is an argument); cluster-policy-status-writer.ts sends the patches.
 *
 * The API (network-policy-api v1alpha2) gives the status a list of metav1.Condition keyed by type and
 * leaves their meaning to implementations; `Accepted` is the type name Kubernetes' policy-like APIs
 * use for "the implementation took it as written" (Gateway API's routes and policies):
 *   True,  Accepted:           every rule is understood.
 *   False, Invalid:            palisade cannot read the policy; it fails closed whole (each direction it
 *                              declares denies everything to its subject, or to every pod).
 *   False, PartiallySupported: some rules cannot be honoured (a peer of a newer CRD, domainNames);
 *                              each fails closed as the API prescribes, the rest stands.
 * Conditions of other types (another implementation's) are kept as they are.
 */

export const ACCEPTED = 'Accepted';
export type AcceptedReason = 'Accepted' | 'Invalid' | 'PartiallySupported';

/** A metav1.Condition without lastTransitionTime, which depends on what the object said before. */
export interface DesiredCondition {
  readonly type: typeof ACCEPTED;
  readonly status: 'True' | 'False';
  readonly reason: AcceptedReason;
  readonly message: string;
  readonly observedGeneration: number;
}

/** One ClusterNetworkPolicy: what its status says now and what palisade would have it say. */
export interface ConditionReport {
  readonly object: ClusterPolicyObject;
  readonly desired: DesiredCondition;
}

/** metav1.Condition's limit on message is 32768; a condition is read in `kubectl get -o wide` and describe. */
const MESSAGE_LIMIT = 2048;

function problemText(problem: Problem): string {
  return problem.field === '' ? problem.message : `${problem.field}: ${problem.message}`;
}

export function desiredCondition(record: ClusterPolicyRecord, problems: readonly Problem[], generation: number): DesiredCondition {
  const errors = problems.filter((p) => p.severity === 'error');
  const warnings = problems.filter((p) => p.severity === 'warning');
  let status: 'True' | 'False' = 'True';
  let reason: AcceptedReason = 'Accepted';
  let message = `palisade accepts this ClusterNetworkPolicy as written (generation ${generation})`;
  if (record.failed || errors.length > 0) {
    status = 'False';
    reason = 'Invalid';
    const why = [...new Set((errors.length > 0 ? errors : problems).map(problemText))].join('; ');
    message = `palisade cannot use this ClusterNetworkPolicy (generation ${generation}), so it denies all traffic of each direction it declares to what it selects: ${why === '' ? 'invalid' : why}`;
  } else if (warnings.length > 0 || [...record.ingress, ...record.egress].some((r) => r.failClosed !== null)) {
    status = 'False';
    reason = 'PartiallySupported';
    const why = [...new Set(warnings.map(problemText))].join('; ');
    message = `palisade enforces this ClusterNetworkPolicy (generation ${generation}) with the rules it cannot honour failing closed (Accept rules match nothing; Deny and Pass rules deny everything): ${why}`;
  }
  return { type: ACCEPTED, status, reason, message: message.length <= MESSAGE_LIMIT ? message : `${message.slice(0, MESSAGE_LIMIT - 1)}…`, observedGeneration: generation };
}

function conditionsOf(status: ClusterPolicyObject['status']): Record<string, unknown>[] {
  const list = status?.['conditions'];
  return Array.isArray(list) ? list.filter((c): c is Record<string, unknown> => typeof c === 'object' && c !== null && !Array.isArray(c)) : [];
}

/** The object's Accepted condition as it stands, or null. */
export function currentCondition(object: ClusterPolicyObject): Record<string, unknown> | null {
  return conditionsOf(object.status).find((c) => c['type'] === ACCEPTED) ?? null;
}

/** Whether the object says what palisade would have it say (lastTransitionTime aside). */
export function saysAlready(object: ClusterPolicyObject, desired: DesiredCondition): boolean {
  const current = currentCondition(object);
  return current !== null && current['status'] === desired.status && current['reason'] === desired.reason
    && current['message'] === desired.message && current['observedGeneration'] === desired.observedGeneration;
}

/**
 * The reports for every ClusterNetworkPolicy the cache knows, sorted by name. Objects without a
 * generation are left out: a condition must say which generation it observed.
 */
export function conditionReports(objects: ReadonlyMap<string, ClusterPolicyObject>, records: readonly ClusterPolicyRecord[], problems: readonly Problem[]): ConditionReport[] {
  const byName = new Map(records.map((r) => [r.name, r]));
  const reports: ConditionReport[] = [];
  for (const object of [...objects.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const record = byName.get(object.name);
    if (record === undefined || object.generation === null) continue;
    const own = problems.filter((p) => p.object.kind === 'ClusterNetworkPolicy' && p.object.name === object.name);
    reports.push({ object, desired: desiredCondition(record, own, object.generation) });
  }
  return reports;
}

function timestamp(nowMs: number): string {
  return new Date(Math.floor(nowMs / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * An RFC 6902 JSON patch for the status subresource: the resourceVersion the report was made from is
 * tested first, so a status someone else wrote since is never overwritten (the API server answers 422
 * or 409, and the next report is made from the newer object). Other conditions are kept in place;
 * lastTransitionTime moves only when the status changes.
 */
export function statusPatch(report: ConditionReport, nowMs: number): readonly Record<string, unknown>[] {
  const { object, desired } = report;
  const current = currentCondition(object);
  const since = current !== null && current['status'] === desired.status && typeof current['lastTransitionTime'] === 'string' ? current['lastTransitionTime'] : timestamp(nowMs);
  const condition = { ...desired, lastTransitionTime: since };
  const conditions = conditionsOf(object.status);
  const at = conditions.findIndex((c) => c['type'] === ACCEPTED);
  const next = at < 0 ? [...conditions, condition] : conditions.map((c, i) => (i === at ? condition : c));
  return [
    { op: 'test', path: '/metadata/resourceVersion', value: object.resourceVersion },
    { op: 'add', path: '/status', value: { ...(object.status ?? {}), conditions: next } },
  ];
}
