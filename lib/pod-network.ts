/**
 * Pods wired the way the AWS VPC CNI wires them, built from network namespaces: a node namespace that
 * forwards, and one namespace per pod joined to it by a veth pair. Used by the end-to-end tests and the
 * demo to push real packets through the rules palisade installs on the node.
 *
 *   pod namespace                         node namespace (ip_forward=1)
 *   eth0  10.1.0.1/32          <-veth->   eni<sha1(ns.pod)[0:11]>  169.254.1.1/32
 *   169.254.1.1 dev eth0 scope link       10.1.0.1 dev eni... scope link
 *   default via 169.254.1.1 dev eth0
 *
 * The host end carries the gateway address 169.254.1.1/32, so it answers the pod's ARP for the gateway
 * itself: no proxy ARP and no static neighbour entry are needed. Every command runs through
 * `ip netns exec`, so nothing here touches the machine's own namespace.
 *
 * The other ways the VPC CNI wires a pod (PodWiring):
 * - `prefix`: the same veth under another prefix (AWS_VPC_K8S_CNI_VETHPREFIX).
 * - `multi-nic`: a further veth per further address, named after sha1("<ns>.<pod>.<index>"), the
 *   pod's eth<index> holding the address and a rule sending what it sends from there out that way.
 * - `branch-eni` (security groups for pods, strict mode): a `vlan`-prefixed veth whose traffic is
 *   routed only through the node's VLAN link to the VPC, by rules on the incoming interface and a
 *   table of the pod's own: the pod's address has no route in the node's main table.
 */
import { randomBytes } from 'node:crypto';
import { parseIPv4 } from '../rules/ipv4.js';
import { hostInterfaceName, interfaceIdentity, vethSuffix } from '../rules/names.js';
import { PalisadeError } from './errors.js';
import { NetworkNamespace } from './netns.js';

/** The link-local next hop every VPC CNI pod routes through. */
export const POD_GATEWAY_IP = '169.254.1.1';
/** The VPC CNI's host-side veth prefix. */
export const DEFAULT_INTERFACE_PREFIX = 'eni';
/** The pod end's name once it is inside the pod namespace. */
export const POD_INTERFACE = 'eth0';
/** Linux interface names are at most 15 characters (IFNAMSIZ - 1). */
const MAX_INTERFACE_NAME = 15;

export interface PodSpec {
  /** Kubernetes namespace and name: they determine the host interface name, as they do for the VPC CNI. */
  readonly namespace: string;
  readonly name: string;
  /** The pod's IPv4 address, held as a /32 on its eth0. */
  readonly ip: string;
  /** How the node reaches the pod; a veth under the node's prefix unless said. */
  readonly wiring?: PodWiring;
}

export type PodWiring =
  | { readonly kind: 'prefix'; readonly interfacePrefix: string }
  | { readonly kind: 'multi-nic'; readonly extraIps: readonly string[] }
  | {
    readonly kind: 'branch-eni';
    /** The node's VLAN link to the VPC (vlan.eth.<id>), which must exist. */
    readonly vlanLink: string;
    /** The VPC subnet's gateway, reached through the VLAN link. */
    readonly gateway: string;
    /** The pod's routing table (the VPC CNI uses 100 + the VLAN id). */
    readonly table: number;
  };

/** The prefix of branch-ENI pods' veths in strict mode; the VPC CNI fixes it. */
export const BRANCH_ENI_PREFIX = 'vlan';

export interface PodHandle {
  readonly spec: PodSpec;
  /** The pod's own network namespace: run probes and servers here. */
  readonly netns: NetworkNamespace;
  /** The node end of the veth pair, as the node's firewall sees it. */
  readonly hostInterface: string;
  /** Host ends of a multi-NIC pod's further veths, in the order of its extra addresses. */
  readonly extraHostInterfaces: readonly string[];
}

export interface PodNodeOptions {
  /** Host-side veth prefix, 1 to 4 lowercase letters or digits starting with a letter; default `eni`. */
  readonly interfacePrefix?: string;
}

export class PodNetworkError extends PalisadeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('POD_NETWORK', message, options);
    this.name = 'PodNetworkError';
  }
}

