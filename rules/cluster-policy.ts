import type { Cidr, ClusterAction, ClusterPeer, ClusterPodSelection, ClusterPolicyRecord, ClusterPortMatch, ClusterRule, ClusterTier, Direction, Protocol } from './model.js';
import { CLUSTER_ACTIONS, CLUSTER_TIERS } from './model.js';
import { isRecord, readMeta, refOf } from './object-fields.js';
import type { Parsed } from './namespace.js';
import { MATCH_ALL, parseSelector } from './selector.js';
import { looksLikeIPv6, parseCidr, parseIPv4 } from './ipv4.js';
import type { ProblemSink } from './problems.js';

/**
 * policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy to ClusterPolicyRecord, checked as its CRD
 * (schema and CEL rules) checks it. Two kinds of trouble fail closed differently:
 * - A rule palisade cannot honour (a peer with no field it knows, written for a newer CRD; domainNames)
 *   is a warning, and the rule fails closed as the API says: Accept matches nothing, Deny and Pass deny
 *   everything. The rest of the policy stands.
 * - An invalid policy is an error, and fails closed whole: see failedClusterPolicy.
 */

export const CLUSTER_POLICY_API_VERSION = 'policy.networking.k8s.io/v1alpha2';

/** The CRD's limits: rules per direction, peers per rule, protocols per rule, CIDRs and domain names per peer. */
const MAX_ITEMS = 25;
const MAX_RULE_NAME = 100;
const MAX_PRIORITY = 1000;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DOMAIN_NAME = /^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$/;
const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;
const SPEC_FIELDS: ReadonlySet<string> = new Set(['tier', 'priority', 'subject', 'ingress', 'egress']);
const PEER_FIELDS: Readonly<Record<Direction, readonly string[]>> = {
  ingress: ['namespaces', 'pods'],
  egress: ['namespaces', 'pods', 'nodes', 'networks', 'domainNames'],
};
const PROTOCOL_FIELDS: readonly (readonly [string, Protocol])[] = [['tcp', 'TCP'], ['udp', 'UDP'], ['sctp', 'SCTP']];

export function parseClusterPolicy(object: Record<string, unknown>): Parsed<ClusterPolicyRecord> {
  const sink = refOf('ClusterNetworkPolicy', object, false);
  const meta = readMeta(object, sink, false);
  if (meta.name === '') return { record: null, problems: sink.problems };
  if (!DNS_SUBDOMAIN.test(meta.name)) sink.error('metadata.name', `"${meta.name}" is not a valid name (a DNS subdomain: lowercase letters, digits, '-' and '.')`);
  const spec = object['spec'];
  if (!isRecord(spec)) {
    sink.error('spec', 'a ClusterNetworkPolicy needs a spec object');
    return { record: failedClusterPolicy(meta.name, null, null, null, true, true), problems: sink.problems };
  }
  for (const key of Object.keys(spec)) if (!SPEC_FIELDS.has(key)) sink.unknownField(`spec.${key}`, 'ClusterNetworkPolicy spec');
  const tier = parseTier(spec['tier'], sink);
  const priority = parsePriority(spec['priority'], sink);
  const subject = parsePodSelection(spec['subject'], 'spec.subject', 'subject', sink);
  const ingress = parseRules(spec['ingress'], 'ingress', sink);
  const egress = parseRules(spec['egress'], 'egress', sink);
  if (sink.hasErrors) {
    const declared = (key: string): boolean => spec[key] !== undefined && spec[key] !== null;
    return { record: failedClusterPolicy(meta.name, tier, priority, subject, declared('ingress'), declared('egress')), problems: sink.problems };
  }
  // Without errors each of these was read.
  return { record: { name: meta.name, tier: tier!, priority: priority!, subject: subject!, ingress, egress, failed: false }, problems: sink.problems };
}

/**
 * An invalid policy denies everything, in each direction it declares, to its subject. What cannot be
 * read is taken at its closed end: no subject means every pod, no tier means Admin (a guardrail no
 * NetworkPolicy can open), no priority means 0 (before every other policy of its tier). The API server
 * refuses such objects, so this meets only manifests and a CRD newer than palisade; there a policy that
 * locks too much is seen and fixed, while one that quietly opened would not be.
 */
