import type { DropQuery, DropRecord } from './drop-log.js';
import { Evaluator } from '../rules/evaluator.js';
import type { EvaluatorOptions, PacketProtocol } from '../rules/evaluator.js';
import type { Snapshot } from '../rules/snapshot.js';
import { parseIPv4 } from '../rules/ipv4.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import type { Dataplane } from '../rules/dataplane.js';
import { json, text } from './http-server.js';
import type { Reply, Route } from './http-server.js';

/** The node-local, read-only debugging endpoint's routes. */

export interface StatusSource {
  ready(): { ready: boolean; reason: string };
  status(): unknown;
  dataplane(): Dataplane | null;
  snapshot(): Snapshot;
  /** Read per request: the node's live addresses change. */
  evaluatorOptions?(): EvaluatorOptions;
  /** Records of denied connections, newest first; absent where there is no drop log. */
  drops?(query: DropQuery): { drops: readonly DropRecord[]; lost: number };
  readonly dropLogCapacity?: number;
}

const POD_PARAM = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([^/]+)$/;

/** GET /drops?pod=NS/POD&limit=N: the drop log's records, newest first, and how many were lost. */
export function drops(url: URL, source: StatusSource): Reply {
  if (source.drops === undefined) return json(404, { error: 'no drop log here' });
  const errors: string[] = [];
  const pod = url.searchParams.get('pod');
  if (pod !== null && !POD_PARAM.test(pod)) errors.push(`pod=${pod}: expected NAMESPACE/POD`);
  const limitText = url.searchParams.get('limit');
  const capacity = source.dropLogCapacity ?? Number.MAX_SAFE_INTEGER;
  let limit: number | undefined;
  if (limitText !== null) {
    if (!/^[0-9]+$/.test(limitText) || Number(limitText) < 1) errors.push(`limit=${limitText}: must be a whole number of at least 1`);
    else limit = Math.min(Number(limitText), capacity);
  }
  for (const key of url.searchParams.keys()) if (key !== 'pod' && key !== 'limit') errors.push(`${key}: unknown parameter (pod and limit are known)`);
  if (errors.length > 0) return json(400, { error: errors.join('; ') });
  return json(200, source.drops({ ...(pod === null ? {} : { pod }), ...(limit === undefined ? {} : { limit }) }));
}

const PROTOCOLS: readonly PacketProtocol[] = ['TCP', 'UDP', 'SCTP', 'ICMP'];

function endpointOf(param: string, value: string | null, evaluator: Evaluator): { address: string; pod: string | null } | string {
  if (value === null || value === '') return `${param} is required (NAMESPACE/POD or an IPv4 address)`;
  if (parseIPv4(value) !== null) {
    const pod = evaluator.podAt(value);
    return { address: value, pod: pod === undefined ? null : `${pod.namespace}/${pod.name}` };
  }
  const match = /^([^/]+)\/([^/]+)$/.exec(value);
  if (match === null) return `${param}=${value}: expected NAMESPACE/POD or an IPv4 address`;
  const pod = evaluator.findPod(match[1]!, match[2]!);
  if (pod === undefined) return `${param}=${value}: no such pod`;
  if (pod.ip === null) return `${param}=${value}: the pod has no IPv4 address`;
  if (evaluator.addressOf(pod) === null) return `${param}=${value}: the pod's address ${pod.ip} is not its own (a node or another pod holds it; see /status problems)`;
  return { address: pod.ip, pod: value };
}

export function explain(url: URL, snapshot: Snapshot, options: EvaluatorOptions = {}): Reply {
  const evaluator = new Evaluator(snapshot, options);
  const from = endpointOf('from', url.searchParams.get('from'), evaluator);
  const to = endpointOf('to', url.searchParams.get('to'), evaluator);
  const protocol = (url.searchParams.get('protocol') ?? 'TCP').toUpperCase() as PacketProtocol;
  const portText = url.searchParams.get('port');
  const errors: string[] = [];
  if (typeof from === 'string') errors.push(from);
  if (typeof to === 'string') errors.push(to);
  if (!PROTOCOLS.includes(protocol)) errors.push(`protocol=${protocol}: must be one of ${PROTOCOLS.join(', ')}`);
  let port: number | null = null;
  if (protocol !== 'ICMP') {
    if (portText === null || !/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) errors.push(`port=${portText ?? ''}: must be a number from 1 to 65535`);
    else port = Number(portText);
  }
  const viaServiceText = url.searchParams.get('viaService');
  if (viaServiceText !== null && viaServiceText !== 'true' && viaServiceText !== 'false') errors.push(`viaService=${viaServiceText}: must be true or false`);
  const viaService = viaServiceText === 'true';
  if (viaService && typeof from !== 'string' && typeof to !== 'string' && from.address !== to.address) errors.push('viaService=true: from and to must be the same pod (a pod reaching itself through a Service)');
  if (errors.length > 0 || typeof from === 'string' || typeof to === 'string') return json(400, { error: errors.join('; ') });
  const verdict = evaluator.evaluate({ src: from.address, dst: to.address, protocol, port, ...(viaService ? { viaService } : {}) });
  return json(200, { allowed: verdict.allowed, from, to, protocol, port, egress: verdict.egress, ingress: verdict.ingress, assumptions: evaluator.assumptions() });
}

export function statusRoutes(source: StatusSource): Map<string, Route> {
  return new Map<string, Route>([
    ['/healthz', () => text(200, 'ok\n')],
    ['/readyz', () => {
      const { ready, reason } = source.ready();
      return text(ready ? 200 : 503, `${reason}\n`);
    }],
    ['/status', () => json(200, source.status())],
    ['/rules', () => {
      const dataplane = source.dataplane();
      if (dataplane === null) return text(503, 'no rules yet: waiting for the watches to sync\n');
      return text(200, `# ipset restore\n${renderIpsets(dataplane.ipsets.values())}# iptables-restore --noflush\n${renderIptables(dataplane)}`);
    }],
    ['/explain', (url) => explain(url, source.snapshot(), source.evaluatorOptions?.() ?? {})],
    ['/drops', (url) => drops(url, source)],
  ]);
}
