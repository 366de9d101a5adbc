/** What one polling round observed, judged against a step's expectations: each check, ✔ or ✘, and its lines. */

import { reach } from './format.js';
import { dropsQuery, explainQuery, STATUS_ADDRESS } from './node-status.js';
import type { Counter, DropRecordView, ExplainAnswer, StatusDocument } from './node-status.js';
import { DEMO_NAMESPACE, DEMO_NODE, ECHO_PORT } from './script.js';
import type { DropExpectation, EndpointExpectation, ExplainExpectation, ReachabilityExpectation } from './script.js';

export interface CheckResult {
  readonly ok: boolean;
  /** Lines printed for it once the step is done; the first gets the ✔/✘ mark. */
  readonly lines: readonly string[];
}

/** `target` is the IP of the pod pinged; without ICMP ping the command is annotated as the TCP echo probe it stands for. */
export function reachabilityCheck(expected: ReachabilityExpectation, reachable: boolean, target: string, useIcmp: boolean): CheckResult {
  const how = useIcmp ? '' : `   # ping (TCP echo probe on port ${ECHO_PORT})`;
  return {
    ok: reachable === expected.reachable,
    lines: [`$ kubectl exec -it ${expected.from} -- ping -c3 ${target}${how}`, `${expected.from} → ${expected.to}: ${reach(reachable)} (expected ${reach(expected.reachable)})`],
  };
}

/** The command echo heading the detailed /status entries. */
export function statusCommandCheck(): CheckResult {
  return { ok: true, lines: [`$ curl -s ${STATUS_ADDRESS}/status   (on ${DEMO_NODE.name}; shown per pod)`] };
}

export function explainCheck(question: ExplainExpectation, answer: ExplainAnswer): CheckResult {
  const verdict = (allowed: boolean): string => (allowed ? 'allowed' : 'denied');
  const tiers = question.tiers;
  const tiersOk = tiers === undefined || (answer.egress.tier === tiers.egress && answer.ingress.tier === tiers.ingress);
  const tier = (side: ExplainAnswer['egress'], expected: string | undefined): string => {
    if (side.tier === undefined || side.tier === null) return '';
    return expected === undefined || expected === side.tier ? ` [${side.tier} tier]` : ` [${side.tier} tier, expected ${expected}]`;
  };
  return {
    ok: answer.allowed === question.allowed && tiersOk,
    lines: [
      `$ curl -s '${STATUS_ADDRESS}${explainQuery(question).shown}'`,
      `${question.from} → ${question.to} tcp/${ECHO_PORT}: ${verdict(answer.allowed)} (expected ${verdict(question.allowed)})`,
      `egress:  ${verdict(answer.egress.allowed)}${tier(answer.egress, tiers?.egress)}, ${answer.egress.reason}`,
      `ingress: ${verdict(answer.ingress.allowed)}${tier(answer.ingress, tiers?.ingress)}, ${answer.ingress.reason}`,
    ],
  };
}