function failedClusterPolicy(name: string, tier: ClusterTier | null, priority: number | null, subject: ClusterPodSelection | null, ingress: boolean, egress: boolean): ClusterPolicyRecord {
  const denyAll: ClusterRule = { name: '', action: 'Deny', peers: [], protocols: null, failClosed: 'the policy is invalid' };
  return {
    name,
    tier: tier ?? 'Admin',
    priority: priority ?? 0,
    subject: subject ?? { kind: 'namespaces', namespaceSelector: MATCH_ALL },
    ingress: ingress ? [denyAll] : [],
    egress: egress ? [denyAll] : [],
    failed: true,
  };
}

function parseTier(raw: unknown, sink: ProblemSink): ClusterTier | null {
  if (typeof raw === 'string' && (CLUSTER_TIERS as readonly string[]).includes(raw)) return raw as ClusterTier;
  sink.error('spec.tier', raw === undefined || raw === null ? 'tier is required: "Admin" or "Baseline"' : `${JSON.stringify(raw)} is not "Admin" or "Baseline"`);
  return null;
}

function parsePriority(raw: unknown, sink: ProblemSink): number | null {
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0 && raw <= MAX_PRIORITY) return raw;
  sink.error('spec.priority', raw === undefined || raw === null ? `priority is required: an integer from 0 to ${MAX_PRIORITY}` : `${JSON.stringify(raw)} is not an integer from 0 to ${MAX_PRIORITY}`);
  return null;
}

/** Counts the fields of `raw` that are set: the CRD's "exactly one of" is Min/MaxProperties 1, and null is unset. */
function setFields(raw: Record<string, unknown>, known: readonly string[]): string[] {
  return known.filter((key) => raw[key] !== undefined && raw[key] !== null);
}

/** `subject`, or a `namespaces`/`pods` value of a peer: exactly one of the two. */
function parsePodSelection(raw: unknown, field: string, what: string, sink: ProblemSink): ClusterPodSelection | null {
  if (!isRecord(raw)) {
    sink.error(field, `${what} must be an object with exactly one of namespaces or pods`);
    return null;
  }
  for (const key of Object.keys(raw)) if (key !== 'namespaces' && key !== 'pods') sink.unknownField(`${field}.${key}`, what);
  const set = setFields(raw, ['namespaces', 'pods']);
  if (set.length !== 1) {
    sink.error(field, `${what} must set exactly one of namespaces or pods${set.length > 1 ? `, not ${set.join(' and ')}` : ''}`);
    return null;
  }
  return set[0] === 'namespaces' ? parseNamespaces(raw['namespaces'], `${field}.namespaces`, sink) : parseNamespacedPod(raw['pods'], `${field}.pods`, sink);
}

function parseNamespaces(raw: unknown, field: string, sink: ProblemSink): ClusterPodSelection | null {
  const namespaceSelector = parseSelector(raw, field, sink);
  return namespaceSelector === null ? null : { kind: 'namespaces', namespaceSelector };
}

/** An absent namespaceSelector selects every namespace (NetworkPolicy's own-namespace default has no meaning for a cluster policy). */
function parseNamespacedPod(raw: unknown, field: string, sink: ProblemSink): ClusterPodSelection | null {
  if (!isRecord(raw)) {
    sink.error(field, 'pods must be an object with podSelector and an optional namespaceSelector');
    return null;
  }
  for (const key of Object.keys(raw)) if (key !== 'namespaceSelector' && key !== 'podSelector') sink.unknownField(`${field}.${key}`, 'pods');
  if (raw['podSelector'] === undefined || raw['podSelector'] === null) {
    sink.error(`${field}.podSelector`, 'podSelector is required ({} selects every pod)');
    return null;
  }
  const namespaceSelector = parseSelector(raw['namespaceSelector'], `${field}.namespaceSelector`, sink);
  const podSelector = parseSelector(raw['podSelector'], `${field}.podSelector`, sink);
  return namespaceSelector === null || podSelector === null ? null : { kind: 'pods', namespaceSelector, podSelector };
}

/** A list the CRD bounds: returns its items, or null (with an error) when it is no list or empty where it must not be. */
function boundedList(raw: unknown, field: string, what: string, minItems: number, sink: ProblemSink): unknown[] | null {
  if (!Array.isArray(raw)) {
    sink.error(field, `${what} must be a list`);
    return null;
  }
  if (raw.length < minItems) sink.error(field, `${what} needs at least ${minItems} item${minItems === 1 ? '' : 's'}`);
  if (raw.length > MAX_ITEMS) sink.error(field, `${what} has ${raw.length} items; the CRD allows at most ${MAX_ITEMS}`);
  return raw;
}