/** A forwarding node namespace and the pods plumbed onto it. */
export class PodNode {
  readonly netns: NetworkNamespace;
  readonly interfacePrefix: string;
  private readonly attached = new Map<string, PodHandle>();

  private constructor(netns: NetworkNamespace, interfacePrefix: string) {
    this.netns = netns;
    this.interfacePrefix = interfacePrefix;
  }

  /**
   * Creates the node namespace `${prefix}-<hex>` with IPv4 forwarding on inside it. Pod namespaces are
   * named after it (`${node}-p-<hex>`), so `removeStaleNamespaces(prefix)` also finds leftover pods.
   */
  static async create(prefix: string, options: PodNodeOptions = {}): Promise<PodNode> {
    const interfacePrefix = options.interfacePrefix ?? DEFAULT_INTERFACE_PREFIX;
    checkInterfacePrefix(interfacePrefix);
    const netns = await NetworkNamespace.create(prefix);
    try {
      await netns.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    } catch (error) {
      await netns.destroy();
      throw new PodNetworkError(`cannot enable forwarding in node namespace ${netns.name}`, { cause: error });
    }
    return new PodNode(netns, interfacePrefix);
  }

  /** The pods attached now, in the order they were added. */
  pods(): readonly PodHandle[] {
    return [...this.attached.values()];
  }

  pod(namespace: string, name: string): PodHandle | undefined {
    return this.attached.get(podKey(namespace, name));
  }

  /** The host interface the VPC CNI would give this pod on this node. */
  hostInterfaceFor(namespace: string, name: string, wiring?: PodWiring): string {
    const prefix = wiring?.kind === 'prefix' ? wiring.interfacePrefix : wiring?.kind === 'branch-eni' ? BRANCH_ENI_PREFIX : this.interfacePrefix;
    return hostInterfaceName(prefix, namespace, name);
  }

  /** Creates the pod's namespace and plumbs it onto the node; on failure nothing of it is left behind. */
  async addPod(spec: PodSpec): Promise<PodHandle> {
    this.checkNewPod(spec);
    if (spec.wiring?.kind === 'prefix') checkInterfacePrefix(spec.wiring.interfacePrefix);
    const hostInterface = this.hostInterfaceFor(spec.namespace, spec.name, spec.wiring);
    const extraIps = spec.wiring?.kind === 'multi-nic' ? spec.wiring.extraIps : [];
    const extraHostInterfaces = extraIps.map((_, i) => hostInterfaceName(this.interfacePrefix, spec.namespace, interfaceIdentity(spec.name, i + 1)));
    const netns = await NetworkNamespace.create(`${this.netns.name}-p`);
    const handle: PodHandle = { spec: { ...spec }, netns, hostInterface, extraHostInterfaces };
    try {
      await this.createVeth(hostInterface, temporaryPodInterface(spec), netns);
      await configurePodSide(netns, spec.ip);
      if (spec.wiring?.kind === 'branch-eni') await this.configureBranchEniHostSide(hostInterface, spec.ip, spec.wiring);
      else await this.configureHostSide(hostInterface, spec.ip);
      for (const [i, extraIp] of extraIps.entries()) {
        const index = i + 1;
        await this.createVeth(extraHostInterfaces[i]!, temporaryPodInterface(spec, index), netns, `eth${index}`);
        await configureExtraPodSide(netns, `eth${index}`, extraIp, 100 + index);
        await this.configureHostSide(extraHostInterfaces[i]!, extraIp);
      }
    } catch (error) {
      await this.unplumb(handle).catch(() => {});
      throw new PodNetworkError(`cannot plumb pod ${spec.namespace}/${spec.name} (${spec.ip}) onto node ${this.netns.name}`, { cause: error });
    }
    this.attached.set(podKey(spec.namespace, spec.name), handle);
    return handle;
  }

  /** Unplumbs a pod and deletes its namespace. Removing a pod that is already gone is not an error. */
  async removePod(pod: PodHandle | Pick<PodSpec, 'namespace' | 'name'>): Promise<void> {
    const { namespace, name } = 'spec' in pod ? pod.spec : pod;
    const key = podKey(namespace, name);
    const handle = this.attached.get(key);
    if (handle === undefined) return;
    await this.unplumb(handle);
    this.attached.delete(key);
  }

