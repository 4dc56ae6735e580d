// bench/nbd-queues.mjs --trace: the device's queue over time from block_rq_issue and
// block_rq_complete (src/bench/inflight.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inflightReport } from '../dist/src/bench/inflight.js';

const ev = (t, kind, dev, rwbs = 'RS', sector = 8) =>
  `          <idle>-0       [001] ..s1.  ${(t / 1e6).toFixed(6)}: block_rq_${kind}: ${dev} ${rwbs} ${kind === 'issue' ? '4096 ' : ''}() ${sector} + 8 be,0,4 [0]`;

test('a wave: 30 issued, all completed at once, 100 us empty, issued again', () => {
  const lines = ['# tracer: nop'];
  let t = 1000000;
  for (let i = 0; i < 30; i++) lines.push(ev(t + i, 'issue', '254,0')); // 30 issued over 30 us
  t += 430; // the device holds 30 for 400 us
  for (let i = 0; i < 30; i++) lines.push(ev(t + i, 'complete', '254,0'));
  t += 29 + 100; // 100 us with nothing in flight
  lines.push(ev(t, 'issue', '254,0'));
  lines.push(ev(t + 50, 'complete', '254,0')); // one request alone for 50 us
  // Other devices and flushes do not count.
  lines.splice(5, 0, ev(1000003, 'issue', '7,0'), ev(1000004, 'issue', '254,0', 'FF'));
  const r = inflightReport(lines.join('\n'), '254,0');
  assert.is(r.issued, 31);
  assert.is(r.completed, 31);
  assert.ok(Math.abs(r.spanUs - 609) < 1e-6, `span ${r.spanUs}: the first issue (0) to the last completion (559 + 50)`);
  assert.ok(Math.abs(r.share['0'] * r.spanUs - 100) < 1e-6, `0 in flight for 100 us (${r.share['0'] * r.spanUs})`);
  assert.ok(Math.abs(r.share['25+'] * r.spanUs - (435 - 24)) < 1e-6, `25+ from the 25th issue (24) to the 6th completion (435): ${r.share['25+'] * r.spanUs}`);
  assert.ok(Math.abs(r.share['1-4'] * r.spanUs - (4 + 4 + 50)) < 1e-6, `1-4: the first 4 issues (0-4), the last 4 completions (455-459), the lone request: ${r.share['1-4'] * r.spanUs}`);
  assert.is(r.gaps, 1);
  assert.ok(Math.abs(r.gapMeanUs - 100) < 1e-6);
  const sum = Object.values(r.share).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - 1) < 1e-9);
});

test('a steady queue: one completion, one issue, never empty; short empties are not gaps', () => {
  const lines = [];
  for (let i = 0; i < 8; i++) lines.push(ev(i, 'issue', '254,0'));
  for (let k = 0; k < 100; k++) { lines.push(ev(10 + 10 * k, 'complete', '254,0')); lines.push(ev(11 + 10 * k, 'issue', '254,0')); }
  for (let i = 0; i < 8; i++) lines.push(ev(2000 + i, 'complete', '254,0'));
  lines.push(ev(2010, 'issue', '254,0'), ev(2020, 'complete', '254,0')); // 3 us empty: below 20 us
  const r = inflightReport(lines.join('\n'), '254,0');
  assert.is(r.gaps, 0);
  assert.ok(Number.isNaN(r.gapMeanUs));
  assert.ok(r.share['5-15'] > 0.9, `mostly 7 or 8 in flight (${r.share['5-15']})`);
  assert.ok(r.mean > 7 && r.mean < 8.1, `mean ${r.mean}`);
});

test('completions of requests issued before the trace never take the count below 0; an empty trace', () => {
  const r = inflightReport([ev(0, 'complete', '254,0'), ev(5, 'complete', '254,0'), ev(10, 'issue', '254,0'), ev(30, 'complete', '254,0')].join('\n'), '254,0');
  assert.ok(Math.abs(r.share['0'] - 10 / 30) < 1e-9);
  assert.ok(Math.abs(r.share['1-4'] - 20 / 30) < 1e-9);
  const e = inflightReport('# tracer: nop\n', '254,0');
  assert.equal([e.issued, e.spanUs, Number.isNaN(e.mean), e.gaps], [0, 0, true, 0]);
});

test.run();
