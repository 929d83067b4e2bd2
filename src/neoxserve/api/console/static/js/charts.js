// Charts over uPlot (vendored, see static/vendor/PINNED): bars per day, and a live line.
import { fmt } from "./dom.js";

const COLORS = { blue: "#2f6fdf", red: "#d64545", green: "#2e9e6a", amber: "#d9901a", grey: "#8a94a6" };
export { COLORS };

function sized(container, make) {
  const width = () => Math.max(280, container.clientWidth - 8);
  const chart = make(width());
  const observer = new ResizeObserver(() => chart.setSize({ width: width(), height: chart.height }));
  observer.observe(container);
  return { chart, destroy() { observer.disconnect(); chart.destroy(); } };
}

const axisValues = (u, ticks) => ticks.map((v) => fmt.format(v));

// Bars per day. `days` are YYYY-MM-DD strings; each series is {label, values, color, legendValues?}. Series drawn
// later cover earlier ones, so a part (failures, prompt tokens) drawn over its whole reads as a stacked bar.
export function dayBars(container, title, days, series) {
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  const bars = uPlot.paths.bars({ size: [0.7, 48], align: 0 });
  return sized(container, (width) => new uPlot({
    title,
    width,
    height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [{ space: 60 }, { values: axisValues, size: 70 }],
    legend: { live: true },
    cursor: { points: { show: false } },
    series: [
      { value: (u, ts) => (ts == null ? "—" : new Date(ts * 1000).toISOString().slice(0, 10)) },
      ...series.map((s) => ({
        label: s.label,
        stroke: s.color,
        fill: `${s.color}cc`,
        width: 0,
        paths: bars,
        points: { show: false },
        value: (u, v, si, i) => (i == null ? "—" : fmt.format((s.legendValues || s.values)[i])),
      })),
    ],
  }, [xs, ...series.map((s) => s.values)], container));
}

// A line over time (x in unix seconds), appended to with push(x, y); keeps the last `keep` points.
export function liveLine(container, label, color, keep = 150) {
  const xs = [];
  const ys = [];
  const sizedChart = sized(container, (width) => new uPlot({
    width,
    height: 180,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.15] } },
    axes: [{ space: 80 }, { values: (u, ticks) => ticks.map((v) => v.toFixed(v < 10 ? 1 : 0)), size: 60 }],
    legend: { show: false },
    series: [{}, { label, stroke: color, fill: `${color}22`, width: 2, points: { show: false } }],
  }, [xs, ys], container));
  return {
    push(x, y) {
      xs.push(x);
      ys.push(y);
      if (xs.length > keep) { xs.shift(); ys.shift(); }
      sizedChart.chart.setData([xs, ys]);
    },
    destroy: () => sizedChart.destroy(),
  };
}
