// The benchmark chart: IOPS and p99 latency against queue depth, one line per engine, one
// column per workload. A vega-lite spec rendered to SVG on the server by vega.
// vega and vega-lite are optional dependencies, loaded only here (a library-only install,
// `npm install --omit=optional`, leaves them out; `import 'ringfence'` never loads them).
import type { TopLevelSpec } from 'vega-lite';
import type { BenchReport } from './command.js';

export async function renderChart(report: BenchReport): Promise<string> {
  const values = report.results.map((r) => ({ workload: r.rw, qd: r.qd, engine: r.engine, iops: Math.round(r.iops), p99: Number.isFinite(r.p99us) ? r.p99us : null }));
  const base = {
    data: { values },
    mark: { type: 'line', point: true },
    width: 260,
    height: 180,
  } as const;
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `ringfence bench: ${report.options.bs} B ${report.options.direct ? 'O_DIRECT' : 'buffered'}, ${report.date.slice(0, 10)}`, subtitle: report.volume },
    vconcat: [
      { ...base, encoding: {
        x: { field: 'qd', type: 'quantitative', title: 'queue depth', scale: { type: 'log', base: 2 } },
        y: { field: 'iops', type: 'quantitative', title: 'IOPS' },
        color: { field: 'engine', type: 'nominal' },
        column: { field: 'workload', type: 'nominal' },
      } },
      { ...base, transform: [{ filter: 'datum.p99 != null' }], encoding: {
        x: { field: 'qd', type: 'quantitative', title: 'queue depth', scale: { type: 'log', base: 2 } },
        y: { field: 'p99', type: 'quantitative', title: 'p99 latency (us)' },
        color: { field: 'engine', type: 'nominal' },
        column: { field: 'workload', type: 'nominal' },
      } },
    ],
  } as unknown as TopLevelSpec;
  const { vega, compile } = await loadVega();
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

async function loadVega(): Promise<{ vega: typeof import('vega'); compile: typeof import('vega-lite').compile }> {
  try {
    const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
    return { vega, compile: vl.compile };
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new Error('--chart needs the optional dependencies vega and vega-lite, which are not installed ' +
      '(npm install --omit=optional leaves them out): run `npm install vega vega-lite`, or leave out --chart', { cause: err });
  }
}
