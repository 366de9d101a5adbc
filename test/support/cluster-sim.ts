import { compile } from '../../rules/snapshot.js';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import type { CompilerSettings, SettingsInput } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { hostInterfaceName, vethSuffix } from '../../rules/names.js';
import type { VethSuffix } from '../../rules/names.js';
import type { CompilerOptions } from '../../rules/compiler.js';
import type { PodRecord } from '../../rules/model.js';
import type { PacketProtocol } from '../../rules/evaluator.js';
import type { ClusterDenyLog, DropLogSource } from '../../rules/drop-log.js';
import { IpsetModel, IptablesModel } from './tracer.js';
import type { Hook, Packet, TraceResult } from './tracer.js';

/**
 * A cluster of nodes built from rendered restore TEXT: each node's dataplane is compiled, rendered,
 * and parsed back by the independent tracer, then a packet is walked hop by hop along the path the
 * AWS VPC CNI gives it: out of the source pod's veth on its node, across the VPC, into the destination
 * pod's veth on its node. The verdict is what the kernel would do with a new connection.
 */

export interface SimPacket {
  readonly src: string;
  readonly dst: string;
  readonly protocol: PacketProtocol;
  readonly port: number | null;
  /** A pod's packet to its own address that a Service sent back to it: it leaves and re-enters through its veth. */
  readonly viaService?: boolean;
}

/** What one NFLOG rule the packet passed stands for: the pod that refused, and the policies (a ClusterNetworkPolicy rule as "<tier> <name> rule <n>"). */
export interface LoggedDrop {
  readonly verdict: DropLogSource['verdict'];
  readonly direction: DropLogSource['direction'];
  readonly namespace: string;
  readonly pod: string;
  readonly policies: readonly string[];
}

export interface Hop {
  readonly node: string;
  readonly hook: Hook;
  readonly trace: TraceResult;
}

export interface SimVerdict {
  readonly allowed: boolean;
  readonly hops: readonly Hop[];
  /**
   * What the drop-log rules the packet passed stand for, as the compiler described their prefixes
   * (of the dataplanes compiled here: a node whose rules were overridden may log prefixes it cannot name).
   */
  logged(): readonly LoggedDrop[];
  describe(): string;
}

interface NodeState {
  readonly settings: CompilerSettings;
  readonly iptables: IptablesModel;
  readonly ipsets: IpsetModel;
  readonly addresses: readonly string[];
}

/** The node's uplink: anything that is not a pod veth. */
const UPLINK = 'eth0';

export class SimulatedCluster {
  private readonly nodes = new Map<string, NodeState>();
  private readonly podByIp = new Map<string, PodRecord>();
  private readonly dropLogSources = new Map<string, DropLogSource>();
  private readonly clusterLogs = new Map<string, ClusterDenyLog>();

  private readonly vethSuffix: VethSuffix;

  constructor(snapshot: Snapshot, nodeNames: readonly string[], overrides: Partial<SettingsInput> = {}, options: CompilerOptions = {}) {
    this.vethSuffix = options.vethSuffix ?? vethSuffix;
    for (const name of nodeNames) {
      const result = makeSettings({ ...overrides, nodeName: name });
      if (!result.ok) throw new Error(result.errors.join('; '));
      const dataplane = compile(snapshot, result.settings, options);
      for (const e of dataplane.endpoints) {
        for (const log of [e.ingressLog, e.egressLog]) if (log !== null) this.dropLogSources.set(log.prefix, log);
      }
      for (const log of dataplane.clusterDenyLogs) this.clusterLogs.set(log.prefix, log);
      const addresses = snapshot.nodes.find((n) => n.name === name)?.addresses ?? [];
      this.nodes.set(name, {
        settings: result.settings,
        iptables: IptablesModel.parse(renderIptables(dataplane)),
        ipsets: IpsetModel.parse(renderIpsets(dataplane.ipsets.values())),
        addresses,
      });
    }
    // Where an address really is: with the pod kubelet reports holding it (status) rather than one
    // that only claims it in an annotation. Equal claims are ambiguous; tests avoid those addresses.
    for (const pod of snapshot.pods) {
      if (pod.ip === null || pod.hostNetwork || pod.finished) continue;
      const current = this.podByIp.get(pod.ip);
      if (current === undefined || (current.ipSource === 'annotation' && pod.ipSource === 'status')) this.podByIp.set(pod.ip, pod);
    }
  }

  /** Replaces a node's rules with given models, e.g. a state halfway through an update. */
  overrideNode(name: string, iptables: IptablesModel, ipsets: IpsetModel): void {
    const state = this.node(name);
    this.nodes.set(name, { ...state, iptables, ipsets });
  }

  node(name: string): NodeState {
    const state = this.nodes.get(name);
    if (state === undefined) throw new Error(`unknown node ${name}`);
    return state;
  }

