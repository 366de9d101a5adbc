import type { Chain } from './dataplane.js';
import type { Direction, PolicyRecord } from './model.js';
import { affects } from './model.js';
import type { Names } from './names.js';
import type { Problem } from './problems.js';
import type { CompilerSettings } from './settings.js';
import type { SetDefinition } from './set-definitions.js';
import type { SetIndex } from './set-index.js';
import { buildPolicyChains, selectorSetDefinitions } from './policy-chains.js';

/**
 * The NetworkPolicies known to the compiler, and which of them are installed on this node: a policy's
 * chains and sets exist while at least one local pod uses it, and only then is it built (as in Felix,
 * a node pays for the policies of its own pods, not for every policy of the cluster). A policy whose
 * selector peers would have palisade look at more pods than the budget allows is installed closed:
 * decided from index counts, before any set is filled, so refusing it costs nothing.
 */

/** A policy's compiled form. */
interface PolicyBuild {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
}

interface PolicyState {
  readonly record: PolicyRecord;
  /** Built on first use after each change, for the directions in use then; dropped while no local pod uses the policy. */
  build: { readonly directions: string; readonly build: PolicyBuild } | null;
  /**
   * Local endpoints whose chains run the policy, with the direction ("<endpoint>\u0000ingress"). An
   * enforced policy is used in every direction it affects; an audit policy only where no enforced one
   * isolates the pod, so only the chains of directions in use are installed.
   */
  readonly users: Set<string>;
}

function directionsInUse(users: ReadonlySet<string>): Set<Direction> {
  const found = new Set<Direction>();
  for (const user of users) found.add(user.endsWith('\u0000ingress') ? 'ingress' : 'egress');
  return found;
}

/** The closed side of a policy: it keeps isolating what it selects and grants nothing. */
function closedPolicy(record: PolicyRecord): PolicyRecord {
  return { ...record, ingress: [], egress: [], failed: true };
}

export class PolicyInstaller {
  private readonly policies = new Map<string, PolicyState>();
  private readonly dirty = new Set<string>();
  private readonly installed = new Map<string, PolicyBuild>();
  private readonly overPods = new Map<string, number>();

  constructor(
    private readonly settings: CompilerSettings,
    private readonly names: Names,
    private readonly sets: SetIndex,
    /** The compiler's chains: the installer adds and removes policy chains there. */
    private readonly chains: Map<string, Chain>,
  ) {}

  record(key: string): PolicyRecord | undefined {
    return this.policies.get(key)?.record;
  }

  set(key: string, record: PolicyRecord): void {
    const users = this.policies.get(key)?.users ?? new Set<string>();
    this.policies.set(key, { record, build: null, users });
    this.dirty.add(key);
  }

  delete(key: string): boolean {
    if (!this.policies.delete(key)) return false;
    this.dirty.add(key);
    return true;
  }

  addUser(key: string, endpoint: string, direction: Direction): void {
    this.policies.get(key)!.users.add(`${endpoint}\u0000${direction}`);
    this.dirty.add(key);
  }

  removeUser(key: string, endpoint: string, direction: Direction): void {
    this.policies.get(key)?.users.delete(`${endpoint}\u0000${direction}`);
    this.dirty.add(key);
  }

  /** Installs, replaces or removes what changed since the last call. */
  sync(): void {
    for (const key of this.dirty) this.syncOne(key);
    this.dirty.clear();
  }

  private syncOne(key: string): void {
    const state = this.policies.get(key);
    const installed = this.installed.get(key);
    let wanted: PolicyBuild | undefined;
    if (state !== undefined && state.users.size > 0) {
      const directions = directionsInUse(state.users);
      const label = [...directions].sort().join(',');
      if (state.build?.directions !== label) state.build = { directions: label, build: this.budgetedBuild(key, state.record, directions) };
      wanted = state.build.build;
    } else {
      if (state !== undefined) state.build = null;
      this.overPods.delete(key);
    }
    if (installed === wanted) return;
    // Acquire before releasing so a set both versions use is never dropped and rebuilt.
    for (const [name, definition] of wanted?.sets ?? []) this.sets.acquire(name, definition);
    for (const chain of installed?.chains ?? []) this.chains.delete(chain.name);
    for (const name of installed?.sets.keys() ?? []) this.sets.release(name);
    for (const chain of wanted?.chains ?? []) this.chains.set(chain.name, chain);
    if (wanted === undefined) this.installed.delete(key);
    else this.installed.set(key, wanted);
  }

  /** The policy's build, or its closed stand-in when its selector peers cost more than the budget allows. */
  private budgetedBuild(key: string, record: PolicyRecord, directions: ReadonlySet<Direction>): PolicyBuild {
    const cost = this.selectorCost(record);
    if (cost > this.settings.policyBudget.selectorPods) {
      this.overPods.set(key, cost);
      return this.build(closedPolicy(record), directions);
    }
    this.overPods.delete(key);
    return this.build(record, directions);
  }

  private build(policy: PolicyRecord, directions: ReadonlySet<Direction>): PolicyBuild {
    const chains: Chain[] = [];
    const sets = new Map<string, SetDefinition>();
    for (const direction of ['ingress', 'egress'] as const) {
      if (!affects(policy, direction) || !directions.has(direction)) continue;
      const built = buildPolicyChains(policy, direction, this.names, this.settings.allowMark);
      chains.push(...built.chains);
      for (const [name, definition] of built.sets) sets.set(name, definition);
    }
    return { chains, sets };
  }

  private selectorCost(record: PolicyRecord): number {
    let cost = 0;
    for (const definition of selectorSetDefinitions(record)) cost += this.sets.candidateCount(definition);
    return cost;
  }

  /**
   * Policies in use whose selector cost crossed the budget either way since they were installed
   * (pods came or went) are rebuilt at the next sync. Returns whether anything changed.
   */
  recheckBudgets(): boolean {
    let changed = false;
    for (const [key, state] of this.policies) {
      if (state.users.size === 0) continue;
      const cost = this.selectorCost(state.record);
      const over = cost > this.settings.policyBudget.selectorPods;
      if (over === this.overPods.has(key)) {
        if (over) this.overPods.set(key, cost);
        continue;
      }
      state.build = null;
      this.dirty.add(key);
      changed = true;
    }
    return changed;
  }

  /** Policies installed closed because their selector peers would have palisade look at too many pods, with how many. */
  selectorPodsOverBudget(): ReadonlyMap<string, number> {
    return this.overPods;
  }

  problems(): Problem[] {
    return [...this.overPods].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, pods]) => {
      const record = this.policies.get(key)!.record;
      return {
        severity: 'error',
        object: { kind: 'NetworkPolicy', namespace: record.namespace, name: record.name },
        field: 'spec',
        message: `over palisade's per-policy budget (its selector peers would have palisade look at ${pods} pods, the limit is ${this.settings.policyBudget.selectorPods}): the policy isolates what it selects and grants nothing; checked again on every refresh`,
      };
    });
  }
}
