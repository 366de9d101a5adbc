/**
 * The Services of the lab, and their endpoints as the EndpointSlice controller publishes them: each
 * port of each Service reaches, on every backend pod, the port its targetPort names there. A numeric
 * targetPort is the same on every backend; a named one is looked up in each backend's container
 * ports (same name and protocol), and a backend that does not declare it is no endpoint of that port.
 * This is the input the lab's kube-proxy programs; nothing here touches a kernel.
 */
import { cidrContains, parseCidr, parseIPv4 } from '../../rules/ipv4.js';
import { PalisadeError } from '../errors.js';

/** Every ClusterIP of the lab comes from here (the API server's --service-cluster-ip-range). */
export const SERVICE_CIDR = '10.100.0.0/16';

export type ServiceProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePortSpec {
  /** Required, and unique, once a Service has more than one port (as the API server requires). */
  readonly name: string;
  readonly protocol: ServiceProtocol;
  readonly port: number;
  /** A port number, or the name of a container port, resolved on each backend. */
  readonly targetPort: number | string;
}

export interface ContainerPortSpec {
  readonly name: string;
  readonly port: number;
  readonly protocol: ServiceProtocol;
}

/** A ready pod behind the Service: its address and the container ports it declares. */
export interface ServiceBackend {
  readonly ip: string;
  readonly ports: readonly ContainerPortSpec[];
}

export interface ServiceSpec {
  readonly namespace: string;
  readonly name: string;
  readonly clusterIp: string;
  readonly ports: readonly ServicePortSpec[];
  readonly backends: readonly ServiceBackend[];
}

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

/** One port of one Service with the endpoints it reaches: the unit kube-proxy writes rules for. */
export interface ServicePortEndpoints {
  readonly namespace: string;
  readonly name: string;
  readonly portName: string;
  readonly protocol: ServiceProtocol;
  readonly clusterIp: string;
  readonly port: number;
  readonly endpoints: readonly Endpoint[];
}

export class ServiceSpecError extends PalisadeError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super('LAB_SERVICE_INVALID', `invalid lab Services:\n  ${problems.join('\n  ')}`);
    this.name = 'ServiceSpecError';
    this.problems = problems;
  }
}

const PROTOCOLS: readonly ServiceProtocol[] = ['TCP', 'UDP', 'SCTP'];
/** IANA_SVC_NAME, as the API server validates container port names: a letter, no "--", at most 15. */
const CONTAINER_PORT_NAME = /^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;
/** Service port names and object names. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const SERVICE_RANGE = (() => {
  const parsed = parseCidr(SERVICE_CIDR);
  if (!parsed.ok) throw new Error(`SERVICE_CIDR ${SERVICE_CIDR}: ${parsed.reason}`);
  return parsed.cidr;
})();

/**
 * Checks every Service and resolves its endpoints. All problems are reported together, naming the
 * Service and the field; the result is in a stable order (namespace, name, port name).
 */
export function resolveServices(services: readonly ServiceSpec[]): ServicePortEndpoints[] {
  const problems: string[] = [];
  const seenNames = new Set<string>();
  const seenIps = new Map<string, string>();
  for (const service of services) {
    const id = `${service.namespace}/${service.name}`;
    problems.push(...serviceProblems(service).map((p) => `${id}: ${p}`));
    if (seenNames.has(id)) problems.push(`${id}: defined twice`);
    seenNames.add(id);
    const holder = seenIps.get(service.clusterIp);
    if (holder !== undefined) problems.push(`${id}: clusterIP ${service.clusterIp} is already ${holder}'s`);
    seenIps.set(service.clusterIp, id);
  }
  if (problems.length > 0) throw new ServiceSpecError(problems);
  const out: ServicePortEndpoints[] = [];
  for (const service of services) {
    for (const port of service.ports) {
      out.push({
        namespace: service.namespace,
        name: service.name,
        portName: port.name,
        protocol: port.protocol,
        clusterIp: service.clusterIp,
        port: port.port,
        endpoints: endpointsOf(port, service.backends),
      });
    }
  }
  return out.sort(byServicePort);
}

function endpointsOf(port: ServicePortSpec, backends: readonly ServiceBackend[]): Endpoint[] {
  const endpoints: Endpoint[] = [];
  for (const backend of backends) {
    const target = typeof port.targetPort === 'number'
      ? port.targetPort
      : backend.ports.find((p) => p.name === port.targetPort && p.protocol === port.protocol)?.port;
    if (target === undefined) continue;
    if (!endpoints.some((e) => e.ip === backend.ip && e.port === target)) endpoints.push({ ip: backend.ip, port: target });
  }
  return endpoints;
}

function serviceProblems(service: ServiceSpec): string[] {
  const problems: string[] = [];
  if (!DNS_LABEL.test(service.namespace)) problems.push(`namespace "${service.namespace}" is not a DNS label`);
  if (!DNS_LABEL.test(service.name)) problems.push(`name "${service.name}" is not a DNS label`);
  const ip = parseIPv4(service.clusterIp);
  if (ip === null) problems.push(`clusterIP "${service.clusterIp}" is not an IPv4 address`);
  else if (!cidrContains(SERVICE_RANGE, ip)) problems.push(`clusterIP ${service.clusterIp} is outside the service range ${SERVICE_CIDR}`);
  if (service.ports.length === 0) problems.push('ports: a Service needs at least one port');
  const names = new Set<string>();
  const keys = new Set<string>();
  service.ports.forEach((port, i) => {
    const at = `ports[${i}]`;
    if (port.name === '' && service.ports.length > 1) problems.push(`${at}.name: required when a Service has several ports`);
    if (port.name !== '' && !DNS_LABEL.test(port.name)) problems.push(`${at}.name: "${port.name}" is not a valid port name`);
    if (names.has(port.name)) problems.push(`${at}.name: "${port.name}" is used twice`);
    names.add(port.name);
    if (!PROTOCOLS.includes(port.protocol)) problems.push(`${at}.protocol: "${String(port.protocol)}" is not TCP, UDP or SCTP`);
    if (!validPort(port.port)) problems.push(`${at}.port: ${port.port} is not 1 to 65535`);
    const key = `${port.protocol}/${port.port}`;
    if (keys.has(key)) problems.push(`${at}: ${key} is served twice`);
    keys.add(key);
    if (typeof port.targetPort === 'number' ? !validPort(port.targetPort) : !CONTAINER_PORT_NAME.test(port.targetPort)) {
      problems.push(`${at}.targetPort: ${JSON.stringify(port.targetPort)} is neither a port number nor a port name`);
    }
  });
  service.backends.forEach((backend, i) => {
    if (parseIPv4(backend.ip) === null) problems.push(`backends[${i}].ip: "${backend.ip}" is not an IPv4 address`);
  });
  return problems;
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

function byServicePort(a: ServicePortEndpoints, b: ServicePortEndpoints): number {
  const ka = `${a.namespace}/${a.name}:${a.portName}`;
  const kb = `${b.namespace}/${b.name}:${b.portName}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
