import type { AddressSource, NamedContainerPort, PodRecord, Protocol } from './model.js';
import { objectKey, PROTOCOLS } from './model.js';
import { NO_INTERNING } from './interner.js';
import type { Interning } from './interner.js';
import { isRecord, readMeta, recordAt, refOf, stringAt } from './object-fields.js';
import type { Parsed } from './namespace.js';
import { formatIPv4, looksLikeIPv6, notAPodAddress, parseIPv4, parseIPv4Sloppy } from './ipv4.js';
import type { ProblemSink } from './problems.js';

/**
 * The AWS VPC CNI writes the pod's address here as soon as it has one, before kubelet publishes
 * status.podIPs; reading it closes the window in which a new pod would have no address to enforce on.
 */
export const VPC_CNI_POD_IPS_ANNOTATION = 'vpc.amazonaws.com/pod-ips';

/** The VPC CNI gives a pod an interface on every network card when this annotation has MULTI_NIC_VALUE. */
export const VPC_CNI_NIC_CONFIG_ANNOTATION = 'k8s.amazonaws.com/nicConfig';
export const MULTI_NIC_VALUE = 'multi-nic-attachment';

/**
 * Reads only what policy needs of a pod; a daemon passes an Interner so that what pods share (their
 * namespace, node, labels, ports) is held once.
 */
export function parsePod(object: Record<string, unknown>, intern: Interning = NO_INTERNING): Parsed<PodRecord> {
  const sink = refOf('Pod', object, true);
  const meta = readMeta(object, sink, true, { namespace: (n) => intern.knownNamespace(n), labels: (raw) => intern.knownLabels(raw) });
  const spec = recordAt(object, 'spec');
  const status = recordAt(object, 'status');
  const phase = stringAt(status, 'phase');
  const nodeName = stringAt(spec, 'nodeName');
  const hostNetwork = spec['hostNetwork'] === true;
  const finished = phase === 'Succeeded' || phase === 'Failed';
  const annotations = recordAt(recordAt(object, 'metadata'), 'annotations');
  const annotated = annotations[VPC_CNI_POD_IPS_ANNOTATION];
  // A hostNetwork pod's address is its node's: it never takes part in policy, so it is not read.
  const claim = hostNetwork ? NO_CLAIM : podAddress(status, typeof annotated === 'string' ? annotated : undefined, nodeName !== null && nodeName !== '' && !finished, sink);
  const valid = !sink.hasErrors;
  const namespace = valid ? intern.namespace(meta.namespace) : meta.namespace;
  const record: PodRecord = {
    key: objectKey(namespace, meta.name),
    namespace,
    name: meta.name,
    // Only a label set with nothing dropped is shared (and so taken as valid next time).
    labels: sink.problems.some((p) => p.field.startsWith('metadata.labels.')) ? meta.labels : intern.labels(meta.labels),
    ip: claim.ip,
    ipSource: claim.source,
    nodeName: nodeName === null ? null : intern.string(nodeName),
    hostNetwork,
    finished,
    namedPorts: intern.ports(namedPorts(spec, sink)),
    multiNic: !hostNetwork && annotations[VPC_CNI_NIC_CONFIG_ANNOTATION] === MULTI_NIC_VALUE,
  };
  return { record: sink.hasErrors ? null : record, problems: sink.problems };
}

interface Claim {
  readonly ip: string | null;
  readonly source: AddressSource | null;
}

const NO_CLAIM: Claim = { ip: null, source: null };

/**
 * status.podIPs, which only kubelet writes, is the pod's address. The VPC CNI's annotation is read
 * only while kubelet has published nothing, and only for a pod bound to a node: it is a hint that
 * closes the moment between the CNI wiring the pod and kubelet publishing, never a fact, because any
 * pod author can write it (address-claims.ts keeps it from displacing another pod's address).
 */
function podAddress(status: Record<string, unknown>, annotated: string | undefined, bound: boolean, sink: ProblemSink): Claim {
  const published: string[] = [];
  const podIPs = status['podIPs'];
  if (Array.isArray(podIPs)) {
    for (const entry of podIPs) if (isRecord(entry) && typeof entry['ip'] === 'string') published.push(entry['ip']);
  }
  const single = stringAt(status, 'podIP');
  if (published.length === 0 && single !== null && single !== '') published.push(single);
  if (published.length > 0) {
    const ip = firstPodIPv4(published, 'status.podIPs', parseIPv4Sloppy, sink);
    return ip === null ? NO_CLAIM : { ip, source: 'status' };
  }
  if (annotated === undefined || !bound) return NO_CLAIM;
  const candidates = annotated.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const ip = firstPodIPv4(candidates, `metadata.annotations.${VPC_CNI_POD_IPS_ANNOTATION}`, parseIPv4, sink);
  return ip === null ? NO_CLAIM : { ip, source: 'annotation' };
}

/** The first candidate that is an IPv4 address a pod can have, in canonical form. */
function firstPodIPv4(candidates: readonly string[], field: string, parse: (text: string) => number | null, sink: ProblemSink): string | null {
  const unusable: string[] = [];
  for (const candidate of candidates) {
    const value = parse(candidate);
    if (value === null) continue;
    const why = notAPodAddress(value);
    if (why === null) return formatIPv4(value);
    unusable.push(`${formatIPv4(value)} is ${why}`);
  }
  if (unusable.length > 0) sink.warn(field, `no address a pod can have (${unusable.join('; ')}); the pod takes no part in policy`);
  else if (candidates.some(looksLikeIPv6)) sink.warn(field, 'IPv6 pod addresses are ignored (IPv4 clusters only); the pod takes no part in policy');
  else if (candidates.length > 0) sink.warn(field, `no valid IPv4 address in ${JSON.stringify(candidates)}`);
  return null;
}

/** Named container ports, which policies can refer to by name; the same name may map to different numbers per pod. */
function namedPorts(spec: Record<string, unknown>, sink: ProblemSink): NamedContainerPort[] {
  const out: NamedContainerPort[] = [];
  for (const listName of ['containers', 'initContainers']) {
    const containers = spec[listName];
    if (!Array.isArray(containers)) continue;
    containers.forEach((container: unknown, ci) => {
      const ports = isRecord(container) ? container['ports'] : undefined;
      if (!Array.isArray(ports)) return;
      ports.forEach((port: unknown, pi) => {
        if (!isRecord(port) || typeof port['name'] !== 'string' || port['name'] === '') return;
        const field = `spec.${listName}[${ci}].ports[${pi}]`;
        const protocol = (port['protocol'] ?? 'TCP') as string;
        const number = port['containerPort'];
        if (!(PROTOCOLS as readonly string[]).includes(protocol)) sink.warn(`${field}.protocol`, `protocol ${protocol} not supported; named port ignored`);
        else if (typeof number !== 'number' || !Number.isInteger(number) || number < 1 || number > 65535) {
          sink.warn(`${field}.containerPort`, 'not a valid port number; named port ignored');
        } else out.push({ name: port['name'], protocol: protocol as Protocol, port: number });
      });
    });
  }
  return out.sort((a, b) => (a.name + a.protocol + a.port < b.name + b.protocol + b.port ? -1 : 1));
}
