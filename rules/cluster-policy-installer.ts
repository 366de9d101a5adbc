import type { Chain } from './dataplane.js';
import type { ClusterPolicyRecord, Direction } from './model.js';
import type { Names } from './names.js';
import type { CompilerSettings } from './settings.js';
import type { SetDefinition } from './set-definitions.js';
import type { SetIndex } from './set-index.js';
import type { ClusterDenyLog } from './drop-log.js';
import { buildClusterPolicyChains } from './cluster-policy-chains.js';

/**
 * The ClusterNetworkPolicies known to the compiler, and which are installed on this node: as with
 * NetworkPolicy (policy-installer.ts), a policy's chains and sets exist while a local pod's tier walks
 * it, in the directions in use.
 *
 * NetworkPolicy's selector budget does not apply: only cluster administrators write these (they are
 * cluster-scoped), their most common peer is every namespace, and a budget counted in pods would let
 * any tenant that creates pods flip an administrator's guardrail. Their rule counts are bounded by the
 * CRD (25 rules of 25 peers) and, like NetworkPolicy's, never grow with the pods their peers match.
 */

interface Build {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
  readonly denyLogs: readonly ClusterDenyLog[];
}

interface State {
  readonly record: ClusterPolicyRecord;
  build: { readonly directions: string; readonly build: Build } | null;
  /** "<endpoint>\u0000<direction>" of the local pods whose tier walks the policy. */
  readonly users: Set<string>;
}

export class ClusterPolicyInstaller {
  private readonly policies = new Map<string, State>();
  private readonly dirty = new Set<string>();
  private readonly installed = new Map<string, Build>();
  private denyLogList: readonly ClusterDenyLog[] | null = [];

  constructor(
    private readonly settings: CompilerSettings,
    private readonly names: Names,
    private readonly sets: SetIndex,
    private readonly chains: Map<string, Chain>,
  ) {}

  get size(): number {
    return this.policies.size;
  }

  record(name: string): ClusterPolicyRecord | undefined {
    return this.policies.get(name)?.record;
  }

  records(): IterableIterator<ClusterPolicyRecord> {
    return [...this.policies.values()].map((s) => s.record)[Symbol.iterator]();
  }

  set(record: ClusterPolicyRecord): void {
    const users = this.policies.get(record.name)?.users ?? new Set<string>();
    this.policies.set(record.name, { record, build: null, users });
    this.dirty.add(record.name);
  }

  delete(name: string): boolean {
    if (!this.policies.delete(name)) return false;
    this.dirty.add(name);
    return true;
  }

  addUser(name: string, endpoint: string, direction: Direction): void {
    this.policies.get(name)!.users.add(`${endpoint}\u0000${direction}`);
    this.dirty.add(name);
  }

  removeUser(name: string, endpoint: string, direction: Direction): void {
    this.policies.get(name)?.users.delete(`${endpoint}\u0000${direction}`);
    this.dirty.add(name);
  }

  sync(): void {
    for (const name of this.dirty) this.syncOne(name);
    if (this.dirty.size > 0) this.denyLogList = null;
    this.dirty.clear();
  }

  /** The Deny rules' log sources of every installed policy; the same array while nothing changed. */
  denyLogs(): readonly ClusterDenyLog[] {
    this.denyLogList ??= [...this.installed.values()].flatMap((b) => b.denyLogs);
    return this.denyLogList;
  }

  private syncOne(name: string): void {
    const state = this.policies.get(name);
    const installed = this.installed.get(name);
    let wanted: Build | undefined;
    if (state !== undefined && state.users.size > 0) {
      const directions = new Set<Direction>([...state.users].map((u) => (u.endsWith('\u0000ingress') ? 'ingress' : 'egress')));
      const label = [...directions].sort().join(',');
      if (state.build?.directions !== label) state.build = { directions: label, build: this.build(state.record, directions) };
      wanted = state.build.build;
    } else if (state !== undefined) state.build = null;
    if (installed === wanted) return;
    for (const [set, definition] of wanted?.sets ?? []) this.sets.acquire(set, definition);
    for (const chain of installed?.chains ?? []) this.chains.delete(chain.name);
    for (const set of installed?.sets.keys() ?? []) this.sets.release(set);
    for (const chain of wanted?.chains ?? []) this.chains.set(chain.name, chain);
    if (wanted === undefined) this.installed.delete(name);
    else this.installed.set(name, wanted);
  }

  private build(record: ClusterPolicyRecord, directions: ReadonlySet<Direction>): Build {
    const chains: Chain[] = [];
    const sets = new Map<string, SetDefinition>();
    const denyLogs: ClusterDenyLog[] = [];
    for (const direction of ['ingress', 'egress'] as const) {
      if (!directions.has(direction)) continue;
      const built = buildClusterPolicyChains(record, direction, this.names, this.settings);
      chains.push(...built.chains);
      for (const [set, definition] of built.sets) sets.set(set, definition);
      denyLogs.push(...built.denyLogs);
    }
    return { chains, sets, denyLogs };
  }
}
