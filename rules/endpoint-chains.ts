import type { Chain, Rule } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { CompilerSettings } from './settings.js';

/**
 * Each local pod gets two chains. The `from` chain sees what the pod sends: anti-spoofing first
 * (ingress rules elsewhere trust source addresses), then traffic to its own node passes, then its
 * egress policies. The `to` chain sees what the pod receives: its ingress policies. An isolated chain
 * ends with a counted drop, whose packet counter is the pod's dropped traffic in that direction.
 */

export interface EndpointPolicies {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  /** Policy chains in evaluation order; empty with isolated=false means "not isolated". */
  readonly ingress: { readonly isolated: boolean; readonly chains: readonly { chain: string; policy: string }[] };
  readonly egress: { readonly isolated: boolean; readonly chains: readonly { chain: string; policy: string }[] };
}

export const DROP_COMMENT = { ingress: 'drop ingress', egress: 'drop egress' } as const;

function markHex(mark: number): string {
  return `0x${mark.toString(16)}`;
}

function policyRules(chains: EndpointPolicies['ingress']['chains'], mark: number): Rule[] {
  const bit = markHex(mark);
  const rules: Rule[] = [{ match: [], target: ['-j', 'MARK', '--set-xmark', `0x0/${bit}`], comment: 'clear allow mark' }];
  for (const { chain, policy } of chains) {
    rules.push({ match: [], target: ['-j', chain], comment: sanitizeComment(`policy ${policy}`) });
    rules.push({ match: ['-m', 'mark', '--mark', `${bit}/${bit}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`allowed by ${policy}`) });
  }
  return rules;
}

export function buildEndpointChains(endpoint: EndpointPolicies, names: Names, settings: CompilerSettings): { from: Chain; to: Chain } {
  const who = `${endpoint.namespace}/${endpoint.name}`;
  const from: Rule[] = [
    { match: ['!', '-s', `${endpoint.ip}/32`], target: ['-j', 'DROP'], comment: sanitizeComment(`anti-spoof ${who}`) },
    { match: ['-m', 'addrtype', '--dst-type', 'LOCAL'], target: ['-j', 'RETURN'], comment: 'pod to its own node is always allowed' },
  ];
  if (endpoint.egress.isolated) {
    from.push(...policyRules(endpoint.egress.chains, settings.allowMark));
    from.push({ match: [], target: ['-j', 'DROP'], comment: sanitizeComment(`${DROP_COMMENT.egress} ${who}`) });
  }
  const to: Rule[] = [];
  if (endpoint.ingress.isolated) {
    to.push(...policyRules(endpoint.ingress.chains, settings.allowMark));
    to.push({ match: [], target: ['-j', 'DROP'], comment: sanitizeComment(`${DROP_COMMENT.ingress} ${who}`) });
  }
  return {
    from: { name: names.endpoint('from', endpoint.namespace, endpoint.name), rules: from },
    to: { name: names.endpoint('to', endpoint.namespace, endpoint.name), rules: to },
  };
}

/** The allow chain: policies goto it, so after setting the mark control returns to the endpoint chain. */
export function buildAllowChain(names: Names, settings: CompilerSettings): Chain {
  const bit = markHex(settings.allowMark);
  return { name: names.allow(), rules: [{ match: [], target: ['-j', 'MARK', '--set-xmark', `${bit}/${bit}`], comment: 'allowed by policy' }] };
}