function parseRules(raw: unknown, direction: Direction, sink: ProblemSink): ClusterRule[] {
  if (raw === undefined || raw === null) return [];
  const items = boundedList(raw, `spec.${direction}`, `${direction}`, 0, sink) ?? [];
  const rules: ClusterRule[] = [];
  items.forEach((item, i) => {
    const rule = parseRule(item, `spec.${direction}[${i}]`, direction, sink);
    if (rule !== null) rules.push(rule);
  });
  return rules;
}

function parseRule(raw: unknown, at: string, direction: Direction, sink: ProblemSink): ClusterRule | null {
  const peersKey = direction === 'ingress' ? 'from' : 'to';
  if (!isRecord(raw)) {
    sink.error(at, `a rule must be an object with action, ${peersKey} and optional name and protocols`);
    return null;
  }
  for (const key of Object.keys(raw)) if (key !== 'name' && key !== 'action' && key !== peersKey && key !== 'protocols') sink.unknownField(`${at}.${key}`, `${direction} rule`);
  const name = raw['name'] ?? '';
  if (typeof name !== 'string' || name.length > MAX_RULE_NAME) sink.error(`${at}.name`, `the rule name must be a string of at most ${MAX_RULE_NAME} characters`);
  const action = raw['action'];
  if (typeof action !== 'string' || !(CLUSTER_ACTIONS as readonly string[]).includes(action)) {
    sink.error(`${at}.action`, action === undefined || action === null ? 'action is required: "Accept", "Deny" or "Pass"' : `${JSON.stringify(action)} is not "Accept", "Deny" or "Pass"`);
  }
  const peers = parsePeers(raw[peersKey], `${at}.${peersKey}`, direction, sink);
  const protocols = parseProtocols(raw['protocols'], `${at}.protocols`, sink);
  if (typeof name !== 'string' || typeof action !== 'string' || peers === null || protocols === 'invalid') return null;
  const act = action as ClusterAction;
  // The CRD's CEL rule: a named port is a pod's, so it means nothing towards nodes, networks or names.
  if (direction === 'egress' && peers.nonPod.length > 0 && Array.isArray(protocols) && protocols.some((p) => p.kind === 'named')) {
    sink.error(`${at}`, `destinationNamedPort cannot be used with ${peers.nonPod.join(', ')} peers: only pods have named ports`);
  }
  let failClosed: string | null = null;
  const unknown = [...peers.unknown, ...(protocols !== null && 'unknown' in protocols ? protocols.unknown : [])];
  if (unknown.length > 0) {
    failClosed = `${unknown.join(', ')} ${unknown.length === 1 ? 'has' : 'have'} no field palisade knows (written for a newer ClusterNetworkPolicy CRD?)`;
  } else if (peers.domainNames !== null) {
    failClosed = `domainNames peers (${peers.domainNames}) are not supported by palisade`;
    if (act !== 'Accept') sink.warn(`${at}.action`, 'domainNames peers are for Accept rules only, as the API says');
  }
  if (failClosed !== null) sink.warn(at, `${failClosed}: ${act === 'Accept' ? 'this Accept rule matches nothing' : `this ${act} rule is taken as Deny for every ${direction} packet of its subject`} (the API's fail-closed reading)`);
  return { name, action: act, peers: peers.known, protocols: protocols !== null && 'unknown' in protocols ? null : protocols, failClosed };
}

interface ParsedPeers {
  readonly known: ClusterPeer[];
  /** Field paths of peers with no field palisade knows. */
  readonly unknown: string[];
  /** The domain names listed, joined, or null when there are none. */
  readonly domainNames: string | null;
  /** The kinds of non-pod peers present (nodes, networks, domainNames), for the named-port check. */
  readonly nonPod: string[];
}

