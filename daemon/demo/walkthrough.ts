import type { CommandIO } from '../command-io.js';
import { Kubectl } from './actions.js';
import { describeError, lineWriter, printChecks, seconds, stepVerdict } from './format.js';
import type { Out } from './format.js';
import { Interruption } from './interrupt.js';
import { DemoLab } from './lab.js';
import type { Obj } from './objects.js';
import { StepObserver } from './observe.js';
import { DemoPods, PROBE_TIMEOUT_MS } from './pods.js';
import { DEMO_STEPS, ECHO_PORT } from './script.js';
import type { DemoStep } from './script.js';

/** One run of the demo: sets up the lab, replays every step of the tutorial, and always tears down. */
export class Demo {
  /** Interrupt it to stop the run at its next checkpoint (it still tears down). */
  readonly interruption = new Interruption();
  private readonly out: Out;
  private readonly pods: DemoPods;
  private readonly lab: DemoLab;
  private readonly kubectl: Kubectl;
  private readonly observer: StepObserver;

  constructor(io: CommandIO, policyFiles: ReadonlyMap<string, Obj>, useIcmp: boolean) {
    this.out = lineWriter(io);
    this.pods = new DemoPods(this.interruption, useIcmp);
    this.lab = new DemoLab(this.out, this.interruption, this.pods);
    this.kubectl = new Kubectl(this.lab, this.pods, this.interruption, policyFiles);
    this.observer = new StepObserver(this.lab, this.pods, this.interruption);
  }

  /** Runs the walkthrough, then always tears down; the exit status. */
  async main(): Promise<number> {
    const started = performance.now();
    let code: number;
    try {
      const failed = await this.walkthrough();
      const total = seconds(performance.now() - started);
      this.out();
      if (failed.length === 0) this.out(`✔ all ${DEMO_STEPS.length} steps behaved as the tutorial says (${total})`);
      else this.out(`✘ ${failed.length} of ${DEMO_STEPS.length} steps did not behave as the tutorial says: step ${failed.join(', step ')} (${total})`);
      code = failed.length === 0 ? 0 : 1;
    } catch (error) {
      if (this.interruption.aborted) {
        code = this.interruption.exitCode();
      } else {
        this.out(`\n✘ the demo failed: ${describeError(error)}`);
        this.lab.printDaemonLog();
        code = 1;
      }
    }
    const clean = await this.lab.teardown();
    if (this.interruption.signal !== null) {
      this.out(`interrupted by ${this.interruption.signal}; ${clean ? 'everything the demo created is gone' : 'cleanup was incomplete (see above)'}`);
      code = this.interruption.exitCode();
    }
    return clean ? code : Math.max(code, 1);
  }

  /** The numbers of the steps that did not behave as expected. */
  private async walkthrough(): Promise<number[]> {
    this.out('palisade demo: the "K8S: Network Policy" tutorial, replayed on a lab EKS node');
    this.out(`  connectivity checks: ${this.pods.useIcmp ? 'real ICMP ping (ping -c1 -W1) from inside the pod' : `ping (TCP echo probe on port ${ECHO_PORT}): the ping program is not installed here, so each "ping" is one TCP echo round trip to the pod's echo server, ${PROBE_TIMEOUT_MS} ms without an echo counting as blocked`}`);
    this.out();
    await this.lab.setUp(this.kubectl.namespace());
    const failed: number[] = [];
    for (const step of DEMO_STEPS) {
      this.interruption.checkpoint();
      if (!(await this.runStep(step))) failed.push(step.number);
    }
    if (failed.length > 0) this.lab.printDaemonLog();
    return failed;
  }

  /** Prints the step's commands and does them, then what was observed; whether it behaved as expected. */
  private async runStep(step: DemoStep): Promise<boolean> {
    this.out();
    this.out(`Step ${step.number}: ${step.title}`);
    for (const command of step.commands) {
      this.interruption.checkpoint();
      this.out(`  $ ${command.kubectl}`);
      for (const line of await this.kubectl.perform(command.action)) this.out(`    ${line}`);
    }
    const issued = performance.now();
    const issuedWall = Date.now();
    const round = await this.observer.untilExpected(step, issued);
    const elapsed = performance.now() - issued;
    printChecks(this.out, round.checks);
    this.out(stepVerdict(step, round, elapsed, issuedWall));
    return round.ok;
  }
}
