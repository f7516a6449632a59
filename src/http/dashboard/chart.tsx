import type { UsageHour } from "../../usage/service";

const WIDTH = 720;
const HEIGHT = 220;
/** The credits chart under the requests': the same hours, lower, its own scale (credits are not requests). */
const CREDITS_HEIGHT = 120;
const PAD = { left: 44, right: 8, top: 10, bottom: 26 };

/** The smallest of 1, 2, 5 × 10^n at or above `n`, so the axis reads in round numbers. */
function roundUp(n: number): number {
  const step = 10 ** Math.floor(Math.log10(Math.max(1, n)));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= n) ?? 10 * step;
}

const hourLabel = (hour: string) => `${hour.slice(11, 13)}:00`;
/** Coordinates to a tenth of a unit: finer is invisible and only makes the page longer. */
const r = (n: number) => Math.round(n * 10) / 10;
const count = (n: number) => n.toLocaleString("en");

/** One bar of a chart: its hour, its title (its numbers in words) and its parts stacked from the bottom, each a class. */
type Stack = { hour: string; title: string; parts: { cls: string; value: number }[] };

/**
 * Stacked bars per hour drawn by the server, with a title per bar (its numbers, read by screen readers and shown on
 * hover). Colours come from the stylesheet's classes: the policy allows no inline style.
 */
const Bars = ({ series, height, summary, name }: { series: Stack[]; height: number; summary: string; name: string }) => {
  const top = roundUp(Math.max(1, ...series.map((s) => s.parts.reduce((n, p) => n + p.value, 0))));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, series.length);
  const bar = r(Math.max(1, slot * 0.75));
  const y = (v: number) => r(PAD.top + plotH - (v / top) * plotH);
  const every = Math.max(1, Math.ceil(series.length / 8));
  return (
    <svg viewBox={`0 0 ${WIDTH} ${height}`} role="img" aria-label={summary} data-series={name}>
      <title>{summary}</title>
      {[0, top / 2, top].map((v) => (
        <g>
          <line class="grid" x1={PAD.left} x2={WIDTH - PAD.right} y1={y(v)} y2={y(v)} />
          <text class="axis" x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
            {String(v)}
          </text>
        </g>
      ))}
      {series.map((s, i) => {
        const x = r(PAD.left + i * slot + (slot - bar) / 2);
        let below = 0;
        return (
          <g>
            <title>{`${s.hour.slice(0, 10)} ${hourLabel(s.hour)} UTC: ${s.title}`}</title>
            {s.parts.map(({ cls, value }) => {
              const from = below;
              below += value;
              return value > 0 && <rect class={cls} x={x} width={bar} y={y(below)} height={r(y(from) - y(below))} data-hour={s.hour} />;
            })}
            {i % every === 0 && (
              <text class="axis" x={r(PAD.left + i * slot + slot / 2)} y={height - 8} text-anchor="middle">
                {hourLabel(s.hour)}
              </text>
            )}
          </g>
        );
      })}
    </svg>
  );
};

/**
 * Requests per hour as stacked bars: admitted below, rate-limited on top in their own colour. When the period spent
 * credits, the credits spent per hour follow in a smaller chart of their own.
 */
export const UsageChart = ({ id, title, series }: { id: string; title: string; series: UsageHour[] }) => {
  const admitted = series.reduce((n, h) => n + h.admitted, 0);
  const limited = series.reduce((n, h) => n + h.rateLimited, 0);
  const spent = series.reduce((n, h) => n + h.creditsSpent, 0);
  const summary = `${title}: ${admitted} admitted, ${limited} rate limited`;
  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <h3 id={`${id}-title`}>{title}</h3>
      <p class="legend">
        <span>
          <span class="swatch admitted" />
          {`${count(admitted)} admitted`}
        </span>
        <span>
          <span class="swatch limited" />
          {`${count(limited)} rate limited`}
        </span>
        {spent !== 0 && (
          <span>
            <span class="swatch credits" />
            {`${count(spent)} credits spent`}
          </span>
        )}
      </p>
      <Bars
        name={id}
        height={HEIGHT}
        summary={summary}
        series={series.map((h) => ({
          hour: h.hour,
          title: `${h.admitted} admitted, ${h.rateLimited} rate limited`,
          parts: [
            { cls: "admitted", value: h.admitted },
            { cls: "limited", value: h.rateLimited },
          ],
        }))}
      />
      {spent !== 0 && (
        <Bars
          name={`credits-${id}`}
          height={CREDITS_HEIGHT}
          summary={`${title}: ${spent} credits spent`}
          series={series.map((h) => ({
            hour: h.hour,
            title: `${h.creditsSpent} credits spent`,
            parts: [{ cls: "credits", value: h.creditsSpent }],
          }))}
        />
      )}
    </figure>
  );
};
