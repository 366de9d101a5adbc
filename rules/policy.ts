import type { Cidr, Direction, IpBlock, Peer, PolicyRecord, PolicyRule, PortSpec, Protocol } from './model.js';
import { AUDIT_ANNOTATION, AUDIT_VALUE, PROTOCOLS } from './model.js';
import { isRecord, readMeta, recordAt, refOf } from './object-fields.js';
import type { Parsed } from './namespace.js';
import { MATCH_ALL, parseSelector } from './selector.js';
import { cidrStrictlyInside, looksLikeIPv6, parseCidr } from './ipv4.js';
import { policyCost } from './policy-chains.js';
import { DEFAULT_POLICY_BUDGET, overBudget } from './policy-budget.js';
import type { TextBudget } from './policy-budget.js';
import type { ProblemSink } from './problems.js';

/**
 * networking.k8s.io/v1 NetworkPolicy to PolicyRecord, with the API's defaulting and validation.
 * An invalid policy still yields a record, marked failed: it keeps isolating what it selects and grants
 * nothing, so a typo can never open traffic.
 */

const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;

export function parsePolicy(object: Record<string, unknown>, budget: TextBudget = DEFAULT_POLICY_BUDGET): Parsed<PolicyRecord> {
  const sink = refOf('NetworkPolicy', object, true);
  const meta = readMeta(object, sink, true);
  if (meta.name === '') return { record: null, problems: sink.problems };
  const audit = parseAudit(object, sink);
  const spec = object['spec'];
  if (!isRecord(spec)) {
    sink.error('spec', 'a NetworkPolicy needs a spec object');
    return { record: failedPolicy(meta.namespace, meta.name, true, true, null, audit), problems: sink.problems };
  }
  for (const key of Object.keys(spec)) if (!SPEC_FIELDS.has(key)) sink.unknownField(`spec.${key}`, 'NetworkPolicy spec');
  const podSelector = parseSelector(spec['podSelector'], 'spec.podSelector', sink);
  const types = parsePolicyTypes(spec, sink);
  const ingress = parseRules(spec['ingress'], 'ingress', sink);
  const egress = parseRules(spec['egress'], 'egress', sink);
  if (sink.hasErrors) {
    return { record: failedPolicy(meta.namespace, meta.name, types.ingress, types.egress, podSelector, audit), problems: sink.problems };
  }
  const parsed: PolicyRecord = {
    namespace: meta.namespace,
    name: meta.name,
    podSelector: podSelector ?? MATCH_ALL,
    affectsIngress: types.ingress,
    affectsEgress: types.egress,
    ingress: types.ingress ? ingress : [],
    egress: types.egress ? egress : [],
    failed: false,
    cost: null,
    overBudget: false,
    audit,
  };
  const cost = policyCost(parsed);
  const over = overBudget(cost, budget);
  if (over.length > 0) {
    sink.error('spec', `over palisade's per-policy budget (${over.join('; ')}): the policy isolates what it selects and grants nothing; split it into smaller policies`);
    return { record: { ...failedPolicy(meta.namespace, meta.name, types.ingress, types.egress, podSelector, audit), cost, overBudget: true }, problems: sink.problems };
  }
  return { record: { ...parsed, cost }, problems: sink.problems };
}

const SPEC_FIELDS: ReadonlySet<string> = new Set(['podSelector', 'policyTypes', 'ingress', 'egress']);


/**
 * A failed policy isolates in every direction it declared (or would default to), and when even its
 * podSelector is unreadable it isolates every pod of its namespace: the closed side of the failure.
 */
function failedPolicy(namespace: string, name: string, ingress: boolean, egress: boolean, podSelector: PolicyRecord['podSelector'] | null, audit: boolean): PolicyRecord {
  return { namespace, name, podSelector: podSelector ?? MATCH_ALL, affectsIngress: ingress, affectsEgress: egress, ingress: [], egress: [], failed: true, cost: null, overBudget: false, audit };
}

/**
 * Only the exact value "true" stages a policy. Anything else leaves it enforced, with a warning: a
 * typo must never turn an enforced policy into one that drops nothing. (A failed audit policy stays an
 * audit policy: it fails closed as one, logging everything it selects as would-deny.)
 */
function parseAudit(object: Record<string, unknown>, sink: ProblemSink): boolean {
  const value = recordAt(recordAt(object, 'metadata'), 'annotations')[AUDIT_ANNOTATION];
  if (value === undefined) return false;
  if (value === AUDIT_VALUE) return true;
  sink.warn(`metadata.annotations.${AUDIT_ANNOTATION}`, `only "${AUDIT_VALUE}" makes this an audit policy; it is enforced`);
  return false;
}

/**
 * policyTypes defaulting as the API server does it: absent or empty means Ingress, plus Egress when
 * the egress list is non-empty (so `egress: []` alone does not isolate egress). A malformed egress
 * value counts as present, so a broken policy errs towards isolation.
 */