  /** Which node an address is "on": the node owning the address itself, or a pod's node. */
  private locate(address: string): { node: string | null; pod: PodRecord | null } {
    for (const [name, state] of this.nodes) if (state.addresses.includes(address)) return { node: name, pod: null };
    const pod = this.podByIp.get(address);
    if (pod !== undefined && pod.nodeName !== null && this.nodes.has(pod.nodeName)) return { node: pod.nodeName, pod };
    return { node: null, pod: null };
  }

  private iface(node: NodeState, pod: PodRecord): string {
    return hostInterfaceName(node.settings.interfacePrefixes[0]!, pod.namespace, pod.name, this.vethSuffix);
  }

  private walk(nodeName: string, hook: Hook, packet: SimPacket, inIface: string | undefined, outIface: string | undefined, extra: Partial<Packet> = {}): Hop {
    const node = this.node(nodeName);
    const tracerPacket: Packet = {
      src: packet.src,
      dst: packet.dst,
      protocol: packet.protocol.toLowerCase() as Packet['protocol'],
      ...(packet.port === null ? {} : { dport: packet.port }),
      sport: 40000,
      ...(inIface === undefined ? {} : { inIface }),
      ...(outIface === undefined ? {} : { outIface }),
      localAddresses: node.addresses,
      ...extra,
    };
    return { node: nodeName, hook, trace: node.iptables.trace(hook, tracerPacket, node.ipsets, POLICY_TABLE) };
  }

  /** Walks a new connection's first packet from source to destination. */
  send(packet: SimPacket, extra: Partial<Packet> = {}): SimVerdict {
    const src = this.locate(packet.src);
    const dst = this.locate(packet.dst);
    const hops: Hop[] = [];
    if (packet.src === packet.dst && src.pod !== null && packet.viaService !== true) {
      // A pod's packet to its own address never leaves the pod.
    } else if (packet.viaService === true && packet.src === packet.dst && src.pod !== null && src.node !== null) {
      // Hairpin: kube-proxy's DNAT sent it back to where it came from, out of the same veth.
      const iface = this.iface(this.node(src.node), src.pod);
      hops.push(this.walk(src.node, 'FORWARD', packet, iface, iface, extra));
    } else if (src.node !== null) {
      const node = this.node(src.node);
      const inIface = src.pod === null ? undefined : this.iface(node, src.pod);
      if (dst.node === src.node && dst.pod === null) {
        // To the node itself: INPUT from a pod, or the node talking to itself (not our concern).
        if (inIface !== undefined) hops.push(this.walk(src.node, 'INPUT', packet, inIface, undefined, extra));
      } else if (src.pod === null) {
        // Generated by the node: OUTPUT, then straight into a local pod's veth, or out of the uplink.
        hops.push(this.walk(src.node, 'OUTPUT', packet, undefined, dst.node === src.node && dst.pod !== null ? this.iface(node, dst.pod) : UPLINK, extra));
      } else {
        const outIface = dst.node === src.node && dst.pod !== null ? this.iface(node, dst.pod) : UPLINK;
        hops.push(this.walk(src.node, 'FORWARD', packet, inIface, outIface, extra));
      }
    }
    if (dst.node !== null && dst.node !== src.node && packet.viaService !== true) {
      const node = this.node(dst.node);
      if (dst.pod !== null) hops.push(this.walk(dst.node, 'FORWARD', packet, UPLINK, this.iface(node, dst.pod), extra));
      else hops.push(this.walk(dst.node, 'INPUT', packet, UPLINK, undefined, extra));
    }
    const allowed = hops.every((h) => h.trace.verdict === 'ACCEPT');
    // A packet dropped on one hop never reaches the next, nor its log rules.
    const dropped = hops.findIndex((h) => h.trace.verdict === 'DROP');
    const reached = dropped < 0 ? hops : hops.slice(0, dropped + 1);
    const logged = (): LoggedDrop[] => reached.flatMap((h) => h.trace.logged).map((l) => {
      const source = this.dropLogSources.get(l.prefix);
      if (source !== undefined) return source;
      const cluster = this.clusterLogs.get(l.prefix);
      if (cluster === undefined) throw new Error(`NFLOG prefix ${l.prefix} stands for no endpoint's drop log and no ClusterNetworkPolicy rule`);
      // The rule is shared by every pod the policy selects: the pod is the packet's own address.
      const own = this.podByIp.get(cluster.direction === 'egress' ? packet.src : packet.dst);
      return { verdict: 'denied', direction: cluster.direction, namespace: own?.namespace ?? '?', pod: own?.name ?? '?', policies: [`${cluster.tier} ${cluster.policy} rule ${cluster.rule}`] };
    });
    return {
      allowed,
      hops,
      logged,
      describe: () => hops.map((h) => `--- ${h.node} ${h.hook}: ${h.trace.verdict}\n${h.trace.describe()}`).join('\n'),
    };
  }
}
