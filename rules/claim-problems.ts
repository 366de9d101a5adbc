import type { LostClaim } from './address-claims.js';
import { describeLostClaim } from './address-claims.js';
import type { InterfaceConflict } from './interface-owners.js';
import { VPC_CNI_POD_IPS_ANNOTATION } from './pod.js';
import type { Problem } from './problems.js';

/** Claims palisade does not honour, as problems on the pods that made them. */

function podRef(key: string): Problem['object'] {
  const slash = key.indexOf('/');
  return { kind: 'Pod', namespace: key.slice(0, slash), name: key.slice(slash + 1) };
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
    for (const pod of conflict.pods) {
      if (pod === conflict.owner) continue;
      const others = conflict.pods.filter((p) => p !== pod).join(', ');
      const outcome = conflict.owner === null
        ? 'neither has kubelet\'s word over the other, so traffic on that interface is dropped until one of them goes'
        : `${conflict.owner} keeps it (kubelet reports it running), and this pod gets no rules of its own`;
      problems.push({
        severity: 'warning',
        object: podRef(pod),
        field: 'metadata.name',
        message: `its host interface name (${names}, derived from namespace and name) is also that of ${others}: ${outcome}`,
      });
    }
  }
  return problems;
}