function parsePolicyTypes(spec: Record<string, unknown>, sink: ProblemSink): { ingress: boolean; egress: boolean } {
  const raw = spec['policyTypes'];
  if (raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) {
    const egress = spec['egress'];
    const hasEgress = egress !== undefined && egress !== null && !(Array.isArray(egress) && egress.length === 0);
    return { ingress: true, egress: hasEgress };
  }
  if (!Array.isArray(raw)) {
    sink.error('spec.policyTypes', 'policyTypes must be a list of "Ingress" and/or "Egress"');
    return { ingress: true, egress: true };
  }
  let ingress = false;
  let egress = false;
  raw.forEach((value: unknown, i) => {
    if (value === 'Ingress') ingress = true;
    else if (value === 'Egress') egress = true;
    else sink.error(`spec.policyTypes[${i}]`, `${JSON.stringify(value)} is not "Ingress" or "Egress"`);
  });
  return sink.hasErrors ? { ingress: true, egress: true } : { ingress, egress };
}

function parseRules(raw: unknown, direction: Direction, sink: ProblemSink): PolicyRule[] {
  const field = `spec.${direction}`;
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    const hint = isRecord(raw) && Object.keys(raw).length === 0 ? ` (to allow all ${direction}, write a list with one empty rule: "${direction}: [{}]")` : '';
    sink.error(field, `${direction} must be a list of rules${hint}`);
    return [];
  }
  const peersKey = direction === 'ingress' ? 'from' : 'to';
  const rules: PolicyRule[] = [];
  raw.forEach((item: unknown, i) => {
    const at = `${field}[${i}]`;
    if (!isRecord(item)) {
      sink.error(at, 'a rule must be an object with optional ports and ' + peersKey);
      return;
    }
    for (const key of Object.keys(item)) if (key !== peersKey && key !== 'ports') sink.unknownField(`${at}.${key}`, `${direction} rule`);
    const peers = parsePeers(item[peersKey], `${at}.${peersKey}`, sink);
    const ports = parsePorts(item['ports'], `${at}.ports`, sink);
    if (peers === 'ipv6') {
      sink.warn(`${at}.${peersKey}`, 'rule ignored: every peer is an IPv6 ipBlock, which IPv4 nodes cannot match; it allows nothing rather than everything');
      return;
    }
    // Invalid peers are errors already: the whole policy fails closed.
    if (peers === 'invalid') return;
    rules.push({ peers, ports });
  });
  return rules;
}

/**
 * Returns null for "any peer"; 'ipv6' when every listed peer was an IPv6 block (valid, but nothing an
 * IPv4 node can match); 'invalid' when a peer was invalid (an error, so the policy fails anyway).
 */
function parsePeers(raw: unknown, field: string, sink: ProblemSink): Peer[] | null | 'ipv6' | 'invalid' {
  if (raw === undefined || raw === null) return null;
  if (!Array.isArray(raw)) {
    sink.error(field, 'must be a list of peers');
    return 'invalid';
  }
  if (raw.length === 0) return null;
  const peers: Peer[] = [];
  let invalid = false;
  raw.forEach((item: unknown, i) => {
    const peer = parsePeer(item, `${field}[${i}]`, sink);
    if (peer === 'invalid') invalid = true;
    else if (peer !== 'ipv6') peers.push(peer);
  });
  if (peers.length > 0) return peers;
  return invalid ? 'invalid' : 'ipv6';
}

function parsePeer(raw: unknown, field: string, sink: ProblemSink): Peer | 'ipv6' | 'invalid' {
  if (!isRecord(raw)) {
    sink.error(field, 'a peer must be an object with podSelector, namespaceSelector or ipBlock');
    return 'invalid';
  }
  for (const key of Object.keys(raw)) {
    if (key !== 'podSelector' && key !== 'namespaceSelector' && key !== 'ipBlock') sink.unknownField(`${field}.${key}`, 'peer');
  }
  const has = (key: string): boolean => raw[key] !== undefined && raw[key] !== null;
  if (has('ipBlock')) {
    if (has('podSelector') || has('namespaceSelector')) {
      sink.error(field, 'ipBlock cannot be combined with podSelector or namespaceSelector in one peer');
      return 'invalid';
    }
    const ipBlock = parseIpBlock(raw['ipBlock'], `${field}.ipBlock`, sink);
    return typeof ipBlock === 'string' ? ipBlock : { kind: 'ipBlock', ipBlock };
  }
  if (!has('podSelector') && !has('namespaceSelector')) {
    sink.error(field, 'a peer must set podSelector, namespaceSelector or ipBlock');
    return 'invalid';
  }
  const podSelector = has('podSelector') ? parseSelector(raw['podSelector'], `${field}.podSelector`, sink) : MATCH_ALL;
  const namespaceSelector = has('namespaceSelector') ? parseSelector(raw['namespaceSelector'], `${field}.namespaceSelector`, sink) : null;
  if (podSelector === null || (has('namespaceSelector') && namespaceSelector === null)) return 'invalid';
  return { kind: 'pods', podSelector, namespaceSelector };
}

