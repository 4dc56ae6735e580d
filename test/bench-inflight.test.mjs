// bench/nbd-queues.mjs --trace: the device's queue over time from block_rq_issue, requeue and
// complete (src/bench/inflight.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inflightReport } from '../dist/src/bench/inflight.js';

const near = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-6, `${what}: ${a}, expected ${b}`);

/** A trace in tracefs's text, written the way the kernel prints the block events. */
class Trace {
  constructor() { this.lines = ['# tracer: nop', '#']; this.open = []; this.sector = 1000; }
  line(t, kind, sector, { dev = '254,0', rwbs = 'RS', len = 8 } = {}) {
    this.lines.push(`          <idle>-0       [001] ..s1.  ${(t / 1e6).toFixed(6)}: block_rq_${kind}: ${dev} ${rwbs} ${kind === 'issue' ? '4096 ' : ''}() ${sector} + ${len} be,0,4${kind === 'complete' ? ' [0]' : ` [node]`}`);
  }
  /** Issues a read at t; returns its sector. */
  issue(t, opts) { const s = (this.sector += 8); this.line(t, 'issue', s, opts); if (!opts?.dev) this.open.push(s); return s; }
  /** Completes the oldest request in flight (or `sector`) at t. */
  complete(t, sector = this.open.shift(), opts) { if (sector !== undefined) { this.open = this.open.filter((x) => x !== sector); this.line(t, 'complete', sector, opts); } }
  text() { return this.lines.join('\n'); }
}

test('a wave: 30 issued, all completed at once, 100 us empty, issued again', () => {
  const tr = new Trace();
  let t = 1000000;
  for (let i = 0; i < 30; i++) tr.issue(t + i); // 30 issued over 30 us
  tr.issue(t + 3, { dev: '7,0' }); // another device's: not counted
  tr.line(t + 4, 'issue', 1, { rwbs: 'FF', len: 0 }); // a flush: not counted
  t += 430; // the device holds 30 for 400 us
  for (let i = 0; i < 30; i++) tr.complete(t + i);
  t += 29 + 100; // 100 us with nothing in flight
  tr.issue(t);
  tr.complete(t + 50); // one request alone for 50 us
  const r = inflightReport(tr.text(), '254,0');
  assert.equal([r.issued, r.completed, r.atStart, r.lost], [31, 31, 0, 0]);
  near(r.spanUs, 609, 'span: the first issue (0) to the last completion (559 + 50)');
  near(r.share['0'] * r.spanUs, 100, '0 in flight');
  near(r.share['25+'] * r.spanUs, 435 - 24, '25+ from the 25th issue (24) to the 6th completion (435)');
  near(r.share['1-4'] * r.spanUs, 4 + 4 + 50, '1-4: the first 4 issues (0-4), the last 4 completions (455-459), the lone request');
  near(r.share['5-15'] * r.spanUs, 11 + 11, '5-15: issues 5 to 15, completions down to 5');
  near(r.share['16-24'] * r.spanUs, 9 + 9, '16-24: the 16th to the 24th, both ways (the 15/16 edge)');
  assert.is(r.gaps, 1);
  near(r.gapMeanUs, 100, 'the empty stretch');
  near(Object.values(r.share).reduce((a, b) => a + b, 0), 1, 'shares add up');
  // In flight over time: 1..29 for 1 us each, 30 for 401 us, 29..1 for 1 us each, 1 for 50 us.
  near(r.mean * r.spanUs, 435 + 30 * 401 + 435 + 50, 'time-weighted mean');
});

test('a steady queue of 8: never empty, mean 8; a short empty moment is not a stretch', () => {
  const tr = new Trace();
  for (let i = 0; i < 8; i++) tr.issue(i * 0.001);
  for (let k = 0; k < 100; k++) { tr.complete(10 + 10 * k); tr.issue(10 + 10 * k); }
  for (let i = 0; i < 8; i++) tr.complete(2000 + i * 0.001);
  tr.issue(2003); tr.complete(2010); // 3 us empty: below 20 us
  const r = inflightReport(tr.text(), '254,0');
  assert.is(r.gaps, 0);
  assert.ok(Number.isNaN(r.gapMeanUs));
  assert.ok(r.share['5-15'] > 0.99, `8 in flight nearly all the time (${r.share['5-15']})`);
  assert.ok(Math.abs(r.mean - 8) < 0.05, `mean ${r.mean}`);
});

test('a trace that starts mid-queue: completions with no issue in it count from its start', () => {
  // 30 requests in flight before the trace; from it on, each completion is followed by an issue
  // 25 us later (the device holds 29 to 30): never empty, never "0".
  const tr = new Trace();
  const before = Array.from({ length: 30 }, () => (tr.sector += 8));
  tr.open = [...before];
  for (let k = 0; k < 100; k++) { tr.complete(100 * k); tr.issue(100 * k + 25); }
  const r = inflightReport(tr.text(), '254,0');
  assert.is(r.atStart, 30);
  assert.is(r.gaps, 0);
  near(r.share['0'], 0, 'never empty');
  assert.ok(r.share['25+'] > 0.99, `25+ (${r.share['25+']})`);
  assert.ok(r.mean > 29 && r.mean <= 30, `mean ${r.mean}`);
});

test('a requeued request leaves the count until it is issued again; zero-length completions and lost events', () => {
  const tr = new Trace();
  const s = tr.issue(0);
  tr.line(10, 'requeue', s); // back to the dispatch queue: the device is empty from 10
  tr.line(20, 'complete', 5, { rwbs: 'WS', len: 0 }); // an empty preflush's completion: not a request
  tr.line(60, 'issue', s); // issued again
  tr.complete(70, s);
  const r = inflightReport(tr.text(), '254,0');
  assert.equal([r.issued, r.completed, r.atStart], [2, 1, 0]);
  near(r.share['0'] * r.spanUs, 50, 'empty from the requeue to the re-issue');
  assert.is(r.gaps, 1); // from the requeue (n fell to 0) to the re-issue: 50 us
  const lost = inflightReport(`${tr.text()}\nCPU:1 [LOST 123 EVENTS]\n`, '254,0');
  assert.is(lost.lost, 123);
  const e = inflightReport('# tracer: nop\n', '254,0');
  assert.equal([e.issued, e.spanUs, Number.isNaN(e.mean), e.gaps], [0, 0, true, 0]);
});

test.run();