  /**
   * Deletes every pod, then the node. Each deletion is tried even when an earlier one failed; things
   * already gone are fine. Throws only for deletions that really failed, all of them together.
   */
  async destroy(): Promise<void> {
    const failures: unknown[] = [];
    for (const handle of this.pods()) {
      try {
        await handle.netns.destroy();
        this.attached.delete(podKey(handle.spec.namespace, handle.spec.name));
      } catch (error) {
        failures.push(error);
      }
    }
    try {
      await this.netns.destroy();
    } catch (error) {
      failures.push(error);
    }
    if (failures.length > 0) throw new AggregateError(failures, `could not delete everything of pod node ${this.netns.name}`);
  }

  private checkNewPod(spec: PodSpec): void {
    const addresses = [spec.ip, ...(spec.wiring?.kind === 'multi-nic' ? spec.wiring.extraIps : [])];
    for (const address of addresses) {
      if (parseIPv4(address) === null) throw new PodNetworkError(`pod ${spec.namespace}/${spec.name}: "${address}" is not an IPv4 address`);
      if (address === POD_GATEWAY_IP) throw new PodNetworkError(`pod ${spec.namespace}/${spec.name}: ${POD_GATEWAY_IP} is the pods' gateway`);
      const sameIp = this.pods().find((p) => [p.spec.ip, ...(p.spec.wiring?.kind === 'multi-nic' ? p.spec.wiring.extraIps : [])].includes(address));
      if (sameIp !== undefined) throw new PodNetworkError(`pod ${spec.namespace}/${spec.name}: ${address} is already held by ${sameIp.spec.namespace}/${sameIp.spec.name}`);
    }
    if (this.attached.has(podKey(spec.namespace, spec.name))) throw new PodNetworkError(`pod ${spec.namespace}/${spec.name} is already on node ${this.netns.name}`);
    const clash = this.pods().find((p) => p.hostInterface === this.hostInterfaceFor(spec.namespace, spec.name, spec.wiring));
    if (clash !== undefined) throw new PodNetworkError(`pod ${spec.namespace}/${spec.name}: host interface name clashes with ${clash.spec.namespace}/${clash.spec.name}`);
  }

  /** Creates the pair inside the node, then moves the pod end (under a temporary name) into the pod. */
  private async createVeth(hostInterface: string, podEnd: string, pod: NetworkNamespace, podName = POD_INTERFACE): Promise<void> {
    await this.netns.run(['ip', 'link', 'add', hostInterface, 'type', 'veth', 'peer', 'name', podEnd]);
    await this.netns.run(['ip', 'link', 'set', podEnd, 'netns', pod.name]);
    await pod.run(['ip', 'link', 'set', podEnd, 'name', podName]);
  }

  /**
   * Strict mode: the pod's traffic and the VPC's traffic for it are routed by incoming interface into
   * the pod's own table, which leads only to the pod and out the VLAN link: even another pod on this
   * node reaches it through the VPC.
   */
  private async configureBranchEniHostSide(hostInterface: string, podIp: string, wiring: Extract<PodWiring, { kind: 'branch-eni' }>): Promise<void> {
    const table = String(wiring.table);
    await this.netns.run(['ip', 'link', 'set', hostInterface, 'up']);
    await this.netns.run(['ip', 'address', 'add', `${POD_GATEWAY_IP}/32`, 'dev', hostInterface]);
    await this.netns.run(['ip', 'route', 'replace', `${wiring.gateway}/32`, 'dev', wiring.vlanLink, 'scope', 'link', 'table', table]);
    await this.netns.run(['ip', 'route', 'replace', 'default', 'via', wiring.gateway, 'dev', wiring.vlanLink, 'table', table]);
    await this.netns.run(['ip', 'route', 'add', `${podIp}/32`, 'dev', hostInterface, 'scope', 'link', 'table', table]);
    await this.netns.run(['ip', 'rule', 'add', 'iif', hostInterface, 'priority', '10', 'table', table]);
    await this.netns.run(['ip', 'rule', 'add', 'iif', wiring.vlanLink, 'priority', '10', 'table', table]);
  }

