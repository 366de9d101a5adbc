/**
 * kube-proxy for the lab: ClusterIP Services programmed into every lab node's namespace exactly as
 * kube-proxy programs a node, in its iptables mode (the EKS default) or its nftables mode.
 *
 *   setServices ─ resolve endpoints (services.ts) ─ sync every node
 *                                                   ├─ iptables: IptablesProxier (jumps -C/-I, one restore)
 *                                                   └─ nftables: NftProxier (one nft -f transaction)
 *
 * There is no watch: the caller hands over the Services and their backends, and each change is one
 * full sync, as kube-proxy does when it starts and every hour. `restart()` is what a kube-proxy process
 * coming up does; `switchMode()` is one coming up in the other mode, which first removes what the old
 * mode left, as kube-proxy's start-up cleanup does. Everything runs inside the nodes' namespaces.
 */
import { PalisadeError } from '../errors.js';
import type { CommandRunner } from '../exec.js';
import type { Backend } from '../iptables/iptables.js';
import { IptablesProxier } from './kube-proxy-iptables.js';
import type { ProxyRuleOptions } from './kube-proxy-iptables-rules.js';
import { NftProxier } from './kube-proxy-nft.js';
import { resolveServices } from './services.js';
import type { ServicePortEndpoints, ServiceSpec } from './services.js';

export type KubeProxyMode = 'iptables' | 'nftables';

export interface LabKubeProxyOptions extends ProxyRuleOptions {
  readonly mode: KubeProxyMode;
  /**
   * The iptables binaries used in iptables mode: the family palisade uses on the node (`nft` on Amazon
   * Linux 2023, `legacy` on Amazon Linux 2), since rules in the other family are invisible to it.
   */
  readonly iptablesBackend: Backend;
}

export interface ProxiedNode {
  readonly name: string;
  readonly runner: CommandRunner;
}

interface NodeProxiers {
  readonly name: string;
  readonly iptables: IptablesProxier;
  readonly nft: NftProxier;
}

export class LabKubeProxy {
  readonly iptablesBackend: Backend;
  private currentMode: KubeProxyMode;
  private readonly rules: ProxyRuleOptions;
  private readonly nodes: readonly NodeProxiers[];
  private specs: readonly ServiceSpec[] = [];
  private ports: readonly ServicePortEndpoints[] = [];

  constructor(nodes: readonly ProxiedNode[], options: LabKubeProxyOptions) {
    this.iptablesBackend = options.iptablesBackend;
    this.currentMode = options.mode;
    this.rules = {
      ...(options.clusterCidr === undefined ? {} : { clusterCidr: options.clusterCidr }),
      ...(options.masqueradeAll === undefined ? {} : { masqueradeAll: options.masqueradeAll }),
    };
    this.nodes = nodes.map((n) => ({ name: n.name, iptables: new IptablesProxier(n.runner, options.iptablesBackend), nft: new NftProxier(n.runner) }));
  }

  get mode(): KubeProxyMode {
    return this.currentMode;
  }

  get services(): readonly ServiceSpec[] {
    return this.specs;
  }

  /** The service ports and the endpoints each reaches, as the nodes have them programmed. */
  get servicePorts(): readonly ServicePortEndpoints[] {
    return this.ports;
  }

  /** Replaces every Service (an invalid one fails the whole call, naming each problem) and syncs every node. */
  async setServices(services: readonly ServiceSpec[]): Promise<void> {
    const ports = resolveServices(services);
    this.specs = services.map((s) => ({ ...s, ports: [...s.ports], backends: [...s.backends] }));
    this.ports = ports;
    await this.sync();
  }

  /** A full sync of every node in the current mode. */
  async sync(): Promise<void> {
    await this.onEveryNode((node) => this.syncNode(node, false));
  }

  /**
   * A kube-proxy process starting on every node: what the other mode left is removed, its own chains
   * are rewritten (nftables: base chains recreated), and iptables-mode jumps that are missing are
   * prepended; present ones stay where they are.
   */
  async restart(): Promise<void> {
    await this.onEveryNode(async (node) => {
      if (this.currentMode === 'iptables') await node.nft.remove();
      else await node.iptables.remove();
      await this.syncNode(node, true);
    });
  }

  /** kube-proxy restarted in another mode: the old mode's rules go completely, the new mode's come. */
  async switchMode(mode: KubeProxyMode): Promise<void> {
    this.currentMode = mode;
    await this.restart();
  }

  /** Removes everything either mode wrote, from every node. */
  async remove(): Promise<void> {
    await this.onEveryNode(async (node) => {
      await node.iptables.remove();
      await node.nft.remove();
    });
  }

  /** The names of kube-proxy's chains on a node: iptables (by table) and nftables, for checks. */
  async chainsOn(nodeName: string): Promise<{ filter: string[]; nat: string[]; nft: string[] }> {
    const node = this.nodes.find((n) => n.name === nodeName);
    if (node === undefined) throw new PalisadeError('LAB', `the lab kube-proxy has no node ${nodeName}`);
    const kube = (names: string[]): string[] => names.filter((c) => c.startsWith('KUBE-')).sort();
    return { filter: kube(await node.iptables.chains('filter')), nat: kube(await node.iptables.chains('nat')), nft: (await node.nft.chains()).sort() };
  }

  private async syncNode(node: NodeProxiers, restarted: boolean): Promise<void> {
    if (this.currentMode === 'iptables') await node.iptables.sync(this.ports, this.rules);
    else await node.nft.sync(this.ports, this.rules, restarted);
  }

  private async onEveryNode(step: (node: NodeProxiers) => Promise<void>): Promise<void> {
    const results = await Promise.allSettled(this.nodes.map(step));
    const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [{ node: this.nodes[i]!.name, error: r.reason as unknown }] : []));
    if (failures.length === 0) return;
    const what = failures.map((f) => `${f.node}: ${f.error instanceof Error ? f.error.message : String(f.error)}`).join('\n');
    throw new PalisadeError('LAB_KUBE_PROXY', `lab kube-proxy (${this.currentMode} mode) failed on ${failures.length} node(s):\n${what}`, { cause: new AggregateError(failures.map((f) => f.error)) });
  }
}
