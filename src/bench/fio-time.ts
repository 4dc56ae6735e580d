// fio's time options, given in seconds. fio reads a bare number as whole seconds and drops the
// fraction without a word: `--ramp_time=0.5` is no ramp at all, `--runtime=1.5` one second. So
// every duration we hand fio goes in milliseconds.

/**
 * `1.5` -> `"1500ms"`: a duration in seconds as fio reads it exactly. A duration above 0 is at
 * least 1 ms (fio reads a runtime of 0 as no limit).
 */
export function fioTime(seconds: number): string {
  if (!(seconds >= 0 && Number.isFinite(seconds))) throw new RangeError(`fioTime: ${seconds} is not a duration in seconds`);
  return `${seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : 0}ms`;
}
