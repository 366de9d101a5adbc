import type { AddressSource } from './model.js';

/**
 * Who owns each address. Pods claim addresses (from kubelet's status, or from the VPC CNI annotation
 * that any pod author can also write) and nodes hold theirs; palisade uses an address for a pod only
 * when that pod's claim is the single strongest one:
 *
 *   node address  >  status.podIPs  >  annotation
 *
 * A weaker claim never displaces a stronger one, and two claims of equal strength cancel out: the
 * address is used for no pod (and reported), so a tenant copying another pod's address gains nothing
 * and takes nothing. The outcome depends only on the current claims, never on the order they came in.
 */

const RANK: Readonly<Record<AddressSource | 'node', number>> = { node: 3, status: 2, annotation: 1 };

export type Standing = AddressSource | 'node';

interface Claim {
  readonly claimant: string;
  readonly standing: Standing;
}

/** Why a pod's claim lost, for the problem report. */
export interface LostClaim {
  readonly pod: string;
  readonly address: string;
  readonly standing: AddressSource;
  /** The claims it lost to: a node ("node NAME") or pods ("namespace/name"), with their standing. */
  readonly against: readonly { readonly claimant: string; readonly standing: Standing }[];
}

/** Node claimants are keyed so no pod key (which always holds a "/") can equal one. */
function nodeKey(name: string): string {
  return `\u0000node ${name}`;
}

function display(claimant: string): string {
  return claimant.startsWith('\u0000node ') ? `node ${claimant.slice(6)}` : claimant;
}

export class AddressClaims {
  /** One claim as itself (nearly every address has one); several in a map by claimant. */
  private readonly byAddress = new Map<string, Claim | Map<string, Claim>>();
  /** Addresses with more than one claim: the only places a claim can lose. */
  private readonly shared = new Set<string>();
  private readonly podAddress = new Map<string, { address: string; standing: AddressSource }>();
  private readonly nodeAddresses = new Map<string, readonly string[]>();

  /**
   * Records a pod's claim (null: none). Returns the pods whose ownership may have changed: every pod
   * claiming the address it left or the one it took.
   */
  setPod(pod: string, address: string | null, source: AddressSource | null): readonly string[] {
    const before = this.podAddress.get(pod);
    if (before !== undefined && before.address === address && before.standing === source) return [pod];
    if (before === undefined && address === null) return [pod];
    const touched: string[] = [];
    // Other pods are affected only where the address had, or now has, another claim.
    let shared = false;
    if (before !== undefined) {
      shared = this.countAt(before.address) > 1;
      this.remove(before.address, pod);
      touched.push(before.address);
      this.podAddress.delete(pod);
    }
    if (address !== null && source !== null) {
      this.add(address, { claimant: pod, standing: source });
      this.podAddress.set(pod, { address, standing: source });
      touched.push(address);
      shared ||= this.countAt(address) > 1;
    }
    if (!shared) return [pod];
    const affected = this.podsClaiming(touched);
    affected.add(pod);
    return [...affected];
  }

  /** Records a node's addresses (an empty list when it goes). Returns the pods affected. */
  setNode(name: string, addresses: readonly string[]): readonly string[] {
    const key = nodeKey(name);
    const touched = new Set<string>();
    for (const address of this.nodeAddresses.get(key) ?? []) {
      this.remove(address, key);
      touched.add(address);
    }
    if (addresses.length === 0) this.nodeAddresses.delete(key);
    else this.nodeAddresses.set(key, [...addresses]);
    for (const address of addresses) {
      this.add(address, { claimant: key, standing: 'node' });
      touched.add(address);
    }
    return [...this.podsClaiming(touched)];
  }

  /** The pod that owns `address`, or null (no claim, a node's address, or a tie). */
  owner(address: string): string | null {
    const winner = this.winner(address);
    return winner === null || winner.standing === 'node' ? null : winner.claimant;
  }

