import { PalisadeError } from './errors.js';
import { formatArgv } from './exec.js';
import type { CommandRunner } from './exec.js';

/**
 * Forgets connection-tracking entries of addresses that changed hands. Replies of established flows
 * pass palisade's rules without a policy check, so when a pod's address goes to another pod, the old
 * pod's flows (UDP above all, whose source ports a sender picks freely) would let the new pod through
 * until they expire. Felix clears them the same way when a workload's address goes away.
 */
export class Conntrack {
  private readonly runner: CommandRunner;

  constructor(runner: CommandRunner) {
    this.runner = runner;
  }

  /** Deletes every entry with `address` as source or destination; returns how many went. */
  async forget(address: string): Promise<number> {
    let deleted = 0;
    for (const flag of ['-s', '-d']) {
      const argv = ['conntrack', '-D', flag, address];
      const result = await this.runner.exec(argv);
      const count = /(\d+) flow entries have been deleted/.exec(result.stderr);
      // conntrack exits 1 when nothing matched; only a missing count means it really failed.
      if (count === null) throw new PalisadeError('CONNTRACK_FAILED', `${formatArgv(argv)} (${this.runner.describe()}) failed with exit code ${result.code}: ${result.stderr.trim() || '(no stderr)'}`);
      deleted += Number(count[1]);
    }
    return deleted;
  }
}
