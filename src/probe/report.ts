// The human-readable table of `ringfence probe`.
import type { ProbeReport } from './probe.js';
import type { RaceResult } from './race.js';

function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n');
}

function raceLine(r: RaceResult): string {
  if (r.notApplicable !== null) return `not run: ${r.notApplicable}`;
  const k = r.kinds;
  return `${r.lost} lost of ${r.trials} trials in ${(r.elapsedMs / 1000).toFixed(1)} s (slowest ${r.maxTrialMs} ms, set-up ${r.setupMs} ms) ` +
    `(generic/586 ${k['generic/586'].lost}/${k['generic/586'].trials}, qcow2 ${k.qcow2.lost}/${k.qcow2.trials}; ` +
    `bs ${r.blockSize}, cluster ${r.clusterSize}, ${r.direct ? 'O_DIRECT' : 'buffered'}, backends ${r.backends.join('+')}` +
    `${r.emulated ? `, emulated window ${r.windowUs} us` : ''})`;
}

export function formatReport(rep: ProbeReport): string {
  const s = rep.static;
  const b = s.backends;
  const rows: [string, string][] = [
    ['directory', s.realpath === s.dir ? s.dir : `${s.dir} (${s.realpath})`],
    ['filesystem', `${s.fs.name} (statfs magic ${s.fs.magic})`],
    ['mount', s.mount ? `${s.mount.source} on ${s.mount.point} type ${s.mount.fstype}${s.mount.root !== '/' ? ` (root ${s.mount.root})` : ''}` : 'unknown (no /proc/self/mountinfo)'],
    ['mount options', s.mount ? `${s.mount.options}; superblock ${s.mount.superOptions}` : '-'],
    ['device', `${s.device}${s.mount && !s.mount.devMatches ? ` (mountinfo says ${s.mount.majorMinor}: bind mount or subvolume)` : ''}`],
    ['fs UUID', s.uuid.value ? `${s.uuid.value} (${s.uuid.source})` : s.uuid.source],
    ['cache key', s.fsId],
    ['kernel', `${s.kernel.release}: ${s.kernel.fixed ? 'has the XFS fix' : 'no XFS fix'} (${s.kernel.why})`],
    ['O_DIRECT', s.directIo.supported === false ? s.directIo.source
      : s.directIo.offset === null ? s.directIo.source
      : `offset/length ${s.directIo.offset}, memory ${s.directIo.mem}: ${s.directIo.source}`],
    ['io_uring', b.ioUring.ok ? `ok; setup flags ${b.ioUring.setupFlags.join(' ') || '-'}; features ${b.ioUring.features.join(' ') || '-'}; ` +
      `ops ${Object.entries(b.ioUring.ops).map(([k, v]) => `${k}${v ? '' : ' (no)'}`).join(' ')}` : `unavailable: ${b.ioUring.reason}`],
    ['io_uring_disabled', b.ioUringDisabledMeaning],
    ['libaio', b.libaio.ok ? 'ok' : `unavailable: ${b.libaio.reason}`],
    ['sync', 'ok'],
    ["'auto' decides", `workaround ${s.auto.enabled ? 'ON' : 'off'}: ${s.auto.rule}`],
  ];
  const r = rep.race;
  if (r !== null) {
    rows.push(['race check', raceLine(r.check)]);
    if (r.check.examples.length > 0) rows.push(['first losses', r.check.examples.join('; ')]);
    rows.push(['calibration', r.calibration ? raceLine(r.calibration) : r.check.emulated ? 'none: the check itself ran with the bug emulated' : 'none']);
    rows.push(['evidence', r.evidence]);
    rows.push(['VERDICT', `${r.summary}${r.verdict === 'clean' && !r.conclusive ? ' (inconclusive)' : ''}`]);
  } else {
    rows.push(['race check', 'not run (add --race for the dynamic check)']);
  }
  const notes = rep.notes.length ? '\n' + rep.notes.map((n) => `note: ${n}`).join('\n') : '';
  return `ringfence probe\n${table(rows)}${notes}\n`;
}
