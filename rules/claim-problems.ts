import type { LostClaim } from './address-claims.js';
import { describeLostClaim } from './address-claims.js';
import type { InterfaceConflict } from './interface-owners.js';
import { claimPod } from './interface-owners.js';
import { VPC_CNI_POD_IPS_ANNOTATION } from './pod.js';
import type { Problem } from './problems.js';

/** Claims palisade does not honour, as problems on the pods that made them. */

function podRef(key: string): Problem['object'] {
  const slash = key.indexOf('/');
  return { kind: 'Pod', namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

function describeIndex(claim: string): string {
  return `interface number ${claim.slice(claimPod(claim).length + 1)}`;
}

/** "x/web", or "x/web (its interface number 1)" for a further interface. */
function describeClaim(claim: string): string {
  return claim === claimPod(claim) ? claim : `${claimPod(claim)} (its ${describeIndex(claim)})`;
}

export function claimProblems(lost: readonly LostClaim[], conflicts: readonly InterfaceConflict[], prefixes: readonly string[]): Problem[] {
  const problems: Problem[] = lost.map((claim) => ({
    severity: 'warning',
    object: podRef(claim.pod),
    field: claim.standing === 'status' ? 'status.podIPs' : `metadata.annotations.${VPC_CNI_POD_IPS_ANNOTATION}`,
    message: describeLostClaim(claim),
  }));
  for (const conflict of conflicts) {
    const names = prefixes.map((p) => p + conflict.suffix).join(', ');
    for (const claim of conflict.claims) {
      if (claim === conflict.owner) continue;
      const others = conflict.claims.filter((c) => c !== claim).map(describeClaim).join(', ');
      const outcome = conflict.owner === null
        ? 'neither has kubelet\'s word over the other, so traffic on that interface is dropped until one of them goes'
        : `${describeClaim(conflict.owner)} keeps it (kubelet reports it running), and this pod gets no rules for it`;
      const whose = claim === claimPod(claim) ? 'its host interface name' : `the host interface name of its ${describeIndex(claim)}`;
      problems.push({
        severity: 'warning',
        object: podRef(claimPod(claim)),
        field: 'metadata.name',
        message: `${whose} (${names}, derived from namespace and name) is also that of ${others}: ${outcome}`,
      });
    }
  }
  return problems;
}
