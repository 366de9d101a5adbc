import type { ClusterPolicyRecord, ClusterTier, Direction } from './model.js';
import type { Rule } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { DropLogSettings } from './settings.js';
import { podDropLogLimit } from './settings.js';

/**
 * The kernel side of the drop log. Ahead of a pod's isolation drop (or, for a direction only audit
 * policies select, where that drop would be) one rule sends the packet to NFLOG, limited first per
 * pod and direction (`limit`, one bucket per rule) and then per node (`hashlimit` with no mode: one
 * bucket that every such rule shares by name). Only a connection's first packet gets this far:
 * palisade's entry chains return established and related traffic before any pod chain.
 *
 * The prefix says who refused and why in a form the daemon looks up (DropLogSource); nothing a
 * tenant names reaches it except through a hash.
 */

export type DropVerdict = 'denied' | 'would-deny';

/** What one drop-log prefix stands for: the pod whose isolation refused, the side, and the policies. */
export interface DropLogSource {
  readonly prefix: string;
  readonly verdict: DropVerdict;
  readonly direction: Direction;
  readonly namespace: string;
  readonly pod: string;
  /** "namespace/name" of the policies isolating the pod in that direction (audit ones for would-deny). */
  readonly policies: readonly string[];
}

/** Comments of the rules whose packet counters the daemon reads: logged, and reached (denied or would-deny). */
export const LOG_COMMENT = { ingress: 'log ingress', egress: 'log egress' } as const;
export const WOULD_DENY_COMMENT = { ingress: 'would deny ingress', egress: 'would deny egress' } as const;

/** Room NFLOG copies for each packet: the IPv4 header with options and the transport ports. */
const COPY_BYTES = 128;

export function dropLogSource(names: Names, verdict: DropVerdict, direction: Direction, namespace: string, pod: string, policies: readonly string[]): DropLogSource {
  const identity = [verdict, direction, namespace, pod, ...policies].join('\u0000');
  return { prefix: names.dropLogPrefix(verdict, direction, identity), verdict, direction, namespace, pod, policies };
}

/**
 * What the NFLOG prefix of one ClusterNetworkPolicy Deny rule stands for. Its rules are shared by
 * every pod the policy selects, so the pod is not in the prefix: it is the packet's own address
 * (the source for egress, the destination for ingress).
 */
export interface ClusterDenyLog {
  readonly prefix: string;
  readonly direction: Direction;
  readonly tier: ClusterTier;
  readonly policy: string;
  readonly priority: number;
  readonly rule: number;
  /** The rule's name, '' when it has none. */
  readonly ruleName: string;
  /** The chain whose first rule logs and whose second sets the deny bit: their counters are logged and reached. */
  readonly chain: string;
}

export const CLUSTER_LOG_COMMENT = { ingress: 'log cnp ingress', egress: 'log cnp egress' } as const;

export function clusterDenyLog(names: Names, policy: ClusterPolicyRecord, direction: Direction, rule: number, ruleName: string): ClusterDenyLog {
  const identity = ['cnp', direction, policy.tier, policy.name, String(policy.priority), String(rule), ruleName].join('\u0000');
  return {
    prefix: names.clusterDropLogPrefix(direction, identity),
    direction,
    tier: policy.tier,
    policy: policy.name,
    priority: policy.priority,
    rule,
    ruleName,
    chain: names.clusterDeny(direction, policy.name, rule),
  };
}

/**
 * A Deny rule's log: each pod's share (the per-pod rate of podDropLogLimit) in a hashlimit bucket
 * keyed by the pod's address, then the node's shared bucket, the same one NetworkPolicy drops use.
 */
export function clusterDenyLogRule(log: ClusterDenyLog, names: Names, settings: DropLogSettings): Rule {
  const pod = podDropLogLimit(settings);
  return {
    match: [
      '-m', 'hashlimit', '--hashlimit-upto', `${pod.rate}/sec`, '--hashlimit-burst', String(pod.burst), '--hashlimit-mode', log.direction === 'ingress' ? 'dstip' : 'srcip', '--hashlimit-name', names.clusterDropLogLimit(log.direction, pod.rate, pod.burst),
      '-m', 'hashlimit', '--hashlimit-upto', `${settings.rate}/sec`, '--hashlimit-burst', String(settings.burst), '--hashlimit-name', names.dropLogLimit(settings.rate, settings.burst),
    ],
    target: ['-j', 'NFLOG', '--nflog-prefix', log.prefix, '--nflog-group', String(settings.group), '--nflog-size', String(COPY_BYTES)],
    comment: sanitizeComment(`${CLUSTER_LOG_COMMENT[log.direction]} ${log.tier.toLowerCase()} ${log.policy} rule ${log.rule}`),
  };
}

/** The rule that logs: limits first, so a flood costs the kernel a token check per packet and no more. */
export function dropLogRule(source: DropLogSource, names: Names, settings: DropLogSettings): Rule {
  const pod = podDropLogLimit(settings);
  return {
    match: [
      '-m', 'limit', '--limit', `${pod.rate}/sec`, '--limit-burst', String(pod.burst),
      '-m', 'hashlimit', '--hashlimit-upto', `${settings.rate}/sec`, '--hashlimit-burst', String(settings.burst), '--hashlimit-name', names.dropLogLimit(settings.rate, settings.burst),
    ],
    // In the order iptables-save prints the options, so the live rule reads back exactly as written.
    target: ['-j', 'NFLOG', '--nflog-prefix', source.prefix, '--nflog-group', String(settings.group), '--nflog-size', String(COPY_BYTES)],
    comment: sanitizeComment(`${LOG_COMMENT[source.direction]} ${source.namespace}/${source.pod}`),
  };
}
