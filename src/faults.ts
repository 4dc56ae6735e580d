// Fault injection for tests (documented in the README, "Guarantees and failure behaviour").
// Spec: "K:ACTION:N[,K:ACTION:N...]": worker K performs ACTION after it has pulled N requests.
// ACTION is exit (process.exit of the worker thread), throw (an exception escapes the worker
// task) or hang (the worker blocks forever in Atomics.wait: only the watchdog can detect it).

export type FaultAction = 'exit' | 'throw' | 'hang';
export interface FaultSpec { worker: number; action: FaultAction; after: number }

export function parseFaultSpec(spec: string): FaultSpec[] {
  const out: FaultSpec[] = [];
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+):(exit|throw|hang):(\d+)$/.exec(part);
    if (!m) {
      const err = new RangeError(`bad fault spec "${part}": each entry must be WORKER:exit|throw|hang:AFTER_REQUESTS, e.g. "0:exit:100"; fix options.faults or RINGFENCE_FAULTS`);
      (err as RangeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
      throw err;
    }
    out.push({ worker: Number(m[1]), action: m[2] as FaultAction, after: Number(m[3]) });
  }
  return out;
}

export interface FaultPlan { onRequest(): void }

export function parseFaults(spec: string | null, index: number): FaultPlan | null {
  if (!spec) return null;
  const mine = parseFaultSpec(spec).filter((f) => f.worker === index);
  if (mine.length === 0) return null;
  let count = 0;
  return {
    onRequest(): void {
      count++;
      for (const f of mine) {
        if (count !== f.after) continue;
        if (f.action === 'exit') process.exit(70);
        if (f.action === 'throw') throw new Error(`injected fault: worker ${index} throws after ${count} requests`);
        if (f.action === 'hang') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      }
    },
  };
}
