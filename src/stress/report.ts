// The summary of a stress run, as a plain-text table (the JSON form is the result object).
import type { StressResult } from './run.js';
import type { BadBlock } from './verify.js';

export function formatSummary(r: StressResult): string {
  const rows: [string, string][] = [
    ['verdict', r.ok ? 'CLEAN: every block read back as written, sizes as expected'
      : `BAD: ${r.bad.total} bad block(s)${r.sizeErrors ? `, ${r.sizeErrors} size error(s)` : ''}, the first after ${((r.firstBadMs ?? 0) / 1000).toFixed(2)} s`],
    ['workload', `${r.workload} (qd ${r.options.qd}, block ${size(r.options.blockSize)}${r.workload === 'qcow2-alloc' ? `, cluster ${size(r.options.clusterSize)}` : ''}${r.options.direct ? ', O_DIRECT' : ', buffered'})`],
    ['seed', `${r.seed} (stream ${r.streamDigest}, ${r.streamOps} ops generated)`],
    ['volume', r.volume.note],
    ['fs / kernel', `${r.fs} / ${r.kernel}`],
    ['backend', (r.options.mode === 'inline' ? `${r.backend}, inline (this thread's own ring)` : `${r.backend}, ${r.options.workers} worker(s)`) +
      (r.options.threads > 0 ? `; writes in ${r.options.threads} writer threads, one inline engine each` : '')],
    ['workaround', `${r.workaround.enabled ? 'ENABLED' : 'disabled'} (policy ${r.workaround.policy}): ${r.workaround.rule}`],
    ['emulation', r.emulateBug.enabled ? `pre-5.5 XFS fallocate semantics emulated, window ${r.emulateBug.windowUs} us (${r.emulatedFallocates} emulated zero-writes)` : 'off (the running kernel\'s own semantics)'],
    ['ops', `${r.ops} in ${(r.durationMs / 1000).toFixed(1)} s${r.epochs ? ` (${r.epochs} file recycles)` : ''}${r.interrupted ? ', INTERRUPTED' : ''}`],
    ['bytes written', `${mib(r.bytesWritten)} data, ${mib(r.bytesZeroed)} zeroed`],
    ['bytes verified', `${mib(r.bytesVerified)} in ${r.verifyReads} reads`],
    ['serialised', `${r.serialised} of ${r.tracked} tracked requests`],
    ['waits', `${r.waits.count}, total ${r.waits.totalMs.toFixed(1)} ms, max ${r.waits.maxMs.toFixed(2)} ms`],
    ['bad blocks', `lost ${r.bad.lost}, stale ${r.bad.stale}, misdirected ${r.bad.misdirected}, torn ${r.bad.torn}`],
    ['file sizes', r.sizeOk ? 'as expected' : `${r.sizeErrors} wrong (${r.firstSizeErrors.slice(0, 3).map((e) => `${e.file}: expected ${e.expected}, found ${e.actual}`).join('; ')})`],
  ];
  for (const n of r.notes) rows.push(['note', n]);
  const w = Math.max(...rows.map(([k]) => k.length));
  const out = rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`);
  if (r.firstBad.length > 0) {
    out.push('', `  first ${r.firstBad.length} bad block(s):`);
    const head = ['file', 'offset', 'class', 'when', 'expected (seq/offset/crc)', 'found (seq/offset/crc)'];
    const lines = r.firstBad.map((b) => [b.file, String(b.offset), b.class, b.when, expected(b), found(b)]);
    const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    out.push('  ' + head.map((h, i) => h.padEnd(widths[i])).join('  '));
    for (const l of lines) out.push('  ' + l.map((c, i) => c.padEnd(widths[i])).join('  '));
  }
  return out.join('\n');
}

function expected(b: BadBlock): string {
  if (b.expected.zero) return `zeros`;
  return `${b.expected.seq}/${b.expected.offset}/${hex(b.expected.crc)}`;
}

function found(b: BadBlock): string {
  const f = b.found;
  if (f.zero) return f.eof ? 'beyond EOF' : 'zeros';
  const what = `${f.seq ?? '?'}/${f.offset ?? '?'}/${hex(f.crc)}`;
  return `${what}${f.crcOk ? '' : f.magicOk ? ' (bad crc)' : ' (no header)'}${f.eof ? ' (short read)' : ''}`;
}

function hex(n: number | null): string { return n === null ? '-' : '0x' + n.toString(16).padStart(8, '0'); }
function mib(n: number): string { return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`; }
function size(n: number): string { return n >= 2 ** 20 && n % 2 ** 20 === 0 ? `${n / 2 ** 20}M` : n >= 1024 && n % 1024 === 0 ? `${n / 1024}K` : String(n); }
