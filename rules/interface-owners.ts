import type { AddressSource } from './model.js';

/**
 * Which local pod owns each host-side interface name. The VPC CNI names a pod's veth after 44 bits of
 * sha1("<namespace>.<pod>"), so two pods can share a name, and a tenant can pick a pod name that
 * does. When they do, the pod kubelet reports running (its address in status) keeps the interface; a
 * pod known only from the annotation any author can write never takes it. Two claims of equal
 * standing cancel out: the interface is dropped, since nothing tells which pod is behind it. Either
 * way the other pod is reported, and removing one hands the interface to the survivor at once.
 *
 * A claim is a pod's first interface (keyed by the pod) or one of its further interfaces (keyed by
 * claimKey(pod, index)); both kinds meet here, so a further interface can never take a name another
 * pod's interface has, nor the other way round.
 */

/** The key of a pod's claim to its interface number `index` (0 is the pod's own key). */
export function claimKey(pod: string, index: number): string {
  return index === 0 ? pod : `${pod}\u0000${index}`;
}

/** The pod a claim key belongs to. */
export function claimPod(claim: string): string {
  const cut = claim.indexOf('\u0000');
  return cut < 0 ? claim : claim.slice(0, cut);
}

const RANK: Readonly<Record<AddressSource, number>> = { status: 2, annotation: 1 };

export interface InterfaceConflict {
  /** The interface name's suffix, shared by every claim listed. */
  readonly suffix: string;
  /** Claim keys (claimKey): a pod's first interface, or one of its further ones. */
  readonly claims: readonly string[];
  /** The claim that keeps the interface, or null when none does (the interface is dropped). */
  readonly owner: string | null;
}

export class InterfaceOwners {
  private readonly bySuffix = new Map<string, Map<string, AddressSource>>();
  private readonly suffixOf = new Map<string, string>();

  /**
   * Records a local pod that has an address (suffix and standing), or forgets it (null). Returns the
   * pods whose ownership may have changed: every pod sharing the suffix it left or joined.
   */
  set(pod: string, suffix: string | null, standing: AddressSource | null): readonly string[] {
    const before = this.suffixOf.get(pod);
    // Pods on other nodes, the most common case, are never here.
    if (before === undefined && suffix === null) return [pod];
    const affected = new Set<string>([pod]);
    if (before !== undefined) {
      const group = this.bySuffix.get(before)!;
      group.delete(pod);
      if (group.size === 0) this.bySuffix.delete(before);
      this.suffixOf.delete(pod);
      for (const other of group.keys()) affected.add(other);
    }
    if (suffix !== null && standing !== null) {
      let group = this.bySuffix.get(suffix);
      if (group === undefined) {
        group = new Map();
        this.bySuffix.set(suffix, group);
      }
      group.set(pod, standing);
      this.suffixOf.set(pod, suffix);
      for (const other of group.keys()) affected.add(other);
    }
    return [...affected];
  }

  owns(pod: string): boolean {
    const suffix = this.suffixOf.get(pod);
    return suffix !== undefined && this.owner(suffix) === pod;
  }

  /** The owning pod, or null when the suffix is unclaimed or contested. */
  owner(suffix: string): string | null {
    const group = this.bySuffix.get(suffix);
    if (group === undefined) return null;
    let best: string | null = null;
    let bestRank = 0;
    let tie = false;
    for (const [pod, standing] of group) {
      if (RANK[standing] > bestRank) {
        best = pod;
        bestRank = RANK[standing];
        tie = false;
      } else if (RANK[standing] === bestRank) tie = true;
    }
    return tie ? null : best;
  }

  /** Suffixes claimed by more than one local pod. */
  conflicts(): InterfaceConflict[] {
    const out: InterfaceConflict[] = [];
    for (const [suffix, group] of this.bySuffix) {
      if (group.size < 2) continue;
      out.push({ suffix, claims: [...group.keys()].sort(), owner: this.owner(suffix) });
    }
    return out.sort((a, b) => (a.suffix < b.suffix ? -1 : 1));
  }

  /** Suffixes whose interfaces nobody may use: claimed by pods of equal standing. */
  contested(): string[] {
    return this.conflicts().filter((c) => c.owner === null).map((c) => c.suffix);
  }
}
