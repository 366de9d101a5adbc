/**
 * Puts kube-proxy's nftables mode on one node: one `nft -f -` transaction per sync, fed on stdin, then
 * the deletion of service chains the sync emptied (kube-proxy waits before deleting them, because
 * kernels before 6.2 notice late that a map element no longer points at a chain).
 */
import type { CommandRunner } from '../exec.js';
import { KubeProxyCommandError } from './kube-proxy-iptables.js';
import type { ProxyRuleOptions } from './kube-proxy-iptables-rules.js';
import { NFT_TABLE, renderNftDeleteChains, renderNftRemoval, renderNftSync } from './kube-proxy-nft-rules.js';
import type { ServicePortEndpoints } from './services.js';

export class NftProxier {
  private readonly node: CommandRunner;

  constructor(node: CommandRunner) {
    this.node = node;
  }

  /** `restarted`: the first sync of a kube-proxy that has just started, which recreates its base chains. */
  async sync(ports: readonly ServicePortEndpoints[], options: ProxyRuleOptions, restarted: boolean): Promise<void> {
    const { transaction, stale } = renderNftSync(ports, { ...options, recreateBaseChains: restarted }, new Set(await this.chains()));
    await this.apply(transaction);
    if (stale.length > 0) await this.apply(renderNftDeleteChains(stale));
  }

  async remove(): Promise<void> {
    await this.apply(renderNftRemoval());
  }

  /** The chains of kube-proxy's table; none when the table does not exist. */
  async chains(): Promise<string[]> {
    const [family, table] = NFT_TABLE.split(' ') as [string, string];
    const argv = ['nft', '--json', 'list', 'table', family, table];
    const result = await this.node.exec(argv);
    if (result.code !== 0) {
      if (/No such file or directory/.test(result.stderr)) return [];
      throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr);
    }
    return chainNames(result.stdout, argv, this.node.describe());
  }

  private async apply(text: string): Promise<void> {
    const argv = ['nft', '-f', '-'];
    const result = await this.node.exec(argv, { input: text });
    // nft's message quotes the failing line of the transaction and points at the fault.
    if (result.code !== 0) throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr);
  }
}

function chainNames(json: string, argv: readonly string[], where: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw new KubeProxyCommandError(where, argv, 0, `output is not JSON (${error instanceof Error ? error.message : String(error)}): ${json.slice(0, 200)}`);
  }
  const items = (parsed as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) throw new KubeProxyCommandError(where, argv, 0, `no "nftables" list in its output: ${json.slice(0, 200)}`);
  return items.flatMap((item: unknown) => {
    const chain = (item as { chain?: { name?: unknown } }).chain;
    return typeof chain?.name === 'string' ? [chain.name] : [];
  });
}

