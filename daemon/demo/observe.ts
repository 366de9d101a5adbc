import { dropCheck, endpointCheck, explainCheck, reachabilityCheck, statusCommandCheck, syncCheck } from './checks.js';
import type { CheckResult } from './checks.js';
import type { Interruption } from './interrupt.js';
import type { DemoLab } from './lab.js';
import { readDrops, readExplain, readStatus } from './node-status.js';
import type { DemoPods } from './pods.js';
import type { DemoStep } from './script.js';

/** How long a step's expectations may take to hold before the step counts as failed. */
const STEP_DEADLINE_MS = 10_000;
const POLL_PAUSE_MS = 100;

/** Observations of one polling round. */
export interface Round {
  readonly ok: boolean;
  readonly checks: readonly CheckResult[];
  readonly syncMs: number | null;
  /** When the daemon last finished writing the rules (epoch ms), by its status. */
  readonly lastSuccessMs: number | null;
}

/** Watches a step take effect: packets between the pods and the node's status endpoint, polled. */
export class StepObserver {
  private readonly lab: DemoLab;
  private readonly pods: DemoPods;
  private readonly interruption: Interruption;

  constructor(lab: DemoLab, pods: DemoPods, interruption: Interruption) {
    this.lab = lab;
    this.pods = pods;
    this.interruption = interruption;
  }

  /** Polls until the step's expectations hold or its deadline, counted from `issued` (performance.now()), passes; the last round. */
  async untilExpected(step: DemoStep, issued: number): Promise<Round> {
    const deadline = issued + STEP_DEADLINE_MS;
    let round: Round;
    for (;;) {
      this.interruption.checkpoint();
      round = await this.observe(step);
      if (round.ok || performance.now() > deadline) break;
      await this.interruption.sleep(POLL_PAUSE_MS);
    }
    return round;
  }

  /**
   * One polling round: the status endpoint first, then packets. Reading the status first means a
   * reachability that matches was measured with the rules the status describes already in force.
   */
  private async observe(step: DemoStep): Promise<Round> {
    const status = await readStatus(this.lab.requireLab());
    const answers = await Promise.all((step.explain ?? []).map((q) => readExplain(this.lab.requireLab(), q)));
    // Records of the previous round's probes: the kernel hands them to the daemon a moment after the drop.
    const records = await Promise.all((step.drops ?? []).map((d) => readDrops(this.lab.requireLab(), d.direction === 'egress' ? d.from : d.to)));
    this.interruption.checkpoint();
    const reachable = await Promise.all(step.reachability.map((r) => this.pods.reachable(r.from, r.to)));
    const checks: CheckResult[] = [];
    step.reachability.forEach((expected, i) => checks.push(reachabilityCheck(expected, reachable[i] ?? false, this.pods.ip(expected.to), this.pods.useIcmp)));
    if (step.showStatus === true) checks.push(statusCommandCheck());
    for (const expected of step.endpoints ?? []) checks.push(endpointCheck(expected, status, step.showStatus === true));
    (step.explain ?? []).forEach((question, i) => checks.push(explainCheck(question, answers[i]!)));
    (step.drops ?? []).forEach((expected, i) => checks.push(dropCheck(expected, records[i]!)));
    // Always required, printed only when it does not hold.
    const sync = syncCheck(status);
    if (sync !== null) checks.push(sync);
    return { ok: checks.every((c) => c.ok), checks, syncMs: status.sync.lastDurationMs, lastSuccessMs: status.sync.lastSuccess === null ? null : Date.parse(status.sync.lastSuccess) };
  }
}