function parseIpBlock(raw: unknown, field: string, sink: ProblemSink): IpBlock | 'ipv6' | 'invalid' {
  if (!isRecord(raw) || typeof raw['cidr'] !== 'string') {
    sink.error(`${field}.cidr`, 'ipBlock needs a cidr string');
    return 'invalid';
  }
  for (const key of Object.keys(raw)) if (key !== 'cidr' && key !== 'except') sink.unknownField(`${field}.${key}`, 'ipBlock');
  if (looksLikeIPv6(raw['cidr'])) {
    sink.warn(`${field}.cidr`, `IPv6 CIDR ${raw['cidr']} ignored (IPv4 clusters only)`);
    return 'ipv6';
  }
  const parsed = parseCidr(raw['cidr']);
  if (!parsed.ok) {
    sink.error(`${field}.cidr`, parsed.reason);
    return 'invalid';
  }
  for (const note of parsed.notes) sink.warn(`${field}.cidr`, note);
  const except: Cidr[] = [];
  const rawExcept = raw['except'] ?? [];
  if (!Array.isArray(rawExcept)) {
    sink.error(`${field}.except`, 'except must be a list of CIDRs');
    return 'invalid';
  }
  let ok = true;
  rawExcept.forEach((text: unknown, i) => {
    const e = typeof text === 'string' ? parseCidr(text) : ({ ok: false, reason: 'not a string' } as const);
    if (!e.ok) {
      sink.error(`${field}.except[${i}]`, e.reason);
      ok = false;
      return;
    }
    for (const note of e.notes) sink.warn(`${field}.except[${i}]`, note);
    // As the API server checks it: the except's network lies in the CIDR and its prefix is longer.
    if (!cidrStrictlyInside(e.cidr, parsed.cidr)) {
      sink.error(`${field}.except[${i}]`, `${e.cidr.text} must be a strict subset of ${parsed.cidr.text}`);
      ok = false;
    } else except.push(e.cidr);
  });
  if (!ok) return 'invalid';
  const unique = [...new Map(except.map((c) => [c.text, c])).values()].sort((a, b) => a.base - b.base || a.prefix - b.prefix);
  return { cidr: parsed.cidr, except: unique };
}

function parsePorts(raw: unknown, field: string, sink: ProblemSink): PortSpec[] | null {
  if (raw === undefined || raw === null) return null;
  if (!Array.isArray(raw)) {
    sink.error(field, 'ports must be a list');
    return null;
  }
  if (raw.length === 0) return null;
  const ports: PortSpec[] = [];
  raw.forEach((item: unknown, i) => {
    const spec = parsePort(item, `${field}[${i}]`, sink);
    if (spec !== null) ports.push(spec);
  });
  return ports;
}

function parsePort(raw: unknown, field: string, sink: ProblemSink): PortSpec | null {
  if (!isRecord(raw)) {
    sink.error(field, 'a port must be an object with protocol, port and endPort');
    return null;
  }
  for (const key of Object.keys(raw)) if (key !== 'protocol' && key !== 'port' && key !== 'endPort') sink.unknownField(`${field}.${key}`, 'port');
  const protocol = raw['protocol'] ?? 'TCP';
  if (typeof protocol !== 'string' || !(PROTOCOLS as readonly string[]).includes(protocol)) {
    sink.error(`${field}.protocol`, `${JSON.stringify(protocol)} is not TCP, UDP or SCTP`);
    return null;
  }
  const proto = protocol as Protocol;
  const port = raw['port'];
  const endPort = raw['endPort'];
  if (port === undefined || port === null) {
    if (endPort !== undefined && endPort !== null) sink.error(`${field}.endPort`, 'endPort needs a numeric port');
    return { kind: 'any', protocol: proto };
  }
  if (typeof port === 'string') {
    if (!IANA_SVC_NAME.test(port)) {
      sink.error(`${field}.port`, `"${port}" is neither a port number nor a valid port name`);
      return null;
    }
    if (endPort !== undefined && endPort !== null) sink.error(`${field}.endPort`, 'endPort cannot be used with a named port');
    return { kind: 'named', protocol: proto, name: port };
  }
  if (!isPortNumber(port)) {
    sink.error(`${field}.port`, `${JSON.stringify(port)} is not a port number from 1 to 65535`);
    return null;
  }
  if (endPort === undefined || endPort === null) return { kind: 'number', protocol: proto, port, endPort: port };
  if (!isPortNumber(endPort) || endPort < port) {
    sink.error(`${field}.endPort`, `${JSON.stringify(endPort)} must be a port number from ${port} to 65535`);
    return null;
  }
  return { kind: 'number', protocol: proto, port, endPort };
}

function isPortNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}