function parsePeers(raw: unknown, field: string, direction: Direction, sink: ProblemSink): ParsedPeers | null {
  const what = direction === 'ingress' ? 'from' : 'to';
  if (raw === undefined || raw === null) {
    sink.error(field, `${what} is required and needs at least one peer`);
    return null;
  }
  const items = boundedList(raw, field, what, 1, sink);
  if (items === null) return null;
  const parsed: ParsedPeers = { known: [], unknown: [], domainNames: null, nonPod: [] };
  const domains: string[] = [];
  let ok = true;
  items.forEach((item, i) => {
    const at = `${field}[${i}]`;
    if (!isRecord(item)) {
      sink.error(at, `a peer must be an object with exactly one of ${PEER_FIELDS[direction].join(', ')}`);
      ok = false;
      return;
    }
    const set = setFields(item, PEER_FIELDS[direction]);
    const unknownKeys = Object.keys(item).filter((key) => !PEER_FIELDS[direction].includes(key));
    // Beside a known field an unknown one is dropped, as the API server drops it; alone it is a newer
    // CRD's peer, which the fail-closed warning names instead of calling it a typo that may allow more.
    if (set.length > 0) for (const key of unknownKeys) sink.unknownField(`${at}.${key}`, `${direction} peer`);
    if (set.length > 1) {
      sink.error(at, `a peer must set exactly one of ${PEER_FIELDS[direction].join(', ')}, not ${set.join(' and ')}`);
      ok = false;
      return;
    }
    if (set.length === 0) {
      if (unknownKeys.length > 0) parsed.unknown.push(`${at} (${unknownKeys.join(', ')})`);
      else {
        sink.error(at, `a peer must set exactly one of ${PEER_FIELDS[direction].join(', ')}`);
        ok = false;
      }
      return;
    }
    const kind = set[0]!;
    const value = item[kind];
    if (kind === 'namespaces') {
      const peer = parseNamespaces(value, `${at}.namespaces`, sink);
      if (peer === null) ok = false;
      else parsed.known.push(peer);
    } else if (kind === 'pods') {
      const peer = parseNamespacedPod(value, `${at}.pods`, sink);
      if (peer === null) ok = false;
      else parsed.known.push(peer);
    } else if (kind === 'nodes') {
      parsed.nonPod.push('nodes');
      const nodeSelector = parseSelector(value, `${at}.nodes`, sink);
      if (nodeSelector === null) ok = false;
      else parsed.known.push({ kind: 'nodes', nodeSelector });
    } else if (kind === 'networks') {
      parsed.nonPod.push('networks');
      const networks = parseNetworks(value, `${at}.networks`, sink);
      if (networks === null) ok = false;
      else parsed.known.push({ kind: 'networks', networks });
    } else {
      parsed.nonPod.push('domainNames');
      const names = parseDomainNames(value, `${at}.domainNames`, sink);
      if (names === null) ok = false;
      else domains.push(...names);
    }
  });
  if (!ok) return null;
  return { ...parsed, domainNames: domains.length === 0 ? null : domains.join(', ') };
}

/**
 * CIDRs as the CRD's isCIDR reads them (Go's netip.ParsePrefix): no leading zeros; host bits are
 * allowed and masked off, with a warning. IPv6 ones match no IPv4 packet and are left out, said once each.
 */
function parseNetworks(raw: unknown, field: string, sink: ProblemSink): Cidr[] | null {
  const items = boundedList(raw, field, 'networks', 1, sink);
  if (items === null) return null;
  const cidrs = new Map<string, Cidr>();
  let ok = true;
  items.forEach((text, i) => {
    const at = `${field}[${i}]`;
    if (typeof text !== 'string') {
      sink.error(at, 'a network must be a CIDR string');
      ok = false;
      return;
    }
    if (looksLikeIPv6(text)) {
      sink.warn(at, `IPv6 CIDR ${text} matches no IPv4 packet (IPv4 clusters only)`);
      return;
    }
    const slash = text.indexOf('/');
    const strict = slash > 0 && parseIPv4(text.slice(0, slash)) !== null && /^(0|[1-9][0-9]?)$/.test(text.slice(slash + 1));
    const parsed = parseCidr(text);
    if (!strict || !parsed.ok) {
      sink.error(at, parsed.ok ? `"${text}" is not a CIDR the API accepts (no leading zeros)` : parsed.reason);
      ok = false;
      return;
    }
    for (const note of parsed.notes) sink.warn(at, note);
    cidrs.set(parsed.cidr.text, parsed.cidr);
  });
  return ok ? [...cidrs.values()] : null;
}

function parseDomainNames(raw: unknown, field: string, sink: ProblemSink): string[] | null {
  const items = boundedList(raw, field, 'domainNames', 1, sink);
  if (items === null) return null;
  const bad = items.findIndex((name) => typeof name !== 'string' || !DOMAIN_NAME.test(name));
  if (bad >= 0) {
    sink.error(`${field}[${bad}]`, `${JSON.stringify(items[bad])} is not a domain name (a '*.' prefix is the only wildcard)`);
    return null;
  }
  return items as string[];
}

