// fio's time options, given in seconds. fio reads a bare number as whole seconds and drops the
// fraction without a word: `--ramp_time=0.5` is no ramp at all, `--runtime=1.5` one second. So
// every duration we hand fio goes in milliseconds.

/** `1.5` -> `"1500ms"`: a duration in seconds as fio reads it exactly. */
export function fioTime(seconds: number): string {
  if (!(seconds >= 0 && Number.isFinite(seconds))) throw new RangeError(`fioTime: ${seconds} is not a duration in seconds`);
  return `${Math.round(seconds * 1000)}ms`;
}
