import type { CommandRunner } from '../exec.js';
import type { Backend } from './iptables.js';
import { BACKENDS } from './iptables.js';

/**
 * Which iptables backend the node already uses. Rules written to the other one would be invisible to
 * everything else on the node, and mixing them is a known cause of outages (EKS AL2 uses legacy,
 * AL2023 nft). As Calico's IptablesBackend=Auto and the Kubernetes iptables-wrapper decide it:
 * kube-proxy's marker chains first, then whichever backend holds more rules, then the system default.
 */

export type BackendChoice = Backend | 'auto';

export interface BackendDecision {
  readonly backend: Backend;
  /** Why: shown in the status so an operator can check it. */
  readonly reason: string;
}

/** Chains kubelet and kube-proxy create in the mangle table of the backend they use. */
const MARKER_CHAINS = ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY'];

interface BackendView {
  readonly backend: Backend;
  readonly available: boolean;
  readonly markers: readonly string[];
  readonly rules: number;
}

async function look(runner: CommandRunner, backend: Backend): Promise<BackendView> {
  const result = await runner.exec([`iptables-${backend}-save`]).catch(() => null);
  if (result === null || result.code !== 0) return { backend, available: false, markers: [], rules: 0 };
  const lines = result.stdout.split('\n');
  const markers = MARKER_CHAINS.filter((chain) => lines.some((line) => line.startsWith(`:${chain} `)));
  const rules = lines.filter((line) => line.startsWith('-A ')).length;
  return { backend, available: true, markers, rules };
}

async function systemDefault(runner: CommandRunner): Promise<Backend | null> {
  const result = await runner.exec(['iptables', '--version']).catch(() => null);
  if (result === null || result.code !== 0) return null;
  if (result.stdout.includes('nf_tables')) return 'nft';
  if (result.stdout.includes('legacy')) return 'legacy';
  return null;
}

export async function detectBackend(runner: CommandRunner, choice: BackendChoice): Promise<BackendDecision> {
  if (choice !== 'auto') return { backend: choice, reason: `forced by configuration (${choice})` };
  const views = await Promise.all(BACKENDS.map((b) => look(runner, b)));
  const available = views.filter((v) => v.available);
  if (available.length === 0) throw new Error('neither iptables-legacy-save nor iptables-nft-save could be run');
  const marked = available.filter((v) => v.markers.length > 0);
  if (marked.length === 1) return { backend: marked[0]!.backend, reason: `${marked[0]!.markers.join(' and ')} found in the ${marked[0]!.backend} tables (kubelet/kube-proxy use it)` };
  const [a, b] = [...available].sort((x, y) => y.rules - x.rules);
  const counts = available.map((v) => `${v.backend} ${v.rules}`).join(', ');
  if (a !== undefined && a.rules > 0 && (b === undefined || a.rules > b.rules)) return { backend: a.backend, reason: `the ${a.backend} tables hold the most rules (${counts})` };
  const fallback = (await systemDefault(runner)) ?? 'nft';
  const usable = available.some((v) => v.backend === fallback) ? fallback : available[0]!.backend;
  return { backend: usable, reason: `no rules decide it (${counts}); using the system default, ${usable}` };
}