  /** The address the pod owns, or null when it claims none or its claim lost. */
  ownedBy(pod: string): string | null {
    const claim = this.podAddress.get(pod);
    return claim !== undefined && this.owner(claim.address) === pod ? claim.address : null;
  }

  /** Every pod claim that lost, sorted by pod. */
  lostClaims(): LostClaim[] {
    const out: LostClaim[] = [];
    for (const address of this.shared) {
      const claims = [...this.claimsAt(address)];
      for (const { claimant: pod, standing } of claims) {
        if (standing === 'node' || this.owner(address) === pod) continue;
        const against = claims
          .filter((c) => c.claimant !== pod && RANK[c.standing] >= RANK[standing])
          .map((c) => ({ claimant: display(c.claimant), standing: c.standing }))
          .sort((a, b) => (a.claimant < b.claimant ? -1 : 1));
        out.push({ pod, address, standing, against });
      }
    }
    return out.sort((a, b) => (a.pod < b.pod ? -1 : 1));
  }

  private winner(address: string): Claim | null {
    const claims = this.byAddress.get(address);
    if (claims === undefined) return null;
    if (!(claims instanceof Map)) return claims;
    let best: Claim | null = null;
    let tie = false;
    for (const claim of claims.values()) {
      if (best === null || RANK[claim.standing] > RANK[best.standing]) {
        best = claim;
        tie = false;
      } else if (RANK[claim.standing] === RANK[best.standing]) tie = true;
    }
    return tie ? null : best;
  }

  private claimsAt(address: string): Iterable<Claim> {
    const claims = this.byAddress.get(address);
    return claims === undefined ? [] : claims instanceof Map ? claims.values() : [claims];
  }

  private countAt(address: string): number {
    const claims = this.byAddress.get(address);
    return claims === undefined ? 0 : claims instanceof Map ? claims.size : 1;
  }

  private add(address: string, claim: Claim): void {
    const claims = this.byAddress.get(address);
    if (claims === undefined || (!(claims instanceof Map) && claims.claimant === claim.claimant)) {
      this.byAddress.set(address, claim);
      return;
    }
    const map = claims instanceof Map ? claims : new Map([[claims.claimant, claims]]);
    map.set(claim.claimant, claim);
    this.byAddress.set(address, map);
    if (map.size > 1) this.shared.add(address);
  }

  private remove(address: string, claimant: string): void {
    const claims = this.byAddress.get(address);
    if (claims === undefined) return;
    if (!(claims instanceof Map)) {
      if (claims.claimant === claimant) this.byAddress.delete(address);
      return;
    }
    claims.delete(claimant);
    if (claims.size >= 2) return;
    this.shared.delete(address);
    const left = claims.values().next();
    if (left.done === true) this.byAddress.delete(address);
    else this.byAddress.set(address, left.value);
  }

  private podsClaiming(addresses: Iterable<string>): Set<string> {
    const out = new Set<string>();
    for (const address of addresses) {
      for (const claim of this.claimsAt(address)) if (claim.standing !== 'node') out.add(claim.claimant);
    }
    return out;
  }
}

/** "x/a's claim of 10.0.0.5 (annotation) is not used: node node-a holds it", for problems and logs. */
export function describeLostClaim(lost: LostClaim): string {
  const others = lost.against.map((a) => (a.standing === 'node' ? a.claimant : `${a.claimant} (${a.standing === 'status' ? 'status.podIPs' : 'annotation'})`));
  const nodeHeld = lost.against.some((a) => a.standing === 'node');
  const why = nodeHeld
    ? `it is the address of ${others.filter((o) => o.startsWith('node ')).join(', ')}`
    : lost.against.some((a) => RANK[a.standing] > RANK[lost.standing])
      ? `${others.join(', ')} holds it with a stronger claim`
      : `${others.join(', ')} claims it too, and equal claims cancel out`;
  return `address ${lost.address} is not used for this pod: ${why}; the pod takes no part in policy until the claim is resolved`;
}