  /** Up, the gateway address (so ARP for it is answered here), and a /32 route to the pod. */
  private async configureHostSide(hostInterface: string, podIp: string): Promise<void> {
    await this.netns.run(['ip', 'link', 'set', hostInterface, 'up']);
    await this.netns.run(['ip', 'address', 'add', `${POD_GATEWAY_IP}/32`, 'dev', hostInterface]);
    await this.netns.run(['ip', 'route', 'add', `${podIp}/32`, 'dev', hostInterface, 'scope', 'link']);
  }

  /**
   * Deletes the host end first: that removes the pair (and the node's route) at once, whereas a deleted
   * namespace frees its interfaces asynchronously and the name could still be taken when the pod is re-added.
   */
  private async unplumb(handle: PodHandle): Promise<void> {
    for (const iface of [handle.hostInterface, ...handle.extraHostInterfaces]) {
      if (await this.interfaceExists(iface)) await this.netns.run(['ip', 'link', 'del', iface]);
    }
    const wiring = handle.spec.wiring;
    if (wiring?.kind === 'branch-eni') {
      // The rules outlive the interfaces they name; the table's own routes went with them.
      for (const iface of [handle.hostInterface, wiring.vlanLink]) {
        await this.netns.exec(['ip', 'rule', 'del', 'iif', iface, 'priority', '10', 'table', String(wiring.table)]);
      }
    }
    await handle.netns.destroy();
  }

  private async interfaceExists(name: string): Promise<boolean> {
    const result = await this.netns.exec(['ip', 'link', 'show', 'dev', name]);
    return result.code === 0;
  }
}

/** The pod's eth0: the address as a /32, up, a link route to the gateway and the default route through it. */
async function configurePodSide(pod: NetworkNamespace, ip: string): Promise<void> {
  await pod.run(['ip', 'address', 'add', `${ip}/32`, 'dev', POD_INTERFACE]);
  await pod.run(['ip', 'link', 'set', POD_INTERFACE, 'up']);
  await pod.run(['ip', 'route', 'add', POD_GATEWAY_IP, 'dev', POD_INTERFACE, 'scope', 'link']);
  await pod.run(['ip', 'route', 'add', 'default', 'via', POD_GATEWAY_IP, 'dev', POD_INTERFACE]);
}

/**
 * A multi-NIC pod's further interface: its address, and what it sends from that address leaves that
 * way (its own table), as the VPC CNI sets up for every interface beyond eth0.
 */
async function configureExtraPodSide(pod: NetworkNamespace, iface: string, ip: string, table: number): Promise<void> {
  await pod.run(['ip', 'address', 'add', `${ip}/32`, 'dev', iface]);
  await pod.run(['ip', 'link', 'set', iface, 'up']);
  await pod.run(['ip', 'route', 'add', POD_GATEWAY_IP, 'dev', iface, 'scope', 'link', 'table', String(table)]);
  await pod.run(['ip', 'route', 'add', 'default', 'via', POD_GATEWAY_IP, 'dev', iface, 'table', String(table)]);
  await pod.run(['ip', 'rule', 'add', 'from', ip, 'table', String(table)]);
}

/** Unique within the node while it exists there: 3 + 11 hex characters, plus 1 random to survive a retry. */
function temporaryPodInterface(spec: PodSpec, index = 0): string {
  return `tmp${vethSuffix(spec.namespace, interfaceIdentity(spec.name, index))}${randomBytes(1).toString('hex').slice(0, 1)}`;
}

function checkInterfacePrefix(prefix: string): void {
  if (!/^[a-z][a-z0-9]{0,3}$/.test(prefix)) {
    throw new PodNetworkError(`interface prefix "${prefix}": must be 1 to 4 lowercase letters or digits, starting with a letter`);
  }
  if (hostInterfaceName(prefix, 'x', 'y').length > MAX_INTERFACE_NAME) throw new PodNetworkError(`interface prefix "${prefix}" makes names over ${MAX_INTERFACE_NAME} characters`);
}

function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