/** The newest record of the expected refused connection, shown whole as /drops serves it. */
export function dropCheck(expected: DropExpectation, records: readonly DropRecordView[]): CheckResult {
  const refusing = expected.direction === 'egress' ? expected.from : expected.to;
  const found = records.find((r) => r.verdict === 'denied' && r.direction === expected.direction
    && r.source.namespace === DEMO_NAMESPACE && r.source.pod === expected.from
    && r.destination.namespace === DEMO_NAMESPACE && r.destination.pod === expected.to
    && [...r.policies].sort().join(',') === [...expected.policies].sort().join(',')
    && (r.clusterPolicy === undefined ? undefined : `${r.clusterPolicy.name}/${r.clusterPolicy.ruleName}`) === expected.clusterPolicy);
  const command = `$ curl -s '${STATUS_ADDRESS}${dropsQuery(refusing)}'`;
  const by = expected.clusterPolicy === undefined ? expected.policies.join(', ') : `ClusterNetworkPolicy ${expected.clusterPolicy}`;
  if (found === undefined) return { ok: false, lines: [command, `no record yet of ${expected.from} → ${expected.to} denied by ${expected.from === refusing ? 'its' : `${expected.to}'s`} ${expected.direction} (${by})`] };
  return { ok: true, lines: [command, JSON.stringify(found)] };
}

export function endpointCheck(expected: EndpointExpectation, status: StatusDocument, detailed: boolean): CheckResult {
  const ref = `${DEMO_NAMESPACE}/${expected.pod}`;
  const found = status.endpoints.find((e) => e.namespace === DEMO_NAMESPACE && e.name === expected.pod);
  if (found === undefined) return { ok: false, lines: [`/status ${ref}: not among the node's endpoints yet`] };
  const sorted = (list: readonly string[]): string => [...list].sort().join(',');
  const isolationOk = found.isolated.ingress === expected.isolated.ingress && found.isolated.egress === expected.isolated.egress;
  const policiesOk = sorted(found.policies.ingress) === sorted(expected.policies.ingress) && sorted(found.policies.egress) === sorted(expected.policies.egress);
  const dropsOk = (expected.droppedSome ?? []).every((direction) => (found.dropped[direction]?.packets ?? 0) > 0);
  const cluster = found.clusterNetworkPolicies ?? { ingress: [], egress: [] };
  const clusterOk = expected.clusterPolicies === undefined
    || (sorted(cluster.ingress) === sorted(expected.clusterPolicies.ingress) && sorted(cluster.egress) === sorted(expected.clusterPolicies.egress));
  const ok = isolationOk && policiesOk && dropsOk && clusterOk;
  const isolation = found.isolated.ingress || found.isolated.egress
    ? `isolated for ${[found.isolated.ingress ? 'ingress' : '', found.isolated.egress ? 'egress' : ''].filter((s) => s !== '').join(' and ')}`
    : 'not isolated';
  const dropped = (c: Counter | null): string => (c === null ? 'n/a' : `${c.packets} packet${c.packets === 1 ? '' : 's'}`);
  const list = (l: readonly string[]): string => (l.length === 0 ? '(none)' : l.join(', '));
  if (!detailed) {
    const by = found.policies.ingress.length + found.policies.egress.length === 0 ? '' : ` by ${list([...new Set([...found.policies.ingress, ...found.policies.egress])].sort())}`;
    const selecting = [...new Set([...cluster.ingress, ...cluster.egress])].sort();
    const tiers = expected.clusterPolicies === undefined && selecting.length === 0 ? '' : `; ClusterNetworkPolicies selecting it: ${list(selecting)}`;
    return { ok, lines: [`/status ${ref}: ${isolation}${by}${tiers}${ok ? '' : ' (not what was expected)'}`] };
  }
  const expectedDrops = (expected.droppedSome ?? []).map((d) => `${d} drops counted`).join(', ');
  return {
    ok,
    lines: [
      `${ref} (${found.ip}, host veth ${found.interfaces.join(', ')}): ${isolation}${ok ? '' : ' (not what was expected)'}`,
      `ingress: isolated ${found.isolated.ingress ? 'yes' : 'no'}, policies ${list(found.policies.ingress)}, dropped ${dropped(found.dropped.ingress)}`,
      `egress:  isolated ${found.isolated.egress ? 'yes' : 'no'}, policies ${list(found.policies.egress)}, dropped ${dropped(found.dropped.egress)}${expectedDrops === '' ? '' : `   (expected: ${expectedDrops})`}`,
    ],
  };
}

/** The daemon must be in sync for every step: null when it is, else the failed check saying why not. */
export function syncCheck(status: StatusDocument): CheckResult | null {
  const inSync = !status.sync.pendingChanges && status.sync.lastError === null && status.failedPolicies.length === 0;
  if (inSync) return null;
  const why = [status.sync.pendingChanges ? 'changes still pending' : '', status.sync.lastError ?? '', ...status.failedPolicies.map((f) => `${f.policy} failed: ${f.why.join('; ')}`)].filter((s) => s !== '');
  return { ok: false, lines: [`the daemon is in sync: ${why.join('; ')}`] };
}