/** Null: no protocols (every protocol). `unknown`: entries with no field palisade knows, which fail the rule closed. */
function parseProtocols(raw: unknown, field: string, sink: ProblemSink): ClusterPortMatch[] | null | { readonly unknown: readonly string[] } | 'invalid' {
  if (raw === undefined || raw === null) return null;
  const items = boundedList(raw, field, 'protocols', 1, sink);
  if (items === null) return 'invalid';
  const matches: ClusterPortMatch[] = [];
  const unknown: string[] = [];
  let ok = true;
  const known = [...PROTOCOL_FIELDS.map(([key]) => key), 'destinationNamedPort'];
  items.forEach((item, i) => {
    const at = `${field}[${i}]`;
    if (!isRecord(item)) {
      sink.error(at, `a protocol entry must be an object with exactly one of ${known.join(', ')}`);
      ok = false;
      return;
    }
    const set = setFields(item, known);
    const unknownKeys = Object.keys(item).filter((key) => !known.includes(key));
    if (set.length > 0) for (const key of unknownKeys) sink.unknownField(`${at}.${key}`, 'protocol entry');
    if (set.length !== 1) {
      if (set.length === 0 && unknownKeys.length > 0) unknown.push(`${at} (${unknownKeys.join(', ')})`);
      else {
        sink.error(at, `a protocol entry must set exactly one of ${known.join(', ')}${set.length > 1 ? `, not ${set.join(' and ')}` : ''}`);
        ok = false;
      }
      return;
    }
    const match = set[0] === 'destinationNamedPort'
      ? parseNamedPort(item['destinationNamedPort'], `${at}.destinationNamedPort`, sink)
      : parseProtocolPorts(item[set[0]!], `${at}.${set[0]!}`, PROTOCOL_FIELDS.find(([key]) => key === set[0])![1], sink);
    if (match === null) ok = false;
    else matches.push(match);
  });
  if (!ok) return 'invalid';
  return unknown.length > 0 ? { unknown } : matches;
}

function parseNamedPort(raw: unknown, field: string, sink: ProblemSink): ClusterPortMatch | null {
  if (typeof raw !== 'string' || raw === '') {
    sink.error(field, 'destinationNamedPort must be a container port name');
    return null;
  }
  if (!IANA_SVC_NAME.test(raw)) sink.warn(field, `"${raw}" is not a valid container port name, so no pod has a port of that name`);
  return { kind: 'named', name: raw };
}

/** `tcp`/`udp`/`sctp`: the CRD needs destinationPort set (MinProperties 1), as one number or an inclusive range with start < end. */
function parseProtocolPorts(raw: unknown, field: string, protocol: Protocol, sink: ProblemSink): ClusterPortMatch | null {
  if (!isRecord(raw) || raw['destinationPort'] === undefined || raw['destinationPort'] === null) {
    sink.error(`${field}.destinationPort`, 'destinationPort is required here: a number, or a range with start and end');
    return null;
  }
  for (const key of Object.keys(raw)) if (key !== 'destinationPort') sink.unknownField(`${field}.${key}`, protocol);
  const port = raw['destinationPort'];
  const at = `${field}.destinationPort`;
  if (!isRecord(port) || setFields(port, ['number', 'range']).length !== 1) {
    sink.error(at, 'destinationPort must set exactly one of number or range');
    return null;
  }
  for (const key of Object.keys(port)) if (key !== 'number' && key !== 'range') sink.unknownField(`${at}.${key}`, 'destinationPort');
  if (port['number'] !== undefined && port['number'] !== null) {
    if (!isPortNumber(port['number'])) {
      sink.error(`${at}.number`, `${JSON.stringify(port['number'])} is not a port number from 1 to 65535`);
      return null;
    }
    return { kind: 'range', protocol, start: port['number'], end: port['number'] };
  }
  const range = port['range'];
  if (!isRecord(range) || !isPortNumber(range['start']) || !isPortNumber(range['end'])) {
    sink.error(`${at}.range`, 'a range needs start and end, each a port number from 1 to 65535');
    return null;
  }
  for (const key of Object.keys(range)) if (key !== 'start' && key !== 'end') sink.unknownField(`${at}.range.${key}`, 'range');
  if (range['start'] >= range['end']) {
    sink.error(`${at}.range`, `start (${range['start']}) must be less than end (${range['end']})`);
    return null;
  }
  return { kind: 'range', protocol, start: range['start'], end: range['end'] };
}

function isPortNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}
