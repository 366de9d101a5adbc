import type { NamedContainerPort, PodRecord, Protocol } from './model.js';
import { PROTOCOLS } from './model.js';
import { isRecord, readMeta, recordAt, refOf, stringAt } from './object-fields.js';
import type { Parsed } from './namespace.js';
import { looksLikeIPv6, parseIPv4 } from './ipv4.js';
import type { ProblemSink } from './problems.js';

/**
 * The AWS VPC CNI writes the pod's address here as soon as it has one, before kubelet publishes
 * status.podIPs; reading it closes the window in which a new pod would have no address to enforce on.
 */
export const VPC_CNI_POD_IPS_ANNOTATION = 'vpc.amazonaws.com/pod-ips';

export function parsePod(object: Record<string, unknown>): Parsed<PodRecord> {
  const sink = refOf('Pod', object, true);
  const meta = readMeta(object, sink, true);
  const spec = recordAt(object, 'spec');
  const status = recordAt(object, 'status');
  const phase = stringAt(status, 'phase');
  const record: PodRecord = {
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    ip: podIPv4(status, meta.annotations, sink),
    nodeName: stringAt(spec, 'nodeName'),
    hostNetwork: spec['hostNetwork'] === true,
    finished: phase === 'Succeeded' || phase === 'Failed',
    namedPorts: namedPorts(spec, sink),
  };
  return { record: sink.hasErrors ? null : record, problems: sink.problems };
}

function podIPv4(status: Record<string, unknown>, annotations: Readonly<Record<string, string>>, sink: ProblemSink): string | null {
  const published: string[] = [];
  const podIPs = status['podIPs'];
  if (Array.isArray(podIPs)) {
    for (const entry of podIPs) if (isRecord(entry) && typeof entry['ip'] === 'string') published.push(entry['ip']);
  }
  const single = stringAt(status, 'podIP');
  if (published.length === 0 && single !== null) published.push(single);
  const fromStatus = firstIPv4(published, 'status.podIPs', sink);
  if (fromStatus !== null || published.length > 0) return fromStatus;
  const annotated = annotations[VPC_CNI_POD_IPS_ANNOTATION];
  if (annotated === undefined) return null;
  const candidates = annotated.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return firstIPv4(candidates, `metadata.annotations.${VPC_CNI_POD_IPS_ANNOTATION}`, sink);
}

function firstIPv4(candidates: readonly string[], field: string, sink: ProblemSink): string | null {
  for (const candidate of candidates) {
    if (parseIPv4(candidate) !== null) return candidate;
  }
  if (candidates.some(looksLikeIPv6)) sink.warn(field, 'IPv6 pod addresses are ignored (IPv4 clusters only); the pod takes no part in policy');
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
