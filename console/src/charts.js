// Charts with uPlot: the before/after score distribution and the overview's
// activity over time. Each chart sizes itself to its container.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const COLORS = ['#1f5fbf', '#c2410c', '#15803d', '#7c3aed', '#b91c1c', '#0e7490', '#a16207', '#4b5563'];

function widthOf(el) {
  return Math.max(Math.floor(el.getBoundingClientRect().width) || 600, 280);
}

function resizing(el, chart) {
  const observer = new ResizeObserver(() => chart.setSize({ width: widthOf(el), height: chart.height }));
  observer.observe(el);
  return () => {
    observer.disconnect();
    chart.destroy();
  };
}

/**
 * Counts per score, before and after: `{baseline: [{score, count}], candidate: [...]}`.
 * Returns a destroy function.
 */
export function distributionChart(el, distribution) {
  const scores = [...new Set([...distribution.baseline, ...distribution.candidate].map((p) => p.score))].sort((a, b) => a - b);
  const index = (list) => new Map(list.map((p) => [p.score, p.count]));
  const before = index(distribution.baseline);
  const after = index(distribution.candidate);
  const data = [scores, scores.map((s) => before.get(s) ?? 0), scores.map((s) => after.get(s) ?? 0)];
  const bars = uPlot.paths.bars({ size: [0.4, 24], align: 0 });
  const opts = {
    width: widthOf(el),
    height: 260,
    title: 'Contacts per score',
    scales: { x: { time: false } },
    axes: [{ label: 'score' }, { label: 'contacts' }],
    series: [
      { label: 'score' },
      { label: 'Loaded rules', stroke: COLORS[0], fill: `${COLORS[0]}66`, paths: bars, points: { show: false } },
      { label: 'Edited rules', stroke: COLORS[1], fill: `${COLORS[1]}66`, paths: bars, points: { show: false } },
    ],
  };
  if (scores.length === 1) opts.scales.x.range = [scores[0] - 5, scores[0] + 5];
  return resizing(el, new uPlot(opts, data, el));
}

/**
 * Buckets of GET /stats: received, duplicates and each tier over time.
 */
export function activityChart(el, buckets) {
  const tiers = [...new Set(buckets.flatMap((b) => Object.keys(b.tiers ?? {})))].sort();
  const xs = buckets.map((b) => Math.floor(new Date(b.start).getTime() / 1000));
  const data = [
    xs,
    buckets.map((b) => b.received ?? 0),
    buckets.map((b) => b.duplicates ?? 0),
    ...tiers.map((t) => buckets.map((b) => b.tiers?.[t] ?? 0)),
  ];
  const opts = {
    width: widthOf(el),
    height: 260,
    title: 'Contacts over time',
    axes: [{}, { label: 'contacts' }],
    series: [
      {},
      { label: 'received', stroke: COLORS[0], width: 2 },
      { label: 'duplicates', stroke: COLORS[7], width: 1.5, dash: [6, 4] },
      ...tiers.map((t, i) => ({ label: t, stroke: COLORS[(i + 1) % COLORS.length], width: 1.5 })),
    ],
  };
  return resizing(el, new uPlot(opts, data, el));
}

/**
 * The calibration curve of GET /report: the sale rate (in percent) of each
 * score group, lowest scores first, with the overall sale rate as a line.
 */
export function calibrationChart(el, deciles, overallRate) {
  const xs = deciles.map((_, i) => i + 1);
  const rates = deciles.map((d) => (d.sale_rate === null || d.sale_rate === undefined ? null : d.sale_rate * 100));
  const overall = overallRate === null || overallRate === undefined ? null : overallRate * 100;
  const label = (i) => {
    const d = deciles[i - 1];
    return d ? `${d.min_score}–${d.max_score}` : '';
  };
  const bars = uPlot.paths.bars({ size: [0.6, 64], align: 0 });
  const opts = {
    width: widthOf(el),
    height: 260,
    title: 'Sale rate per score decile',
    scales: { x: { time: false, range: [0.5, Math.max(xs.length, 1) + 0.5] }, y: { range: (u, min, max) => [0, Math.max(max ?? 0, 1) * 1.1] } },
    axes: [
      { label: 'score range (lowest first)', values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? label(v) : '')), incrs: [1] },
      { label: 'sale rate (%)', values: (u, splits) => splits.map((v) => `${+v.toFixed(1)} %`) },
    ],
    series: [
      { label: 'decile', value: (u, v) => (v === null || v === undefined ? '' : label(v)) },
      { label: 'sale rate', stroke: COLORS[0], fill: `${COLORS[0]}66`, paths: bars, points: { show: false }, value: (u, v) => (v === null || v === undefined ? '—' : `${v.toFixed(1)} %`) },
      { label: 'overall', stroke: COLORS[1], width: 1.5, dash: [6, 4], points: { show: false }, value: (u, v) => (v === null || v === undefined ? '—' : `${v.toFixed(1)} %`) },
    ],
  };
  const data = [xs, rates, xs.map(() => overall)];
  return resizing(el, new uPlot(opts, data, el));
}
