/**
 * Puts kube-proxy's iptables mode on one node, the way kube-proxy does on a full sync: first each jump
 * from a built-in chain is checked (`-C`) and, only when missing, prepended (`-I`) — one iptables call
 * each, because kube-proxy never rewrites a chain it does not own — then all of its own chains in one
 * `iptables-restore --noflush`. A jump that is there already stays where it is; a missing one lands
 * ahead of everything else in the chain.
 */
import { PalisadeError } from '../errors.js';
import { formatArgv } from '../exec.js';
import type { CommandRunner } from '../exec.js';
import { Iptables } from '../iptables/iptables.js';
import type { Backend } from '../iptables/iptables.js';
import { IPTABLES_JUMPS, jumpRuleArgs, ownedChains, renderIptablesRemoval, renderIptablesSync } from './kube-proxy-iptables-rules.js';
import type { IptablesJump, IptablesTable, ProxyRuleOptions } from './kube-proxy-iptables-rules.js';
import type { ServicePortEndpoints } from './services.js';

const LOCK_WAIT = ['-w', '5'];
/** More copies of one jump than this means something keeps adding them: stop rather than loop. */
const MAX_DUPLICATES = 64;

export class KubeProxyCommandError extends PalisadeError {
  constructor(where: string, argv: readonly string[], code: number, stderr: string) {
    super('LAB_KUBE_PROXY', `${formatArgv(argv)} (${where}) exited with code ${code}: ${stderr.trim() || '(no stderr)'}`);
    this.name = 'KubeProxyCommandError';
  }
}

export class IptablesProxier {
  private readonly node: CommandRunner;
  private readonly backend: Backend;
  private readonly iptables: Iptables;

  constructor(node: CommandRunner, backend: Backend) {
    this.node = node;
    this.backend = backend;
    this.iptables = new Iptables({ runner: node, backend });
  }

  async sync(ports: readonly ServicePortEndpoints[], options: ProxyRuleOptions): Promise<void> {
    for (const jump of IPTABLES_JUMPS) {
      await this.ensureChain(jump.table, jump.target);
      if (!(await this.hasJump(jump))) await this.run(['-t', jump.table, '-I', jump.chain, ...jumpRuleArgs(jump)]);
    }
    await this.iptables.restore(renderIptablesSync(ports, options, new Set(await this.chains('nat'))));
  }

  /** Every jump, then every chain; more thorough than `kube-proxy --cleanup`, which leaves some chains behind. */
  async remove(): Promise<void> {
    const present = { filter: new Set(await this.chains('filter')), nat: new Set(await this.chains('nat')) };
    for (const jump of IPTABLES_JUMPS) {
      // Without its target chain no such jump can exist, and iptables would refuse to even look for one.
      if (!present[jump.table].has(jump.target)) continue;
      for (let n = 0; await this.hasJump(jump); n++) {
        if (n === MAX_DUPLICATES) throw new PalisadeError('LAB_KUBE_PROXY', `${jump.table} ${jump.chain} still jumps to ${jump.target} after ${n} deletions in ${this.node.describe()}`);
        await this.run(['-t', jump.table, '-D', jump.chain, ...jumpRuleArgs(jump)]);
      }
    }
    const text = renderIptablesRemoval({ filter: ownedChains('filter', await this.chains('filter')), nat: ownedChains('nat', await this.chains('nat')) });
    if (text !== '') await this.iptables.restore(text);
  }

  /** The chain names of a table, from iptables-save. */
  async chains(table: IptablesTable): Promise<string[]> {
    const argv = [`iptables-${this.backend}-save`, '-t', table];
    const result = await this.node.exec(argv);
    // A save that failed can still exit 0; without the table header its output is not a table.
    if (result.code !== 0 || !result.stdout.split('\n').includes(`*${table}`)) throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr || result.stdout);
    return result.stdout.split('\n').filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0] ?? '');
  }

  private async ensureChain(table: IptablesTable, chain: string): Promise<void> {
    const argv = this.argv(['-t', table, '-N', chain]);
    const result = await this.node.exec(argv);
    if (result.code !== 0 && !/already exists/i.test(result.stderr)) throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr);
  }

  /** `-C` answers 1 for "no such rule"; anything else but 0 is a failure to ask. */
  private async hasJump(jump: IptablesJump): Promise<boolean> {
    const argv = this.argv(['-t', jump.table, '-C', jump.chain, ...jumpRuleArgs(jump)]);
    const result = await this.node.exec(argv);
    if (result.code === 0) return true;
    if (result.code === 1) return false;
    throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr);
  }

  private async run(args: readonly string[]): Promise<void> {
    const argv = this.argv(args);
    const result = await this.node.exec(argv);
    if (result.code !== 0) throw new KubeProxyCommandError(this.node.describe(), argv, result.code, result.stderr);
  }

  private argv(args: readonly string[]): string[] {
    return [`iptables-${this.backend}`, ...LOCK_WAIT, ...args];
  }
}
