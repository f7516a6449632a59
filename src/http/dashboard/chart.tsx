import type { UsageHour } from "../../usage/service";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = { left: 44, right: 8, top: 10, bottom: 26 };

/** The smallest of 1, 2, 5 × 10^n at or above `n`, so the axis reads in round numbers. */
function roundUp(n: number): number {
  const step = 10 ** Math.floor(Math.log10(Math.max(1, n)));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= n) ?? 10 * step;
}

const hourLabel = (hour: string) => `${hour.slice(11, 13)}:00`;
/** Coordinates to a tenth of a unit: finer is invisible and only makes the page longer. */
const r = (n: number) => Math.round(n * 10) / 10;

/**
 * Requests per hour as stacked bars drawn by the server: admitted below, rate-limited on top in their own colour, with
 * a title per bar (its numbers, read by screen readers and shown on hover). Colours come from the stylesheet's classes:
 * the policy allows no inline style.
 */
export const UsageChart = ({ id, title, series }: { id: string; title: string; series: UsageHour[] }) => {
  const admitted = series.reduce((n, h) => n + h.admitted, 0);
  const limited = series.reduce((n, h) => n + h.rateLimited, 0);
  const top = roundUp(Math.max(1, ...series.map((h) => h.admitted + h.rateLimited)));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, series.length);
  const bar = r(Math.max(1, slot * 0.75));
  const y = (v: number) => r(PAD.top + plotH - (v / top) * plotH);
  const every = Math.max(1, Math.ceil(series.length / 8));
  const summary = `${title}: ${admitted} admitted, ${limited} rate limited`;
  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <h3 id={`${id}-title`}>{title}</h3>
      <p class="legend">
        <span>
          <span class="swatch admitted" />
          {`${admitted.toLocaleString("en")} admitted`}
        </span>
        <span>
          <span class="swatch limited" />
          {`${limited.toLocaleString("en")} rate limited`}
        </span>
      </p>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={summary} data-series={id}>
        <title>{summary}</title>
        {[0, top / 2, top].map((v) => (
          <g>
            <line class="grid" x1={PAD.left} x2={WIDTH - PAD.right} y1={y(v)} y2={y(v)} />
            <text class="axis" x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
              {String(v)}
            </text>
          </g>
        ))}
        {series.map((h, i) => {
          const x = r(PAD.left + i * slot + (slot - bar) / 2);
          return (
            <g>
              <title>{`${h.hour.slice(0, 10)} ${hourLabel(h.hour)} UTC: ${h.admitted} admitted, ${h.rateLimited} rate limited`}</title>
              {h.admitted > 0 && (
                <rect class="admitted" x={x} width={bar} y={y(h.admitted)} height={r(y(0) - y(h.admitted))} data-hour={h.hour} />
              )}
              {h.rateLimited > 0 && (
                <rect
                  class="limited"
                  x={x}
                  width={bar}
                  y={y(h.admitted + h.rateLimited)}
                  height={r(y(h.admitted) - y(h.admitted + h.rateLimited))}
                  data-hour={h.hour}
                />
              )}
              {i % every === 0 && (
                <text class="axis" x={r(PAD.left + i * slot + slot / 2)} y={HEIGHT - 8} text-anchor="middle">
                  {hourLabel(h.hour)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </figure>
  );
};
